"""The History view: find past reviews, read one beside the list, decide, re-run, export.

The table pages in 200 rows at a time off the GUI thread (`HistoryModel`), so it opens at
once on a million reviews; every other read or write also runs in a worker thread.

Signals:
    review_opened(int): a review is shown in the detail pane.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from safeguard_desktop.core.policy import Policy
from safeguard_desktop.qt import (
    QAbstractItemView,
    QAction,
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QHeaderView,
    QKeySequence,
    QLabel,
    QLineEdit,
    QModelIndex,
    QShowEvent,
    QSplitter,
    Qt,
    QTableView,
    QTimer,
    QVBoxLayout,
    QWidget,
    Signal,
)
from safeguard_desktop.services.history_service import HistoryError, HistoryService, Review
from safeguard_desktop.services.review import ReviewOptions
from safeguard_desktop.services.session import Session
from safeguard_desktop.ui.async_utils import TaskKeeper, dialog_result
from safeguard_desktop.ui.history_filters import FilterBar
from safeguard_desktop.ui.history_model import (
    COL_ID,
    COL_PREVIEW,
    COL_STATUS,
    COL_TIME,
    COLUMNS,
    PAGE_SIZE,
    HistoryModel,
    Query,
)
from safeguard_desktop.ui.message_bar import InlineMessage
from safeguard_desktop.ui.review_detail import ReviewDetail
from safeguard_desktop.ui.stored_review import rebuild_policy
from safeguard_desktop.ui.wellness import RevealState

if TYPE_CHECKING:  # imported when first used (re-run, export): not at start-up
    from safeguard_desktop.ui.compare_view import CompareView, OptionsFor
    from safeguard_desktop.ui.export_dialog import ExportDialog

log = logging.getLogger("safeguard.ui.history")
COLUMN_WIDTHS = (44, 0, 0, 76, 80, 100, 96, 86)  # 0: measured from the font
TABLE_SHARE = 0.62  # of the width, when the view is first shown
EXPORT_LIMIT = 500
OPEN_DELAY_MS = 120


def settings_options(ctx: Session) -> OptionsFor:
    """Review options from the settings (used when no Review view is around): the policy's
    own effort wins over the `effort` setting, as it does everywhere."""

    def options(_policy: Policy) -> ReviewOptions:
        return ctx.review_options(source="gui")

    return options


def folder_policies(ctx: Session) -> Callable[[], list[Policy]]:
    def policies() -> list[Policy]:
        return ctx.policies()[0]

    return policies


def load_review(history: HistoryService, review_id: int) -> tuple[Review | None, Policy | None]:
    """A review and the exact policy it ran with (worker thread: no Qt object here)."""
    review = history.get(review_id)
    if review is None:
        return None, None
    return review, rebuild_policy(history.policy_text(review.policy_sha256), review)


class DeleteDialog(QDialog):
    """Asks before deleting; the optional reason goes into the audit trail."""

    def __init__(self, ids: Sequence[int], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("deleteDialog")
        self.setWindowTitle("Delete reviews" if len(ids) > 1 else "Delete review")
        what = f"review #{ids[0]}" if len(ids) == 1 else f"{len(ids)} reviews"
        question = QLabel(
            f"Delete {what}? The content and reasoning are removed for good; "
            "the audit trail keeps a record of the deletion.",
            self,
        )
        question.setWordWrap(True)
        question.setTextFormat(Qt.TextFormat.PlainText)
        self.reason = QLineEdit(self)
        self.reason.setPlaceholderText("Reason (optional, kept in the audit trail)")
        buttons = QDialogButtonBox(self)
        self.delete_button = buttons.addButton(
            "Delete", QDialogButtonBox.ButtonRole.DestructiveRole
        )
        buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.delete_button.clicked.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(question)
        layout.addWidget(self.reason)
        layout.addWidget(buttons)
        self.resize(460, 150)


class HistoryView(QWidget):
    review_opened = Signal(int)

    def __init__(
        self,
        ctx: Session,
        reveal: RevealState | None = None,
        parent: QWidget | None = None,
        *,
        options_for: OptionsFor | None = None,
        policies: Callable[[], list[Policy]] | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("historyView")
        self.ctx = ctx
        self.reveal = reveal or RevealState(self)
        self.options_for = options_for or settings_options(ctx)
        self.policies = policies or folder_policies(ctx)
        self._tasks = TaskKeeper()
        self._dirty = False
        self._sized = False
        self._restoring = False
        self._open_generation = 0
        self._reselect: int | None = None
        self.compare_view: CompareView | None = None
        self.export_dialog: ExportDialog | None = None
        self.delete_dialog: DeleteDialog | None = None

        self.filter_bar = FilterBar(self)
        self.model = HistoryModel(ctx.history, self, page_size)
        self.table = QTableView(self)
        self.detail = ReviewDetail(ctx, self.reveal, self)
        self.total = QLabel(self)
        self.total.setObjectName("historyTotal")
        self.total.setTextFormat(Qt.TextFormat.PlainText)
        self.message = InlineMessage(self)
        self._open_timer = QTimer(self)
        self._open_timer.setSingleShot(True)
        self._open_timer.setInterval(OPEN_DELAY_MS)
        self._open_timer.timeout.connect(lambda: self.open_current(focus=False))
        self._setup_table()
        self._build_actions()
        self._build_layout()

        self.filter_bar.query_changed.connect(self._query_changed)
        self.filter_bar.down_pressed.connect(self.focus_table)
        self.reveal.changed.connect(lambda _revealed: self._mask_preview())
        self._mask_preview()
        self.model.total_changed.connect(self.total.setText)
        self._check_excluded = False
        self.model.loading_changed.connect(self._loading_changed)
        self.model.failed.connect(lambda text: self.message.show_message(text, "error"))
        self.model.rowsInserted.connect(self._rows_arrived)
        self.table.selectionModel().currentRowChanged.connect(self._current_changed)
        self.table.activated.connect(lambda _index: self.open_current(focus=True))
        self.detail.rerun_requested.connect(self.rerun)
        self.detail.export_requested.connect(lambda rid: self.export([rid]))
        self.detail.review_changed.connect(self._review_changed)
        if ctx.history is None:
            self.message.show_message(
                "History is off for this session, so there is nothing to show; "
                "restart the app once the data folder is writable.",
                "warning",
            )
        self._dirty = True  # the first read happens when the view is first shown

    # --- building ----------------------------------------------------------------------

    def _setup_table(self) -> None:
        table = self.table
        table.setObjectName("historyTable")
        table.setModel(self.model)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        table.setAlternatingRowColors(True)
        table.setTabKeyNavigation(False)  # Tab leaves the list; Up/Down move by rows
        table.setWordWrap(False)
        table.setTextElideMode(Qt.TextElideMode.ElideRight)
        table.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        table.verticalHeader().hide()
        rows = table.verticalHeader()
        rows.setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        rows.setDefaultSectionSize(table.fontMetrics().height() + 10)
        header = table.horizontalHeader()
        header.setHighlightSections(False)
        metrics = table.fontMetrics()
        measured = {  # the status is drawn demi-bold: about 12% wider
            COL_TIME: metrics.horizontalAdvance("2026-12-31 23:59") + 18,
            COL_STATUS: int(metrics.horizontalAdvance("⚠ interrupted") * 1.12) + 18,
        }
        for column, width in enumerate(COLUMN_WIDTHS):
            table.setColumnWidth(column, width or measured[column])
        header.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)
        for column, name in enumerate(COLUMNS):
            if column in (COL_ID, COL_PREVIEW):
                continue
            toggle = QAction(f"Show {name}", header)
            toggle.setCheckable(True)
            toggle.setChecked(True)
            toggle.toggled.connect(lambda on, c=column: table.setColumnHidden(c, not on))
            header.addAction(toggle)
        header.setStretchLastSection(True)
        header.setMinimumSectionSize(40)
        table.setToolTip("Enter opens the review; Delete deletes the selected reviews")
        header.setToolTip("Right-click to show or hide columns")
        assert len(COLUMN_WIDTHS) == len(COLUMNS) - 1

    def _table_action(self, text: str, keys: str, slot: Callable[[], object]) -> QAction:
        """An action of the table only (its keys must not steal Delete/Enter from editors)."""
        action = QAction(text, self.table)
        if keys:
            action.setShortcut(QKeySequence(keys))
        action.setShortcutContext(Qt.ShortcutContext.WidgetShortcut)
        action.triggered.connect(lambda _checked=False: slot())
        self.table.addAction(action)
        return action

    def _build_actions(self) -> None:
        self.open_action = self._table_action(
            "&Open review", "Return", lambda: self.open_current(focus=True)
        )
        self.open_action.setShortcuts([QKeySequence("Return"), QKeySequence("Enter")])
        self.rerun_action = self._table_action("&Re-run and compare…", "", self.rerun_current)
        self.export_action = self._table_action("E&xport escalation note…", "", self.export)
        self.delete_action = self._table_action("&Delete…", "Delete", self.delete_selected)

    def _build_layout(self) -> None:
        left = QWidget(self)
        col = QVBoxLayout(left)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(6)
        col.addWidget(self.table, 1)
        foot = QHBoxLayout()
        foot.addWidget(self.total)
        foot.addStretch(1)
        col.addLayout(foot)
        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.addWidget(left)
        self.splitter.addWidget(self.detail)
        self.splitter.setStretchFactor(0, 5)
        self.splitter.setStretchFactor(1, 4)
        self.splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 8)
        layout.setSpacing(8)
        layout.addWidget(self.filter_bar)
        layout.addWidget(self.message)
        layout.addWidget(self.splitter, 1)

    # --- public ------------------------------------------------------------------------

    def refresh(self) -> None:
        """Re-read the list (a review finished elsewhere); deferred while hidden."""
        if not self.isVisible():
            self._dirty = True
            return
        self._dirty = False
        current = self.current_id()
        self._reselect = current if current is not None else self._reselect
        self.model.reload()

    def focus_search(self) -> None:
        self.filter_bar.focus_search()

    def apply_wellness(self) -> None:
        """The masking settings, now: the preview column and the open review."""
        self._mask_preview()
        self.detail.apply_wellness()

    def _mask_preview(self) -> None:
        masked = bool(self.ctx.settings["mask_content"]) and not self.reveal.revealed
        self.model.set_mask_preview(masked)

    def focus_table(self) -> None:
        """The keys go to the list (Down from the search box): on the current row, else the
        first."""
        self.table.setFocus(Qt.FocusReason.OtherFocusReason)
        if not self.table.currentIndex().isValid() and self.model.rowCount() > 0:
            self.table.setCurrentIndex(self.model.index(0, 0))

    def current_id(self) -> int | None:
        summary = self.model.summary(self.table.currentIndex().row())
        return summary.id if summary is not None else None

    def selected_ids(self) -> list[int]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        ids = [s.id for s in map(self.model.summary, rows) if s is not None]
        if not ids and (current := self.current_id()) is not None:
            ids = [current]
        return ids

    def open_current(self, *, focus: bool = False) -> None:
        self._open_timer.stop()
        review_id = self.current_id()
        if review_id is not None:
            self.open_review(review_id, focus=focus)

    def open_review(self, review_id: int, *, focus: bool = False) -> None:
        self._open_generation += 1
        self._tasks.spawn(self._open(review_id, self._open_generation, focus), name="open")

    def rerun_current(self) -> None:
        review_id = self.current_id()
        if review_id is None and self.detail.review is not None:
            review_id = self.detail.review.id
        if review_id is None:
            self.message.show_message("Select a review to re-run first.", "info")
            return
        self.rerun(review_id)

    def rerun(self, review_id: int) -> None:
        self._tasks.spawn(self._rerun(review_id), name="rerun-open")

    def export(self, ids: Sequence[int] | None = None) -> None:
        """Export the given reviews, else the selected rows, as one escalation note."""
        wanted = list(ids) if ids else self.selected_ids()
        if not wanted:
            self.message.show_message("Select one or more reviews to export first.", "info")
            return
        if len(wanted) > EXPORT_LIMIT:
            self.message.show_message(
                f"{len(wanted):,} reviews are selected; export at most {EXPORT_LIMIT} at once.",
                "warning",
            )
            return
        self._tasks.spawn(self._export(wanted), name="export")

    def delete_selected(self) -> None:
        ids = self.selected_ids()
        if self.ctx.history is None:
            return
        if not ids:
            self.message.show_message("Select one or more reviews to delete first.", "info")
            return
        dialog = DeleteDialog(ids, self)
        self.delete_dialog = dialog
        answer = dialog_result(dialog)  # shown now, window-modal, no nested loop
        self._tasks.spawn(self._delete(dialog, answer, ids), name="delete")

    async def wait_idle(self) -> None:
        """Until the table and the pending reads are quiet (tests)."""
        await self.model.wait_idle()

    async def shutdown(self) -> None:
        if self.compare_view is not None:
            self.compare_view.cancel()
            await self.compare_view.wait_finished()
        await self.detail.close_tasks()
        await self._tasks.wait_all(timeout=5)
        await self.model.close()

    # --- reactions ---------------------------------------------------------------------

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        if not self._sized:
            self._sized = True
            self.filter_bar.add_policy_ids(policy.id for policy in self.policies())
            width = self.splitter.width()
            self.splitter.setSizes([int(width * TABLE_SHARE), width - int(width * TABLE_SHARE)])
        if self._dirty:
            QTimer.singleShot(0, self, self.refresh)

    def _query_changed(self, query: Query) -> None:
        self.message.dismiss()
        self._reselect = self.detail.review.id if self.detail.review is not None else None
        self._check_excluded = self._reselect is not None
        self.model.set_query(query)

    def _loading_changed(self, loading: bool) -> None:
        """A new search or filter has its rows: a review it leaves out is not kept open
        beside them (a decision would land on a review the list no longer shows)."""
        review = self.detail.review
        if loading or not self._check_excluded or not self.model.ready:
            return
        if review is None or self.model.row_of(review.id) is not None:
            self._check_excluded = False
            return
        if self.model.exhausted:
            self._check_excluded = False
            self._reselect = None
            self.detail.clear()
            self.detail.empty.setText(
                f"Review #{review.id} is not in this search or filter; choose a review here."
            )

    def _rows_arrived(self, _parent: QModelIndex, first: int, last: int) -> None:
        ids = {s.policy_id for s in map(self.model.summary, range(first, last + 1)) if s}
        self.filter_bar.add_policy_ids(ids)
        wanted = self._reselect
        if wanted is not None and (row := self.model.row_of(wanted)) is not None:
            self._reselect = None
            self._restoring = True
            try:
                self.table.selectRow(row)
            finally:
                self._restoring = False

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid() and not self._restoring:
            self._open_timer.start()

    def _review_changed(self, review: Review) -> None:
        self.model.update_summary(
            review.id, last_decision=review.last_decision, escalated=review.escalated
        )

    # --- background work ---------------------------------------------------------------

    async def _load_or_say(self, review_id: int) -> tuple[Review | None, Policy | None]:
        if self.ctx.history is None:
            return None, None
        try:
            review, policy = await asyncio.to_thread(load_review, self.ctx.history, review_id)
        except HistoryError as exc:
            self.message.show_message(str(exc), "error")
            return None, None
        if review is None:
            self.message.show_message(f"Review #{review_id} no longer exists.", "warning")
        return review, policy

    async def _open(self, review_id: int, generation: int, focus: bool) -> None:
        review, policy = await self._load_or_say(review_id)
        if review is None or generation != self._open_generation:
            return
        self.detail.show_review(review, policy)
        if focus:
            self.detail.focus()
        self.review_opened.emit(review_id)

    async def _rerun(self, review_id: int) -> None:
        review, stored = await self._load_or_say(review_id)
        if review is None:
            return
        if self.compare_view is not None:
            if self.compare_view.running:
                self.compare_view.raise_()
                self.message.show_message("A re-run is still going; wait or cancel it.", "info")
                return
            self.compare_view.close()
            self.compare_view.deleteLater()
        from safeguard_desktop.ui.compare_view import CompareView

        view = CompareView(
            self.ctx, review, stored, self.policies(), self.reveal, self.options_for, self
        )
        view.review_saved.connect(lambda _new_id: self.refresh())
        self.compare_view = view
        view.show()

    async def _export(self, ids: list[int]) -> None:
        if self.ctx.history is None:
            return
        history = self.ctx.history
        try:
            found = await asyncio.to_thread(lambda: [history.get(i) for i in ids])
        except HistoryError as exc:
            self.message.show_message(str(exc), "error")
            return
        reviews = [r for r in found if r is not None]
        if not reviews:
            self.message.show_message("The selected reviews no longer exist.", "warning")
            return
        folder = self.export_dialog.folder if self.export_dialog is not None else None
        if self.export_dialog is not None:
            self.export_dialog.close()
            self.export_dialog.deleteLater()
        from safeguard_desktop.ui.export_dialog import ExportDialog

        dialog = ExportDialog(reviews, self, folder=folder)
        self.export_dialog = dialog
        dialog.show()

    async def _delete(
        self, dialog: DeleteDialog, answer: asyncio.Future[int], ids: list[int]
    ) -> None:
        code = await answer
        reason = dialog.reason.text()
        dialog.deleteLater()
        if self.delete_dialog is dialog:
            self.delete_dialog = None
        if code != QDialog.DialogCode.Accepted or self.ctx.history is None:
            return
        history = self.ctx.history
        moderator = str(self.ctx.settings["moderator"] or "")

        def delete() -> set[int]:
            gone: set[int] = set()
            for review_id in ids:
                with contextlib.suppress(KeyError):  # deleted elsewhere meanwhile
                    history.delete_review(review_id, moderator=moderator, reason=reason)
                gone.add(review_id)
            return gone

        try:
            gone = await asyncio.to_thread(delete)
        except HistoryError as exc:
            self.message.show_message(str(exc), "error")
            self.model.reload()  # some may be gone already
            return
        self.model.remove_ids(gone)
        if self.detail.review is not None and self.detail.review.id in gone:
            self.detail.clear()
        count = len(gone)
        self.message.show_message(
            f"Deleted {count} review{'s' * (count != 1)}; the audit trail records it.", "info"
        )
