"""Periodic, non-blocking health check of the Ollama server: version, loaded models, tags.

Each check is a short async task with its own timeout, so a hung server never stalls the
window. The managed-server code hooks in through `MainWindow.server_state_changed`.

Signals:
    state_changed(ServerHealth): after every check.
"""

from __future__ import annotations

import logging
import time

from safeguard_desktop.qt import QObject, QTimer, Signal
from safeguard_desktop.services.session import ServerHealth, Session
from safeguard_desktop.ui.async_utils import TaskKeeper

log = logging.getLogger("safeguard.ui.server")
TAGS_EVERY = 6  # refresh the installed-model list every N checks


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB") else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


class ServerMonitor(QObject):
    state_changed = Signal(object)

    def __init__(self, ctx: Session, interval_ms: int = 5000, parent: QObject | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.state: ServerHealth | None = None
        self._tasks = TaskKeeper()
        self._checking = False
        self._again = False
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
        """Start a check; while one runs, one more follows it (it never blocks the caller).

        The one that follows sees what changed meanwhile (another address, a started server).
        """
        if tags:
            self._count = 0
        if self._checking:
            self._again = True
            return
        self._checking = True
        self._tasks.spawn(self._check(), name="server-health")

    async def _check(self) -> None:
        try:
            while True:
                self._again = False
                try:
                    state = await self._probe()
                except Exception as exc:  # a bug of ours: say so instead of a stale state
                    log.exception("health check failed")
                    state = ServerHealth(
                        self.ctx.endpoint.url,
                        False,
                        error=f"The server check failed unexpectedly ({exc}); see the log.",
                        checked_at=time.time(),
                    )
                self.state = state
                self.state_changed.emit(state)
                if not self._again:
                    return
        finally:
            self._checking = False

    async def _probe(self) -> ServerHealth:
        pending = self.ctx.endpoint.pending_token
        if pending is not None and not pending.done():
            # The keyring may be asking to be unlocked: that wait is not the server's, so
            # it does not count against the check's timeout (the status says "Checking").
            await pending.wait()
        was_down = self.state is None or not self.state.reachable
        with_models = was_down or self._count % TAGS_EVERY == 0
        state = await self.ctx.health(with_models=with_models)
        if state.reachable:
            self._count += 1
        return state
