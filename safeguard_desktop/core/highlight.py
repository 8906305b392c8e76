"""Spans that link the model's reasoning to the policy and to the content.

Three kinds are marked: rule ids (link to the policy section), phrases the
reasoning quotes from the content (same colour in both panes), and decision
phrases ("violates", "does not violate", "unsafe", the policy's own labels). Rule
ids and decision phrases come from ``vocabulary``, so every word that decides a
verdict in the parser is marked here. Everything is plain offsets so the UI, the
CLI and the Markdown export can all use it.

Overlaps in the reasoning: spans never overlap. A quote span wins over a rule or
decision span that touches it (the inner one is dropped), and a rule span wins
over a decision span. In the content, where two quotes overlap the longer one wins.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

from safeguard_desktop.core.vocabulary import DECISION_RE, RULE_ID_RE, label_pattern

SpanKind = Literal["rule", "quote", "decision"]


@dataclass(frozen=True)
class Span:
    """``[start, end)`` in the analysed text; ``group`` is the quote colour."""

    start: int
    end: int
    kind: SpanKind
    key: str
    group: int = 0


@dataclass(frozen=True)
class Highlights:
    """Spans for both panes; ``quotes[group]`` is the normalised quote of that colour."""

    reasoning: tuple[Span, ...]
    content: tuple[Span, ...]
    rule_ids: tuple[str, ...]
    quotes: tuple[str, ...]


# Curly and typographic quotes become straight ones; one character for one, so
# offsets into the translated text are offsets into the original.
_QUOTE_TABLE = str.maketrans(
    {
        "‘": "'",
        "’": "'",
        "‚": "'",
        "‛": "'",
        "′": "'",
        "“": '"',
        "”": '"',
        "„": '"',
        "‟": '"',
        "″": '"',
        "«": '"',
        "»": '"',
    }
)
_WHITESPACE = re.compile(r"\s+")
_EDGE_PUNCTUATION = " .,;:!?…"
_MIN_QUOTE = 3
_QUOTED = re.compile(
    r'"(?P<double>[^"\n]{1,500})"'
    r"|`(?P<tick>[^`\n]{1,500})`"
    r"|(?<!\w)'(?P<single>(?:[^'\"\n]|'(?=\w)){1,500}?)'(?!\w)"
)
# The key of a decision span for each side of the verdict.
_DECISION_KEYS: dict[str, str] = {"safe": "does_not_violate", "violation": "violates"}


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"


def _fold_phrase(phrase: str) -> str:
    """The matching form of a quote: straight quotes, one space, lower case, no edge dots."""
    folded = " ".join(phrase.translate(_QUOTE_TABLE).split()).lower()
    return folded.strip(_EDGE_PUNCTUATION)


class _FoldedText:
    """A text folded once for matching, with a map from folded to original offsets."""

    __slots__ = ("ends", "starts", "text")

    def __init__(self, original: str) -> None:
        translated = original.translate(_QUOTE_TABLE)
        parts: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        pos = 0
        for match in _WHITESPACE.finditer(translated):
            begin, end = match.span()
            parts.append(translated[pos:begin])
            starts.extend(range(pos, begin))
            ends.extend(range(pos + 1, begin + 1))
            parts.append(" ")
            starts.append(begin)
            ends.append(end)
            pos = end
        parts.append(translated[pos:])
        starts.extend(range(pos, len(translated)))
        ends.extend(range(pos + 1, len(translated) + 1))
        folded = "".join(parts)
        lowered = folded.lower()
        if len(lowered) != len(folded):  # a few letters (e.g. "İ") grow when lowered
            lowered, starts, ends = self._lower_slowly(folded, starts, ends)
        self.text = lowered
        self.starts = starts
        self.ends = ends

    @staticmethod
    def _lower_slowly(
        folded: str, starts: list[int], ends: list[int]
    ) -> tuple[str, list[int], list[int]]:
        chars: list[str] = []
        new_starts: list[int] = []
        new_ends: list[int] = []
        for index, char in enumerate(folded):
            low = char.lower()
            chars.append(low)
            new_starts.extend([starts[index]] * len(low))
            new_ends.extend([ends[index]] * len(low))
        return "".join(chars), new_starts, new_ends

    def find(self, needle: str) -> list[tuple[int, int]]:
        """Original spans of a folded needle; a match never cuts a word in two."""
        spans: list[tuple[int, int]] = []
        if not needle:
            return spans
        text = self.text
        check_head = _is_word(needle[0])
        check_tail = _is_word(needle[-1])
        index = text.find(needle)
        while index != -1:
            end = index + len(needle)
            cut = (check_head and index > 0 and _is_word(text[index - 1])) or (
                check_tail and end < len(text) and _is_word(text[end])
            )
            if cut:
                index = text.find(needle, index + 1)
                continue
            spans.append((self.starts[index], self.ends[end - 1]))
            index = text.find(needle, end)
        return spans


def find_quote_spans(needle: str, haystack: str) -> list[tuple[int, int]]:
    """Where a quoted phrase occurs in a text, ignoring case, whitespace and quote style.

    Spans are offsets into the original ``haystack``; matches stop at word
    boundaries, so "hate" is not found inside "whatever".
    """
    return _FoldedText(haystack).find(_fold_phrase(needle))


@functools.lru_cache(maxsize=16)
def _known_pattern(rule_ids: frozenset[str]) -> tuple[re.Pattern[str], dict[str, str]]:
    """One regex for the known ids and their tier prefixes ("SP2" of "SP2.a")."""
    written: dict[str, str] = {}
    for rule_id in sorted(rule_ids):
        rule_id = rule_id.strip()
        if rule_id:
            written.setdefault(rule_id.lower(), rule_id)
    for rule_id in list(written.values()):
        pieces = rule_id.split(".")
        for size in range(1, len(pieces)):
            written.setdefault(".".join(pieces[:size]).lower(), ".".join(pieces[:size]))
    alternatives = "|".join(re.escape(k) for k in sorted(written, key=len, reverse=True))
    pattern = rf"(?<![A-Za-z0-9_])(?:{alternatives})(?![A-Za-z0-9_])" if written else r"(?!)"
    return re.compile(pattern, re.IGNORECASE), written


def find_rule_mentions(text: str, rule_ids: Collection[str] = ()) -> list[Span]:
    """Rule ids mentioned in a text; with known ids, only those (and their tiers) count."""
    if not rule_ids:
        return [Span(m.start(), m.end(), "rule", m.group()) for m in RULE_ID_RE.finditer(text)]
    pattern, written = _known_pattern(frozenset(rule_ids))
    return [
        Span(m.start(), m.end(), "rule", written[m.group().lower()]) for m in pattern.finditer(text)
    ]


def _decision_spans(text: str, pattern: re.Pattern[str]) -> list[Span]:
    return [
        Span(m.start(), m.end(), "decision", _DECISION_KEYS[m.lastgroup or "violation"])
        for m in pattern.finditer(text)
    ]


def _find_decisions(text: str, labels: tuple[str, str] | None = None) -> list[Span]:
    """Phrases that decide a verdict; the key is "violates" or "does_not_violate".

    ``labels`` is the policy's (safe, violation) word pair; its words are marked too,
    and win over a generic phrase they overlap.
    """
    spans = _decision_spans(text, DECISION_RE)
    pattern = label_pattern(labels) if labels else None
    if pattern is None:
        return spans
    return _without_overlap(_decision_spans(text, pattern), spans)


def _without_overlap(kept: list[Span], extra: Iterable[Span]) -> list[Span]:
    """``kept`` (sorted, disjoint) plus the ``extra`` spans that touch none of it."""
    starts = [span.start for span in kept]
    added = []
    for span in extra:
        index = bisect.bisect_left(starts, span.end)
        if index == 0 or kept[index - 1].end <= span.start:
            added.append(span)
    return sorted(kept + added, key=lambda span: span.start)


def _longest_first(spans: list[Span]) -> list[Span]:
    """Disjoint spans, preferring the longer one where two overlap."""
    kept: list[Span] = []
    starts: list[int] = []
    for span in sorted(spans, key=lambda s: (s.start - s.end, s.start)):
        index = bisect.bisect_left(starts, span.end)
        if index == 0 or kept[index - 1].end <= span.start:
            kept.insert(index, span)
            starts.insert(index, span.start)
    return kept


def highlight(
    reasoning: str,
    content: str,
    rule_ids: Collection[str] = (),
    labels: tuple[str, str] | None = None,
) -> Highlights:
    """Mark rule ids, quotes of the content and decision phrases in the reasoning.

    ``rule_ids`` are the policy's ids; empty means any id-shaped token counts.
    ``labels`` is the policy's (safe, violation) pair, marked as decisions too.
    Quotes the reasoning makes of anything not in the content (the policy, say)
    are not marked.
    """
    folded_content = _FoldedText(content)
    scan = reasoning.translate(_QUOTE_TABLE)
    groups: dict[str, int] = {}
    misses: set[str] = set()
    content_spans: list[Span] = []
    quote_spans: list[Span] = []
    for match in _QUOTED.finditer(scan):
        name = match.lastgroup or "double"
        phrase = match.group(name)
        key = _fold_phrase(phrase)
        if len(key) < _MIN_QUOTE or (name == "single" and " " not in key) or key in misses:
            continue
        if key not in groups:
            found = folded_content.find(key)
            if not found:
                misses.add(key)
                continue
            groups[key] = len(groups)
            content_spans.extend(Span(s, e, "quote", key, groups[key]) for s, e in found)
        start, end = match.span(name)
        start += len(phrase) - len(phrase.lstrip(_EDGE_PUNCTUATION + "\t"))
        end -= len(phrase) - len(phrase.rstrip(_EDGE_PUNCTUATION + "\t"))
        quote_spans.append(Span(start, end, "quote", key, groups[key]))

    with_rules = _without_overlap(quote_spans, find_rule_mentions(reasoning, rule_ids))
    spans = _without_overlap(with_rules, _find_decisions(reasoning, labels))
    mentioned = (span.key for span in spans if span.kind == "rule")
    return Highlights(
        reasoning=tuple(spans),
        content=tuple(_longest_first(content_spans)),
        rule_ids=tuple(dict.fromkeys(mentioned)),
        quotes=tuple(groups),
    )
