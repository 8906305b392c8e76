"""The Server view: state of the Ollama server, Start/Stop, its log, and the models panel.

The panel only displays and asks; `ServerIntegration` does the starting and stopping and
feeds it `ServerReport`s and supervisor events.

Signals:
    start_requested(), stop_requested(), refresh_requested(), settings_requested(),
    assistant_requested(): the user pressed the matching button.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from safeguard_desktop.qt import (
    QFontDatabase,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    Qt,
    QTextCursor,
    QVBoxLayout,
    QWidget,
    Signal,
)
from safeguard_desktop.services.server_service import ServerReport, ServerService, SupervisorEvent
from safeguard_desktop.services.session import Session
from safeguard_desktop.ui.async_utils import TaskKeeper
from safeguard_desktop.ui.hosts_panel import HostsPanel
from safeguard_desktop.ui.message_bar import InlineMessage
from safeguard_desktop.ui.model_ops import ModelOps
from safeguard_desktop.ui.models_panel import LEVEL_COLOURS, ModelsPanel
from safeguard_desktop.ui.span_view import rich_tooltip

log = logging.getLogger("safeguard.ui.server")
LOG_LINES = 200
NOT_OURS = (
    "This Ollama was not started by Safeguard Desktop, so it is left alone: stop it where it "
    "was started (the Ollama app, or `systemctl stop ollama`)."
)
REMOTE = "A remote server is only used, never started or stopped from here: manage it there."
EVENT_LEVELS = {
    "started": "ok",
    "attached": "ok",
    "restarted": "ok",
    "exited": "warning",
    "restart_failed": "error",
    "gave_up": "error",
}


class ServerPanel(QWidget):
    start_requested = Signal()
    stop_requested = Signal()
    refresh_requested = Signal()
    settings_requested = Signal()
    assistant_requested = Signal()

    def __init__(self, ctx: Session, ops: ModelOps, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("serverPanel")
        self.ctx = ctx
        self.report: ServerReport | None = None
        self._tasks = TaskKeeper()
        self._follow: asyncio.Task[None] | None = None
        self._busy = False

        layout = QVBoxLayout(self)
        layout.setContentsMargins(10, 8, 10, 8)
        self.message = InlineMessage(self)
        layout.addWidget(self.message)
        split = QSplitter(Qt.Orientation.Horizontal, self)
        split.setChildrenCollapsible(False)
        left = QWidget(split)
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(self._server_box(left))
        self.hosts = HostsPanel(ctx, left)
        self.hosts.notice.connect(self.show_message)
        left_layout.addWidget(self.hosts)
        left_layout.addWidget(self._log_box(left), 1)
        self.models = ModelsPanel(ctx, ops, split)
        self.models.notice.connect(self.show_message)
        split.addWidget(left)
        split.addWidget(self.models)
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        layout.addWidget(split, 1)
        self._show_unknown()

    # -- building --------------------------------------------------------------------------------
    def _server_box(self, parent: QWidget) -> QGroupBox:
        box = QGroupBox("Ollama server", parent)
        outer = QVBoxLayout(box)
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.fields: dict[str, QLabel] = {}
        for key, title in (
            ("state", "State"),
            ("host", "Host"),
            ("version", "Server version"),
            ("process", "Process"),
            ("binary", "Program"),
            ("log_file", "Log file"),
        ):
            label = QLabel(box)
            label.setObjectName(f"server_{key}")
            label.setTextFormat(Qt.TextFormat.PlainText)
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            form.addRow(f"{title}:", label)
            self.fields[key] = label
        outer.addLayout(form)

        self.event_label = QLabel(box)
        self.event_label.setObjectName("serverEvent")
        self.event_label.setTextFormat(Qt.TextFormat.PlainText)
        self.event_label.setWordWrap(True)
        self.event_label.hide()
        outer.addWidget(self.event_label)

        buttons = QHBoxLayout()
        self.start_button = QPushButton("&Start", box)
        self.start_button.setObjectName("startServer")
        self.start_button.clicked.connect(self.start_requested)
        self.stop_button = QPushButton("S&top", box)
        self.stop_button.setObjectName("stopServer")
        self.stop_button.clicked.connect(self.stop_requested)
        self.refresh_button = QPushButton("Check &now", box)
        self.refresh_button.setToolTip("Ask the server for its state again")
        self.refresh_button.clicked.connect(self.refresh_requested)
        settings = QPushButton("Settings…", box)
        settings.setToolTip("Host, token, Ollama path and server options (Ctrl+,)")
        settings.clicked.connect(self.settings_requested)
        assistant = QPushButton("Set-up assistant…", box)
        assistant.setToolTip("Find Ollama and get the model, step by step")
        assistant.clicked.connect(self.assistant_requested)
        for button in (self.start_button, self.stop_button, self.refresh_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        buttons.addWidget(assistant)
        buttons.addWidget(settings)
        outer.addLayout(buttons)
        return box

    def _log_box(self, parent: QWidget) -> QGroupBox:
        box = QGroupBox("Server log", parent)
        layout = QVBoxLayout(box)
        self.log_view = QPlainTextEdit(box)
        self.log_view.setObjectName("serverLog")
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(LOG_LINES)
        self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.log_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.log_view.setPlaceholderText(
            "The log of the Ollama that Safeguard Desktop starts appears here."
        )
        layout.addWidget(self.log_view)
        return box

    # -- display ---------------------------------------------------------------------------------
    def _show_unknown(self) -> None:
        url = self.ctx.endpoint.url
        self.fields["state"].setText("Checking…")
        self.fields["host"].setText(url)
        for key in ("version", "process", "binary", "log_file"):
            self.fields[key].setText("–")
        self._set_buttons(running=None, managed=False, local=True)

    def show_report(self, report: ServerReport, *, started_here: bool = False) -> None:
        self.report = report
        status = report.status
        if status.running and status.managed:
            when = " in this session" if started_here else ""
            state = f"● Running · started by Safeguard Desktop{when}"
            colour = LEVEL_COLOURS["ok"]
        elif status.running:
            state = "● Running · attached (started outside Safeguard Desktop)"
            colour = LEVEL_COLOURS["ok"]
        else:
            state = "○ Not running"
            colour = LEVEL_COLOURS["error"]
        if status.problem:
            state += f"\n{status.problem}"
            colour = LEVEL_COLOURS["error"]
        self.fields["state"].setText(state)
        self.fields["state"].setStyleSheet(f"color: {colour}; font-weight: 600;")
        host = status.host + ("" if status.local else " (remote)")
        if report.token_warning:
            host += f"\n{report.token_warning}"
        self.fields["host"].setText(host)
        self.fields["version"].setText(status.version or "–")
        process = "–"
        if status.pid:
            process = f"pid {status.pid}"
            if status.started_at:
                process += f", started {status.started_at.replace('T', ' ')}"
        self.fields["process"].setText(process)
        binary = self.fields["binary"]
        binary.setToolTip(rich_tooltip(status.binary_problem) if status.binary_problem else "")
        if status.binary:
            version = f" (version {status.binary_version})" if status.binary_version else ""
            binary.setText(f"{status.binary}{version}")
        elif not status.local:
            binary.setText("– (remote server)")
        else:
            configured = str(self.ctx.settings["ollama_path"] or "")
            where = f"at {configured}" if configured else "on PATH or in the usual folders"
            needed = " (not needed while attached)" if status.running else ""
            binary.setText(f"Not found {where}{needed}")
        self.fields["log_file"].setText(status.log_file or "–")
        self._set_buttons(running=status.running, managed=status.managed, local=status.local)

    def _set_buttons(self, *, running: bool | None, managed: bool, local: bool) -> None:
        idle = not self._busy and running is not None
        self.start_button.setEnabled(idle and local and not running)
        self.stop_button.setEnabled(idle and local and bool(running) and managed)
        if not local:
            start_tip = stop_tip = REMOTE
        else:
            start_tip = "Ollama is already running." if running else "Start Ollama on this computer"
            if not running:
                stop_tip = "Ollama is not running."
            elif managed:
                stop_tip = "Stop the Ollama that Safeguard Desktop started"
            else:
                stop_tip = NOT_OURS
        self.start_button.setToolTip(start_tip)
        self.stop_button.setToolTip(stop_tip)

    def set_busy(self, text: str | None) -> None:
        """While starting or stopping: say so and disable Start/Stop; None ends it."""
        self._busy = text is not None
        if text is not None:
            self.fields["state"].setText(text)
            self.fields["state"].setStyleSheet("")
            self.start_button.setEnabled(False)
            self.stop_button.setEnabled(False)
        elif self.report is not None:
            self.show_report(self.report)

    def show_event(self, event: SupervisorEvent) -> None:
        stamp = time.strftime("%H:%M:%S")
        level = EVENT_LEVELS.get(event.kind, "warning")
        self.event_label.setText(f"{stamp} {event.message}")
        self.event_label.setStyleSheet(f"color: {LEVEL_COLOURS[level]};")
        self.event_label.show()
        if level == "error":
            self.show_message(event.message, "error")

    def clear_event(self) -> None:
        """Forget the last server event (it was about another address)."""
        self.event_label.clear()
        self.event_label.hide()

    def show_message(self, text: str, level: str = "error") -> None:
        self.message.show_message(text, level)

    # -- log -------------------------------------------------------------------------------------
    def follow_log(self, service: ServerService) -> None:
        """Show the last lines of the managed server's log and append new ones as they come."""
        self.stop_log()
        self.log_view.setPlainText("\n".join(service.log_tail(LOG_LINES)))
        self._scroll_log_to_end()
        self._follow = self._tasks.spawn(self._follow_lines(service), name="server-log")

    async def _follow_lines(self, service: ServerService) -> None:
        async for line in service.follow_log(from_end=True):
            self.append_log(line)

    def append_log(self, line: str) -> None:
        """Append; follow the end only when the view was at the end (reading stays put)."""
        bar = self.log_view.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        self.log_view.appendPlainText(line)
        if at_end:
            self._scroll_log_to_end()

    def stop_log(self) -> None:
        task, self._follow = self._follow, None
        if task is not None:
            task.cancel()

    def _scroll_log_to_end(self) -> None:
        """Cursor at the start of the last line: the view shows the end, scrolled fully left."""
        cursor = self.log_view.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.movePosition(QTextCursor.MoveOperation.StartOfBlock)
        self.log_view.setTextCursor(cursor)
        self.log_view.horizontalScrollBar().setValue(0)

    def log_text(self) -> str:
        return self.log_view.toPlainText()

    async def shutdown(self) -> None:
        self.stop_log()
        await self.hosts.shutdown()
        with contextlib.suppress(Exception):
            await self._tasks.wait_all(timeout=2)
        await self.models.shutdown()
