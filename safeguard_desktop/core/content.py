"""Content under review: a message, a chat transcript, or a prompt + completion pair.

The model sees exactly ``Content.render()``; highlight offsets refer to that text, so it
must be deterministic. File importers (``parse_bytes``, ``import_file``) live in ``importers.py``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

Kind = Literal["message", "chat", "completion"]
KINDS: tuple[Kind, ...] = ("message", "chat", "completion")
MAX_BYTES = 2 * 1024 * 1024  # default size limit for one imported file

CHAT_HEADER = (
    "Chat transcript. Classify only the turn marked JUDGED TURN; the other turns are context."
)
JUDGED_MARK = "JUDGED TURN"


class ContentError(ValueError):
    """Input cannot be used; str() is one line saying what is wrong and what to do."""


@dataclass(frozen=True)
class Turn:
    """One turn of a chat; role is user/assistant/system or a speaker name from a transcript."""

    role: str
    content: str


@dataclass(frozen=True)
class Content:
    """One item to classify; only the fields of its kind are meaningful."""

    kind: Kind
    text: str = ""
    turns: tuple[Turn, ...] = ()
    judged: int | None = None
    prompt: str = ""
    completion: str = ""
    source: str | None = None
    ref: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ContentError(
                f"Unknown content kind {self.kind!r}; use one of {', '.join(KINDS)}."
            )
        if not isinstance(self.turns, tuple):
            # Callers often hand a list; keep the value hashable and immutable.
            object.__setattr__(self, "turns", tuple(self.turns))
        if self.kind == "chat":
            if not self.turns:
                raise ContentError("A chat needs at least one turn; add a line like 'user: ...'.")
            if self.judged is not None and not 0 <= self.judged < len(self.turns):
                raise ContentError(
                    f"Judged turn {self.judged} does not exist (the chat has "
                    f"{len(self.turns)} turns); pick a turn between 0 and {len(self.turns) - 1}."
                )

    @property
    def judged_index(self) -> int:
        """Index of the judged turn: ``judged`` or else the last turn."""
        return self.judged if self.judged is not None else len(self.turns) - 1

    def render(self) -> str:
        """The exact user message sent to the model and shown in the content pane."""
        if self.kind == "message":
            return self.text
        if self.kind == "completion":
            return f"Prompt:\n{self.prompt}\n\nCompletion (classify this):\n{self.completion}"
        blocks = [CHAT_HEADER]
        judged = self.judged_index
        for i, turn in enumerate(self.turns):
            mark = f" ({JUDGED_MARK})" if i == judged else ""
            blocks.append(f"[{i + 1}] {turn.role}{mark}:\n{turn.content}")
        return "\n\n".join(blocks)

    def preview(self, n: int = 80) -> str:
        """One-line short form for lists, at most ``n`` characters."""
        if self.kind == "message":
            line = self.text
        elif self.kind == "completion":
            line = f"(completion) {self.completion}"
        else:
            turn = self.turns[self.judged_index]
            line = f"(chat, {len(self.turns)} turns) {turn.role}: {turn.content}"
        line = " ".join(line.split())
        n = max(n, 1)
        return line if len(line) <= n else line[: n - 1].rstrip() + "…"

    def to_dict(self) -> dict[str, object]:
        """JSON-able form holding only the fields of this kind (inverse: content_from_dict)."""
        d: dict[str, object] = {"kind": self.kind}
        if self.kind == "message":
            d["text"] = self.text
        elif self.kind == "completion":
            d["prompt"] = self.prompt
            d["completion"] = self.completion
        else:
            d["turns"] = [{"role": t.role, "content": t.content} for t in self.turns]
            if self.judged is not None:
                d["judged"] = self.judged
        if self.source is not None:
            d["source"] = self.source
        if self.ref is not None:
            d["ref"] = self.ref
        return d


def content_from_dict(d: Mapping[str, object]) -> Content:
    """Rebuild a Content from ``to_dict`` output; ContentError on a malformed dict."""
    kind = d.get("kind")
    if kind not in KINDS:
        raise ContentError(f"Stored content has kind {kind!r}; expected one of {', '.join(KINDS)}.")

    def text_field(key: str) -> str:
        value = d.get(key, "")
        if not isinstance(value, str):
            raise ContentError(f"Stored content field {key!r} is not text; re-import the item.")
        return value

    def optional_text(key: str) -> str | None:
        value = d.get(key)
        if value is not None and not isinstance(value, str):
            raise ContentError(f"Stored content field {key!r} is not text; re-import the item.")
        return value

    judged = d.get("judged")
    if judged is not None and (not isinstance(judged, int) or isinstance(judged, bool)):
        raise ContentError("Stored content field 'judged' is not a number; re-import the item.")
    raw_turns = d.get("turns", [])
    if not isinstance(raw_turns, list):
        raise ContentError("Stored content field 'turns' is not a list; re-import the item.")
    turns: list[Turn] = []
    for t in raw_turns:
        if not (
            isinstance(t, Mapping)
            and isinstance(t.get("role"), str)
            and isinstance(t.get("content"), str)
        ):
            raise ContentError("A stored chat turn lacks role or content text; re-import the item.")
        turns.append(Turn(t["role"], t["content"]))
    return Content(
        kind=kind,
        text=text_field("text"),
        turns=tuple(turns),
        judged=judged,
        prompt=text_field("prompt"),
        completion=text_field("completion"),
        source=optional_text("source"),
        ref=optional_text("ref"),
    )


# --- text no file or database can hold ---------------------------------------------------

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_MAX_DIGITS = 4300  # Python's default limit on converting digits to an int


def visible_surrogates(text: str) -> str:
    """``text`` with each lone surrogate written as a visible ``\\udXXX`` escape."""
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def first_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate (a JSON escape such as ``\\ud800``, or an undecodable
    byte of a command-line argument): no UTF-8 file or database can hold it."""
    match = _SURROGATE.search(text)
    return match.start() if match else None


