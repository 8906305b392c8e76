"""Review queues in the history file: migration 4, atomic imports, exactly one finished review
per item and policy, decisions in the one sealed trail, deletion that keeps the reviews."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from safeguard_desktop.core.content import from_text
from safeguard_desktop.core.policy import resolve_policy
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.services.history_service import HistoryService
from safeguard_desktop.services.queue_service import QueueError, QueueService
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import Settings
from safeguard_desktop.store import schema
from safeguard_desktop.store.history import History
from safeguard_desktop.store.queues import FinishedReview, QueueBusy, Queues, Unit

# The protecting triggers as releases with schema 3 and 4 defined them.
V3_TRIGGERS = {**schema.PROTECTING_TRIGGERS, "reviews_summary_update": schema.SUMMARY_UPDATE_V3}


def make_service(tmp_path: Path, url: str = "http://127.0.0.1:9") -> tuple[QueueService, History]:
    """A queue service on a private history, with the registry's defaults and moderator ana."""
    history = History.open(tmp_path / "history.sqlite3")
    settings = Settings(tmp_path / "settings.json")
    settings.set("moderator", "ana")
    session = Session.create(settings, Endpoint(url), HistoryService(history))
    return session.queues(), history


@pytest.fixture
def service(tmp_path: Path) -> Iterator[QueueService]:
    svc, history = make_service(tmp_path)
    try:
        yield svc
    finally:
        history.close()


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def finished(unit: Unit, policy_id: str = "harassment", label: str = "safe") -> FinishedReview:
    policy = resolve_policy(policy_id)
    return FinishedReview(
        content=unit.content, content_text=str(unit.content.get("text", "")),
        content_kind="message", policy_sha256=policy.sha256, policy_id=policy.id,
        policy_version=policy.version, policy_title=policy.title, policy_text=policy.text,
        model="gpt-oss-safeguard:20b", effort="low", num_ctx=8192, seed=42, temperature=1.0,
        moderator="ana", host="http://127.0.0.1:9", model_digest=None, ollama_version=None,
        status="done", reasoning="It is fine.", answer="0",
        verdict={"label": label, "violation": int(label == "violation")}, stats=None, error=None,
    )  # fmt: skip


# --- migration ---------------------------------------------------------------------------------


