"""Wires the History view into the main window: tab, menu, shortcuts, refresh, retention.

`install(window, ctx)` is called once from app.py right after the MainWindow is built (no
running loop is needed then: the start-up purge is scheduled for the first loop turn). The
view itself is built the first time it is needed (its tab shown, one of its actions used:
`HistoryIntegration.view`), so a window opened for reviewing does not carry it (3 MiB).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from safeguard_desktop import qt
from safeguard_desktop.qt import QAction, QKeySequence, QTimer, QVBoxLayout, QWidget
from safeguard_desktop.services.history_service import HistoryError
from safeguard_desktop.services.session import Session
from safeguard_desktop.ui.async_utils import TaskKeeper
from safeguard_desktop.ui.main_window import WELLNESS_SETTINGS, MainWindow

if TYPE_CHECKING:
    from safeguard_desktop.ui.history_view import HistoryView

log = logging.getLogger("safeguard.ui.history")
MENU = "Histor&y"
PREFERRED_VIEW_KEY = "Ctrl+2"  # Review is Ctrl+1; History comes second
RETENTION_NOTE_MS = 60_000


def free_view_shortcut(window: MainWindow, preferred: str = PREFERRED_VIEW_KEY) -> str:
    """`preferred` unless an action of the window already uses it, else the first free Ctrl+N."""
    taken = {
        key.toString(QKeySequence.SequenceFormat.PortableText)
        for action in window.findChildren(QAction)
        for key in action.shortcuts()
    }
    for candidate in (preferred, *(f"Ctrl+{n}" for n in range(2, 10))):
        if candidate not in taken:
            return candidate
    return ""


# The view's own table actions (keys of the table only), listed in the menu for F1 and the
# command palette: stand-ins with the same text and keys until the view is built.
TABLE_ACTIONS = (
    ("open_action", "&Open review", ("Return", "Enter")),
    ("delete_action", "&Delete…", ("Delete",)),
)


@dataclass
class HistoryIntegration:
    """What `install` added; `purge_task` is the start-up retention purge (if any)."""

    window: MainWindow
    ctx: Session
    page: QWidget  # the tab; the view goes into it when built
    view_action: QAction
    actions: dict[str, QAction] = field(default_factory=dict)
    stand_ins: list[QAction] = field(default_factory=list)
    purge_task: asyncio.Task[int | None] | None = None
    purged: int | None = None
    _view: HistoryView | None = None
    _tasks: TaskKeeper = field(default_factory=TaskKeeper)

    @property
    def built(self) -> bool:
        return self._view is not None

    @property
    def view(self) -> HistoryView:
        """The History view, built on first use."""
        if self._view is None:
            from safeguard_desktop.ui.history_view import HistoryView

            review = self.window.review
            view = HistoryView(
                self.ctx,
                self.window.reveal,
                self.page,
                options_for=review.options,
                policies=review.policy_panel.policies,
            )
            layout = self.page.layout()
            assert layout is not None
            layout.addWidget(view)
            menu = self.window.menu(MENU)
            for stand_in, (name, _text, _keys) in zip(self.stand_ins, TABLE_ACTIONS, strict=True):
                menu.insertAction(stand_in, getattr(view, name))
                menu.removeAction(stand_in)
                stand_in.deleteLater()
            self.stand_ins.clear()
            self._view = view
        return self._view

    def show(self) -> None:
        self.view  # noqa: B018 (built first)
        self.window.show_view(self.page)

    def tab_changed(self, index: int) -> None:
        if self.window.views.widget(index) is self.page:
            self.view  # noqa: B018 (built now: the tab shows it)

    def refresh(self) -> None:
        """A review finished: the list reads it (nothing to do before the view is built)."""
        if self._view is not None:
            self._view.refresh()

    def apply_wellness(self) -> None:
        if self._view is not None:
            self._view.apply_wellness()

    def _stand_in(self, name: str, text: str, keys: tuple[str, ...]) -> QAction:
        """An entry of the menu for a table action of the view not built yet: same text and
        keys (for F1 and the palette); like the view's, its keys work on the table only."""
        action = QAction(text, self.page)
        action.setShortcuts([QKeySequence(k) for k in keys])
        action.setShortcutContext(qt.Qt.ShortcutContext.WidgetShortcut)
        action.triggered.connect(lambda _checked=False: self._table_action(name))
        self.page.addAction(action)
        return action

    def _table_action(self, name: str) -> None:
        self.show()
        getattr(self.view, name).trigger()

    def find(self) -> None:
        self.show()
        self.view.focus_search()

    def export(self) -> None:
        self.show()
        self.view.export()

    def rerun(self) -> None:
        self.show()
        self.view.rerun_current()

    def start(self) -> None:
        """Runs on the first loop turn: the retention purge, off the GUI thread."""
        if self.ctx.retention_days():
            self.purge_task = self._tasks.spawn(self.purge(), name="retention")

    async def purge(self) -> int | None:
        days = self.ctx.retention_days()
        try:
            count = await self.ctx.apply_retention()
        except HistoryError as exc:
            self.window.set_status(
                "retention", "Retention purge failed", f"{exc} Old reviews were kept.", "warning"
            )
            return None
        if count is None:
            return None
        self.purged = count
        noun = "review" if count == 1 else "reviews"
        self.window.set_status(
            "retention",
            f"Retention: {count:,} {noun} older than {days} days deleted",
            "Set by Settings → History → retention_days (0 keeps everything).",
        )
        QTimer.singleShot(
            RETENTION_NOTE_MS, self.window, lambda: self.window.set_status("retention", "")
        )
        if count:
            self.refresh()
        return count

    async def shutdown(self) -> None:
        await self._tasks.wait_all(timeout=5)
        if self._view is not None:
            await self._view.shutdown()


def install(window: MainWindow, ctx: Session) -> HistoryIntegration:
    """Add the History tab, its menu and shortcuts; refresh it whenever a review finishes."""
    page = QWidget(window)
    page.setObjectName("historyPage")
    QVBoxLayout(page).setContentsMargins(0, 0, 0, 0)
    view_action = window.add_view("History", page, free_view_shortcut(window))
    view_action.setStatusTip("Past reviews: search, decide, re-run, export")
    integration = HistoryIntegration(window, ctx, page, view_action)
    add = window.add_action
    integration.actions = {
        "find": add(MENU, "&Find in history", integration.find, ["Ctrl+F"],
                    tip="Search past reviews"),
        "export": add(MENU, "&Export escalation note…", integration.export, ["Ctrl+Shift+E"],
                      tip="Markdown note for the selected reviews"),
        "rerun": add(MENU, "&Re-run and compare…", integration.rerun, ["Ctrl+Shift+R"],
                     tip="Run the selected review again and compare the verdicts"),
    }  # fmt: skip
    menu = window.menu(MENU)
    menu.addSeparator()
    for name, text, keys in TABLE_ACTIONS:  # table-only keys (Enter, Delete), listed for F1
        stand_in = integration._stand_in(name, text, keys)
        integration.stand_ins.append(stand_in)
        menu.addAction(stand_in)
    window.views.currentChanged.connect(integration.tab_changed)
    window.review.review_finished.connect(lambda _result: integration.refresh())
    window.settings_changed.connect(
        lambda changed: integration.apply_wellness() if changed & WELLNESS_SETTINGS else None
    )
    window.on_quit.append(integration.shutdown)
    QTimer.singleShot(0, window, integration.start)
    return integration
