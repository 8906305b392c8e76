"""The decision trail cannot be rewritten unnoticed: seals, protecting triggers, `history
verify`, the start-up warning, and a restore that refuses a doctored backup.

Each tamper here is what someone with the sqlite3 shell could do to the file; the test checks
what a moderator then sees (a refusal, or verify naming the decision and what is wrong).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import main
from safeguard_desktop.services import history_service
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import Settings
from safeguard_desktop.store import schema
from safeguard_desktop.store.history import History
from tests.test_history import POLICY_SHA, POLICY_TEXT, add_done

DROP_GUARD = "DROP TRIGGER decisions_no_update"


@pytest.fixture
def data(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "data"
    paths.set_data_dir(folder)
    settings = Settings()
    settings.set("moderator", "lead-ana")
    settings.save()
    yield folder
    paths.set_data_dir(None)


@pytest.fixture
def db(data: Path) -> Path:
    """A history with two reviews and four decisions (ids 1-4); closed again."""
    path = paths.history_db()
    with History.open(path) as h:
        first, second = add_done(h, "buy pills"), add_done(h, "lovely weather")
        h.add_decision(first, action="agree", moderator="ana")
        h.add_decision(second, action="escalate", moderator="bo", note="ask legal")
        h.add_decision(first, action="override", moderator="bo", label="safe", note="satire")
        h.add_decision(second, action="note", moderator="ana", note="user told")
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--data-dir", str(paths.data_dir()), *args])
    out, err = capsys.readouterr()
    return code, out, err


def tamper(path: Path, *statements: str) -> None:
    """What another program (the sqlite3 shell) can do to the closed file."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def verify_json(capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, object]]:
    code, out, _ = cli(capsys, "history", "verify", "--json")
    return code, json.loads(out)


def first_problem(report: dict[str, object]) -> dict[str, object]:
    problems = report["problems"]
    assert isinstance(problems, list) and problems, report
    first = problems[0]
    assert isinstance(first, dict)
    return first


# --- an intact trail -----------------------------------------------------------------------


def test_intact_trail_verifies_with_its_count(db: Path, capsys) -> None:
    code, out, _ = cli(capsys, "history", "verify")
    assert code == 0
    assert "intact: 4 decisions" in out
    code, report = verify_json(capsys)
    assert code == 0 and report["ok"] is True and report["decisions"] == 4
    assert report["problems"] == [] and len(str(report["head"])) == 64
    # Each row names the seal of the row before it, from a fixed start.
    conn = sqlite3.connect(db)
    rows = conn.execute("SELECT prev_hash, row_hash FROM decisions ORDER BY id").fetchall()
    conn.close()
    assert rows[0][0] == schema.GENESIS
    assert [r[0] for r in rows[1:]] == [r[1] for r in rows[:-1]]
    assert report["head"] == rows[-1][1]


# --- what the triggers refuse ----------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE decisions SET action = 'agree' WHERE id = 3",
        "DELETE FROM decisions WHERE id = 3",
        "INSERT OR REPLACE INTO decisions (id, review_id, action, moderator, at) "
        "VALUES (3, 1, 'agree', 'bo', 'x')",
        "REPLACE INTO decisions (id, review_id, action, moderator, at) "
        "VALUES (3, 1, 'agree', 'bo', 'x')",
        "INSERT INTO decisions (id, review_id, action, moderator, at) VALUES (3, 1, 'agree', "
        "'bo', 'x') ON CONFLICT (id) DO UPDATE SET action = 'agree'",
        "UPDATE reviews SET escalated = 1 WHERE id = 1",
        "UPDATE reviews SET last_decision = 'agree' WHERE id = 1",
        "UPDATE reviews SET notes = 'all fine' WHERE id = 2",
        "INSERT INTO reviews (created_at, heartbeat_at, status, content_json, content_text, "
        "content_kind, source, policy_sha256, policy_id, model, effort, num_ctx, moderator, "
        "escalated) VALUES ('t', 't', 'done', '{}', 'x', 'message', 'cli', "
        f"'{POLICY_SHA}', 'spam', 'm', 'low', 1, 'ana', 1)",
    ],
)
def test_no_statement_rewrites_a_decision_or_the_list(db: Path, capsys, statement: str) -> None:
    with pytest.raises(sqlite3.IntegrityError, match=r"append-only|follow the decision trail"):
        tamper(db, statement)
    with History.open(db) as h:
        first = h.get(1)
        assert first is not None
        assert [(d.action, d.moderator) for d in first.decisions] == [
            ("agree", "ana"), ("override", "bo"),
        ]  # fmt: skip
        assert first.last_decision == "override" and not first.escalated
        assert h.count() == 2
    assert cli(capsys, "history", "verify")[0] == 0


