"""The words the app shares: efforts, verdict labels, review statuses, rule ids, decisions.

Defined once so the verdict parser, the highlighter, the policy linter and the UI agree:
a word that decides a verdict is the word the highlighter marks, and a rule id the linter
finds in a policy is the id the parser reads in an answer.
"""

from __future__ import annotations

import functools
import re
from typing import Literal

# --- efforts and confidence ---------------------------------------------------------

Effort = Literal["low", "medium", "high"]
EFFORTS: tuple[Effort, ...] = ("low", "medium", "high")

CONFIDENCE_LEVELS = ("low", "medium", "high")
# Words a model writes for its confidence, and the level each one means.
CONFIDENCE_WORDS = {
    "low": "low",
    "medium": "medium",
    "med": "medium",
    "moderate": "medium",
    "mid": "medium",
    "high": "high",
}

# --- verdicts and reviews -----------------------------------------------------------

VerdictLabel = Literal["violation", "safe", "unparsed", "incomplete"]
VERDICT_LABELS: tuple[VerdictLabel, ...] = ("violation", "safe", "unparsed", "incomplete")

ReviewStatus = Literal["running", "done", "failed", "cancelled", "interrupted"]
REVIEW_STATUSES: tuple[ReviewStatus, ...] = (
    "running",
    "done",
    "failed",
    "cancelled",
    "interrupted",
)
FINAL_STATUSES: tuple[ReviewStatus, ...] = ("done", "failed", "cancelled")

# --- rule ids -----------------------------------------------------------------------

# A rule id as policies write them: SP2, HS2.a, H2.f, R1.1, VE2.a.i. Digits are bounded so
# int() never meets a huge number. In "D-SP4" (a tier with a prefix) the id is SP4.
RULE_ID = r"[A-Z]{1,4}[0-9]{1,4}(?:\.[A-Za-z0-9]{1,3}){0,2}"
RULE_ID_RE = re.compile(rf"(?<![A-Za-z0-9_]){RULE_ID}(?![A-Za-z0-9_])")

# --- label words --------------------------------------------------------------------

# Words that name one side as a label, a whole answer or a policy heading. In running
# text only the decision phrases below decide ("a valid point" decides nothing).
SAFE_WORDS = frozenset(
    {"safe", "valid", "allowed", "permitted", "acceptable", "benign", "compliant"}
    | {"non-violating", "nonviolating", "not-violating", "no-violation"}
)
VIOLATION_WORDS = frozenset(
    {"violation", "violating", "violates", "violated", "unsafe", "invalid", "disallowed"}
    | {"prohibited", "forbidden", "unacceptable", "harmful", "non-compliant", "noncompliant"}
)
# Label words a policy may ask for ("REMOVE or KEEP"); they name a side only as a label
# or as the whole answer, never inside running text.
SAFE_LABEL_WORDS = SAFE_WORDS | frozenset(
    {"allow", "accept", "approve", "approved", "ok", "pass", "clean", "keep", "negative"}
    | {"ham", "non-spam", "not-spam", "no", "false"}
)
VIOLATION_LABEL_WORDS = VIOLATION_WORDS | frozenset(
    {"flag", "flagged", "block", "blocked", "deny", "denied", "reject", "rejected", "remove"}
    | {"fail", "toxic", "abusive", "spam", "positive", "yes", "true"}
)
# Whole answers (a JSON value, a stored verdict) that decide, in lower case.
SAFE_ANSWERS = SAFE_LABEL_WORDS | {"0", "n", "none"}
VIOLATION_ANSWERS = VIOLATION_LABEL_WORDS | {"1", "y"}
# Label words common enough that an output line naming one states the output format.
COMMON_LABELS = ("valid", "invalid", "safe", "unsafe", "violation", "violating", "yes", "no")

# --- decision phrases ---------------------------------------------------------------

_AUX = r"(?:(?:does|do|did|would|will|is|was|are)\s+)?"
_NOT = r"(?:not|never)\s+"
_NT = r"\w+n['’]t\s+"  # doesn't, isn't, won't
_VIOLATE = r"(?:in\s+|a\s+)?violat\w*"
_SAFE_WORD = r"(?:safe|allowed|compliant)"
# Phrases that decide a verdict inside running text, as regex alternatives. The negated
# forms come first and start earlier, so "does not violate" is never read as "violate".
SAFE_PHRASES = (
    _AUX + _NOT + _VIOLATE,
    _NT + _VIOLATE,
    r"cannot\s+violate",
    r"without\s+violating",
    r"no\s+violations?",
    r"non-?violat\w*",
    _SAFE_WORD,
)
VIOLATION_PHRASES = (
    _AUX + _NOT + _SAFE_WORD,
    _NT + _SAFE_WORD,
    r"violat(?:es|e|ed|ing|ion|ions)",
    r"unsafe",
    r"non-?compliant",
    r"disallowed",
)
# Every decision phrase; the group that matched ("safe" or "violation") is the side.
DECISION_RE = re.compile(
    r"(?<![\w-])(?:"
    rf"(?P<safe>{'|'.join(SAFE_PHRASES)})"
    rf"|(?P<violation>{'|'.join(VIOLATION_PHRASES)})"
    r")(?![\w-])",
    re.IGNORECASE,
)


def _phrase(words: str) -> str:
    return r"\s+".join(re.escape(word) for word in words.split())


@functools.lru_cache(maxsize=32)
def label_pattern(labels: tuple[str, str]) -> re.Pattern[str] | None:
    """The policy's own (safe, violation) words as a regex with groups "safe"/"violation".

    None when the pair cannot tell the sides apart (empty or equal words).
    """
    safe, bad = (label.strip() for label in labels)
    if not safe or not bad or safe.lower() == bad.lower():
        return None
    # The longer label first, so "NOT SAFE" is never read as "SAFE".
    parts = sorted(
        [("safe", safe), ("violation", bad)], key=lambda pair: len(pair[1]), reverse=True
    )
    body = "|".join(f"(?P<{name}>{_phrase(word)})" for name, word in parts)
    return re.compile(rf"(?<![\w-])(?:{body})(?![\w-])", re.IGNORECASE)


# --- the outcome a moderator made -----------------------------------------------------

# The decisions that settle a review's outcome; the latest one counts ("retracted" undoes).
OUTCOME_ACTIONS = ("agree", "override", "escalate", "retracted")


def human_label(decisions: list[tuple[str, str | None]]) -> str | None:
    """The label a moderator gave the review by the latest override, unless a later agree,
    escalate or retraction settled it otherwise; None when no override stands.
    `decisions` are (action, label) oldest first."""
    for action, label in reversed(decisions):
        if action in OUTCOME_ACTIONS:
            return label if action == "override" else None
    return None


def effective_label(model_label: str | None, override: str | None) -> str | None:
    """What the review's outcome is: the moderator's override, else the model's verdict."""
    return override or model_label
