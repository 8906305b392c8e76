"""Wires the Queue view into the main window: tab (Ctrl+4), the Queue menu with every key
of the view (so F1 and Ctrl+K list them), the items-seen count and the break reminder.
"""

from __future__ import annotations

from dataclasses import dataclass

from safeguard_desktop.qt import QAction, QTimer
from safeguard_desktop.services.session import Session
from safeguard_desktop.ui.history_integration import free_view_shortcut
from safeguard_desktop.ui.main_window import WELLNESS_SETTINGS, MainWindow
from safeguard_desktop.ui.queue_view import QueueView

MENU = "&Queue"
PREFERRED_VIEW_KEY = "Ctrl+4"  # Review, History, Server come first
MENU_GROUPS = (
    ("open", "run", "pause", "refresh"),
    ("agree", "override", "escalate", "skip", "note", "undo"),
    ("next", "previous", "filter", "back"),
)


@dataclass
class QueueIntegration:
    window: MainWindow
    ctx: Session
    view: QueueView
    view_action: QAction

    def show(self) -> None:
        self.window.show_view(self.view)
        self.view.focus()

    def seen(self, count: int) -> None:
        noun = "item" if count == 1 else "items"
        self.window.set_status(
            "seen", f"{count} {noun} seen", "Queue items shown to you in this session"
        )

    def break_due(self, minutes: int) -> None:
        text = (
            f"You have been reviewing for {minutes} minutes. Take a few minutes away from the "
            "screen: the model keeps classifying meanwhile."
        )
        self.view.work_message.show_message(text, "warning")
        self.window.show_message(text, 30_000)

    def tab_changed(self, index: int) -> None:
        if self.window.views.widget(index) is self.view:
            self.view.refresh()
            self.view.focus()


def install(window: MainWindow, ctx: Session) -> QueueIntegration:
    view = QueueView(ctx, window.reveal, window)
    view_action = window.add_view("Queues", view, free_view_shortcut(window, PREFERRED_VIEW_KEY))
    view_action.setStatusTip("Review queues: decide item after item, the model classifying ahead")
    integration = QueueIntegration(window, ctx, view, view_action)
    view_action.triggered.connect(lambda _checked=False: view.focus())
    menu = window.menu(MENU)
    for n, group in enumerate(MENU_GROUPS):
        if n:
            menu.addSeparator()
        for name in group:
            menu.addAction(view.actions_by_name[name])
    view.seen_changed.connect(integration.seen)
    view.break_due.connect(integration.break_due)
    window.views.currentChanged.connect(integration.tab_changed)
    window.settings_changed.connect(
        lambda changed: view.apply_wellness() if changed & WELLNESS_SETTINGS else None
    )
    window.on_quit.append(view.shutdown)
    QTimer.singleShot(0, view, view.refresh)
    return integration
