"""Re-run a stored review and compare: stored verdict on the left, the new one on the right.

The new run uses the exact stored policy version, the current version of that policy, or
any other policy, with the model and effort currently chosen in the Review view. It streams
live and is saved in the history like any review (source "gui").

Signals:
    review_saved(int): the id of the new review once it is in the history.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from safeguard_desktop.core.content import Content, ContentError, content_from_dict
from safeguard_desktop.core.policy import Policy
from safeguard_desktop.qt import (
    QCloseEvent,
    QComboBox,
    QDialog,
    QHBoxLayout,
    QKeySequence,
    QLabel,
    QPushButton,
    QShortcut,
    QSplitter,
    Qt,
    QVBoxLayout,
    QWidget,
    Signal,
)
from safeguard_desktop.services.history_service import Review
from safeguard_desktop.services.review import ReviewOptions, ReviewResult
from safeguard_desktop.services.session import Session
from safeguard_desktop.ui.async_utils import SingleTask
from safeguard_desktop.ui.history_model import local_time
from safeguard_desktop.ui.message_bar import InlineMessage
from safeguard_desktop.ui.reasoning_view import ReasoningView
from safeguard_desktop.ui.stored_review import policy_line, show_verdict, stored_highlights
from safeguard_desktop.ui.verdict_panel import VerdictPanel, plain_label
from safeguard_desktop.ui.wellness import RevealState

log = logging.getLogger("safeguard.ui.history")
OptionsFor = Callable[[Policy], ReviewOptions]


@dataclass(frozen=True)
class RerunChoice:
    """One entry of the policy picker."""

    text: str
    policy: Policy
    kind: str  # "stored" | "current" | "other"


def rerun_choices(
    review: Review, stored: Policy | None, policies: Sequence[Policy]
) -> list[RerunChoice]:
    """Stored version first, then the current version of the same policy, then the rest."""
    choices: list[RerunChoice] = []
    if stored is not None:
        version = f" v{stored.version}" if stored.version else ""
        choices.append(
            RerunChoice(
                f"Stored version · {review.policy_id}{version} · {stored.short_sha} (exact text)",
                stored,
                "stored",
            )
        )
    current = next((p for p in policies if p.id == review.policy_id), None)
    if current is not None:
        same = " (same text)" if current.sha256 == review.policy_sha256 else " (changed)"
        version = f" v{current.version}" if current.version else ""
        choices.append(
            RerunChoice(
                f"Current version · {current.id}{version} · {current.short_sha}{same}",
                current,
                "current",
            )
        )
    for policy in policies:
        if policy is current:
            continue
        version = f" v{policy.version}" if policy.version else ""
        origin = " · built-in" if policy.builtin else ""
        choices.append(
            RerunChoice(
                f"{policy.title or policy.id} · {policy.id}{version}{origin}", policy, "other"
            )
        )
    return choices


def _column(
    parent: QWidget, title: str, reasoning: ReasoningView
) -> tuple[QWidget, QLabel, VerdictPanel, QLabel]:
    """One side: heading, verdict panel, policy line, and the reasoning taking the rest."""
    box = QWidget(parent)
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(6)
    heading = QLabel(box)
    heading.setTextFormat(Qt.TextFormat.PlainText)  # model names come from the server
    heading.setText(title)
    heading.setObjectName("paneTitle")
    panel = VerdictPanel(box)
    policy = plain_label(box, "comparePolicy")
    layout.addWidget(heading)
    layout.addWidget(panel)
    layout.addWidget(policy)
    layout.addWidget(reasoning, 1)
    return box, heading, panel, policy


class CompareView(QDialog):
    review_saved = Signal(int)

    def __init__(
        self,
        ctx: Session,
        review: Review,
        stored_policy: Policy | None,
        policies: Sequence[Policy],
        reveal: RevealState,
        options_for: OptionsFor,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setObjectName("compareView")
        self.setWindowTitle(f"Re-run review #{review.id} — compare verdicts")
        self.ctx = ctx
        self.review = review
        self.stored_policy = stored_policy
        self.options_for = options_for
        self.choices = rerun_choices(review, stored_policy, policies)
        self.new_result: ReviewResult | None = None
        self._task = SingleTask()

        self.picker = QComboBox(self)
        self.picker.setObjectName("rerunPolicy")
        for choice in self.choices:
            self.picker.addItem(choice.text)
        self.run_button = QPushButton("&Run", self)
        self.run_button.setObjectName("classifyButton")
        self.run_button.setToolTip("Re-run with the chosen policy (Ctrl+Enter)")
        self.cancel_button = QPushButton("Cancel run", self)
        self.cancel_button.setEnabled(False)
        self.run_info = plain_label(self, "hint")
        self.message = InlineMessage(self)
        self.policy_note = plain_label(self, "policyNote")
        self.comparison = plain_label(self, "comparison")
        self.comparison.setObjectName("paneTitle")
        self.comparison.setText("Press Run (Ctrl+Enter) to re-run and compare.")

        self.stored_reasoning = ReasoningView(reveal, self)
        self.stored_reasoning.setObjectName("storedReasoning")
        self.new_reasoning = ReasoningView(reveal, self)
        self.new_reasoning.setObjectName("newReasoning")
        for view in (self.stored_reasoning, self.new_reasoning):
            view.set_mask_quotes(bool(ctx.settings["mask_quotes"]))
        left, _h1, self.stored_panel, self.stored_policy_label = _column(
            self,
            f"Stored · review #{review.id} · {local_time(review.created_at)}",
            self.stored_reasoning,
        )
        right, self.new_heading, self.new_panel, self.new_policy_label = _column(
            self, "Re-run", self.new_reasoning
        )
        self.panes = QSplitter(Qt.Orientation.Horizontal, self)
        self.panes.addWidget(left)
        self.panes.addWidget(right)
        self.panes.setChildrenCollapsible(False)

        bar = QHBoxLayout()
        label = QLabel("&Policy for the re-run", self)
        label.setBuddy(self.picker)
        bar.addWidget(label)
        bar.addWidget(self.picker, 1)
        bar.addWidget(self.cancel_button)
        bar.addWidget(self.run_button)
        layout = QVBoxLayout(self)
        layout.addLayout(bar)
        layout.addWidget(self.policy_note)
        layout.addWidget(self.run_info)
        layout.addWidget(self.message)
        layout.addWidget(self.comparison)
        layout.addWidget(self.panes, 1)

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.picker.currentIndexChanged.connect(self._choice_changed)
        for keys in ("Ctrl+Return", "Ctrl+Enter"):
            QShortcut(QKeySequence(keys), self, self.run)
        self._show_stored()
        self._choice_changed()
        self.resize(1200, 760)

    # --- public ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task.running

    def choose(self, kind: str) -> bool:
        """Select the first choice of a kind ("stored", "current", "other")."""
        for i, choice in enumerate(self.choices):
            if choice.kind == kind:
                self.picker.setCurrentIndex(i)
                return True
        return False

    def current_choice(self) -> RerunChoice | None:
        index = self.picker.currentIndex()
        return self.choices[index] if 0 <= index < len(self.choices) else None

    def run(self) -> None:
        if self.running:
            return
        choice = self.current_choice()
        if choice is None:
            self.message.show_message("No policy to run with; add one to your policy folder.")
            return
        try:
            content = content_from_dict(self.review.content)
        except ContentError as exc:
            self.message.show_message(f"{exc} The stored content cannot be re-run.")
            return
        self.message.dismiss()
        options = self.options_for(choice.policy)
        self.new_heading.setText(f"Re-run · {options.model} · effort {options.effort or 'policy'}")
        self.new_policy_label.setText(
            policy_line(choice.policy.id, choice.policy.version, choice.policy.sha256)
        )
        self.new_reasoning.begin()
        self.new_panel.set_running(options.model, options.effort or "medium")
        self.comparison.setText(f"Running · {self._sha_text(choice.policy)}…")
        self.new_result = None
        self._task.start(self._run(choice.policy, content, options), name="rerun")
        self._set_running(True)

    def cancel(self) -> bool:
        return self._task.cancel()

    async def wait_finished(self) -> None:
        await self._task.wait()

    # --- internals ---------------------------------------------------------------------

    def _show_stored(self) -> None:
        review, policy = self.review, self.stored_policy
        marks = stored_highlights(review, policy)
        show_verdict(self.stored_panel, review, policy, marks)
        self.stored_policy_label.setText(
            policy_line(review.policy_id, review.policy_version, review.policy_sha256)
        )
        self.stored_reasoning.begin()
        self.stored_reasoning.finish(review.reasoning)
        self.stored_reasoning.apply_highlights(marks.reasoning, policy)

    def _choice_changed(self, _index: int = -1) -> None:
        choice = self.current_choice()
        if choice is None:
            self.run_info.setText("No policy is available for a re-run.")
            self.run_button.setEnabled(False)
            return
        options = self.options_for(choice.policy)
        effort = options.effort or choice.policy.effort or "medium"
        self.run_info.setText(
            f"Runs with {options.model} · effort {effort} (the Review view's current choice); "
            "the new review is saved in the history."
        )
        self.policy_note.setText(self._sha_text(choice.policy))

    def _sha_text(self, policy: Policy) -> str:
        stored = self.review.policy_sha256
        if policy.sha256 == stored:
            return f"Same policy text (sha256 {stored[:12]})"
        return f"Different policy text: stored {stored[:12]} · re-run {policy.short_sha}"

    def _set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)
        self.picker.setEnabled(not running)

    def _on_delta(self, kind: str, text: str) -> None:
        if kind == "thinking":
            self.new_reasoning.append(text)

    async def _run(self, policy: Policy, content: Content, options: ReviewOptions) -> None:
        reviewer = self.ctx.reviewer(options)
        try:
            result = await reviewer.review(policy, content, on_delta=self._on_delta)
        except asyncio.CancelledError:
            self.new_reasoning.finish()
            self.new_panel.set_cancelled(model=options.model, effort=options.effort_for(policy))
            self.comparison.setText(self._sha_text(policy) + " · re-run cancelled")
            raise
        except Exception as exc:  # e.g. the history failed: keep the window usable
            log.exception("re-run crashed")
            self.new_reasoning.finish()
            self.new_panel.set_failed(
                f"The re-run stopped unexpectedly ({exc}). Details are in the log; try again.",
                model=options.model,
                effort=options.effort_for(policy),
            )
            return
        finally:
            self._task.finished()
            self._set_running(False)
        self.new_result = result
        self._show_result(result, policy)
        if result.review_id is not None:
            self.review_saved.emit(result.review_id)

    def _show_result(self, result: ReviewResult, policy: Policy) -> None:
        self.new_reasoning.finish(result.reasoning)
        marks = result.highlights
        self.new_reasoning.apply_highlights(marks.reasoning, policy)
        if result.error is not None or result.verdict is None:
            message = str(result.error) if result.error else "The re-run failed; try again."
            self.new_panel.set_failed(
                message, model=result.model, effort=result.effort, warnings=result.warnings
            )
            self.comparison.setText(self._sha_text(policy) + " · re-run failed")
        else:
            self.new_panel.set_verdict(
                result.verdict,
                model=result.model,
                effort=result.effort,
                mentioned=marks.rule_ids,
                known=[r.id for r in policy.rules],
                warnings=result.warnings,
            )
            before = self.review.verdict_label or self.review.status
            after = result.verdict.label
            change = f"Same verdict: {after}" if before == after else f"Stored {before} → {after}"
            text = (
                "same policy text"
                if policy.sha256 == self.review.policy_sha256
                else (f"other policy text ({policy.short_sha})")
            )
            saved = f" · saved as #{result.review_id}" if result.review_id is not None else ""
            self.comparison.setText(f"{change} · {text}{saved}")
        self.new_panel.set_stats(result.stats)

    def reject(self) -> None:
        """Esc: stop a running re-run first; close when nothing runs."""
        if self.cancel():
            return
        super().reject()

    def closeEvent(self, event: QCloseEvent) -> None:
        self.cancel()
        super().closeEvent(event)