def check_unicode(item: Content, where: str) -> Content:
    """``item`` as is, or a ContentError naming the first field holding a lone surrogate."""
    fields: list[tuple[str, str | None]] = [
        ("text", item.text),
        ("prompt", item.prompt),
        ("completion", item.completion),
        ("id", item.ref),
    ]
    for number, turn in enumerate(item.turns, start=1):
        fields += [(f"message {number} role", turn.role), (f"message {number}", turn.content)]
    for field, value in fields:
        text = value or ""
        index = first_surrogate(text)
        if index is not None:
            char = visible_surrogates(text[index])
            raise ContentError(
                f"{where} holds an invalid character ({char}, a lone surrogate) in its {field}; "
                "fix or remove that escape and try again."
            )
    return item


def loads_json(text: str, where: str) -> object:
    """``json.loads`` where input too deep or a number too long to read is a one-line
    ContentError naming ``where``; a syntax error stays a ``json.JSONDecodeError``."""
    try:
        return json.loads(text, parse_int=_json_int)
    except RecursionError:
        raise ContentError(
            f"{where} nests lists or objects too deeply to read; keep the JSON to a few "
            'levels, like a list of {"text": ...} objects, or save the content as .txt.'
        ) from None
    except _NumberTooLong as exc:
        raise ContentError(
            f"{where} holds a number of {exc.digits:,} digits, too long to read (the limit is "
            f"{_MAX_DIGITS:,}); put it in quotes as text or remove it."
        ) from None


class _NumberTooLong(ValueError):
    def __init__(self, digits: int) -> None:
        super().__init__(digits)
        self.digits = digits


def _json_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > _MAX_DIGITS:
        raise _NumberTooLong(digits)
    return int(text)


# --- pasted text -------------------------------------------------------------------------

_ROLE_ALIASES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "bot": "assistant",
    "ai": "assistant",
    "model": "assistant",
    "chatbot": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "system": "system",
}

# "[12:01] alice: hi", "12:01 - Bob: ...", "**User:** hi", "Assistant:" (text on next lines).
_SPEAKER_LINE = re.compile(
    r"""^\s*
    (?P<stamp>[\[(][^\]()\n]{1,40}[\])]\s*[-–]?\s*
      |\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp][Mm])?\s*[-–]?\s+)?
    (?:\*\*|__)?
    (?P<name>[^\W\d_][\w.'@-]*(?:\ [\w.'@-]+){0,2}?)
    (?:\*\*|__)?\s*:(?:\*\*|__)?
    (?:\s+(?P<rest>.*?)|)\s*$""",
    re.VERBOSE,
)


def turns_from_messages(messages: object, where: str) -> tuple[Turn, ...]:
    """Turns from a JSON message list ``[{role, content}, ...]``; ``where`` names it in errors."""
    if not isinstance(messages, list) or not messages:
        raise ContentError(f"{where} has no messages; give a list of {{role, content}} objects.")
    turns = []
    for i, m in enumerate(messages, start=1):
        if not isinstance(m, Mapping) or not isinstance(m.get("role"), str):
            raise ContentError(f"{where}: message {i} has no 'role'; give each message a role.")
        turns.append(Turn(m["role"].strip(), _message_text(m.get("content"), where, i)))
    return tuple(turns)


def _message_text(value: object, where: str, i: int) -> str:
    """Message content as text: a string, null, or OpenAI-style ``[{type: text, text}]`` parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [
            p["text"] for p in value if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        ]
        if parts or not value:
            return "\n".join(parts)
    raise ContentError(f"{where}: message {i} content is not text; give it as a string.")


def judged_from(value: object, turns: Sequence[Turn], where: str) -> int | None:
    """Validate a ``judged`` field; negative values count from the end like Python indexes."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise ContentError(f"{where}: 'judged' must be a turn index (0 = first turn).")
    index = value + len(turns) if value < 0 else value
    if not 0 <= index < len(turns):
        raise ContentError(
            f"{where}: judged turn {value} does not exist (the chat has {len(turns)} turns); "
            f"use an index from 0 to {len(turns) - 1}."
        )
    return index


