"""Local review history: durability, audit, search, filters, backup, damaged files."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop.store import schema
from safeguard_desktop.store.history import Filters, History, HistoryError

REPO = Path(__file__).resolve().parents[1]
POLICY_TEXT = "# Spam\r\n\r\nSP1 Unsolicited ads violate.  \nSP2.a Links to pill shops violate.\n"
POLICY_SHA = hashlib.sha256(POLICY_TEXT.encode()).hexdigest()


def review_args(text: str = "Buy cheap pills at my shop", **over: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "content": {"kind": "message", "text": text},
        "content_text": text,
        "content_kind": "message",
        "policy_sha256": POLICY_SHA,
        "policy_id": "spam",
        "policy_version": "2",
        "policy_title": "Spam",
        "policy_text": POLICY_TEXT,
        "model": "gpt-oss-safeguard:20b",
        "effort": "medium",
        "num_ctx": 16384,
        "seed": 7,
        "temperature": None,
        "moderator": "ana",
        "source": "gui",
    }
    args.update(over)
    return args


def add_done(h: History, text: str, *, reasoning: str = "", violation: int = 1, **over: Any) -> int:
    rid = h.start_review(**review_args(text, **over))
    verdict = {"violation": violation, "policy_category": "SP2", "rule_ids": ["SP2.a"]}
    h.finish_review(
        rid, status="done", reasoning=reasoning, answer="1", verdict=verdict, stats=None
    )
    return rid


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "history.sqlite"


@pytest.fixture
def hist(path: Path) -> Any:
    h = History.open(path)
    yield h
    h.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# --- files and schema --------------------------------------------------------------------


def test_new_history_is_private_wal_and_current(hist: History, path: Path) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    hist.start_review(**review_args())
    assert stat.S_IMODE(Path(f"{path}-wal").stat().st_mode) == 0o600
    conn = raw(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"policy_versions", "reviews", "decisions", "reviews_fts"} <= tables
    conn.close()


def test_foreign_and_newer_databases_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = raw(other)
    conn.execute("CREATE TABLE notes (t TEXT)")
    conn.close()
    with pytest.raises(HistoryError, match="not a Safeguard Desktop history") as err:
        History.open(other)
    assert err.value.kind == "foreign"

    newer = tmp_path / "newer.db"
    History.open(newer).close()
    conn = raw(newer)
    conn.execute(f"PRAGMA user_version = {len(schema.MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(HistoryError, match="newer Safeguard Desktop"):
        History.open(newer)


# --- reviews -----------------------------------------------------------------------------


def test_review_lifecycle_keeps_stream_verdict_and_exact_policy(hist: History) -> None:
    rid = hist.start_review(**review_args(host="http://127.0.0.1:11434"))
    assert hist.get(rid).status == "running"  # type: ignore[union-attr]
    hist.save_progress(rid, reasoning="The content advertises", answer="")
    assert hist.get(rid).reasoning == "The content advertises"  # type: ignore[union-attr]

    verdict = {
        "violation": 1,
        "policy_category": "SP2",
        "rule_ids": ["SP2.a", "SP1"],
        "confidence": "high",
        "rationale": "Link to a pill shop.",
    }
    stats = {"eval_count": 412, "total_duration_ms": 5321.5}
    hist.finish_review(
        rid,
        status="done",
        reasoning="The content advertises pills (SP2.a).",
        answer=json.dumps(verdict),
        verdict=verdict,
        stats=stats,
        model_digest="sha256:abc",
        ollama_version="0.12.6",
    )
    r = hist.get(rid)
    assert r is not None
    assert (r.status, r.verdict_label, r.category, r.rule_ids) == (
        "done", "violation", "SP2", ("SP2.a", "SP1"),
    )  # fmt: skip
    assert r.verdict == verdict and r.stats == stats and r.confidence == "high"
    assert r.content == {"kind": "message", "text": "Buy cheap pills at my shop"}
    assert (r.model_digest, r.ollama_version, r.host) == (
        "sha256:abc", "0.12.6", "http://127.0.0.1:11434",
    )  # fmt: skip
    assert r.finished_at is not None and r.finished_at.endswith("Z")
    assert r.policy_title == "Spam"
    assert hist.policy_text(r.policy_sha256) == POLICY_TEXT  # byte-exact, CRLF and all
    assert hist.policy_text("0" * 64) is None


def test_finish_rules(hist: History) -> None:
    rid = hist.start_review(**review_args())
    hist.finish_review(rid, status="failed", reasoning="", answer="", verdict=None, stats=None,
                       error="Ollama is not running.")  # fmt: skip
    r = hist.get(rid)
    assert r is not None and r.status == "failed" and r.error == "Ollama is not running."
    assert r.verdict is None and r.verdict_label is None
    with pytest.raises(ValueError, match="already failed"):
        hist.finish_review(rid, status="done", reasoning="", answer="", verdict=None, stats=None)
    with pytest.raises(KeyError):
        hist.finish_review(999, status="done", reasoning="", answer="", verdict=None, stats=None)
    with pytest.raises(ValueError, match="source"):
        hist.start_review(**review_args(source="web"))


def test_killed_process_loses_nothing_and_is_reported_interrupted(path: Path) -> None:
    History.open(path).close()
    child = f"""
