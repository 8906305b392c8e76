"""The local review history: every review, the policy text it used, and an append-only audit.

One connection per History, shared by threads under a lock (the GUI calls it from a worker
thread). A review row exists from the start (status running), so a crash loses nothing
already streamed; the next open reports such a row as `interrupted`.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import logging
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType

from safeguard_desktop import processes
from safeguard_desktop.core.vocabulary import FINAL_STATUSES

from . import db, schema, trail
from .db import HistoryError, format_utc, translate_errors, utc_now, write_txn
from .records import (
    DECISION_ACTIONS,
    MAX_ID,
    SOURCES,
    SUMMARY_COLUMNS,
    Decision,
    Filters,
    Restored,
    Review,
    ReviewSummary,
    check_page,
    decision_from_row,
    filter_sql,
    fts_query,
    review_columns,
    review_from_row,
    summary_from_row,
    to_json,
    verdict_columns,
)
from .restore import restore_backup

__all__ = [
    "Decision",
    "Filters",
    "History",
    "HistoryError",
    "Restored",
    "Review",
    "ReviewSummary",
    "TrailReport",
]

TrailReport = trail.TrailReport

log = logging.getLogger("safeguard.store")

_ORDER = "ORDER BY r.created_at DESC, r.id DESC"
_MAX_DAYS = 36_500  # a purge cut-off further back than a century cannot be a date


def _process_alive(pid: int | None) -> bool:
    """Whether a process with this pid exists (unknown pids count as alive)."""
    if pid is None:
        return True
    if pid == os.getpid():
        return True
    return processes.pid_alive(pid)


class History:
    """Reviews, policy versions and decisions in one private SQLite file."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        """Use `History.open()`."""
        self._conn: sqlite3.Connection | None = conn
        self._conn.row_factory = sqlite3.Row
        self._path = path
        self._lock = threading.Lock()
        self._repaired: tuple[str, ...] = ()  # protecting triggers re-created at open

    # --- lifecycle --------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, stale_after: float = 30.0, busy_timeout: float = 5.0) -> History:
        """Create or migrate the DB, re-create the trail's protecting triggers if they are
        gone, and mark reviews whose writer stopped beating as interrupted.

        The last two write, and are skipped (logged) when the disk is full or read-only, so
        the history can still be read; verify() then reports triggers still missing.
        """
        path = Path(path)
        history = cls(db.connect(path, busy_timeout=busy_timeout), path)
        try:
            try:
                history._repaired = history._protect()
            except HistoryError as exc:
                history._skipped("re-create the triggers protecting the decision trail", exc)
            try:
                history.recover(stale_after=stale_after)
            except HistoryError as exc:
                history._skipped("mark interrupted reviews", exc)
        except BaseException:
            history.close()
            raise
        return history

    def _protect(self) -> tuple[str, ...]:
        with self._op() as conn:
            return trail.protect(conn)

    def _skipped(self, what: str, exc: HistoryError) -> None:
        """A write done on the side at open failed: fine unless the file is damaged."""
        if exc.kind == "corrupt":
            raise exc
        log.warning("history %s: could not %s: %s", self._path, what, exc)

    @property
    def path(self) -> Path:
        return self._path

    @staticmethod
    def recover_corrupt(path: Path) -> Path:
        """Move a damaged DB (+ -wal/-shm) aside to PATH.corrupt-<ts>; returns that path."""
        return db.recover_corrupt(Path(path))

    def close(self) -> None:
        with self._lock:
            if self._conn is None:
                return
            conn, self._conn = self._conn, None
            try:
                # Best effort: refresh planner statistics, but never wait on another writer.
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA busy_timeout = 0")
                    conn.execute("PRAGMA optimize")
            finally:
                with translate_errors(self._path):
                    conn.close()

    def __enter__(self) -> History:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextlib.contextmanager
    def _op(self) -> Iterator[sqlite3.Connection]:
        """Serialise every call and turn environment failures into HistoryError."""
        with self._lock, translate_errors(self._path):
            if self._conn is None:
                raise RuntimeError("History is closed")
            yield self._conn

    @contextlib.contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """The one connection, serialised with every other call, for the other tables of
        this file (store/queues.py); environment failures become HistoryError."""
        with self._op() as conn:
            yield conn

    def recover(self, *, stale_after: float = 30.0) -> int:
        """Mark running reviews whose writer is gone as interrupted.

        A writer on this machine whose process no longer exists is gone at once; any other
        writer is gone when its heartbeat is older than `stale_after` seconds.
        """
        cutoff = format_utc(datetime.now(UTC) - timedelta(seconds=stale_after))
        host = socket.gethostname()
        with self._op() as conn:
            rows = conn.execute(
                "SELECT id, heartbeat_at, writer_pid, writer_host FROM reviews "
                "WHERE status = 'running'"
            ).fetchall()
            gone = [
                r["id"]
                for r in rows
                if r["heartbeat_at"] <= cutoff
                or (r["writer_host"] == host and not _process_alive(r["writer_pid"]))
            ]
            if not gone:
                return 0
            with write_txn(conn):
                conn.executemany(
                    "UPDATE reviews SET status = 'interrupted', finished_at = heartbeat_at "
                    "WHERE id = ? AND status = 'running'",
                    [(i,) for i in gone],
                )
        log.warning("%d interrupted review(s) found in %s", len(gone), self._path)
        return len(gone)

    # --- reviews ----------------------------------------------------------------------

    def start_review(
        self,
        *,
        content: Mapping[str, object],
        content_text: str,
        content_kind: str,
        policy_sha256: str,
        policy_id: str,
        policy_version: str | None,
        policy_title: str,
        policy_text: str,
        model: str,
        effort: str,
        num_ctx: int,
        seed: int | None,
        temperature: float | None,
        moderator: str,
        source: str,
        host: str = "",
        model_digest: str | None = None,
        ollama_version: str | None = None,
        backend: str | None = None,
    ) -> int:
        """Write the review (status running) before the first token, and its policy text once."""
        with self._op() as conn, write_txn(conn):
            return insert_review(
                conn,
                content=content, content_text=content_text, content_kind=content_kind,
                policy_sha256=policy_sha256, policy_id=policy_id, policy_version=policy_version,
                policy_title=policy_title, policy_text=policy_text, model=model, effort=effort,
                num_ctx=num_ctx, seed=seed, temperature=temperature, moderator=moderator,
                source=source, host=host, model_digest=model_digest,
                ollama_version=ollama_version, backend=backend,
            )  # fmt: skip

    def save_progress(self, review_id: int, *, reasoning: str, answer: str) -> None:
        """Keep the partial stream and beat the heartbeat (about once a second).

        A row wrongly marked interrupted by another window comes back to running.
        """
        with self._op() as conn, write_txn(conn):
            conn.execute(
                "UPDATE reviews SET reasoning = ?, answer = ?, heartbeat_at = ?, "
                "status = 'running', finished_at = NULL, writer_pid = ?, writer_host = ? "
                "WHERE id = ? AND status IN ('running', 'interrupted')",
                (reasoning, answer, utc_now(), os.getpid(), socket.gethostname(), review_id),
            )

    def finish_review(
        self,
        review_id: int,
        *,
        status: str,
        reasoning: str,
        answer: str,
        verdict: Mapping[str, object] | None,
        stats: Mapping[str, object] | None,
        error: str | None = None,
        model_digest: str | None = None,
        ollama_version: str | None = None,
    ) -> None:
        """Record the outcome; KeyError if unknown, ValueError if already finished."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"Unknown final status {status!r}: use {', '.join(FINAL_STATUSES)}.")
        with self._op() as conn, write_txn(conn):
            write_outcome(
                conn, review_id, status=status, reasoning=reasoning, answer=answer,
                verdict=verdict, stats=stats, error=error, model_digest=model_digest,
                ollama_version=ollama_version,
            )  # fmt: skip

    def get(self, review_id: int) -> Review | None:
        """The review, or None when there is none with that id (any int is safe)."""
        if not 0 < review_id <= MAX_ID:
            return None
        with self._op() as conn:
            row = conn.execute(
                f"SELECT {review_columns()} FROM reviews r "
                "LEFT JOIN policy_versions p ON p.sha256 = r.policy_sha256 WHERE r.id = ?",
                (review_id,),
            ).fetchone()
            if row is None:
                return None
            decisions = conn.execute(
                "SELECT * FROM decisions WHERE review_id = ? ORDER BY id", (review_id,)
            ).fetchall()
        return review_from_row(row, tuple(decision_from_row(d) for d in decisions))

    def policy_text(self, sha256: str) -> str | None:
        """The exact policy text a review ran with."""
        with self._op() as conn:
            row = conn.execute(
                "SELECT text FROM policy_versions WHERE sha256 = ?", (sha256,)
            ).fetchone()
        return None if row is None else str(row["text"])

    # --- browsing ---------------------------------------------------------------------

    def list(
        self,
        *,
        filters: Filters | None = None,
        offset: int = 0,
        limit: int = 100,
        before: tuple[str, int] | None = None,
    ) -> list[ReviewSummary]:
        """Newest first. For deep paging pass `before=(created_at, id)` of the last row seen
        (keyset) instead of a large offset."""
        check_page(limit, offset)
        where, params = filter_sql(filters)
        if before is not None:
            where += " AND (r.created_at, r.id) < (?, ?)"
            params += [before[0], before[1]]
        with self._op() as conn:
            rows = conn.execute(
                f"SELECT {SUMMARY_COLUMNS} FROM reviews r WHERE 1 {where} {_ORDER} "
                "LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
        return [summary_from_row(r) for r in rows]

    def count(self, filters: Filters | None = None, *, cap: int | None = None) -> int:
        """Exact count, or at most `cap` (for a "10,000+" label). Without filters it is one
        row kept by triggers; with filters it reads the covering index range, never rows."""
        where, params = filter_sql(filters)
        with self._op() as conn:
            if not where:
                total = int(conn.execute("SELECT total FROM review_stats").fetchone()[0])
                return total if cap is None else min(total, cap)
            sql = f"SELECT 1 FROM reviews r WHERE 1 {where}"
            if cap is not None:
                sql += " LIMIT ?"
                params.append(cap)
            return int(conn.execute(f"SELECT count(*) FROM ({sql})", params).fetchone()[0])

    def search(
        self, query: str, *, filters: Filters | None = None, limit: int = 100, offset: int = 0
    ) -> builtins.list[ReviewSummary]:
        """Full-text search over content, reasoning, rationale and notes: every word must
        occur (the last one as a prefix, from two letters on); newest first (the highest id
        first, as the list). Any input is safe: the words are quoted, never parsed as FTS
        syntax."""
        check_page(limit, offset)
        match = fts_query(query)
        if match is None:
            return []
        # Newest first is the index's own order: SQLite walks the matches from the newest
        # and stops at the page. Ranking by bm25 scored every match first, so its cost grew
        # with the history (155-190 ms p95 at 1M reviews, bench/bench_history.py).
        sql, params = _matches(match, filters)
        with self._op() as conn:
            ids = [
                int(r[0])
                for r in conn.execute(
                    f"{sql} ORDER BY f.rowid DESC LIMIT ? OFFSET ?", (*params, limit, offset)
                )
            ]
            rows = conn.execute(
                f"SELECT {SUMMARY_COLUMNS} FROM reviews r WHERE r.id IN "
                f"({', '.join('?' * len(ids))})",
                ids,
            ).fetchall()
        by_id = {summary.id: summary for summary in map(summary_from_row, rows)}
        return [by_id[i] for i in ids if i in by_id]

    def count_matches(
        self, query: str, filters: Filters | None = None, *, cap: int | None = None
    ) -> int:
        """How many reviews `search(query, filters=...)` finds, or at most `cap` (for a
        "10,000+ matches" label: counting stops there instead of walking every match)."""
        match = fts_query(query)
        if match is None:
            return 0
        sql, params = _matches(match, filters)
        if cap is not None:
            sql += " LIMIT ?"
            params.append(max(0, cap))
        with self._op() as conn:
            return int(conn.execute(f"SELECT count(*) FROM ({sql})", params).fetchone()[0])

    # --- decisions and audit ----------------------------------------------------------

    def add_decision(
        self,
        review_id: int,
        *,
        action: str,
        moderator: str,
        label: str | None = None,
        note: str | None = None,
        rule: str | None = None,
    ) -> int:
        """Append a moderator decision; an override needs the new label and a reason, and
        may name the rule or category it applies (`rule`)."""
        if action not in DECISION_ACTIONS:
            raise ValueError(
                f"Unknown action {action!r}: use one of {', '.join(DECISION_ACTIONS)}."
            )
        note = (note or "").strip() or None
        if action == "override" and not (label and label.strip()):
            raise ValueError("An override needs the label you chose.")
        if action == "override" and not note:
            raise ValueError("An override needs a reason: write it in the note.")
        if action == "note" and not note:
            raise ValueError("The note is empty: write something or cancel.")
        rule = check_rule(rule, action)
        if not 0 < review_id <= MAX_ID:
            raise KeyError(review_id)
        with self._op() as conn, write_txn(conn):
            if conn.execute("SELECT 1 FROM reviews WHERE id = ?", (review_id,)).fetchone() is None:
                raise KeyError(review_id)
            return append_decision(
                conn, review_id, action=action, moderator=moderator, label=label, note=note,
                rule=rule,
            )  # fmt: skip

    def delete_review(self, review_id: int, *, moderator: str, reason: str = "") -> None:
        """Remove a review and its search entry; its audit rows stay, plus a 'delete' row."""
        if not 0 < review_id <= MAX_ID:
            raise KeyError(review_id)
        with self._op() as conn:
            with write_txn(conn):
                cur = conn.execute("DELETE FROM reviews WHERE id = ?", (review_id,))
                if cur.rowcount == 0:
                    raise KeyError(review_id)
                self._audit(conn, review_id, "delete", reason.strip() or None, moderator)
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def purge(self, *, older_than_days: int, moderator: str) -> int:
        """Delete finished reviews older than N days; one 'purge' audit row with the count."""
        if not 0 <= older_than_days <= _MAX_DAYS:
            raise ValueError(f"older_than_days must be from 0 to {_MAX_DAYS}.")
        cutoff = format_utc(datetime.now(UTC) - timedelta(days=older_than_days))
        with self._op() as conn:
            with write_txn(conn):
                cur = conn.execute(
                    "DELETE FROM reviews WHERE created_at < ? AND status != 'running'", (cutoff,)
                )
                count = cur.rowcount
                note = f"{count} reviews created before {cutoff} deleted"
                self._audit(conn, None, "purge", note, moderator)
            # Deleted text must not linger in the WAL file (secure_delete covers the DB file).
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return count

    @staticmethod
    def _audit(
        conn: sqlite3.Connection, review_id: int | None, action: str, note: str | None, who: str
    ) -> None:
        trail.append(conn, review_id=review_id, action=action, moderator=who, note=note)

    def audit(self, *, limit: int = 100, offset: int = 0) -> builtins.list[Decision]:
        """The audit trail, newest first (decisions, deletions, purges, restores, repairs)."""
        check_page(limit, offset)
        with self._op() as conn:
            rows = conn.execute(
                "SELECT * FROM decisions ORDER BY id DESC LIMIT ? OFFSET ?", (limit, offset)
            ).fetchall()
        return [decision_from_row(r) for r in rows]

    def verify(self, *, window: int | None = None) -> trail.TrailReport:
        """Check the decision trail: ids, links, triggers, seals and the list's summaries;
        with `window`, only the seals and summaries of the newest `window` rows."""
        with self._op() as conn:
            return trail.verify(conn, repaired=self._repaired, window=window)

    # --- backup -----------------------------------------------------------------------

    def backup(self, dest: Path) -> None:
        """Consistent copy of the live history into one file (a private temporary file beside
        it, then renamed); refuses a folder or the history itself."""
        with self._op() as conn:
            db.backup_to(conn, Path(dest), live=self._path)

    @staticmethod
    def restore(src: Path, path: Path, *, moderator: str) -> Restored:
        """Replace the history at `path` by backup `src`, once its decision trail verifies.

        The current file is kept as PATH.before-restore-<ts>, and the restored trail gains a
        'restore' entry naming the backup, its sha256 and `moderator`. Close every History on
        `path` first. Raises HistoryError ("invalid" for a backup that is refused).
        """
        return restore_backup(Path(src), Path(path), moderator=moderator)


def _matches(match: str, filters: Filters | None) -> tuple[str, list[object]]:
    """SELECT of the ids of the full-text matches that pass the filters, and its parameters.
    Filters read the narrow reviews_by_id index, never the wide rows."""
    where, params = filter_sql(filters)
    join = "JOIN reviews r INDEXED BY reviews_by_id ON r.id = f.rowid" if where else ""
    sql = f"SELECT f.rowid FROM reviews_fts f {join} WHERE reviews_fts MATCH ? {where}"
    return sql, [match, *params]


# --- statements shared with the other tables of this file (queues) -----------------------
# Each runs inside the caller's write transaction, so a queue can record a review and its
# link, or a decision on several reviews, all or nothing.


def insert_review(
    conn: sqlite3.Connection,
    *,
    content: Mapping[str, object],
    content_text: str,
    content_kind: str,
    policy_sha256: str,
    policy_id: str,
    policy_version: str | None,
    policy_title: str,
    policy_text: str,
    model: str,
    effort: str,
    num_ctx: int,
    seed: int | None,
    temperature: float | None,
    moderator: str,
    source: str,
    host: str = "",
    model_digest: str | None = None,
    ollama_version: str | None = None,
    backend: str | None = None,
) -> int:
    """Insert a review (status running) and its policy text once; returns its id."""
    if source not in SOURCES:
        raise ValueError(f"Unknown source {source!r}: use one of {', '.join(SOURCES)}.")
    content_json = json.dumps(dict(content), ensure_ascii=False)
    now = utc_now()
    conn.execute(
        "INSERT OR IGNORE INTO policy_versions "
        "(sha256, policy_id, title, version, text, first_seen) VALUES (?, ?, ?, ?, ?, ?)",
        (policy_sha256, policy_id, policy_title, policy_version, policy_text, now),
    )
    values = {
        "created_at": now, "heartbeat_at": now, "status": "running",
        "content_json": content_json, "content_text": content_text,
        "content_kind": content_kind, "source": source, "policy_sha256": policy_sha256,
        "policy_id": policy_id, "policy_version": policy_version, "model": model,
        "model_digest": model_digest, "ollama_version": ollama_version, "host": host,
        **({"backend": backend} if backend else {}),  # column of migration 7
        "effort": effort, "num_ctx": num_ctx, "seed": seed, "temperature": temperature,
        "moderator": moderator, "writer_pid": os.getpid(),
        "writer_host": socket.gethostname(),
    }  # fmt: skip
    cur = conn.execute(
        f"INSERT INTO reviews ({', '.join(values)}) VALUES ({', '.join(':' + k for k in values)})",
        values,
    )
    review_id = cur.lastrowid
    assert review_id is not None
    return review_id


def _served_model(stats: Mapping[str, object] | None) -> str | None:
    """The model id the server named in its answer, kept in its own column."""
    served = (stats or {}).get("served_model")
    return str(served) if served else None


def write_outcome(
    conn: sqlite3.Connection,
    review_id: int,
    *,
    status: str,
    reasoning: str,
    answer: str,
    verdict: Mapping[str, object] | None,
    stats: Mapping[str, object] | None,
    error: str | None = None,
    model_digest: str | None = None,
    ollama_version: str | None = None,
) -> None:
    """Record a running review's outcome; KeyError if unknown, ValueError if finished."""
    if status not in FINAL_STATUSES:
        raise ValueError(f"Unknown final status {status!r}: use {', '.join(FINAL_STATUSES)}.")
    cols = verdict_columns(verdict)
    now = utc_now()
    row = conn.execute("SELECT status FROM reviews WHERE id = ?", (review_id,)).fetchone()
    if row is None:
        raise KeyError(review_id)
    if row["status"] not in ("running", "interrupted"):
        raise ValueError(f"Review {review_id} is already {row['status']}.")
    conn.execute(
        "UPDATE reviews SET status = ?, finished_at = ?, heartbeat_at = ?, reasoning = ?, "
        "answer = ?, verdict_json = ?, verdict_label = ?, category = ?, rule_ids = ?, "
        "confidence = ?, rationale = ?, stats_json = ?, error = ?, "
        "model_digest = coalesce(?, model_digest), "
        "ollama_version = coalesce(?, ollama_version) WHERE id = ?",
        (
            status, now, now, reasoning, answer, to_json(verdict), cols.label,
            cols.category, cols.rule_ids, cols.confidence, cols.rationale, to_json(stats),
            error, model_digest, ollama_version, review_id,
        ),
    )  # fmt: skip
    if served := _served_model(stats):  # column of migration 7
        conn.execute("UPDATE reviews SET served_model = ? WHERE id = ?", (served, review_id))


MAX_RULE = 40


def check_rule(rule: str | None, action: str) -> str | None:
    """The rule or category an override names, cleaned: one short printable token such as
    H2.f or SP2; ValueError for anything else, or for a rule on another action."""
    rule = (rule or "").strip() or None
    if rule is None:
        return None
    if action != "override":
        raise ValueError("Only an override names a rule or category.")
    if len(rule) > MAX_RULE or not rule.isprintable() or any(c.isspace() for c in rule):
        raise ValueError(
            f"The rule {rule[:MAX_RULE]!r} cannot be used: give one id such as H2.f or SP2 "
            f"(at most {MAX_RULE} characters, no spaces)."
        )
    return rule


def append_decision(
    conn: sqlite3.Connection,
    review_id: int,
    *,
    action: str,
    moderator: str,
    label: str | None = None,
    note: str | None = None,
    rule: str | None = None,
) -> int:
    """Append one sealed decision on an existing review and refresh the list's summary."""
    escalated, last, notes = schema.derived_summary(":id")
    decision_id = trail.append(
        conn, review_id=review_id, action=action, moderator=moderator, label=label, note=note,
        rule=rule,
    )  # fmt: skip
    # The list's summary columns are read back from the trail (a trigger refuses any other
    # value), so they can never say what no decision says.
    conn.execute(
        f"UPDATE reviews SET escalated = {escalated}, last_decision = {last}, "
        f"notes = {notes} WHERE id = :id",
        {"id": review_id},
    )
    return decision_id