def _parse_transcript(text: str) -> tuple[Turn, ...]:
    """Split a pasted transcript at speaker lines; other lines continue the previous turn."""
    lines = text.split("\n")
    matches = [_SPEAKER_LINE.match(line) for line in lines]
    found = [m for m in matches if m]
    names = Counter(m.group("name").strip().lower() for m in found)
    has_stamps = any(m.group("stamp") for m in found)
    has_roles = any(n in _ROLE_ALIASES for n in names)

    def is_speaker(m: re.Match[str] | None) -> bool:
        # A stray "Note: ..." inside a turn must not split it: in a timestamped log only
        # stamped lines start turns; beside role labels an unknown label must recur.
        if m is None:
            return False
        name = m.group("name").strip().lower()
        if name in _ROLE_ALIASES:
            return True
        if has_stamps:
            return m.group("stamp") is not None
        return not has_roles or names[name] > 1

    if not any(is_speaker(m) for m in found):
        return ()
    turns: list[tuple[str, list[str]]] = []
    for number, (line, m) in enumerate(zip(lines, matches, strict=True), start=1):
        if m is not None and is_speaker(m):
            name = m.group("name").strip()
            role = _ROLE_ALIASES.get(name.lower(), name)
            turns.append((role, [m.group("rest") or ""]))
        elif turns:
            turns[-1][1].append(line)
        elif line.strip():
            raise ContentError(
                f"Line {number} comes before any speaker; start each turn with a line "
                "like 'user: ...' or 'assistant: ...'."
            )
    return tuple(Turn(role, "\n".join(body).strip("\n")) for role, body in turns)


def _chat_from_text(text: str) -> Content:
    stripped = text.strip()
    if stripped[:1] in "[{":
        try:
            value = loads_json(stripped, "The pasted JSON")
        except json.JSONDecodeError:
            value = None  # "[12:01] alice: hi" also starts with "["
        if isinstance(value, dict) and "messages" in value:
            turns = turns_from_messages(value["messages"], "The pasted JSON")
            judged = judged_from(value.get("judged"), turns, "The pasted JSON")
            return Content(kind="chat", turns=turns, judged=judged)
        if isinstance(value, list):
            return Content(kind="chat", turns=turns_from_messages(value, "The pasted JSON"))
    turns = _parse_transcript(text)
    if not turns:
        raise ContentError(
            "No chat turns found; start each turn with a speaker line like 'user: ...' "
            "or paste a JSON list of {role, content} messages."
        )
    if not turns[-1].content.strip():
        raise ContentError(
            f"The last turn ({turns[-1].role}) is empty; add its text, since it is the turn judged."
        )
    return Content(kind="chat", turns=turns)


_COMPLETION_LABELS = re.compile(
    r"^\s*(?:\*\*)?(?P<label>prompt|completion|response)(?:\*\*)?\s*:(?:\*\*)?[ \t]*",
    re.IGNORECASE | re.MULTILINE,
)


def _completion_from_text(text: str) -> Content:
    labels = {
        m.group("label").lower(): m for m in reversed(list(_COMPLETION_LABELS.finditer(text)))
    }
    answer = labels.get("completion") or labels.get("response")
    prompt_label = labels.get("prompt")
    if answer is not None and (prompt_label is None or prompt_label.start() < answer.start()):
        start = prompt_label.end() if prompt_label is not None else 0
        prompt, completion = text[start : answer.start()], text[answer.end() :]
    else:
        parts = re.split(r"^[ \t]*---+[ \t]*$", text, maxsplit=1, flags=re.MULTILINE)
        if len(parts) != 2:
            raise ContentError(
                "Cannot tell the prompt from the completion; put a line '---' between them "
                "or start them with 'Prompt:' and 'Completion:'."
            )
        prompt, completion = parts
        if prompt_label is not None:
            prompt = prompt[prompt_label.end() :]
    prompt, completion = prompt.strip(), completion.strip()
    if not completion:
        raise ContentError("The completion is empty; paste the model's answer after the prompt.")
    return Content(kind="completion", prompt=prompt, completion=completion)


def from_text(text: str, kind: Kind = "message") -> Content:
    """Content from pasted text: a message as is, a parsed chat, or a split prompt/completion."""
    if not text.strip():
        raise ContentError("The content is empty; paste or type the text to classify.")
    index = first_surrogate(text)
    if index is not None:
        raise ContentError(
            f"The content holds an invalid character ({visible_surrogates(text[index])}, a lone "
            f"surrogate) at character {index + 1}; remove it, or fix the escape that wrote it, "
            "and try again."
        )
    if kind == "message":
        return Content(kind="message", text=text)
    # Structure is parsed from lines, so a pasted "\r\n" must not leave "\r" in the turns.
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    if kind == "chat":
        return check_unicode(_chat_from_text(normalised), "The pasted JSON")
    if kind == "completion":
        return _completion_from_text(normalised)
    raise ContentError(f"Unknown content kind {kind!r}; use one of {', '.join(KINDS)}.")
