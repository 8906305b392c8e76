"""Labelled sets and evaluation runs in the history file (the policy workbench).

A labelled set is stored once, with its items in order; the same items imported again (same
checksum) are the same set. An evaluation run is one policy version (sha256) x one set x one
model x one effort. Every prediction is an ordinary review in the history (source "eval"),
written finished together with its link to the run's item in one transaction: a killed
process leaves both or neither, and a second finished review for the same run and item is
refused by a partial unique index. Failed attempts stay linked beside it.

The link keeps what the metrics need (the verdict label, seconds, tokens), so a run keeps
its figures when retention later deletes its reviews from the history.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, cast

from safeguard_desktop import processes

if TYPE_CHECKING:
    from .history import History
    from .queues import FinishedReview

__all__ = [
    "LABELS",
    "MIGRATION_EVALUATIONS",
    "EvalBusy",
    "EvalLink",
    "EvalRunRow",
    "EvalUnit",
    "Evaluations",
    "HistoryLabel",
    "LabelItemRow",
    "LabelSetExists",
    "LabelSetRow",
    "NewLabelItem",
    "NewLabelSet",
    "PolicyVersion",
]

# What a link says the model predicted: a verdict label, or "failed" (no answer).
LABELS = ("violation", "safe", "unparsed", "incomplete", "failed")
_LABELS_SQL = ", ".join(f"'{label}'" for label in LABELS)

# --- the migration step (appended to schema.MIGRATIONS) ------------------------------------
# review_id is not a foreign key, as in queue links: a review deleted from the history (or
# purged by retention) must not be blocked by a run, and its link stays as a record.
MIGRATION_EVALUATIONS: tuple[str, ...] = (
    """
    CREATE TABLE label_sets (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        name          TEXT NOT NULL UNIQUE,
        created_at    TEXT NOT NULL,
        source        TEXT NOT NULL,
        shape         TEXT NOT NULL,
        text_column   TEXT,
        label_column  TEXT,
        positive      TEXT NOT NULL DEFAULT '[]',
        checksum      TEXT NOT NULL UNIQUE,
        items         INTEGER NOT NULL CHECK (items >= 1),
        violations    INTEGER NOT NULL CHECK (violations >= 0),
        rows_read     INTEGER NOT NULL DEFAULT 0,
        left_out      INTEGER NOT NULL DEFAULT 0,
        no_text       INTEGER NOT NULL DEFAULT 0,
        ignored       INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE label_set_items (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        set_id      INTEGER NOT NULL REFERENCES label_sets (id) ON DELETE CASCADE,
        position    INTEGER NOT NULL CHECK (position >= 1),
        text        TEXT NOT NULL,
        truth       INTEGER NOT NULL CHECK (truth IN (0, 1)),
        categories  TEXT NOT NULL DEFAULT '[]',
        ref         TEXT,
        line        INTEGER NOT NULL DEFAULT 0,
        UNIQUE (set_id, position)
    )
    """,
    # A set is what its checksum says: its items are written once.
    """
    CREATE TRIGGER label_set_items_no_update BEFORE UPDATE ON label_set_items
    BEGIN SELECT RAISE(ABORT, 'labelled items are written once'); END
    """,
    """
    CREATE TABLE eval_runs (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        label_set_id   INTEGER NOT NULL REFERENCES label_sets (id) ON DELETE CASCADE,
        policy_sha256  TEXT NOT NULL REFERENCES policy_versions (sha256),
        policy_id      TEXT NOT NULL,
        model          TEXT NOT NULL,
        effort         TEXT NOT NULL,
        created_at     TEXT NOT NULL,
        moderator      TEXT NOT NULL,
        runner_pid     INTEGER,
        runner_host    TEXT,
        runner_beat    TEXT
    )
    """,
    "CREATE INDEX eval_runs_key ON eval_runs (label_set_id, policy_sha256, model, effort, id)",
    f"""
    CREATE TABLE eval_run_reviews (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id     INTEGER NOT NULL REFERENCES eval_runs (id) ON DELETE CASCADE,
        item_id    INTEGER NOT NULL REFERENCES label_set_items (id) ON DELETE CASCADE,
        review_id  INTEGER NOT NULL UNIQUE,
        outcome    TEXT NOT NULL CHECK (outcome IN ('done', 'failed')),
        label      TEXT NOT NULL CHECK (label IN ({_LABELS_SQL})),
        seconds    REAL,
        tokens     INTEGER,
        at         TEXT NOT NULL,
        CHECK ((outcome = 'failed') = (label = 'failed'))
    )
    """,
    "CREATE UNIQUE INDEX eval_run_reviews_once ON eval_run_reviews (run_id, item_id) "
    "WHERE outcome = 'done'",
    "CREATE INDEX eval_run_reviews_item ON eval_run_reviews (run_id, item_id, id)",
    """
    CREATE TRIGGER eval_run_reviews_no_update BEFORE UPDATE ON eval_run_reviews
    BEGIN SELECT RAISE(ABORT, 'evaluation links are written once'); END
    """,
)

# schema.py imports MIGRATION_EVALUATIONS from here and db.py imports schema.py, so this module
# may load while db.py is only half loaded. It therefore binds the db module only once the
# steps are defined (and reads db's names at call time), and imports history.py, which needs
# db's names at once, only where a review is written.
from . import db  # noqa: E402

# The review source of every prediction (one of store/records.py's SOURCES).
EVAL_SOURCE = "eval"


class LabelSetExists(ValueError):
    """Another labelled set already has that name."""


class EvalBusy(ValueError):
    """Another live process is running this evaluation."""

    def __init__(self, run_id: int, pid: int | None, host: str | None) -> None:
        where = f"process {pid}" if host in (None, socket.gethostname()) else f"{host}"
        super().__init__(
            f"Evaluation run {run_id} is being run by {where}; wait for it to finish or stop "
            "it first."
        )


@dataclass(frozen=True)
class NewLabelItem:
    text: str
    truth: bool
    categories: tuple[str, ...] = ()
    ref: str | None = None
    line: int = 0


@dataclass(frozen=True)
class NewLabelSet:
    """A set to store: where it came from, how it was read, its counts and its items."""

    name: str
    source: str  # the file name, "history", ...
    shape: str  # jsonl, json, csv, sections, queue-export, history
    text_column: str | None
    label_column: str | None
    positive: tuple[str, ...]
    checksum: str  # core.labelsets.labelset_checksum of the items
    items: Sequence[NewLabelItem]
    rows: int = 0
    left_out: int = 0
    no_text: int = 0
    ignored: int = 0


@dataclass(frozen=True)
class LabelSetRow:
    id: int
    name: str
    created_at: str
    source: str
    shape: str
    text_column: str | None
    label_column: str | None
    positive: tuple[str, ...]
    checksum: str
    items: int
    violations: int
    rows: int
    left_out: int
    no_text: int
    ignored: int


@dataclass(frozen=True)
class LabelItemRow:
    id: int
    position: int
    text: str
    truth: bool
    categories: tuple[str, ...]
    ref: str | None
    line: int


@dataclass(frozen=True)
class PolicyVersion:
    """A policy version as the history keeps it (policy_versions)."""

    sha256: str
    policy_id: str
    title: str
    version: str | None
    text: str


@dataclass(frozen=True)
class EvalRunRow:
    id: int
    label_set_id: int
    policy_sha256: str
    policy_id: str
    model: str
    effort: str
    created_at: str
    moderator: str
    runner_pid: int | None
    runner_host: str | None
    runner_beat: str | None


@dataclass(frozen=True)
class EvalUnit:
    """One item of a run still to classify."""

    run_id: int
    item_id: int
    position: int
    text: str


@dataclass(frozen=True)
class EvalLink:
    """One review linked to a run's item."""

    item_id: int
    position: int
    review_id: int
    outcome: str  # done | failed
    label: str  # one of LABELS
    seconds: float | None
    tokens: int | None


@dataclass(frozen=True)
class HistoryLabel:
    """A review with a moderator's decision as its latest deciding entry (agree/override)."""

    review_id: int
    created_at: str
    policy_id: str
    content_text: str
    verdict_label: str | None
    action: str  # agree | override
    label: str | None  # the override's label


def _set_row(r: sqlite3.Row) -> LabelSetRow:
    return LabelSetRow(
        r["id"], r["name"], r["created_at"], r["source"], r["shape"], r["text_column"],
        r["label_column"], tuple(json.loads(r["positive"])), r["checksum"], r["items"],
        r["violations"], r["rows_read"], r["left_out"], r["no_text"], r["ignored"],
    )  # fmt: skip


def _run_row(r: sqlite3.Row) -> EvalRunRow:
    return EvalRunRow(*(r[k] for k in EvalRunRow.__dataclass_fields__))


# The latest entry of a review's trail that decides (a retraction undoes what came before).
_LATEST_DECIDING = (
    "(SELECT d.{col} FROM decisions d WHERE d.review_id = r.id AND d.action IN "
    "('agree', 'override', 'escalate', 'skip', 'retracted') ORDER BY d.id DESC LIMIT 1)"
)


class Evaluations:
    """The evaluation tables, on the history's one connection (writes stay serialised)."""

    def __init__(self, history: History) -> None:
        self.history = history

    # --- labelled sets ----------------------------------------------------------------------

    def add_set(self, new: NewLabelSet) -> tuple[LabelSetRow, bool]:
        """Store the set with its items in one transaction; (row, True). A set with the same
        checksum is already the same set: (that row, False), nothing written.
        LabelSetExists when another set has the name."""
        if not new.items:
            raise ValueError("A labelled set needs at least one item.")
        with self.history.connection() as conn, db.write_txn(conn):
            same = conn.execute(
                "SELECT * FROM label_sets WHERE checksum = ?", (new.checksum,)
            ).fetchone()
            if same is not None:
                return _set_row(same), False
            if conn.execute("SELECT 1 FROM label_sets WHERE name = ?", (new.name,)).fetchone():
                raise LabelSetExists(
                    f"A labelled set named {new.name!r} already exists with other items; "
                    "choose another name."
                )
            cur = conn.execute(
                "INSERT INTO label_sets (name, created_at, source, shape, text_column, "
                "label_column, positive, checksum, items, violations, rows_read, left_out, "
                "no_text, ignored) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    new.name, db.utc_now(), new.source, new.shape, new.text_column,
                    new.label_column, json.dumps(list(new.positive), ensure_ascii=False),
                    new.checksum, len(new.items), sum(1 for i in new.items if i.truth),
                    new.rows, new.left_out, new.no_text, new.ignored,
                ),
            )  # fmt: skip
            set_id = cast(int, cur.lastrowid)
            conn.executemany(
                "INSERT INTO label_set_items (set_id, position, text, truth, categories, ref, "
                "line) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (set_id, n, it.text, int(it.truth),
                     json.dumps(list(it.categories), ensure_ascii=False), it.ref, it.line)
                    for n, it in enumerate(new.items, start=1)
                ),
            )  # fmt: skip
            row = conn.execute("SELECT * FROM label_sets WHERE id = ?", (set_id,)).fetchone()
        return _set_row(row), True

    def set_named(self, name: str) -> LabelSetRow | None:
        with self.history.connection() as conn:
            row = conn.execute("SELECT * FROM label_sets WHERE name = ?", (name,)).fetchone()
        return None if row is None else _set_row(row)

    def set_by_id(self, set_id: int) -> LabelSetRow | None:
        with self.history.connection() as conn:
            row = conn.execute("SELECT * FROM label_sets WHERE id = ?", (set_id,)).fetchone()
        return None if row is None else _set_row(row)

    def name_taken(self, name: str) -> bool:
        with self.history.connection() as conn:
            return (
                conn.execute("SELECT 1 FROM label_sets WHERE name = ?", (name,)).fetchone()
                is not None
            )

    def sets(self) -> list[LabelSetRow]:
        """Newest first."""
        with self.history.connection() as conn:
            rows = conn.execute("SELECT * FROM label_sets ORDER BY id DESC").fetchall()
        return [_set_row(r) for r in rows]

    def items(self, set_id: int) -> list[LabelItemRow]:
        """The set's items by position."""
        with self.history.connection() as conn:
            rows = conn.execute(
                "SELECT id, position, text, truth, categories, ref, line FROM label_set_items "
                "WHERE set_id = ? ORDER BY position",
                (set_id,),
            ).fetchall()
        return [
            LabelItemRow(r[0], r[1], r[2], bool(r[3]), tuple(json.loads(r[4])), r[5], r[6])
            for r in rows
        ]

    def delete_set(self, set_id: int) -> None:
        """The set, its runs and their links; the reviews stay in the history."""
        with self.history.connection() as conn, db.write_txn(conn):
            conn.execute("DELETE FROM label_sets WHERE id = ?", (set_id,))

    # --- policy versions --------------------------------------------------------------------

    def policy(self, sha256: str) -> PolicyVersion | None:
        with self.history.connection() as conn:
            row = conn.execute(
                "SELECT sha256, policy_id, title, version, text FROM policy_versions "
                "WHERE sha256 = ?",
                (sha256,),
            ).fetchone()
        return None if row is None else PolicyVersion(*row)

    # --- runs -------------------------------------------------------------------------------

    def find_run(
        self, set_id: int, policy_sha256: str, model: str, effort: str
    ) -> EvalRunRow | None:
        """The newest run of this (set, policy version, model, effort), if any."""
        with self.history.connection() as conn:
            row = conn.execute(
                "SELECT * FROM eval_runs WHERE label_set_id = ? AND policy_sha256 = ? "
                "AND model = ? AND effort = ? ORDER BY id DESC LIMIT 1",
                (set_id, policy_sha256, model, effort),
            ).fetchone()
        return None if row is None else _run_row(row)

    def create_run(
        self, set_id: int, policy: PolicyVersion, *, model: str, effort: str, moderator: str
    ) -> EvalRunRow:
        """A new run (its policy text kept once in policy_versions)."""
        now = db.utc_now()
        with self.history.connection() as conn, db.write_txn(conn):
            conn.execute(
                "INSERT OR IGNORE INTO policy_versions "
                "(sha256, policy_id, title, version, text, first_seen) VALUES (?, ?, ?, ?, ?, ?)",
                (policy.sha256, policy.policy_id, policy.title, policy.version, policy.text, now),
            )
            cur = conn.execute(
                "INSERT INTO eval_runs (label_set_id, policy_sha256, policy_id, model, effort, "
                "created_at, moderator) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (set_id, policy.sha256, policy.policy_id, model, effort, now, moderator),
            )
            row = conn.execute("SELECT * FROM eval_runs WHERE id = ?", (cur.lastrowid,)).fetchone()
        return _run_row(row)

    def run(self, run_id: int) -> EvalRunRow | None:
        with self.history.connection() as conn:
            row = conn.execute("SELECT * FROM eval_runs WHERE id = ?", (run_id,)).fetchone()
        return None if row is None else _run_row(row)

    def runs(self) -> list[EvalRunRow]:
        """Newest first."""
        with self.history.connection() as conn:
            rows = conn.execute("SELECT * FROM eval_runs ORDER BY id DESC").fetchall()
        return [_run_row(r) for r in rows]

    def delete_run(self, run_id: int) -> None:
        """The run and its links; the reviews stay in the history."""
        with self.history.connection() as conn, db.write_txn(conn):
            conn.execute("DELETE FROM eval_runs WHERE id = ?", (run_id,))

    def counts(self) -> dict[int, tuple[int, int]]:
        """(items with a finished review, items with only failed ones) per run."""
        with self.history.connection() as conn:
            rows = conn.execute(
                "SELECT run_id, count(DISTINCT CASE WHEN outcome = 'done' THEN item_id END), "
                "count(DISTINCT item_id) FROM eval_run_reviews GROUP BY run_id"
            ).fetchall()
        return {int(r[0]): (int(r[1]), int(r[2]) - int(r[1])) for r in rows}

    # --- running ----------------------------------------------------------------------------

    @staticmethod
    def runner_alive(run: EvalRunRow, *, stale_after: float = 60.0) -> bool:
        """Whether a process other than this one is running the evaluation now."""
        if run.runner_pid is None:
            return False
        if run.runner_host == socket.gethostname():
            return run.runner_pid != os.getpid() and processes.pid_alive(run.runner_pid)
        cutoff = db.format_utc(datetime.now(UTC) - timedelta(seconds=stale_after))
        return run.runner_beat is not None and run.runner_beat > cutoff

    def claim(self, run_id: int) -> None:
        """Become the run's runner. Raises EvalBusy."""
        with self.history.connection() as conn, db.write_txn(conn):
            run = _run_row(
                conn.execute("SELECT * FROM eval_runs WHERE id = ?", (run_id,)).fetchone()
            )
            if self.runner_alive(run):
                raise EvalBusy(run.id, run.runner_pid, run.runner_host)
            conn.execute(
                "UPDATE eval_runs SET runner_pid = ?, runner_host = ?, runner_beat = ? "
                "WHERE id = ?",
                (os.getpid(), socket.gethostname(), db.utc_now(), run_id),
            )

    def release(self, run_id: int) -> None:
        with self.history.connection() as conn, db.write_txn(conn):
            conn.execute(
                "UPDATE eval_runs SET runner_pid = NULL, runner_host = NULL WHERE id = ? "
                "AND runner_pid = ? AND runner_host = ?",
                (run_id, os.getpid(), socket.gethostname()),
            )

    def units(self, run_id: int) -> list[EvalUnit]:
        """The items without a finished review, by position (failed ones are tried again)."""
        with self.history.connection() as conn:
            rows = conn.execute(
                "SELECT i.id, i.position, i.text FROM eval_runs r "
                "JOIN label_set_items i ON i.set_id = r.label_set_id WHERE r.id = ? "
                "AND NOT EXISTS (SELECT 1 FROM eval_run_reviews l WHERE l.run_id = r.id "
                "AND l.item_id = i.id AND l.outcome = 'done') ORDER BY i.position",
                (run_id,),
            ).fetchall()
        return [EvalUnit(run_id, r[0], r[1], r[2]) for r in rows]

    def done(self, unit: EvalUnit) -> bool:
        """Whether the unit already has a finished review (another run took it)."""
        with self.history.connection() as conn:
            return self._done(conn, unit.run_id, unit.item_id)

    @staticmethod
    def _done(conn: sqlite3.Connection, run_id: int, item_id: int) -> bool:
        return (
            conn.execute(
                "SELECT 1 FROM eval_run_reviews WHERE run_id = ? AND item_id = ? "
                "AND outcome = 'done'",
                (run_id, item_id),
            ).fetchone()
            is not None
        )

    def record(
        self,
        unit: EvalUnit,
        review: FinishedReview,
        *,
        label: str,
        seconds: float | None,
        tokens: int | None,
    ) -> int | None:
        """Write the finished review and its link in one transaction; returns its id, or
        None when the item already has a finished review in this run (nothing written)."""
        from .history import insert_review, write_outcome  # see the note on imports

        if review.status not in ("done", "failed"):
            raise ValueError(f"A run records finished reviews, not {review.status!r} ones.")
        if label not in LABELS or (label == "failed") != (review.status == "failed"):
            raise ValueError(f"Label {label!r} does not go with a {review.status} review.")
        with self.history.connection() as conn, db.write_txn(conn):
            if self._done(conn, unit.run_id, unit.item_id):
                return None
            review_id = insert_review(
                conn,
                content=review.content, content_text=review.content_text,
                content_kind=review.content_kind, policy_sha256=review.policy_sha256,
                policy_id=review.policy_id, policy_version=review.policy_version,
                policy_title=review.policy_title, policy_text=review.policy_text,
                model=review.model, effort=review.effort, num_ctx=review.num_ctx,
                seed=review.seed, temperature=review.temperature, moderator=review.moderator,
                source=EVAL_SOURCE, host=review.host, model_digest=review.model_digest,
                ollama_version=review.ollama_version, backend=review.backend,
            )  # fmt: skip
            write_outcome(
                conn, review_id, status=review.status, reasoning=review.reasoning,
                answer=review.answer, verdict=review.verdict, stats=review.stats,
                error=review.error,
            )  # fmt: skip
            now = db.utc_now()
            conn.execute(
                "INSERT INTO eval_run_reviews (run_id, item_id, review_id, outcome, label, "
                "seconds, tokens, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (unit.run_id, unit.item_id, review_id, review.status, label, seconds, tokens, now),
            )
            conn.execute("UPDATE eval_runs SET runner_beat = ? WHERE id = ?", (now, unit.run_id))
        return review_id

    def links(self, run_id: int) -> list[EvalLink]:
        """Every review linked to the run, oldest link first."""
        with self.history.connection() as conn:
            rows = conn.execute(
                "SELECT l.item_id, i.position, l.review_id, l.outcome, l.label, l.seconds, "
                "l.tokens FROM eval_run_reviews l JOIN label_set_items i ON i.id = l.item_id "
                "WHERE l.run_id = ? ORDER BY l.id",
                (run_id,),
            ).fetchall()
        return [EvalLink(*r) for r in rows]

    def provenance(self, run_id: int) -> dict[str, list[str]]:
        """The distinct model digests, Ollama versions and hosts of the run's reviews still
        in the history (most used first)."""
        found: dict[str, list[str]] = {}
        with self.history.connection() as conn:
            for column in ("model_digest", "ollama_version", "host"):
                rows = conn.execute(
                    f"SELECT r.{column}, count(*) FROM eval_run_reviews l "
                    f"JOIN reviews r ON r.id = l.review_id WHERE l.run_id = ? "
                    f"AND r.{column} IS NOT NULL AND r.{column} != '' "
                    f"GROUP BY r.{column} ORDER BY count(*) DESC, r.{column}",
                    (run_id,),
                ).fetchall()
                found[column] = [str(r[0]) for r in rows]
        return found

    # --- the history as a labelled set -----------------------------------------------------

    def decided_reviews(
        self, *, review_ids: Sequence[int] | None = None, policy_id: str | None = None
    ) -> list[HistoryLabel]:
        """Finished reviews whose latest deciding entry is an agree or an override, newest
        first; only `review_ids` when given, only one policy's with `policy_id`."""
        action = _LATEST_DECIDING.format(col="action")
        label = _LATEST_DECIDING.format(col="label")
        where = ["r.status = 'done'", "r.last_decision IN ('agree', 'override')"]
        params: list[object] = []
        if policy_id is not None:
            where.append("r.policy_id = ?")
            params.append(policy_id)
        sql = (
            f"SELECT * FROM (SELECT r.id, r.created_at, r.policy_id, r.content_text, "
            f"r.verdict_label, {action} AS action, {label} AS label FROM reviews r "
            f"WHERE {' AND '.join(where)} {{ids}}) WHERE action IN ('agree', 'override') "
            "ORDER BY created_at DESC, id DESC"
        )
        with self.history.connection() as conn:
            if review_ids is None:
                rows = conn.execute(sql.format(ids=""), params).fetchall()
            else:
                rows = []
                ids = list(review_ids)
                for start in range(0, len(ids), 500):
                    chunk = ids[start : start + 500]
                    marks = ", ".join("?" * len(chunk))
                    rows += conn.execute(
                        sql.format(ids=f"AND r.id IN ({marks})"), [*params, *chunk]
                    ).fetchall()
                rows.sort(key=lambda r: (r[1], r[0]), reverse=True)
        return [HistoryLabel(*r) for r in rows]
