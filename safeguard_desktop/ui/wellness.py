"""Reviewer wellness: distressing content stays hidden until the moderator chooses to look.

One `RevealState` is shared by every pane; `MaskedArea` covers a widget with a blurred
veil and a note.
"""

from __future__ import annotations

import time

from safeguard_desktop import qt  # `qt.Qt` when used: the window frame imports this module
from safeguard_desktop.qt import (
    QEvent,
    QFrame,
    QGraphicsBlurEffect,
    QGridLayout,
    QLabel,
    QMouseEvent,
    QObject,
    QVBoxLayout,
    QWidget,
    Signal,
)

HOLD_SECONDS = 0.4
HIDDEN_NOTE = "Content hidden — click or hold Alt+R to reveal"


class RevealState(QObject):
    """Whether masked content is currently shown.

    Signals:
        changed(bool): revealed or hidden again.
    """

    changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._revealed = False
        self._pressed_at: float | None = None

    @property
    def revealed(self) -> bool:
        return self._revealed

    def set_revealed(self, value: bool) -> None:
        if value != self._revealed:
            self._revealed = value
            self.changed.emit(value)

    def reveal(self) -> None:
        self.set_revealed(True)

    def conceal(self) -> None:
        self.set_revealed(False)

    def key_pressed(self) -> None:
        """Alt+R went down: a tap toggles, holding reveals until the key is released."""
        if self._revealed:
            self._pressed_at = None
            self.conceal()
        else:
            self._pressed_at = time.monotonic()
            self.reveal()

    def key_released(self) -> None:
        if self._pressed_at is not None and time.monotonic() - self._pressed_at >= HOLD_SECONDS:
            self.conceal()
        self._pressed_at = None


class MaskedArea(QWidget):
    """Shows `child`; while masked, blurs it and lays a click-to-reveal note on top."""

    def __init__(self, child: QWidget, state: RevealState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.child = child
        self.state = state
        self._enabled = False
        self._has_content = False
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        grid.addWidget(child, 0, 0)
        self.cover = QFrame(self)
        self.cover.setObjectName("maskCover")
        self.cover.setCursor(qt.Qt.CursorShape.PointingHandCursor)
        inner = QVBoxLayout(self.cover)
        self.note = QLabel(HIDDEN_NOTE, self.cover)
        self.note.setObjectName("maskNote")
        self.note.setTextFormat(qt.Qt.TextFormat.PlainText)
        self.note.setAlignment(qt.Qt.AlignmentFlag.AlignCenter)
        inner.addStretch(1)
        inner.addWidget(self.note, 0, qt.Qt.AlignmentFlag.AlignCenter)
        inner.addStretch(1)
        grid.addWidget(self.cover, 0, 0)
        self.cover.installEventFilter(self)
        state.changed.connect(self._update)
        self._update()

    def set_mask_enabled(self, enabled: bool) -> None:
        self._enabled = enabled
        self._update()

    def set_has_content(self, has: bool) -> None:
        self._has_content = has
        self._update()

    @property
    def masked(self) -> bool:
        return self._enabled and self._has_content and not self.state.revealed

    def _update(self, *_args: object) -> None:
        masked = self.masked
        self.cover.setVisible(masked)
        if masked:
            if not isinstance(self.child.graphicsEffect(), QGraphicsBlurEffect):
                blur = QGraphicsBlurEffect(self.child)
                blur.setBlurRadius(18)
                self.child.setGraphicsEffect(blur)
        elif self.child.graphicsEffect() is not None:
            self.child.setGraphicsEffect(None)  # type: ignore[arg-type]

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if (
            watched is self.cover
            and isinstance(event, QMouseEvent)
            and event.type() == QEvent.Type.MouseButtonRelease
            and event.button() == qt.Qt.MouseButton.LeftButton
        ):
            self.state.reveal()
            return True
        return super().eventFilter(watched, event)
