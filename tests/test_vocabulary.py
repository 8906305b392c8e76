"""One vocabulary: what decides a verdict is what gets highlighted, ids read alike everywhere."""

from __future__ import annotations

import json
import re

import pytest

from safeguard_desktop.core.highlight import find_rule_mentions, highlight
from safeguard_desktop.core.policy import PolicyError, lint, parse_policy
from safeguard_desktop.core.prompt import RequestError, build_request, output_instruction
from safeguard_desktop.core.verdict import parse_verdict, verdict_from_dict
from safeguard_desktop.core.vocabulary import (
    CONFIDENCE_LEVELS,
    EFFORTS,
    SAFE_ANSWERS,
    SAFE_PHRASES,
    VERDICT_LABELS,
    VIOLATION_ANSWERS,
    VIOLATION_PHRASES,
)

KEYS = {"safe": "does_not_violate", "violation": "violates"}

# Hand-written sentences from model reasoning, with the phrase that decides each.
SAFE_SENTENCES = [
    ("The post does not violate HB2.", "does not violate"),
    ("It is not a violation of the policy.", "is not a violation"),
    ("The reply is not in violation of any rule.", "is not in violation"),
    ("This doesn't violate the policy.", "doesn't violate"),
    ("It isn’t a violation.", "isn’t a violation"),
    ("A recipe cannot violate a harassment policy.", "cannot violate"),
    ("You can criticise a team without violating the rules.", "without violating"),
    ("I see no violations here.", "no violations"),
    ("This is non-violating content.", "non-violating"),
    ("So the message is safe.", "safe"),
    ("Teasing between friends is allowed.", "allowed"),
    ("The ad is compliant.", "compliant"),
]
VIOLATION_SENTENCES = [
    ("This is not safe for the reader.", "is not safe"),
    ("Doxxing is never allowed.", "is never allowed"),
    ("The listing isn't compliant.", "isn't compliant"),
    ("The post violates HB2.a.", "violates"),
    ("Calling someone worthless would violate the rule.", "violate"),
    ("The user violated the rule twice.", "violated"),
    ("It is violating SP3.", "violating"),
    ("That is a clear violation.", "violation"),
    ("The violations are listed above.", "violations"),
    ("The message is unsafe.", "unsafe"),
    ("The ad is non-compliant.", "non-compliant"),
    ("The ad is noncompliant.", "noncompliant"),
    ("Selling accounts is disallowed.", "disallowed"),
]
SENTENCES = [(text, phrase, "safe") for text, phrase in SAFE_SENTENCES] + [
    (text, phrase, "violation") for text, phrase in VIOLATION_SENTENCES
]


def _decisions(reasoning: str, labels: tuple[str, str] | None = None) -> list[tuple[str, str]]:
    spans = highlight(reasoning, "", labels=labels).reasoning
    return [(reasoning[s.start : s.end], s.key) for s in spans if s.kind == "decision"]


@pytest.mark.parametrize(("text", "phrase", "side"), SENTENCES)
def test_the_phrase_that_decides_is_the_phrase_highlighted(
    text: str, phrase: str, side: str
) -> None:
    assert parse_verdict(text).label == side
    assert _decisions(text) == [(phrase, KEYS[side])]


def test_every_decision_phrase_has_an_example_above() -> None:
    for side, alternatives in (("safe", SAFE_PHRASES), ("violation", VIOLATION_PHRASES)):
        examples = [phrase for _, phrase, s in SENTENCES if s == side]
        for alternative in alternatives:
            pattern = re.compile(alternative, re.IGNORECASE)
            assert any(pattern.fullmatch(e) for e in examples), (side, alternative)


def test_unsafe_in_reasoning_is_highlighted_like_the_verdict_it_decides() -> None:
    reasoning = (
        "The user posts a home address and says to pay them a visit. "
        "Sharing it this way is unsafe for the person named."
    )
    assert parse_verdict(reasoning).label == "violation"
    assert _decisions(reasoning) == [("unsafe", "violates")]


def test_a_whole_reasoning_text_marks_every_deciding_phrase_once() -> None:
    reasoning = (
        "We check HB1 and HB2. The message does not violate HB1: there is no threat.\n"
        "It is not safe though: calling her worthless violates HB2.a, and that is unsafe.\n"
        "Teasing between friends would be allowed, but this isn't compliant."
    )
    assert _decisions(reasoning) == [
        ("does not violate", "does_not_violate"),
        ("is not safe", "violates"),
        ("violates", "violates"),
        ("unsafe", "violates"),
        ("allowed", "does_not_violate"),
        ("isn't compliant", "violates"),
    ]
    # Each line read alone as an answer gets the verdict its highlighted phrases argue for;
    # the last one argues both ways, so a person decides.
    labels = [parse_verdict(line).label for line in reasoning.splitlines()]
    assert labels == ["safe", "violation", "unparsed"]


