"""Wires the History view into the main window: tab, menu, shortcuts, refresh, retention.

`install(window, ctx)` is called once from app.py right after the MainWindow is built (no
running loop is needed then: the start-up purge is scheduled for the first loop turn).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from safeguard_desktop.qt import QAction, QKeySequence, QTimer
from safeguard_desktop.services.history_service import HistoryError
from safeguard_desktop.services.session import Session
from safeguard_desktop.ui.async_utils import TaskKeeper
from safeguard_desktop.ui.history_view import HistoryView
from safeguard_desktop.ui.main_window import WELLNESS_SETTINGS, MainWindow

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


@dataclass
class HistoryIntegration:
    """What `install` added; `purge_task` is the start-up retention purge (if any)."""

    window: MainWindow
    ctx: Session
    view: HistoryView
    view_action: QAction
    actions: dict[str, QAction] = field(default_factory=dict)
    purge_task: asyncio.Task[int | None] | None = None
    purged: int | None = None
    _tasks: TaskKeeper = field(default_factory=TaskKeeper)

    def show(self) -> None:
        self.window.show_view(self.view)

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
            self.view.refresh()
        return count

    async def shutdown(self) -> None:
        await self._tasks.wait_all(timeout=5)
        await self.view.shutdown()


def install(window: MainWindow, ctx: Session) -> HistoryIntegration:
    """Add the History tab, its menu and shortcuts; refresh it whenever a review finishes."""
    view = HistoryView(
        ctx,
        window.reveal,
        window,
        options_for=window.review.options,
        policies=window.review.policy_panel.policies,
    )
    view_action = window.add_view("History", view, free_view_shortcut(window))
    view_action.setStatusTip("Past reviews: search, decide, re-run, export")
    integration = HistoryIntegration(window, ctx, view, view_action)
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
    menu.addAction(view.open_action)  # table-only keys (Enter, Delete), listed for F1
    menu.addAction(view.delete_action)
    window.review.review_finished.connect(lambda _result: view.refresh())
    window.settings_changed.connect(
        lambda changed: view.apply_wellness() if changed & WELLNESS_SETTINGS else None
    )
    window.on_quit.append(integration.shutdown)
    QTimer.singleShot(0, window, integration.start)
    return integration
