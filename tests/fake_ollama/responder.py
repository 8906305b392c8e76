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


def _answer(policy: str, rule: str | None, violating: bool, quote: str, as_json: bool) -> str:
    if as_json or "json" in policy.lower():
        return json.dumps(
            {
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
        )
    if "INVALID" in policy and "VALID" in policy.replace("INVALID", ""):
        return "INVALID" if violating else "VALID"
    return "1" if violating else "0"


def default_reply(
    messages: Sequence[Mapping[str, Any]], *, reasoning_tokens: int, as_json: bool = False
) -> Reply:
    """Classify the last user message against the system policy, deterministically."""
    policy, content = split_messages(messages)
    trigger = find_trigger(content)
    violating = trigger is not None
    quote = trigger if trigger is not None else " ".join(content.split()[:6])
    if quote and quote not in content:
        # Whitespace inside the first six words differs from single spaces: quote one word.
        quote = content.split()[0]
    rule = pick_rule(policy, violating)
    thinking = _reasoning(quote, rule, violating, reasoning_tokens)
    return Reply(thinking=thinking, content=_answer(policy, rule, violating, quote, as_json))
