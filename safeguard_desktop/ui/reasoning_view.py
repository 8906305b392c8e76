"""The reasoning pane (streams live, then highlights) and the rendered-content pane.

Streaming appends batched deltas at the end with a QTextCursor: no re-render per token.
When the stream ends, `core.highlight` spans are applied as character formats: rule ids
underlined with the rule's text as tooltip, content quotes in the same colour in both
panes, decision phrases bold in red or green.
"""

from __future__ import annotations

from collections.abc import Sequence

from safeguard_desktop.core.highlight import Span
from safeguard_desktop.core.policy import Policy
from safeguard_desktop.qt import (
    QBrush,
    QColor,
    QFont,
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
        else:
            self._end.insertText(text, QTextCharFormat())
        if follow:
            bar.setValue(bar.maximum())

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
        self._buffer.flush()
        self._streaming = False
        streamed = self.streamed_text()
        full = streamed if reasoning is None else reasoning
        if full != streamed or "\r" in full:
            self.set_text(full)  # "\r" split across deltas would shift positions
        else:
            self._adopt(full)
        self.refresh_formats()
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
            self._adopt(self.streamed_text())
        cursor = QTextCursor(self.document())
        for start, end in quoted_ranges(self._text):
            self._cursor_for(start, end, cursor).setCharFormat(mask_format())

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