def test_migration_4_adds_queues_and_leaves_reviews_and_trail_as_they_were(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "history.sqlite3"
    with monkeypatch.context() as m:  # a history written by the release before queues
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
        m.setattr(schema, "PROTECTING_TRIGGERS", V3_TRIGGERS)
        with History.open(path) as old:
            policy = resolve_policy("harassment")
            rid = old.start_review(
                content=from_text("hello").to_dict(), content_text="hello",
                content_kind="message", policy_sha256=policy.sha256, policy_id=policy.id,
                policy_version=policy.version, policy_title=policy.title,
                policy_text=policy.text, model="m", effort="low", num_ctx=8192, seed=None,
                temperature=None, moderator="ana", source="cli",
            )  # fmt: skip
            old.finish_review(
                rid, status="done", reasoning="r", answer="0", verdict={"label": "safe"},
                stats=None,
            )  # fmt: skip
            old.add_decision(rid, action="agree", moderator="ana")
            head_before = old.verify().head
        conn = sqlite3.connect(path)
        before = conn.execute("SELECT * FROM reviews").fetchall()
        columns = [r[1] for r in conn.execute("PRAGMA table_info(reviews)")]
        conn.close()
    with History.open(path) as new:
        report = new.verify()
        assert report.ok and report.head == head_before
        conn = sqlite3.connect(path)
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
        assert conn.execute(f"SELECT {', '.join(columns)} FROM reviews").fetchall() == before
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        conn.close()
    assert {"queues", "queue_items", "queue_policies", "queue_item_reviews"} <= tables


# --- imports -----------------------------------------------------------------------------------


def test_a_bad_line_names_its_number_and_creates_nothing(
    service: QueueService, tmp_path: Path
) -> None:
    good = write_jsonl(tmp_path / "good.jsonl", ["one", "two"])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"\n', encoding="utf-8")
    with pytest.raises(QueueError, match=r"bad\.jsonl line 3 .*No queue was created"):
        service.create("q", [good, bad], ["harassment"])
    assert service.all() == []
    service.create("q", [good], ["harassment"])  # the name was not taken by the failed import
    assert service.status("q").items == 2


def test_an_item_over_the_size_limit_creates_nothing(service: QueueService, tmp_path: Path) -> None:
    service.session.settings.set("max_file_mb", 1)
    big = tmp_path / "big.txt"
    big.write_text("x" * (1024 * 1024 + 10), encoding="utf-8")
    small = write_jsonl(tmp_path / "small.jsonl", ["fine"])
    with pytest.raises(QueueError, match=r"big\.txt is 1\.0 MB, over the 1\.0 MB limit"):
        service.create("q", [small, big], ["harassment"])
    assert service.all() == []


def test_a_folder_imports_its_files_in_name_order_with_a_csv_column(
    service: QueueService, tmp_path: Path
) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", ["first", "second"])
    (folder / "b.csv").write_text("id,body\nr9,third\n", encoding="utf-8")
    (folder / "c.txt").write_text("fourth", encoding="utf-8")
    (folder / ".hidden.txt").write_text("never", encoding="utf-8")
    service.create("q", [folder], ["harassment"], text_column="body")
    views = service.items("q")
    assert [v.text for v in views] == ["first", "second", "third", "fourth"]
    assert views[2].ref == "r9" and [v.position for v in views] == [1, 2, 3, 4]


def test_a_taken_name_or_a_policy_given_twice_is_refused(
    service: QueueService, tmp_path: Path
) -> None:
    items = write_jsonl(tmp_path / "i.jsonl", ["x"])
    service.create("q", [items], ["harassment"])
    with pytest.raises(QueueError, match="already exists"):
        service.create("q", [items], ["harassment"])
    with pytest.raises(QueueError, match="given twice"):
        service.create("q2", [items], ["harassment", "harassment"])
    assert [s.name for s in service.all()] == ["q"]


# --- exactly once ------------------------------------------------------------------------------


def test_a_second_finished_review_for_an_item_and_policy_is_never_written(
    service: QueueService, tmp_path: Path
) -> None:
    service.create("q", [write_jsonl(tmp_path / "i.jsonl", ["hello"])], ["harassment"])
    store: Queues = service.store
    queue = store.get("q")
    assert queue is not None
    (unit,) = store.units(queue.id)
    assert store.start(unit)
    first = store.record(unit, finished(unit), settle=True)
    assert first is not None
    assert store.record(unit, finished(unit), settle=True) is None  # the check before writing
    assert not store.start(unit) and store.units(queue.id) == []
    with store.history.connection() as conn:  # and the unique index behind it
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(
                "INSERT INTO queue_item_reviews (item_id, policy_sha256, review_id, outcome, at)"
                " VALUES (?, ?, ?, 'done', 'now')",
                (unit.item_id, unit.policy_sha256, first + 1000),
            )
        with pytest.raises(sqlite3.IntegrityError, match="written once"):
            conn.execute("UPDATE queue_item_reviews SET review_id = review_id + 1")
        reviews = conn.execute("SELECT count(*) FROM reviews WHERE source = 'queue'").fetchone()
    assert reviews[0] == 1
    assert [c.label for c in service.item("q", 1).verdicts] == ["safe"]


def test_a_failed_classification_is_tried_again_and_its_review_kept(
    service: QueueService, tmp_path: Path
) -> None:
    service.create("q", [write_jsonl(tmp_path / "i.jsonl", ["hello"])], ["harassment"])
    store = service.store
    queue = store.get("q")
    assert queue is not None
    (unit,) = store.units(queue.id)
    failed = finished(unit)
    failed = FinishedReview(**{**failed.__dict__, "status": "failed", "verdict": None,
                               "error": "Ollama answered with an error."})  # fmt: skip
    store.start(unit)
    failed_id = store.record(unit, failed, settle=True)
    view = service.item("q", 1)
    assert view.state == "failed" and view.verdicts[0].label == "failed"
    assert store.units(queue.id) == [unit]  # to do again
    store.start(unit)
    done_id = store.record(unit, finished(unit, label="violation"), settle=True)
    view = service.item("q", 1)
    assert view.state == "classified" and view.violation is True
    assert view.verdicts[0].review_id == done_id != failed_id


# --- running state -----------------------------------------------------------------------------


def test_a_dead_runner_leaves_interrupted_items_and_a_live_one_keeps_the_queue(
    service: QueueService, tmp_path: Path
) -> None:
    service.create("q", [write_jsonl(tmp_path / "i.jsonl", ["a", "b"])], ["harassment"])
    store = service.store
    queue = store.get("q")
    assert queue is not None
    store.claim(queue.id)
    store.start(store.units(queue.id)[0])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    with store.history.connection() as conn:
        conn.execute("UPDATE queues SET runner_pid = ?", (int(dead.stdout),))
    assert service.status("q").counts["interrupted"] == 1  # seen as such before any run
    assert store.claim(queue.id) == 1
    counts = service.status("q").counts
    assert (counts["interrupted"], counts["classifying"], counts["pending"]) == (1, 0, 1)
    with store.history.connection() as conn:
        conn.execute("UPDATE queues SET runner_pid = ?", (os.getppid(),))  # alive, not us
    with pytest.raises(QueueBusy, match="being run by process"):
        store.claim(queue.id)
    with pytest.raises(QueueError, match="being run"):
        service.delete("q")


def test_an_item_recorded_in_full_before_its_runner_died_is_classified_at_the_next_claim(
    service: QueueService, tmp_path: Path
) -> None:
    """Killed after the item's last review was written but before its state was settled:
    no unit is left to run for it, so the next run's claim settles it (it is not left
    interrupted for ever)."""
    service.create("q", [write_jsonl(tmp_path / "i.jsonl", ["a", "b"])], ["harassment"])
    store = service.store
    queue = store.get("q")
    assert queue is not None
    store.claim(queue.id)
    first = store.units(queue.id)[0]
    store.start(first)
    store.record(first, finished(first), settle=False)  # a sibling unit was in flight
    store.start(store.units(queue.id)[0])  # item 2: asked, never answered
    with store.history.connection() as conn:
        conn.execute("UPDATE queues SET runner_pid = NULL")  # the runner is gone
    assert service.status("q").counts["interrupted"] == 2
    assert store.claim(queue.id) == 2
    counts = service.status("q").counts
    assert (counts["classified"], counts["interrupted"]) == (1, 1)
    assert [u.position for u in store.units(queue.id)] == [2]


# --- decisions ---------------------------------------------------------------------------------


def test_decisions_are_sealed_trail_rows_on_every_linked_review(
    service: QueueService, tmp_path: Path
) -> None:
    items = write_jsonl(tmp_path / "i.jsonl", ["a", "b"])
    service.create("q", [items], ["harassment", "spam-scams"])
    store = service.store
    queue = store.get("q")
    assert queue is not None
    for unit in store.units(queue.id):
        store.start(unit)
        policy_id = "harassment" if unit.policy_sha256 == resolve_policy("harassment").sha256 \
            else "spam-scams"  # fmt: skip
        store.record(unit, finished(unit, policy_id), settle=True)
    with pytest.raises(QueueError, match="needs a reason"):
        service.decide("q", 1, "skip")
    with pytest.raises(QueueError, match="needs a reason"):
        service.decide("q", 1, "override", label="violation")
    service.decide("q", 1, "skip", note="duplicate report")
    view = service.decide("q", 2, "override", label="violation", note="coded slur")
    assert view.state == "decided" and view.decision is not None
    assert (view.decision.action, view.decision.label, view.decision.moderator) == (
        "override", "violation", "ana")  # fmt: skip
    history = store.history
    report = history.verify()
    assert report.ok and report.decisions == 4  # one entry per linked review, two reviews each
    for cell in view.verdicts:
        assert cell.review_id is not None
        review = history.get(cell.review_id)
        assert review is not None and review.last_decision == "override"
        assert [d.note for d in review.decisions] == ["coded slur"]
    assert [s.counts["decided"] for s in service.all()] == [2]


def test_deleting_a_queue_keeps_its_reviews_and_decisions(
    service: QueueService, tmp_path: Path
) -> None:
    service.create("q", [write_jsonl(tmp_path / "i.jsonl", ["a"])], ["harassment"])
    store = service.store
    queue = store.get("q")
    assert queue is not None
    (unit,) = store.units(queue.id)
    store.start(unit)
    rid = store.record(unit, finished(unit), settle=True)
    service.decide("q", 1, "agree")
    assert service.delete("q") == 1
    assert service.all() == []
    assert rid is not None
    review = store.history.get(rid)
    assert review is not None and [d.action for d in review.decisions] == ["agree"]
    assert store.history.verify().ok
    with store.history.connection() as conn:
        left = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("queue_items", "queue_item_reviews", "queue_policies")]  # fmt: skip
    assert left == [0, 0, 0]
