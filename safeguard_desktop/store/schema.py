"""History schema as ordered migration steps: step N brings `PRAGMA user_version` to N.

Never edit a released step: append a new one (a DB in the field is at some step already).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable

# 'SGDH' (Safeguard Desktop History): lets restore() and open() tell our files from others.
APPLICATION_ID = 0x53474448

_MIGRATION_1: tuple[str, ...] = (
    f"PRAGMA application_id = {APPLICATION_ID}",
    """
    CREATE TABLE policy_versions (
        sha256      TEXT PRIMARY KEY NOT NULL,
        policy_id   TEXT NOT NULL,
        title       TEXT NOT NULL DEFAULT '',
        version     TEXT,
        text        TEXT NOT NULL,
        first_seen  TEXT NOT NULL
    )
    """,
    # AUTOINCREMENT: ids of deleted reviews are never reused, so the audit rows that
    # outlive them can never be mistaken for decisions on a newer review.
    # confidence has no declared type: the model gives "high" or 0.9, both kept as given.
    """
    CREATE TABLE reviews (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at      TEXT NOT NULL,
        finished_at     TEXT,
        heartbeat_at    TEXT NOT NULL,
        status          TEXT NOT NULL,
        content_json    TEXT NOT NULL,
        content_text    TEXT NOT NULL,
        content_kind    TEXT NOT NULL,
        source          TEXT NOT NULL,
        policy_sha256   TEXT NOT NULL REFERENCES policy_versions (sha256),
        policy_id       TEXT NOT NULL,
        policy_version  TEXT,
        model           TEXT NOT NULL,
        model_digest    TEXT,
        ollama_version  TEXT,
        host            TEXT NOT NULL DEFAULT '',
        effort          TEXT NOT NULL,
        num_ctx         INTEGER NOT NULL,
        seed            INTEGER,
        temperature     REAL,
        moderator       TEXT NOT NULL,
        reasoning       TEXT NOT NULL DEFAULT '',
        answer          TEXT NOT NULL DEFAULT '',
        verdict_json    TEXT,
        verdict_label   TEXT,
        category        TEXT,
        rule_ids        TEXT NOT NULL DEFAULT '',
        confidence,
        rationale       TEXT,
        stats_json      TEXT,
        error           TEXT,
        escalated       INTEGER NOT NULL DEFAULT 0 CHECK (escalated IN (0, 1)),
        last_decision   TEXT,
        notes           TEXT NOT NULL DEFAULT ''
    )
    """,
    # Each list filter has an index led by its column then created_at, so the newest-first
    # page (created_at DESC, id DESC) is read straight from the index, never sorted.
    # The other filter columns ride along so combined filters and count() never read rows.
    "CREATE INDEX reviews_created ON reviews "
    "(created_at, id, policy_id, verdict_label, status, escalated, last_decision)",
    "CREATE INDEX reviews_policy ON reviews "
    "(policy_id, created_at, id, verdict_label, status, escalated, last_decision)",
    "CREATE INDEX reviews_verdict ON reviews "
    "(verdict_label, created_at, id, policy_id, status, escalated, last_decision)",
    "CREATE INDEX reviews_status ON reviews "
    "(status, created_at, id, policy_id, verdict_label, escalated, last_decision)",
    "CREATE INDEX reviews_escalated ON reviews "
    "(escalated, created_at, id, policy_id, verdict_label, status, last_decision)",
    "CREATE INDEX reviews_decision ON reviews "
    "(last_decision, created_at, id, policy_id, verdict_label, status, escalated)",
    # Filtered search checks each full-text match against this narrow copy of the filter
    # columns instead of the wide rows (2-4x faster at 1M reviews, see bench_history.py).
    "CREATE INDEX reviews_by_id ON reviews "
    "(id, created_at, policy_id, verdict_label, status, escalated, last_decision)",
    # review_id is deliberately not a foreign key: audit rows outlive deleted reviews.
    """
    CREATE TABLE decisions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        review_id   INTEGER,
        action      TEXT NOT NULL,
        label       TEXT,
        note        TEXT,
        moderator   TEXT NOT NULL,
        at          TEXT NOT NULL
    )
    """,
    "CREATE INDEX decisions_review ON decisions (review_id, id)",
    """
    CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions
    BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END
    """,
    """
    CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions
    BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END
    """,
    # External-content FTS: the text lives once, in reviews; triggers keep the index in sync.
    """
    CREATE VIRTUAL TABLE reviews_fts USING fts5 (
        content_text, reasoning, rationale, notes,
        content = 'reviews', content_rowid = 'id',
        tokenize = 'unicode61 remove_diacritics 2'
    )
    """,
    """
    CREATE TRIGGER reviews_fts_insert AFTER INSERT ON reviews BEGIN
        INSERT INTO reviews_fts (rowid, content_text, reasoning, rationale, notes)
        VALUES (new.id, new.content_text, new.reasoning, new.rationale, new.notes);
    END
    """,
    """
    CREATE TRIGGER reviews_fts_delete AFTER DELETE ON reviews BEGIN
        INSERT INTO reviews_fts (reviews_fts, rowid, content_text, reasoning, rationale, notes)
        VALUES ('delete', old.id, old.content_text, old.reasoning, old.rationale, old.notes);
    END
    """,
    """
    CREATE TRIGGER reviews_fts_update AFTER UPDATE OF content_text, reasoning, rationale, notes
    ON reviews
    WHEN old.content_text IS NOT new.content_text OR old.reasoning IS NOT new.reasoning
      OR old.rationale IS NOT new.rationale OR old.notes IS NOT new.notes
    BEGIN
        INSERT INTO reviews_fts (reviews_fts, rowid, content_text, reasoning, rationale, notes)
        VALUES ('delete', old.id, old.content_text, old.reasoning, old.rationale, old.notes);
        INSERT INTO reviews_fts (rowid, content_text, reasoning, rationale, notes)
        VALUES (new.id, new.content_text, new.reasoning, new.rationale, new.notes);
    END
    """,
    # Row count kept by triggers so the History view's total costs nothing at 1M rows.
    """
    CREATE TABLE review_stats (
        id      INTEGER PRIMARY KEY CHECK (id = 1),
        total   INTEGER NOT NULL
    )
    """,
    "INSERT INTO review_stats (id, total) VALUES (1, 0)",
    """
    CREATE TRIGGER review_stats_insert AFTER INSERT ON reviews
    BEGIN UPDATE review_stats SET total = total + 1 WHERE id = 1; END
    """,
    """
    CREATE TRIGGER review_stats_delete AFTER DELETE ON reviews
    BEGIN UPDATE review_stats SET total = total - 1 WHERE id = 1; END
    """,
)

# Append a migration as another tuple of statements (or of functions taking the connection,
# for work SQL cannot do); user_version follows the index.
# Each step runs in one transaction with foreign keys on: a table rebuild must follow
# SQLite's "12-step" ALTER recipe (with PRAGMA defer_foreign_keys) and recreate triggers.
# 2: who is writing a running review (pid + host), so the next start can tell at once that
# a crashed writer is gone instead of waiting for its heartbeat to go stale.
_MIGRATION_2: tuple[str, ...] = (
    "ALTER TABLE reviews ADD COLUMN writer_pid INTEGER",
    "ALTER TABLE reviews ADD COLUMN writer_host TEXT",
)


# --- 3: the decision trail as a hash chain ------------------------------------------------
# Each decision row seals its content and the seal of the row before it (GENESIS for the
# first), so an edited, removed or reordered row shows in `history verify`. The seal format
# is part of the schema: never change it, add a new format tag with a new step.

GENESIS = "0" * 64
SEAL_FORMAT = "sgdh-decision-1"
SEALED_COLUMNS_V3 = ("id", "review_id", "action", "label", "note", "moderator", "at")
# Step 8 adds the rule or category an override names; a row without one is sealed exactly
# as before, so every seal written earlier still holds.
SEALED_COLUMNS = (*SEALED_COLUMNS_V3, "rule")


def sealed_columns(conn: sqlite3.Connection) -> tuple[str, ...]:
    """The sealed columns this database has (a history not yet at step 8 has no `rule`)."""
    present = {str(r[1]) for r in conn.execute("PRAGMA table_info(decisions)")}
    return SEALED_COLUMNS if "rule" in present else SEALED_COLUMNS_V3


def seal(row: tuple[object, ...], prev_hash: str) -> str:
    """sha256 of one decision's SEALED_COLUMNS values (in that order) and the previous seal;
    a NULL rule (or none at all) is left out, as rows were sealed before step 8.

    JSON keeps the types: a review id turned into text no longer matches its seal.
    """
    if len(row) > len(SEALED_COLUMNS_V3) and row[len(SEALED_COLUMNS_V3)] is None:
        row = row[: len(SEALED_COLUMNS_V3)]
    payload = _SEAL_JSON.encode([SEAL_FORMAT, *row, prev_hash])
    return hashlib.sha256(payload.encode("ascii")).hexdigest()


_SEAL_JSON = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))  # made once: 3x faster


# The actions that are a moderator's decision on one review (the others are audit entries:
# delete, purge, restore, repair) and the summary columns of `reviews` they give.
SUMMARY_ACTIONS = "('agree', 'override', 'escalate')"
NOTE_ACTIONS = "('agree', 'override', 'escalate', 'note')"
# An appended undo (step 5): it cancels every decision before it on its review, which is
# undecided again. The trail stays append-only: nothing is edited or removed to undo.
RETRACTED = "retracted"
_LAST_ACTIONS = "('agree', 'override', 'escalate', 'retracted')"


def derived_summary(review_id: str) -> tuple[str, str, str]:
    """SQL for (escalated, last_decision, notes) of the review whose id is `review_id`,
    read from its decisions: the only source of those columns.

    escalated: an escalate after the latest retraction; last_decision: the latest of the
    SUMMARY_ACTIONS and retractions, NULL when that is a retraction (or there is none)."""
    escalated = (
        f"EXISTS (SELECT 1 FROM decisions d WHERE d.review_id = {review_id} "
        "AND d.action = 'escalate' AND NOT EXISTS (SELECT 1 FROM decisions x "
        f"WHERE x.review_id = {review_id} AND x.action = 'retracted' AND x.id > d.id))"
    )
    last = (
        f"(SELECT nullif(d.action, 'retracted') FROM decisions d WHERE d.review_id = {review_id} "
        f"AND d.action IN {_LAST_ACTIONS} ORDER BY d.id DESC LIMIT 1)"
    )
    notes = (
        "coalesce((SELECT group_concat(n.note, char(10)) FROM (SELECT d.note AS note "
        f"FROM decisions d WHERE d.review_id = {review_id} AND d.action IN {NOTE_ACTIONS} "
        "AND d.note IS NOT NULL ORDER BY d.id) n), '')"
    )
    return escalated, last, notes


def _summary_update_trigger(escalated: str, last: str, notes: str) -> str:
    return (
        "CREATE TRIGGER reviews_summary_update "
        "BEFORE UPDATE OF escalated, last_decision, notes ON reviews "
        f"WHEN new.escalated IS NOT {escalated} OR new.last_decision IS NOT {last} "
        f"OR new.notes IS NOT {notes} "
        "BEGIN SELECT RAISE(ABORT, 'review summaries follow the decision trail'); END"
    )


# reviews_summary_update as steps 3 and 4 defined it (before retractions), frozen: step 3
# writes exactly this, and step 5 replaces it only where a history still has it unaltered.
SUMMARY_UPDATE_V3 = (
    "CREATE TRIGGER reviews_summary_update BEFORE UPDATE OF escalated, last_decision, notes "
    "ON reviews WHEN new.escalated IS NOT EXISTS (SELECT 1 FROM decisions d "
    "WHERE d.review_id = new.id AND d.action = 'escalate') "
    "OR new.last_decision IS NOT (SELECT d.action FROM decisions d WHERE d.review_id = new.id "
    "AND d.action IN ('agree', 'override', 'escalate') ORDER BY d.id DESC LIMIT 1) "
    "OR new.notes IS NOT coalesce((SELECT group_concat(n.note, char(10)) FROM "
    "(SELECT d.note AS note FROM decisions d WHERE d.review_id = new.id "
    "AND d.action IN ('agree', 'override', 'escalate', 'note') AND d.note IS NOT NULL "
    "ORDER BY d.id) n), '') "
    "BEGIN SELECT RAISE(ABORT, 'review summaries follow the decision trail'); END"
)

# The triggers that protect the trail, by name; checked and re-created at every open.
# Entries may be added; changing one changes the meaning of the step that created it: add a
# step that replaces it instead (as step 5 does for reviews_summary_update).
PROTECTING_TRIGGERS: dict[str, str] = {
    "decisions_no_update": "CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions "
    "BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END",
    "decisions_no_delete": "CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions "
    "BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END",
    # REPLACE deletes the old row without firing delete triggers: refuse a taken id first.
    "decisions_no_replace": "CREATE TRIGGER decisions_no_replace BEFORE INSERT ON decisions "
    "WHEN EXISTS (SELECT 1 FROM decisions WHERE id = new.id) "
    "BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END",
    "reviews_summary_insert": "CREATE TRIGGER reviews_summary_insert BEFORE INSERT ON reviews "
    "WHEN new.escalated IS NOT 0 OR new.last_decision IS NOT NULL OR new.notes IS NOT '' "
    "BEGIN SELECT RAISE(ABORT, 'review summaries follow the decision trail'); END",
    "reviews_summary_update": _summary_update_trigger(*derived_summary("new.id")),
}


def trigger_sql(conn: sqlite3.Connection) -> dict[str, str]:
    """The protecting triggers as the file has them now, whitespace-normalised."""
    names = tuple(PROTECTING_TRIGGERS)
    rows = conn.execute(
        f"SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
        f"AND name IN ({', '.join('?' * len(names))})",
        names,
    ).fetchall()
    return {str(name): " ".join(str(sql).split()) for name, sql in rows}


def altered_triggers(conn: sqlite3.Connection, names: tuple[str, ...] | None = None) -> list[str]:
    """Names of protecting triggers that are missing or differ from their definition."""
    present = trigger_sql(conn)
    return [
        name
        for name in names or tuple(PROTECTING_TRIGGERS)
        if present.get(name) != " ".join(PROTECTING_TRIGGERS[name].split())
    ]


def _seal_existing_decisions(conn: sqlite3.Connection) -> None:
    """Seal the rows written before step 3, oldest first. The update guard is lifted for
    this only; a trigger already missing stays missing, so the next open reports it."""
    had_guard = "decisions_no_update" not in altered_triggers(conn, ("decisions_no_update",))
    conn.execute("DROP TRIGGER IF EXISTS decisions_no_update")
    prev, last_id = GENESIS, -(2**63)
    while True:
        rows = conn.execute(
            f"SELECT {', '.join(SEALED_COLUMNS_V3)} FROM decisions WHERE id > ? ORDER BY id "
            "LIMIT 10000",
            (last_id,),
        ).fetchall()
        if not rows:
            break
        sealed = []
        for row in rows:
            row_hash = seal(tuple(row), prev)
            sealed.append((prev, row_hash, row[0]))
            prev, last_id = row_hash, row[0]
        conn.executemany("UPDATE decisions SET prev_hash = ?, row_hash = ? WHERE id = ?", sealed)
    if had_guard:
        conn.execute(PROTECTING_TRIGGERS["decisions_no_update"])


Step = str | Callable[[sqlite3.Connection], None]

_MIGRATION_3: tuple[Step, ...] = (
    "ALTER TABLE decisions ADD COLUMN prev_hash TEXT",
    "ALTER TABLE decisions ADD COLUMN row_hash TEXT",
    _seal_existing_decisions,
    PROTECTING_TRIGGERS["decisions_no_replace"],
    PROTECTING_TRIGGERS["reviews_summary_insert"],
    SUMMARY_UPDATE_V3,
)


# --- 4: review queues ----------------------------------------------------------------------
# A queue holds items (imported content, in order) and the policies each item is classified
# against. Every classification is an ordinary review; queue_item_reviews links it to its item.
# At most one *done* review per (item, policy) can ever be linked (a partial unique index,
# not care); failed attempts stay linked beside it, so a retry keeps the failure's provenance.
# Decisions on an item are rows of the one decision trail (step 3), on its linked reviews.
# review_id is not a foreign key, as in `decisions`: a review deleted from the history (or
# purged by retention) must not be blocked by a queue, and its link stays as a record.
# `state` is the item's place in the workflow, kept by the runner; the links are the truth.
QUEUE_STATES = ("pending", "classifying", "classified", "decided", "failed", "interrupted")

_MIGRATION_4: tuple[Step, ...] = (
    """
    CREATE TABLE queues (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        name         TEXT NOT NULL UNIQUE,
        created_at   TEXT NOT NULL,
        moderator    TEXT NOT NULL,
        model        TEXT NOT NULL,
        effort       TEXT,
        item_order   TEXT NOT NULL DEFAULT 'file'
                     CHECK (item_order IN ('file', 'oldest', 'verdict')),
        runner_pid   INTEGER,
        runner_host  TEXT,
        runner_beat  TEXT
    )
    """,
    """
    CREATE TABLE queue_policies (
        queue_id       INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
        position       INTEGER NOT NULL CHECK (position >= 1),
        policy_sha256  TEXT NOT NULL REFERENCES policy_versions (sha256),
        policy_id      TEXT NOT NULL,
        PRIMARY KEY (queue_id, position),
        UNIQUE (queue_id, policy_sha256)
    )
    """,
    f"""
    CREATE TABLE queue_items (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        queue_id      INTEGER NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
        position      INTEGER NOT NULL CHECK (position >= 1),
        content_json  TEXT NOT NULL,
        content_text  TEXT NOT NULL,
        content_kind  TEXT NOT NULL,
        external_id   TEXT,
        source        TEXT,
        state         TEXT NOT NULL DEFAULT 'pending'
                      CHECK (state IN ({", ".join(f"'{s}'" for s in QUEUE_STATES)})),
        UNIQUE (queue_id, position)
    )
    """,
    "CREATE INDEX queue_items_state ON queue_items (queue_id, state, position)",
    """
    CREATE TABLE queue_item_reviews (
        id             INTEGER PRIMARY KEY AUTOINCREMENT,
        item_id        INTEGER NOT NULL REFERENCES queue_items (id) ON DELETE CASCADE,
        policy_sha256  TEXT NOT NULL,
        review_id      INTEGER NOT NULL UNIQUE,
        outcome        TEXT NOT NULL CHECK (outcome IN ('done', 'failed')),
        at             TEXT NOT NULL
    )
    """,
    "CREATE UNIQUE INDEX queue_item_reviews_once ON queue_item_reviews (item_id, policy_sha256) "
    "WHERE outcome = 'done'",
    "CREATE INDEX queue_item_reviews_item ON queue_item_reviews (item_id, policy_sha256, id)",
    # A link says which review classified an item: it is written once, never rewritten.
    """
    CREATE TRIGGER queue_item_reviews_no_update BEFORE UPDATE ON queue_item_reviews
    BEGIN SELECT RAISE(ABORT, 'queue links are written once'); END
    """,
)


# --- 5: undo as an appended retraction, and the item's own time --------------------------
# A "retracted" entry cancels every decision before it on its review (the queue's U key):
# the list's summary follows, so reviews_summary_update gets the definition that knows it.
# queue_items.item_time: when the item itself was written (a JSONL "created_at", an e-mail's
# Date), in UTC, for the "oldest first" order; NULL when the content does not say.


def _summary_knows_retractions(conn: sqlite3.Connection) -> None:
    """Replace step 3's reviews_summary_update by the current one and recompute the summary
    of every review with a retraction. A trigger already missing or altered is dropped and
    left missing: the next open re-creates it and records the repair, as for any tampering."""
    present = trigger_sql(conn).get("reviews_summary_update")
    conn.execute("DROP TRIGGER IF EXISTS reviews_summary_update")
    known = (SUMMARY_UPDATE_V3, PROTECTING_TRIGGERS["reviews_summary_update"])
    if present in {" ".join(sql.split()) for sql in known}:
        conn.execute(PROTECTING_TRIGGERS["reviews_summary_update"])
    escalated, last, notes = derived_summary("reviews.id")
    conn.execute(
        f"UPDATE reviews SET escalated = {escalated}, last_decision = {last}, notes = {notes} "
        "WHERE id IN (SELECT review_id FROM decisions WHERE action = 'retracted')"
    )


_MIGRATION_5: tuple[Step, ...] = (
    _summary_knows_retractions,
    "ALTER TABLE queue_items ADD COLUMN item_time TEXT",
)

# 6: labelled sets and evaluation runs (the policy workbench), defined in evaluations.py
# beside the code that reads those tables.
from .evaluations import MIGRATION_EVALUATIONS  # noqa: E402 (beside the tuple it extends)

# --- 7: which kind of server judged, and the model id it said it served ------------------
# A review can come from any host of a pool: `host` (its address) was there from the start;
# `backend` is "ollama" or "openai" (vLLM, llama-server, LM Studio), and `served_model` is
# the model id the server named in its answer (an alias on the host may differ from the
# model asked for). NULL on reviews written before: they came from Ollama, whose answer was
# not kept.
_MIGRATION_7: tuple[Step, ...] = (
    "ALTER TABLE reviews ADD COLUMN backend TEXT",
    "ALTER TABLE reviews ADD COLUMN served_model TEXT",
)

# --- 8: an override names the rule or category it applies ---------------------------------
# `decisions.rule` (e.g. "H2.f"), sealed with the row when given; see SEALED_COLUMNS.
_MIGRATION_RULE: tuple[Step, ...] = ("ALTER TABLE decisions ADD COLUMN rule TEXT",)

# --- 9: prefix indexes for the full-text search -------------------------------------------
# The step checks what the file has: a file whose index has them already is left alone.
# A search matches its last word as a prefix ("kata" finds "katalog"). Without a prefix
# index FTS5 merges the postings of every word so starting, for every search (11 ms at
# 100,000 reviews for a common prefix, growing with the history); with one, a prefix of 2,
# 3 or 4 characters is one lookup. The full-text index is derived data (external content:
# the text lives in `reviews`), so it is dropped, made again with the prefix indexes and
# rebuilt from the rows: no review, decision or other table is touched, and the triggers
# that keep it in step (step 1) stay as they are.
FTS_PREFIXES = "2 3 4"
REVIEWS_FTS = (
    "CREATE VIRTUAL TABLE reviews_fts USING fts5 (content_text, reasoning, rationale, notes, "
    "content = 'reviews', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2', "
    f"prefix = '{FTS_PREFIXES}')"
)


def _fts_with_prefixes(conn: sqlite3.Connection) -> None:
    """Rebuild reviews_fts with prefix indexes, unless it has them already."""
    row = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'reviews_fts'"
    ).fetchone()
    if row is not None and " ".join(str(row[0]).split()) == REVIEWS_FTS:
        return
    conn.execute("DROP TABLE IF EXISTS reviews_fts")
    conn.execute(REVIEWS_FTS)
    conn.execute("INSERT INTO reviews_fts (reviews_fts) VALUES ('rebuild')")


_MIGRATION_SEARCH: tuple[Step, ...] = (_fts_with_prefixes,)

MIGRATIONS: tuple[tuple[Step, ...], ...] = (
    _MIGRATION_1,
    _MIGRATION_2,
    _MIGRATION_3,
    _MIGRATION_4,
    _MIGRATION_5,
    MIGRATION_EVALUATIONS,
    _MIGRATION_7,
    _MIGRATION_RULE,
    _MIGRATION_SEARCH,
)
