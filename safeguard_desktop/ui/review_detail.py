"""One stored review beside the History table: verdict, reasoning and content with their
highlights, the exact policy text, provenance, the decisions, and the decision bar.

Signals:
    rerun_requested(int): the Re-run button for this review id.
    export_requested(int): the Export button for this review id.
    review_changed(object): the shown Review after a new decision was recorded.
"""

from __future__ import annotations

import asyncio
import logging

from safeguard_desktop.core.highlight import Highlights, Span
from safeguard_desktop.core.policy import Policy
from safeguard_desktop.qt import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPlainTextEdit,
    QPushButton,
    QSplitter,
    Qt,
    QTabWidget,
    QVBoxLayout,
    QWidget,
    Signal,
)
from safeguard_desktop.services.history_service import DuplicateDecision, HistoryError, Review
from safeguard_desktop.services.session import Session
from safeguard_desktop.ui.async_utils import TaskKeeper
from safeguard_desktop.ui.decision_bar import DecisionBar
from safeguard_desktop.ui.history_model import local_time
from safeguard_desktop.ui.policy_panel import PolicyViewer
from safeguard_desktop.ui.reasoning_view import ContentPane, ReasoningView
from safeguard_desktop.ui.stored_review import (
    decision_line,
    provenance_lines,
    show_texts,
    show_verdict,
)
from safeguard_desktop.ui.theme import titled_pane
from safeguard_desktop.ui.verdict_panel import VerdictPanel, plain_label
from safeguard_desktop.ui.wellness import MaskedArea, RevealState

log = logging.getLogger("safeguard.ui.history")
TAB_CONTENT, TAB_POLICY, TAB_PROVENANCE = 0, 1, 2
EMPTY_HINT = "Select a review to see it here (Enter opens the selected row)."
REPEAT_WINDOW_S = 10.0  # the same decision again within this: a double press, not recorded


