"""The verdict: a large badge, category, rule chips, confidence, rationale, stats, errors.

Every text from the model or the server is shown as plain text (labels are set to
Qt.PlainText), never interpreted as HTML.

Signals:
    rule_clicked(str): a rule chip was clicked.
    save_requested(): "Save again" was clicked (a review the history could not take).
"""

from __future__ import annotations

from collections.abc import Sequence

from safeguard_desktop.core.verdict import Verdict
from safeguard_desktop.qt import (
    QFontDatabase,
    QFrame,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSizePolicy,
    Qt,
    QToolButton,
    QVBoxLayout,
    QWidget,
    Signal,
)
from safeguard_desktop.services.review import Stats
from safeguard_desktop.ui.span_view import rich_tooltip
from safeguard_desktop.ui.theme import repolish
from safeguard_desktop.ui.wellness import RevealState

BADGE_TEXT = {
    "idle": "NO REVIEW YET",
    "running": "RUNNING…",
    "violation": "VIOLATION",
    "safe": "SAFE",
    "unparsed": "UNPARSED",
    "incomplete": "INCOMPLETE",
    "failed": "FAILED",
    "cancelled": "CANCELLED",
}


STALE_NOTE = (
    "This verdict is for the content as it was; the content has changed since. "
    "Ctrl+Enter classifies it as it is now."
)
MASKED_RATIONALE = "Rationale hidden with the content (Alt+R reveals)."
CLASSIFY_HINT = "Press Ctrl+Enter to classify the content against the policy."


def plain_label(parent: QWidget, name: str = "", *, wrap: bool = True) -> QLabel:
    label = QLabel(parent)
    label.setTextFormat(Qt.TextFormat.PlainText)
    label.setWordWrap(wrap)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    if name:
        label.setObjectName(name)
    return label


def stats_text(stats: Stats | None, tokens: int = 0) -> str:
    if stats is None:
        return ""
    bits = []
    if stats.first_token_s is not None:
        bits.append(f"first token {stats.first_token_s:.2f} s")
    if stats.tokens_per_s:
        bits.append(f"{stats.tokens_per_s:.1f} tokens/s")
    bits.append(f"total {stats.wall_s:.1f} s")
    if stats.prompt_eval_count:
        bits.append(f"prompt {stats.prompt_eval_count:,} tokens")
    if stats.eval_count or tokens:
        bits.append(f"output {stats.eval_count or tokens:,} tokens")
    return " · ".join(bits)


