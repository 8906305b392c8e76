"""A queue's item order (file, oldest first, by verdict), the items' own times, queues from a
history search or pasted text, and single-item reads that give what the full list gives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from safeguard_desktop.core.content import from_text
from safeguard_desktop.core.importers import import_file
from safeguard_desktop.core.policy import resolve_policy
from safeguard_desktop.services import queue_service
from safeguard_desktop.services.queue_service import (
    QueueError,
    QueueService,
    confidence_rank,
    file_times,
    item_time,
)
from safeguard_desktop.store.history import History
from safeguard_desktop.store.queues import FinishedReview
from tests.test_queue_store import finished, make_service, write_jsonl


@pytest.fixture
def service(tmp_path: Path) -> Iterator[QueueService]:
    svc, history = make_service(tmp_path)
    try:
        yield svc
    finally:
        history.close()


def write_rows(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def record(
    service: QueueService,
    verdicts: dict[int, list[tuple[str, str | float | None]]],
    failed: frozenset[int] = frozenset(),
) -> None:
    """Classify the queue "q": per item position, (label, confidence) per policy in order."""
    store = service.store
    queue = store.get("q")
    assert queue is not None
    shas = [p.sha256 for p in store.policies(queue.id)]
    ids = {p.sha256: p.policy_id for p in store.policies(queue.id)}
    for unit in store.units(queue.id):
        if unit.position not in verdicts:
            continue
        label, confidence = verdicts[unit.position][shas.index(unit.policy_sha256)]
        review = finished(unit, ids[unit.policy_sha256], label)
        verdict: dict[str, object] = {"label": label, "violation": int(label == "violation")}
        if confidence is not None:
            verdict["confidence"] = confidence
        review = FinishedReview(**{**review.__dict__, "verdict": verdict})
        if unit.position in failed:
            review = FinishedReview(**{**review.__dict__, "status": "failed", "verdict": None,
                                       "error": "Ollama answered with an error."})  # fmt: skip
        store.start(unit)
        store.record(unit, review, settle=True)


# --- the items' own times ------------------------------------------------------------------------


def test_times_are_read_as_utc_from_the_usual_spellings() -> None:
    assert item_time("2024-05-01T12:00:00Z") == "2024-05-01T12:00:00.000000Z"
    assert item_time("2024-05-01T14:00:00+02:00") == "2024-05-01T12:00:00.000000Z"
    assert item_time("2024-05-01 12:00") == "2024-05-01T12:00:00.000000Z"  # no zone: UTC
    assert item_time("2024-05-01") == "2024-05-01T00:00:00.000000Z"
    assert item_time("Wed, 01 May 2024 12:00:00 +0000") == "2024-05-01T12:00:00.000000Z"
    assert item_time(1714564800) == "2024-05-01T12:00:00.000000Z"
    assert item_time("1714564800") == "2024-05-01T12:00:00.000000Z"
    assert item_time(1714564800123) == "2024-05-01T12:00:00.123000Z"  # milliseconds
    assert item_time("0900-01-01") == "0900-01-01T00:00:00.000000Z"  # sorts as text still
    junk: object
    for junk in (None, True, "", "soon", "yesterday at noon", float("nan"), 10**30, [], {}):
        assert item_time(junk) is None


def test_each_importer_gives_each_item_its_own_time(tmp_path: Path) -> None:
    write_rows(tmp_path / "a.jsonl", [
        {"text": "one", "created_at": "2024-05-02T00:00:00Z"},
        {"text": "no time"},
        {"text": "three", "Timestamp": 1714521600},
    ])  # fmt: skip
    (tmp_path / "b.json").write_text(
        json.dumps([{"text": "x", "date": "2024-01-01"}, {"text": "y", "date": "never"}]),
        encoding="utf-8",
    )
    (tmp_path / "c.csv").write_text(
        'id;body;Date\nr1;"first\nrow";2024-03-01\nr2;;2024-03-02\nr3;third;\nr4;fourth;2024-03-04\n',
        encoding="utf-8",
    )
    (tmp_path / "d.eml").write_text(
        "From: a@example.org\nSubject: hi\nDate: Fri, 01 Mar 2024 10:00:00 +0100\n\nbody\n",
        encoding="utf-8",
    )
    (tmp_path / "e.txt").write_text("created_at: 2024-01-01\n", encoding="utf-8")
    expected = {
        "a.jsonl": ["2024-05-02T00:00:00.000000Z", None, "2024-05-01T00:00:00.000000Z"],
        "b.json": ["2024-01-01T00:00:00.000000Z", None],
        "c.csv": ["2024-03-01T00:00:00.000000Z", None, "2024-03-04T00:00:00.000000Z"],
        "d.eml": ["2024-03-01T09:00:00.000000Z"],
        "e.txt": [None],
    }
    for name, times in expected.items():
        path = tmp_path / name
        contents = import_file(path, csv_text_column="body" if name == "c.csv" else None)
        assert file_times(path, contents) == times, name


# --- orders ------------------------------------------------------------------------------------


def test_oldest_first_lists_and_runs_items_by_their_own_time(
    service: QueueService, tmp_path: Path
) -> None:
    items = write_rows(tmp_path / "r.jsonl", [
        {"text": "no time A"},
        {"text": "newest", "created_at": "2024-05-03T00:00:00Z"},
        {"text": "oldest", "created_at": "2024-05-01T00:00:00+05:00"},
        {"text": "no time B"},
        {"text": "middle", "timestamp": 1714608000},
    ])  # fmt: skip
    status = service.create("q", [items], ["harassment"], order="oldest")
    assert status.order == "oldest" and "order" not in status.to_json()
    views = service.items("q")
    assert [v.text for v in views] == ["oldest", "middle", "newest", "no time A", "no time B"]
    assert [v.position for v in views] == [3, 5, 2, 1, 4]  # "item" stays the file position
    assert [v.to_json()["item"] for v in views] == [3, 5, 2, 1, 4]
    assert views[0].time == "2024-04-30T19:00:00.000000Z"
    queue = service.store.get("q")
    assert queue is not None
    assert [u.position for u in service.store.units(queue.id)] == [3, 5, 2, 1, 4]
    assert service.item("q", 3).text == "oldest"

    service.set_order("q", "file")
    assert [v.position for v in service.items("q")] == [1, 2, 3, 4, 5]
    assert [u.position for u in service.store.units(queue.id)] == [1, 2, 3, 4, 5]
    with pytest.raises(QueueError, match="Unknown item order 'newest'"):
        service.set_order("q", "newest")
    with pytest.raises(QueueError, match="Unknown item order"):
        service.create("q2", [items], ["harassment"], order="random")
    assert service.names() == ["q"]


def test_by_verdict_violations_come_first_most_confident_first(
    service: QueueService, tmp_path: Path
) -> None:
    texts = [f"item {n}" for n in range(1, 10)]
    service.create("q", [write_jsonl(tmp_path / "i.jsonl", texts)], ["harassment", "spam-scams"],
                   order="verdict")  # fmt: skip
    record(service, {
        1: [("safe", "high"), ("safe", "high")],
        2: [("violation", "low"), ("safe", "high")],
        3: [("safe", "high"), ("violation", "high")],
        4: [("safe", "low"), ("safe", "high")],      # safe, as sure as its least sure policy
        5: [("violation", 0.55), ("violation", None)],
        # 6: not classified yet
        7: [("unparsed", None), ("safe", "high")],
        8: [("violation", "high"), ("safe", "low")],
        9: [("safe", "medium"), ("safe", "high")],
    }, failed=frozenset({7}))  # fmt: skip
    order = [v.position for v in service.items("q")]
    assert order == [3, 8, 5, 2, 6, 7, 1, 9, 4]
    assert [v.position for v in service.items("q", state="classified")] == [3, 8, 5, 2, 1, 9, 4]
    service.set_order("q", "file")
    assert [v.position for v in service.items("q")] == list(range(1, 10))


def test_confidence_ranks_words_and_numbers_on_one_scale() -> None:
    assert confidence_rank("high") == confidence_rank(1.0) == confidence_rank("100%") == 3
    assert confidence_rank("Medium") == confidence_rank("0.5") == confidence_rank(50) == 2
    assert confidence_rank("low") == confidence_rank(0) == 1
    assert confidence_rank(None) == confidence_rank("sure-ish") == confidence_rank(-3) == 0
    assert confidence_rank(0.82) > confidence_rank("medium")


# --- single-item reads -------------------------------------------------------------------------


def test_one_item_is_read_alone_and_is_the_same_as_in_the_list(
    service: QueueService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [f"item {n}" for n in range(1, 7)]
    service.create("q", [write_jsonl(tmp_path / "i.jsonl", texts)], ["harassment", "spam-scams"],
                   order="verdict")  # fmt: skip
    record(service, {
        1: [("safe", "high"), ("safe", "high")],
        2: [("violation", "low"), ("safe", "high")],
        3: [("safe", None), ("violation", "high")],
        4: [("safe", "low"), ("safe", "high")],
    }, failed=frozenset({4}))  # fmt: skip
    service.decide("q", 1, "agree")
    service.decide("q", 2, "override", label="safe", note="a quote")
    service.decide("q", 3, "escalate")
    service.retract("q", 3)
    service.decide("q", 4, "skip", note="broken")
    listed = {v.position: v for v in service.items("q")}

    def no_full_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("read every item of the queue")

    store = service.store
    monkeypatch.setattr(store, "items", no_full_read)
    for position, view in listed.items():
        assert service.item("q", position) == view
    decided = service.decide("q", 1, "escalate")
    assert decided.decision is not None and decided.decision.action == "escalate"
    assert service.retract("q", 1).decision is None
    with pytest.raises(QueueError, match="has items 1 to 6; there is no item 7"):
        service.item("q", 7)
    with pytest.raises(QueueError, match="there is no item 7"):
        service.decide("q", 7, "agree")
    with pytest.raises(QueueError, match="is pending, not classified yet"):
        service.decide("q", 6, "agree")
    monkeypatch.undo()
    assert service.item("q", 1) == {v.position: v for v in service.items("q")}[1]


# --- other sources -----------------------------------------------------------------------------


def add_review(history: History, text: str) -> int:
    policy = resolve_policy("harassment")
    rid = history.start_review(
        content=from_text(text).to_dict(), content_text=text, content_kind="message",
        policy_sha256=policy.sha256, policy_id=policy.id, policy_version=policy.version,
        policy_title=policy.title, policy_text=policy.text, model="m", effort="low",
        num_ctx=8192, seed=None, temperature=None, moderator="ana", source="cli",
    )  # fmt: skip
    history.finish_review(rid, status="done", reasoning="r", answer="0",
                          verdict={"label": "safe"}, stats=None)  # fmt: skip
    return rid


def test_a_queue_from_a_history_search_takes_each_content_once_newest_first(
    service: QueueService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = service.store.history
    first = add_review(history, "cheap pills online")
    add_review(history, "lunch at noon")
    second = add_review(history, "more pills, cheaper")
    again = add_review(history, "cheap pills online")  # the same content, reviewed again
    status = service.create("q", [], ["spam-scams"], history_query="pills")
    assert status.items == 2
    views = service.items("q")
    assert [v.text for v in views] == ["cheap pills online", "more pills, cheaper"]
    rows = service.store.items(service.store.get("q").id)  # type: ignore[union-attr]
    assert [r.source for r in rows] == [f"history:{again}", f"history:{second}"]
    created = {rid: history.get(rid).created_at for rid in (first, second)}  # type: ignore[union-attr]
    assert [r.time for r in rows] == [item_time(created[first]), item_time(created[second])]

    with pytest.raises(QueueError, match=r"matches no review; no queue was created\.$"):
        service.create("none", [], ["spam-scams"], history_query="zebra")
    with pytest.raises(QueueError, match="history search is empty"):
        service.create("none", [], ["spam-scams"], history_query="  ")
    monkeypatch.setattr(queue_service, "MAX_HISTORY_ITEMS", 2)
    with pytest.raises(QueueError, match=r"matches more than 2 reviews.*No queue was created"):
        service.create("many", [], ["spam-scams"], history_query="pills")
    files = write_jsonl(tmp_path / "ok.jsonl", ["fine"])
    with pytest.raises(QueueError, match="matches no review"):  # good files, a bad search
        service.create("mixed", [files], ["spam-scams"], history_query="zebra")
    assert service.names() == ["q"]


def test_pasted_items_are_one_message_per_entry(service: QueueService, tmp_path: Path) -> None:
    files = write_jsonl(tmp_path / "f.jsonl", ["from a file"])
    service.create("q", [files], ["harassment"], texts=["first", "  ", "second\nline two"])
    views = service.items("q")
    assert [v.text for v in views] == ["from a file", "first", "second\nline two"]
    rows = service.store.items(service.store.get("q").id)  # type: ignore[union-attr]
    assert [r.source for r in rows[1:]] == ["pasted:1", "pasted:3"]
    assert {r.kind for r in rows} == {"message"}
    with pytest.raises(QueueError, match="pasted text holds no item"):
        service.create("p", [], ["harassment"], texts=["", " \n"])
    with pytest.raises(QueueError, match=r"^Pasted item 2: .*lone surrogate.*No queue was created"):
        service.create("p", [], ["harassment"], texts=["fine", "bad \udc80 byte"])
    service.session.settings.set("max_file_mb", 1)
    with pytest.raises(QueueError, match=r"^pasted item 1: the item is 1\.0 MB, over"):
        service.create("p", [], ["harassment"], texts=["x" * (1024 * 1024 + 1)])
    with pytest.raises(QueueError, match="--from-history QUERY"):
        service.create("p", [], ["harassment"])
    assert service.names() == ["q"]
