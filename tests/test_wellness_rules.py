"""Wellness rules on hand-made cases: which items start masked, when a break is due."""

from __future__ import annotations

from safeguard_desktop.core.wellness import (
    BreakClock,
    category_matches,
    parse_categories,
    should_mask,
)


def test_categories_are_read_as_a_moderator_types_them() -> None:
    assert parse_categories(" sh, V2;h  sh ") == ("SH", "V2", "H")
    assert parse_categories("") == ()


def test_a_listed_category_covers_its_sub_rules_only() -> None:
    assert category_matches("SH", "SH") and category_matches("sh", "SH2.a")
    assert category_matches("SP2", "SP2.a")
    assert not category_matches("SP2", "SP21")  # another rule, not a sub-rule
    assert not category_matches("S", "SP2")  # S (sexual) is not SP (spam)
    assert category_matches("S", "S3")
    assert not category_matches("H2", "H")


def test_masking_off_shows_everything() -> None:
    assert not should_mask(False, (), None)
    assert not should_mask(False, ("SH",), [("violation", ("SH2",))])


def test_masking_on_without_categories_masks_every_item() -> None:
    assert should_mask(True, (), [("safe", ())])


def test_with_categories_only_matching_or_unknown_items_are_masked() -> None:
    listed = ("SH", "V2")
    assert should_mask(True, listed, None)  # not classified yet: the worst is assumed
    assert should_mask(True, listed, [("violation", ("SH1",)), (None, ())])  # one pending
    assert should_mask(True, listed, [("safe", ()), ("violation", ("V2.b",))])
    assert should_mask(True, listed, [("violation", ())])  # a violation of unknown category
    assert not should_mask(True, listed, [("violation", ("SP2",)), ("safe", ())])
    assert not should_mask(True, listed, [("safe", ()), ("safe", ())])
    assert should_mask(True, listed, [("unparsed", ()), ("violation", ("SH3",))])


def test_a_break_reminder_comes_once_per_period_of_continuous_work() -> None:
    clock = BreakClock(every_s=3600)
    minute = 60.0
    times = [0, 4 * minute, 8 * minute] + [8 * minute + k * 4 * minute for k in range(1, 14)]
    due = [t for t in times if clock.activity(t)]
    assert due == [60 * minute]  # 0, 4, ..., 60: the first at one hour
    assert clock.minutes(60 * minute) == 60
    assert not clock.activity(64 * minute)
    assert not clock.activity(116 * minute)  # a gap of 52 minutes was a break
    assert clock.minutes(116 * minute) == 0


def test_a_pause_of_five_minutes_starts_the_clock_again() -> None:
    clock = BreakClock(every_s=30 * 60)
    for t in range(0, 29 * 60, 60):
        assert not clock.activity(t)
    assert not clock.activity(34 * 60)  # 6 minutes after the last decision (at 28)
    assert clock.minutes(34 * 60) == 0
    # Working on every two minutes from there: due 30 minutes after the pause, not at 30.
    due = [t for t in range(36 * 60, 70 * 60, 120) if clock.activity(t)]
    assert due == [64 * 60]


def test_reminders_off() -> None:
    clock = BreakClock(every_s=0)
    assert not any(clock.activity(t * 60.0) for t in range(0, 600, 2))
