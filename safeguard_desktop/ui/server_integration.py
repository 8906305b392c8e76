"""Wires the Server panel, the Settings dialog and the first-run assistant into a MainWindow.

Only the window's public API is used: `add_view`, `menu`, `add_action`, `set_status`,
`show_message`, the `server_state_changed` signal and the `on_quit` hooks. At start it
attaches to a running Ollama or (setting `manage_server`, loopback host) starts one under a
supervisor, without blocking the window; when the program or the model is missing it opens
the assistant. On quit it stops only a server it started in this session.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from safeguard_desktop.qt import QObject, QTimer
from safeguard_desktop.services.server_service import (
    EngineError,
    OllamaNotFound,
    ServerLifecycle,
    ServerService,
    StartResult,
    SupervisorEvent,
)
from safeguard_desktop.services.session import HostError, Session
from safeguard_desktop.settings import SettingsError
from safeguard_desktop.ui.async_utils import TaskKeeper
from safeguard_desktop.ui.first_run import FirstRunAssistant, SetupState
from safeguard_desktop.ui.main_window import MainWindow
from safeguard_desktop.ui.model_ops import ModelOps, Outcome
from safeguard_desktop.ui.server_panel import ServerPanel
from safeguard_desktop.ui.settings_dialog import SavedSettings, SettingsDialog

log = logging.getLogger("safeguard.ui.server")
STATUS_KEY = "ollama"
EVENT_STATUS = {
    "started": ("● Ollama started here", "ok"),
    "attached": ("Attached to Ollama", "ok"),
    "exited": ("Ollama stopped unexpectedly · restarting…", "warning"),
    "restarted": ("● Ollama restarted", "ok"),
    "restart_failed": ("Ollama restart failed", "error"),
    "gave_up": ("Ollama keeps stopping · not restarted", "error"),
}

# What the field says while Ollama runs: cleared once the health check finds it gone.
LIVE_TEXTS = frozenset(
    text
    for key, (text, _level) in EVENT_STATUS.items()
    if key in ("started", "attached", "restarted")
)


class ServerIntegration(QObject):
    """Owns the Server view, the model operations, the supervisor and the two dialogs."""

    def __init__(self, window: MainWindow, ctx: Session) -> None:
        super().__init__(window)
        self.window = window
        self.ctx = ctx
        self._tasks = TaskKeeper()
        self.lifecycle: ServerLifecycle = ctx.lifecycle  # attach/start, stop only our own
        self.lifecycle.on_event = self._on_event
        self.start_error: str | None = None
        self.settings_dialog: SettingsDialog | None = None
        self.assistant: FirstRunAssistant | None = None
        self._starting = False
        self._closed = False  # after shutdown nothing new is started
        self._refresh_task: asyncio.Task[None] | None = None
        self._refresh_again = False
        self._last_reachable: bool | None = None
        self._last_loaded: tuple[str, ...] = ()

        self.ops = ModelOps(ctx, self)
        self.panel = ServerPanel(ctx, self.ops)
        self.view_action = window.add_view("Server", self.panel)
        self._build_actions()
        self.panel.start_requested.connect(self.start_server)
        self.panel.stop_requested.connect(self.stop_server)
        self.panel.refresh_requested.connect(self.refresh_soon)
        self.panel.settings_requested.connect(self.open_settings)
        self.panel.assistant_requested.connect(self.open_assistant)
        self.ops.finished.connect(self._op_finished)
        window.server_state_changed.connect(self._health)
        window.on_quit.append(self.shutdown)

    @property
    def service(self) -> ServerService:
        return self.lifecycle.service

    def _build_actions(self) -> None:
        w = self.window
        self.settings_action = w.add_action(
            "&File", "&Settings…", self.open_settings, ["Ctrl+,"], tip="Change the settings"
        )
        quit_action = getattr(w, "quit_action", None)  # keep Quit last in the File menu
        if quit_action is not None:
            w.menu("&File").insertAction(quit_action, self.settings_action)
        self.start_action = w.add_action(
            "&Server", "&Start Ollama", self.start_server, tip="Start Ollama on this computer"
        )
        self.stop_action = w.add_action(
            "&Server", "S&top Ollama", self.stop_server, tip="Stop the Ollama this app started"
        )
        w.add_action("&Server", "Check &now", self.refresh_soon, tip="Ask the server again")
        w.menu("&Server").addSeparator()
        w.add_action(
            "&Server",
            "Set-up &assistant…",
            self.open_assistant,
            tip="Find Ollama and get the model, step by step",
        )

    def _spawn(self, coro: Coroutine[Any, Any, object], *, name: str) -> None:
        """Run `coro` as a kept task; after shutdown nothing new starts."""
        if self._closed:
            coro.close()
            return
        self._tasks.spawn(coro, name=name)

    # -- start-up ----------------------------------------------------------------------------
    def start(self) -> None:
        """Follow the log, list models, then attach or start (needs the running loop)."""
        self.panel.follow_log(self.service)
        self.panel.models.refresh()
        self._spawn(self._startup(), name="server-startup")

    async def _startup(self) -> None:
        if self.lifecycle.managed_here:
            try:
                outcome = await self.lifecycle.startup(lambda: self._busy("Starting Ollama…"))
            finally:
                self._busy(None)
            if outcome.error is not None:
                self._start_failed(outcome.error)
            elif outcome.result is not None:
                self._started(outcome.result)
        await self.refresh()
        state = await self.setup_state()
        binary_missing = state.local and not state.binary and not state.running
        if (binary_missing and self.ctx.settings["manage_server"]) or (
            state.model_installed is False
        ):
            self.open_assistant(state)

    # -- server ------------------------------------------------------------------------------
    def start_server(self) -> None:
        self._spawn(self._start_and_refresh(), name="server-start")

    async def _start_and_refresh(self) -> None:
        started = await self._start(announce=True)
        await self.refresh()
        report = self.panel.report
        if not started and report is not None and not report.status.binary:
            self.open_assistant()  # no program: the assistant helps to find one
        else:
            await self._update_assistant()

    async def _start(self, *, announce: bool) -> bool:
        """Attach or start under a supervisor; errors go to the panel and the status bar."""
        if self._starting:
            return False
        self._busy("Starting Ollama…" if announce else "")
        try:
            result = await self.lifecycle.start()
        except EngineError as exc:
            self._start_failed(exc)
            return False
        finally:
            self._busy(None)
        self._started(result)
        return True

    def _busy(self, text: str | None) -> None:
        self._starting = text is not None
        if text:
            self.window.set_status(STATUS_KEY, text, level="unknown")
        self.panel.set_busy(text or None)

    def _start_failed(self, exc: EngineError) -> None:
        self.start_error = str(exc)
        short = "Ollama not found" if isinstance(exc, OllamaNotFound) else "Ollama did not start"
        self.window.set_status(STATUS_KEY, short, str(exc), "error")
        self.panel.show_message(str(exc), "error")

    def _started(self, result: StartResult) -> None:
        if self.start_error is not None:  # the failure shown earlier is over
            self.start_error = None
            self.panel.message.dismiss()
        if result.started:
            self.window.show_message(f"Ollama started at {result.url}.")
        self._recheck_health()

    def stop_server(self) -> None:
        self._spawn(self._stop(), name="server-stop")

    async def _stop(self) -> None:
        self.panel.set_busy("Stopping Ollama…")
        self.window.set_status(STATUS_KEY, "Stopping Ollama…", level="unknown")
        try:
            result = await self.lifecycle.stop()
        except EngineError as exc:
            self.window.set_status(STATUS_KEY, "Not stopped", str(exc), "warning")
            self.panel.show_message(str(exc), "error")
        else:
            text = "Ollama stopped." if result.was_running else "Ollama was not running."
            self.window.set_status(STATUS_KEY, "Ollama stopped", text, "")
            self.window.show_message(text)
        finally:
            self.panel.set_busy(None)
        self._recheck_health()
        await self.refresh()

    def _on_event(self, event: SupervisorEvent) -> None:
        text, level = EVENT_STATUS.get(event.kind, (event.message, "warning"))
        if event.pid and event.kind in ("started", "restarted"):
            text += f" (pid {event.pid})"
        self.window.set_status(STATUS_KEY, text, event.message, level)
        self.panel.show_event(event)
        if event.kind != "started":  # start() refreshes by itself
            self.refresh_soon()
            self._recheck_health()

    def _recheck_health(self) -> None:
        monitor = getattr(self.window, "monitor", None)
        if monitor is not None:
            monitor.check_now(tags=True)

    def refresh_soon(self) -> None:
        self._spawn(self.refresh(), name="server-refresh")

    async def refresh(self) -> None:
        """Ask the server for its status; returns once a report newer than the call is shown.

        Calls while one runs share it: the running loop goes round once more for them.
        """
        self._refresh_again = True
        if self._refresh_task is None or self._refresh_task.done():
            self._refresh_task = self._tasks.spawn(self._refresh_loop(), name="server-status")
        await asyncio.shield(self._refresh_task)

    async def _refresh_loop(self) -> None:
        while self._refresh_again:
            self._refresh_again = False
            report = await self.service.status()
            ours = self.lifecycle.started_here(report.status.host)
            self.panel.show_report(report, started_here=ours)
            self.stop_action.setEnabled(report.status.managed and report.status.running)
            self.start_action.setEnabled(report.status.local and not report.status.running)

    def _health(self, state: object) -> None:
        """MainWindow's periodic check: refresh when reachability or loaded models change."""
        if self._closed:
            return
        if getattr(state, "url", None) != self.ctx.endpoint.url:  # checked the old host
            self._recheck_health()
            return
        reachable = bool(getattr(state, "reachable", False))
        loaded = tuple(sorted(m.name for m in getattr(state, "loaded", ())))
        if reachable != self._last_reachable:
            self._last_reachable = reachable
            if not reachable and self.window.status_text(STATUS_KEY) in LIVE_TEXTS:
                # "Attached" or "started" beside "Not running" said two things at once.
                self.window.set_status(STATUS_KEY, "")
            self.refresh_soon()
            self.panel.models.refresh()
        elif loaded != self._last_loaded:
            self.panel.models.refresh()
        self._last_loaded = loaded

    # -- first-run assistant -----------------------------------------------------------------
    async def setup_state(self) -> SetupState:
        report = self.panel.report or await self.service.status()
        status = report.status
        model = str(self.ctx.settings["model"])
        installed: bool | None = None
        if status.running:
            try:
                async with self.ctx.models() as models:
                    names = {m.name for m in await models.installed()}
                installed = model in names or f"{model}:latest" in names
            except EngineError as exc:
                log.info("model check failed: %s", exc)
        return SetupState(
            url=status.host,
            local=status.local,
            binary=status.binary,
            binary_problem=status.binary_problem,
            configured=str(self.ctx.settings["ollama_path"] or ""),
            running=status.running,
            server_problem=self.start_error if not status.running else None,
            model=model,
            model_installed=installed,
        )

    def open_assistant(self, state: SetupState | None = None) -> FirstRunAssistant:
        if self.assistant is None:
            self.assistant = FirstRunAssistant(
                self.ops, str(self.ctx.settings["model"]), self.window
            )
            self.assistant.locate_chosen.connect(self._binary_chosen)
            self.assistant.start_requested.connect(self.start_server)
            self.assistant.recheck_requested.connect(
                lambda: self._spawn(self._recheck(), name="setup-recheck")
            )
        if state is not None:
            self.assistant.set_state(state)
        else:
            self._spawn(self._update_assistant(), name="setup-state")
        self.assistant.show()
        self.assistant.raise_()
        self.assistant.activateWindow()
        return self.assistant

    async def _update_assistant(self) -> None:
        if self.assistant is not None:
            self.assistant.set_state(await self.setup_state())

    async def _recheck(self) -> None:
        await self.refresh()
        await self._update_assistant()

    def _binary_chosen(self, path: str) -> None:
        self._spawn(self._use_binary(path), name="setup-binary")

    async def _use_binary(self, path: str) -> None:
        assistant = self.assistant
        try:
            binary = self.service.use_binary(path)
        except (OllamaNotFound, SettingsError) as exc:
            if assistant is not None:
                log.info("not usable as ollama: %s", exc)
                assistant.message.show_message(
                    f"{Path(path).name} cannot be run as Ollama: choose the ollama program itself."
                )
            return
        except OSError as exc:
            if assistant is not None:
                assistant.message.show_message(f"Settings could not be saved ({exc.strerror}).")
            return
        if assistant is not None:
            assistant.message.show_message(f"Using {binary}.", "info")
        await self.refresh()
        report = self.panel.report
        if report is not None and report.status.local and not report.status.running:
            await self._start(announce=True)
            await self.refresh()
        await self._update_assistant()

    def _op_finished(self, outcome: Outcome) -> None:
        if self.assistant is not None and self.assistant.isVisible():
            self._spawn(self._update_assistant(), name="setup-state")
        if outcome.ok and outcome.kind in ("warm", "unload"):
            self._recheck_health()

    # -- settings ----------------------------------------------------------------------------
    def open_settings(self) -> SettingsDialog:
        dialog = self.settings_dialog
        if dialog is not None and dialog.isVisible():
            dialog.raise_()
            dialog.activateWindow()
            return dialog
        dialog = SettingsDialog(self.ctx.settings, self.window)
        dialog.saved.connect(self._settings_saved)
        self.settings_dialog = dialog
        dialog.open()  # window-modal without a nested event loop
        return dialog

    def _settings_saved(self, saved: SavedSettings) -> None:
        self.window.settings_changed.emit(frozenset(saved.changed))  # views apply them now
        if "host" in saved.changed:  # a host chosen here wins over --host from now on
            self.ctx.forget_host_override()
        self._spawn(self._apply_settings(saved), name="settings-apply")

    async def _apply_settings(self, saved: SavedSettings) -> None:
        old_url = self.ctx.endpoint.url
        try:  # reads the token (in a thread): the keyring may block on an unlock prompt
            await self.ctx.apply_settings()
        except HostError as exc:
            self.panel.show_message(str(exc), "error")
            return
        if self.ctx.endpoint.url != old_url:  # what was said about the old server is stale
            self.window.set_status(STATUS_KEY, "")
            self.panel.clear_event()
        report = self.panel.report
        if saved.warning:
            self.panel.show_message(saved.warning, "warning")
        elif saved.server_changed and report is not None and report.status.managed:
            self.panel.show_message(
                "The new server options apply at the next start: Stop, then Start Ollama.", "info"
            )
        self.window.show_message("Settings saved.")
        self.refresh_soon()
        self.panel.models.refresh()
        self._recheck_health()

    # -- quit --------------------------------------------------------------------------------
    async def shutdown(self) -> None:
        """Stop what this session started; leave any other server running."""
        self._closed = True
        self.ops.close()
        await self.ops.wait_idle()
        await self.panel.shutdown()
        await self._tasks.wait_all(timeout=5)
        await self.lifecycle.shutdown()
        for dialog in (self.assistant, self.settings_dialog):
            if dialog is not None:
                dialog.close()


def install(window: MainWindow, ctx: Session) -> ServerIntegration:
    """Add the Server view, Settings and the assistant to `window`; start-up runs async."""
    integration = ServerIntegration(window, ctx)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # called before the loop runs: begin on its first turn
        QTimer.singleShot(0, window, integration.start)
    else:
        integration.start()
    return integration