import sys, time
from pathlib import Path
from safeguard_desktop.store.history import History
h = History.open(Path(sys.argv[1]))
rid = h.start_review(**{review_args()!r})
for i in range(3):
    h.save_progress(rid, reasoning="partial reasoning step %d" % i, answer="")
print(rid, flush=True)
time.sleep(60)
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", child, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        rid = int(proc.stdout.readline())
        with History.open(path) as h:  # the writer is alive: its review is still running
            assert h.get(rid).status == "running"  # type: ignore[union-attr]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    # The writer is gone: the next start reports it at once, without waiting for the
    # heartbeat to go stale, and nothing saved before the kill is lost.
    with History.open(path) as h:
        r = h.get(rid)
        assert r is not None
        assert r.status == "interrupted" and r.reasoning == "partial reasoning step 2"
        assert h.list(filters=Filters(status="interrupted"))[0].id == rid


def test_stream_marked_interrupted_by_another_window_comes_back(hist: History) -> None:
    rid = hist.start_review(**review_args())
    assert hist.recover(stale_after=0) == 1  # e.g. a second window opened during a long load
    assert hist.get(rid).status == "interrupted"  # type: ignore[union-attr]
    hist.save_progress(rid, reasoning="still here", answer="")
    r = hist.get(rid)
    assert r is not None and r.status == "running" and r.finished_at is None
    hist.finish_review(rid, status="cancelled", reasoning="still here", answer="",
                       verdict=None, stats=None)  # fmt: skip
    assert hist.get(rid).status == "cancelled"  # type: ignore[union-attr]


def test_concurrent_threads_share_one_history(hist: History) -> None:
    def work(n: int) -> None:
        for i in range(10):
            rid = hist.start_review(**review_args(f"thread {n} item {i}"))
            hist.save_progress(rid, reasoning="thinking", answer="")
            hist.finish_review(rid, status="done", reasoning="x", answer="0",
                               verdict={"violation": 0}, stats=None)  # fmt: skip

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert hist.count() == 40 == hist.count(Filters(verdict="safe", status="done"))


# --- decisions and audit -----------------------------------------------------------------


def test_decisions_are_append_only_even_through_raw_sql(hist: History, path: Path) -> None:
    rid = add_done(hist, "Buy pills")
    hist.add_decision(rid, action="agree", moderator="ana")
    conn = raw(path)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE decisions SET action = 'override'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM decisions")
    conn.close()
    assert [d.action for d in hist.get(rid).decisions] == ["agree"]  # type: ignore[union-attr]


def test_decision_rules_and_derived_columns(hist: History) -> None:
    rid = add_done(hist, "Buy pills")
    with pytest.raises(ValueError, match="reason"):
        hist.add_decision(rid, action="override", moderator="ana", label="safe", note="  ")
    with pytest.raises(ValueError, match="label"):
        hist.add_decision(rid, action="override", moderator="ana", note="satire")
    with pytest.raises(ValueError, match="action"):
        hist.add_decision(rid, action="delete", moderator="ana")
    with pytest.raises(KeyError):
        hist.add_decision(12345, action="agree", moderator="ana")

    hist.add_decision(rid, action="escalate", moderator="ana", note="ask legal")
    hist.add_decision(rid, action="override", moderator="bo", label="safe", note="satire")
    hist.add_decision(rid, action="note", moderator="bo", note="told the user")
    r = hist.get(rid)
    assert r is not None
    assert [(d.action, d.label, d.moderator) for d in r.decisions] == [
        ("escalate", None, "ana"), ("override", "safe", "bo"), ("note", None, "bo"),
    ]  # fmt: skip
    assert r.escalated and r.last_decision == "override"  # a note is not a decision
    assert [s.id for s in hist.list(filters=Filters(decision="override"))] == [rid]
    assert hist.list(filters=Filters(decision="none")) == []


