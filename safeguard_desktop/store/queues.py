"""Review queues in the history file: items, their policies, the reviews that classified them.

Every classification is an ordinary review (source "queue"), written finished together with
its link to the item in one transaction: a killed process leaves either both or neither, and
a second finished review for the same item and policy is refused by a unique index. Decisions
on an item are rows of the one sealed decision trail, on the item's linked reviews.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

from safeguard_desktop import processes

from .db import format_utc, utc_now, write_txn
from .history import History, append_decision, check_rule, insert_review, write_outcome
from .schema import RETRACTED

__all__ = [
    "ITEM_ACTIONS",
    "ITEM_ORDERS",
    "RETRACTED",
    "FinishedReview",
    "ItemDecision",
    "ItemLink",
    "ItemRow",
    "NewItem",
    "PolicyText",
    "QueueBusy",
    "QueueExists",
    "QueueRow",
    "Queues",
    "Unit",
]

# The trail actions that decide a queue item (a plain note does not); the latest one counts,
# and a "retracted" one (an undo) cancels every decision before it: the item is undecided.
ITEM_ACTIONS = ("agree", "override", "escalate", "skip")
_DECIDING_SQL = f"({', '.join(repr(a) for a in (*ITEM_ACTIONS, RETRACTED))})"
# How a queue lists its items: by position in the files, oldest first (the item's own time,
# items without one after, in file order), or by verdict and confidence once classified.
ITEM_ORDERS = ("file", "oldest", "verdict")


class QueueExists(ValueError):
    """A queue of that name is already in the history."""


class QueueBusy(ValueError):
    """Another live process is running this queue."""

    def __init__(self, name: str, pid: int | None, host: str | None) -> None:
        where = f"process {pid}" if host in (None, socket.gethostname()) else f"{host}"
        super().__init__(
            f"Queue {name!r} is being run by {where}; wait for it to finish or stop it first."
        )


@dataclass(frozen=True)
class QueueRow:
    id: int
    name: str
    created_at: str
    moderator: str
    model: str
    effort: str | None
    item_order: str
    runner_pid: int | None
    runner_host: str | None
    runner_beat: str | None


@dataclass(frozen=True)
class PolicyText:
    """A policy version as the queue keeps it (its text lives once, in policy_versions)."""

    sha256: str
    policy_id: str
    title: str
    version: str | None
    text: str


@dataclass(frozen=True)
class NewItem:
    content: Mapping[str, object]
    text: str
    kind: str
    external_id: str | None = None
    source: str | None = None
    time: str | None = None  # the item's own time, UTC ISO 8601 (sorts as text)


@dataclass(frozen=True)
class ItemRow:
    id: int
    position: int
    state: str
    content: dict[str, object]
    text: str
    kind: str
    external_id: str | None
    source: str | None
    time: str | None = None


@dataclass(frozen=True)
class ItemLink:
    """One review linked to an item; `label` None when the review left the history."""

    item_id: int
    policy_sha256: str
    review_id: int
    outcome: str  # done | failed
    label: str | None
    rule_ids: tuple[str, ...] = ()
    confidence: str | float | None = None
    host: str | None = None  # the address of the server that judged


@dataclass(frozen=True)
class ItemDecision:
    action: str
    label: str | None
    note: str | None
    moderator: str
    at: str
    decision_id: int
    rule: str | None = None  # the rule or category an override names


@dataclass(frozen=True)
class Unit:
    """One piece of work: an item classified against one policy of its queue."""

    item_id: int
    position: int
    policy_sha256: str
    content: dict[str, object] = field(compare=False, hash=False)


@dataclass(frozen=True, kw_only=True)
class FinishedReview:
    """Everything one queue classification writes to `reviews` (source "queue")."""

    content: Mapping[str, object]
    content_text: str
    content_kind: str
    policy_sha256: str
    policy_id: str
    policy_version: str | None
    policy_title: str
    policy_text: str
    model: str
    effort: str
    num_ctx: int
    seed: int | None
    temperature: float | None
    moderator: str
    host: str
    model_digest: str | None
    ollama_version: str | None
    status: str  # done | failed
    reasoning: str
    answer: str
    verdict: Mapping[str, object] | None
    stats: Mapping[str, object] | None
    error: str | None
    backend: str | None = None  # "ollama" | "openai": the kind of server that judged


def _queue(row: sqlite3.Row) -> QueueRow:
    return QueueRow(*(row[k] for k in QueueRow.__dataclass_fields__))


class Queues:
    """The queue tables, on the history's one connection (so writes stay serialised)."""

    def __init__(self, history: History) -> None:
        self.history = history

    # --- queues --------------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        moderator: str,
        model: str,
        effort: str | None,
        policies: Sequence[PolicyText],
        items: Sequence[NewItem],
        order: str = "file",
    ) -> QueueRow:
        """The queue with its policies and items, all in one transaction or nothing."""
        _check_order(order)
        now = utc_now()
        with self.history.connection() as conn, write_txn(conn):
            if conn.execute("SELECT 1 FROM queues WHERE name = ?", (name,)).fetchone():
                raise QueueExists(
                    f"A queue named {name!r} already exists; choose another name, or delete "
                    f"it with `safeguard-desktop queue delete {name}`."
                )
            cur = conn.execute(
                "INSERT INTO queues (name, created_at, moderator, model, effort, item_order) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, now, moderator, model, effort, order),
            )
            queue_id = cast(int, cur.lastrowid)
            for position, p in enumerate(policies, start=1):
                conn.execute(
                    "INSERT OR IGNORE INTO policy_versions "
                    "(sha256, policy_id, title, version, text, first_seen) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (p.sha256, p.policy_id, p.title, p.version, p.text, now),
                )
                conn.execute(
                    "INSERT INTO queue_policies (queue_id, position, policy_sha256, policy_id) "
                    "VALUES (?, ?, ?, ?)",
                    (queue_id, position, p.sha256, p.policy_id),
                )
            conn.executemany(
                "INSERT INTO queue_items (queue_id, position, content_json, content_text, "
                "content_kind, external_id, source, item_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    (queue_id, n, json.dumps(dict(it.content), ensure_ascii=False), it.text,
                     it.kind, it.external_id, it.source, it.time)
                    for n, it in enumerate(items, start=1)
                ),
            )  # fmt: skip
            row = conn.execute("SELECT * FROM queues WHERE id = ?", (queue_id,)).fetchone()
        return _queue(row)

    def get(self, name: str) -> QueueRow | None:
        with self.history.connection() as conn:
            row = conn.execute("SELECT * FROM queues WHERE name = ?", (name,)).fetchone()
        return None if row is None else _queue(row)

    def all(self) -> list[QueueRow]:
        """Newest first."""
        with self.history.connection() as conn:
            rows = conn.execute("SELECT * FROM queues ORDER BY id DESC").fetchall()
        return [_queue(r) for r in rows]

    def set_order(self, queue_id: int, order: str) -> None:
        """How the queue lists its items (one of ITEM_ORDERS)."""
        _check_order(order)
        with self.history.connection() as conn, write_txn(conn):
            conn.execute("UPDATE queues SET item_order = ? WHERE id = ?", (order, queue_id))

    def delete(self, queue_id: int) -> None:
        """The queue, its items and links; the reviews and the decision trail stay."""
        with self.history.connection() as conn, write_txn(conn):
            conn.execute("DELETE FROM queues WHERE id = ?", (queue_id,))

    def policies(self, queue_id: int) -> list[PolicyText]:
        with self.history.connection() as conn:
            rows = conn.execute(
                "SELECT v.sha256, q.policy_id, v.title, v.version, v.text "
                "FROM queue_policies q JOIN policy_versions v ON v.sha256 = q.policy_sha256 "
                "WHERE q.queue_id = ? ORDER BY q.position",
                (queue_id,),
            ).fetchall()
        return [PolicyText(*r) for r in rows]

    # --- reading items ----------------------------------------------------------------------

    def items(self, queue_id: int) -> list[ItemRow]:
        """Every item, by position."""
        with self.history.connection() as conn:
            rows = conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM queue_items WHERE queue_id = ? ORDER BY position",
                (queue_id,),
            ).fetchall()
        return [_item(r) for r in rows]

    def item(self, queue_id: int, position: int) -> ItemRow | None:
        """The item at this 1-based position, None when there is none."""
        with self.history.connection() as conn:
            row = conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM queue_items WHERE queue_id = ? AND position = ?",
                (queue_id, position),
            ).fetchone()
        return None if row is None else _item(row)

    def item_count(self, queue_id: int) -> int:
        with self.history.connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM queue_items WHERE queue_id = ?", (queue_id,)
            ).fetchone()
        return int(row[0])

    def state_counts(self, queue_id: int) -> dict[str, int]:
        with self.history.connection() as conn:
            rows = conn.execute(
                "SELECT state, count(*) FROM queue_items WHERE queue_id = ? GROUP BY state",
                (queue_id,),
            ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def links(self, queue_id: int, *, item_id: int | None = None) -> list[ItemLink]:
        """Every review linked to the queue's items (or to the one item), oldest link first."""
        where, params = _only(queue_id, item_id)
        with self.history.connection() as conn:
            rows = conn.execute(
                "SELECT l.item_id, l.policy_sha256, l.review_id, l.outcome, "
                "CASE WHEN r.id IS NULL THEN NULL WHEN l.outcome = 'failed' THEN 'failed' "
                "ELSE coalesce(r.verdict_label, 'unparsed') END, r.rule_ids, r.confidence, "
                "r.host "
                "FROM queue_item_reviews l JOIN queue_items i ON i.id = l.item_id "
                f"LEFT JOIN reviews r ON r.id = l.review_id WHERE {where} ORDER BY l.id",
                params,
            ).fetchall()
        return [
            ItemLink(r[0], r[1], r[2], r[3], r[4], tuple(str(r[5] or "").split()), r[6], r[7])
            for r in rows
        ]

    def decisions(self, queue_id: int, *, item_id: int | None = None) -> dict[int, ItemDecision]:
        """Each decided item's latest deciding entry of the trail, by item id (of the one
        item only, with `item_id`). An item whose latest entry is a retraction is undecided."""
        where, params = _only(queue_id, item_id)
        with self.history.connection() as conn:
            rows = conn.execute(
                "SELECT l.item_id, d.action, d.label, d.note, d.moderator, d.at, d.id, d.rule "
                "FROM decisions d JOIN queue_item_reviews l ON l.review_id = d.review_id "
                f"JOIN queue_items i ON i.id = l.item_id WHERE {where} "
                f"AND d.action IN {_DECIDING_SQL} ORDER BY d.id",
                params,
            ).fetchall()
        latest = {int(r[0]): ItemDecision(*r[1:]) for r in rows}
        return {item: d for item, d in latest.items() if d.action != RETRACTED}

    # --- running ----------------------------------------------------------------------------

    @staticmethod
    def runner_alive(queue: QueueRow, *, stale_after: float = 60.0) -> bool:
        """Whether a process other than this one is running the queue now."""
        if queue.runner_pid is None:
            return False
        if queue.runner_host == socket.gethostname():
            return queue.runner_pid != os.getpid() and processes.pid_alive(queue.runner_pid)
        cutoff = format_utc(datetime.now(UTC) - timedelta(seconds=stale_after))
        return queue.runner_beat is not None and queue.runner_beat > cutoff

    def claim(self, queue_id: int) -> int:
        """Become the queue's runner; items a dead runner left classifying become
        interrupted (they run again). Returns how many. Raises QueueBusy."""
        with self.history.connection() as conn, write_txn(conn):
            queue = _queue(
                conn.execute("SELECT * FROM queues WHERE id = ?", (queue_id,)).fetchone()
            )
            if self.runner_alive(queue):
                raise QueueBusy(queue.name, queue.runner_pid, queue.runner_host)
            conn.execute(
                "UPDATE queues SET runner_pid = ?, runner_host = ?, runner_beat = ? WHERE id = ?",
                (os.getpid(), socket.gethostname(), utc_now(), queue_id),
            )
            cur = conn.execute(
                "UPDATE queue_items SET state = 'interrupted' "
                "WHERE queue_id = ? AND state = 'classifying'",
                (queue_id,),
            )
            # An item whose every review was recorded before the runner died has nothing
            # left to run, so no unit of this run would settle it: it is classified now.
            conn.execute(
                "UPDATE queue_items SET state = 'classified' WHERE queue_id = ? "
                "AND state = 'interrupted' AND NOT EXISTS (SELECT 1 FROM queue_policies p "
                "WHERE p.queue_id = queue_items.queue_id AND NOT EXISTS (SELECT 1 FROM "
                "queue_item_reviews l WHERE l.item_id = queue_items.id "
                "AND l.policy_sha256 = p.policy_sha256 AND l.outcome = 'done'))",
                (queue_id,),
            )
            return cur.rowcount

    def release(self, queue_id: int) -> None:
        with self.history.connection() as conn, write_txn(conn):
            conn.execute(
                "UPDATE queues SET runner_pid = NULL, runner_host = NULL WHERE id = ? "
                "AND runner_pid = ? AND runner_host = ?",
                (queue_id, os.getpid(), socket.gethostname()),
            )

    def units(self, queue_id: int) -> list[Unit]:
        """What is left to classify, in queue order: every (item, policy) of an undecided
        item without a finished review (failed attempts are tried again)."""
        with self.history.connection() as conn:
            # "oldest" is known before classifying, so the run follows it; "verdict" is not.
            rows = conn.execute(
                "SELECT i.id, i.position, p.policy_sha256, i.content_json "
                "FROM queue_items i JOIN queue_policies p ON p.queue_id = i.queue_id "
                "JOIN queues q ON q.id = i.queue_id "
                "WHERE i.queue_id = ? AND i.state != 'decided' AND NOT EXISTS (SELECT 1 FROM "
                "queue_item_reviews l WHERE l.item_id = i.id "
                "AND l.policy_sha256 = p.policy_sha256 AND l.outcome = 'done') "
                "ORDER BY CASE WHEN q.item_order = 'oldest' THEN i.item_time IS NULL END, "
                "CASE WHEN q.item_order = 'oldest' THEN i.item_time END, i.position, p.position",
                (queue_id,),
            ).fetchall()
        return [Unit(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def start(self, unit: Unit) -> bool:
        """Mark the item classifying; False when this unit needs no work (already done)."""
        with self.history.connection() as conn, write_txn(conn):
            if self._done(conn, unit.item_id, unit.policy_sha256):
                return False
            cur = conn.execute(
                "UPDATE queue_items SET state = 'classifying' WHERE id = ? AND state != 'decided'",
                (unit.item_id,),
            )
            return cur.rowcount == 1

    def record(self, unit: Unit, review: FinishedReview, *, settle: bool) -> int | None:
        """Write the finished review and its link in one transaction; returns its id, or
        None when the unit already has a finished review (nothing is written then).

        `settle`: no other unit of the item is in flight, so its state follows its links.
        """
        if review.status not in ("done", "failed"):
            raise ValueError(f"A queue records finished reviews, not {review.status!r} ones.")
        with self.history.connection() as conn, write_txn(conn):
            if self._done(conn, unit.item_id, unit.policy_sha256):
                return None
            review_id = insert_review(
                conn,
                content=review.content, content_text=review.content_text,
                content_kind=review.content_kind, policy_sha256=review.policy_sha256,
                policy_id=review.policy_id, policy_version=review.policy_version,
                policy_title=review.policy_title, policy_text=review.policy_text,
                model=review.model, effort=review.effort, num_ctx=review.num_ctx,
                seed=review.seed, temperature=review.temperature, moderator=review.moderator,
                source="queue", host=review.host, model_digest=review.model_digest,
                ollama_version=review.ollama_version, backend=review.backend,
            )  # fmt: skip
            write_outcome(
                conn, review_id, status=review.status, reasoning=review.reasoning,
                answer=review.answer, verdict=review.verdict, stats=review.stats,
                error=review.error,
            )  # fmt: skip
            conn.execute(
                "INSERT INTO queue_item_reviews (item_id, policy_sha256, review_id, outcome, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (unit.item_id, unit.policy_sha256, review_id, review.status, utc_now()),
            )
            conn.execute(
                "UPDATE queues SET runner_beat = ? WHERE id = "
                "(SELECT queue_id FROM queue_items WHERE id = ?)",
                (utc_now(), unit.item_id),
            )
            if settle:
                self._settle(conn, unit.item_id)
        return review_id

    def settle(self, item_ids: Sequence[int]) -> None:
        """Items with nothing in flight any more (a stopped run): state from their links."""
        with self.history.connection() as conn, write_txn(conn):
            for item_id in item_ids:
                self._settle(conn, item_id)

    @staticmethod
    def _done(conn: sqlite3.Connection, item_id: int, sha: str) -> bool:
        return (
            conn.execute(
                "SELECT 1 FROM queue_item_reviews WHERE item_id = ? AND policy_sha256 = ? "
                "AND outcome = 'done'",
                (item_id, sha),
            ).fetchone()
            is not None
        )

    @staticmethod
    def _settle(conn: sqlite3.Connection, item_id: int) -> None:
        """classified when every policy has a finished review, failed when one of the rest
        failed, else pending; a decided item stays decided."""
        conn.execute(
            "UPDATE queue_items SET state = CASE "
            "WHEN (SELECT count(*) FROM queue_policies p WHERE p.queue_id = queue_items.queue_id "
            "AND NOT EXISTS (SELECT 1 FROM queue_item_reviews l WHERE l.item_id = queue_items.id "
            "AND l.policy_sha256 = p.policy_sha256 AND l.outcome = 'done')) = 0 "
            "THEN 'classified' "
            "WHEN EXISTS (SELECT 1 FROM queue_item_reviews l WHERE l.item_id = queue_items.id "
            "AND l.outcome = 'failed') THEN 'failed' ELSE 'pending' END "
            "WHERE id = ? AND state != 'decided'",
            (item_id,),
        )

    # --- deciding ---------------------------------------------------------------------------

    def decide(
        self,
        item_id: int,
        *,
        action: str,
        moderator: str,
        label: str | None = None,
        note: str | None = None,
        rule: str | None = None,
    ) -> list[int]:
        """One sealed trail entry on each of the item's finished reviews (on its failed ones
        when none finished), all or none; the item becomes decided. Returns their ids.

        ValueError when the item has no review to decide on.
        """
        if action not in ITEM_ACTIONS:
            raise ValueError(f"Unknown action {action!r}: use one of {', '.join(ITEM_ACTIONS)}.")
        rule = check_rule(rule, action)
        with self.history.connection() as conn, write_txn(conn):
            targets = self._targets(conn, item_id)
            if not targets:
                raise ValueError("This item has no review in the history to decide on.")
            ids = [
                append_decision(
                    conn,
                    review_id,
                    action=action,
                    moderator=moderator,
                    label=label,
                    note=note,
                    rule=rule,
                )
                for review_id in targets
            ]
            conn.execute("UPDATE queue_items SET state = 'decided' WHERE id = ?", (item_id,))
        return ids

    def add_note(self, item_id: int, *, moderator: str, note: str) -> list[int]:
        """A sealed "note" entry on the reviews a decision would go on, all or none; the
        item's decision and state stay as they are. ValueError when it has no review."""
        with self.history.connection() as conn, write_txn(conn):
            targets = self._targets(conn, item_id)
            if not targets:
                raise ValueError("This item has no review in the history to note on yet.")
            return [
                append_decision(conn, review_id, action="note", moderator=moderator, note=note)
                for review_id in targets
            ]

    @staticmethod
    def _targets(conn: sqlite3.Connection, item_id: int) -> list[int]:
        """The item's finished reviews still in the history (its failed ones when none)."""
        links = conn.execute(
            "SELECT l.review_id, l.outcome FROM queue_item_reviews l "
            "JOIN reviews r ON r.id = l.review_id WHERE l.item_id = ? ORDER BY l.id",
            (item_id,),
        ).fetchall()
        done = [int(r[0]) for r in links if r[1] == "done"]
        return done or [int(r[0]) for r in links]

    def retract(self, item_id: int, *, moderator: str, note: str | None = None) -> list[int]:
        """Undo the item's decision by appending: one sealed "retracted" entry on each of its
        reviews whose latest entry decides (the reviews its decision was made on), all or
        none. The item is undecided again and back in the state its links give (classified,
        failed or pending). Returns the entries' ids.

        ValueError when the item has no decision to undo.
        """
        with self.history.connection() as conn, write_txn(conn):
            rows = conn.execute(
                "SELECT l.review_id, d.action FROM queue_item_reviews l "
                "JOIN decisions d ON d.review_id = l.review_id "
                f"WHERE l.item_id = ? AND d.action IN {_DECIDING_SQL} ORDER BY d.id",
                (item_id,),
            ).fetchall()
            if not rows or rows[-1][1] == RETRACTED:
                raise ValueError("This item has no decision to undo.")
            latest: dict[int, str] = {}
            for review_id, action in rows:
                latest[int(review_id)] = str(action)
            ids = [
                append_decision(conn, review_id, action=RETRACTED, moderator=moderator, note=note)
                for review_id, action in latest.items()
                if action != RETRACTED
            ]
            cur = conn.execute(
                "UPDATE queue_items SET state = 'pending' WHERE id = ? AND state = 'decided'",
                (item_id,),
            )
            if cur.rowcount:
                self._settle(conn, item_id)
        return ids


_ITEM_COLUMNS = (
    "id, position, state, content_json, content_text, content_kind, external_id, source, item_time"
)


def _item(r: sqlite3.Row) -> ItemRow:
    return ItemRow(r[0], r[1], r[2], json.loads(r[3]), r[4], r[5], r[6], r[7], r[8])


def _only(queue_id: int, item_id: int | None) -> tuple[str, tuple[int, ...]]:
    """The WHERE clause for a queue's links (l) and items (i), or one item's (by its index)."""
    if item_id is None:
        return "i.queue_id = ?", (queue_id,)
    return "i.queue_id = ? AND l.item_id = ?", (queue_id, item_id)


def _check_order(order: str) -> None:
    if order not in ITEM_ORDERS:
        raise ValueError(f"Unknown item order {order!r}: use one of {', '.join(ITEM_ORDERS)}.")
