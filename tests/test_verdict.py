"""Reading gpt-oss-safeguard's final answer as the verdict a moderator sees."""

from __future__ import annotations

import random

import pytest

from safeguard_desktop.core.verdict import (
    LENGTH_PROBLEM,
    Verdict,
    parse_verdict,
    verdict_from_dict,
)

SPAM_LABELS = ("VALID", "INVALID")


@pytest.mark.parametrize(
    ("answer", "violation"),
    [
        ("1", True),
        ("0", False),
        ("1.", True),
        ("  0\n", False),
        ("**1**", True),
        ("`0`", False),
        ("Answer: 1", True),
        ("Final answer: 0", False),
        ("**Label:** 1", True),
        ("Violation: no", False),
    ],
)
def test_binary_answers(answer: str, violation: bool) -> None:
    verdict = parse_verdict(answer)
    assert verdict.violation is violation
    assert verdict.label == ("violation" if violation else "safe")
    assert verdict.raw == answer
    assert verdict.problem is None


def test_first_line_digit_with_explanation_below() -> None:
    verdict = parse_verdict("1\nThe message calls the user worthless, which is HB2.a.")
    assert verdict.label == "violation"
    assert verdict.rule_ids == ("HB2.a",)
    assert verdict.category == "HB2"
    assert verdict.rationale == "The message calls the user worthless, which is HB2.a."


def test_numbered_prose_is_not_read_as_a_digit() -> None:
    verdict = parse_verdict("1. The content is a question about shipping times.\n2. Nothing else.")
    assert verdict.label == "unparsed"


HARASSMENT_JSON = (
    '{"violation": 1, "policy_category": "HB2", "rule_ids": ["HB2.a"], '
    '"confidence": "High", "rationale": "Direct insult aimed at a named person."}'
)


@pytest.mark.parametrize(
    "answer",
    [
        HARASSMENT_JSON,
        f"```json\n{HARASSMENT_JSON}\n```",
        f"Here is my classification:\n\n{HARASSMENT_JSON}\n\nLet me know if you need more.",
        f"```\n{HARASSMENT_JSON}\n```",
    ],
    ids=["bare", "json-fence", "prose", "plain-fence"],
)
def test_json_answers_anywhere_in_the_text(answer: str) -> None:
    verdict = parse_verdict(answer)
    assert verdict == Verdict(
        label="violation",
        violation=True,
        category="HB2",
        rule_ids=("HB2.a",),
        confidence="high",
        rationale="Direct insult aimed at a named person.",
        raw=answer,
    )


def test_braces_in_prose_before_the_json_do_not_hide_it() -> None:
    answer = (
        'The template {name} is irrelevant. Result: {"violation": "yes", "category": "SP3", '
        '"rationale": "uses {curly} braces"}'
    )
    verdict = parse_verdict(answer)
    assert verdict.violation is True
    assert verdict.category == "SP3"
    assert verdict.rationale == "uses {curly} braces"


@pytest.mark.parametrize(
    ("value", "violation"),
    [
        ("true", True),
        ("false", False),
        ('"yes"', True),
        ('"no"', False),
        ('"1"', True),
        ("0", False),
    ],
)
def test_json_violation_value_forms(value: str, violation: bool) -> None:
    assert parse_verdict(f'{{"violation": {value}}}').violation is violation


def test_json_alternative_keys() -> None:
    answer = (
        '{"label": "violation", "category": "V1", "rules": "V1.a, V1.c", '
        '"confidence": 0.82, "explanation": "Credible threat."}'
    )
    verdict = parse_verdict(answer)
    assert verdict.label == "violation"
    assert verdict.category == "V1"
    assert verdict.rule_ids == ("V1.a", "V1.c")
    assert verdict.confidence == "0.82"
    assert verdict.rationale == "Credible threat."


def test_json_safe_keeps_the_rule_ids_it_lists() -> None:
    verdict = parse_verdict('{"violation": 0, "rule_ids": ["SP0.a"], "reason": "A question."}')
    assert verdict.label == "safe"
    assert verdict.violation is False
    assert verdict.rule_ids == ("SP0.a",)
    assert verdict.rationale == "A question."


def test_json_violation_without_category_takes_the_most_severe_tier() -> None:
    verdict = parse_verdict('{"violation": 1, "rule_ids": ["SP2.a", "SP4.b", "SP3.c"]}')
    assert verdict.category == "SP4"


def test_python_style_dict_with_trailing_comma() -> None:
    verdict = parse_verdict("{'violation': True, 'category': 'V1',}")
    assert verdict.violation is True
    assert verdict.category == "V1"


@pytest.mark.parametrize(
    ("confidence", "expected"),
    [('"Medium"', "medium"), ('"very high"', "high"), ('"82%"', "0.82"), ("0.5", "0.5")],
)
def test_confidence_is_normalised(confidence: str, expected: str) -> None:
    answer = f'{{"violation": 1, "confidence": {confidence}}}'
    assert parse_verdict(answer).confidence == expected


@pytest.mark.parametrize(
    ("answer", "violation", "category", "rule_ids"),
    [
        ("INVALID", True, None, ()),
        ("VALID", False, None, ()),
        ("valid", False, None, ()),
        ("INVALID (SP3)", True, "SP3", ("SP3",)),
        ("INVALID (SP2.a, SP3.b)", True, "SP3", ("SP2.a", "SP3.b")),
        ("VALID (SP0)", False, "SP0", ("SP0",)),
        ("D-SP4, R-SP0", True, "SP4", ("SP4",)),
        ("D-SP0, R-SP0", False, "SP0", ("SP0",)),
        ("**INVALID** + ESCALATE\nPhishing for a password (SP4.a).", True, "SP4", ("SP4.a",)),
        (
            "Classification: INVALID\nIt would be VALID without the three links (SP2.c).",
            True,
            "SP2",
            ("SP2.c",),
        ),
        ("INVALID\nWithout the links it would be VALID.", True, None, ()),
    ],
)
def test_spam_policy_label_words(
    answer: str, violation: bool, category: str | None, rule_ids: tuple[str, ...]
) -> None:
    verdict = parse_verdict(answer, labels=SPAM_LABELS)
    assert (verdict.violation, verdict.category, verdict.rule_ids) == (
        violation,
        category,
        rule_ids,
    )