def test_delete_and_purge_leave_audit_rows(hist: History, path: Path) -> None:
    old1, old2 = add_done(hist, "old one"), add_done(hist, "old two")
    hist.add_decision(old1, action="agree", moderator="ana")
    keep = add_done(hist, "recent")
    running = hist.start_review(**review_args("still streaming"))
    conn = raw(path)
    conn.execute(
        "UPDATE reviews SET created_at = '2020-01-01T00:00:00.000Z' WHERE id IN (?, ?, ?)",
        (old1, old2, running),
    )
    conn.close()

    assert hist.purge(older_than_days=30, moderator="lead") == 2
    assert hist.get(old1) is None and hist.get(keep) is not None
    assert hist.get(running) is not None  # a live stream is never purged
    assert hist.search("old") == []
    hist.delete_review(keep, moderator="ana", reason="pasted by mistake")
    assert hist.get(keep) is None and hist.search("recent") == []
    with pytest.raises(KeyError):
        hist.delete_review(keep, moderator="ana")

    trail = hist.audit()
    assert [(d.action, d.review_id) for d in trail] == [
        ("delete", keep), ("purge", None), ("agree", old1),
    ]  # fmt: skip
    assert trail[0].note == "pasted by mistake" and trail[1].moderator == "lead"
    assert trail[1].note is not None and trail[1].note.startswith("2 reviews")
    assert hist.count() == 1

    # A new review never inherits the audit rows of a deleted one.
    hist.delete_review(running, moderator="ana")
    fresh = add_done(hist, "fresh")
    assert fresh not in (old1, old2, keep, running)
    assert hist.get(fresh).decisions == ()  # type: ignore[union-attr]


# --- search, filters, paging -------------------------------------------------------------

HOSTILE = ['"', "AND OR", "*", "(", "-x", "NEAR", "NEAR(a b)", "content_text:pills", "^pills",
           "pills)", "'", 'a"b', "OR", "NOT pills", "{x}", ":", "+", "", "   ", "pi*lls",
           "😀"]  # fmt: skip


@pytest.mark.parametrize("query", HOSTILE)
def test_search_never_fails_on_hostile_input(hist: History, query: str) -> None:
    rid = add_done(hist, "Buy cheap pills AND more, or NOT: near the (shop)")
    assert isinstance(hist.search(query), list)
    assert [s.id for s in hist.search("pills")] == [rid]  # and plain words still work


def test_search_finds_content_reasoning_notes_and_prefix(hist: History) -> None:
    a = add_done(hist, "Cheap pills at pharmashop dot example", reasoning="Advertises a store")
    b = add_done(hist, "Happy birthday grandma", reasoning="A greeting with no commerce")
    hist.add_decision(b, action="note", moderator="ana", note="grandma confirmed on phone")

    def ids(q: str) -> list[int]:
        return [s.id for s in hist.search(q)]

    assert ids("pills") == [a]  # content
    assert ids("commerce") == [b]  # reasoning
    assert ids("phone") == [b]  # decision note
    assert ids("pharma") == [a]  # prefix on the last word
    assert ids("pharma cheap") == []  # only the last word is a prefix
    assert ids('"pills"') == [a] and ids("PILLS") == [a]
    assert ids("grandma birthday") == [b] and ids("grandma pills") == []
    assert hist.search("pills", filters=Filters(verdict="safe")) == []
    assert [s.id for s in hist.search("pills", filters=Filters(verdict="violation"))] == [a]


def test_search_index_follows_updates(hist: History) -> None:
    rid = hist.start_review(**review_args("hello there"))
    hist.save_progress(rid, reasoning="draftword thinking", answer="")
    assert [s.id for s in hist.search("draftword")] == [rid]  # partial stream is findable
    verdict = {"violation": 0, "rationale": "plain greeting"}
    hist.finish_review(
        rid, status="done", reasoning="finalword", answer="0", verdict=verdict, stats=None
    )
    assert hist.search("draftword") == []
    assert [s.id for s in hist.search("finalword")] == [rid]
    assert [s.id for s in hist.search("greeting")] == [rid]  # rationale


