"""The in-window message bar: info, warning or error, closable, never a modal."""

from __future__ import annotations

from safeguard_desktop.qt import (
    QFrame,
    QHBoxLayout,
    QLabel,
    Qt,
    QToolButton,
    QWidget,
)
from safeguard_desktop.ui.theme import repolish


class InlineMessage(QFrame):
    """A message bar inside the window: info, warning or error, closable, plain text only."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("messageBar")
        layout = QHBoxLayout(self)
        layout.setContentsMargins(10, 6, 6, 6)
        self.label = QLabel(self)
        self.label.setTextFormat(Qt.TextFormat.PlainText)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton(self)
        close.setText("✕")
        close.setToolTip("Dismiss")
        close.setAutoRaise(True)
        close.clicked.connect(self.dismiss)
        layout.addWidget(self.label, 1)
        layout.addWidget(close, 0, Qt.AlignmentFlag.AlignTop)
        self.hide()

    def show_message(self, text: str, level: str = "error") -> None:
        self.setProperty("level", level)
        repolish(self)
        self.label.setText(text)
        self.show()

    def dismiss(self) -> None:
        self.label.clear()
        self.hide()

    def text(self) -> str:
        return "" if self.isHidden() else self.label.text()

    @property
    def level(self) -> str:
        return str(self.property("level") or "")
