"""Untrusted text must never drive the terminal.

Content, reasoning, policy text and server messages can carry ANSI/OSC escape
sequences (clear the screen, set the title, write the clipboard), bidi overrides
that show text in another order than it is stored, and bare carriage returns that
print over what came before. `main()` wraps stdout and stderr in `SafeStream`,
which shows every control character except newline, tab and the carriage return of
a CRLF as a visible `\\xNN`, each bidi control and lone surrogate as `\\uXXXX`; our
own styling goes through `styled()` and our own line redraw through `redrawing()`,
the only ways an escape sequence or a bare carriage return reaches the terminal.
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

# C0 and C1 controls but \t and \n; \r unless a \n follows it.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|\r(?!\n)")
# Bidi embeddings, overrides and isolates, the direction marks, and lone surrogates
# (which no terminal encoding can write).
_UNICODE = re.compile(r"[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe_terminal(text: str) -> str:
    return _UNICODE.sub(_escape, _CONTROL.sub(_escape, text))


class SafeStream:
    """A text stream proxy that neutralises control characters on write."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        return self.inner.write(safe_terminal(text))

    def write_raw(self, text: str) -> int:
        return self.inner.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Redrawing:
    """A stream for one line redrawn in place: a leading \\r is ours, the rest is neutralised."""

    def __init__(self, inner: TextIO) -> None:
        self.inner = inner

    def write(self, text: str) -> int:
        raw = getattr(self.inner, "write_raw", self.inner.write)
        rest = text.lstrip("\r")
        count = raw("\r") if len(rest) < len(text) else 0
        return count + self.inner.write(safe_terminal(rest))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def redrawing(stream: TextIO | None = None) -> TextIO:
    """`stream` (default stdout) for a progress line that returns to its start with \\r."""
    return _Redrawing(stream or sys.stdout)  # type: ignore[return-value]


def styled(code: str, text: str, stream: TextIO | None = None) -> None:
    """Write `text` (neutralised) inside one SGR style, e.g. code "2" for dim."""
    out = stream or sys.stdout
    raw = getattr(out, "write_raw", out.write)
    raw(f"\x1b[{code}m")
    out.write(text)
    raw("\x1b[0m")