def test_search_lists_matches_newest_first(hist: History) -> None:
    # Issue 12: newest first, as the list (ranking every match by bm25 cost 155-190 ms p95 at
    # 1M reviews); tests/test_history_search.py has the rest.
    weak = add_done(hist, "spam " + "filler words here " * 30)
    strong = add_done(hist, "spam spam spam")
    twin_old = add_done(hist, "same text about spam offers here")
    twin_new = add_done(hist, "same text about spam offers here")
    order = [s.id for s in hist.search("spam")]
    assert order == [twin_new, twin_old, strong, weak]


def test_list_is_newest_first_and_pages_consistently(hist: History) -> None:
    ids = [add_done(hist, f"item {i} " + "word " * 40) for i in range(25)]
    listed = [s.id for s in hist.list(limit=100)]
    assert listed == ids[::-1]
    pages = [s.id for o in range(0, 25, 10) for s in hist.list(offset=o, limit=10)]
    assert pages == listed
    keyset, before = [], None
    while page := hist.list(limit=7, before=before):
        keyset += [s.id for s in page]
        before = (page[-1].created_at, page[-1].id)
    assert keyset == listed
    first = hist.list(limit=1)[0]
    assert first.preview.startswith("item 24 word") and len(first.preview) <= 100
    assert first.verdict_label == "violation" and first.policy_id == "spam"


def test_filters_and_counts(hist: History, path: Path) -> None:
    spam = add_done(hist, "pills")
    safe = add_done(hist, "hello", violation=0)
    other = add_done(hist, "hate", policy_id="hate", policy_version="1")
    unparsed = hist.start_review(**review_args("odd"))
    hist.finish_review(unparsed, status="done", reasoning="", answer="??",
                       verdict={"label": "unparsed"}, stats=None)  # fmt: skip
    running = hist.start_review(**review_args("streaming"))
    hist.add_decision(safe, action="escalate", moderator="ana")
    conn = raw(path)
    conn.execute("UPDATE reviews SET created_at = '2024-03-10T12:00:00.000Z' WHERE id = ?", (spam,))
    conn.close()

    def ids(**kw: Any) -> set[int]:
        f = Filters(**kw)
        found = {s.id for s in hist.list(filters=f)}
        assert hist.count(f) == len(found)
        return found

    assert hist.count() == 5 and hist.count(cap=3) == 3
    assert hist.count(Filters(policy_id="spam"), cap=2) == 2
    assert ids(policy_id="hate") == {other}
    assert ids(verdict="safe") == {safe}
    assert ids(verdict="unparsed") == {unparsed}
    assert ids(verdict="none") == {running}
    assert ids(status="running") == {running}
    assert ids(escalated=True) == {safe}
    assert ids(escalated=False, policy_id="spam", status="done") == {spam, unparsed}
    assert ids(decision="escalate") == {safe}
    assert ids(until="2024-03-10") == {spam}  # a date-only until includes that day
    assert ids(until="2024-03-09") == set()
    assert ids(since="2024-03-11") == {safe, other, unparsed, running}
    assert ids(since="2024-03-10T13:00:00+01:00", until="2024-03-10T12:00:00Z") == {spam}
    with pytest.raises(ValueError, match="verdict"):
        hist.list(filters=Filters(verdict="bad"))
    with pytest.raises(ValueError, match="date"):
        hist.count(Filters(since="last tuesday"))


# --- backup, restore, damage, locks, migrations -------------------------------------------


def test_backup_restore_round_trip(hist: History, path: Path, tmp_path: Path) -> None:
    kept = add_done(hist, "before the backup")
    hist.add_decision(kept, action="agree", moderator="ana")
    dest = tmp_path / "backups" / "history-backup.sqlite"
    hist.backup(dest)
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert not Path(f"{dest}.tmp").exists()
    add_done(hist, "after the backup")
    hist.close()

    History.restore(dest, path, moderator="ana")
    with History.open(path) as h:
        assert [s.preview for s in h.list()] == ["before the backup"]
        assert [d.action for d in h.get(kept).decisions] == ["agree"]  # type: ignore[union-attr]
        assert [s.id for s in h.search("before")] == [kept]
    (previous,) = path.parent.glob(f"{path.name}.before-restore-*")
    with History.open(previous) as old:
        assert old.count() == 2


