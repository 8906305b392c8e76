"""Text analysis of policy bodies (rule ids, sections, labels, output format) and lint.

Kept apart from `policy` so the heuristics can grow without crowding the loader.
Everything here works on plain strings; line numbers returned are lines of the
full file text (body line + front matter offset), 1-based.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from safeguard_desktop.core.vocabulary import (
    COMMON_LABELS,
    DECISION_RE,
    RULE_ID,
    RULE_ID_RE,
    SAFE_LABEL_WORDS,
    SAFE_WORDS,
    VIOLATION_LABEL_WORDS,
    VIOLATION_WORDS,
)

if TYPE_CHECKING:
    from safeguard_desktop.core.policy import Policy

SWEET_SPOT = (400, 600)
TOO_SHORT = 250
TOO_LONG = 1_500
FAR_TOO_LONG = 10_000
HEDGES = (
    "generally",
    "usually",
    "typically",
    "often",
    "may",
    "might",
    "sometimes",
    "as appropriate",
    "if possible",
    "probably",
)


@dataclass(frozen=True)
class LintIssue:
    """One finding of `lint`; `line` is a 1-based line in Policy.text."""

    code: str
    message: str
    severity: str  # "error" | "warning" | "info"
    line: int | None = None


@dataclass(frozen=True)
class RuleDef:
    """A place where a rule id is defined (several per id when duplicated)."""

    id: str
    line: int
    section: str
    text: str


@dataclass(frozen=True)
class SectionDef:
    title: str
    line: int
    level: int


def estimate_tokens(text: str) -> int:
    """Cheap token estimate: UTF-8 bytes / 4, rounded up (no tokenizer dependency).

    English averages about 4 characters per token with gpt-oss's o200k tokenizer;
    counting bytes rather than characters keeps emoji and non-Latin scripts (which
    cost more tokens per character) from being badly underestimated.
    """
    return -(-len(text.encode("utf-8")) // 4)


# --- line helpers -------------------------------------------------------------------

# Leading noise before a rule id or title: bullets, emoji, '#', '**', '>', '|', '('.
_LEAD = re.compile(r"^[^\w\"'“‘«]*(?:\d{1,3}[.)]\s+[^\w\"'“‘«]*)?")
_MENTION_AFTER = re.compile(
    rf"^\s*(?:,|and\b|or\b|to\b|through\b|\+|&|[-–—]\s*{RULE_ID}|/\s*{RULE_ID})", re.IGNORECASE
)
_MD_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_PAREN = re.compile(r"\(([^()]*)\)")
_PAREN_SPLIT = re.compile(r"[,;/]|\band\b|\bor\b")


def _lines(body: str) -> list[str]:
    return [line.rstrip("\r") for line in body.split("\n")]


def _fenced(lines: list[str]) -> list[bool]:
    """Which lines are inside (or delimit) a fenced code block."""
    out: list[bool] = []
    inside = False
    for line in lines:
        if _FENCE.match(line):
            out.append(True)
            inside = not inside
        else:
            out.append(inside)
    return out


def strip_title(line: str) -> str:
    """Heading text without '#', bullets, emoji and bold markers."""
    text = _LEAD.sub("", line.strip())
    text = re.sub(r"[\s#*_:]+$", "", text)
    return text.replace("**", "").replace("__", "").strip()


def _starts_with_symbol(line: str) -> bool:
    stripped = line.lstrip()
    return bool(stripped) and unicodedata.category(stripped[0]) == "So"


def _plain_heading(line: str) -> bool:
    """ALL CAPS lines ("DEFINITIONS") and emoji title lines ("✅ Allowed Content (SP0)")."""
    stripped = line.strip()
    if (
        not stripped
        or stripped.startswith("|")  # table row
        or len(stripped) > 120
        or stripped.endswith((".", "!", "?", ","))
    ):
        return False
    letters = [c for c in stripped if c.isalpha()]
    if len(letters) >= 3 and not any(c.islower() for c in letters) and len(stripped) <= 80:
        return bool(strip_title(stripped))
    if _starts_with_symbol(stripped):
        title = strip_title(stripped)
        return bool(title) and title[0].isupper() and ":" not in title
    return False


def _heading_levels(lines: list[str], fenced: list[bool]) -> dict[int, int]:
    """Index -> level of every heading line; Markdown headings win over plain-text ones."""
    md = {
        i: len(m.group(1))
        for i, line in enumerate(lines)
        if not fenced[i] and (m := _MD_HEADING.match(line)) and (m.group(2) or "").strip()
    }
    if md:
        return md
    return {i: 1 for i, line in enumerate(lines) if not fenced[i] and _plain_heading(line)}


def scan_sections(body: str, offset: int = 0) -> list[SectionDef]:
    lines = _lines(body)
    levels = _heading_levels(lines, _fenced(lines))
    return [
        SectionDef(title=strip_title(lines[i]), line=i + 1 + offset, level=level)
        for i, level in sorted(levels.items())
        if strip_title(lines[i])
    ]


def _line_start_id(line: str) -> str | None:
    text = _LEAD.sub("", line.strip())
    m = RULE_ID_RE.match(text)
    if m is None or _MENTION_AFTER.match(text[m.end() :]):
        return None
    return m.group()


def _paren_ids(line: str) -> Iterator[str]:
    for group in _PAREN.finditer(line):
        for item in _PAREN_SPLIT.split(group.group(1)):
            m = RULE_ID_RE.match(item.strip())
            if m:
                yield m.group()


def _clean_rule_line(line: str) -> str:
    text = line.strip()
    text = re.sub(r"^#{1,6}\s+", "", text)
    return re.sub(r"^(?:[-*+•]|\d{1,3}[.)])\s+", "", text).strip()


def scan_rules(body: str, offset: int = 0) -> list[RuleDef]:
    """Every rule-id definition in order, duplicates included."""
    lines = _lines(body)
    fenced = _fenced(lines)
    headings = _heading_levels(lines, fenced)
    ids_at: dict[int, list[str]] = {}
    for i, line in enumerate(lines):
        if fenced[i]:
            continue
        ids: list[str] = []
        first = _line_start_id(line)
        if first:
            ids.append(first)
        if i in headings:
            ids.extend(x for x in _paren_ids(line) if x not in ids)
        if ids:
            ids_at[i] = ids
    defs: list[RuleDef] = []
    section = ""
    for i, line in enumerate(lines):
        if i in headings:
            section = strip_title(line)
        if i not in ids_at:
            continue
        parts = [strip_title(line) if i in headings else _clean_rule_line(line)]
        j = i + 1
        while (
            j < len(lines)
            and lines[j].strip()
            and j not in headings
            and j not in ids_at
            and not fenced[j]
        ):
            parts.append(lines[j].strip())
            j += 1
        text = "\n".join(parts)
        defs.extend(
            RuleDef(id=x, line=i + 1 + offset, section=section, text=text) for x in ids_at[i]
        )
    return defs


# --- labels and output format -------------------------------------------------------

_NOT_LABELS = frozenset({"JSON", "YAML", "XML", "CSV", "ID", "IDS"})
_WORD = r"[\"'`“‘]?([A-Z][A-Z0-9_-]{1,30})[\"'`”’]?"
_QWORD = r"[\"'`“‘]([A-Za-z][\w-]{1,30})[\"'`”’]"
_GLOSS = r"\s*(?:\(([^)]{0,80})\))?\s*"
_LABEL_PATTERNS = (
    re.compile(
        r"\b(?:as|with|labels?|labell?ed|answer|output|respond|reply|mark|either)\s*:?\s+"
        rf"{_WORD}{_GLOSS}(?:or|/)\s+{_WORD}{_GLOSS}"
    ),
    re.compile(rf"{_QWORD}{_GLOSS}(?:or|/)\s+{_QWORD}{_GLOSS}"),
)
_NEGATION = re.compile(r"\b(?:no|not|non|none|never)\b", re.IGNORECASE)


def _polarity(word: str, gloss: str | None, other: str) -> int:
    """-1 reads as the safe label, +1 as the violation label, 0 unknown."""
    key = word.upper().replace("_", "-")
    okey = other.upper().replace("_", "-")
    if key.lower() in SAFE_LABEL_WORDS:
        return -1
    if key.lower() in VIOLATION_LABEL_WORDS:
        return 1
    if key.replace("-", "") in {f"NON{okey}", f"NOT{okey}"}:
        return -1
    if key in {f"UN{okey}", f"IN{okey}"}:
        return 1
    if gloss and _NEGATION.search(gloss):
        return -1
    return 0


def detect_labels(body: str) -> tuple[str, str] | None:
    """(safe, violation) from phrases like "as VALID (no spam) or INVALID (spam)"."""
    for pattern in _LABEL_PATTERNS:
        for m in pattern.finditer(body):
            a, ga, b, gb = m.group(1), m.group(2), m.group(3), m.group(4)
            if a.upper() == b.upper() or {a.upper(), b.upper()} & _NOT_LABELS:
                continue
            pa, pb = _polarity(a, ga, b), _polarity(b, gb, a)
            if pa < pb:
                return a, b
            if pb < pa:
                return b, a
    return None


_OUTPUT_TRIGGER = re.compile(
    r"^(?:output|response|answer|reply|return|respond|format|label)\b"
    r"|\b(?:output|response|answer)\s+format\b"
    r"|\b(?:respond|answer|reply|return|output)\s+(?:only\s+|exactly\s+)?"
    r"(?:with|in|as|one|json|only|exactly)\b"
    r"|\boutput\s*:",
    re.IGNORECASE,
)
_OUTPUT_VALUE = re.compile(r"\{|\bjson\b|(?<![\w.])[01](?![\w.])", re.IGNORECASE)
_LABEL_WORDS = re.compile(r"\b(?:" + "|".join(w.upper() for w in COMMON_LABELS) + r")\b")


def mentions_output_format(body: str, labels: tuple[str, str] | None) -> bool:
    """True when an output line (plus up to 3 following lines) says JSON, 0/1 or labels.

    A sentence that names both labels ("Classify each post as VALID or INVALID") counts too.
    """
    if detect_labels(body) is not None:
        return True
    lines = [_LEAD.sub("", line.strip()) for line in _lines(body)]
    label_re = (
        re.compile(r"\b(?:" + "|".join(re.escape(x) for x in labels) + r")\b") if labels else None
    )
    for i, line in enumerate(lines):
        if not _OUTPUT_TRIGGER.search(line):
            continue
        window = "\n".join([line, *[x for x in lines[i + 1 :] if x][:3]])
        if _OUTPUT_VALUE.search(window) or _LABEL_WORDS.search(window):
            return True
        if label_re is not None and label_re.search(window):
            return True
    return False


# --- lint ---------------------------------------------------------------------------


def _words(words: frozenset[str]) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))


# Beyond the decision phrases, a heading names its side with a side word ("Allowed",
# "Not permitted", "Prohibited content"), a score "(0)"/"(1)" or "likely".
_HEADING_WORDS = re.compile(
    r"(?<![\w-])(?:"
    rf"(?P<not_safe>(?:not|never)\s+(?:{_words(SAFE_WORDS)}))"
    rf"|(?P<not_violation>(?:not|never)\s+(?:{_words(VIOLATION_WORDS)}))"
    rf"|(?P<safe>{_words(SAFE_WORDS)})"
    rf"|(?P<violation>{_words(VIOLATION_WORDS)}|prohibit\w*|disallow\w*|likely)"
    r")(?![\w-])"
    r"|(?P<zero>\(0\))|(?P<one>\(1\))",
    re.IGNORECASE,
)
_HEADING_SIDES = {
    "safe": "safe",
    "not_violation": "safe",
    "zero": "safe",
    "violation": "violation",
    "not_safe": "violation",
    "one": "violation",
}
_SCORE_LINE = re.compile(r"^([01])\s*(?:=|:|→|->|\)|–|—|-)\s*\S")
_SCORE_ANY = re.compile(r"(?<![\w.])([01])\s*(?:=|→|->)\s*[A-Za-z]")
_EXAMPLES = re.compile(r"\bexamples?\b", re.IGNORECASE)
_QUOTED = re.compile(r"\"[^\"]*\"|“[^”]*”|‘[^’]*’|«[^»]*»|`[^`]*`|(?<!\w)'[^']*'(?!\w)")
_HEDGE_RE = re.compile(
    r"\b(" + "|".join(re.escape(h).replace(r"\ ", r"\s+") for h in HEDGES) + r")\b",
    re.IGNORECASE,
)


def _heading_sides(text: str) -> set[str]:
    """The sides ("violation", "safe") a heading names: decision phrases, then side words."""
    sides: set[str] = set()

    def take(match: re.Match[str]) -> str:
        sides.add(match.lastgroup or "")
        return " "

    rest = DECISION_RE.sub(take, text)
    sides.update(_HEADING_SIDES[str(m.lastgroup)] for m in _HEADING_WORDS.finditer(rest))
    return sides


def _sides(lines: list[str], headings: dict[int, int]) -> tuple[bool, bool]:
    """Whether the body has a 'violates' part and a 'does not violate' part."""
    violates = safe = False
    for i, raw in enumerate(lines):
        text = _LEAD.sub("", raw.strip())
        scores = {m.group(1) for m in _SCORE_ANY.finditer(text)}
        if score := _SCORE_LINE.match(text):
            scores.add(score.group(1))
        violates = violates or "1" in scores
        safe = safe or "0" in scores
        if score:
            continue
        bold = raw.strip().startswith(("**", "__"))
        if i in headings or bold or text.endswith(":"):
            candidate = text
        elif ":" in text[:60]:  # "Violations: content that ..."
            candidate = text.split(":", 1)[0]
        else:
            continue
        found = _heading_sides(candidate)
        violates = violates or "violation" in found
        safe = safe or "safe" in found
    return violates, safe


def _size_issue(tokens: int) -> LintIssue:
    low, high = SWEET_SPOT
    if tokens > FAR_TOO_LONG:
        return LintIssue(
            "size",
            f"The policy is about {tokens:,} tokens, past the model's ~10,000 limit; "
            "split it into several policies.",
            "error",
        )
    if tokens > TOO_LONG:
        return LintIssue(
            "size",
            f"The policy is about {tokens:,} tokens; trim it towards {low}-{high} tokens "
            "for better accuracy.",
            "warning",
        )
    if tokens < TOO_SHORT:
        return LintIssue(
            "size",
            f"The policy is only about {tokens} tokens; add definitions, rules and examples "
            f"(aim for {low}-{high}).",
            "warning",
        )
    where = "inside" if low <= tokens <= high else "outside"
    return LintIssue(
        "size",
        f"The policy is about {tokens} tokens, {where} the {low}-{high} sweet spot; "
        "no action needed.",
        "info",
    )


def lint_policy(policy: Policy) -> list[LintIssue]:
    """Check the body against OpenAI's usage guide; "clean" means no error or warning."""
    offset = policy.body_offset_lines
    lines = _lines(policy.body)
    fenced = _fenced(lines)
    headings = _heading_levels(lines, fenced)
    issues: list[LintIssue] = []
    violates, safe = _sides(lines, headings)
    if not violates:
        issues.append(
            LintIssue(
                "missing-violates",
                "Add a 'Violates (1)' section that lists what breaks the policy.",
                "warning",
            )
        )
    if not safe:
        issues.append(
            LintIssue(
                "missing-safe",
                "Add a 'Does not violate (0)' section that lists allowed look-alikes.",
                "warning",
            )
        )
    if not _EXAMPLES.search(policy.body):
        issues.append(
            LintIssue(
                "missing-examples",
                "Add an 'Examples' section with a handful of labelled examples.",
                "warning",
            )
        )
    if policy.output is None and not policy.states_output_format():
        issues.append(
            LintIssue(
                "missing-output",
                "State the output format near the top (e.g. 'Answer 1 if it violates, 0 if not') "
                "or set `output:` in the front matter.",
                "warning",
            )
        )
    defs = scan_rules(policy.body, offset)
    first_line: dict[str, int] = {}
    for d in defs:
        if d.id in first_line:
            issues.append(
                LintIssue(
                    "duplicate-rule",
                    f"Rule id {d.id} is defined on lines {first_line[d.id]} and {d.line}; "
                    "give each rule its own id.",
                    "warning",
                    d.line,
                )
            )
        else:
            first_line[d.id] = d.line
    if not defs:
        issues.append(
            LintIssue(
                "no-rules",
                "No rule ids (such as HS2.a) found; number the rules so verdicts can cite them.",
                "info",
            )
        )
    for i, line in enumerate(lines):
        if fenced[i]:
            continue
        for m in _HEDGE_RE.finditer(_QUOTED.sub(" ", line)):
            word = " ".join(m.group(1).split())
            issues.append(
                LintIssue(
                    "hedge-word",
                    f"Replace the hedge '{word}' with an exact condition, or delete it.",
                    "warning",
                    i + 1 + offset,
                )
            )
    issues.append(_size_issue(estimate_tokens(policy.body)))
    return issues
