"""The History search box and filters; emits one debounced `Query` for the table.

Dates are the moderator's local days; they become UTC bounds with an offset, so "today"
means today where the moderator sits.

Signals:
    query_changed(object): the new Query (after ~250 ms of quiet, or at once on Enter).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, timedelta

from safeguard_desktop.qt import (
    QCheckBox,
    QComboBox,
    QDate,
    QDateEdit,
    QEvent,
    QHBoxLayout,
    QKeyEvent,
    QLabel,
    QLineEdit,
    QObject,
    Qt,
    QTimer,
    QWidget,
    Signal,
)
from safeguard_desktop.services.history_service import Filters
from safeguard_desktop.ui.history_model import Query

DEBOUNCE_MS = 250
ANY = "any"
Choice = tuple[str, str | None]


def _choices(any_text: str, values: tuple[str, ...], none_text: str = "") -> list[Choice]:
    """Combo entries: "any" first, one per value, then "none" (no verdict / decision)."""
    items: list[Choice] = [(any_text, None), *((v, v) for v in values)]
    return [*items, (none_text, "none")] if none_text else items


VERDICTS = _choices("any verdict", ("violation", "safe", "unparsed", "incomplete"), "no verdict")
DECISIONS = _choices("any decision", ("agree", "override", "escalate"), "no decision")
STATUSES = _choices("any status", ("done", "failed", "cancelled", "interrupted", "running"))
NO_DATE = QDate(2000, 1, 1)


def local_day_bounds(since: date | None, until: date | None) -> tuple[str | None, str | None]:
    """Inclusive local days as ISO timestamps with the local UTC offset."""
    start = datetime(since.year, since.month, since.day).astimezone() if since else None
    end = None
    if until is not None:
        next_day = datetime(until.year, until.month, until.day) + timedelta(days=1)
        end = (next_day - timedelta(milliseconds=1)).astimezone()
    return (
        start.isoformat(timespec="milliseconds") if start else None,
        end.isoformat(timespec="milliseconds") if end else None,
    )


def _combo(parent: QWidget, name: str, items: Iterable[tuple[str, str | None]]) -> QComboBox:
    combo = QComboBox(parent)
    combo.setObjectName(name)
    for text, value in items:
        combo.addItem(text, value)
    return combo


class _DateEdit(QDateEdit):
    """Tab leaves the field (QDateEdit's own Tab walks its day/month/year sections, so the
    keyboard got stuck in it); the arrows still change the section under the cursor."""

    def focusNextPrevChild(self, next: bool) -> bool:
        return QWidget.focusNextPrevChild(self, next)


def _date_edit(parent: QWidget, name: str, tip: str) -> QDateEdit:
    edit = _DateEdit(parent)
    edit.setObjectName(name)
    edit.setCalendarPopup(True)
    edit.setDisplayFormat("yyyy-MM-dd")
    edit.setMinimumDate(NO_DATE)
    edit.setSpecialValueText(ANY)  # shown while the date is the minimum: no bound
    edit.setDate(NO_DATE)
    edit.setToolTip(tip)
    return edit


class FilterBar(QWidget):
    """Signals: query_changed(Query); down_pressed(): Down in the search box (the list
    takes the keys from there)."""

    query_changed = Signal(object)
    down_pressed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.search = QLineEdit(self)
        self.search.setObjectName("historySearch")
        self.search.setPlaceholderText("Search content, reasoning, rationale and notes (Ctrl+F)")
        self.search.setClearButtonEnabled(True)
        self.search.installEventFilter(self)
        self.policy = _combo(self, "policyFilter", [("any policy", None)])
        self.policy.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.verdict = _combo(self, "verdictFilter", VERDICTS)
        self.decision = _combo(self, "decisionFilter", DECISIONS)
        self.status = _combo(self, "statusFilter", STATUSES)
        self.escalated = QCheckBox("⚑ Escalated only", self)
        self.escalated.setObjectName("escalatedFilter")
        self.since = _date_edit(self, "sinceFilter", "Reviews from this day on (local time)")
        self.until = _date_edit(self, "untilFilter", "Reviews up to this day (local time)")
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(DEBOUNCE_MS)
        self._timer.timeout.connect(self.apply_now)
        self._last: Query | None = None

        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(6)
        row.addWidget(self.search, 3)
        for widget in (self.policy, self.verdict, self.decision, self.status, self.escalated):
            row.addWidget(widget)
        row.addSpacing(6)
        from_label = QLabel("From", self)
        from_label.setBuddy(self.since)
        row.addWidget(from_label)
        row.addWidget(self.since)
        to_label = QLabel("to", self)
        to_label.setBuddy(self.until)
        row.addWidget(to_label)
        row.addWidget(self.until)

        self.search.textChanged.connect(self._schedule)
        self.search.returnPressed.connect(self.apply_now)
        for combo in (self.policy, self.verdict, self.decision, self.status):
            combo.currentIndexChanged.connect(self._schedule)
        self.escalated.toggled.connect(self._schedule)
        self.since.dateChanged.connect(self._schedule)
        self.until.dateChanged.connect(self._schedule)

    # --- public ------------------------------------------------------------------------

    def query(self) -> Query:
        filters = self.filters()
        return Query(self.search.text().strip(), filters if filters != Filters() else None)

    def filters(self) -> Filters:
        def day(edit: QDateEdit) -> date | None:
            value = edit.date()
            return None if value <= NO_DATE else date(value.year(), value.month(), value.day())

        since, until = local_day_bounds(day(self.since), day(self.until))
        return Filters(
            policy_id=self.policy.currentData(),
            verdict=self.verdict.currentData(),
            decision=self.decision.currentData(),
            status=self.status.currentData(),
            escalated=True if self.escalated.isChecked() else None,
            since=since,
            until=until,
        )

    def apply_now(self) -> None:
        """Emit the query now (Enter in the search box, or the debounce timer)."""
        self._timer.stop()
        query = self.query()
        if query != self._last:
            self._last = query
            self.query_changed.emit(query)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            watched is self.search
            and event.type() == QEvent.Type.KeyPress
            and isinstance(event, QKeyEvent)
            and event.key() == Qt.Key.Key_Down
        ):
            self.down_pressed.emit()
            return True
        return super().eventFilter(watched, event)

    def focus_search(self) -> None:
        self.search.setFocus(Qt.FocusReason.ShortcutFocusReason)
        self.search.selectAll()

    def add_policy_ids(self, ids: Iterable[str]) -> None:
        """Offer every policy id seen so far (the current choice is kept)."""
        known = {self.policy.itemData(i) for i in range(self.policy.count())}
        for policy_id in sorted(set(ids) - known - {None}):
            index = 1
            while index < self.policy.count() and str(self.policy.itemData(index)) < policy_id:
                index += 1
            self.policy.insertItem(index, policy_id, policy_id)

    def set_filter(self, combo: QComboBox, value: str | None) -> None:
        index = combo.findData(value)
        if index >= 0:
            combo.setCurrentIndex(index)

    def _schedule(self, *_args: object) -> None:
        self._timer.start()
