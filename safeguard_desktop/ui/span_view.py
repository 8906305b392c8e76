"""A read-only plain-text pane with formatted, clickable spans.

Untrusted text (content, reasoning) only ever enters through `setPlainText`/`insertText`,
so markup in it is shown literally. Spans are Python offsets; `PosMap` translates them.

Signals:
    span_clicked(Span): a click (not a drag) landed on a span.
"""

from __future__ import annotations

import bisect
import html
from collections.abc import Callable, Sequence

from safeguard_desktop.core.highlight import Span
from safeguard_desktop.qt import (
    QEvent,
    QMouseEvent,
    QPlainTextEdit,
    QPoint,
    QRect,
    Qt,
    QTextCharFormat,
    QTextCursor,
    QToolTip,
    QWidget,
    Signal,
)
from safeguard_desktop.ui.textpos import PosMap

FormatFor = Callable[[Span], QTextCharFormat | None]
TooltipFor = Callable[[Span], str | None]


def rich_tooltip(text: str) -> str:
    """Tooltips are rich text when they look like markup: escape and force rich text."""
    return "<p style='white-space:pre-wrap'>" + html.escape(text) + "</p>"


class SpanTextView(QPlainTextEdit):
    span_clicked = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self.setUndoRedoEnabled(False)
        self.setTextInteractionFlags(
            Qt.TextInteractionFlag.TextSelectableByMouse
            | Qt.TextInteractionFlag.TextSelectableByKeyboard
        )
        self.viewport().setMouseTracking(True)
        self._text = ""
        self._map = PosMap("")
        self._spans: list[Span] = []
        self._starts: list[int] = []
        self._format_for: FormatFor = lambda _span: None
        self._tooltip_for: TooltipFor = lambda _span: None
        self._formatted = False  # some character has a format other than the plain one
        self._press: QPoint | None = None

    # --- text ------------------------------------------------------------------------

    def set_text(self, text: str) -> None:
        self._text = text
        self._map = PosMap(text)
        self._spans, self._starts = [], []
        self.setPlainText(text)
        self._formatted = False

    def text(self) -> str:
        return self._text

    def _adopt(self, text: str) -> None:
        """The document already shows `text` (streamed in): adopt it as the pane's text."""
        self._text = text
        self._map = PosMap(text)

    # --- spans -----------------------------------------------------------------------

    def set_spans(
        self, spans: Sequence[Span], format_for: FormatFor, tooltip_for: TooltipFor | None = None
    ) -> None:
        self._use_spans(spans, format_for, tooltip_for)
        self.refresh_formats()

    def _use_spans(
        self, spans: Sequence[Span], format_for: FormatFor, tooltip_for: TooltipFor | None
    ) -> None:
        """Take the spans and how to show them; the caller applies the formats."""
        self._spans = sorted(spans, key=lambda s: s.start)
        self._starts = [s.start for s in self._spans]
        self._format_for = format_for
        self._tooltip_for = tooltip_for or (lambda _span: None)

    def tooltip_for(self, span: Span) -> str | None:
        """The plain text shown when hovering `span`."""
        return self._tooltip_for(span)

    def spans(self) -> list[Span]:
        return list(self._spans)

    def refresh_formats(self) -> None:
        """Reset every character to the plain format, then format each span (one edit: the
        paragraphs touched are laid out once)."""
        cursor = QTextCursor(self.document())
        cursor.beginEditBlock()
        self._apply_formats(cursor)
        cursor.endEditBlock()

    def _apply_formats(self, cursor: QTextCursor) -> None:
        """Inside the caller's edit block: the reset only when something is formatted (it
        touches every paragraph), then each span's format."""
        if self._formatted:
            cursor.select(QTextCursor.SelectionType.Document)
            cursor.setCharFormat(QTextCharFormat())
            self._formatted = False
        for span in self._spans:
            fmt = self._format_for(span)
            if fmt is None:
                continue
            self._cursor_for(span.start, span.end, cursor)
            cursor.setCharFormat(fmt)
            self._formatted = True

    def _cursor_for(self, start: int, end: int, cursor: QTextCursor | None = None) -> QTextCursor:
        cursor = cursor or QTextCursor(self.document())
        last = self.document().characterCount() - 1
        cursor.setPosition(min(self._map.to_doc(start), last))
        cursor.setPosition(min(self._map.to_doc(end), last), QTextCursor.MoveMode.KeepAnchor)
        return cursor

    def span_at_offset(self, index: int) -> Span | None:
        i = bisect.bisect_right(self._starts, index) - 1
        if i >= 0 and self._spans[i].start <= index < self._spans[i].end:
            return self._spans[i]
        return None

    def offset_at(self, point: QPoint) -> int | None:
        """Python offset of the character under a viewport point."""
        if not self._text:
            return None
        cursor = self.cursorForPosition(point)
        pos = cursor.position()
        if point.x() < self.cursorRect(cursor).x() and pos > 0:
            pos -= 1  # the point lies on the character left of the caret position
        return self._map.from_doc(pos)

    def span_at(self, point: QPoint) -> Span | None:
        index = self.offset_at(point)
        return None if index is None else self.span_at_offset(index)

    def span_rect(self, span: Span) -> QRect:
        """Viewport rectangle around the middle of a span (used to click it)."""
        cursor = QTextCursor(self.document())
        middle = (self._map.to_doc(span.start) + self._map.to_doc(span.end)) // 2
        cursor.setPosition(middle)
        return self.cursorRect(cursor)

    def select_range(self, start: int, end: int) -> None:
        """Select `[start, end)` and scroll it into the middle of the view."""
        self.setTextCursor(self._cursor_for(start, end))
        self.centerCursor()

    def selected_text(self) -> str:
        """The selection as plain text ("\\u2029" paragraph separators become newlines)."""
        return self.textCursor().selectedText().replace("\u2029", "\n")

    # --- mouse -----------------------------------------------------------------------

    def mousePressEvent(self, event: QMouseEvent) -> None:
        self._press = event.position().toPoint()
        super().mousePressEvent(event)

    def mouseReleaseEvent(self, event: QMouseEvent) -> None:
        super().mouseReleaseEvent(event)
        point = event.position().toPoint()
        press, self._press = self._press, None
        if event.button() != Qt.MouseButton.LeftButton or press is None:
            return
        if (point - press).manhattanLength() > 4 or self.textCursor().hasSelection():
            return  # a drag selects text; only a click follows a link
        span = self.span_at(point)
        if span is not None:
            self.span_clicked.emit(span)

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        super().mouseMoveEvent(event)
        over = self.span_at(event.position().toPoint()) is not None
        shape = Qt.CursorShape.PointingHandCursor if over else Qt.CursorShape.IBeamCursor
        self.viewport().setCursor(shape)

    def viewportEvent(self, event: QEvent) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            point = event.pos()  # type: ignore[attr-defined]
            span = self.span_at(point)
            tip = self._tooltip_for(span) if span is not None else None
            if tip:
                QToolTip.showText(event.globalPos(), rich_tooltip(tip), self.viewport())  # type: ignore[attr-defined]
            else:
                QToolTip.hideText()
                event.ignore()
            return True
        return super().viewportEvent(event)
