"""Map Python string offsets to QTextDocument positions and back.

Highlight spans are Python offsets (code points). A QTextDocument counts UTF-16 units
(an emoji is two) and turns "\\r\\n" into one paragraph separator, so offsets must be
translated before they select anything.
"""

from __future__ import annotations

import bisect


class PosMap:
    """Offsets of one text: `to_doc(i)` for Python index i, `from_doc(p)` the inverse."""

    def __init__(self, text: str) -> None:
        self.length = len(text)
        self._doc: list[int] | None = None
        if "\r" not in text and (not text or max(text) < "\U00010000"):
            return  # the common case: positions are offsets
        doc = [0] * (len(text) + 1)
        pos = 0
        for i, char in enumerate(text):
            doc[i] = pos
            if char == "\r" and text[i + 1 : i + 2] == "\n":
                continue  # "\r\n" is one separator in the document
            pos += 2 if char >= "\U00010000" else 1
        doc[len(text)] = pos
        self._doc = doc

    def to_doc(self, index: int) -> int:
        index = max(0, min(index, self.length))
        return index if self._doc is None else self._doc[index]

    def from_doc(self, pos: int) -> int:
        if self._doc is None:
            return max(0, min(pos, self.length))
        return min(bisect.bisect_left(self._doc, pos), self.length)
