"""One progress event type for every long model operation (pull, GGUF import, bundles).

The GUI shows any of them with the same widget; the CLI with the same status line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    phase: str  # "pulling", "hashing", "uploading", "creating", "verifying", "writing", "done"
    status: str  # what to show: the server's status text or ours
    completed: int = 0  # bytes
    total: int = 0  # bytes; 0 when unknown
    rate: float | None = None  # bytes per second, smoothed
    eta: float | None = None  # seconds left
    resumed_from: float | None = None  # percent at which a resumed pull started
    digest: str | None = None

    @property
    def percent(self) -> float | None:
        if self.total <= 0:
            return None
        return min(100.0, 100.0 * self.completed / self.total)


ProgressCallback = Callable[[Progress], None]


class RateMeter:
    """Smoothed transfer rate (exponential moving average over samples of >= 0.25 s) and ETA."""

    def __init__(
        self,
        *,
        alpha: float = 0.3,
        interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.alpha = alpha
        self.interval = interval
        self.clock = clock
        self.rate: float | None = None
        self._t: float | None = None
        self._bytes = 0

    def update(self, completed: int) -> float | None:
        now = self.clock()
        if self._t is None or completed < self._bytes:
            self._t, self._bytes = now, completed
            return self.rate
        dt = now - self._t
        if dt >= self.interval:
            sample = (completed - self._bytes) / dt
            self.rate = (
                sample
                if self.rate is None
                else (self.alpha * sample + (1 - self.alpha) * self.rate)
            )
            self._t, self._bytes = now, completed
        return self.rate

    def eta(self, completed: int, total: int) -> float | None:
        if not self.rate or total <= 0 or completed >= total:
            return None
        return (total - completed) / self.rate


def emit(callback: ProgressCallback | None, event: Progress) -> None:
    if callback is not None:
        callback(event)
