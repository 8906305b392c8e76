"""Deterministic stand-in for gpt-oss-safeguard: a verdict derived from policy and content.

The reply is a pure function of the request so tests can predict it: the reasoning cites a
real rule id of the policy and quotes the content exactly, like the model does, which is
what the highlighting and verdict parsing code needs to be exercised end to end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

RULE_ID = re.compile(r"\b[A-Z]{1,4}(\d+)(?:\.[a-z0-9]+)?\b")
TRIGGERS = (
    "ignore previous instructions",
    "click here",
    "buy now",
    "address is",
    "password",
    "worthless",
    "idiot",
    "scam",
    "kill",
    "hate",
)
_TOKEN = re.compile(r"\s*\S{1,4}|\s+")
_HEADING = re.compile(r"^\s*#{1,6}\s+(.+?)\s*$", re.MULTILINE)
_FILLER = (
    "Check whether the wording is aimed at a person or at a group.",
    "Consider the context and the likely intent of the author.",
    "Compare the text with the definitions and the examples in the policy.",
    "Look at whether the message asks the reader to act.",
    "Weigh how a typical reader would understand the message.",
    "The examples in the policy help to settle borderline wording.",
)


@dataclass(frozen=True)
class Reply:
    """What the fake model produces for one request."""

    thinking: str
    content: str


def tokenize(text: str) -> list[str]:
    """Split text into chunks of about four characters; joining them gives the text back."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    """Rough token count used for prompt_eval_count (about four characters a token)."""
    return max(1, (len(text) + 3) // 4) if text else 0


def _message_text(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    return content if isinstance(content, str) else ""


def split_messages(messages: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """Return (policy, content): the system messages and the last user message."""
    policy = "\n".join(
        _message_text(m) for m in messages if m.get("role") in ("system", "developer")
    )
    users = [_message_text(m) for m in messages if m.get("role") == "user"]
    return policy, (users[-1] if users else "")


def find_trigger(content: str) -> str | None:
    """The first trigger phrase in the content, spelled exactly as the content spells it."""
    lowered = content.lower()
    hits = [(lowered.find(t), t) for t in TRIGGERS if t in lowered]
    if not hits:
        return None
    start, phrase = min(hits)
    return content[start : start + len(phrase)]


def pick_rule(policy: str, violating: bool) -> str | None:
    """A rule id of the right tier: number >= 2 when violating, 0 otherwise."""
    found = [(m.group(0), int(m.group(1))) for m in RULE_ID.finditer(policy)]
    if not found:
        return None
    for rule, number in found:
        if (violating and number >= 2) or (not violating and number == 0):
            return rule
    return found[0][0]


def _category(policy: str) -> str:
    match = _HEADING.search(policy)
    title = match.group(1) if match else "policy"
    return re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_") or "policy"


def _reasoning(quote: str, rule: str | None, violating: bool, size: int) -> str:
    head = f'The user wants the content classified against the policy. The content says "{quote}".'
    if rule:
        head += f" The closest rule is {rule}."
    tail = f" This violates {rule or 'the policy'}." if violating else ""
    tail = tail or " This does not violate the policy."
    parts = [head]
    index = 0
    while len(tokenize("".join(parts) + tail)) < size:
        parts.append(" " + _FILLER[index % len(_FILLER)])
        index += 1
    return "".join(parts) + tail


# What a model following the system message would output. The app appends one of three
# instructions (safeguard_desktop.core.prompt): "Answer with a single character: 1 ... 0",
# "Answer with exactly one word: <violation> if the content violates this policy, <safe> if it
# does not" or "Answer with one JSON object and nothing else"; a policy may state its own.
_JSON_ASKED = re.compile(
    r"\b(?:answer|respond|reply|return|output|format|produce|emit)\b[^\n]{0,80}?\bjson\b",
    re.IGNORECASE,
)
_LABEL_ASKED = re.compile(
    r"one word:\s*[\"'`]?([\w-]+)[\"'`]? if the content violates[^,\n]*,\s*"
    r"[\"'`]?([\w-]+)[\"'`]? if it does not"
)
_LABEL_PAIRS = (("INVALID", "VALID"), ("UNSAFE", "SAFE"))


def asks_for_json(policy: str) -> bool:
    """True when the system message tells the model to answer with JSON."""
    return _JSON_ASKED.search(policy) is not None


def asked_labels(policy: str) -> tuple[str, str] | None:
    """(violation, safe) label words the system message asks for, if any."""
    match = _LABEL_ASKED.search(policy)
    if match:
        return match.group(1), match.group(2)
    for violation, safe in _LABEL_PAIRS:
        if re.search(rf"\b{violation}\b", policy) and re.search(rf"\b{safe}\b", policy):
            return violation, safe
    return None


def _placeholder(spec: Any) -> Any:
    """A value of the type a JSON-schema property asks for (what constrained decoding allows)."""
    if not isinstance(spec, dict):
        return None
    if isinstance(spec.get("enum"), list) and spec["enum"]:
        return spec["enum"][0]
    kind = spec.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return {
        "string": "",
        "integer": 0,
        "number": 0,
        "boolean": False,
        "array": [],
        "object": {},
    }.get(str(kind))


def _json_answer(fields: dict[str, Any], policy: str, schema: dict[str, Any] | None) -> str:
    """The verdict object: the schema's properties when one constrains the output.

    Optional properties (and "rationale" without a schema) appear only when the system message
    names them, as a model following its instructions would do.
    """
    mentioned = policy.lower()
    properties = schema.get("properties") if schema is not None else None
    if isinstance(properties, dict):
        required = set(schema.get("required") or []) if schema is not None else set()
        out = {
            key: fields[key] if key in fields else _placeholder(spec)
            for key, spec in properties.items()
            if key in required or key.lower() in mentioned
        }
        return json.dumps(out)
    keys = ["violation", "policy_category", "rule_ids", "confidence"]
    if "rationale" in mentioned:
        keys.append("rationale")
    return json.dumps({key: fields[key] for key in keys})


def _answer(
    policy: str,
    rule: str | None,
    violating: bool,
    quote: str,
    answer_format: str | dict[str, Any] | None,
) -> str:
    if answer_format is not None or asks_for_json(policy):
        fields = {
            "violation": 1 if violating else 0,
            "policy_category": _category(policy) if violating else "none",
            "rule_ids": [rule] if violating and rule else [],
            "confidence": "high",
            "rationale": (
                f'The content says "{quote}", which {rule or "the policy"} prohibits.'
                if violating
                else "The content does not match any prohibited behaviour."
            ),
        }
        return _json_answer(
            fields, policy, answer_format if isinstance(answer_format, dict) else None
        )
    labels = asked_labels(policy)
    if labels is not None:
        return labels[0] if violating else labels[1]
    return "1" if violating else "0"


def default_reply(
    messages: Sequence[Mapping[str, Any]],
    *,
    reasoning_tokens: int,
    answer_format: str | dict[str, Any] | None = None,
) -> Reply:
    """Classify the last user message against the system policy, deterministically.

    `answer_format` is the request's valid `format` ("json" or a JSON schema), None when unset:
    with it the answer is JSON (constrained decoding); without it the answer follows the system
    message (JSON only when it asks for JSON, else its label words, else 1/0).
    """
    policy, content = split_messages(messages)
    trigger = find_trigger(content)
    violating = trigger is not None
    quote = trigger if trigger is not None else " ".join(content.split()[:6])
    if quote and quote not in content:
        # Whitespace inside the first six words differs from single spaces: quote one word.
        quote = content.split()[0]
    rule = pick_rule(policy, violating)
    thinking = _reasoning(quote, rule, violating, reasoning_tokens)
    return Reply(thinking=thinking, content=_answer(policy, rule, violating, quote, answer_format))
