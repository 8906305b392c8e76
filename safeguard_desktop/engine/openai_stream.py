"""Reading an OpenAI-compatible chat stream: server-sent events, reasoning fields, harmony.

Pure (no I/O), so each piece is tested on its own:

- `SSEDecoder` turns the lines of a `text/event-stream` body into events (`data:` lines joined,
  a blank line ends an event, `:` comments ignored). llama-server has also sent failures as an
  `error: {json}` line; that becomes an event named "error".
- `delta_texts` reads one chunk's reasoning and answer text: the reasoning from
  `delta.reasoning` (current vLLM, which renamed the field), else `delta.reasoning_content`
  (older vLLM, llama-server with `--reasoning-format`); vLLM sent both with the same text
  while it moved, so only one of them is read.
- `HarmonySplitter` splits gpt-oss "harmony" text that leaks into `content` when the server
  runs without a reasoning parser: `<|channel|>analysis<|message|>…<|end|><|start|>assistant
  <|channel|>final<|message|>…` (the special tokens kept), or `analysis…assistantfinal…` (a
  server that drops special tokens from the text). Markers cut across chunks are held back
  until the next chunk says what they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["thinking", "answer"]
Piece = tuple[Kind, str]

# -- server-sent events ---------------------------------------------------------------------
DONE = "[DONE]"


@dataclass(frozen=True)
class SSEEvent:
    event: str  # "message" unless the server named it
    data: str


class SSEDecoder:
    """Feed it the body's lines (without their line ends), one at a time."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""

    def feed(self, line: str) -> SSEEvent | None:
        """The event this line completes, if any."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):  # a comment (keep-alive)
            return None
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "error":  # llama-server's own spelling of a failure
            self._event = "error"
            self._data.append(value)
        # id and retry mean nothing for a one-shot request; other names are ignored (spec)
        return None

    def close(self) -> SSEEvent | None:
        """The stream ended: an event still missing its blank line is dispatched."""
        return self._dispatch()

    def _dispatch(self) -> SSEEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = SSEEvent(self._event or "message", "\n".join(self._data))
        self._data, self._event = [], ""
        return event


# -- one chunk ------------------------------------------------------------------------------
REASONING_FIELDS = ("reasoning", "reasoning_content")


@dataclass(frozen=True)
class ChunkParts:
    reasoning: str
    content: str
    finish_reason: str | None


def delta_texts(chunk: Mapping[str, Any]) -> ChunkParts:
    """Reasoning, content and finish reason of the first choice (empty when absent)."""
    choices = chunk.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(first, Mapping):
        return ChunkParts("", "", None)
    delta = first.get("delta")
    if not isinstance(delta, Mapping):
        delta = first.get("message")  # a server answering a stream with whole messages
    reasoning = content = ""
    if isinstance(delta, Mapping):
        for name in REASONING_FIELDS:
            value = delta.get(name)
            if isinstance(value, str) and value:
                reasoning = value
                break
        value = delta.get("content")
        content = value if isinstance(value, str) else ""
    finish = first.get("finish_reason")
    return ChunkParts(reasoning, content, finish if isinstance(finish, str) and finish else None)


# -- harmony ----------------------------------------------------------------------------------
CHANNEL, MESSAGE, START = "<|channel|>", "<|message|>", "<|start|>"
ENDS = ("<|end|>", "<|return|>", "<|call|>")
MARKERS = (CHANNEL, MESSAGE, START, *ENDS)
BARE_ANALYSIS, BARE_FINAL = "analysis", "assistantfinal"
REASONING_CHANNELS = frozenset({"analysis", "commentary"})
Mode = Literal["body", "header", "role", "outside", "undecided", "bare"]


def _held_back(text: str, markers: tuple[str, ...]) -> int:
    """Where a suffix of `text` that may be the start of a marker begins (len(text): none)."""
    longest = max(len(m) for m in markers)
    for start in range(max(0, len(text) - longest + 1), len(text)):
        tail = text[start:]
        if any(m.startswith(tail) for m in markers):
            return start
    return len(text)


class HarmonySplitter:
    """Content text in, (kind, text) pieces out; plain answers pass through untouched."""

    def __init__(self) -> None:
        self._mode: Mode = "undecided"
        self._channel = "final"
        self._header = ""
        self._buffer = ""
        self.seen_harmony = False

    def feed(self, text: str) -> list[Piece]:
        self._buffer += text
        return self._drain(final=False)

    def close(self) -> list[Piece]:
        """The content ended: what was held back is text after all."""
        return self._drain(final=True)

    def _drain(self, *, final: bool) -> list[Piece]:
        out: list[Piece] = []
        while self._buffer:
            if self._mode == "undecided":
                if not self._decide(final):
                    break
                continue
            if self._mode == "bare":
                if not self._bare(out, final):
                    break
                continue
            index, marker = self._next_marker()
            if marker is None:
                keep = len(self._buffer) if final else _held_back(self._buffer, MARKERS)
                self._text(out, self._buffer[:keep])
                self._buffer = self._buffer[keep:]
                break
            self._text(out, self._buffer[:index])
            self._buffer = self._buffer[index + len(marker) :]
            self._marker(marker)
        return _merged(out)

    def _decide(self, final: bool) -> bool:
        """Bare harmony ("analysis…assistantfinal…") or not, from the first characters."""
        stripped = self._buffer.lstrip()
        if stripped.startswith(BARE_ANALYSIS):
            self._mode = "bare"
            self.seen_harmony = True
            self._buffer = stripped[len(BARE_ANALYSIS) :]
            return True
        if not final and BARE_ANALYSIS.startswith(stripped):
            return False  # wait for more
        self._mode = "body"
        return True

    def _bare(self, out: list[Piece], final: bool) -> bool:
        index = self._buffer.find(BARE_FINAL)
        if index < 0:
            keep = len(self._buffer) if final else _held_back(self._buffer, (BARE_FINAL,))
            out.append(("thinking", self._buffer[:keep]))
            self._buffer = self._buffer[keep:]
            return False
        out.append(("thinking", self._buffer[:index]))
        self._buffer = self._buffer[index + len(BARE_FINAL) :]
        self._mode, self._channel = "body", "final"
        return True

    def _next_marker(self) -> tuple[int, str | None]:
        found = [(i, m) for m in MARKERS if (i := self._buffer.find(m)) >= 0]
        if not found:
            return -1, None
        index, marker = min(found)
        return index, marker

    def _text(self, out: list[Piece], text: str) -> None:
        if not text:
            return
        if self._mode == "header":
            self._header += text
        elif self._mode == "body":
            kind: Kind = "thinking" if self._channel in REASONING_CHANNELS else "answer"
            out.append((kind, text))
        # role names and text outside messages are not part of either

    def _marker(self, marker: str) -> None:
        self.seen_harmony = True
        if marker == CHANNEL:
            self._mode, self._header = "header", ""
        elif marker == MESSAGE:
            if self._mode == "header":
                # "analysis", "final", "final <|constrain|>json", "commentary to=functions.x"
                words = self._header.replace("<|constrain|>", " ").split()
                self._channel = words[0] if words else "final"
            elif self._mode == "role":
                self._channel = "final"
            self._mode = "body"
        elif marker == START:
            self._mode = "role"
        else:  # end, return, call
            self._mode = "outside"


def _merged(pieces: list[Piece]) -> list[Piece]:
    out: list[Piece] = []
    for kind, text in pieces:
        if not text:
            continue
        if out and out[-1][0] == kind:
            out[-1] = (kind, out[-1][1] + text)
        else:
            out.append((kind, text))
    return out
