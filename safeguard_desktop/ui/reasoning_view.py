"""The reasoning pane (streams live, then highlights) and the rendered-content pane.

Streaming appends batched deltas at the end with a QTextCursor: no re-render per token.
Qt lays a paragraph out again whole on every insert into it (5 ms at 17,000 characters), and
the model writes long paragraphs, so while streaming a long paragraph is cut, invisibly, at
the start of its last wrapped line: the lines above keep exactly their place, and each
insert lays out one short piece. The cuts are joined again when the stream ends and
whenever the width changes. When the stream ends, `core.highlight` spans are applied as
character formats in the same document edit: rule ids underlined with the rule's text as
tooltip, content quotes in the same colour in both panes, decision phrases bold in red or
green.
"""

from __future__ import annotations

import bisect
import html
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from safeguard_desktop.core.highlight import Span
from safeguard_desktop.core.policy import Policy
from safeguard_desktop.qt import (
    QBrush,
    QColor,
    QEvent,
    QFont,
    QMimeData,
    QResizeEvent,
    QTextCharFormat,
    QTextCursor,
    QWidget,
)
from safeguard_desktop.ui.async_utils import DeltaBuffer
from safeguard_desktop.ui.span_view import SpanTextView
from safeguard_desktop.ui.theme import scheme
from safeguard_desktop.ui.wellness import RevealState

QUOTE_HIDDEN_TIP = "Quote hidden — click or hold Alt+R to reveal"
_OPEN_QUOTES = ('"', "“")
_CLOSE_QUOTES = ('"', "”")
# A streamed paragraph longer than this (characters) is laid out in pieces, one per cut at
# the start of its last wrapped line; each insert then lays out at most about this much.
PIECE_CHARS = 1500


def quote_format(group: int) -> QTextCharFormat:
    fmt = QTextCharFormat()
    colours = scheme().quotes
    fmt.setBackground(QBrush(QColor(colours[group % len(colours)])))
    return fmt


def mask_format() -> QTextCharFormat:
    """Text drawn in its own background colour: a solid block that hides the words."""
    fmt = QTextCharFormat()
    colour = QColor(scheme().mask)
    fmt.setBackground(QBrush(colour))
    fmt.setForeground(QBrush(colour))
    return fmt


def quoted_ranges(text: str) -> list[tuple[int, int]]:
    """Ranges between quote marks on one line (what live masking hides)."""
    ranges: list[tuple[int, int]] = []
    start: int | None = None
    for i, char in enumerate(text):
        if start is not None and (char in _CLOSE_QUOTES or char == "\n"):
            ranges.append((start, i))
            start = None
        elif start is None and char in _OPEN_QUOTES:
            start = i + 1
    if start is not None:
        ranges.append((start, len(text)))
    return [(a, b) for a, b in ranges if b > a]


