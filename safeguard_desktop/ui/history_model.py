"""The History table model: pages of 200 review summaries loaded off the GUI thread.

The view asks for more rows (`canFetchMore`/`fetchMore`) as it scrolls; each page is read
in a worker thread (`asyncio.to_thread`, the history is thread-safe) and inserted when it
arrives, so the table opens at once on any history size. Results of an older query are
dropped by a generation counter.

Signals:
    loading_changed(bool): a page read started or ended.
    total_changed(str): the row count text ("1,234 reviews", "200+ matches", "10,000+ reviews"
        for a filter matching more than COUNT_CAP: filtered counts are counted that far only).
    failed(str): a read failed; one sentence saying what to do.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from safeguard_desktop.qt import (
    QAbstractTableModel,
    QBrush,
    QColor,
    QFont,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    Qt,
    Signal,
)
from safeguard_desktop.services.history_service import (
    Filters,
    HistoryError,
    HistoryService,
    ReviewSummary,
)
from safeguard_desktop.ui.async_utils import TaskKeeper
from safeguard_desktop.ui.theme import scheme

log = logging.getLogger("safeguard.ui.history")
PAGE_SIZE = 200
# A filtered count reads index entries one by one (4 s for a filter matching most of 1M
# reviews, holding the history's lock): it stops after this many and says "10,000+".
COUNT_CAP = 10_000
COLUMNS = ("ID", "Time", "Status", "Verdict", "Category", "Policy", "Model", "Decision", "Preview")
COL_ID, COL_TIME, COL_STATUS, COL_VERDICT = 0, 1, 2, 3
COL_DECISION, COL_PREVIEW = 7, 8
MASKED_PREVIEW = "▒▒▒▒ hidden (Alt+R reveals)"
SUMMARY_ROLE = Qt.ItemDataRole.UserRole + 1
WARNING_COLOUR = "#b45309"
AnyIndex = QModelIndex | QPersistentModelIndex


def local_time(stamp: str | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """A stored UTC timestamp in the moderator's local time ('' when unreadable)."""
    if not stamp:
        return ""
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime(fmt)
    except ValueError:
        return stamp


def status_text(status: str) -> str:
    return {"interrupted": "⚠ interrupted", "running": "… running"}.get(status, status)


def decision_text(summary: ReviewSummary) -> str:
    text = summary.last_decision or ""
    if summary.escalated and text != "escalate":
        text = f"{text} ⚑".strip()
    elif text == "escalate":
        text = "⚑ escalate"
    return text


def verdict_colour(label: str | None) -> str | None:
    colours = scheme()
    return {
        "violation": colours.violates,
        "safe": colours.complies,
        "unparsed": WARNING_COLOUR,
        "incomplete": WARNING_COLOUR,
    }.get(label or "")


@dataclass(frozen=True)
class Query:
    """What the table shows: a full-text search when `text` has words, else a list."""

    text: str = ""
    filters: Filters | None = None

    @property
    def searching(self) -> bool:
        return bool(self.text.strip())


@dataclass(frozen=True)
class Row:
    summary: ReviewSummary
    cells: tuple[str, ...]


def verdict_cell(summary: ReviewSummary) -> str:
    """The outcome: a moderator's override first, the model's verdict beside it."""
    model = summary.verdict_label or "—"
    human = summary.override_label
    if human and human != summary.verdict_label:
        return f"{human} ✎ (model: {model})"
    return model


def make_row(summary: ReviewSummary) -> Row:
    policy = summary.policy_id + (f" v{summary.policy_version}" if summary.policy_version else "")
    cells = (
        str(summary.id),
        local_time(summary.created_at),
        status_text(summary.status),
        verdict_cell(summary),
        summary.category or "",
        policy,
        summary.model,
        decision_text(summary),
        f"[{summary.ref}] {summary.preview}" if summary.ref else summary.preview,
    )
    return Row(summary, cells)


def read_page(
    history: HistoryService, query: Query, offset: int, last: ReviewSummary | None, limit: int
) -> list[ReviewSummary]:
    """One page of the query (runs in a worker thread: no Qt object is touched here)."""
    if query.searching:
        return history.search(query.text, filters=query.filters, limit=limit, offset=offset)
    before = (last.created_at, last.id) if last is not None else None
    return history.list(filters=query.filters, limit=limit, before=before)


