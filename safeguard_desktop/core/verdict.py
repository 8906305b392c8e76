"""Read gpt-oss-safeguard's final answer as a Verdict.

The model follows a policy's output instruction only loosely: a bare ``0``/``1``,
JSON (alone, fenced or inside prose), the policy's own label words, or plain
phrases such as "does not violate". Anything else becomes an explicit
*unparsed* verdict, and a run cut at the context limit (or a JSON answer cut off
before its end) an *incomplete* one, so a moderator never sees a guess. Two answers
that disagree are unparsed, both quoted in the problem. The raw answer is always kept.
"""

from __future__ import annotations

import ast
import json
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from safeguard_desktop.core.vocabulary import (
    CONFIDENCE_WORDS,
    DECISION_RE,
    RULE_ID_RE,
    SAFE_ANSWERS,
    VERDICT_LABELS,
    VIOLATION_ANSWERS,
    VerdictLabel,
    label_pattern,
)

LENGTH_PROBLEM = (
    "The model stopped at the context limit (done_reason=length); raise num_ctx in Settings "
    "(Ollama), or the server's own window on an OpenAI-compatible host (vLLM "
    "--max-model-len, llama-server --ctx-size), and run it again."
)
EMPTY_PROBLEM = "The model returned no answer after its reasoning; run the review again."
UNREADABLE_PROBLEM = (
    "The answer is not 0/1, JSON or one of the policy's labels; "
    "state the output format in the policy and run it again."
)
JSON_PROBLEM = (
    'The JSON answer has no readable "violation" value; '
    "state the output format in the policy and run it again."
)
CONTRADICTION_PROBLEM = "The answer says both {0} and {1}; read the reasoning and decide by hand."
CUT_OFF_PROBLEM = (
    "The JSON answer is cut off before its end, so it is no verdict; run the review again."
)
TWO_ANSWERS_PROBLEM = (
    "The answer holds two answers that disagree, {0} and {1}; "
    "read the reasoning and decide by hand."
)
STORED_PROBLEM = "The stored answer could not be read as a verdict; run the review again."


@dataclass(frozen=True)
class Verdict:
    """One review's outcome; ``problem`` says why when there is no decision."""

    label: VerdictLabel
    violation: bool | None
    category: str | None = None
    rule_ids: tuple[str, ...] = ()
    confidence: str | None = None
    rationale: str | None = None
    raw: str = ""
    problem: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The decision fields for storage and export (raw and problem live apart)."""
        return {
            "label": self.label,
            "violation": self.violation,
            "category": self.category,
            "rule_ids": list(self.rule_ids),
            "confidence": self.confidence,
            "rationale": self.rationale,
        }


# --- shared pieces --------------------------------------------------------

_EDGE_MARKUP = " \t\r\n*_`'\"()[].,:;!"

# "Answer: 1", "**Label:** INVALID", "Violation: no" — a line that states the decision.
_PREFIX = (
    r"^[\s*_#>\-]*(?:final\s+)?(?:answer|output|label|verdict|classification|result"
    r"|decision|violation|prediction)\b[\s*_]*[:=\-–]"
)
_PREFIXED_VALUE = re.compile(
    _PREFIX + r"[\s*_`'\"(\[]*([01]|yes|no|true|false)(?![\w]|[.,]\d)",
    re.IGNORECASE,
)
_PREFIXED_LINE = re.compile(_PREFIX, re.IGNORECASE)
_BARE = re.compile(r"[\s*_`'\"(\[]*([01])[\s*_`'\".)\]]*")
_CONFIDENCE_LINE = re.compile(
    r"\bconfidence\b[\s*_]*[:=]\s*([A-Za-z]+|\d{1,3}(?:\.\d+)?\s*%?)", re.IGNORECASE
)


def _unparsed(raw: str, problem: str) -> Verdict:
    return Verdict(label="unparsed", violation=None, raw=raw, problem=problem)


def _tier(rule_id: str) -> str:
    return rule_id.split(".", 1)[0]


def _tier_number(rule_id: str) -> int:
    digits = re.search(r"(\d{1,4})$", _tier(rule_id))
    return int(digits.group(1)) if digits else 1


def _dedupe(items: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))


def _pick_category(rule_ids: Sequence[str], escalate: Sequence[str]) -> str | None:
    """Most severe tier: one the policy escalates, else the highest number, else the first."""
    tiers = _dedupe([_tier(r) for r in rule_ids])
    if not tiers:
        return None
    wanted = {e.strip().upper() for e in escalate if e.strip()}
    for rule_id in rule_ids:
        if rule_id.upper() in wanted or _tier(rule_id).upper() in wanted:
            return _tier(rule_id)
    return max(tiers, key=_tier_number)


def _confidence(value: object) -> str | None:
    """Words become low/medium/high; a number becomes a 0..1 string such as "0.82"."""
    if value is None or isinstance(value, bool):
        return None
    number: float | None = None
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:  # an int of hundreds of digits
            return None
    elif isinstance(value, str):
        text = value.strip().strip(".").strip()
        match = re.fullmatch(r"(\d{1,3}(?:\.\d+)?|\.\d+)\s*(%?)", text)
        if match:
            number = float(match.group(1))
            if match.group(2):
                number /= 100
        else:
            for word in re.findall(r"[a-z]+", text.lower()):
                if word in CONFIDENCE_WORDS:
                    return CONFIDENCE_WORDS[word]
            return text[:40] or None
    if number is None or math.isnan(number) or number < 0:
        return None
    if 1 < number <= 100:
        number /= 100
    return format(round(number, 4), "g") if number <= 1 else None


def _truth(value: object, labels: tuple[str, str] | None) -> bool | None:
    """Whether one decision value means "violates"; None when it cannot tell."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return True if value == 1 else False if value == 0 else None
    if not isinstance(value, str):
        return None
    text = " ".join(value.strip(_EDGE_MARKUP).lower().split())
    if text in VIOLATION_ANSWERS:
        return True
    if text in SAFE_ANSWERS:
        return False
    pattern = label_pattern(labels) if labels else None
    for candidate in (pattern, DECISION_RE):
        found = {m.lastgroup for m in candidate.finditer(text)} if candidate else set()
        if len(found) == 1:
            return found == {"violation"}
    ids = RULE_ID_RE.findall(value)
    if len(ids) == 1 and not re.search(r"[A-Za-z]{2,}", RULE_ID_RE.sub(" ", value)):
        return _tier_number(ids[0]) > 0
    return None


