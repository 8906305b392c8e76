"""Wires the policy workbench into the main window: tab (Ctrl+5) and the Workbench menu.

The view (and its charting library) is built the first time the tab is shown, so the
window opens as fast without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from safeguard_desktop.qt import QAction, QVBoxLayout, QWidget
from safeguard_desktop.services.session import Session
from safeguard_desktop.ui.history_integration import free_view_shortcut
from safeguard_desktop.ui.main_window import MainWindow

if TYPE_CHECKING:
    from safeguard_desktop.ui.workbench_view import WorkbenchView

MENU = "Work&bench"
PREFERRED_VIEW_KEY = "Ctrl+5"
ACTIONS = (
    ("evaluate", "&Evaluate the policy", "Ctrl+Shift+Return"),
    ("stop", "&Stop the evaluation", ""),
    ("import", "&Import a labelled set…", ""),
    ("compare", "&Compare two runs", ""),
)


@dataclass
class WorkbenchIntegration:
    window: MainWindow
    ctx: Session
    page: QWidget
    layout: QVBoxLayout
    view_action: QAction
    actions: dict[str, QAction] = field(default_factory=dict)
    view: WorkbenchView | None = None

    def ensure_view(self) -> WorkbenchView:
        """The workbench, built on first use."""
        if self.view is None:
            from safeguard_desktop.ui.workbench_view import WorkbenchView

            self.view = WorkbenchView(self.ctx, self.page)
            self.layout.addWidget(self.view)
        return self.view

    def show(self) -> WorkbenchView:
        view = self.ensure_view()
        self.window.show_view(self.page)
        return view

    def tab_changed(self, index: int) -> None:
        if self.window.views.widget(index) is self.page:
            view = self.ensure_view()
            view.refresh()
            view.focus()

    def trigger(self, name: str) -> None:
        view = self.show()
        view.actions_by_name[name].trigger()

    async def shutdown(self) -> None:
        if self.view is not None:
            await self.view.shutdown()


def install(window: MainWindow, ctx: Session) -> WorkbenchIntegration:
    page = QWidget(window)
    page.setObjectName("workbenchPage")
    layout = QVBoxLayout(page)
    layout.setContentsMargins(0, 0, 0, 0)
    view_action = window.add_view("Workbench", page, free_view_shortcut(window, PREFERRED_VIEW_KEY))
    view_action.setStatusTip("Measure a policy on labelled examples and compare versions")
    integration = WorkbenchIntegration(window, ctx, page, layout, view_action)
    for name, text, key in ACTIONS:
        keys = [key] if key else []
        action = window.add_action(MENU, text, partial(integration.trigger, name), keys)
        integration.actions[name] = action
    window.views.currentChanged.connect(integration.tab_changed)
    window.on_quit.append(integration.shutdown)
    return integration