class ReasoningView(SpanTextView):
    """Live reasoning; `begin`, `append` (any rate), `finish`, then `apply_highlights`."""

    def __init__(self, reveal: RevealState, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.reveal = reveal
        self.setPlaceholderText("The model's reasoning appears here as it streams.")
        self._buffer = DeltaBuffer(self._insert, 40, self)
        self._parts: list[str] = []
        self._mask_quotes = False
        self._in_quote = False
        self._streaming = False
        self._policy: Policy | None = None
        self._end = QTextCursor(self.document())
        self._cuts: list[int] = []  # document positions of the block breaks added (ascending)
        self._cut_width = 0  # the viewport width the cuts were made at
        reveal.changed.connect(lambda _revealed: self.refresh_formats())

    def set_mask_quotes(self, on: bool) -> None:
        self._mask_quotes = on
        self.refresh_formats()

    @property
    def masking(self) -> bool:
        return self._mask_quotes and not self.reveal.revealed

    # --- streaming -------------------------------------------------------------------

    def begin(self) -> None:
        self._buffer.discard()
        self._parts.clear()
        self._in_quote = False
        self._cuts.clear()
        self.set_text("")
        self._end = QTextCursor(self.document())
        self._streaming = True

    def append(self, text: str) -> None:
        """Queue a delta; it reaches the document with the next batch (about 40 ms)."""
        self._parts.append(text)
        self._buffer.push(text)

    def streamed_text(self) -> str:
        return "".join(self._parts)

    def _insert(self, text: str) -> None:
        bar = self.verticalScrollBar()
        follow = bar.value() >= bar.maximum() - 2
        self._end.movePosition(QTextCursor.MoveOperation.End)
        if self.masking:
            for segment, hidden in self._segments(text):
                self._end.insertText(segment, mask_format() if hidden else QTextCharFormat())
                self._formatted = self._formatted or hidden
        else:
            self._end.insertText(text, QTextCharFormat())
        if self._streaming:
            self._cut_long_paragraph()
        if follow:
            bar.setValue(bar.maximum())

    def _cut_long_paragraph(self) -> None:
        """Cut the last paragraph at the start of its last wrapped line once it is long.

        Qt wraps greedily, so the text before that line wraps the same whether or not more
        follows, and the piece after the cut starts a line where one started anyway: the
        cut does not show. Made at one width; `_check_width` joins them when it changes.
        """
        self._check_width()
        block = self.document().lastBlock()
        if block.length() < PIECE_CHARS:
            return
        layout = block.layout()
        lines = layout.lineCount() if layout is not None else 0
        start = layout.lineAt(lines - 1).textStart() if lines > 1 else 0
        if start <= 0:
            return
        at = block.position() + start
        cursor = QTextCursor(self.document())
        cursor.setPosition(at)
        fmt = cursor.blockFormat()
        fmt.setLayoutDirection(block.textDirection())  # a piece keeps its paragraph's direction
        cursor.insertBlock(fmt)
        self._cuts.append(at)
        self._cut_width = self.viewport().width()

    def _join_cuts(self) -> None:
        """Remove the block breaks `_cut_long_paragraph` added: the text is exact again."""
        if not self._cuts:
            return
        with self._same_view():
            cursor = QTextCursor(self.document())
            cursor.beginEditBlock()
            self._remove_cuts(cursor)
            cursor.endEditBlock()

    @contextmanager
    def _same_view(self) -> Iterator[None]:
        """Keep the line the moderator reads at the top (the view follows blocks, and the
        join removes some), or the end in view when it was."""
        bar = self.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        block = self.document().findBlockByLineNumber(bar.value())  # the view's top line
        layout = block.layout()
        top = block.position()
        if layout is not None and layout.lineCount():
            index = min(bar.value() - block.firstLineNumber(), layout.lineCount() - 1)
            top += layout.lineAt(max(0, index)).textStart()
        top -= bisect.bisect_left(self._cuts, top)  # the cuts before it go
        yield
        if at_end:
            bar.setValue(bar.maximum())
            return
        block = self.document().findBlock(top)
        layout = block.layout()
        line = 0
        if layout is not None and layout.lineCount():
            line = max(0, layout.lineForTextPosition(top - block.position()).lineNumber())
        bar.setValue(block.firstLineNumber() + line)

    def _remove_cuts(self, cursor: QTextCursor) -> None:
        for at in reversed(self._cuts):  # later positions first: earlier ones stay valid
            cursor.setPosition(at)
            cursor.deleteChar()
        self._cuts.clear()

    def createMimeDataFromSelection(self) -> QMimeData:
        """Copied text is the model's text: the invisible cuts of a streaming paragraph are
        not line breaks of it."""
        mime = super().createMimeDataFromSelection()
        cursor = self.textCursor()
        start, end = cursor.selectionStart(), cursor.selectionEnd()
        inside = [at - start for at in self._cuts if start <= at < end]
        if not inside:
            return mime
        text = self.document().toPlainText()[start:end]  # one character per position
        for at in reversed(inside):
            text = text[:at] + text[at + 1 :]
        # Qt's own object, changed in place: a QMimeData made here would be Python's, and the
        # clipboard that also owns it would free it twice at exit. Reading it first makes
        # Qt fill it now (it fills it lazily), so nothing overwrites the text set next.
        mime.text()
        mime.setText(text)
        if mime.hasHtml():
            mime.setHtml(f"<p>{html.escape(text)}</p>")  # the text only, as the model wrote it
        for other in mime.formats():
            if other not in ("text/plain", "text/html"):
                mime.removeFormat(other)
        return mime

    def resizeEvent(self, event: QResizeEvent) -> None:
        """A pane that grows shorter (the verdict takes its place above it) keeps the end in
        view when it was: the last line, with the decision, is not cut off."""
        bar = self.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        super().resizeEvent(event)
        if at_end and event.size().height() < event.oldSize().height():
            bar.setValue(bar.maximum())

    def viewportEvent(self, event: QEvent) -> bool:
        handled = super().viewportEvent(event)
        if event.type() == QEvent.Type.Resize:
            self._check_width()
        return handled

    def changeEvent(self, event: QEvent) -> None:
        super().changeEvent(event)
        if event.type() == QEvent.Type.FontChange:
            self._join_cuts()  # another font wraps elsewhere

    def _check_width(self) -> None:
        """Lines wrap elsewhere at another width: the cuts would show, so join them."""
        if self._cuts and self.viewport().width() != self._cut_width:
            self._join_cuts()

    def _segments(self, text: str) -> list[tuple[str, bool]]:
        """Split at quote marks so text between them is inserted hidden while streaming."""
        out: list[tuple[str, bool]] = []
        start = 0
        for i, char in enumerate(text):
            if self._in_quote and (char in _CLOSE_QUOTES or char == "\n"):
                out.append((text[start:i], True))
                start = i
                self._in_quote = False
            elif not self._in_quote and char in _OPEN_QUOTES:
                out.append((text[start : i + 1], False))
                start = i + 1
                self._in_quote = True
        out.append((text[start:], self._in_quote))
        return [(s, hidden) for s, hidden in out if s]

    def finish(self, reasoning: str | None = None) -> str:
        """End the stream; `reasoning` (the full text) replaces what was streamed if it differs."""
        full = self._end_stream(reasoning)
        self.refresh_formats()
        return full

    def finish_with_highlights(
        self, reasoning: str | None, spans: Sequence[Span], policy: Policy | None
    ) -> str:
        """`finish` then `apply_highlights` in one document edit: a long paragraph is laid
        out once, not once for the join, once for the format reset and once for the spans."""
        full = self._end_stream(reasoning, join=False)
        self._policy = policy
        self._use_spans(spans, self._format, self._tooltip)
        with self._same_view():
            cursor = QTextCursor(self.document())
            cursor.beginEditBlock()
            self._remove_cuts(cursor)
            self._apply_formats(cursor)
            cursor.endEditBlock()
        return full

    def _end_stream(self, reasoning: str | None, *, join: bool = True) -> str:
        """The last batch in, streaming off; the final text shown (cuts joined if `join`)."""
        self._streaming = False  # the last batch goes in uncut
        self._buffer.flush()
        streamed = self.streamed_text()
        full = streamed if reasoning is None else reasoning
        if full != streamed or "\r" in full:
            self._cuts.clear()
            self.set_text(full)  # "\r" split across deltas would shift positions
        else:
            if join:
                self._join_cuts()
            self._adopt(full)
        return full

    # --- highlights ------------------------------------------------------------------

    def apply_highlights(self, spans: Sequence[Span], policy: Policy | None) -> None:
        self._policy = policy
        self.set_spans(spans, self._format, self._tooltip)

    def is_masked(self, span: Span) -> bool:
        return span.kind == "quote" and self.masking

    def _format(self, span: Span) -> QTextCharFormat | None:
        colours = scheme()
        if span.kind == "quote":
            return mask_format() if self.masking else quote_format(span.group)
        fmt = QTextCharFormat()
        if span.kind == "rule":
            fmt.setFontUnderline(True)
            fmt.setFontWeight(QFont.Weight.DemiBold)
            fmt.setForeground(QBrush(QColor(colours.rule)))
            return fmt
        fmt.setFontWeight(QFont.Weight.Bold)
        colour = colours.complies if span.key == "does_not_violate" else colours.violates
        fmt.setForeground(QBrush(QColor(colour)))
        return fmt

    def _tooltip(self, span: Span) -> str | None:
        if span.kind == "quote":
            if self.masking:
                return QUOTE_HIDDEN_TIP
            return "Quoted from the content — click to find it there"
        if span.kind == "rule":
            rule = self._policy.rule(span.key) if self._policy is not None else None
            if rule is None:
                return f"{span.key}: not defined in this policy"
            where = f" ({rule.section})" if rule.section else ""
            return f"{rule.id}{where}\n{rule.text}\nClick to show it in the policy."
        if span.key == "does_not_violate":
            return "Decision phrase: does not violate"
        return "Decision phrase: violates"

    def refresh_formats(self) -> None:
        super().refresh_formats()
        if self._spans or not self.masking:
            return
        # Before highlights exist (streaming), hide everything between quote marks.
        if self._streaming:
            self._buffer.flush()
            self._join_cuts()  # the positions below count no cuts
            self._adopt(self.streamed_text())
        cursor = QTextCursor(self.document())
        cursor.beginEditBlock()
        for start, end in quoted_ranges(self._text):
            self._cursor_for(start, end, cursor).setCharFormat(mask_format())
            self._formatted = True
        cursor.endEditBlock()

    def first_quote(self, group: int) -> Span | None:
        return next((s for s in self._spans if s.kind == "quote" and s.group == group), None)


class ContentPane(SpanTextView):
    """Exactly `Content.render()`, read-only: highlight offsets refer to this text."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setPlaceholderText("The content as the model saw it appears here.")

    def show_content(self, text: str) -> None:
        self.set_text(text)

    def apply_highlights(self, spans: Sequence[Span]) -> None:
        self.set_spans(
            spans,
            lambda span: quote_format(span.group),
            lambda _span: "Quoted in the reasoning — click to find it there",
        )

    def occurrences(self, group: int) -> list[Span]:
        return [s for s in self._spans if s.group == group]
