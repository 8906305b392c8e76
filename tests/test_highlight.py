"""Highlights that tie the model's reasoning to the policy's rules and the content."""

from __future__ import annotations

import itertools
import random

from safeguard_desktop.core.highlight import (
    Highlights,
    Span,
    find_quote_spans,
    find_rule_mentions,
    highlight,
)

HARASSMENT_RULES = ("HB0.a", "HB1.a", "HB2.a", "HB2.b")
HARASSMENT_CONTENT = (
    "@maria_k honestly you are worthless and\n"
    "everyone hates you. Don’t bother showing up to practice on Monday.\n"
)
HARASSMENT_REASONING = (
    "We need to classify the message against the harassment policy. "
    'The user wrote "you are worthless and everyone hates you", which matches HB2.a '
    "(degrading insults aimed at a named person). They also say “don't bother showing up”. "
    'The policy lists "mild teasing between friends" under HB0.a but nothing here is teasing. '
    "The message does not violate HB1 (no threat), but it violates HB2. So this is a violation."
)

SPAM_CONTENT = (
    "JOIN NOW JOIN NOW!!! Earn $$$ by recruiting members -> http://quick-riches.example "
    "Comment 'YES' to win a $500 gift card"
)
SPAM_REASONING = (
    "Policy: classify as VALID or INVALID. The content repeats `JOIN NOW JOIN NOW`, "
    "which is SP3.a repetitive posting. 'Earn $$$ by recruiting members' is pyramid bait, "
    "SP3.b. It isn't a single contextual promo, so SP0 doesn't apply; it's not compliant. "
    "The user's message is INVALID."
)


def _text(text: str, span: Span) -> str:
    return text[span.start : span.end]


def _assert_well_formed(spans: tuple[Span, ...], text: str) -> None:
    for span in spans:
        assert 0 <= span.start < span.end <= len(text)
    for before, after in itertools.pairwise(spans):
        assert before.end <= after.start


def test_harassment_quote_is_marked_in_both_panes_with_one_colour() -> None:
    result = highlight(HARASSMENT_REASONING, HARASSMENT_CONTENT, HARASSMENT_RULES)
    quotes = [s for s in result.reasoning if s.kind == "quote"]
    assert [_text(HARASSMENT_REASONING, s) for s in quotes] == [
        "you are worthless and everyone hates you",
        "don't bother showing up",
    ]
    assert [_text(HARASSMENT_CONTENT, s) for s in result.content] == [
        "you are worthless and\neveryone hates you",
        "Don’t bother showing up",
    ]
    assert [s.group for s in quotes] == [0, 1]
    assert [s.group for s in result.content] == [0, 1]
    assert result.quotes == ("you are worthless and everyone hates you", "don't bother showing up")
    assert [s.key for s in result.content] == list(result.quotes)


def test_quote_of_the_policy_is_not_marked() -> None:
    result = highlight(HARASSMENT_REASONING, HARASSMENT_CONTENT, HARASSMENT_RULES)
    assert "mild teasing between friends" not in result.quotes
    marked = {_text(HARASSMENT_REASONING, s) for s in result.reasoning}
    assert "mild teasing between friends" not in marked


def test_rule_ids_link_known_ids_and_their_tiers() -> None:
    result = highlight(HARASSMENT_REASONING, HARASSMENT_CONTENT, HARASSMENT_RULES)
    assert result.rule_ids == ("HB2.a", "HB0.a", "HB1", "HB2")
    rules = [s for s in result.reasoning if s.kind == "rule"]
    assert [_text(HARASSMENT_REASONING, s) for s in rules] == ["HB2.a", "HB0.a", "HB1", "HB2"]


def test_decision_phrases_with_negation() -> None:
    result = highlight(HARASSMENT_REASONING, HARASSMENT_CONTENT, HARASSMENT_RULES)
    decisions = [
        (_text(HARASSMENT_REASONING, s), s.key) for s in result.reasoning if s.kind == "decision"
    ]
    assert decisions == [
        ("does not violate", "does_not_violate"),
        ("violates", "violates"),
        ("violation", "violates"),
    ]


def test_reasoning_spans_are_sorted_disjoint_and_in_range() -> None:
    for reasoning, content in (
        (HARASSMENT_REASONING, HARASSMENT_CONTENT),
        (SPAM_REASONING, SPAM_CONTENT),
    ):
        result = highlight(reasoning, content)
        _assert_well_formed(result.reasoning, reasoning)
        _assert_well_formed(result.content, content)


def test_spam_case_with_backticks_and_single_quotes() -> None:
    result = highlight(SPAM_REASONING, SPAM_CONTENT, ("SP0.a", "SP2.a", "SP3.a", "SP3.b"))
    assert result.quotes == ("join now join now", "earn $$$ by recruiting members")
    assert [_text(SPAM_CONTENT, s) for s in result.content] == [
        "JOIN NOW JOIN NOW",
        "Earn $$$ by recruiting members",
    ]
    assert result.rule_ids == ("SP3.a", "SP3.b", "SP0")
    decisions = [
        (_text(SPAM_REASONING, s), s.key) for s in result.reasoning if s.kind == "decision"
    ]
    assert decisions == [("not compliant", "violates")]


