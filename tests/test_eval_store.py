"""Labelled sets and evaluation runs in the history file: the migration after step 5, sets
stored once (by checksum), exactly one finished review per run and item, one runner at a
time, and the moderators' decisions read back as ground truth."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from safeguard_desktop.core.content import from_text
from safeguard_desktop.core.policy import resolve_policy
from safeguard_desktop.store import schema
from safeguard_desktop.store.db import write_txn
from safeguard_desktop.store.evaluations import (
    MIGRATION_EVALUATIONS,
    EvalBusy,
    Evaluations,
    EvalUnit,
    LabelSetExists,
    NewLabelItem,
    NewLabelSet,
    PolicyVersion,
)
from safeguard_desktop.store.history import History, append_decision
from safeguard_desktop.store.queues import FinishedReview

REPO = Path(__file__).resolve().parents[1]
TABLES = {"label_sets", "label_set_items", "eval_runs", "eval_run_reviews"}


@pytest.fixture
def history(tmp_path: Path) -> Iterator[History]:
    with History.open(tmp_path / "history.sqlite3") as h:
        yield h


def new_set(name: str = "golden", truths: tuple[int, ...] = (1, 0, 1)) -> NewLabelSet:
    items = [NewLabelItem(f"text {n}", bool(t), ("SP2",) if t else (), f"r{n}", n)
             for n, t in enumerate(truths, start=1)]  # fmt: skip
    return NewLabelSet(
        name=name, source=f"{name}.csv", shape="csv", text_column="text", label_column="label",
        positive=("1",), checksum="c" * 63 + str(len(truths)), items=items, rows=4,
        left_out=1,
    )  # fmt: skip


def policy_version() -> PolicyVersion:
    p = resolve_policy("spam-scams")
    return PolicyVersion(p.sha256, p.id, p.title, p.version, p.text)


def finished(unit: EvalUnit, label: str = "safe", status: str = "done") -> FinishedReview:
    p = resolve_policy("spam-scams")
    return FinishedReview(
        content=from_text(unit.text).to_dict(), content_text=unit.text, content_kind="message",
        policy_sha256=p.sha256, policy_id=p.id, policy_version=p.version, policy_title=p.title,
        policy_text=p.text, model="gpt-oss-safeguard:20b", effort="low", num_ctx=8192, seed=42,
        temperature=1.0, moderator="ana", host="http://127.0.0.1:9", model_digest="sha256:abc",
        ollama_version="0.12.10", status=status, reasoning=f"Because {label}.", answer="0",
        verdict=None if status == "failed" else {"label": label},
        stats={"wall_s": 1.5, "eval_count": 100}, error="boom" if status == "failed" else None,
    )  # fmt: skip


# --- the migration -----------------------------------------------------------------------------


def test_the_evaluation_tables_are_the_step_after_retractions(tmp_path: Path) -> None:
    assert schema.MIGRATIONS[5] is MIGRATION_EVALUATIONS  # step 6
    assert any("item_time" in str(step) for step in schema.MIGRATIONS[4])  # step 5 first
    path = tmp_path / "history.sqlite3"
    History.open(path).close()
    conn = sqlite3.connect(path)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    conn.close()
    assert version == len(schema.MIGRATIONS) and tables >= TABLES


def test_a_history_of_the_step_before_upgrades_and_keeps_its_reviews(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "history.sqlite3"
    before_steps = schema.MIGRATIONS.index(MIGRATION_EVALUATIONS)
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:before_steps])
        with History.open(path) as old:
            p = resolve_policy("harassment")
            rid = old.start_review(
                content=from_text("hello").to_dict(), content_text="hello",
                content_kind="message", policy_sha256=p.sha256, policy_id=p.id,
                policy_version=p.version, policy_title=p.title, policy_text=p.text, model="m",
                effort="low", num_ctx=8192, seed=None, temperature=None, moderator="ana",
                source="cli",
            )  # fmt: skip
            old.finish_review(rid, status="done", reasoning="r", answer="0",
                              verdict={"label": "safe"}, stats=None)  # fmt: skip
            old.add_decision(rid, action="agree", moderator="ana")
            head = old.verify().head
        conn = sqlite3.connect(path)
        reviews = conn.execute("SELECT * FROM reviews").fetchall()
        columns = [r[1] for r in conn.execute("PRAGMA table_info(reviews)")]
        assert not TABLES & {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        conn.close()
    with History.open(path) as upgraded:
        report = upgraded.verify()
        assert report.ok and report.head == head
    History.open(tmp_path / "new.sqlite3").close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(schema.MIGRATIONS)
    assert conn.execute(f"SELECT {', '.join(columns)} FROM reviews").fetchall() == reviews
    conn.close()
    assert schema_rows(path) == schema_rows(tmp_path / "new.sqlite3")


def schema_rows(path: Path) -> set[tuple[str, str, str]]:
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
    ).fetchall()
    conn.close()
    return {(t, n, " ".join(str(sql).split())) for t, n, sql in rows}


@pytest.mark.parametrize("first", ["evaluations", "schema", "db", "history", "queues", "trail"])
def test_the_store_modules_import_in_any_order(first: str) -> None:
    """schema.py takes its last step from evaluations.py, which needs db.py: no cycle bites."""
    code = f"import safeguard_desktop.store.{first}; import safeguard_desktop.store.evaluations"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


# --- labelled sets -----------------------------------------------------------------------------


def test_a_set_is_stored_once_and_its_items_never_change(history: History) -> None:
    store = Evaluations(history)
    row, created = store.add_set(new_set())
    assert created and (row.name, row.items, row.violations, row.left_out) == ("golden", 3, 2, 1)
    assert row.positive == ("1",) and row.rows == 4
    same, created = store.add_set(new_set(name="another name"))  # same checksum: same set
    assert not created and same == row
    with pytest.raises(LabelSetExists, match="already exists"):
        store.add_set(new_set(truths=(1, 1)))
    items = store.items(row.id)
    assert [(i.position, i.truth, i.categories, i.ref) for i in items] == [
        (1, True, ("SP2",), "r1"), (2, False, (), "r2"), (3, True, ("SP2",), "r3"),
    ]  # fmt: skip
    with history.connection() as conn, pytest.raises(sqlite3.IntegrityError, match="once"):
        conn.execute("UPDATE label_set_items SET truth = 0 WHERE set_id = ?", (row.id,))
    assert [s.name for s in store.sets()] == ["golden"]


# --- runs --------------------------------------------------------------------------------------


def test_one_finished_review_per_run_and_item_written_with_its_link(history: History) -> None:
    store = Evaluations(history)
    labelled, _ = store.add_set(new_set())
    run = store.create_run(labelled.id, policy_version(), model="m", effort="low", moderator="ana")
    assert store.find_run(labelled.id, run.policy_sha256, "m", "low") == run
    assert store.find_run(labelled.id, run.policy_sha256, "m", "high") is None
    first, second, third = store.units(run.id)
    assert (first.position, first.text) == (1, "text 1")

    failed_id = store.record(first, finished(first, status="failed"), label="failed",
                             seconds=None, tokens=None)  # fmt: skip
    done_id = store.record(first, finished(first, "violation"), label="violation",
                           seconds=1.5, tokens=100)  # fmt: skip
    assert failed_id is not None and done_id is not None
    assert store.record(first, finished(first), label="safe", seconds=1.0, tokens=1) is None
    store.record(second, finished(second, status="failed"), label="failed", seconds=None,
                 tokens=None)  # fmt: skip
    # The second item failed only: it is still to do; the first is done.
    assert [u.position for u in store.units(run.id)] == [2, 3]
    assert store.counts() == {run.id: (1, 1)}
    links = store.links(run.id)
    assert [(x.position, x.outcome, x.label) for x in links] == [
        (1, "failed", "failed"), (1, "done", "violation"), (2, "failed", "failed"),
    ]  # fmt: skip
    review = history.get(done_id)
    assert review is not None and review.source == "eval" and review.status == "done"
    assert review.reasoning == "Because violation." and review.verdict_label == "violation"
    assert store.provenance(run.id)["ollama_version"] == ["0.12.10"]
    with history.connection() as conn:
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            conn.execute(
                "INSERT INTO eval_run_reviews (run_id, item_id, review_id, outcome, label, at) "
                "VALUES (?, ?, 999, 'done', 'safe', 'now')",
                (run.id, first.item_id),
            )
        with pytest.raises(sqlite3.IntegrityError, match="written once"):
            conn.execute("UPDATE eval_run_reviews SET label = 'safe'")
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            conn.execute(
                "INSERT INTO eval_run_reviews (run_id, item_id, review_id, outcome, label, at) "
                "VALUES (?, ?, 998, 'done', 'failed', 'now')",
                (run.id, third.item_id),
            )
    with pytest.raises(ValueError, match="does not go"):
        store.record(third, finished(third), label="failed", seconds=None, tokens=None)

    # Deleting the set takes its runs and links; the reviews stay in the history.
    store.delete_set(labelled.id)
    assert store.runs() == [] and store.links(run.id) == []
    assert history.get(done_id) is not None and history.get(failed_id) is not None


def test_one_runner_at_a_time(history: History) -> None:
    store = Evaluations(history)
    labelled, _ = store.add_set(new_set())
    run = store.create_run(labelled.id, policy_version(), model="m", effort="low", moderator="")
    store.claim(run.id)
    store.claim(run.id)  # this process again
    with history.connection() as conn:  # a live process elsewhere on this machine
        conn.execute("UPDATE eval_runs SET runner_pid = ? WHERE id = ?", (os.getppid(), run.id))
    with pytest.raises(EvalBusy, match=f"process {os.getppid()}"):
        store.claim(run.id)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True, timeout=60)  # fmt: skip
    with history.connection() as conn:  # a runner killed with -9
        conn.execute("UPDATE eval_runs SET runner_pid = ? WHERE id = ?", (int(dead.stdout), run.id))
    store.claim(run.id)
    store.release(run.id)
    released = store.run(run.id)
    assert released is not None and released.runner_pid is None


# --- the history as ground truth ---------------------------------------------------------------


def test_decided_reviews_are_the_latest_agree_or_override(history: History) -> None:
    p = resolve_policy("harassment")
    ids = {}
    for text, label in (("agreed", "violation"), ("overridden", "violation"), ("escalated", "safe"),
                        ("undone", "safe"), ("skipped", "safe"), ("open", "safe")):  # fmt: skip
        rid = history.start_review(
            content=from_text(text).to_dict(), content_text=text, content_kind="message",
            policy_sha256=p.sha256, policy_id=p.id, policy_version=p.version,
            policy_title=p.title, policy_text=p.text, model="m", effort="low", num_ctx=8192,
            seed=None, temperature=None, moderator="ana", source="cli",
        )  # fmt: skip
        history.finish_review(rid, status="done", reasoning="r", answer="0",
                              verdict={"label": label}, stats=None)  # fmt: skip
        ids[text] = rid
    history.add_decision(ids["agreed"], action="agree", moderator="ana")
    history.add_decision(ids["overridden"], action="agree", moderator="ana")
    history.add_decision(ids["overridden"], action="override", moderator="ana", label="safe",
                         note="a quote")  # fmt: skip
    history.add_decision(ids["escalated"], action="escalate", moderator="ana")
    history.add_decision(ids["undone"], action="agree", moderator="ana")
    history.add_decision(ids["skipped"], action="agree", moderator="ana")
    with history.connection() as conn, write_txn(conn):
        append_decision(conn, ids["undone"], action="retracted", moderator="ana")
        append_decision(conn, ids["skipped"], action="skip", moderator="ana", note="later")
    store = Evaluations(history)
    found = store.decided_reviews()
    assert [(r.content_text, r.action, r.label, r.verdict_label) for r in found] == [
        ("overridden", "override", "safe", "violation"), ("agreed", "agree", None, "violation"),
    ]  # fmt: skip
    assert [r.content_text for r in store.decided_reviews(review_ids=[ids["agreed"]])] == ["agreed"]
    assert store.decided_reviews(policy_id="spam-scams") == []
