"""Progress of pulls, imports and bundles on a terminal: one line redrawn with \\r on a tty,
plain lines (at each new status or every 10 %) when the output is a file or a pipe."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from safeguard_desktop.services.models_service import Progress


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def describe(event: Progress) -> str:
    parts = [event.status or event.phase]
    if event.total > 0:
        pct = event.percent or 0.0
        parts.append(f"{pct:5.1f}%")
        parts.append(f"{human_bytes(event.completed)}/{human_bytes(event.total)}")
    if event.rate:
        parts.append(f"{human_bytes(event.rate)}/s")
    if event.eta is not None:
        parts.append(f"ETA {human_duration(event.eta)}")
    return "  ".join(parts)


class ProgressPrinter:
    """Callable progress sink for the CLI."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self._width = 0
        self._last_draw = 0.0
        self._last_status = ""
        self._last_decile = -1
        self.resume_reported = False

    def __call__(self, event: Progress) -> None:
        if event.resumed_from is not None and not self.resume_reported:
            self.resume_reported = True
            if event.resumed_from < 100:
                self.line(f"Resuming at {event.resumed_from:.0f}%.")
        text = describe(event)
        if self.tty:
            now = time.monotonic()
            final = event.phase == "done"
            if final or event.status != self._last_status or now - self._last_draw >= 0.1:
                self._draw(text)
                self._last_draw = now
        else:
            decile = int((event.percent or 0) // 10)
            if event.status != self._last_status or decile != self._last_decile:
                self.stream.write(text + "\n")
                self.stream.flush()
                self._last_decile = decile
        self._last_status = event.status

    def _draw(self, text: str) -> None:
        pad = max(0, self._width - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._width = len(text)

    def line(self, text: str) -> None:
        """A full line above the progress line."""
        self.finish()
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self) -> None:
        """End the redrawn line, if one is showing."""
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0
