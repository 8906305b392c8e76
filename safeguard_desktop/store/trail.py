"""The decision trail: append sealed rows, keep the triggers that protect it, verify it.

Tamper-evident, not tamper-proof: whoever rewrites every seal after an edit (the format is
public) passes `verify`; comparing the head seal with one noted elsewhere catches that too.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Literal

from . import schema
from .db import utc_now, write_txn

log = logging.getLogger("safeguard.store")

ProblemKind = Literal[
    "content_edited",
    "link_broken",
    "row_missing",
    "unsealed",
    "triggers_missing",
    "summary_mismatch",
]

AUTOMATIC = "safeguard-desktop"  # the moderator of entries the app writes by itself
_MAX_PROBLEMS = 100


@dataclass(frozen=True)
class TrailProblem:
    """One break; `message` is a clause such as "its content was changed after it was written"."""

    kind: ProblemKind
    message: str
    decision_id: int | None = None
    review_id: int | None = None

    @property
    def where(self) -> str:
        if self.decision_id is not None:
            return f"decision #{self.decision_id}"
        if self.review_id is not None:
            return f"review #{self.review_id}"
        return "its protection"


@dataclass(frozen=True)
class TrailReport:
    """What `verify` found, empty `problems` when intact; else at most 100 of them: the
    decisions' (by id), then the list's summaries, then the triggers."""

    decisions: int
    head: str  # seal of the last decision (GENESIS for an empty trail)
    problems: tuple[TrailProblem, ...] = ()
    repairs: tuple[int, ...] = ()  # ids of 'repair' entries: the protection was re-created

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> TrailProblem | None:
        return self.problems[0] if self.problems else None

    def describe(self) -> str:
        """One sentence: intact with its size, or where it first breaks and how."""
        if self.first is None:
            return f"The decision trail is intact: {self.decisions:,} decisions."
        return f"The decision trail is broken at {self.first.where}: {self.first.message}."


def append(
    conn: sqlite3.Connection,
    *,
    review_id: int | None,
    action: str,
    moderator: str,
    label: str | None = None,
    note: str | None = None,
    rule: str | None = None,
) -> int:
    """Add one sealed row (inside a write transaction); returns its id. `rule`: the rule or
    category an override names (a history before step 8 cannot hold one).

    Ids are given explicitly and never reused: one past both the last row and the highest id
    ever handed out, so rows removed at the end leave a gap that verify reports.
    """
    last = conn.execute("SELECT id, row_hash FROM decisions ORDER BY id DESC LIMIT 1").fetchone()
    seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'decisions'").fetchone()
    new_id = max(int(last[0]) if last else 0, int(seq[0]) if seq else 0) + 1
    prev = str(last[1]) if last is not None and last[1] is not None else schema.GENESIS
    row: tuple[object, ...] = (new_id, review_id, action, label, note, moderator, utc_now())
    columns: tuple[str, ...] = schema.SEALED_COLUMNS_V3
    if rule is not None:
        row, columns = (*row, rule), schema.SEALED_COLUMNS
    conn.execute(
        f"INSERT INTO decisions ({', '.join(columns)}, prev_hash, row_hash) "
        f"VALUES ({', '.join('?' * (len(columns) + 2))})",
        (*row, prev, schema.seal(row, prev)),
    )
    return new_id


def protect(conn: sqlite3.Connection) -> tuple[str, ...]:
    """Re-create protecting triggers that are missing or altered; returns their names.

    A repair is itself recorded in the trail, so the next verify still shows it happened.
    """
    if not schema.altered_triggers(conn):
        return ()
    with write_txn(conn):
        altered = schema.altered_triggers(conn)  # again under the lock: another window
        for name in altered:
            conn.execute(f'DROP TRIGGER IF EXISTS "{name}"')
            conn.execute(schema.PROTECTING_TRIGGERS[name])
        if altered:
            append(
                conn,
                review_id=None,
                action="repair",
                moderator=AUTOMATIC,
                note="The triggers that keep decisions from being edited or deleted were "
                f"missing or altered and were re-created: {', '.join(altered)}.",
            )
    if altered:
        log.warning("protecting triggers re-created: %s", ", ".join(altered))
    return tuple(altered)


def verify(
    conn: sqlite3.Connection, *, repaired: tuple[str, ...] = (), window: int | None = None
) -> TrailReport:
    """Check the ids and links of every row, the seals, the protecting triggers and the
    History list's summary columns.

    `repaired`: triggers `protect` had to re-create when this file was opened. `window`:
    check only the seals of the newest `window` decisions and the summaries of the newest
    `window` reviews (the start-up check: ids, links and triggers are always all checked).
    """
    problems: list[TrailProblem] = []
    count, last_id, head = conn.execute(
        "SELECT count(*), max(id), (SELECT row_hash FROM decisions ORDER BY id DESC LIMIT 1) "
        "FROM decisions"
    ).fetchone()
    seal_from = review_from = -(2**63)
    if window is not None:
        seal_from = (last_id or 0) - window + 1
        newest = conn.execute("SELECT max(id) FROM reviews").fetchone()[0]
        review_from = (newest or 0) - window + 1
    problems.extend(_check_links(conn))
    problems.extend(_check_seals(conn, seal_from))
    problems.sort(key=lambda p: p.decision_id or 0)
    seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'decisions'").fetchone()
    if seq is not None and isinstance(seq[0], int) and seq[0] > (last_id or 0):
        problems.append(
            TrailProblem(
                "row_missing",
                f"the decisions after it are missing (the last one written was #{seq[0]})",
                last_id,
            )
        )
    problems.extend(_check_summaries(conn, review_from))
    if repaired:
        problems.append(
            TrailProblem(
                "triggers_missing",
                "the triggers that keep decisions from being edited or deleted were missing "
                f"({', '.join(repaired)}); they were re-created now and the trail records it",
            )
        )
    still = schema.altered_triggers(conn)
    if still:
        problems.append(
            TrailProblem(
                "triggers_missing",
                "the triggers that keep decisions from being edited or deleted are missing "
                f"({', '.join(still)})",
            )
        )
    repairs = tuple(
        int(r[0]) for r in conn.execute("SELECT id FROM decisions WHERE action = 'repair'")
    )
    return TrailReport(
        int(count), str(head or schema.GENESIS), tuple(problems[:_MAX_PROBLEMS]), repairs
    )


def _check_links(conn: sqlite3.Connection) -> list[TrailProblem]:
    """Ids run 1, 2, 3... and each row names the seal of the row before it (all in SQL)."""
    found: list[TrailProblem] = []
    rows = conn.execute(
        "SELECT d.id, d.prev_hash, d.row_hash, "
        "(SELECT max(b.id) FROM decisions b WHERE b.id < d.id), "
        "(SELECT b.row_hash FROM decisions b WHERE b.id < d.id ORDER BY b.id DESC LIMIT 1) "
        "FROM decisions d LEFT JOIN decisions q ON q.id = d.id - 1 "
        "WHERE d.row_hash IS NULL OR (d.id = 1 AND d.prev_hash IS NOT :genesis) "
        "OR (d.id <> 1 AND (q.id IS NULL OR d.prev_hash IS NOT q.row_hash)) "
        "ORDER BY d.id LIMIT :cap",
        {"genesis": schema.GENESIS, "cap": _MAX_PROBLEMS},
    ).fetchall()
    for decision_id, prev, stored, before_id, before_hash in rows:
        expected_id = 1 if before_id is None else before_id + 1
        if decision_id < 1:
            kind: ProblemKind = "unsealed"
            message = "its id cannot come from Safeguard Desktop: it was added outside it"
        elif decision_id != expected_id:
            gap = f"#{expected_id}" + ("" if decision_id == expected_id + 1 else
                                       f" to #{decision_id - 1}")  # fmt: skip
            kind, message = "row_missing", f"the decisions before it ({gap}) were deleted"
        elif stored is None:
            kind, message = "unsealed", "it has no seal: it was added outside Safeguard Desktop"
        elif prev != (before_hash if before_id is not None else schema.GENESIS):
            kind = "link_broken"
            message = (
                f"it does not link to decision #{before_id}: a row was replaced or the seals "
                "were rewritten"
                if before_id is not None
                else "it does not start the trail: the rows before it were replaced"
            )
        else:
            continue
        found.append(TrailProblem(kind, message, decision_id))
    return found


def _check_seals(conn: sqlite3.Connection, from_id: int) -> list[TrailProblem]:
    """Each row's content against its seal: the only check done in Python (~10 us a row)."""
    found: list[TrailProblem] = []
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: a third of the time on a long trail
    columns = schema.sealed_columns(conn)
    n = len(columns)
    cursor.execute(
        f"SELECT {', '.join(columns)}, prev_hash, row_hash FROM decisions "
        "WHERE id >= ? AND row_hash IS NOT NULL ORDER BY id",
        (from_id,),
    )
    seal = schema.seal
    for row in cursor:
        if seal(row[:n], str(row[n])) != row[n + 1]:
            found.append(
                TrailProblem(
                    "content_edited", "its content was changed after it was written", row[0]
                )
            )
            if len(found) >= _MAX_PROBLEMS:
                break
    return found