# --- JSON -----------------------------------------------------------------

_BRACE_TOKEN = re.compile(r'\\.|[{}"]', re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_PRIMARY_KEYS = ("violation", "violates", "is_violation", "violating", "flagged")
_SECONDARY_KEYS = ("label", "answer", "result", "classification", "decision", "verdict", "output")
_CATEGORY_KEYS = ("policy_category", "category", "categories", "violation_category")
_RULE_KEYS = ("rule_ids", "rules", "rule_id", "rule", "violated_rules", "rules_violated")
_CONFIDENCE_KEYS = ("confidence", "confidence_level", "certainty")
_RATIONALE_KEYS = ("rationale", "reason", "reasoning", "explanation", "justification")
_DECISION_KEYS = _PRIMARY_KEYS + _SECONDARY_KEYS
_MAX_CANDIDATES = 64


def _brace_spans(text: str, strings: bool) -> list[tuple[int, int]]:
    """Balanced {...} spans; with ``strings`` braces inside JSON strings are skipped."""
    stack: list[int] = []
    spans: list[tuple[int, int]] = []
    in_string = False
    for match in _BRACE_TOKEN.finditer(text):
        token = match.group()
        if token[0] == "\\":
            continue
        if in_string:
            in_string = token != '"'
        elif token == '"':
            in_string = strings and bool(stack)
        elif token == "{":
            stack.append(match.start())
        elif stack:
            spans.append((stack.pop(), match.end()))
    return spans


class _Object(dict[str, object]):
    """A JSON object that remembers every value of a key given more than once."""

    repeated: dict[str, list[object]]


def _pairs(pairs: list[tuple[str, object]]) -> _Object:
    obj = _Object(pairs)
    obj.repeated = {}
    for key, value in pairs:
        obj.repeated.setdefault(key, []).append(value)
    obj.repeated = {k: v for k, v in obj.repeated.items() if len(v) > 1}
    return obj


def _load_object(text: str) -> dict[str, object] | None:
    """json first, then the usual slips: trailing commas, Python-style quotes."""
    for attempt in (text, _TRAILING_COMMA.sub(r"\1", text)):
        try:
            value = json.loads(attempt, object_pairs_hook=_pairs)
        except (ValueError, RecursionError):
            continue
        return value if isinstance(value, dict) else None
    if len(text) > 4000:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    return value if isinstance(value, dict) else None


@dataclass(frozen=True)
class _JsonAnswer:
    obj: dict[str, object]  # keys stripped and lower-cased
    start: int
    end: int
    quote: str  # how the problem shows it


def _find_json(text: str) -> list[_JsonAnswer] | None:
    """Every {...} in the answer that parses and carries a decision key, outermost only.

    An object that gives a decision key twice counts once per value. When objects
    parse but none has a decision key, one empty answer: the model answered in JSON
    but left the decision out, which no other reading of the text should paper over.
    None: the answer holds no JSON object.
    """
    spans = sorted(set(_brace_spans(text, True)) | set(_brace_spans(text, False)))
    found: list[_JsonAnswer] = []
    parsed = False
    for start, end in spans[:_MAX_CANDIDATES]:
        if any(a.start <= start and end <= a.end for a in found):
            continue  # inside an answer already taken
        obj = _load_object(text[start:end])
        if not obj:
            continue
        parsed = True
        keyed = {str(k).strip().lower(): v for k, v in obj.items()}
        if not any(k in keyed for k in _DECISION_KEYS):
            continue
        found.append(_JsonAnswer(keyed, start, end, _quote(text[start:end])))
        for key, values in getattr(obj, "repeated", {}).items():
            name = str(key).strip().lower()
            for value in values[:-1] if name in _DECISION_KEYS else ():  # json kept the last
                shown = f"{json.dumps(key)}: {json.dumps(value, default=str)}"
                found.append(_JsonAnswer({**keyed, name: value}, start, end, _quote(shown)))
    if not found and parsed:
        return [_JsonAnswer({}, 0, 0, "")]
    return found or None


def _quote(text: str, limit: int = 120) -> str:
    """One line of an answer for a problem sentence."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _cut_off(text: str) -> bool:
    """Whether the answer ends inside a JSON object it opened, e.g. '{"violation": 1, "rat'.

    Braces in prose do not count unless a key (or nothing) follows them.
    """
    stack: list[int] = []
    in_string = False
    for match in _BRACE_TOKEN.finditer(text):
        token = match.group()
        if token[0] == "\\":
            continue
        if in_string:
            in_string = token != '"'
        elif token == '"':
            in_string = bool(stack)
        elif token == "{":
            stack.append(match.start())
        elif stack:
            stack.pop()
    return any(_OPENS_OBJECT.match(text, start + 1) for start in stack)


_OPENS_OBJECT = re.compile(r"""\s*(?:["']|$)""")


def _first(obj: Mapping[str, object], keys: Sequence[str]) -> object:
    return next((obj[k] for k in keys if k in obj and obj[k] is not None), None)


def _as_text(value: object) -> str | None:
    if isinstance(value, list | tuple):
        value = ", ".join(str(v) for v in value if v is not None)
    if value is None or isinstance(value, bool):
        return None
    text = str(value).strip()
    return None if text.lower() in ("", "null", "none", "n/a") else text


def _as_rule_ids(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        items = re.split(r"[,;\s]+", value)
    elif isinstance(value, list | tuple):
        items = [str(v) for v in value if isinstance(v, str | int) and not isinstance(v, bool)]
    else:
        return ()
    return _dedupe([i.strip().strip(_EDGE_MARKUP) for i in items if i.lower() != "none"])


def _from_json(
    obj: Mapping[str, object], raw: str, labels: tuple[str, str] | None, escalate: Sequence[str]
) -> Verdict:
    primary = _truth(_first(obj, _PRIMARY_KEYS), labels)
    secondary = _truth(_first(obj, _SECONDARY_KEYS), labels)
    if primary is not None and secondary is not None and primary != secondary:
        return _unparsed(raw, CONTRADICTION_PROBLEM.format("violation", "safe"))
    violation = primary if primary is not None else secondary
    if violation is None:
        return _unparsed(raw, JSON_PROBLEM)
    rule_ids = _as_rule_ids(_first(obj, _RULE_KEYS))
    decision = _first(obj, _SECONDARY_KEYS)
    if not rule_ids and isinstance(decision, str):
        rule_ids = _dedupe(RULE_ID_RE.findall(decision))
    category_value = _first(obj, _CATEGORY_KEYS)
    if isinstance(category_value, list | tuple):
        category_value = category_value[0] if category_value else None
    category = _as_text(category_value)
    if category is None and violation:
        category = _pick_category(rule_ids, escalate)
    return Verdict(
        label="violation" if violation else "safe",
        violation=violation,
        category=category,
        rule_ids=rule_ids,
        confidence=_confidence(_first(obj, _CONFIDENCE_KEYS)),
        rationale=_as_text(_first(obj, _RATIONALE_KEYS)),
        raw=raw,
    )


def _from_answers(
    answers: Sequence[_JsonAnswer],
    text: str,
    raw: str,
    labels: tuple[str, str] | None,
    escalate: Sequence[str],
) -> Verdict:
    """The first JSON answer, unless another answer in the output decides the other way."""
    first, verdict = answers[0], _from_json(answers[0].obj, raw, labels, escalate)
    if verdict.violation is None:
        return verdict
    for other in answers[1:]:
        decided = _from_json(other.obj, raw, labels, escalate).violation
        if decided is not None and decided != verdict.violation:
            return _unparsed(raw, TWO_ANSWERS_PROBLEM.format(first.quote, other.quote))
    # A "0"/"1" line or "Answer: ..." outside the JSON is an answer too.
    outside = list(text)
    for answer in answers:
        outside[answer.start : answer.end] = [
            c if c == "\n" else " " for c in text[answer.start : answer.end]
        ]
    rest = "".join(outside)
    said = _from_digits(rest) if rest.strip() else None
    if isinstance(said, str):
        return _unparsed(raw, said)
    if said is not None and said[0] != verdict.violation:
        lines = rest.splitlines(keepends=True)
        index = said[1] or 0
        both = [first.quote, _quote(lines[index])]
        if len("".join(lines[:index])) < first.start:  # in the order the model wrote them
            both.reverse()
        return _unparsed(raw, TWO_ANSWERS_PROBLEM.format(*both))
    return verdict


_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _scrub(verdict: Verdict) -> Verdict:
    """No lone surrogate (a JSON escape such as \\ud800) in the fields that are stored and
    shown: each becomes U+FFFD. ``raw`` stays the answer as given."""

    def clean(value: str | None) -> str | None:
        return None if value is None else _SURROGATE.sub("\ufffd", value)

    return replace(
        verdict,
        category=clean(verdict.category),
        rule_ids=tuple(clean(r) or "" for r in verdict.rule_ids),
        confidence=clean(verdict.confidence),
        rationale=clean(verdict.rationale),
        problem=clean(verdict.problem),
    )


# --- plain-text answers ---------------------------------------------------


def _decide(text: str, pattern: re.Pattern[str]) -> tuple[bool, int] | str | None:
    """(violates, decision line) or, when the answer takes both sides, the problem.

    A "Label: ..." line decides first; then words of one side only; then the
    first line that names a side, if it names only one.
    """
    hits: list[tuple[int, set[str]]] = []
    words: dict[str, str] = {}
    for index, line in enumerate(text.splitlines()):
        found: set[str] = set()
        for match in pattern.finditer(line):
            side = match.lastgroup or ""
            found.add(side)
            words.setdefault(side, " ".join(match.group().split()))
        if len(found) == 1 and _PREFIXED_LINE.match(line):
            return found == {"violation"}, index
        if found:
            hits.append((index, found))
    if not hits:
        return None
    first_line, first = hits[0]
    if len(words) == 1 or len(first) == 1:
        return first == {"violation"}, first_line
    return CONTRADICTION_PROBLEM.format(words["violation"], words["safe"])


def _from_text(
    violation: bool,
    text: str,
    raw: str,
    escalate: Sequence[str],
    decision_line: int | None,
) -> Verdict:
    """A decision found in plain text; rule ids and a confidence line fill the rest."""
    rule_ids = _dedupe(RULE_ID_RE.findall(text))
    if violation and any(_tier_number(r) > 0 for r in rule_ids):
        rule_ids = tuple(r for r in rule_ids if _tier_number(r) > 0)
    rationale = None
    if decision_line is not None:
        rest = [line for i, line in enumerate(text.splitlines()) if i != decision_line]
        rationale = "\n".join(rest).strip() or None
    confidence = _CONFIDENCE_LINE.search(text)
    return Verdict(
        label="violation" if violation else "safe",
        violation=violation,
        category=_pick_category(rule_ids, escalate),
        rule_ids=rule_ids,
        confidence=_confidence(confidence.group(1)) if confidence else None,
        rationale=rationale,
        raw=raw,
    )


def _from_digits(text: str) -> tuple[bool, int | None] | str | None:
    """0/1 alone, on the first line, or after "Answer:"; a str is a contradiction."""
    lines = text.splitlines()
    bare = _BARE.fullmatch(lines[0])
    if bare:
        return bare.group(1) == "1", 0
    found: dict[bool, int] = {}
    for index, line in enumerate(lines):
        match = _PREFIXED_VALUE.match(line)
        if match:
            found.setdefault(match.group(1).lower() in ("1", "yes", "true"), index)
    if len(found) > 1:
        return CONTRADICTION_PROBLEM.format("1", "0")
    return next(iter(found.items()), None)


def _from_tiers(text: str) -> bool | None:
    """An answer made only of tier ids ("D-SP4, R-SP0", "SP0"): any tier above 0 violates."""
    ids = RULE_ID_RE.findall(text)
    if not ids:
        return None
    residue = re.findall(r"[A-Za-z]{2,}", RULE_ID_RE.sub(" ", text))
    if len(residue) > 3:
        return None
    return any(_tier_number(r) > 0 for r in ids)


def parse_verdict(
    answer: str,
    *,
    done_reason: str | None = "stop",
    labels: tuple[str, str] | None = None,
    escalate: Sequence[str] = (),
) -> Verdict:
    """Read the model's final answer; never raises.

    ``labels`` is the policy's (safe, violation) word pair, e.g. ("VALID", "INVALID");
    ``escalate`` lists category ids the policy escalates, preferred as ``category``
    when an answer names several tiers.
    """
    raw = answer if isinstance(answer, str) else str(answer)
    labels = (str(labels[0]), str(labels[1])) if labels and len(labels) == 2 else None
    if done_reason == "length":
        return Verdict(label="incomplete", violation=None, raw=raw, problem=LENGTH_PROBLEM)
    text = raw.strip()
    if not text:
        return _unparsed(raw, EMPTY_PROBLEM)

    return _scrub(_read(text, raw, labels, escalate))


def _read(text: str, raw: str, labels: tuple[str, str] | None, escalate: Sequence[str]) -> Verdict:
    if _cut_off(text):
        return Verdict(label="incomplete", violation=None, raw=raw, problem=CUT_OFF_PROBLEM)
    answers = _find_json(text)
    if answers is not None:
        return _from_answers(answers, text, raw, labels, escalate)

    digits = _from_digits(text)
    if isinstance(digits, str):
        return _unparsed(raw, digits)
    if digits is not None:
        return _from_text(digits[0], text, raw, escalate, digits[1])

    patterns = [label_pattern(labels) if labels else None, DECISION_RE]
    for pattern in patterns:
        decided = _decide(text, pattern) if pattern is not None else None
        if isinstance(decided, str):
            return _unparsed(raw, decided)
        if decided is not None:
            return _from_text(decided[0], text, raw, escalate, decided[1])

    tiers = _from_tiers(text)
    if tiers is not None:
        return _from_text(tiers, text, raw, escalate, None)
    return _unparsed(raw, UNREADABLE_PROBLEM)


def verdict_from_dict(d: Mapping[str, object], raw: str = "") -> Verdict:
    """Rebuild a stored verdict (the inverse of ``Verdict.to_dict``); tolerant of old rows."""
    label = d.get("label")
    violation = d.get("violation")
    decided = violation if isinstance(violation, bool) else _truth(violation, None)
    if label not in VERDICT_LABELS:
        label = "unparsed" if decided is None else ("violation" if decided else "safe")
    rule_ids = d.get("rule_ids")
    problem = d.get("problem")
    undecided = label in ("unparsed", "incomplete")
    if undecided and not isinstance(problem, str):
        problem = LENGTH_PROBLEM if label == "incomplete" else STORED_PROBLEM
    return Verdict(
        label=label,  # type: ignore[arg-type]
        violation=None if undecided else label == "violation",
        category=_as_text(d.get("category")),
        rule_ids=_as_rule_ids(rule_ids) if isinstance(rule_ids, list | tuple) else (),
        confidence=_confidence(d.get("confidence")),
        rationale=d.get("rationale") if isinstance(d.get("rationale"), str) else None,  # type: ignore[arg-type]
        raw=raw,
        problem=problem if undecided else None,  # type: ignore[arg-type]
    )