# --- what verify finds once the triggers are dropped ----------------------------------------


@pytest.mark.parametrize(
    ("statements", "kind", "where", "words"),
    [
        (
            [DROP_GUARD, "UPDATE decisions SET action = 'agree', label = NULL WHERE id = 3"],
            "content_edited", "decision #3", "changed",
        ),
        (
            ["DROP TRIGGER decisions_no_delete", "DELETE FROM decisions WHERE id = 2"],
            "row_missing", "decision #3", "(#2) were deleted",
        ),
        (
            # Opening re-creates the dropped trigger and records that in a new row (#5).
            ["DROP TRIGGER decisions_no_delete", "DELETE FROM decisions WHERE id = 4"],
            "row_missing", "decision #5", "(#4) were deleted",
        ),
        (
            ["DROP TRIGGER decisions_no_delete", "DELETE FROM decisions WHERE id = 4",
             schema.PROTECTING_TRIGGERS["decisions_no_delete"]],
            "row_missing", "decision #3", "last one written was #4",
        ),
        (
            [DROP_GUARD, "UPDATE decisions SET row_hash = "
             "'0000000000000000000000000000000000000000000000000000000000000001' WHERE id = 2"],
            "content_edited", "decision #2", "changed",
        ),
        (
            ["INSERT INTO decisions (review_id, action, moderator, at) "
             "VALUES (1, 'agree', 'mallory', '2020-01-01')"],
            "unsealed", "decision #5", "added outside",
        ),
        (
            ["DROP TRIGGER reviews_summary_update", "UPDATE reviews SET escalated = 0, "
             "notes = '' WHERE id = 2"],
            "summary_mismatch", "review #2", "escalated no (the trail says yes)",
        ),
    ],
)  # fmt: skip
def test_verify_names_the_first_broken_link(
    db: Path, capsys, statements: list[str], kind: str, where: str, words: str
) -> None:
    tamper(db, *statements)
    code, report = verify_json(capsys)
    assert code == 1 and report["ok"] is False
    problem = first_problem(report)
    assert (problem["kind"], problem["where"]) == (kind, where)
    assert words in str(problem["message"])

    code, out, _ = cli(capsys, "history", "verify")
    assert code == 1
    assert out.startswith(f"The decision trail is broken at {where}: ")
    assert "restore" in out  # says what to do next
    with History.open(db) as h:  # the reviews themselves still read
        assert h.count() == 2


def test_a_resealed_edit_breaks_the_next_link(db: Path, capsys) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    row = conn.execute(
        f"SELECT {', '.join(schema.SEALED_COLUMNS_V3)}, prev_hash FROM decisions WHERE id = 2"
    ).fetchone()
    edited = (*row[:4], "nothing to see", *row[5:7])
    conn.execute(DROP_GUARD)
    conn.execute(
        "UPDATE decisions SET note = ?, row_hash = ? WHERE id = 2",
        (edited[4], schema.seal(edited, row[7])),
    )
    conn.execute(schema.PROTECTING_TRIGGERS["decisions_no_update"])
    conn.close()
    code, report = verify_json(capsys)
    assert code == 1
    problem = first_problem(report)
    assert (problem["kind"], problem["where"]) == ("link_broken", "decision #3")
    assert "does not link to decision #2" in str(problem["message"])