def _check_summaries(conn: sqlite3.Connection, from_id: int) -> list[TrailProblem]:
    """The History list's columns (escalated, last decision, notes) against the trail."""
    escalated, last, notes = schema.derived_summary("r.id")
    rows = conn.execute(
        "SELECT id, escalated, want_escalated, last_decision, want_last, notes, want_notes "
        f"FROM (SELECT r.id, r.escalated, {escalated} AS want_escalated, r.last_decision, "
        f"{last} AS want_last, r.notes, {notes} AS want_notes FROM reviews r WHERE r.id >= ?) "
        "WHERE escalated IS NOT want_escalated OR last_decision IS NOT want_last "
        "OR notes IS NOT want_notes ORDER BY id LIMIT ?",
        (from_id, _MAX_PROBLEMS),
    ).fetchall()
    found: list[TrailProblem] = []
    for review_id, shown_esc, want_esc, shown_last, want_last, shown_notes, want_notes in rows:
        wrong = []
        if shown_esc != want_esc:
            wrong.append(f"escalated {_yes(shown_esc)} (the trail says {_yes(want_esc)})")
        if shown_last != want_last:
            wrong.append(
                f"last decision {shown_last or 'none'} (the trail says {want_last or 'none'})"
            )
        if shown_notes != want_notes:
            wrong.append("notes the trail does not have")
        found.append(
            TrailProblem(
                "summary_mismatch",
                f"the History list shows {'; '.join(wrong)}: it was changed without a decision",
                review_id=review_id,
            )
        )
    return found


def _yes(flag: object) -> str:
    return "yes" if flag else "no"