class VerdictPanel(QFrame):
    rule_clicked = Signal(str)
    save_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("verdictPanel")
        self.badge = QLabel(self)
        self.badge.setObjectName("verdictBadge")
        self.badge.setTextFormat(Qt.TextFormat.PlainText)
        self.badge.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.badge.setMinimumSize(190, 64)
        self.badge.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
        self.category = plain_label(self, "verdictCategory")
        self.confidence = plain_label(self, "verdictConfidence")
        self.meta = plain_label(self, "verdictMeta")
        self.chips_box = QWidget(self)
        self.chips = QHBoxLayout(self.chips_box)
        self.chips.setContentsMargins(0, 0, 0, 0)
        self.chips.setSpacing(4)
        self.rationale = plain_label(self, "verdictRationale")
        self._rationale = ""  # the model's rationale; it may quote the content
        self._reveal: RevealState | None = None
        self._mask_rationale = False
        self.problem = plain_label(self, "verdictProblem")
        self.outcome_note = plain_label(self, "verdictOutcome")
        self.stale_note = plain_label(self, "verdictStale")
        self.stale_note.setText(STALE_NOTE)
        self.stale_note.hide()
        self.answer = plain_label(self, "verdictAnswer")
        self.answer.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.stats = plain_label(self, "verdictStats")
        self.save_button = QPushButton("Save again", self)
        self.save_button.setObjectName("saveAgainButton")
        self.save_button.setToolTip(
            "Store this review in the history now (free disk space first if it was full)"
        )
        self.save_button.clicked.connect(self.save_requested)

        head = QVBoxLayout()
        head.setSpacing(4)
        head.addWidget(self.category)
        head.addWidget(self.chips_box)
        head.addWidget(self.confidence)
        head.addWidget(self.meta)
        head.addStretch(1)
        top = QHBoxLayout()
        top.setSpacing(14)
        top.addWidget(self.badge)
        top.addLayout(head, 1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(12, 12, 12, 12)
        layout.setSpacing(8)
        layout.addLayout(top)
        layout.addWidget(self.rationale)
        layout.addWidget(self.outcome_note)
        layout.addWidget(self.stale_note)
        layout.addWidget(self.problem)
        save_row = QHBoxLayout()
        save_row.addWidget(self.save_button)
        save_row.addStretch(1)
        layout.addLayout(save_row)
        layout.addWidget(self.answer)
        layout.addWidget(self.stats)
        self.clear()

    # --- states ----------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        self.badge.setText(BADGE_TEXT[state])
        self.badge.setProperty("state", state)
        repolish(self.badge)

    @property
    def state(self) -> str:
        return str(self.badge.property("state") or "idle")

    def _reset_fields(self) -> None:
        for label in (
            self.category,
            self.confidence,
            self.meta,
            self.rationale,
            self.outcome_note,
            self.problem,
            self.answer,
            self.stats,
        ):
            label.clear()
            label.hide()
        self._rationale = ""
        self.set_stale(False)
        self.set_chips(())
        self.save_button.hide()

    def clear(self, hint: str = CLASSIFY_HINT) -> None:
        self._reset_fields()
        self._set_state("idle")
        self._show(self.meta, hint)

    def set_running(self, model: str, effort: str) -> None:
        self._reset_fields()
        self._set_state("running")
        self._show(self.meta, f"{model} · effort {effort}")

    def set_progress(self, tokens: int, seconds: float) -> None:
        self._show(self.stats, f"streaming · {tokens:,} tokens · {seconds:.1f} s")

    def set_verdict(
        self,
        verdict: Verdict,
        *,
        model: str,
        effort: str,
        mentioned: Sequence[str] = (),
        known: Sequence[str] = (),
        warnings: Sequence[str] | None = None,
    ) -> None:
        """Show a finished review; `mentioned` rule ids from the reasoning fill in for none.

        `warnings` (the review's, which include the verdict's problem) replace the problem.
        """
        self._reset_fields()
        self._set_state(verdict.label)
        if verdict.category:
            self._show(self.category, f"Category: {verdict.category}")
        ids = verdict.rule_ids or tuple(mentioned)
        self.set_chips(ids, known=known, cited=bool(verdict.rule_ids))
        if verdict.confidence:
            self._show(self.confidence, f"Confidence: {verdict.confidence}")
        self._show(self.meta, f"{model} · effort {effort}")
        if verdict.rationale:
            self._rationale = verdict.rationale
            self._show(self.rationale, self._rationale_text())
        notes = [verdict.problem] if warnings is None and verdict.problem else list(warnings or ())
        if notes:
            self._show(self.problem, "\n".join(notes))
        if verdict.label in ("unparsed", "incomplete") and verdict.raw:
            self._show(self.answer, f"Answer: {verdict.raw[:400]}")

    def set_failed(
        self, message: str, *, model: str = "", effort: str = "", warnings: Sequence[str] = ()
    ) -> None:
        self._reset_fields()
        self._set_state("failed")
        self._show(self.problem, "\n".join([message, *warnings]))
        if model:
            self._show(self.meta, f"{model} · effort {effort}")

    def set_cancelled(self, *, model: str = "", effort: str = "") -> None:
        self._reset_fields()
        self._set_state("cancelled")
        self._show(self.problem, "You cancelled the review; the partial reasoning is kept below.")
        if model:
            self._show(self.meta, f"{model} · effort {effort}")

    def offer_save(self) -> None:
        """The review is not in the history: show "Save again" (the notes say why)."""
        self.save_button.setText("Save again")
        self.save_button.setEnabled(True)
        self.save_button.show()

    def set_saving(self) -> None:
        self.save_button.setText("Saving…")
        self.save_button.setEnabled(False)

    def set_saved(self, review_id: int | None, notes: Sequence[str]) -> None:
        """Save again worked: drop the button, say where the review is now."""
        self.save_button.hide()
        self.set_notes(notes)
        if review_id is not None:
            self._show(self.meta, f"{self.meta.text()} · saved as review #{review_id}")

    def set_notes(self, notes: Sequence[str]) -> None:
        """Replace the sentences shown under the verdict (warnings, why it is not saved)."""
        if notes:
            self._show(self.problem, "\n".join(notes))
        else:
            self.problem.clear()
            self.problem.hide()

    def set_stats(self, stats: Stats | None, tokens: int = 0) -> None:
        text = stats_text(stats, tokens)
        if text:
            self._show(self.stats, text)

    def set_outcome(self, human: str | None, rule: str | None = None) -> None:
        """A moderator's override stands: the badge shows it (✎), the model's verdict is
        said beside it, with the rule the override names; None leaves the model's verdict
        as the outcome."""
        if human not in ("violation", "safe"):
            return
        model = self.state
        if human == model:
            return
        self._set_state(human)
        self.badge.setText(f"{BADGE_TEXT[human]} ✎")
        self._show(
            self.outcome_note,
            f"Moderator's outcome: {human.upper()}"
            + (f" under rule {rule}" if rule else "")
            + f" (override). The model said {BADGE_TEXT.get(model, model.upper())}.",
        )

    def set_stale(self, stale: bool) -> None:
        """The content changed after this verdict: say so, and dim the badge."""
        self.stale_note.setVisible(stale)
        if bool(self.badge.property("stale")) != stale:
            self.badge.setProperty("stale", stale)
            self.badge.setEnabled(not stale)
            repolish(self.badge)

    @property
    def stale(self) -> bool:
        return not self.stale_note.isHidden()

    # --- wellness ----------------------------------------------------------------------

    def set_masking(self, reveal: RevealState, enabled: bool) -> None:
        """While content is masked, the rationale (which may quote it) is hidden too."""
        if self._reveal is None:
            self._reveal = reveal
            reveal.changed.connect(self._reveal_changed)
        self._mask_rationale = enabled
        self._reveal_changed()

    def _rationale_text(self) -> str:
        hidden = self._mask_rationale and not (self._reveal and self._reveal.revealed)
        return MASKED_RATIONALE if hidden else self._rationale

    def _reveal_changed(self, *_args: object) -> None:
        if self._rationale and self.rationale.isVisibleTo(self):
            self.rationale.setText(self._rationale_text())

    # --- pieces ----------------------------------------------------------------------

    def _show(self, label: QLabel, text: str) -> None:
        label.setText(text)
        label.show()

    def chip_buttons(self) -> list[QToolButton]:
        return self.chips_box.findChildren(QToolButton)

    def set_chips(
        self, rule_ids: Sequence[str], *, known: Sequence[str] = (), cited: bool = True
    ) -> None:
        while self.chips.count():
            item = self.chips.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.setParent(None)
                widget.deleteLater()
        known_folded = {k.casefold() for k in known}
        for rule_id in rule_ids:
            chip = QToolButton(self.chips_box)
            chip.setObjectName("ruleChip")
            chip.setText(rule_id)
            chip.setProperty("cited", cited)
            chip.setCursor(Qt.CursorShape.PointingHandCursor)
            if known and rule_id.casefold() not in known_folded:
                tip = f"{rule_id} is not defined in this policy; click to look for its tier."
            else:
                tip = f"Show {rule_id} in the policy"
            if not cited:
                tip += " (mentioned in the reasoning; the answer cited no rule)"
            chip.setToolTip(rich_tooltip(tip))
            chip.clicked.connect(lambda _checked=False, r=rule_id: self.rule_clicked.emit(r))
            self.chips.addWidget(chip)
        self.chips.addStretch(1)
        self.chips_box.setVisible(bool(rule_ids))
