"""Keep the managed `ollama serve` running for the GUI: restart after an unexpected exit.

Restarts are bounded (by default 3 within 60 s); past the bound the supervisor gives up and
says why. Every event (started, exited with its exit code or signal and the last log lines,
restarted, gave up) reaches the caller through one callback, never through printing.
The child is watched by polling its pid, which works on any event loop (qasync included)
and also for a server started earlier by the CLI, which is not our child.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from safeguard_desktop.engine import server_log, server_state
from safeguard_desktop.engine.errors import EngineError
from safeguard_desktop.engine.server import ServerController, StartResult, StopResult

log = logging.getLogger("safeguard.server")
EventKind = Literal["started", "attached", "exited", "restarted", "restart_failed", "gave_up"]


@dataclass(frozen=True)
class SupervisorEvent:
    kind: EventKind
    message: str
    pid: int | None = None
    returncode: int | None = None  # negative: killed by that signal; None: unknown
    log_tail: tuple[str, ...] = ()


EventCallback = Callable[[SupervisorEvent], None]


class ServerSupervisor:
    """Start (or attach), watch, restart within bounds, stop. Keep a reference while in use."""

    def __init__(
        self,
        controller: ServerController,
        *,
        on_event: EventCallback | None = None,
        max_restarts: int = 3,
        window: float = 60.0,
        poll: float = 0.5,
        retry_delay: float = 1.0,
        rotate_every: float = 60.0,
    ) -> None:
        self.controller = controller
        self.on_event = on_event
        self.max_restarts = max_restarts
        self.window = window
        self.poll = poll
        self.retry_delay = retry_delay
        self.rotate_every = rotate_every
        self.gave_up: str | None = None
        self._recent: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def watching(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> StartResult:
        """Attach or start; watch the server when this app manages it."""
        self._stopping = False
        self.gave_up = None
        result = await self.controller.start()
        if result.started:
            self._emit("started", f"Ollama started at {result.url} (pid {result.pid}).", result.pid)
        else:
            who = "started earlier by Safeguard Desktop" if result.managed else "not managed here"
            self._emit(
                "attached", f"Attached to the Ollama already at {result.url} ({who}).", result.pid
            )
        if result.managed and result.pid is not None and not self.watching:
            self._task = asyncio.create_task(self._watch(result.pid), name="ollama-supervisor")
        return result

    async def stop(self) -> StopResult:
        """Stop watching, then stop the server (only if this app started it)."""
        self._stopping = True
        await self.detach()
        return await self.controller.stop()

    async def detach(self) -> None:
        """Stop watching and leave the server running (e.g. when the GUI quits)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _emit(
        self,
        kind: EventKind,
        message: str,
        pid: int | None = None,
        returncode: int | None = None,
        tail: tuple[str, ...] = (),
    ) -> None:
        log.info("supervisor: %s", message)
        if self.on_event is None:
            return
        try:
            self.on_event(SupervisorEvent(kind, message, pid, returncode, tail))
        except Exception:  # a broken listener must not stop the watch
            log.exception("supervisor event callback failed")

    async def _watch(self, pid: int) -> None:
        current: int | None = pid
        while True:
            if current is not None:
                await self._wait_exit(current)
                if self._stopping:
                    return
                self._report_exit(current)
            now = time.monotonic()
            self._recent = [t for t in self._recent if now - t < self.window]
            if len(self._recent) >= self.max_restarts:
                self.gave_up = (
                    f"Ollama stopped {len(self._recent) + 1} times within {self.window:g} s, so "
                    f"it is not restarted again. Read the log ({self.controller.config.log_file}), "
                    "fix the cause, then start it from the Server panel."
                )
                self._emit("gave_up", self.gave_up, tail=tuple(self.controller.log_tail()))
                return
            self._recent.append(now)
            try:
                result = await self.controller.start()
            except EngineError as exc:
                self._emit(
                    "restart_failed",
                    f"Restarting Ollama failed: {exc}",
                    tail=tuple(self.controller.log_tail()),
                )
                current = None
                await asyncio.sleep(self.retry_delay)
                continue
            if not result.managed:
                self._emit(
                    "attached", f"Another Ollama now answers at {result.url}; it is not watched."
                )
                return
            current = result.pid
            self._emit("restarted", f"Ollama restarted (pid {current}).", current)

    def _report_exit(self, pid: int) -> None:
        proc = server_state.child(pid)
        code = proc.returncode if proc is not None else None
        reason = server_state.exit_reason(code)
        tail = tuple(self.controller.log_tail())
        server_state.live_state(self.controller.config.state_file)  # drops the stale record
        self._emit("exited", f"Ollama stopped unexpectedly ({reason}).", pid, code, tail)

    async def _wait_exit(self, pid: int) -> None:
        next_rotation = time.monotonic() + self.rotate_every
        while server_state.pid_alive(pid):
            await asyncio.sleep(self.poll)
            if time.monotonic() >= next_rotation:
                next_rotation = time.monotonic() + self.rotate_every
                try:
                    await asyncio.to_thread(
                        server_log.rotate_in_place, self.controller.config.log_file
                    )
                except OSError as exc:
                    log.warning("log rotation failed: %s", exc)
