"""The main window: views in tabs, menus whose actions carry every shortcut, a status bar.

Extension points for other panels: `add_view(name, widget, shortcut)`, `menu(name)`,
`add_action(...)`, `set_status(key, text)`, the `server_state_changed` signal and the
`on_quit` callbacks (each may return an awaitable; they run before the window closes).

Built in two steps so the app can show it at once: `MainWindow()` is the frame (menus, tabs,
status bar) and imports nothing beyond Qt; `attach(ctx)` adds the review workspace for a
session. `MainWindow(ctx)` does both.

Signals:
    server_state_changed(ServerHealth): after every health check.
    work_began(): once, at the moderator's first move towards a review: content typed,
        pasted or loaded, or another view opened (app.py then loads the review client).
    closed(): the window finished shutting down.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from safeguard_desktop import qt  # `qt.Qt` where used: see qt.py on the window frame
from safeguard_desktop.qt import (
    QAction,
    QApplication,
    QCloseEvent,
    QFileDialog,
    QGuiApplication,
    QKeySequence,
    QLabel,
    QMainWindow,
    QMenu,
    QTabWidget,
    QTimer,
    QWidget,
    Signal,
)
from safeguard_desktop.ui.theme import app_icon, repolish
from safeguard_desktop.ui.wellness import RevealState

if TYPE_CHECKING:  # the review workspace and the session come with `attach`
    from safeguard_desktop.services.review import ReviewResult
    from safeguard_desktop.services.session import ServerHealth, Session
    from safeguard_desktop.ui.async_utils import TaskKeeper
    from safeguard_desktop.ui.command_palette import CommandPalette
    from safeguard_desktop.ui.review_view import ReviewView
    from safeguard_desktop.ui.server_monitor import ServerMonitor
    from safeguard_desktop.ui.shortcuts import ShortcutsDialog

log = logging.getLogger("safeguard.ui")
WELLNESS_SETTINGS = frozenset({"mask_content", "mask_quotes", "mask_categories"})
QuitCallback = Callable[[], Awaitable[None] | None]
MENU_ORDER = ("&File", "Revie&w", "&View", "&Help")  # Alt+R is "reveal", not a menu
FILE_FILTER = "Content files (*.txt *.md *.json *.jsonl *.csv *.eml);;All files (*)"


class MainWindow(QMainWindow):
    server_state_changed = Signal(object)
    settings_changed = Signal(object)  # frozenset of the setting names saved with a new value
    work_began = Signal()
    closed = Signal()

    ctx: Session
    review: ReviewView
    monitor: ServerMonitor
    _tasks: TaskKeeper

    def __init__(self, ctx: Session | None = None, *, monitor_interval_ms: int = 5000) -> None:
        super().__init__()
        self.setWindowTitle("Safeguard Desktop")
        self.setWindowIcon(app_icon())
        self.reveal = RevealState(self)
        self.on_quit: list[QuitCallback] = []
        self._attached = False
        self._closing = False
        self._closed = False
        self._menus: dict[str, QMenu] = {}
        self._status: dict[str, QLabel] = {}
        self._view_actions: list[QAction] = []
        self.shortcuts_dialog: ShortcutsDialog | None = None
        self.command_palette: CommandPalette | None = None

        self.views = QTabWidget(self)
        self.views.setObjectName("views")
        self.views.setDocumentMode(True)
        self.views.tabBar().setAutoHide(True)
        self.setCentralWidget(self.views)
        for title in MENU_ORDER:
            self.menu(title)
        self.statusBar().setSizeGripEnabled(True)
        self.resize(1360, 860)
        if ctx is not None:
            self.attach(ctx, monitor_interval_ms=monitor_interval_ms)

    def attach(self, ctx: Session, *, monitor_interval_ms: int = 5000) -> None:
        """The review workspace, its actions and the server checks, for this session."""
        from safeguard_desktop.ui.async_utils import TaskKeeper
        from safeguard_desktop.ui.review_view import ReviewView
        from safeguard_desktop.ui.server_monitor import ServerMonitor

        self.ctx = ctx
        self._tasks = TaskKeeper()
        self.review = ReviewView(ctx, self.reveal, self)
        self.add_view("Review", self.review)
        self._build_actions()
        self._build_status_bar()

        self.monitor = ServerMonitor(ctx, monitor_interval_ms, self)
        self.monitor.state_changed.connect(self._server_state)
        self.review.running_changed.connect(self._running_changed)
        self.review.review_finished.connect(self._review_finished)
        self.review.open_requested.connect(self.open_file_dialog)
        self.settings_changed.connect(self._settings_changed)
        self._hold = QTimer(self)
        self._hold.setInterval(100)
        self._hold.timeout.connect(self._check_hold)
        self._work_began = False
        self.review.editor.content_changed.connect(self._first_move)
        self.views.currentChanged.connect(self._first_move)
        self.review.running_changed.connect(self._first_move)
        self._attached = True

    @property
    def attached(self) -> bool:
        """Whether the session's workspace is in (see `attach`)."""
        return self._attached

    # --- extension API ---------------------------------------------------------------

    def menu(self, title: str) -> QMenu:
        """The menu called `title` (created before Help when new)."""
        key = title.replace("&", "")
        if key not in self._menus:
            menu = QMenu(title, self)
            help_menu = self._menus.get("Help")
            if help_menu is not None:
                self.menuBar().insertMenu(help_menu.menuAction(), menu)
            else:
                self.menuBar().addMenu(menu)
            self._menus[key] = menu
        return self._menus[key]

    def add_action(
        self,
        menu: str,
        text: str,
        slot: Callable[[], object],
        shortcuts: Sequence[str | QKeySequence.StandardKey] = (),
        *,
        tip: str = "",
    ) -> QAction:
        action = QAction(text, self)
        keys = [QKeySequence(k) for k in shortcuts]
        if keys:
            action.setShortcuts(keys)
        if tip:
            action.setStatusTip(tip)
            action.setToolTip(tip)
        action.triggered.connect(lambda _checked=False: slot())
        self.menu(menu).addAction(action)
        self.addAction(action)  # shortcuts work even while the menu bar is hidden
        return action

    def add_view(self, name: str, widget: QWidget, shortcut: str | None = None) -> QAction:
        """Add a tab; Ctrl+N (N = its position) switches to it unless `shortcut` is given."""
        index = self.views.addTab(widget, name)
        keys = shortcut or (f"Ctrl+{index + 1}" if index < 9 else "")
        action = self.add_action(
            "&View", name, lambda: self.show_view(widget), [keys] if keys else []
        )
        self._view_actions.append(action)
        return action

    def show_view(self, widget: QWidget) -> None:
        self.views.setCurrentWidget(widget)

    def set_status(self, key: str, text: str, tooltip: str = "", level: str = "") -> None:
        """A permanent status-bar field (created on first use); plain text only."""
        label = self._status.get(key)
        if label is None:
            label = QLabel(self)
            label.setObjectName(f"status_{key}")
            label.setTextFormat(qt.Qt.TextFormat.PlainText)
            self.statusBar().addPermanentWidget(label)
            self._status[key] = label
        label.setText(text)
        if tooltip:
            from safeguard_desktop.ui.span_view import rich_tooltip

            label.setToolTip(rich_tooltip(tooltip))  # may hold server text
        else:
            label.setToolTip("")
        label.setProperty("level", level)
        repolish(label)

    def status_text(self, key: str) -> str:
        label = self._status.get(key)
        return label.text() if label is not None else ""

    def show_message(self, text: str, timeout_ms: int = 8000) -> None:
        self.statusBar().showMessage(text, timeout_ms)

    # --- building --------------------------------------------------------------------

    def _build_actions(self) -> None:
        review = self.review
        self.open_action = self.add_action(
            "&File",
            "&Open content…",
            self.open_file_dialog,
            [QKeySequence.StandardKey.Open],
            tip="Import content from a file",
        )
        self.menu("&File").addSeparator()
        self.quit_action = self.add_action(
            "&File", "&Quit", self.request_quit, ["Ctrl+Q"], tip="Cancel any review and quit"
        )
        self.classify_action = self.add_action(
            "Revie&w",
            "&Classify",
            review.classify,
            ["Ctrl+Return", "Ctrl+Enter"],
            tip="Classify the content against the policy",
        )
        self.cancel_action = self.add_action(
            "Revie&w", "C&ancel review", review.cancel, ["Esc"], tip="Stop the running review"
        )
        self.cancel_action.setEnabled(False)
        self.menu("Revie&w").addSeparator()
        self.add_action("Revie&w", "Choose &policy", review.focus_policy_picker, ["Ctrl+L"])
        self.effort_action = self.add_action(
            "Revie&w", "Cycle reasoning &effort", self._cycle_effort, ["Ctrl+E"]
        )
        self.add_action("Revie&w", "Focus content &editor", review.focus_editor, ["Ctrl+Shift+K"])
        self.reveal_action = self.add_action(
            "Revie&w",
            "&Reveal hidden content",
            self._reveal_pressed,
            ["Alt+R"],
            tip="Tap to show or hide masked content; hold to peek",
        )
        self.reveal_action.setAutoRepeat(False)
        self.add_action("&Help", "&Keyboard shortcuts", self.show_shortcuts, ["F1"])
        self.palette_action = self.add_action(
            "&Help", "&Command palette…", self.show_palette, ["Ctrl+K"],
            tip="Every action of every menu: type a few letters, Enter runs it",
        )  # fmt: skip
        self.add_action("&Help", "&About Safeguard Desktop", self._about)

    def _build_status_bar(self) -> None:
        self.set_status("server", f"○ Checking {self.ctx.endpoint.url}…", level="unknown")
        self.set_status("model", "")
        self.set_status("last_review", "No review yet")

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Begin health checks and put the cursor in the editor (needs a running loop)."""
        self.monitor.start()
        if self.ctx.warnings:
            self.show_message("  ".join(self.ctx.warnings), 30000)
        if self.ctx.history is None:
            why = next((w for w in self.ctx.warnings if "not saved" in w), "")
            tip = why or "Reviews of this session are not saved."
            self.set_status("history", "History off", tip, "warning")
        if self.isVisible():
            self.activateWindow()  # without a window manager nobody else gives us the focus
        self.review.focus_editor()
        QTimer.singleShot(0, self, self.review.focus_editor)

    def request_quit(self) -> None:
        self.close()

    async def shutdown(self) -> None:
        """Cancel the review, run the on_quit hooks, stop checks, close the client."""
        if not self._attached:
            return
        import asyncio

        self.review.cancel()
        await self.review.wait_finished()
        for callback in list(self.on_quit):
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, 15)
            except Exception:  # one failing hook must not keep the app from quitting
                log.exception("quit hook failed")
        self.monitor.stop()
        await self.monitor.wait_idle()
        await self._tasks.wait_all(timeout=2)
        await self.ctx.client.aclose()

    def closeEvent(self, event: QCloseEvent) -> None:
        if self._closed:
            event.accept()
            return
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop (a bare widget test): nothing async to stop
            self._closed = True
            event.accept()
            return
        if not self._attached:  # closed before its session came: nothing to stop either
            self._closed = True
            event.accept()
            return
        event.ignore()
        if not self._closing:
            self._closing = True
            if self.review.running:
                self.show_message("Cancelling the running review before quitting…")
            self._tasks.spawn(self._close_after_shutdown(), name="shutdown")

    async def _close_after_shutdown(self) -> None:
        try:
            await self.shutdown()
        finally:
            self._closed = True
            self.close()
            self.closed.emit()

    # --- reactions -------------------------------------------------------------------

    def open_file_dialog(self) -> None:
        dialog = QFileDialog(self, "Open content", str(Path.home()), FILE_FILTER)
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
        dialog.fileSelected.connect(self.review.editor.load_file)
        dialog.open()  # window-modal without a nested event loop
        self._file_dialog = dialog

    def show_shortcuts(self) -> None:
        from safeguard_desktop.ui.shortcuts import ShortcutsDialog, collect_shortcuts

        menus = [self._menus[k] for k in self._menus]
        dialog = ShortcutsDialog(collect_shortcuts(menus), self)
        dialog.show()
        self.shortcuts_dialog = dialog

    def show_palette(self) -> None:
        if self.command_palette is not None and self.command_palette.isVisible():
            self.command_palette.search.setFocus()
            return
        from safeguard_desktop.ui.command_palette import CommandPalette

        menus = [self._menus[k] for k in self._menus]
        before = QApplication.focusWidget()
        palette = self.command_palette = CommandPalette(menus, self)
        palette.finished.connect(lambda _code: self._palette_closed(palette, before))
        palette.open()
        palette.search.setFocus()

    def _palette_closed(self, palette: CommandPalette, before: QWidget | None) -> None:
        """The keys go back where they were (a queue's single keys work at once)."""
        if self.command_palette is palette:
            self.command_palette = None
        palette.deleteLater()
        self.activateWindow()
        if before is not None and before.window() is self:
            with contextlib.suppress(RuntimeError):  # deleted while the palette was open
                before.setFocus(qt.Qt.FocusReason.PopupFocusReason)

    def _about(self) -> None:
        from safeguard_desktop import __version__

        self.show_message(
            f"Safeguard Desktop {__version__} · reviews with gpt-oss-safeguard on your own "
            "Ollama; nothing leaves this machine except requests to the configured host."
        )

    def _settings_changed(self, changed: frozenset[str]) -> None:
        if changed & WELLNESS_SETTINGS:
            self.review.apply_wellness()

    def _cycle_effort(self) -> None:
        effort = self.review.cycle_effort()
        self.show_message(f"Reasoning effort: {effort}", 3000)

    def _reveal_pressed(self) -> None:
        self.reveal.key_pressed()
        if self.reveal.revealed:
            self._hold.start()

    def _check_hold(self) -> None:
        alt = QGuiApplication.queryKeyboardModifiers() & qt.Qt.KeyboardModifier.AltModifier
        if not alt:
            self._hold.stop()
            self.reveal.key_released()

    def _first_move(self, *_args: object) -> None:
        if not self._work_began:
            self._work_began = True
            self.work_began.emit()

    def _running_changed(self, running: bool) -> None:
        self.cancel_action.setEnabled(running)
        self.classify_action.setEnabled(not running)

    def _review_finished(self, result: ReviewResult | None) -> None:
        stamp = time.strftime("%H:%M:%S")
        if result is None:
            self.set_status("last_review", f"Last review {stamp}: cancelled")
        else:
            seconds = f" · {result.stats.wall_s:.1f} s" if result.stats else ""
            label = result.verdict.label if result.verdict else result.status
            self.set_status("last_review", f"Last review {stamp}: {label}{seconds}")
        self.monitor.check_now()

    def _server_state(self, state: ServerHealth) -> None:
        if state.reachable:
            version = f" {state.version}" if state.version else ""
            self.set_status("server", f"● Ollama{version} · {state.url}", level="ok")
        else:
            self.set_status("server", f"● Not running at {state.url}", state.error or "", "error")
        if state.loaded:
            from safeguard_desktop.ui.server_monitor import human_bytes

            parts = [f"{m.name} · {human_bytes(m.size_vram)} VRAM" for m in state.loaded]
            self.set_status("model", " | ".join(parts), "Models loaded on the server (/api/ps)")
        else:
            self.set_status("model", "No model loaded" if state.reachable else "")
        if state.models is not None:
            self.review.set_models(state.models)
        self.server_state_changed.emit(state)
