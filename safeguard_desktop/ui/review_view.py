"""The review workspace: content and policy on the left, verdict and reasoning on the right.

Runs one review at a time through `services.review.Reviewer` on the qasync loop and links
the panes: rule chips and rule ids open the policy at the rule, quotes jump between the
reasoning and the content.

Signals:
    running_changed(bool): a review started or ended.
    review_finished(object): the ReviewResult (or None when cancelled or crashed); again
        when "Save again" has stored a review the history could not take at first.
    open_requested(): the editor's Open… button was pressed.
"""

from __future__ import annotations

import asyncio
import logging
import time

from safeguard_desktop.core.content import Content, ContentError
from safeguard_desktop.core.highlight import Span
from safeguard_desktop.core.policy import Policy
from safeguard_desktop.core.vocabulary import EFFORTS
from safeguard_desktop.qt import (
    QComboBox,
    QFont,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSplitter,
    Qt,
    QTimer,
    QVBoxLayout,
    QWidget,
    Signal,
)
from safeguard_desktop.services.review import Reviewer, ReviewOptions, ReviewResult
from safeguard_desktop.services.session import Session
from safeguard_desktop.ui.async_utils import SingleTask
from safeguard_desktop.ui.content_editor import ContentEditor
from safeguard_desktop.ui.policy_panel import PolicyPanel
from safeguard_desktop.ui.reasoning_view import ContentPane, ReasoningView
from safeguard_desktop.ui.theme import titled_pane
from safeguard_desktop.ui.verdict_panel import VerdictPanel
from safeguard_desktop.ui.wellness import MaskedArea, RevealState

log = logging.getLogger("safeguard.ui.review")
# The widest progress line the review streams; see _ProgressPin.
PROGRESS_SAMPLE = "streaming · 999,999 tokens · 9,999.9 s"
QWIDGETSIZE_MAX = 16_777_215


class _ProgressPin:
    """Holds the progress label at one size while a review streams.

    A label whose size may change asks every layout up to the window for a new geometry on
    each new text, and the tab widget holding the views then repaints all of them (about
    4 ms, four times a second). A label of fixed size repaints itself only. It is pinned,
    left-aligned, at the width of the widest progress line once it shows, and released
    before the verdict (whose statistics wrap).
    """

    def __init__(self, panel: VerdictPanel) -> None:
        self.panel = panel
        self.pinned = False

    def pin(self) -> None:
        label = self.panel.stats
        layout = self.panel.layout()
        if self.pinned or not label.isVisible() or layout is None:
            return
        margins = label.contentsMargins()
        width = label.fontMetrics().horizontalAdvance(PROGRESS_SAMPLE) + 2 * label.margin()
        label.setFixedSize(width + margins.left() + margins.right() + 2, label.height())
        layout.setAlignment(label, Qt.AlignmentFlag.AlignLeft)
        self.pinned = True

    def release(self) -> None:
        if not self.pinned:
            return
        label = self.panel.stats
        label.setMinimumSize(0, 0)
        label.setMaximumSize(QWIDGETSIZE_MAX, QWIDGETSIZE_MAX)
        layout = self.panel.layout()
        if layout is not None:
            layout.setAlignment(label, Qt.AlignmentFlag(0))
        self.pinned = False


