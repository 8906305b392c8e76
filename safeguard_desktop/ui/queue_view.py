"""The Queue view (Ctrl+4): the moderator's day, worked from the keyboard.

Two pages. The list shows every queue with its counts per state, progress, items per
minute and ETA; Run / Pause start and stop classifying (the batch runner of
services/queue_service.py, N requests in flight, the model always ahead). Return opens the
selected queue at its first undecided item, in the review layout: verdict and highlighted
reasoning, the verdict grid when several policies, the content masked per the wellness
settings. Single keys decide and move on (see KEYS); each decision is appended to the audit
trail, and U appends a retraction of the last one. Every action is in the Queue menu, in
F1 and in the Ctrl+K palette.

Signals:
    seen_changed(int): items shown in this session (for the status bar).
    break_due(int): minutes of continuous reviewing, when a break reminder is due.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from safeguard_desktop.core.policy import Policy
from safeguard_desktop.core.wellness import BreakClock, parse_categories, should_mask
from safeguard_desktop.qt import (
    QAbstractItemView,
    QAction,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QKeySequence,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QStackedWidget,
    Qt,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
    Signal,
)
from safeguard_desktop.services.history_service import HistoryError, Review
from safeguard_desktop.services.queue_service import (
    EngineError,
    ItemView,
    Progress,
    QueueError,
    QueueService,
    QueueStatus,
)
from safeguard_desktop.services.session import Session
from safeguard_desktop.ui.async_utils import TaskKeeper, dialog_result
from safeguard_desktop.ui.message_bar import InlineMessage
from safeguard_desktop.ui.reasoning_view import ContentPane, ReasoningView
from safeguard_desktop.ui.stored_review import (
    decision_line,
    rebuild_policy,
    show_texts,
    show_verdict,
)
from safeguard_desktop.ui.theme import titled_pane
from safeguard_desktop.ui.verdict_panel import VerdictPanel, plain_label
from safeguard_desktop.ui.wellness import MaskedArea, RevealState

log = logging.getLogger("safeguard.ui.queue")

FILTERS: dict[str, str] = {
    "all": "All items",
    "undecided": "Only undecided",
    "violations": "Only violations",
    "low": "Only low confidence or unclear",
    "escalated": "Only escalated",
}
ORDERS: dict[str, str] = {
    "file": "File order",
    "oldest": "Oldest first",
    "verdict": "Violations first, by confidence",
}
LIST_COLUMNS = ("Queue", "Items", "Pending", "Classified", "Decided", "Failed", "Run",
                "Policies", "Model")  # fmt: skip
GRID_COLUMNS = ("Policy", "Verdict", "Rules", "Confidence", "Review")
KEYS_HINT = (
    "A agree · O override · E escalate · S skip · N note · J/→ next · K/← previous · "
    "U undo · F filter · R run · P pause · Alt+R reveal · Ctrl+K all commands · Esc queues"
)
OVERRIDE_LABELS = ("violation", "safe")
RIGHT = Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_text(p: Progress) -> str:
    """12/200 · 4.2 items/min · ETA 45 min"""
    rate = f" · {p.per_minute:.1f} items/min" if p.per_minute else ""
    eta = f" · ETA {duration_text(p.eta_s)}" if p.eta_s is not None and p.done < p.total else ""
    return f"{p.done}/{p.total}{rate}{eta}"


def low_confidence(item: ItemView) -> bool:
    """A verdict the moderator should look at twice: low confidence, or no clear answer."""
    for cell in item.verdicts:
        if cell.label in ("unparsed", "incomplete", "failed"):
            return True
        c = cell.confidence
        if (isinstance(c, str) and c.lower() == "low") or (
            isinstance(c, int | float) and not isinstance(c, bool) and c < 0.5
        ):
            return True
    return False


def passes(item: ItemView, key: str) -> bool:
    if key == "undecided":
        return item.decision is None
    if key == "violations":
        return item.violation is True
    if key == "low":
        return low_confidence(item)
    if key == "escalated":
        return item.decision is not None and item.decision.action == "escalate"
    return True


@dataclass
class _Run:
    task: asyncio.Task[object]
    stop: asyncio.Event
    progress: Progress | None = None


@dataclass
class _Undo:
    queue: str
    position: int
    action: str


@dataclass
class _Shown:
    """The item on screen and the review chosen in its grid."""

    item: ItemView
    cell: int = 0
    review: Review | None = None
    policy: Policy | None = None
    loads: int = 0
    reviews: dict[int, tuple[Review, Policy | None]] = field(default_factory=dict)


class ReasonDialog(QDialog):
    """A reason (and, for an override, the label): Enter accepts when a reason is given."""

    def __init__(
        self,
        title: str,
        prompt: str,
        parent: QWidget,
        *,
        labels: tuple[str, ...] = (),
        preset: str | None = None,
        required: bool = True,
        rules: tuple[str, ...] = (),
    ) -> None:
        super().__init__(parent)
        self.setObjectName("reasonDialog")
        self.setWindowTitle(title)
        self.required = required
        self.label_picker: QComboBox | None = None
        form = QFormLayout()
        if labels:
            self.label_picker = QComboBox(self)
            self.label_picker.setObjectName("overrideLabel")
            self.label_picker.addItems(labels)
            if preset in labels:
                self.label_picker.setCurrentText(preset)
            form.addRow("&Label", self.label_picker)
        self.rule_picker: QComboBox | None = None
        if labels:  # an override may name the rule or category it applies
            self.rule_picker = QComboBox(self)
            self.rule_picker.setObjectName("overrideRule")
            self.rule_picker.setEditable(True)
            self.rule_picker.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
            self.rule_picker.addItems(list(rules))
            self.rule_picker.setEditText("")
            self.rule_picker.setToolTip("Optional: the policy rule or category, e.g. H2.f")
            form.addRow("R&ule (optional)", self.rule_picker)
        self.reason = QLineEdit(self)
        self.reason.setObjectName("reason")
        self.reason.setPlaceholderText(prompt)
        form.addRow("&Reason" if required else "&Note", self.reason)
        self.message = InlineMessage(self)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        buttons.accepted.connect(self._ok)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.message)
        layout.addWidget(buttons)
        self.reason.setFocus()
        self.resize(460, self.sizeHint().height())

    def label(self) -> str | None:
        return self.label_picker.currentText() if self.label_picker is not None else None

    def rule(self) -> str | None:
        if self.rule_picker is None:
            return None
        return self.rule_picker.currentText().strip() or None

    def text(self) -> str:
        return self.reason.text().strip()

    def _ok(self) -> None:
        if self.required and not self.text():
            self.message.show_message("Give a reason: it goes into the audit trail.", "error")
            self.reason.setFocus()
            return
        self.accept()


class QueueView(QWidget):
    seen_changed = Signal(int)
    break_due = Signal(int)

    def __init__(self, ctx: Session, reveal: RevealState, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("queueView")
        self.ctx = ctx
        self.reveal = reveal
        self._tasks = TaskKeeper()
        self.statuses: list[QueueStatus] = []
        self.current: str | None = None  # the queue open on the work page
        self.items: list[ItemView] = []
        self.shown: _Shown | None = None
        self.filter = "all"
        self.runs: dict[str, _Run] = {}
        self.undo_stack: list[_Undo] = []
        self.seen: set[tuple[str, int]] = set()
        self.clock = BreakClock(every_s=0)
        self.now: Callable[[], float] = time.monotonic  # the break clock's time source
        self._busy = False  # a decision is being written
        self._refreshing = False
        self._dirty = False
        self._open_at_first = False

        self.pages = QStackedWidget(self)
        self._build_list_page()
        self._build_work_page()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.pages)
        self.actions_by_name = self._build_actions()
        self.pages.setCurrentWidget(self.list_page)

    # --- building -------------------------------------------------------------------------

    def _build_list_page(self) -> None:
        page = self.list_page = QWidget(self)
        title = QLabel("Review queues", page)
        title.setObjectName("paneTitle")
        self.table = QTableWidget(0, len(LIST_COLUMNS), page)
        self.table.setObjectName("queueTable")
        self.table.setHorizontalHeaderLabels(LIST_COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        self.table.setAlternatingRowColors(True)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.doubleClicked.connect(lambda _index: self.open_selected())
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.empty_hint = QLabel(
            "No queue yet. Create one from a file of reported items, for example:\n"
            "safeguard-desktop queue create reports --from reports.jsonl --policy spam-scams\n"
            "(one policy or several; .jsonl .json .csv .txt .eml or a folder of them).",
            page,
        )
        self.empty_hint.setObjectName("hint")
        self.empty_hint.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.open_button = QPushButton("&Open (Enter)", page)
        self.run_button = QPushButton("Run (R)", page)
        self.pause_button = QPushButton("Pause (P)", page)
        self.refresh_button = QPushButton("Refresh (F5)", page)
        self.open_button.clicked.connect(self.open_selected)
        self.run_button.clicked.connect(self.run_selected)
        self.pause_button.clicked.connect(self.pause_selected)
        self.refresh_button.clicked.connect(self.refresh)
        self.list_progress = QProgressBar(page)
        self.list_progress.setObjectName("queueProgress")
        self.list_progress_text = plain_label(page, "queueRate", wrap=False)
        self.list_message = InlineMessage(page)
        buttons = QHBoxLayout()
        for b in (self.open_button, self.run_button, self.pause_button, self.refresh_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        bar = QHBoxLayout()
        bar.addWidget(self.list_progress, 1)
        bar.addWidget(self.list_progress_text)
        layout = QVBoxLayout(page)
        layout.addWidget(title)
        layout.addWidget(self.list_message)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.empty_hint)
        layout.addLayout(bar)
        layout.addLayout(buttons)
        self.pages.addWidget(page)

    def _build_work_page(self) -> None:
        page = self.work_page = QWidget(self)
        page.setObjectName("queueWork")
        page.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.item_title = plain_label(page, "itemTitle", wrap=False)
        self.item_title.setObjectName("paneTitle")
        self.filter_picker = QComboBox(page)
        self.filter_picker.setObjectName("queueFilter")
        for key, text in FILTERS.items():
            self.filter_picker.addItem(text, key)
        self.filter_picker.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # F cycles it
        self.filter_picker.currentIndexChanged.connect(
            lambda _i: self.set_filter(str(self.filter_picker.currentData()))
        )
        self.order_picker = QComboBox(page)
        self.order_picker.setObjectName("queueOrder")
        for key, text in ORDERS.items():
            self.order_picker.addItem(text, key)
        self.order_picker.setToolTip("The order items are shown and classified in")
        self.order_picker.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keys stay with the queue
        self.order_picker.activated.connect(
            lambda _i: self.set_order(str(self.order_picker.currentData()))
        )
        self.work_progress = plain_label(page, "workProgress", wrap=False)
        self.keys_hint = plain_label(page, "queueKeys")
        self.keys_hint.setText(KEYS_HINT)
        self.keys_hint.setObjectName("hint")
        self.work_message = InlineMessage(page)
        self.verdict = VerdictPanel(page)
        self.grid = QTableWidget(0, len(GRID_COLUMNS), page)
        self.grid.setObjectName("verdictGrid")
        self.grid.setHorizontalHeaderLabels(GRID_COLUMNS)
        self.grid.verticalHeader().hide()
        self.grid.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.grid.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.grid.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.grid.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # keys stay with the queue
        self.grid.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.grid.horizontalHeader().setStretchLastSection(True)
        self.grid.cellClicked.connect(lambda row, _col: self.show_cell(row))
        self.reasoning = ReasoningView(self.reveal, page)
        self.reasoning.setObjectName("queueReasoning")
        self.reasoning.setPlaceholderText("The model has not classified this item yet.")
        self.reasoning.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.reasoning.set_mask_quotes(bool(self.ctx.settings["mask_quotes"]))
        self.content = ContentPane(page)
        self.content.setObjectName("queueContent")
        self.content.setFocusPolicy(Qt.FocusPolicy.ClickFocus)
        self.content_mask = MaskedArea(self.content, self.reveal, page)
        self.decision_text = plain_label(page, "itemDecision")

        head = QHBoxLayout()
        head.addWidget(self.item_title, 1)
        head.addWidget(self.work_progress)
        head.addWidget(self.order_picker)
        head.addWidget(self.filter_picker)
        texts = QSplitter(Qt.Orientation.Horizontal, page)
        texts.addWidget(titled_pane("Reasoning", self.reasoning, texts))
        texts.addWidget(titled_pane("Content", self.content_mask, texts))
        texts.setChildrenCollapsible(False)
        layout = QVBoxLayout(page)
        layout.addLayout(head)
        layout.addWidget(self.work_message)
        layout.addWidget(self.verdict)
        layout.addWidget(self.grid)
        layout.addWidget(texts, 1)
        layout.addWidget(self.decision_text)
        layout.addWidget(self.keys_hint)
        self.pages.addWidget(page)

    def _build_actions(self) -> dict[str, QAction]:
        """The queue's keys: active while the focus is in this view (they never take a
        letter typed in the Review editor); listed in the Queue menu, F1 and Ctrl+K."""
        specs: list[tuple[str, str, Callable[[], object], list[str], str]] = [
            ("open", "&Open queue", self.open_selected, ["Return", "Enter"],
             "Open the selected queue at its first undecided item"),
            ("run", "&Run or resume queue", self.run_current, ["R"],
             "Classify the items still to do, the parallel-slots setting in flight"),
            ("pause", "&Pause queue", self.pause_current, ["P"],
             "Stop classifying; items in flight go back to pending"),
            ("refresh", "Re&fresh queues", self.refresh, ["F5"], ""),
            ("agree", "&Agree with the verdict", lambda: self.decide("agree"), ["A"], ""),
            ("override", "O&verride the verdict…", self.override, ["O"],
             "Set the label yourself, with a reason"),
            ("escalate", "&Escalate", lambda: self.decide("escalate"), ["E"],
             "Send the item to a senior moderator"),
            ("skip", "&Skip…", self.skip, ["S"], "Leave the item undecided, with a reason"),
            ("note", "Add a &note…", self.add_note, ["N"], "A note in the audit trail"),
            ("next", "&Next item", lambda: self.step(1), ["J", "Right"], ""),
            ("previous", "Pre&vious item", lambda: self.step(-1), ["K", "Left"], ""),
            ("undo", "&Undo the last decision", self.undo, ["U"],
             "Appends a retraction: the audit trail keeps both"),
            ("filter", "Next &filter", self.cycle_filter, ["F"],
             "All, undecided, violations, low confidence, escalated"),
            ("back", "&Back to the queue list", self.back, ["Esc"], ""),
        ]  # fmt: skip
        actions: dict[str, QAction] = {}
        for name, text, slot, keys, tip in specs:
            action = QAction(text, self)
            action.setShortcuts([QKeySequence(k) for k in keys])
            action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
            action.setAutoRepeat(name in ("next", "previous"))
            if tip:
                action.setStatusTip(tip)
                action.setToolTip(tip)
            action.triggered.connect(lambda _checked=False, s=slot: s())
            self.addAction(action)
            actions[name] = action
        return actions

    # --- the list ---------------------------------------------------------------------------

    def service(self) -> QueueService:
        return self.ctx.queues()

    def refresh(self) -> None:
        """Read the queues (and the open queue's items) again, off the GUI thread."""
        if self._refreshing:
            self._dirty = True
            return
        self._refreshing = True
        self._tasks.spawn(self._refresh(), name="queue-refresh")

    async def _refresh(self) -> None:
        try:
            while True:
                self._dirty = False
                name = self.current
                try:
                    statuses, items = await asyncio.to_thread(self._read, name)
                except (HistoryError, QueueError) as exc:
                    self._problem(str(exc))
                    return
                self._show_statuses(statuses)
                if name is not None and name == self.current and items is not None:
                    self._items_read(items)
                if not self._dirty:
                    return
        finally:
            self._refreshing = False

    def _read(self, name: str | None) -> tuple[list[QueueStatus], list[ItemView] | None]:
        service = self.service()
        statuses = service.all()
        items = None
        if name is not None and any(s.name == name for s in statuses):
            items = service.items(name)
        return statuses, items

    def _show_statuses(self, statuses: list[QueueStatus]) -> None:
        selected = self.selected_name()
        self.statuses = statuses
        self.table.setRowCount(len(statuses))
        for row, s in enumerate(statuses):
            c = s.counts
            pending = c.get("pending", 0) + c.get("interrupted", 0) + c.get("classifying", 0)
            run = self.runs.get(s.name)
            if run is not None:
                state = "running · " + (progress_text(run.progress) if run.progress else "…")
            elif s.running:
                state = "running elsewhere"
            elif pending or c.get("failed", 0):
                state = "paused" if c.get("classified", 0) or c.get("decided", 0) else "not run"
            else:
                state = "all classified"
            cells = (s.name, s.items, pending, c.get("classified", 0), c.get("decided", 0),
                     c.get("failed", 0), state, ", ".join(s.policies), s.model)  # fmt: skip
            for col, value in enumerate(cells):
                item = QTableWidgetItem(str(value))
                if isinstance(value, int):
                    item.setTextAlignment(RIGHT)
                self.table.setItem(row, col, item)
        names = [s.name for s in statuses]
        keep = selected if selected in names else (names[0] if names else None)  # newest first
        if keep is not None:
            self.table.selectRow(names.index(keep))
        self.table.setVisible(bool(statuses))
        self.empty_hint.setVisible(not statuses)
        self._selection_changed()

    def selected_name(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows or not 0 <= rows[0].row() < len(self.statuses):
            return None
        return self.statuses[rows[0].row()].name

    def _status(self, name: str | None) -> QueueStatus | None:
        return next((s for s in self.statuses if s.name == name), None)

    def _selection_changed(self) -> None:
        name = self.selected_name()
        status = self._status(name)
        running = name in self.runs
        self.open_button.setEnabled(status is not None)
        self.run_button.setEnabled(status is not None and not running)
        self.pause_button.setEnabled(running)
        if status is None:
            self.list_progress.setValue(0)
            self.list_progress_text.setText("")
            return
        done = status.items - sum(
            status.counts.get(k, 0) for k in ("pending", "classifying", "interrupted", "failed")
        )
        self.list_progress.setMaximum(max(status.items, 1))
        self.list_progress.setValue(done)
        run = self.runs.get(status.name)
        text = f"{done}/{status.items} classified"
        if run is not None and run.progress is not None:
            text = progress_text(run.progress)
        self.list_progress_text.setText(text)

    # --- opening and moving -----------------------------------------------------------------

    def open_selected(self) -> None:
        if self.pages.currentWidget() is self.work_page:
            return
        name = self.selected_name()
        if name is not None:
            self.open_queue(name)

    def open_queue(self, name: str) -> None:
        """Show the queue at its first undecided item; classify ahead unless all is done."""
        self.current = name
        self.items = []
        self.shown = None
        self._open_at_first = True
        self.work_message.dismiss()
        self.item_title.setText(f"{name} · loading…")
        self.pages.setCurrentWidget(self.work_page)
        self.work_page.setFocus(Qt.FocusReason.OtherFocusReason)
        status = self._status(name)
        if (
            status is not None
            and not status.running
            and name not in self.runs
            and any(
                status.counts.get(k, 0) for k in ("pending", "interrupted", "classifying", "failed")
            )
        ):
            self.start_run(name)
        self.refresh()

    def back(self) -> None:
        if self.pages.currentWidget() is self.work_page:
            self.current = None
            self.shown = None
            self.pages.setCurrentWidget(self.list_page)
            self.table.setFocus(Qt.FocusReason.OtherFocusReason)
            self.refresh()

    def visible_items(self) -> list[ItemView]:
        return [i for i in self.items if passes(i, self.filter)]

    def _items_read(self, items: list[ItemView]) -> None:
        self.items = items
        shown = self.shown
        if self._open_at_first:
            self._open_at_first = False
            target = self._next_undecided(None) or (items[0] if items else None)
            self._show_item(target)
            return
        if shown is None:
            self._show_item(self._next_undecided(None))
            return
        fresh = next((i for i in items if i.position == shown.item.position), None)
        if fresh is not None and fresh != shown.item:
            self._show_item(fresh, keep_cell=True)  # classified meanwhile, or decided elsewhere
        self._update_header()

    def _next_undecided(self, after: int | None) -> ItemView | None:
        """The next undecided item of the filter after position `after` in queue order,
        wrapping around; None when every item shown is decided."""
        visible = self.visible_items()
        if not visible:
            return None
        start = 0
        if after is not None:
            index = next((n for n, i in enumerate(visible) if i.position == after), -1)
            start = index + 1
        for item in visible[start:] + visible[:start]:
            if item.decision is None and item.position != after:
                return item
        return None

    def step(self, delta: int) -> None:
        if self.pages.currentWidget() is not self.work_page or self.shown is None:
            return
        visible = self.visible_items()
        positions = [i.position for i in visible]
        here = self.shown.item.position
        if here in positions:
            index = positions.index(here) + delta
        else:  # the filter no longer shows it: the neighbour in queue order
            index = next((n for n, p in enumerate(positions) if p > here), len(positions))
            index = index if delta > 0 else index - 1
        if 0 <= index < len(visible):
            self._show_item(visible[index])
        else:
            end = "last" if delta > 0 else "first"
            self.work_message.show_message(f"This is the {end} item of the view.", "info")

    def set_filter(self, key: str) -> None:
        if key not in FILTERS or key == self.filter:
            return
        self.filter = key
        self.filter_picker.setCurrentIndex(list(FILTERS).index(key))
        if self.shown is not None and not passes(self.shown.item, key):
            self._show_item(self._next_undecided(self.shown.item.position) or next(
                iter(self.visible_items()), None))  # fmt: skip
        self._update_header()

    def set_order(self, order: str) -> None:
        """Keep the order with the queue (a run classifies in it too), then re-read."""
        name = self.current
        if name is None or order not in ORDERS:
            return
        self._tasks.spawn(self._set_order(name, order), name="queue-order")

    async def _set_order(self, name: str, order: str) -> None:
        try:
            await asyncio.to_thread(self.service().set_order, name, order)
        except (QueueError, HistoryError) as exc:
            self._problem(str(exc))
            return
        self.refresh()

    def cycle_filter(self) -> None:
        keys = list(FILTERS)
        self.set_filter(keys[(keys.index(self.filter) + 1) % len(keys)])

    # --- showing one item -------------------------------------------------------------------

    def _show_item(self, item: ItemView | None, *, keep_cell: bool = False) -> None:
        if item is None:
            self.shown = None
            self._update_header()
            self.verdict.clear("")
            self.grid.setRowCount(0)
            self.reasoning.begin()
            self.reasoning.finish("")
            self.content.show_content("")
            self.content_mask.set_has_content(False)
            self.decision_text.setText("")
            visible = self.visible_items()
            self.work_message.show_message(
                "Every item of this view is decided. Esc returns to the queues; F changes "
                "the filter."
                if visible
                else "No item matches this filter; F changes it.",
                "info",
            )
            return
        previous = self.shown
        same = previous is not None and previous.item.position == item.position
        cell = previous.cell if same and keep_cell and previous is not None else None
        self.shown = _Shown(item, reviews=previous.reviews if same and previous else {})
        if not same:
            self.reveal.conceal()  # a revealed item does not reveal the next one
            self.work_message.dismiss()
            key = (self.current or "", item.position)
            if key not in self.seen:
                self.seen.add(key)
                self.seen_changed.emit(len(self.seen))
        self.shown.cell = cell if cell is not None else self._default_cell(item)
        self._fill_grid(item)
        self._update_header()
        self.decision_text.setText(self._decision_text(item))
        listed = parse_categories(str(self.ctx.settings["mask_categories"]))
        verdicts = [(c.label, c.rule_ids) for c in item.verdicts]
        masked = should_mask(bool(self.ctx.settings["mask_content"]), listed, verdicts or None)
        self.content_mask.set_mask_enabled(masked)
        self.verdict.set_masking(self.reveal, masked)
        self.content_mask.set_has_content(bool(item.text))
        self.show_cell(self.shown.cell)

    @staticmethod
    def _default_cell(item: ItemView) -> int:
        """The first policy that found a violation, else the first."""
        return next((n for n, c in enumerate(item.verdicts) if c.label == "violation"), 0)

    def _fill_grid(self, item: ItemView) -> None:
        self.grid.setRowCount(len(item.verdicts))
        for row, cell in enumerate(item.verdicts):
            confidence = "" if cell.confidence is None else str(cell.confidence)
            values = (cell.policy, (cell.label or "not classified yet").upper(),
                      " ".join(cell.rule_ids), confidence,
                      f"#{cell.review_id}" if cell.review_id else "")  # fmt: skip
            for col, value in enumerate(values):
                self.grid.setItem(row, col, QTableWidgetItem(value))
        self.grid.setVisible(len(item.verdicts) > 1)
        if item.verdicts:
            height = self.grid.horizontalHeader().height() + 4
            height += sum(self.grid.rowHeight(r) for r in range(len(item.verdicts)))
            self.grid.setFixedHeight(height)

    def _decision_text(self, item: ItemView) -> str:
        d = item.decision
        if d is None:
            return f"Undecided · item state {item.state}"
        return "Decision: " + decision_line(d.at, d.moderator, d.action, d.label, d.note, d.rule)

    def _update_header(self) -> None:
        name = self.current or ""
        status = self._status(self.current)
        if status is not None and status.order in ORDERS:
            self.order_picker.setCurrentIndex(list(ORDERS).index(status.order))
        visible = self.visible_items()
        undecided = sum(1 for i in self.items if i.decision is None)
        shown = self.shown
        if shown is None:
            self.item_title.setText(f"{name} · {undecided} undecided of {len(self.items)}")
        else:
            item = shown.item
            where = next((n for n, i in enumerate(visible, 1) if i.position == item.position), 0)
            ref = f" · {item.ref}" if item.ref else ""
            place = f"{where} of {len(visible)} shown" if where else "not in this filter"
            self.item_title.setText(
                f"{name} · item {item.position} ({place}){ref} · {item.state} · "
                f"{undecided} undecided"
            )
        run = self.runs.get(name)
        if run is not None and run.progress is not None:
            self.work_progress.setText("Classifying " + progress_text(run.progress))
        elif run is not None:
            self.work_progress.setText("Classifying…")
        else:
            self.work_progress.setText("Paused (R runs)" if self._left(name) else "")

    def _left(self, name: str) -> bool:
        return any(i.state in ("pending", "interrupted", "failed") for i in self.items)

    def show_cell(self, row: int) -> None:
        shown = self.shown
        if shown is None:
            return
        item = shown.item
        shown.cell = row if 0 <= row < len(item.verdicts) else 0
        if item.verdicts:
            self.grid.selectRow(shown.cell)
        cell = item.verdicts[shown.cell] if item.verdicts else None
        if cell is None or cell.review_id is None:
            self._show_unclassified(item)
            return
        cached = shown.reviews.get(cell.review_id)
        if cached is not None:
            self._show_review(*cached)
            return
        shown.loads += 1
        shown.review = shown.policy = None
        # Never the last item's texts under this item's grid while the review loads.
        self.verdict.clear(f"{cell.policy}: {(cell.label or '').upper()} · loading review…")
        self.reasoning.begin()
        self.reasoning.finish("")
        self.content.show_content(item.text)
        self._tasks.spawn(self._load(shown, cell.review_id, shown.loads), name="queue-review")

    def _show_unclassified(self, item: ItemView) -> None:
        status = self._status(self.current)
        model = status.model if status else ""
        if self.current in self.runs:
            self.verdict.set_running(model, (status.effort if status else None) or "policy")
        else:
            self.verdict.clear("Not classified yet: R runs the queue.")
        self.reasoning.begin()
        self.reasoning.finish("")
        self.content.show_content(item.text)

    async def _load(self, shown: _Shown, review_id: int, load: int) -> None:
        history = self.ctx.history
        if history is None:
            return

        def read() -> tuple[Review, Policy | None] | None:
            review = history.get(review_id)
            if review is None:
                return None
            return review, rebuild_policy(history.policy_text(review.policy_sha256), review)

        try:
            found = await asyncio.to_thread(read)
        except HistoryError as exc:
            self.work_message.show_message(str(exc), "error")
            return
        if self.shown is not shown or shown.loads != load:
            return  # the moderator moved on meanwhile
        if found is None:
            self.verdict.set_failed(
                f"Review #{review_id} is no longer in the history (deleted or purged)."
            )
            self.content.show_content(shown.item.text)
            return
        shown.reviews[review_id] = found
        self._show_review(*found)

    def _show_review(self, review: Review, policy: Policy | None) -> None:
        if self.shown is not None:
            self.shown.review, self.shown.policy = review, policy
        marks = show_texts(self.reasoning, self.content, review, policy)
        show_verdict(self.verdict, review, policy, marks)
        self.verdict.set_outcome(review.override_label, review.override_rule)

    # --- deciding ---------------------------------------------------------------------------

    def _decidable(self) -> ItemView | None:
        if self.pages.currentWidget() is not self.work_page or self.shown is None:
            return None
        if self._busy:
            return None
        item = self.shown.item
        if item.state not in ("classified", "decided", "failed"):
            self.work_message.show_message(
                f"Item {item.position} is {item.state}: wait for the model to classify it "
                "(J moves on meanwhile).",
                "warning",
            )
            return None
        return item

    def decide(self, action: str, label: str | None = None, note: str | None = None) -> None:
        item = self._decidable()
        if item is not None:
            self._record(item, action, label, note)

    def override(self) -> None:
        item = self._decidable()
        if item is not None:
            opposite = "safe" if item.violation else "violation"
            rules = [rule for cell in item.verdicts for rule in cell.rule_ids]
            dialog = ReasonDialog(
                "Override the verdict", "Why the model is wrong (goes into the audit trail)",
                self, labels=OVERRIDE_LABELS, preset=opposite,
                rules=tuple(dict.fromkeys(rules)),
            )  # fmt: skip
            self._tasks.spawn(self._ask(dialog, item, "override"), name="queue-override")

    def skip(self) -> None:
        item = self._decidable()
        if item is not None:
            dialog = ReasonDialog("Skip this item", "Why you skip it (duplicate, language…)", self)
            self._tasks.spawn(self._ask(dialog, item, "skip"), name="queue-skip")

    def add_note(self) -> None:
        item = self._decidable()
        if item is not None:
            dialog = ReasonDialog("Add a note", "The note", self, required=True)
            self._tasks.spawn(self._ask(dialog, item, "note"), name="queue-note")

    async def _ask(self, dialog: ReasonDialog, item: ItemView, action: str) -> None:
        try:
            code = await dialog_result(dialog)
            if code == QDialog.DialogCode.Accepted and self.shown is not None:
                self._record(item, action, dialog.label(), dialog.text(), dialog.rule())
        finally:
            dialog.deleteLater()
            if self.pages.currentWidget() is self.work_page:  # the keys work again at once
                self.window().activateWindow()
                self.work_page.setFocus(Qt.FocusReason.OtherFocusReason)

    def _record(
        self,
        item: ItemView,
        action: str,
        label: str | None,
        note: str | None,
        rule: str | None = None,
    ) -> None:
        name = self.current
        if name is None:
            return
        self._busy = True
        self._tasks.spawn(self._write(name, item, action, label, note, rule), name="queue-decide")

    async def _write(
        self,
        name: str,
        item: ItemView,
        action: str,
        label: str | None,
        note: str | None,
        rule: str | None = None,
    ) -> None:
        service = self.service()
        try:
            if action == "note":
                updated = await asyncio.to_thread(service.note, name, item.position, note or "")
            elif action == "retracted":
                updated = await asyncio.to_thread(service.retract, name, item.position)
            else:
                updated = await asyncio.to_thread(
                    lambda: service.decide(
                        name, item.position, action, label=label, note=note, rule=rule
                    )
                )
        except (QueueError, HistoryError) as exc:
            self.work_message.show_message(str(exc), "error")
            return
        finally:
            self._busy = False
        if name != self.current:
            return
        self._replace(updated)
        if action == "note":
            self.work_message.show_message(f"Note added to item {item.position}.", "info")
            self._show_item(updated, keep_cell=True)
            return
        if action == "retracted":
            self.work_message.show_message(
                f"Decision on item {item.position} undone (a retraction is in the audit trail).",
                "info",
            )
            self._show_item(updated, keep_cell=True)
            return
        self.undo_stack.append(_Undo(name, item.position, action))
        following = self._next_undecided(item.position)
        if following is None:
            self._show_item(updated, keep_cell=True)
            self.work_message.show_message(
                f"Item {item.position}: {action}. Every item of this view is decided.", "info"
            )
        else:
            self._show_item(following)
            self.work_message.show_message(f"Item {item.position}: {action} (U undoes it).", "info")
        self._took_action()  # last: a break reminder is the message that stays

    def _replace(self, updated: ItemView) -> None:
        self.items = [updated if i.position == updated.position else i for i in self.items]

    def undo(self) -> None:
        if self.pages.currentWidget() is not self.work_page or self._busy:
            return
        while self.undo_stack and self.undo_stack[-1].queue != self.current:
            self.undo_stack.pop()  # decisions in another queue are not undone from here
        if not self.undo_stack:
            self.work_message.show_message("No decision of this session to undo here.", "info")
            return
        last = self.undo_stack.pop()
        target = next((i for i in self.items if i.position == last.position), None)
        if target is None:
            return
        self._show_item(target)
        self._record(target, "retracted", None, None)

    def _took_action(self) -> None:
        """A decision: the break clock counts continuous reviewing (setting read each time,
        so a change in Settings applies at once)."""
        self.clock.every_s = 60.0 * int(self.ctx.settings["break_minutes"])
        now = self.now()
        if self.clock.activity(now):
            self.break_due.emit(self.clock.minutes(now))

    # --- running ----------------------------------------------------------------------------

    def run_selected(self) -> None:
        name = self.selected_name()
        if name is not None:
            self.start_run(name)

    def pause_selected(self) -> None:
        name = self.selected_name()
        if name is not None:
            self.pause(name)

    def run_current(self) -> None:
        name = self.current if self.pages.currentWidget() is self.work_page else None
        name = name or self.selected_name()
        if name is not None:
            self.start_run(name)

    def pause_current(self) -> None:
        name = self.current if self.pages.currentWidget() is self.work_page else None
        name = name or self.selected_name()
        if name is not None:
            self.pause(name)

    def start_run(self, name: str) -> None:
        if name in self.runs:
            return
        others = [n for n in self.runs if n != name]
        if others:
            self._problem(
                f"Queue {others[0]!r} is being classified; pause it first (one queue at a "
                "time keeps the model on one policy prefix).",
                "warning",
            )
            return
        stop = asyncio.Event()
        run = _Run(self._tasks.spawn(self._run(name, stop), name=f"queue-run-{name}"), stop)
        self.runs[name] = run
        self._selection_changed()
        self._update_header()

    def pause(self, name: str) -> None:
        run = self.runs.get(name)
        if run is not None:
            run.stop.set()
            self.work_progress.setText("Pausing: waiting for the items in flight…")

    async def _run(self, name: str, stop: asyncio.Event) -> None:
        def progress(p: Progress) -> None:
            run = self.runs.get(name)
            if run is not None:
                run.progress = p
            self.refresh()

        def warning(text: str) -> None:  # a host left out or gone: said where the user looks
            self._problem(f"Queue {name!r}: {text}", "warning")

        try:
            report = await self.service().run(
                name, on_progress=progress, on_warning=warning, stop=stop
            )
        except (QueueError, HistoryError, EngineError) as exc:
            self._problem(f"Classifying {name!r} stopped: {exc}")
        else:
            if report.stopped:
                self._notice(f"Queue {name!r} paused; R resumes it.")
            elif report.by_host:
                self._notice(f"Queue {name!r} classified; reviews by host: {report.by_host}.")
        finally:
            self.runs.pop(name, None)
            self.refresh()
            self._selection_changed()
            self._update_header()

    def _problem(self, text: str, level: str = "error") -> None:
        target = self.work_message if self.pages.currentWidget() is self.work_page else None
        (target or self.list_message).show_message(text, level)

    def _notice(self, text: str) -> None:
        self._problem(text, "info")

    # --- lifecycle --------------------------------------------------------------------------

    def apply_wellness(self) -> None:
        """The masking settings, now: the item on screen is masked (or not) again."""
        self.reasoning.set_mask_quotes(bool(self.ctx.settings["mask_quotes"]))
        self.reasoning.refresh_formats()
        if self.shown is not None:
            self._show_item(self.shown.item, keep_cell=True)

    def focus(self) -> None:
        if self.pages.currentWidget() is self.work_page:
            self.work_page.setFocus(Qt.FocusReason.OtherFocusReason)
        else:
            self.table.setFocus(Qt.FocusReason.OtherFocusReason)

    async def shutdown(self) -> None:
        """Pause every run (items in flight go back to pending) and wait for the tasks."""
        for run in self.runs.values():
            run.stop.set()
        runs = [r.task for r in self.runs.values()]
        if runs:
            await asyncio.wait(runs, timeout=15)
        self._tasks.cancel_all()
        await self._tasks.wait_all(timeout=5)