class ReviewDetail(QWidget):
    rerun_requested = Signal(int)
    export_requested = Signal(int)
    review_changed = Signal(object)

    def __init__(self, ctx: Session, reveal: RevealState, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("reviewDetail")
        self.ctx = ctx
        self.review: Review | None = None
        self.policy: Policy | None = None
        self._marks: Highlights | None = None
        self._tasks = TaskKeeper()

        self.title = plain_label(self, "detailTitle", wrap=False)
        self.title.setObjectName("paneTitle")
        self.rerun_button = QPushButton("Re-r&un…", self)
        self.rerun_button.setToolTip("Run this content again and compare the verdicts")
        self.export_button = QPushButton("E&xport…", self)
        self.export_button.setToolTip("Escalation note in Markdown (Ctrl+Shift+E)")
        self.verdict = VerdictPanel(self)
        self.reasoning = ReasoningView(reveal, self)
        self.reasoning.setObjectName("detailReasoning")
        self.reasoning.setPlaceholderText("This review has no reasoning.")
        self.reasoning.set_mask_quotes(bool(ctx.settings["mask_quotes"]))
        self.content = ContentPane(self)
        self.content.setObjectName("detailContent")
        self.content_mask = MaskedArea(self.content, reveal, self)
        self.content_mask.set_mask_enabled(bool(ctx.settings["mask_content"]))
        self.verdict.set_masking(reveal, bool(ctx.settings["mask_content"]))
        self.reveal = reveal
        self.policy_viewer = PolicyViewer(self)
        self.provenance = QPlainTextEdit(self)
        self.provenance.setObjectName("provenance")
        self.provenance.setReadOnly(True)
        self.decisions = QListWidget(self)
        self.decisions.setObjectName("decisionList")
        self.decisions.setWordWrap(True)
        self.decisions.setMaximumHeight(self.fontMetrics().height() * 4 + 14)
        self.decision_bar = DecisionBar(self)
        self._drafts: dict[int, tuple[str, str | None]] = {}  # unsent notes per review id
        self.empty = QLabel(EMPTY_HINT, self)
        self.empty.setObjectName("hint")
        self.empty.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self._build_layout()

        self.rerun_button.clicked.connect(self._rerun_clicked)
        self.export_button.clicked.connect(self._export_clicked)
        self.decision_bar.submitted.connect(self._decide)
        self.verdict.rule_clicked.connect(self.show_rule)
        self.reasoning.span_clicked.connect(self._reasoning_span_clicked)
        self.content.span_clicked.connect(self._content_span_clicked)
        self.clear()

    def _build_layout(self) -> None:
        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.rerun_button)
        head.addWidget(self.export_button)

        self.tabs = QTabWidget(self)
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.content_mask, "Content")
        self.tabs.addTab(self.policy_viewer, "Policy (this version)")
        self.tabs.addTab(self.provenance, "Provenance")

        texts = QSplitter(Qt.Orientation.Vertical, self)
        texts.addWidget(titled_pane("Reasoning", self.reasoning, texts))
        texts.addWidget(self.tabs)
        texts.setStretchFactor(0, 3)
        texts.setStretchFactor(1, 2)
        texts.setChildrenCollapsible(False)

        decisions_title = QLabel("Decisions (oldest first)", self)
        decisions_title.setObjectName("paneTitle")
        self.body = QWidget(self)
        body = QVBoxLayout(self.body)
        body.setContentsMargins(0, 0, 0, 0)
        body.setSpacing(6)
        body.addLayout(head)
        body.addWidget(self.verdict)
        body.addWidget(texts, 1)
        body.addWidget(decisions_title)
        body.addWidget(self.decisions)
        body.addWidget(self.decision_bar)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.empty, 1)
        layout.addWidget(self.body, 1)

    # --- public ------------------------------------------------------------------------

    def clear(self) -> None:
        self.review = None
        self.policy = None
        self.body.hide()
        self.empty.show()

    def show_review(self, review: Review, policy: Policy | None) -> None:
        """Show a stored review; `policy` is the exact version it ran with (if readable)."""
        same = self.review is not None and self.review.id == review.id
        if self.review is not None and not same:  # keep what was typed for the last one
            self._drafts[self.review.id] = self.decision_bar.draft()
        self.review = review
        self.policy = policy
        self.empty.setText(EMPTY_HINT)
        self.empty.hide()
        self.body.show()
        when = local_time(review.created_at, "%Y-%m-%d %H:%M")
        ref = f" · item {review.ref}" if review.ref else ""
        self.title.setText(f"Review #{review.id}{ref} · {when} · {review.status}")
        marks = show_texts(self.reasoning, self.content, review, policy)
        self.content_mask.set_has_content(bool(review.content_text))
        self._marks = marks
        self._show_outcome(review)
        self.policy_viewer.show_policy(policy)
        if policy is None:
            self.policy_viewer.setPlainText(
                "The policy text of this review is not in the history; its sha256 is "
                f"{review.policy_sha256}."
            )
        self.provenance.setPlainText("\n".join(provenance_lines(review)))
        self._show_decisions(review)
        self.rerun_button.setEnabled(review.status != "running")
        self.decision_bar.set_target(f"review #{review.id}", has_verdict=review.verdict_label
                                     in ("violation", "safe"))  # fmt: skip
        if not same:
            self.decision_bar.reset(self._drafts.pop(review.id, ("", None)))
        # The model's rule ids first (what an override most often corrects), then the policy's.
        rules = [*review.rule_ids, *(r.id for r in (policy.rules if policy else ()))]
        self.decision_bar.set_rules(list(dict.fromkeys(rules)))

    def _show_outcome(self, review: Review) -> None:
        """The model's verdict, and the moderator's override over it when one stands."""
        show_verdict(self.verdict, review, self.policy, self._marks)
        self.verdict.set_outcome(review.override_label, review.override_rule)

    def decision_texts(self) -> list[str]:
        return [self.decisions.item(i).text() for i in range(self.decisions.count())]

    def show_rule(self, rule_id: str) -> None:
        self.tabs.setCurrentIndex(TAB_POLICY)
        self.policy_viewer.show_rule(rule_id)

    def apply_wellness(self) -> None:
        """The masking settings, now (no restart needed)."""
        masked = bool(self.ctx.settings["mask_content"])
        self.content_mask.set_mask_enabled(masked)
        self.verdict.set_masking(self.reveal, masked)
        self.reasoning.set_mask_quotes(bool(self.ctx.settings["mask_quotes"]))
        self.reasoning.refresh_formats()

    def focus(self) -> None:
        self.reasoning.setFocus(Qt.FocusReason.OtherFocusReason)

    async def close_tasks(self) -> None:
        await self._tasks.wait_all(timeout=5)

    # --- decisions ---------------------------------------------------------------------

    def _show_decisions(self, review: Review) -> None:
        self.decisions.clear()
        for d in review.decisions:
            self.decisions.addItem(
                decision_line(d.at, d.moderator, d.action, d.label, d.note, d.rule)
            )
        if not review.decisions:
            self.decisions.addItem("No decision yet.")

    def _decide(self, action: str, label: object, note: str) -> None:
        review = self.review
        if review is None or self.ctx.history is None:
            self.decision_bar.show_error("History is off, so decisions cannot be saved.")
            return
        moderator = str(self.ctx.settings["moderator"] or "").strip()
        if not moderator:
            self.decision_bar.show_error(
                "Your moderator name is empty; set it in Settings (Moderator) first."
            )
            return
        rule = self.decision_bar.rule() if action == "override" else None
        self._tasks.spawn(
            self._record(review.id, action, label if isinstance(label, str) else None, note,
                         moderator, rule),
            name="decision",
        )  # fmt: skip

    async def _record(
        self,
        review_id: int,
        action: str,
        label: str | None,
        note: str,
        moderator: str,
        rule: str | None = None,
    ) -> None:
        history = self.ctx.history
        assert history is not None

        def write() -> Review | None:
            history.add_decision(
                review_id, action=action, moderator=moderator, label=label, note=note,
                rule=rule, repeat_window_s=REPEAT_WINDOW_S,
            )  # fmt: skip
            return history.get(review_id)

        try:
            fresh = await asyncio.to_thread(write)
        except DuplicateDecision as exc:  # a double press: said, nothing appended
            self.decision_bar.accepted(str(exc))
            return
        except ValueError as exc:
            self.decision_bar.show_error(str(exc))
            return
        except KeyError:
            self.decision_bar.show_error("This review was deleted; pick another one.")
            return
        except HistoryError as exc:
            self.decision_bar.show_error(str(exc))
            return
        if fresh is None:
            self.decision_bar.show_error("This review was deleted; pick another one.")
            return
        if self.review is None or self.review.id != review_id:
            self._drafts.pop(review_id, None)  # recorded; the bar now shows another review
            self.review_changed.emit(fresh)
            return
        self.review = fresh
        self._show_decisions(fresh)
        self._show_outcome(fresh)
        self.decision_bar.accepted(f"Recorded: {action}" + (f" → {label}" if label else "") + ".")
        self.review_changed.emit(fresh)

    # --- linking -----------------------------------------------------------------------

    def _rerun_clicked(self) -> None:
        if self.review is not None:
            self.rerun_requested.emit(self.review.id)

    def _export_clicked(self) -> None:
        if self.review is not None:
            self.export_requested.emit(self.review.id)

    def _reasoning_span_clicked(self, span: Span) -> None:
        if self.reasoning.is_masked(span):
            self.reasoning.reveal.reveal()
            return
        if span.kind == "rule":
            self.show_rule(span.key)
        elif span.kind == "quote":
            found = self.content.occurrences(span.group)
            if found:
                self.tabs.setCurrentIndex(TAB_CONTENT)
                self.content.select_range(found[0].start, found[0].end)

    def _content_span_clicked(self, span: Span) -> None:
        quote = self.reasoning.first_quote(span.group)
        if quote is not None:
            if self.reasoning.is_masked(quote):
                self.reasoning.reveal.reveal()
            self.reasoning.select_range(quote.start, quote.end)
