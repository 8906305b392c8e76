"""Where the verdict parser must not guess: answers cut off mid-object, answers that disagree
with themselves, and characters no file or database can hold.

Each answer is one a model can give; each expectation is what the moderator must be shown.
"""

from __future__ import annotations

import pytest

from safeguard_desktop.core.verdict import (
    CUT_OFF_PROBLEM,
    LENGTH_PROBLEM,
    TWO_ANSWERS_PROBLEM,
    parse_verdict,
)

SPAM_LABELS = ("VALID", "INVALID")


# --- cut off mid-object: incomplete, never a violation --------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        '{"violation": 1, "rule_ids": ["SP2.a"], "rationale": "The message sells a',
        '{"violation": 1, "rule_ids": ["SP2.a"], "confidence": "high"',
        '{"violation": 1,',
        '{"violation": 1',
        '{"violation"',
        "{",
        '```json\n{"violation": 1, "policy_category": "SP2"',
        'Here is my answer:\n{"violation": 1, "rationale": "it says \\"buy {now}\\" and',
        '{"result": {"violation": 1}, "rationale": "the outer object never closes',
        '{"violation": 0}\n\nCorrection: {"violation": 1, "rationale": "on second',
    ],
    ids=[
        "in-a-string",
        "after-a-value",
        "after-a-comma",
        "in-a-number",
        "after-a-key",
        "just-a-brace",
        "in-a-fence",
        "after-prose",
        "nested-closed-outer-open",
        "second-answer-cut",
    ],
)
def test_json_cut_off_mid_object_is_incomplete(answer: str) -> None:
    verdict = parse_verdict(answer)
    assert verdict.label == "incomplete"
    assert verdict.violation is None
    assert verdict.problem == CUT_OFF_PROBLEM
    assert verdict.raw == answer
    assert verdict.rule_ids == () and verdict.category is None


def test_cut_off_at_the_context_limit_keeps_the_context_sentence() -> None:
    verdict = parse_verdict('{"violation": 1, "rat', done_reason="length")
    assert verdict.label == "incomplete" and verdict.problem == LENGTH_PROBLEM


@pytest.mark.parametrize(
    ("answer", "violation"),
    [
        ('{"violation": 1, "rationale": "uses {curly} braces and a lone { too"}', True),
        ("1\nThe template {name is left open in the message.", True),
        ("Answer: 0\nThe set {a, b is not closed by the user.", False),
        ('{"violation": 0, "rationale": "no \\"{\\" closes"}', False),
    ],
    ids=["brace-in-a-string", "brace-in-prose-after-a-digit", "brace-in-prose", "escaped"],
)
def test_braces_that_open_no_object_do_not_make_it_incomplete(answer: str, violation: bool) -> None:
    verdict = parse_verdict(answer)
    assert verdict.violation is violation
    assert verdict.problem is None


# --- two answers that disagree: unparsed, both kept ---------------------------------------------


@pytest.mark.parametrize(
    ("answer", "first", "second"),
    [
        (
            '{"violation": 0, "rationale": "friendly"}\n{"violation": 1, "rationale": "spam"}',
            '{"violation": 0, "rationale": "friendly"}',
            '{"violation": 1, "rationale": "spam"}',
        ),
        (
            'First pass: {"violation": "no"}. Final: {"violation": "yes", "rule_ids": ["SP2.a"]}',
            '{"violation": "no"}',
            '{"violation": "yes", "rule_ids": ["SP2.a"]}',
        ),
        (
            '{"label": "VALID"}\n```json\n{"label": "INVALID"}\n```',
            '{"label": "VALID"}',
            '{"label": "INVALID"}',
        ),
        ('Answer: 0\n{"violation": 1}', "Answer: 0", '{"violation": 1}'),
        ('{"violation": 1}\nFinal answer: 0', '{"violation": 1}', "Final answer: 0"),
        ('0\n\n{"violation": 1, "rationale": "sells"}', "0", '{"violation": 1, "rationale":'),
        ('{"violation": 0, "violation": 1}', '{"violation": 0, "violation": 1}', '"violation": 0'),
    ],
    ids=[
        "two-objects",
        "prose-between",
        "two-label-words",
        "digit-line-then-json",
        "json-then-digit-line",
        "bare-digit-then-json",
        "key-given-twice",
    ],
)
def test_two_answers_that_disagree_are_unparsed_and_both_kept(
    answer: str, first: str, second: str
) -> None:
    verdict = parse_verdict(answer, labels=SPAM_LABELS)
    assert verdict.label == "unparsed"
    assert verdict.violation is None
    assert verdict.raw == answer
    problem = verdict.problem or ""
    assert problem.startswith("The answer holds two answers that disagree, ")
    assert first in problem and second in problem
    assert problem.index(first) < problem.index(second)  # in the order the model wrote them
    assert problem.endswith("read the reasoning and decide by hand.")