def test_dropped_triggers_are_recreated_at_open_and_the_trail_says_so(db: Path, capsys) -> None:
    tamper(db, DROP_GUARD, "DROP TRIGGER decisions_no_replace")
    code, out, _ = cli(capsys, "history", "verify")
    assert code == 1
    assert "protection" in out and "decisions_no_update, decisions_no_replace" in out
    # Re-created: the same edit is refused again, and the repair is in the trail for good.
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        tamper(db, "UPDATE decisions SET action = 'agree' WHERE id = 3")
    with History.open(db) as h:
        repair = h.audit(limit=1)[0]
    assert (repair.action, repair.review_id) == ("repair", None)
    assert repair.note is not None and "decisions_no_update" in repair.note
    code, out, _ = cli(capsys, "history", "verify")
    assert code == 0 and "intact: 5 decisions" in out
    assert "re-created 1 time(s), last at decision #5" in out


# --- at start ---------------------------------------------------------------------------------


def test_session_warns_at_start_when_the_trail_is_broken(db: Path) -> None:
    session = Session.open(Settings(), with_history=True, env={})
    try:
        assert session.warnings == []
    finally:
        session.close_history()
    tamper(db, DROP_GUARD, "UPDATE decisions SET moderator = 'someone else' WHERE id = 2")
    session = Session.open(Settings(), with_history=True, env={})
    try:
        (warning,) = [w for w in session.warnings if "decision trail" in w]
    finally:
        session.close_history()
    assert warning.startswith("The decision trail of the history is broken at decision #2:")
    assert "`safeguard-desktop history verify`" in warning and "\n" not in warning