def test_apostrophes_do_not_open_quotes() -> None:
    reasoning = "It's the user's message; the poster’s tone isn't 'see you soon' friendly."
    result = highlight(reasoning, "ok, see you soon then")
    assert result.quotes == ("see you soon",)
    quotes = [_text(reasoning, s) for s in result.reasoning if s.kind == "quote"]
    assert quotes == ["see you soon"]


def test_quote_span_leaves_out_edge_punctuation() -> None:
    reasoning = 'The user wrote " buy gold rings here! " in caps.'
    result = highlight(reasoning, "BUY GOLD RINGS HERE")
    assert [_text(reasoning, s) for s in result.reasoning] == ["buy gold rings here"]


def test_single_quoted_word_is_not_a_quote() -> None:
    result = highlight("The word 'worthless' is an insult.", "you are worthless")
    assert result.quotes == ()
    assert result.content == ()


def test_short_quotes_are_ignored() -> None:
    result = highlight('The user wrote "ok" and "no".', "ok no")
    assert result.quotes == ()


def test_same_quote_twice_in_reasoning_shares_its_group() -> None:
    reasoning = 'First "buy gold rings" then again "Buy  gold rings." and "cheap watches".'
    content = "Buy gold rings here! cheap watches. buy gold rings"
    result = highlight(reasoning, content)
    quotes = [s for s in result.reasoning if s.kind == "quote"]
    assert [s.group for s in quotes] == [0, 0, 1]
    assert [(s.group, _text(content, s)) for s in result.content] == [
        (0, "Buy gold rings"),
        (1, "cheap watches"),
        (0, "buy gold rings"),
    ]


def test_overlapping_quotes_in_content_keep_the_longer_one() -> None:
    reasoning = 'It says "you are worthless" and later "worthless and everyone hates you".'
    content = "you are worthless and everyone hates you"
    result = highlight(reasoning, content)
    assert len(result.quotes) == 2
    assert [_text(content, s) for s in result.content] == ["worthless and everyone hates you"]
    _assert_well_formed(result.content, content)


def test_rule_or_decision_inside_a_quote_keeps_only_the_quote() -> None:
    content = "This post violates SP3 rules lol"
    reasoning = 'The user typed "violates SP3 rules" as a joke; it does not violate SP3.'
    result = highlight(reasoning, content, ("SP3.a",))
    kinds = [(s.kind, _text(reasoning, s)) for s in result.reasoning]
    assert kinds == [
        ("quote", "violates SP3 rules"),
        ("decision", "does not violate"),
        ("rule", "SP3"),
    ]
    assert result.rule_ids == ("SP3",)


def test_find_quote_spans_across_a_line_break_and_case() -> None:
    haystack = "Line one.\nYou ARE\r\n\t worthless, truly. you are worthless"
    spans = find_quote_spans("you are   worthless", haystack)
    assert [haystack[a:b] for a, b in spans] == ["You ARE\r\n\t worthless", "you are worthless"]


def test_find_quote_spans_normalises_curly_quotes_and_apostrophes() -> None:
    haystack = "She said “don’t come back” twice."
    assert [haystack[a:b] for a, b in find_quote_spans('"don\'t come back"', haystack)] == [
        "“don’t come back”"
    ]
    assert [haystack[a:b] for a, b in find_quote_spans("DON'T COME BACK", haystack)] == [
        "don’t come back"
    ]


def test_find_quote_spans_respects_word_boundaries() -> None:
    assert find_quote_spans("hate", "whatever you say") == []
    assert find_quote_spans("hate", "I hate it") == [(2, 6)]


def test_find_quote_spans_with_letters_that_grow_when_lowered() -> None:
    haystack = "İstanbul is lovely. ISTANBUL IS LOVELY"
    spans = find_quote_spans("is lovely", haystack)
    assert [haystack[a:b] for a, b in spans] == ["is lovely", "IS LOVELY"]


def test_find_rule_mentions_without_known_ids_takes_id_shaped_tokens() -> None:
    text = "Matches SP3.a and D-SP4; not mp3 nor sp2, but R1 applies."
    assert [s.key for s in find_rule_mentions(text)] == ["SP3.a", "SP4", "R1"]


def test_find_rule_mentions_filters_to_known_ids_case_insensitively() -> None:
    text = "See sp2.a, SP2, SP9 and HB2.b; SP2.c is not a rule."
    spans = find_rule_mentions(text, {"SP2.a", "SP2.b"})
    assert [(text[s.start : s.end], s.key) for s in spans] == [
        ("sp2.a", "SP2.a"),
        ("SP2", "SP2"),
        ("SP2", "SP2"),
    ]


def test_empty_inputs() -> None:
    assert highlight("", "") == Highlights((), (), (), ())
    assert find_quote_spans("", "text") == []
    assert find_quote_spans("text", "") == []


def test_random_text_never_raises_and_spans_stay_well_formed() -> None:
    rng = random.Random(7)
    alphabet = [*"\"'`“”‘’ \n\tabAB.-", "SP3.a", "HB2", "does not violate", "violates", "İ"]
    for _ in range(400):
        reasoning = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
        content = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        for rule_ids in ((), ("SP3.a", "HB2.b")):
            result = highlight(reasoning, content, rule_ids)
            _assert_well_formed(result.reasoning, reasoning)
            _assert_well_formed(result.content, content)
            assert all(0 <= s.group < max(1, len(result.quotes)) for s in result.content)
