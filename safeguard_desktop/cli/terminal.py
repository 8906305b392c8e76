"""Untrusted text must never drive the terminal.

Content, reasoning, policy text and server messages can carry ANSI/OSC escape
sequences (clear the screen, set the title, write the clipboard). `main()` wraps
stdout and stderr in `SafeStream`, which shows every control character except
newline, tab and carriage return as a visible `\\xNN`; our own styling goes
through `styled()`, which is the only way an escape sequence reaches the terminal.
"""

from __future__ import annotations

import re
import sys
from typing import Any, TextIO

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def safe_terminal(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


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


def styled(code: str, text: str, stream: TextIO | None = None) -> None:
    """Write `text` (neutralised) inside one SGR style, e.g. code "2" for dim."""
    out = stream or sys.stdout
    raw = getattr(out, "write_raw", out.write)
    raw(f"\x1b[{code}m")
    out.write(text)
    raw("\x1b[0m")