def test_invalid_is_never_read_as_valid() -> None:
    for answer in ("INVALID", "invalid.", "The message is INVALID.", "Label: Invalid"):
        assert parse_verdict(answer, labels=SPAM_LABELS).violation is True, answer


def test_escalated_category_is_preferred() -> None:
    answer = "INVALID (SP4.a phishing, SP3.d misleading claims)"
    assert parse_verdict(answer, labels=SPAM_LABELS).category == "SP4"
    assert parse_verdict(answer, labels=SPAM_LABELS, escalate=["SP3"]).category == "SP3"


@pytest.mark.parametrize(
    ("answer", "violation"),
    [
        ("VIOLATION", True),
        ("SAFE", False),
        ("NON-VIOLATING", False),
        ("Violates HB2.", True),
        ("Does not violate the policy.", False),
        ("The content doesn't violate any rule.", False),
        ("No violation.", False),
    ],
)
def test_generic_decision_words(answer: str, violation: bool) -> None:
    assert parse_verdict(answer).violation is violation
    assert parse_verdict(answer, labels=SPAM_LABELS).violation is violation


def test_context_limit_gives_incomplete_even_with_a_partial_json() -> None:
    answer = '{"violation": 1, "rationale": "The message'
    verdict = parse_verdict(answer, done_reason="length")
    assert verdict.label == "incomplete"
    assert verdict.violation is None
    assert verdict.raw == answer
    assert verdict.problem == LENGTH_PROBLEM
    assert "num_ctx" in (verdict.problem or "")


def test_complete_json_is_still_incomplete_at_the_context_limit() -> None:
    assert parse_verdict(HARASSMENT_JSON, done_reason="length").label == "incomplete"


@pytest.mark.parametrize("answer", ["", "   \n\t "])
def test_empty_answer_is_unparsed(answer: str) -> None:
    verdict = parse_verdict(answer)
    assert verdict.label == "unparsed"
    assert verdict.violation is None
    assert verdict.problem is not None
    assert verdict.problem.startswith("The model returned no answer")


@pytest.mark.parametrize(
    "answer",
    [
        "banana",
        "I need more context about this user before deciding.",
        '{"category": "HB2"}',
        '{"violation": "maybe"}',
        '{"violation": 1, "label": "safe"}',
        "Answer: 1\nAnswer: 0",
        "The message is VALID but also INVALID.",
    ],
)
def test_unreadable_or_contradictory_answers_are_unparsed(answer: str) -> None:
    verdict = parse_verdict(answer, labels=SPAM_LABELS)
    assert verdict.label == "unparsed"
    assert verdict.violation is None
    assert verdict.raw == answer
    assert verdict.problem
    assert verdict.problem.endswith(".")


def test_contradiction_problem_names_both_sides() -> None:
    problem = parse_verdict("It is VALID and INVALID", labels=SPAM_LABELS).problem or ""
    assert "INVALID" in problem
    assert "VALID" in problem


def test_to_dict_round_trips_through_verdict_from_dict() -> None:
    verdict = parse_verdict(HARASSMENT_JSON)
    stored = verdict.to_dict()
    assert set(stored) == {"label", "violation", "category", "rule_ids", "confidence", "rationale"}
    assert stored["rule_ids"] == ["HB2.a"]
    assert verdict_from_dict(stored, raw=HARASSMENT_JSON) == verdict


def test_verdict_from_dict_restores_undecided_verdicts_with_a_problem() -> None:
    incomplete = parse_verdict("{", done_reason="length")
    restored = verdict_from_dict(incomplete.to_dict(), raw="{")
    assert restored == incomplete
    unparsed = verdict_from_dict({"label": "unparsed", "violation": None})
    assert unparsed.violation is None
    assert unparsed.problem


def test_verdict_from_dict_tolerates_missing_and_odd_fields() -> None:
    verdict = verdict_from_dict({"violation": 1, "rule_ids": "not a list", "confidence": 90})
    assert verdict.label == "violation"
    assert verdict.rule_ids == ()
    assert verdict.confidence == "0.9"
    assert verdict_from_dict({}).label == "unparsed"


_ALPHABET = [
    *"01{}[]\":,'`*\n\t -.#abcXYZ",
    "violation",
    "VALID",
    "INVALID",
    "SP3.a",
    "D-SP4",
    "true",
    "not ",
    "```json",
    "Answer:",
    "\\",
    "İ",
    "9" * 30,
]


def test_random_text_never_raises() -> None:
    rng = random.Random(20251128)
    for _ in range(1500):
        answer = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 60)))
        for labels in (None, SPAM_LABELS):
            verdict = parse_verdict(answer, labels=labels)
            assert verdict.raw == answer
            assert (verdict.violation is None) == (verdict.label in ("unparsed", "incomplete"))
            assert (verdict.problem is None) == (verdict.violation is not None)


def test_deeply_nested_braces_do_not_raise() -> None:
    answer = "{" * 5000 + '"violation": 1' + "}" * 5000
    assert parse_verdict(answer).label in ("unparsed", "violation")
