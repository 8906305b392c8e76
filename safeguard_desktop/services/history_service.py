"""The review history as the GUI and the `history` commands use it.

A thin door over `store.history.History`: the same calls, plus the decisions that belong to
the workflow and not to SQL (where the file lives, what a failure to open means for the
user, which moderator name is recorded). ui/ and cli/ go through here, never to store/.
"""

from __future__ import annotations

import builtins
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from safeguard_desktop import paths
from safeguard_desktop.store.history import History, HistoryError
from safeguard_desktop.store.records import (
    MAX_ID,
    Decision,
    Filters,
    Restored,
    Review,
    ReviewSummary,
    check_moment,
)
from safeguard_desktop.store.trail import TrailProblem, TrailReport

__all__ = [
    "MAX_ID",
    "NEEDS_VERDICT",
    "Decision",
    "DuplicateDecision",
    "Filters",
    "HistoryError",
    "HistoryService",
    "Restored",
    "Review",
    "ReviewSummary",
    "TrailProblem",
    "TrailReport",
    "check_date",
]

VERIFY_HINT = "`safeguard-desktop history verify`"
# The start-up check reads every id and link and the triggers, but recomputes the seals of
# only the newest decisions (and the summaries of the newest reviews): 0.3 s CPU at 100,000
# decisions, of which the links take 0.05 s; `history verify` recomputes every seal: 1.4 s
# CPU per 100,000 (measured on a busy 2-core container).
START_WINDOW = 10_000


def check_date(text: str) -> str:
    """`text` when the history filters can read it as a date; ValueError saying what to use."""
    return check_moment(text)


# Decisions that judge the model's verdict: a review without one cannot take them.
NEEDS_VERDICT = ("agree", "override")


class DuplicateDecision(ValueError):
    """The same decision was just recorded on this review (nothing was appended)."""


def _seconds_since(at: str) -> float:
    try:
        then = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        return float("inf")
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return (datetime.now(UTC) - then).total_seconds()


class HistoryService:
    """One open history file. Every call may raise `HistoryError` with a sentence to show."""

    def __init__(self, store: History) -> None:
        self.store = store

    @classmethod
    def open(cls, path: Path | None = None) -> HistoryService:
        """The history at `path` (default: the data folder's). Raises `HistoryError`."""
        return cls(History.open(path or paths.history_db()))

    @classmethod
    def open_default(cls) -> tuple[HistoryService | None, str | None]:
        """The history, or None and a sentence saying why reviews are not saved."""
        try:
            return cls.open(), None
        except HistoryError as exc:
            return None, f"{exc} Reviews of this session are not saved."

    @property
    def path(self) -> Path:
        return self.store.path

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> HistoryService:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------
    def get(self, review_id: int) -> Review | None:
        return self.store.get(review_id)

    def policy_text(self, sha256: str) -> str | None:
        return self.store.policy_text(sha256)

    def list(
        self,
        *,
        filters: Filters | None = None,
        offset: int = 0,
        limit: int = 100,
        before: tuple[str, int] | None = None,
    ) -> builtins.list[ReviewSummary]:
        return self.store.list(filters=filters, offset=offset, limit=limit, before=before)

    def count(self, filters: Filters | None = None, *, cap: int | None = None) -> int:
        return self.store.count(filters, cap=cap)

    def search(
        self, query: str, *, filters: Filters | None = None, limit: int = 100, offset: int = 0
    ) -> builtins.list[ReviewSummary]:
        return self.store.search(query, filters=filters, limit=limit, offset=offset)

    def audit(self, *, limit: int = 100, offset: int = 0) -> builtins.list[Decision]:
        return self.store.audit(limit=limit, offset=offset)

    # -- the audit trail ---------------------------------------------------------------------
    def add_decision(
        self,
        review_id: int,
        *,
        action: str,
        moderator: str,
        label: str | None = None,
        note: str | None = None,
        rule: str | None = None,
        repeat_window_s: float = 0.0,
    ) -> int:
        """Append one decision. ValueError (one line, what to do) when the review has no
        verdict to agree with or override, or when the same moderator recorded the very same
        decision on it less than `repeat_window_s` seconds ago (a double key press)."""
        review = self.store.get(review_id)
        if review is None:
            raise KeyError(review_id)
        if action in NEEDS_VERDICT and review.verdict_label not in ("violation", "safe"):
            state = (review.verdict_label or review.status).upper()
            raise ValueError(
                f"Review #{review_id} has no verdict ({state}): there is nothing to {action}. "
                "Re-run it, or escalate it or add a note."
            )
        if repeat_window_s > 0 and review.decisions:
            last = review.decisions[-1]
            same = (last.action, last.label, last.note or "", last.moderator) == (
                action, label, (note or "").strip(), moderator)  # fmt: skip
            if same and _seconds_since(last.at) < repeat_window_s:
                raise DuplicateDecision(f"Already recorded: {action} on review #{review_id}.")
        return self.store.add_decision(
            review_id, action=action, moderator=moderator, label=label, note=note, rule=rule
        )

    def delete_review(self, review_id: int, *, moderator: str, reason: str = "") -> None:
        self.store.delete_review(review_id, moderator=moderator, reason=reason)

    def purge(self, *, older_than_days: int, moderator: str) -> int:
        return self.store.purge(older_than_days=older_than_days, moderator=moderator)

    def verify(self, *, window: int | None = None) -> TrailReport:
        """Whether the decision trail is as written: the first break, if any, and where.
        `window` limits the costly checks to the newest rows (see START_WINDOW)."""
        return self.store.verify(window=window)

    def trail_warning(self) -> str | None:
        """A sentence for the start of a session when the trail is broken (or cannot be
        read), else None. Never raises."""
        try:
            report = self.verify(window=START_WINDOW)
        except HistoryError as exc:
            return f"The decision trail of the history could not be checked: {exc}"
        first = report.first
        if first is None:
            return None
        return (
            f"The decision trail of the history is broken at {first.where}: {first.message}. "
            f"Run {VERIFY_HINT} for details, and keep this file as evidence."
        )

    # -- the file ----------------------------------------------------------------------------
    def backup(self, dest: Path) -> None:
        self.store.backup(dest)

    @staticmethod
    def restore(src: Path, path: Path | None = None, *, moderator: str) -> Restored:
        """Replace the history by backup `src` once its trail verifies; the trail records who
        restored what. Close every open history on it first."""
        return History.restore(src, path or paths.history_db(), moderator=moderator)

    @staticmethod
    def check(path: Path | None = None) -> None:
        """Open and close the history (creating or migrating it). Raises `HistoryError`."""
        History.open(path or paths.history_db()).close()

    @staticmethod
    def recover_corrupt(path: Path | None = None) -> Path:
        """Move a damaged history aside; returns where it went."""
        return History.recover_corrupt(path or paths.history_db())