def test_start_check_reads_every_link_but_reseals_only_the_newest(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setattr(history_service, "START_WINDOW", 1)
    guard = schema.PROTECTING_TRIGGERS["decisions_no_update"]
    tamper(db, DROP_GUARD, "UPDATE decisions SET moderator = 'eve' WHERE id = 1", guard)
    quiet = Session.open(Settings(), with_history=True, env={})
    quiet.close_history()
    # The edit sits before the newest row: only the full check recomputes its seal...
    assert not [w for w in quiet.warnings if "decision trail" in w]
    assert cli(capsys, "history", "verify")[0] == 1
    # ...while a row missing anywhere shows at once.
    guard = schema.PROTECTING_TRIGGERS["decisions_no_delete"]
    tamper(db, "DROP TRIGGER decisions_no_delete", "DELETE FROM decisions WHERE id = 1", guard)
    loud = Session.open(Settings(), with_history=True, env={})
    loud.close_history()
    assert [w for w in loud.warnings if "broken at decision #2" in w]


# --- an old history gets its seals ---------------------------------------------------------


def _make_v2_history(path: Path, *, drop_guard: bool = False) -> None:
    """A history as release 2 left it: two decisions, summaries written as that code did."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    for step in (*schema.MIGRATIONS[0], *schema.MIGRATIONS[1]):
        assert isinstance(step, str)
        conn.execute(step)
    conn.execute("PRAGMA user_version = 2")
    conn.execute(
        "INSERT INTO policy_versions VALUES (?, 'spam', 'Spam', '1', ?, 't')",
        (POLICY_SHA, POLICY_TEXT),
    )
    conn.execute(
        "INSERT INTO reviews (created_at, heartbeat_at, status, content_json, content_text, "
        "content_kind, source, policy_sha256, policy_id, model, effort, num_ctx, moderator) "
        "VALUES ('2025-01-01T00:00:00.000Z', 't', 'done', '{}', 'old pills', 'message', 'cli', "
        "?, 'spam', 'm', 'low', 8192, 'ana')",
        (POLICY_SHA,),
    )
    conn.execute(
        "INSERT INTO decisions (review_id, action, note, moderator, at) VALUES "
        "(1, 'escalate', 'check', 'ana', '2025-01-02T00:00:00.000Z'), "
        "(1, 'agree', NULL, 'bo', '2025-01-03T00:00:00.000Z')"
    )
    conn.execute("UPDATE reviews SET escalated = 1, last_decision = 'agree', notes = 'check'")
    if drop_guard:
        conn.execute(DROP_GUARD)
    conn.close()


def test_an_older_history_is_sealed_on_upgrade_and_the_trail_continues(data: Path, capsys) -> None:
    path = paths.history_db()
    _make_v2_history(path)
    code, out, _ = cli(capsys, "history", "verify")
    assert code == 0 and "intact: 2 decisions" in out
    assert cli(capsys, "history", "decide", "1", "--note-only", "--note", "later")[0] == 0
    code, report = verify_json(capsys)
    assert code == 0 and report["decisions"] == 3
    with pytest.raises(sqlite3.IntegrityError):
        tamper(path, "REPLACE INTO decisions (id, review_id, action, moderator, at) "
               "VALUES (1, 1, 'agree', 'x', 'y')")  # fmt: skip


def test_an_older_history_left_unprotected_is_reported_after_upgrade(data: Path, capsys) -> None:
    _make_v2_history(paths.history_db(), drop_guard=True)
    code, report = verify_json(capsys)
    assert code == 1 and first_problem(report)["kind"] == "triggers_missing"


# --- restore ------------------------------------------------------------------------------


def test_restore_refuses_a_doctored_backup_and_changes_nothing(
    db: Path, tmp_path: Path, capsys
) -> None:
    backup = tmp_path / "backup.sqlite3"
    assert cli(capsys, "history", "backup", str(backup))[0] == 0
    # Edited with the guard lifted, then the guard put back: it looks untouched.
    guard = schema.PROTECTING_TRIGGERS["decisions_no_update"]
    tamper(backup, DROP_GUARD, "UPDATE decisions SET note = 'no problem' WHERE id = 2", guard)
    before = db.read_bytes()
    code, _, err = cli(capsys, "history", "restore", str(backup), "--yes")
    assert code == 2
    assert "not restored" in err and "broken at decision #2" in err and "changed" in err
    assert db.read_bytes() == before
    assert sorted(p.name for p in db.parent.iterdir() if p.name.startswith(db.name)) == [
        db.name,
        *[n for n in (f"{db.name}-shm", f"{db.name}-wal") if (db.parent / n).exists()],
    ]

    unprotected = tmp_path / "unprotected.sqlite3"
    assert cli(capsys, "history", "backup", str(unprotected))[0] == 0
    tamper(unprotected, DROP_GUARD)
    code, _, err = cli(capsys, "history", "restore", str(unprotected), "--yes")
    assert code == 2 and "not restored" in err and "decisions_no_update" in err


def test_restore_asks_keeps_the_replaced_history_and_records_who_restored_what(
    db: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    backup = tmp_path / "monday.sqlite3"
    assert cli(capsys, "history", "backup", str(backup))[0] == 0
    assert cli(capsys, "history", "decide", "1", "--agree")[0] == 0  # after the backup
    digest = hashlib.sha256(backup.read_bytes()).hexdigest()

    code, _, err = cli(capsys, "history", "restore", str(backup))  # no terminal, no --yes
    assert code == 2 and "--yes" in err
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda _prompt: "n")
    code, out, err = cli(capsys, "history", "restore", str(backup))
    assert code == 0 and "Nothing restored" in err
    assert not list(db.parent.glob("*before-restore*"))

    monkeypatch.setattr("builtins.input", lambda _prompt: "y")
    code, out, _ = cli(capsys, "history", "restore", str(backup))
    assert code == 0 and digest in out
    (kept,) = db.parent.glob(f"{db.name}.before-restore-*")
    assert str(kept) in out
    with History.open(kept) as old:  # the replaced history, whole
        assert len(old.get(1).decisions) == 3  # type: ignore[union-attr]
    with History.open(db) as h:
        assert len(h.get(1).decisions) == 2  # type: ignore[union-attr]
        entry = h.audit(limit=1)[0]
    assert (entry.action, entry.review_id, entry.moderator) == ("restore", None, "lead-ana")
    assert entry.note is not None
    assert "monday.sqlite3" in entry.note and digest in entry.note and kept.name in entry.note
    code, out, _ = cli(capsys, "history", "verify")
    assert code == 0 and "intact: 5 decisions" in out
