"""The moderator's decision on a stored review: agree, override (label + reason), escalate, note.

The bar only collects input; the owner appends the decision and calls `show_error` (the
History's ValueError text) or `accepted`. What was typed stays until a decision succeeds.

Signals:
    submitted(str, object, str): action, label (or None) and note text.
"""

from __future__ import annotations

from safeguard_desktop.qt import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSizePolicy,
    Qt,
    QVBoxLayout,
    QWidget,
    Signal,
)
from safeguard_desktop.ui.message_bar import InlineMessage

OVERRIDE_LABELS = ("violation", "safe")


class DecisionBar(QWidget):
    submitted = Signal(str, object, str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("decisionBar")
        self.agree_button = QPushButton("&Agree", self)
        self.agree_button.setToolTip("The verdict is right (the note is optional)")
        self.escalate_button = QPushButton("E&scalate", self)
        self.escalate_button.setToolTip("Send this review to a senior moderator (note optional)")
        self.override_button = QPushButton("&Override", self)
        self.override_button.setToolTip("Replace the verdict by the chosen label; needs a reason")
        self.note_button = QPushButton("Add &note", self)
        self.note_button.setToolTip("Add the note to the audit trail without a decision")
        self.label_picker = QComboBox(self)
        self.label_picker.setObjectName("overrideLabel")
        self.label_picker.setPlaceholderText("label…")
        self.label_picker.addItems(OVERRIDE_LABELS)
        self.label_picker.setCurrentIndex(-1)
        self.label_picker.setToolTip("The label an override sets")
        self.rule_picker = QComboBox(self)
        self.rule_picker.setObjectName("overrideRule")
        self.rule_picker.setEditable(True)
        self.rule_picker.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        self.rule_picker.setMinimumContentsLength(6)
        self.rule_picker.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        if (editor := self.rule_picker.lineEdit()) is not None:
            editor.setPlaceholderText("rule…")
        self.rule_picker.setToolTip(
            "Optional: the policy rule or category the override applies (e.g. H2.f)"
        )
        self.note = QLineEdit(self)
        self.note.setObjectName("decisionNote")
        self.note.setPlaceholderText("Note or reason (an override needs one)")
        self.note.setClearButtonEnabled(True)
        self.message = InlineMessage(self)
        # The message keeps its room while hidden, and its text never resizes the pane:
        # the buttons and the note never move under a click (two lines of room).
        policy = self.message.sizePolicy()
        policy.setRetainSizeWhenHidden(True)
        policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
        self.message.setSizePolicy(policy)
        self.message.setFixedHeight(self.fontMetrics().lineSpacing() * 2 + 16)
        self._busy = False
        self._has_verdict = True

        title = self.title = QLabel("Decision", self)
        title.setObjectName("paneTitle")
        title.setTextFormat(Qt.TextFormat.PlainText)
        # A long title is cut, never widens the pane (which would move every button).
        title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        title.setMinimumWidth(title.fontMetrics().horizontalAdvance("Decision on review #0000"))
        buttons = QHBoxLayout()
        buttons.setSpacing(6)
        buttons.addWidget(title)
        buttons.addStretch(1)
        buttons.addWidget(self.agree_button)
        buttons.addWidget(self.escalate_button)
        buttons.addSpacing(12)
        buttons.addWidget(self.label_picker)
        buttons.addWidget(self.rule_picker)
        buttons.addWidget(self.override_button)
        note_row = QHBoxLayout()
        note_row.setSpacing(6)
        note_row.addWidget(self.note, 1)
        note_row.addWidget(self.note_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(buttons)
        layout.addLayout(note_row)
        layout.addWidget(self.message)

        self.agree_button.clicked.connect(lambda: self._submit("agree"))
        self.escalate_button.clicked.connect(lambda: self._submit("escalate"))
        self.override_button.clicked.connect(lambda: self._submit("override"))
        self.note_button.clicked.connect(lambda: self._submit("note"))
        self.note.returnPressed.connect(self._note_entered)

    # --- owner API ---------------------------------------------------------------------

    def label(self) -> str | None:
        text = self.label_picker.currentText()
        return text if self.label_picker.currentIndex() >= 0 and text else None

    def rule(self) -> str | None:
        """The rule or category typed or picked for an override, if any."""
        return self.rule_picker.currentText().strip() or None

    def set_rules(self, rule_ids: tuple[str, ...] | list[str]) -> None:
        """The rule ids of the review's policy, offered for an override (typing others is
        allowed); what was typed is kept."""
        typed = self.rule_picker.currentText()
        self.rule_picker.clear()
        self.rule_picker.addItems(list(rule_ids))
        self.rule_picker.setEditText(typed)

    def set_label(self, label: str | None) -> None:
        self.label_picker.setCurrentIndex(
            OVERRIDE_LABELS.index(label) if label in OVERRIDE_LABELS else -1
        )

    def set_target(self, name: str, *, has_verdict: bool = True) -> None:
        """Say which review the buttons act on; without a verdict only escalate and note."""
        self.title.setText(f"Decision on {name}")
        self._has_verdict = has_verdict
        self.set_busy(self._busy)

    def set_busy(self, busy: bool) -> None:
        self._busy = busy
        for button in self._buttons():
            needs_verdict = button in (self.agree_button, self.override_button)
            button.setEnabled(not busy and (self._has_verdict or not needs_verdict))
        self.label_picker.setEnabled(not busy and self._has_verdict)
        self.rule_picker.setEnabled(not busy and self._has_verdict)

    def show_error(self, text: str) -> None:
        """Keep what was typed; say what is missing."""
        self.set_busy(False)
        self.message.show_message(text, "error")

    def accepted(self, text: str = "") -> None:
        """The decision was recorded: clear the input and confirm briefly."""
        self.set_busy(False)
        self.note.clear()
        self.set_label(None)
        self.rule_picker.setEditText("")
        if text:
            self.message.show_message(text, "info")
        else:
            self.message.dismiss()

    def reset(self, draft: tuple[str, str | None] = ("", None)) -> None:
        """Another review is shown: show what was typed for that one (if anything)."""
        self.set_busy(False)
        self.note.setText(draft[0])
        self.set_label(draft[1])
        self.rule_picker.setEditText("")
        self.message.dismiss()

    def draft(self) -> tuple[str, str | None]:
        """What is typed but not yet recorded (note, override label)."""
        return self.note.text(), self.label()

    # --- internals ---------------------------------------------------------------------

    def _buttons(self) -> tuple[QPushButton, ...]:
        return (self.agree_button, self.escalate_button, self.override_button, self.note_button)

    def _note_entered(self) -> None:
        """Enter in the note: an override when a label is chosen, else a plain note."""
        self._submit("override" if self.label() else "note")

    def _submit(self, action: str) -> None:
        if self._busy:
            return
        label = self.label() if action == "override" else None
        self.note.setFocus(Qt.FocusReason.OtherFocusReason)  # typing goes to the note, never
        self.set_busy(True)  # to whatever widget would take the focus from a disabled button
        self.submitted.emit(action, label, self.note.text())
