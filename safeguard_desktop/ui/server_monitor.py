"""Periodic, non-blocking health check of the Ollama server: version, loaded models, tags.

Each check is a short async task with its own timeout, so a hung server never stalls the
window. The managed-server code hooks in through `MainWindow.server_state_changed`.

Signals:
    state_changed(ServerState): after every check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from safeguard_desktop.engine.errors import EngineError, ServerUnreachable
from safeguard_desktop.qt import QObject, QTimer, Signal
from safeguard_desktop.ui.async_utils import TaskKeeper
from safeguard_desktop.ui.context import AppContext

log = logging.getLogger("safeguard.ui.server")
CHECK_TIMEOUT_S = 4.0
TAGS_EVERY = 6  # refresh the installed-model list every N checks


@dataclass(frozen=True)
class LoadedModel:
    name: str
    size: int
    size_vram: int


@dataclass(frozen=True)
class ServerState:
    """One health check's outcome; `models` is None when the tag list was not fetched."""

    url: str
    reachable: bool
    version: str | None = None
    error: str | None = None
    loaded: tuple[LoadedModel, ...] = ()
    models: tuple[str, ...] | None = None
    checked_at: float = 0.0


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB") else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


class ServerMonitor(QObject):
    state_changed = Signal(object)

    def __init__(self, ctx: AppContext, interval_ms: int = 5000, parent: QObject | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.state: ServerState | None = None
        self._tasks = TaskKeeper()
        self._checking = False
        self._count = 0
        self._timer = QTimer(self)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self.check_now)

    def start(self) -> None:
        self._timer.start()
        self.check_now()

    def stop(self) -> None:
        self._timer.stop()
        self._tasks.cancel_all()

    async def wait_idle(self) -> None:
        await self._tasks.wait_all(timeout=2.0)

    def check_now(self, *, tags: bool = False) -> None:
        """Start a check unless one is running (it never blocks the caller)."""
        if self._checking:
            return
        if tags:
            self._count = 0
        self._checking = True
        self._tasks.spawn(self._check(), name="server-health")

    async def _check(self) -> None:
        try:
            state = await self._probe()
        finally:
            self._checking = False
        self.state = state
        self.state_changed.emit(state)

    async def _probe(self) -> ServerState:
        client = self.ctx.client
        url = self.ctx.endpoint.url
        was_down = self.state is None or not self.state.reachable
        try:
            version = await asyncio.wait_for(client.version(), CHECK_TIMEOUT_S)
        except EngineError as exc:
            return ServerState(url, False, error=str(exc), checked_at=time.time())
        except TimeoutError:
            error = ServerUnreachable(url, detail=f"no answer within {CHECK_TIMEOUT_S:g} s")
            return ServerState(url, False, error=str(error), checked_at=time.time())
        loaded = await self._best_effort(self._loaded(), ())
        models = None
        if was_down or self._count % TAGS_EVERY == 0:
            models = await self._best_effort(self._tags(), None)
        self._count += 1
        return ServerState(url, True, version, None, loaded, models, time.time())

    async def _best_effort(self, coro: Any, default: Any) -> Any:
        """/api/ps and /api/tags only decorate the status bar: a failure is not an error."""
        try:
            return await asyncio.wait_for(coro, CHECK_TIMEOUT_S)
        except Exception as exc:  # the ollama client raises several unrelated types here
            log.debug("status detail unavailable: %s", exc)
            return default

    async def _loaded(self) -> tuple[LoadedModel, ...]:
        response = await self.ctx.client.raw.ps()
        return tuple(
            LoadedModel(str(m.model or m.name or "?"), int(m.size or 0), int(m.size_vram or 0))
            for m in response.models
        )

    async def _tags(self) -> tuple[str, ...]:
        response = await self.ctx.client.raw.list()
        return tuple(sorted(str(m.model) for m in response.models if m.model))