@pytest.mark.parametrize(
    ("safe", "violation"),
    [("VALID", "INVALID"), ("SAFE", "UNSAFE"), ("KEEP", "REMOVE"), ("ALLOW", "BLOCK")],
)
def test_policy_labels_found_by_the_linter_decide_and_are_highlighted(
    safe: str, violation: str
) -> None:
    policy = parse_policy(f"# Posts\n\nLabel each post as {violation} or {safe}.\n".encode())
    assert policy.labels == (safe, violation)
    assert parse_verdict(violation, labels=policy.labels).label == "violation"
    assert parse_verdict(safe, labels=policy.labels).label == "safe"
    reasoning = f"The post sells pills, so the answer is {violation}, not {safe}."
    marked = _decisions(reasoning, labels=policy.labels)
    assert (violation, "violates") in marked
    assert (safe, "does_not_violate") in marked


@pytest.mark.parametrize("word", sorted(VIOLATION_ANSWERS))
def test_every_violation_word_decides_a_json_answer(word: str) -> None:
    assert parse_verdict(json.dumps({"label": word})).label == "violation"
    assert parse_verdict(json.dumps({"label": word.upper()})).label == "violation"


@pytest.mark.parametrize("word", sorted(SAFE_ANSWERS))
def test_every_safe_word_decides_a_json_answer(word: str) -> None:
    assert parse_verdict(json.dumps({"label": word})).label == "safe"


def test_no_word_decides_both_ways() -> None:
    assert not SAFE_ANSWERS & VIOLATION_ANSWERS


POLICY = """\
# Mixed test policy

## Violates (1)
HS2.a Slurs aimed at a protected group.
SP2 Bulk promotion of the same link.
H2.f Threats that name a date.
R1.1 Posting a home address.
VE2.a.i Praise of a named attack.

## Does not violate (0)
SP0 Ordinary posts and questions.

## Examples
"Buy now" posted 40 times: SP2.
"""


def test_rule_ids_the_parser_reads_are_the_ids_the_linter_finds() -> None:
    policy = parse_policy(POLICY.encode())
    defined = ("HS2.a", "SP2", "H2.f", "R1.1", "VE2.a.i")
    assert [r.id for r in policy.rules] == [*defined, "SP0"]
    assert "no-rules" not in {issue.code for issue in lint(policy)}

    answer = "1\nThe post matches HS2.a, SP2, H2.f, R1.1 and VE2.a.i; SP0 does not apply."
    assert parse_verdict(answer).rule_ids == defined
    as_json = json.dumps({"violation": 1, "label": "INVALID: " + ", ".join(defined)})
    assert parse_verdict(as_json).rule_ids == defined
    # The highlighter marks the same ids, whether or not it knows the policy's.
    assert [s.key for s in find_rule_mentions(answer)] == [*defined, "SP0"]
    known = [r.id for r in policy.rules]
    assert [s.key for s in find_rule_mentions(answer, known)] == [*defined, "SP0"]


@pytest.mark.parametrize("text", ["SP12345", "sp2", "HS2a", "2SP"])
def test_things_that_are_not_rule_ids_anywhere(text: str) -> None:
    policy = parse_policy(f"# Policy\n\n{text} Something.\n".encode())
    assert policy.rules == ()
    assert parse_verdict(f"1\nSee {text}.").rule_ids == ()
    assert find_rule_mentions(f"See {text}.") == []


@pytest.mark.parametrize("effort", EFFORTS)
def test_each_effort_is_accepted_by_policy_and_request(effort: str) -> None:
    policy = parse_policy(f"---\neffort: {effort.upper()}\n---\n# P\n\nR1 Rule.\n".encode())
    assert policy.effort == effort
    assert build_request(system="s", user="u", effort=effort).think == effort


def test_an_unknown_effort_is_refused_by_both_with_the_same_choices() -> None:
    with pytest.raises(PolicyError, match="low, medium, high"):
        parse_policy(b"---\neffort: extreme\n---\n# P\n\nR1 Rule.\n")
    with pytest.raises(RequestError, match="low, medium, high"):
        build_request(system="s", user="u", effort="extreme")


def test_the_confidence_the_prompt_asks_for_is_the_one_the_parser_reads() -> None:
    assert all(f'"{level}"' in output_instruction("json", None) for level in CONFIDENCE_LEVELS)
    for level in CONFIDENCE_LEVELS:
        answer = json.dumps({"violation": 0, "confidence": level.title()})
        assert parse_verdict(answer).confidence == level
    assert parse_verdict('{"violation": 1, "confidence": "moderate"}').confidence == "medium"


@pytest.mark.parametrize("label", VERDICT_LABELS)
def test_every_verdict_label_survives_storage(label: str) -> None:
    assert verdict_from_dict({"label": label}).label == label
