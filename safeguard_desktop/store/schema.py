"""History schema as ordered migration steps: step N brings `PRAGMA user_version` to N.

Never edit a released step: append a new one (a DB in the field is at some step already).
"""

from __future__ import annotations

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

# Append migration 2 here as another tuple of statements; user_version follows the index.
# Each step runs in one transaction with foreign keys on: a table rebuild must follow
# SQLite's "12-step" ALTER recipe (with PRAGMA defer_foreign_keys) and recreate triggers.
# 2: who is writing a running review (pid + host), so the next start can tell at once that
# a crashed writer is gone instead of waiting for its heartbeat to go stale.
_MIGRATION_2: tuple[str, ...] = (
    "ALTER TABLE reviews ADD COLUMN writer_pid INTEGER",
    "ALTER TABLE reviews ADD COLUMN writer_host TEXT",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_MIGRATION_1, _MIGRATION_2)
