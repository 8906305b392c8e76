"""Reviewer wellness rules: which items stay masked, and when a break is due.

Pure: the views ask these functions and keep no rule of their own, so the rules are tested
on hand-made cases (tests/test_wellness_rules.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# A gap this long between two decisions counts as a break: the clock starts again.
IDLE_RESET_S = 5 * 60.0

_SPLIT = re.compile(r"[\s,;]+")


def parse_categories(text: str) -> tuple[str, ...]:
    """The categories a moderator listed ("SH, V2 H"): upper-cased, order kept, no repeats."""
    seen: list[str] = []
    for word in _SPLIT.split(text.strip()):
        word = word.upper()
        if word and word not in seen:
            seen.append(word)
    return tuple(seen)


def category_matches(listed: str, found: str) -> bool:
    """`found` (a rule id or category the model named) falls under `listed`: the same id, or
    one of its sub-rules (SH matches SH2 and SH2.a; SP2 matches SP2.a; S does not match SP2)."""
    listed, found = listed.upper(), found.upper()
    if found == listed:
        return True
    if not found.startswith(listed):
        return False
    follows = found[len(listed)]
    if listed[-1].isdigit():  # SP2 covers SP2.a, not SP21
        return follows == "."
    return follows.isdigit() or follows == "."


def should_mask(
    enabled: bool,
    listed: Sequence[str],
    verdicts: Iterable[tuple[str | None, Sequence[str]]] | None,
) -> bool:
    """Whether an item's content starts masked.

    `enabled`: the mask_content setting. `listed`: the categories to mask (empty: all
    content). `verdicts`: (label, rule ids) per policy, None when nothing is known yet.
    With categories listed, an item is masked when a policy found a violation under one of
    them, when a violation names no rule (its category is unknown), or when it is not
    classified yet (unknown content is treated as the worst case). An item every policy
    found safe is shown.
    """
    if not enabled:
        return False
    if not listed:
        return True
    known = list(verdicts or ())
    if not known or any(label is None for label, _ in known):
        return True
    for label, rule_ids in known:
        if label != "violation":
            continue
        if not rule_ids:
            return True
        if any(category_matches(c, r) for c in listed for r in rule_ids):
            return True
    return False


@dataclass
class BreakClock:
    """Continuous reviewing time, told by the moderator's activity (no timer needed).

    `every_s` 0 turns reminders off. A gap of `idle_s` between two activities is a break:
    the clock starts again. `activity(now)` returns True once each time a reminder is due;
    the next one comes `every_s` after that, unless a break comes first.
    """

    every_s: float
    idle_s: float = IDLE_RESET_S
    started: float | None = None
    last: float | None = None
    reminded: float | None = None

    def activity(self, now: float) -> bool:
        if self.started is None or self.last is None or now - self.last >= self.idle_s:
            self.started, self.reminded = now, None
        self.last = now
        since = self.started if self.reminded is None else self.reminded
        if self.every_s <= 0 or now - since < self.every_s:
            return False
        self.reminded = now
        return True

    def minutes(self, now: float) -> int:
        """Minutes of continuous reviewing so far (0 after a break)."""
        if self.started is None or self.last is None or now - self.last >= self.idle_s:
            return 0
        return int((now - self.started) // 60)