def test_restore_refuses_non_history_and_keeps_current(
    hist: History, path: Path, tmp_path: Path
) -> None:
    add_done(hist, "precious")
    hist.close()
    junk = tmp_path / "notes.txt"
    junk.write_text("not a database at all\n" * 100)
    foreign = tmp_path / "other.sqlite"
    conn = raw(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    for bad in (junk, foreign, tmp_path / "missing.sqlite"):
        with pytest.raises(HistoryError) as err:
            History.restore(bad, path, moderator="ana")
        assert err.value.kind == "invalid" and str(bad) in str(err.value)
    with History.open(path) as h:
        assert [s.preview for s in h.list()] == ["precious"]
    assert not list(path.parent.glob("*before-restore*"))
    assert not list(path.parent.glob("*.tmp"))


def test_corrupt_file_is_reported_and_kept_aside(path: Path) -> None:
    path.parent.mkdir(parents=True)
    garbage = os.urandom(8192)
    path.write_bytes(garbage)
    with pytest.raises(HistoryError) as err:
        History.open(path)
    assert err.value.kind == "corrupt"
    message = str(err.value)
    assert "damaged" in message and str(path) in message and "\n" not in message

    kept = History.recover_corrupt(path)
    assert kept.name.startswith(f"{path.name}.corrupt-")
    assert kept.read_bytes() == garbage and not path.exists()
    with History.open(path) as h:
        assert h.count() == 0


def test_locked_database_names_another_program(hist: History, path: Path) -> None:
    other = raw(path)
    other.execute("BEGIN EXCLUSIVE")
    other.execute("UPDATE review_stats SET total = total")
    try:
        with History.open(path, busy_timeout=0.05) as h, pytest.raises(HistoryError) as err:
            h.start_review(**review_args())
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert err.value.kind == "locked" and "another program" in str(err.value)
    hist.start_review(**review_args())  # usable again once the other program lets go


def _make_v1_database(path: Path) -> int:
    """A DB built from migration 1 alone, as an old release left it, with one review."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = raw(path)
    for statement in schema.MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO policy_versions VALUES (?, 'spam', 'Spam', '1', ?, ?)",
        (POLICY_SHA, POLICY_TEXT, "2024-01-01T00:00:00.000Z"),
    )
    t = "2024-01-02T00:00:00.000Z"
    rid = conn.execute(
        "INSERT INTO reviews (created_at, heartbeat_at, finished_at, status, content_json, "
        "content_text, content_kind, source, policy_sha256, policy_id, model, effort, num_ctx, "
        "moderator, reasoning, verdict_label) VALUES (?, ?, ?, 'done', ?, 'old pills', 'message', "
        "'cli', ?, 'spam', 'm', 'low', 8192, 'ana', 'legacy', 'violation')",
        (t, t, t, json.dumps({"text": "old pills"}), POLICY_SHA),
    ).lastrowid
    conn.execute(
        "INSERT INTO decisions (review_id, action, moderator, at) VALUES (?, 'agree', 'ana', ?)",
        (rid, t),
    )
    conn.close()
    assert rid is not None
    return rid


def test_version_1_database_is_upgraded_with_data_kept(path: Path) -> None:
    rid = _make_v1_database(path)
    with History.open(path) as h:
        r = h.get(rid)
        assert r is not None and r.content == {"text": "old pills"} and r.reasoning == "legacy"
        assert [d.action for d in r.decisions] == ["agree"]
        assert [s.id for s in h.search("pills")] == [rid]
        assert h.policy_text(POLICY_SHA) == POLICY_TEXT
    conn = raw(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
    conn.close()


def test_a_later_migration_step_is_applied_once(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = _make_v1_database(path)
    step2 = ("ALTER TABLE reviews ADD COLUMN flagged INTEGER NOT NULL DEFAULT 0",)
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, step2))
    History.open(path).close()
    History.open(path).close()  # already at 2: no second ALTER
    conn = raw(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
    row = conn.execute("SELECT flagged, content_text FROM reviews WHERE id = ?", (rid,)).fetchone()
    assert row == (0, "old pills")
    conn.close()
