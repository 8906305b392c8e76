"""Undo as an appended "retracted" decision: the item is undecided again, the trail only grows,
the History list's summary follows it; migration 5 teaches the summary trigger retractions."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import main
from safeguard_desktop.core.content import from_text
from safeguard_desktop.core.policy import resolve_policy
from safeguard_desktop.services.queue_service import QueueError, QueueService
from safeguard_desktop.store import schema, trail
from safeguard_desktop.store.db import write_txn
from safeguard_desktop.store.history import History, append_decision
from safeguard_desktop.store.queues import FinishedReview, Queues, Unit
from tests.test_queue_store import V3_TRIGGERS, finished, make_service, write_jsonl

POLICIES = ("harassment", "spam-scams")


@pytest.fixture
def service(tmp_path: Path) -> Iterator[QueueService]:
    svc, history = make_service(tmp_path)
    try:
        yield svc
    finally:
        history.close()


def classify(service: QueueService, labels: dict[int, str] | None = None) -> None:
    """Record a finished review for every unit left (label by item position, else safe)."""
    store = service.store
    for queue in store.all():
        by_sha = {p.sha256: p.policy_id for p in store.policies(queue.id)}
        for unit in store.units(queue.id):
            assert store.start(unit)
            label = (labels or {}).get(unit.position, "safe")
            store.record(unit, finished(unit, by_sha[unit.policy_sha256], label), settle=True)


def classified_queue(service: QueueService, tmp_path: Path, count: int = 3) -> Queues:
    items = write_jsonl(tmp_path / "i.jsonl", [f"item {n}" for n in range(1, count + 1)])
    service.create("q", [items], list(POLICIES))
    classify(service)
    return service.store


def review_ids(service: QueueService, position: int) -> list[int]:
    ids = [c.review_id for c in service.item("q", position).verdicts]
    assert None not in ids
    return [int(i) for i in ids if i is not None]


def trail_actions(history: History, review_id: int) -> list[str]:
    review = history.get(review_id)
    assert review is not None
    return [d.action for d in review.decisions]


# --- the store and the service -----------------------------------------------------------------


def test_retract_appends_a_sealed_retraction_and_the_item_is_undecided(
    service: QueueService, tmp_path: Path
) -> None:
    store = classified_queue(service, tmp_path)
    history = store.history
    service.decide("q", 2, "escalate", note="threat?")
    before = history.verify()
    assert before.ok and before.decisions == 2

    view = service.retract("q", 2)
    assert view.state == "classified" and view.decision is None
    assert view.to_json()["decision"] is None
    report = history.verify()
    assert report.ok and report.decisions == 4  # two entries added, none changed
    for rid in review_ids(service, 2):
        review = history.get(rid)
        assert review is not None
        assert [d.action for d in review.decisions] == ["escalate", "retracted"]
        assert (review.escalated, review.last_decision) == (False, None)
        assert review.notes == "threat?"  # the note stays: the trail keeps what was written
        assert review.decisions[-1].moderator == "ana"
    assert service.status("q").counts["decided"] == 0
    assert service.items("q", state="decided") == []

    again = service.decide("q", 2, "agree")  # decided anew after the undo
    assert again.state == "decided" and again.decision is not None
    assert again.decision.action == "agree"
    for rid in review_ids(service, 2):
        review = history.get(rid)
        assert review is not None and review.last_decision == "agree"
    assert history.verify().ok


def test_an_undecided_item_has_nothing_to_undo_and_nothing_is_written(
    service: QueueService, tmp_path: Path
) -> None:
    store = classified_queue(service, tmp_path)
    with pytest.raises(QueueError, match=r"^Item 1 of 'q' has no decision to undo\.$"):
        service.retract("q", 1)
    service.decide("q", 1, "agree")
    service.retract("q", 1)
    with pytest.raises(QueueError, match="no decision to undo"):
        service.retract("q", 1)  # a retraction is not undone by another one
    with pytest.raises(QueueError, match="there is no item 9"):
        service.retract("q", 9)
    assert store.history.verify().decisions == 4


def test_undoing_a_decision_on_a_failed_item_puts_it_back_to_be_run(
    service: QueueService, tmp_path: Path
) -> None:
    service.create("q", [write_jsonl(tmp_path / "i.jsonl", ["hello"])], ["harassment"])
    store = service.store
    queue = store.get("q")
    assert queue is not None
    (unit,) = store.units(queue.id)
    failed = FinishedReview(**{**finished(unit).__dict__, "status": "failed", "verdict": None,
                               "error": "Ollama answered with an error."})  # fmt: skip
    store.start(unit)
    store.record(unit, failed, settle=True)
    service.decide("q", 1, "skip", note="server trouble, later")
    assert store.units(queue.id) == []  # a decided item is not run again
    view = service.retract("q", 1)
    assert view.state == "failed" and view.decision is None
    assert store.units(queue.id) == [unit]


def test_a_history_decision_after_the_undo_decides_the_item_again(
    service: QueueService, tmp_path: Path
) -> None:
    store = classified_queue(service, tmp_path)
    service.decide("q", 1, "agree")
    service.retract("q", 1)
    first, _ = review_ids(service, 1)
    store.history.add_decision(first, action="override", moderator="bo", label="violation",
                               note="missed slur")  # fmt: skip
    view = service.item("q", 1)
    assert view.state == "decided" and view.decision is not None
    assert (view.decision.action, view.decision.moderator) == ("override", "bo")


def test_undo_reaches_every_review_that_still_shows_a_decision(
    service: QueueService, tmp_path: Path
) -> None:
    store = classified_queue(service, tmp_path)
    history = store.history
    service.decide("q", 3, "agree")
    first, second = review_ids(service, 3)
    history.add_decision(first, action="escalate", moderator="bo")  # from the History view
    service.retract("q", 3)
    assert trail_actions(history, first) == ["agree", "escalate", "retracted"]
    assert trail_actions(history, second) == ["agree", "retracted"]
    for rid in (first, second):
        review = history.get(rid)
        assert review is not None and (review.escalated, review.last_decision) == (False, None)
    assert history.verify().ok


def test_notes_go_on_the_items_reviews_and_leave_its_decision(
    service: QueueService, tmp_path: Path
) -> None:
    store = classified_queue(service, tmp_path)
    service.decide("q", 1, "agree")
    view = service.note("q", 1, "  seen twice today ")
    assert view.decision is not None and view.decision.action == "agree"
    for rid in review_ids(service, 1):
        review = store.history.get(rid)
        assert review is not None and review.notes == "seen twice today"
        assert review.last_decision == "agree"
    with pytest.raises(QueueError, match="note is empty"):
        service.note("q", 1, "   ")
    service.create("p", [write_jsonl(tmp_path / "p.jsonl", ["x"])], ["harassment"])
    with pytest.raises(QueueError, match="no review yet"):
        service.note("p", 1, "later")


# --- the History list's summary follows retractions --------------------------------------------


def test_the_summary_of_a_review_reads_retractions_from_the_trail(
    service: QueueService, tmp_path: Path
) -> None:
    store = classified_queue(service, tmp_path, count=1)
    rid = review_ids(service, 1)[0]
    history = store.history

    def append(action: str) -> tuple[bool, str | None]:
        with history.connection() as conn, write_txn(conn):
            append_decision(conn, rid, action=action, moderator="ana")
        review = history.get(rid)
        assert review is not None
        return review.escalated, review.last_decision

    assert append("escalate") == (True, "escalate")
    assert append("agree") == (True, "agree")
    assert append("retracted") == (False, None)
    assert append("note") == (False, None)
    assert append("override") == (False, "override")
    assert append("escalate") == (True, "escalate")
    assert append("retracted") == (False, None)
    assert history.verify().ok
    with history.connection() as conn:  # the trigger refuses a summary the trail does not say
        for column, value in (("last_decision", "'agree'"), ("escalated", "1")):
            with pytest.raises(sqlite3.IntegrityError, match="follow the decision trail"):
                conn.execute(f"UPDATE reviews SET {column} = {value} WHERE id = ?", (rid,))


# --- migration 5 -------------------------------------------------------------------------------


def test_step_3_keeps_the_trigger_it_always_wrote() -> None:
    """Step 3 must mean what it meant when released: the old trigger text, byte for byte;
    step 5 replaces it with the definition the open-time check expects."""
    digest = hashlib.sha256(schema.SUMMARY_UPDATE_V3.encode()).hexdigest()
    assert digest == "da7514890fb7c8e739a3789389bda487c8fe9d59808ace6ff97b1fe484e13cd6"
    assert schema.SUMMARY_UPDATE_V3 in schema.MIGRATIONS[2]
    assert schema.PROTECTING_TRIGGERS["reviews_summary_update"] not in schema.MIGRATIONS[2]
    assert "retracted" in schema.PROTECTING_TRIGGERS["reviews_summary_update"]
    assert schema._summary_knows_retractions in schema.MIGRATIONS[4]  # step 5 replaces it


def make_v4_history(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """A history as the release with schema 4 left it: a decided queue item and a review
    with decisions. Returns (a queue review's id, a plain review's id)."""
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:4])
        m.setattr(schema, "PROTECTING_TRIGGERS", V3_TRIGGERS)
        with History.open(path) as old:
            queues = Queues(old)
            policy = resolve_policy("harassment")
            with old.connection() as conn, write_txn(conn):  # the tables as step 4 made them
                conn.execute(
                    "INSERT INTO policy_versions (sha256, policy_id, title, version, text, "
                    "first_seen) VALUES (?, ?, ?, ?, ?, 't')",
                    (policy.sha256, policy.id, policy.title, policy.version, policy.text),
                )
                conn.execute(
                    "INSERT INTO queues (id, name, created_at, moderator, model) "
                    "VALUES (1, 'old', 't', 'ana', 'm')"
                )
                conn.execute(
                    "INSERT INTO queue_policies VALUES (1, 1, ?, ?)", (policy.sha256, policy.id)
                )
                conn.execute(
                    "INSERT INTO queue_items (id, queue_id, position, content_json, "
                    "content_text, content_kind) "
                    'VALUES (1, 1, 1, \'{"kind": "message", "text": "hi"}\', \'hi\', '
                    "'message')"
                )
            unit = Unit(1, 1, policy.sha256, {"kind": "message", "text": "hi"})
            queues.start(unit)
            queue_review = queues.record(unit, finished(unit), settle=True)
            assert queue_review is not None
            queues.decide(unit.item_id, action="agree", moderator="ana")
            plain = old.start_review(
                content=from_text("hello").to_dict(), content_text="hello",
                content_kind="message", policy_sha256=policy.sha256, policy_id=policy.id,
                policy_version=policy.version, policy_title=policy.title,
                policy_text=policy.text, model="m", effort="low", num_ctx=8192, seed=None,
                temperature=None, moderator="ana", source="cli",
            )  # fmt: skip
            old.finish_review(plain, status="done", reasoning="r", answer="1",
                              verdict={"label": "violation"}, stats=None)  # fmt: skip
            old.add_decision(plain, action="escalate", moderator="ana", note="check")
            old.add_decision(plain, action="agree", moderator="bo")
            report = old.verify()
            assert report.ok and report.repairs == ()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    conn.close()
    return queue_review, plain


def schema_rows(path: Path) -> set[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
    ).fetchall()
    conn.close()
    return {(t, n, " ".join(str(sql).split())) for t, n, sql in rows}


def test_a_v4_history_upgrades_to_the_same_schema_as_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.sqlite3"
    queue_review, plain = make_v4_history(path, monkeypatch)
    conn = sqlite3.connect(path)
    before = conn.execute(
        "SELECT id, escalated, last_decision, notes FROM reviews ORDER BY id"
    ).fetchall()
    head = conn.execute("SELECT row_hash FROM decisions ORDER BY id DESC LIMIT 1").fetchone()[0]
    conn.close()
    with History.open(path) as upgraded:
        report = upgraded.verify()
        assert report.ok and report.repairs == () and report.head == head
    with History.open(tmp_path / "new.sqlite3"):
        pass
    assert schema_rows(path) == schema_rows(tmp_path / "new.sqlite3")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
    after = conn.execute(
        "SELECT id, escalated, last_decision, notes FROM reviews ORDER BY id"
    ).fetchall()
    conn.close()
    assert after == before == [(queue_review, 0, "agree", ""), (plain, 1, "agree", "check")]
    assert not schema.altered_triggers(sqlite3.connect(path))

    # The upgraded history works as a new one: undo in the queue it already had.
    with History.open(path) as history:
        queues = Queues(history)
        queue = queues.get("old")
        assert queue is not None
        (item,) = queues.items(queue.id)
        assert queues.decisions(queue.id) != {}
        queues.retract(item.id, moderator="ana")
        assert queues.decisions(queue.id) == {}
        assert queues.items(queue.id)[0].state == "classified"
        review = history.get(queue_review)
        assert review is not None and review.last_decision is None
        assert history.verify().ok


def test_migration_5_recomputes_the_summary_of_reviews_with_a_retraction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """None can exist before step 5, but the step must still be right if one does."""
    path = tmp_path / "old.sqlite3"
    _, plain = make_v4_history(path, monkeypatch)
    conn = sqlite3.connect(path, isolation_level=None)
    with write_txn(conn):
        trail.append(conn, review_id=plain, action="retracted", moderator="ana")
    assert conn.execute("SELECT escalated, last_decision FROM reviews WHERE id = ?",
                        (plain,)).fetchone() == (1, "agree")  # fmt: skip
    conn.close()
    with History.open(path) as history:
        review = history.get(plain)
        assert review is not None
        assert (review.escalated, review.last_decision, review.notes) == (False, None, "check")
        report = history.verify()
        assert report.ok and report.repairs == ()


def test_an_upgraded_history_still_shows_tampering(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = data / "history.sqlite3"
    _, plain = make_v4_history(path, monkeypatch)
    try:
        assert main(["--data-dir", str(data), "history", "verify"]) == 0
        assert "intact" in capsys.readouterr().out
        conn = sqlite3.connect(path, isolation_level=None)  # edit the summary behind its back
        conn.execute("DROP TRIGGER reviews_summary_update")
        conn.execute("UPDATE reviews SET last_decision = 'override' WHERE id = ?", (plain,))
        conn.close()
        assert main(["--data-dir", str(data), "history", "verify"]) != 0
        out = capsys.readouterr()
        assert "last decision override" in out.out + out.err
    finally:
        paths.set_data_dir(None)
    with History.open(path) as history:
        report = history.verify()
        kinds = {p.kind for p in report.problems}
        assert kinds == {"summary_mismatch"}  # the trigger was re-created, as recorded
        assert len(report.repairs) == 1


def test_a_v4_history_with_an_altered_summary_trigger_is_reported_after_the_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.sqlite3"
    make_v4_history(path, monkeypatch)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("DROP TRIGGER reviews_summary_update")
    conn.execute(
        "CREATE TRIGGER reviews_summary_update BEFORE UPDATE OF escalated, last_decision, notes "
        "ON reviews WHEN 0 BEGIN SELECT RAISE(ABORT, 'never'); END"
    )
    conn.close()
    with History.open(path) as history:  # step 5 does not launder it
        report = history.verify()
        assert not report.ok
        assert [p.kind for p in report.problems] == ["triggers_missing"]
        assert "reviews_summary_update" in report.problems[0].message
        assert len(report.repairs) == 1
    assert not schema.altered_triggers(sqlite3.connect(path))