class ReviewView(QWidget):
    running_changed = Signal(bool)
    review_finished = Signal(object)
    open_requested = Signal()

    def __init__(self, ctx: Session, reveal: RevealState, parent: QWidget | None = None):
        super().__init__(parent)
        self.ctx = ctx
        self.reveal = reveal
        self._task = SingleTask()
        self._save_task = SingleTask()
        self._reviewer: Reviewer | None = None  # the one that ran `last_result`
        self._started = 0.0
        self._tokens = 0
        self._policy_sha: str | None = None
        self._answered = False  # the whole answer is in: it is being recorded and shown
        self.last_result: ReviewResult | None = None
        settings = ctx.settings

        self.editor = ContentEditor(settings, reveal, self)
        self.policy_panel = PolicyPanel(settings, self)
        self.verdict = VerdictPanel(self)
        self._progress_pin = _ProgressPin(self.verdict)
        self.reasoning = ReasoningView(reveal, self)
        self.reasoning.setObjectName("reasoningView")
        self.reasoning.set_mask_quotes(bool(settings["mask_quotes"]))
        self.content_pane = ContentPane(self)
        self.content_pane.setObjectName("contentPane")
        self.content_mask = MaskedArea(self.content_pane, reveal, self)
        self.content_mask.set_mask_enabled(bool(settings["mask_content"]))
        self.verdict.set_masking(reveal, bool(settings["mask_content"]))

        self.model_picker = QComboBox(self)
        self.model_picker.setObjectName("modelPicker")
        self.model_picker.setEditable(True)
        self.model_picker.setMinimumContentsLength(22)
        self.model_picker.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.model_picker.addItem(str(settings["model"]))
        self.model_picker.setToolTip("Model on the server (filled from its installed models)")
        self.effort_picker = QComboBox(self)
        self.effort_picker.setObjectName("effortPicker")
        self.effort_picker.addItems(EFFORTS)
        self._effort_chosen = False  # True once the moderator picks one for this policy
        self.effort_picker.activated.connect(self._effort_picked)
        self.effort_picker.setToolTip(
            "Reasoning effort: low is fastest, high thinks longest (Ctrl+E)"
        )
        self.classify_button = QPushButton("Classify", self)
        self.classify_button.setObjectName("classifyButton")
        self.classify_button.setToolTip("Classify the content against the policy (Ctrl+Enter)")
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setToolTip("Stop the running review (Esc)")
        self.cancel_button.setEnabled(False)
        self._build_layout()
        self._reading_fonts()

        self._judged: str | None = None  # the content the verdict shown is for
        self.classify_button.clicked.connect(self.classify)
        self.cancel_button.clicked.connect(self.cancel)
        self.editor.open_button.clicked.connect(self.open_requested)
        self.editor.content_changed.connect(self._content_changed)
        self.policy_panel.policy_changed.connect(self._policy_changed)
        self.verdict.rule_clicked.connect(self.show_rule)
        self.verdict.save_requested.connect(self.save_again)
        self.reasoning.span_clicked.connect(self._reasoning_span_clicked)
        self.content_pane.span_clicked.connect(self._content_span_clicked)
        self._progress = QTimer(self)
        self._progress.setInterval(250)
        self._progress.timeout.connect(self._show_progress)
        self._policy_changed(self.policy_panel.current_policy())

    def _build_layout(self) -> None:
        def label(text: str, buddy: QWidget) -> QLabel:
            widget = QLabel(text, self)
            widget.setBuddy(buddy)
            return widget

        run_bar = QHBoxLayout()
        run_bar.setSpacing(8)
        run_bar.addWidget(label("&Model", self.model_picker))
        run_bar.addWidget(self.model_picker)
        run_bar.addSpacing(8)
        run_bar.addWidget(label("E&ffort", self.effort_picker))
        run_bar.addWidget(self.effort_picker)
        run_bar.addStretch(1)
        run_bar.addWidget(self.cancel_button)
        run_bar.addWidget(self.classify_button)

        inputs = QSplitter(Qt.Orientation.Vertical, self)
        inputs.addWidget(self.editor)
        inputs.addWidget(self.policy_panel)
        inputs.setStretchFactor(0, 1)
        inputs.setStretchFactor(1, 1)
        inputs.setChildrenCollapsible(False)

        right = QWidget(self)  # the verdict always gets the height its content needs
        right_col = QVBoxLayout(right)
        right_col.setContentsMargins(0, 0, 0, 0)
        right_col.setSpacing(8)
        right_col.addWidget(self.verdict, 0)
        right_col.addWidget(self._split_results(), 1)

        main = QSplitter(Qt.Orientation.Horizontal, self)
        main.addWidget(inputs)
        main.addWidget(right)
        main.setStretchFactor(0, 1)
        main.setStretchFactor(1, 1)
        main.setChildrenCollapsible(False)
        self.splitter = main

        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 10, 12, 8)
        layout.setSpacing(8)
        layout.addLayout(run_bar)
        layout.addWidget(main, 1)

    def _reading_fonts(self) -> None:
        """Text people read for minutes gets a slightly larger font than the chrome."""
        for pane in (
            self.editor.editor,
            self.reasoning,
            self.content_pane,
            self.policy_panel.viewer,
        ):
            font = QFont(pane.font())
            font.setPointSizeF(font.pointSizeF() * 1.1)
            pane.setFont(font)
            pane.document().setDocumentMargin(6)

    def _split_results(self) -> QWidget:
        """Reasoning above the rendered content, so a quote click shows both at once."""
        box = QSplitter(Qt.Orientation.Vertical, self)
        box.addWidget(titled_pane("Reasoning", self.reasoning, box))
        box.addWidget(titled_pane("Content as the model saw it", self.content_mask, box))
        box.setStretchFactor(0, 3)
        box.setStretchFactor(1, 2)
        box.setChildrenCollapsible(False)
        return box

    # --- public actions --------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task.running

    def apply_wellness(self) -> None:
        """The masking settings, now: content, quotes in the reasoning, the rationale."""
        settings = self.ctx.settings
        masked = bool(settings["mask_content"])
        self.editor.apply_wellness()
        self.content_mask.set_mask_enabled(masked)
        self.verdict.set_masking(self.reveal, masked)
        self.reasoning.set_mask_quotes(bool(settings["mask_quotes"]))
        self.reasoning.refresh_formats()

    def focus_editor(self) -> None:
        self.editor.editor.setFocus(Qt.FocusReason.OtherFocusReason)

    def focus_policy_picker(self) -> None:
        self.policy_panel.focus_picker()

    def cycle_effort(self) -> str:
        index = (self.effort_picker.currentIndex() + 1) % self.effort_picker.count()
        self.effort_picker.setCurrentIndex(index)
        self._effort_chosen = True
        return self.effort_picker.currentText()

    def set_models(self, names: tuple[str, ...]) -> None:
        """Fill the model picker from the server, keeping what the moderator typed."""
        current = self.model_picker.currentText()
        wanted = list(names) if names else [current]
        if current and current not in wanted:
            wanted.insert(0, current)
        existing = [self.model_picker.itemText(i) for i in range(self.model_picker.count())]
        if existing == wanted:
            return
        self.model_picker.blockSignals(True)
        self.model_picker.clear()
        self.model_picker.addItems(wanted)
        self.model_picker.setCurrentText(current)
        self.model_picker.blockSignals(False)

    def show_rule(self, rule_id: str) -> None:
        if not self.policy_panel.show_rule(rule_id):
            self.editor.message.show_message(
                f"Rule {rule_id} is not defined in the selected policy; check the policy text.",
                "warning",
            )

    def options(self, policy: Policy) -> ReviewOptions:
        """The picker's effort only when the moderator chose one; else the session decides
        (the policy's own, else the setting), as the CLI does without --effort."""
        chosen = self.effort_picker.currentText() if self._effort_chosen else None
        return self.ctx.review_options(
            source="gui", model=self.model_picker.currentText(), effort=chosen
        )

    def classify(self) -> None:
        """Start a review of the editor's content (ignored while one runs)."""
        if self.running:
            return
        try:
            content = self.editor.current_content()
        except ContentError as exc:
            self.editor.show_error(str(exc))
            return
        policy = self.policy_panel.current_policy()
        if policy is None:
            self.editor.show_error("No policy is selected; pick one in the Policy list (Ctrl+L).")
            return
        if self.editor.message.level == "error":
            self.editor.message.dismiss()
        options = self.options(policy)
        self._judged = content.render()
        self.reasoning.begin()
        self.content_pane.show_content(self._judged)
        self.content_mask.set_has_content(True)
        self.verdict.set_running(options.model, options.effort_for(policy))
        self._started = time.monotonic()
        self._tokens = 0
        self._task.start(self._run(policy, content, options), name="review")
        self.cancel_button.setEnabled(True)
        self.classify_button.setEnabled(False)
        self._progress.start()
        self.running_changed.emit(True)

    def cancel(self) -> bool:
        """Cancel the running review; True when one was running (a review whose whole
        answer is in is not cancelled: it is being recorded and shown as the model gave it)."""
        if self._answered:
            return False
        return self._task.cancel()

    async def wait_finished(self) -> None:
        await self._task.wait()
        await self._save_task.wait()

    def save_again(self) -> None:
        """Store the last review, which the history could not take (e.g. the disk was full)."""
        result, reviewer = self.last_result, self._reviewer
        if result is None or reviewer is None or self.running or self._save_task.running:
            return
        if not result.can_save_again:
            return
        self.verdict.set_saving()
        self._save_task.start(self._save(reviewer, result), name="save-review")

    async def _save(self, reviewer: Reviewer, result: ReviewResult) -> None:
        try:
            problem = await reviewer.save(result)  # SQLite work runs in a thread
        except Exception as exc:  # a bug: keep the verdict on screen and the button offered
            log.exception("saving the review again failed")
            problem = f"The review could not be saved ({exc}). Details are in the log."
        finally:
            self._save_task.finished()
        if result is not self.last_result or self.running:
            return  # another review took the panel meanwhile
        if problem is None:
            self.verdict.set_saved(result.review_id, _notes(result))
            self.review_finished.emit(result)
        else:
            others = [n for n in _notes(result) if n not in (result.unsaved, problem)]
            self.verdict.set_notes([*others, problem])
            self.verdict.offer_save()

    # --- the review ------------------------------------------------------------------

    async def _run(self, policy: Policy, content: Content, options: ReviewOptions) -> None:
        reviewer = self.ctx.reviewer(options)
        self._reviewer = reviewer
        result: ReviewResult | None = None
        try:
            result = await reviewer.review(
                policy, content, on_delta=self._on_delta, on_answered=self._on_answered
            )
        except asyncio.CancelledError:
            self.reasoning.finish()
            self.verdict.set_cancelled(model=options.model, effort=options.effort_for(policy))
        except Exception as exc:  # e.g. the history file failed: show it, keep the window alive
            log.exception("review crashed")
            self.reasoning.finish()
            self.verdict.set_failed(
                f"The review stopped unexpectedly ({exc}). Details are in the log; try again.",
                model=options.model,
                effort=options.effort_for(policy),
            )
        else:
            await self._show_result(result, policy)
        finally:
            self._answered = False
            self._progress.stop()
            self._progress_pin.release()
            self._task.finished()
            self.cancel_button.setEnabled(False)
            self.classify_button.setEnabled(True)
            self.last_result = result
            self.running_changed.emit(False)
            self.review_finished.emit(result)

    def _on_delta(self, kind: str, text: str) -> None:
        self._tokens += 1
        if kind == "thinking":
            self.reasoning.append(text)

    def _on_answered(self) -> None:
        """The stream ended: from here the review finishes as it is (Escape no longer
        cancels it, so what the screen says is what the history keeps)."""
        self._answered = True
        self.cancel_button.setEnabled(False)

    def _show_progress(self) -> None:
        shown = self.verdict.stats.isVisible()  # laid out since the last tick
        self.verdict.set_progress(self._tokens, time.monotonic() - self._started)
        if shown:
            self._progress_pin.pin()

    async def _show_result(self, result: ReviewResult, policy: Policy) -> None:
        """Put the result on screen in three slices, the event loop running (and painting)
        between them, so no frame waits for all of it; the badge comes last."""
        self._answered = True
        self._progress_pin.release()
        marks = result.highlights
        self.reasoning.finish_with_highlights(result.reasoning, marks.reasoning, policy)
        await asyncio.sleep(0)
        self.content_pane.apply_highlights(marks.content)
        await asyncio.sleep(0)
        self._show_verdict(result, policy)

    def _show_verdict(self, result: ReviewResult, policy: Policy) -> None:
        marks = result.highlights
        if result.error is not None or result.verdict is None:
            self.verdict.set_failed(
                _failure(result, self.ctx),
                model=result.model,
                effort=result.effort,
                warnings=result.warnings,
            )
        else:
            self.verdict.set_verdict(
                result.verdict,
                model=result.model,
                effort=result.effort,
                mentioned=marks.rule_ids,
                known=[r.id for r in policy.rules],
                warnings=result.warnings,
            )
        self.verdict.set_stats(result.stats, self._tokens)
        if result.can_save_again:
            self.verdict.offer_save()

    # --- linking ---------------------------------------------------------------------

    def _reasoning_span_clicked(self, span: Span) -> None:
        if self.reasoning.is_masked(span):
            self.reveal.reveal()
            return
        if span.kind == "rule":
            self.show_rule(span.key)
        elif span.kind == "quote":
            found = self.content_pane.occurrences(span.group)
            if found:
                self.content_pane.select_range(found[0].start, found[0].end)

    def _content_span_clicked(self, span: Span) -> None:
        quote = self.reasoning.first_quote(span.group)
        if quote is not None:
            if self.reasoning.is_masked(quote):
                self.reveal.reveal()
            self.reasoning.select_range(quote.start, quote.end)

    def _content_changed(self) -> None:
        """A verdict shown is for the content as it was when classified."""
        if self.running or self.verdict.state in ("idle", "running"):
            return
        try:
            now = self.editor.current_content().render()
        except ContentError:
            now = None
        self.verdict.set_stale(now != self._judged)

    def _effort_picked(self, _index: int) -> None:
        self._effort_chosen = True

    def _policy_changed(self, policy: Policy | None) -> None:
        if policy is None or policy.sha256 == self._policy_sha:
            return
        self._policy_sha = policy.sha256
        # Show the effort a review of this policy will use; a choice made for the previous
        # policy does not carry over.
        self._effort_chosen = False
        self.effort_picker.setCurrentText(self.ctx.review_options(source="gui").effort_for(policy))


def _failure(result: ReviewResult, ctx: Session | None = None) -> str:
    if result.error is None:
        return "The review failed; try again."
    return ctx.failure_text(result.error) if ctx is not None else str(result.error)


def _notes(result: ReviewResult) -> list[str]:
    """The sentences under the badge: a failure's message first, then the warnings."""
    failed = result.error is not None or result.verdict is None
    return [_failure(result), *result.warnings] if failed else list(result.warnings)