def test_a_long_answer_is_quoted_shortened_on_one_line() -> None:
    long = '{"violation": 0, "rationale": "' + "very long reason\n" * 30 + '"}'
    verdict = parse_verdict(long.replace("\n", "\\n") + '\n{"violation": 1}')
    problem = verdict.problem or ""
    assert verdict.label == "unparsed" and "\n" not in problem
    assert '{"violation": 0, "rationale": "very long reason' in problem and "…" in problem
    assert len(problem) < len(TWO_ANSWERS_PROBLEM) + 2 * 120


@pytest.mark.parametrize(
    "answer",
    [
        '{"violation": 1, "rationale": "spam"}\n{"violation": 1, "rationale": "again"}',
        '{"violation": 1, "rationale": "spam"}\nAnswer: 1',
        '1\n{"violation": 1, "rationale": "spam"}',
        '{"violation": 1, "violation": true, "rationale": "spam"}',
    ],
    ids=["two-objects", "json-and-line", "digit-and-json", "key-twice"],
)
def test_answers_that_agree_give_the_first_one(answer: str) -> None:
    verdict = parse_verdict(answer)
    assert verdict.label == "violation" and verdict.problem is None
    assert verdict.rationale == "spam"


def test_a_json_answer_with_an_unrelated_number_line_is_not_a_contradiction() -> None:
    answer = '{"violation": 1, "rule_ids": ["SP2.a"]}\nThe message has 0 links.'
    assert parse_verdict(answer).violation is True


# --- characters that cannot be stored ------------------------------------------------------------


def test_escaped_lone_surrogates_in_json_become_replacement_characters() -> None:
    answer = (
        '{"violation": 1, "policy_category": "SP\\ud8002", "rule_ids": ["SP2.a\\udc00"], '
        '"confidence": "high\\udfff", "rationale": "sells \\ud83d at a link"}'
    )
    verdict = parse_verdict(answer)
    assert verdict.label == "violation"
    assert verdict.category == "SP\ufffd2"
    assert verdict.rule_ids == ("SP2.a\ufffd",)
    assert verdict.rationale == "sells \ufffd at a link"
    assert verdict.raw == answer  # the answer itself is kept as the model wrote it
    for text in (verdict.category, verdict.rationale, verdict.confidence, *verdict.rule_ids):
        (text or "").encode("utf-8")


def test_an_escaped_emoji_pair_is_kept() -> None:
    verdict = parse_verdict('{"violation": 0, "rationale": "a smile \\ud83d\\ude00"}')
    assert verdict.rationale == "a smile 😀"


def test_lone_surrogates_in_a_plain_answer_are_replaced_in_the_rationale() -> None:
    verdict = parse_verdict("Answer: 1\nIt sells \udc80 pills.")
    assert verdict.label == "violation"
    assert verdict.rationale == "It sells \ufffd pills."


def test_a_confidence_of_hundreds_of_digits_is_ignored() -> None:
    verdict = parse_verdict('{"violation": 1, "confidence": ' + "9" * 400 + "}")
    assert verdict.label == "violation" and verdict.confidence is None