class HistoryModel(QAbstractTableModel):
    loading_changed = Signal(bool)
    total_changed = Signal(str)
    failed = Signal(str)

    def __init__(
        self,
        history: HistoryService | None,
        parent: QObject | None = None,
        page_size: int = PAGE_SIZE,
        count_cap: int = COUNT_CAP,
    ) -> None:
        super().__init__(parent)
        self.history = history
        self.mask_preview = False  # content masked (wellness): the preview column hides it
        self.page_size = page_size
        self.count_cap = count_cap
        self.query = Query()
        self._rows: list[Row] = []
        self._ids: dict[int, int] = {}
        self._exhausted = history is None
        self._pending: asyncio.Task[None] | None = None
        self._generation = 0
        self._closed = False  # after close(): no more reads
        self._exact_total: int | None = None
        self._more_than_cap = False  # the count stopped at count_cap: "10,000+"
        self._tasks = TaskKeeper()
        self.ready = False  # the first page of the current query has arrived

    # --- Qt model API ------------------------------------------------------------------

    def rowCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self._rows)

    def columnCount(self, parent: AnyIndex = QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(COLUMNS)

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section] if 0 <= section < len(COLUMNS) else None
        return None

    def set_mask_preview(self, masked: bool) -> None:
        """Hide (or show again) the content preview column."""
        if masked != self.mask_preview:
            self.mask_preview = masked
            if self._rows:
                top, bottom = (
                    self.index(0, COL_PREVIEW),
                    self.index(len(self._rows) - 1, COL_PREVIEW),
                )
                self.dataChanged.emit(top, bottom, [Qt.ItemDataRole.DisplayRole])

    def data(self, index: AnyIndex, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid() or not 0 <= index.row() < len(self._rows):
            return None
        row = self._rows[index.row()]
        column = index.column()
        summary = row.summary
        if role == Qt.ItemDataRole.DisplayRole:
            if column == COL_PREVIEW and self.mask_preview and row.cells[column]:
                return MASKED_PREVIEW
            return row.cells[column]
        if role == SUMMARY_ROLE:
            return summary
        if role == Qt.ItemDataRole.ForegroundRole:
            colour: str | None = None
            if column == COL_VERDICT:
                colour = verdict_colour(summary.override_label or summary.verdict_label)
            elif column == COL_STATUS and summary.status in ("interrupted", "failed"):
                colour = WARNING_COLOUR if summary.status == "interrupted" else None
            return QBrush(QColor(colour)) if colour else None
        if role == Qt.ItemDataRole.FontRole and (
            column == COL_VERDICT or (column == COL_STATUS and summary.status == "interrupted")
        ):
            font = QFont()
            font.setWeight(QFont.Weight.DemiBold)
            return font
        if role == Qt.ItemDataRole.ToolTipRole:
            if column == COL_STATUS and summary.status == "interrupted":
                return "The app stopped before this review finished; re-run it."
            if column == COL_TIME:
                return f"{local_time(summary.created_at, '%Y-%m-%d %H:%M:%S %Z')}"
            if column == COL_DECISION and summary.escalated:
                return "Escalated"
            return None
        if role == Qt.ItemDataRole.TextAlignmentRole and column == COL_ID:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def canFetchMore(self, parent: AnyIndex = QModelIndex()) -> bool:  # noqa: B008
        return not parent.isValid() and not self._exhausted and not self.loading

    def fetchMore(self, parent: AnyIndex = QModelIndex()) -> None:  # noqa: B008
        if self.canFetchMore(parent):
            self._start_fetch()

    # --- public ------------------------------------------------------------------------

    @property
    def loading(self) -> bool:
        return self._pending is not None and not self._pending.done()

    @property
    def exhausted(self) -> bool:
        return self._exhausted

    def summary(self, row: int) -> ReviewSummary | None:
        return self._rows[row].summary if 0 <= row < len(self._rows) else None

    def row_of(self, review_id: int) -> int | None:
        return self._ids.get(review_id)

    def set_query(self, query: Query) -> None:
        self.query = query
        self.reload()

    def reload(self) -> None:
        """Drop every row and read the first page of the current query again."""
        self._generation += 1
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
        self._pending = None
        self.beginResetModel()
        self._rows.clear()
        self._ids.clear()
        self._exhausted = self.history is None
        self._exact_total = None
        self._more_than_cap = False
        self.ready = self.history is None
        self.endResetModel()
        if self.history is None:
            self.total_changed.emit("History is off")
            return
        self.total_changed.emit("Loading…")
        self._start_fetch()

    def update_summary(self, review_id: int, **changes: Any) -> None:
        """Change a row in place (e.g. a new decision) without reloading the table."""
        row = self._ids.get(review_id)
        if row is None:
            return
        summary = dataclasses.replace(self._rows[row].summary, **changes)
        self._rows[row] = make_row(summary)
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def remove_ids(self, ids: set[int]) -> None:
        for row in sorted((self._ids[i] for i in ids if i in self._ids), reverse=True):
            self.beginRemoveRows(QModelIndex(), row, row)
            del self._rows[row]
            self.endRemoveRows()
        self._ids = {r.summary.id: i for i, r in enumerate(self._rows)}
        if self._exact_total is not None and not self._more_than_cap:
            self._exact_total = max(0, self._exact_total - len(ids))
        self._emit_total()

    async def wait_idle(self) -> None:
        """Until no page read runs (tests and shutdown)."""
        while self._pending is not None and not self._pending.done():
            await asyncio.wait([self._pending])

    async def close(self) -> None:
        """Stop reading for good: a reload asked for later (a queued refresh) reads nothing."""
        self._closed = True
        self._generation += 1
        await self._tasks.wait_all(timeout=5)

    # --- loading -----------------------------------------------------------------------

    def _start_fetch(self) -> None:
        if self._closed:
            return
        generation = self._generation
        offset = len(self._rows)
        last = self._rows[-1].summary if self._rows else None
        self._pending = self._tasks.spawn(
            self._fetch(generation, self.query, offset, last), name="history-page"
        )
        self.loading_changed.emit(True)

    async def _fetch(
        self, generation: int, query: Query, offset: int, last: ReviewSummary | None
    ) -> None:
        try:
            assert self.history is not None
            page = await asyncio.to_thread(
                read_page, self.history, query, offset, last, self.page_size
            )
        except (HistoryError, ValueError) as exc:
            self._read_failed(generation, str(exc))
            return
        except Exception:  # a bug: say so in the window instead of loading forever
            log.exception("reading the history failed")
            self._read_failed(
                generation, "Reading the history failed unexpectedly; details are in the log."
            )
            return
        if generation != self._generation:
            return
        self._pending = None
        self.ready = True
        fresh = [make_row(s) for s in page if s.id not in self._ids]
        if len(page) < self.page_size:
            self._exhausted = True
        if fresh:
            first = len(self._rows)
            self.beginInsertRows(QModelIndex(), first, first + len(fresh) - 1)
            for row in fresh:
                self._ids[row.summary.id] = len(self._rows)
                self._rows.append(row)
            self.endInsertRows()
        self.loading_changed.emit(False)
        self._emit_total()
        if offset == 0 and not query.searching and not self._exhausted:
            self._tasks.spawn(self._count(generation, query), name="history-count")

    def _read_failed(self, generation: int, message: str) -> None:
        if generation != self._generation:
            return
        self._pending = None
        self._exhausted = True
        self.ready = True
        self.loading_changed.emit(False)
        self.total_changed.emit("")
        self.failed.emit(message)

    async def _count(self, generation: int, query: Query) -> None:
        """The total, read after the first page so it never delays the rows: exact without
        filters (one row kept by triggers), else counted up to `count_cap` and no further."""
        assert self.history is not None
        cap = None if query.filters is None else self.count_cap + 1
        try:
            total = await asyncio.to_thread(self.history.count, query.filters, cap=cap)
        except (HistoryError, ValueError) as exc:
            log.warning("history count failed: %s", exc)
            return
        if generation == self._generation:
            self._more_than_cap = cap is not None and total >= cap
            self._exact_total = min(total, self.count_cap) if self._more_than_cap else total
            self._emit_total()

    def _emit_total(self) -> None:
        noun = "match" if self.query.searching else "review"
        if self._exhausted:
            total = len(self._rows)
        elif self._exact_total is not None:
            total = self._exact_total
            if self._more_than_cap:
                self.total_changed.emit(f"{total:,}+ {plural(noun)}")
                return
        else:
            self.total_changed.emit(f"{len(self._rows):,}+ {plural(noun)}")
            return
        self.total_changed.emit(f"{total:,} {plural(noun) if total != 1 else noun}")


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith("ch") else "s")
