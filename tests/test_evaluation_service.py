"""EvaluationService as the workbench view will drive it: a run on the one batch runner
(retry on a busy server, stop, continue, a fresh run), what a queue export means as truth,
the figures an unfinished run gives, and the errors a label picker needs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.services.batch_runner import Backoff, Progress
from safeguard_desktop.services.evaluation import (
    EngineError,
    EvaluationError,
    EvaluationService,
    RunOutcome,
)
from safeguard_desktop.services.history_service import HistoryService
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import Settings
from safeguard_desktop.store.history import History
from tests.fake_ollama import FakeOllama, Scenario

QUICK = Backoff(first=0.01, cap=0.02)


class Bench:
    """A session on a private history, pointed at `url` (moderator ana)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.history = History.open(tmp_path / "history.sqlite3")
        self.settings = Settings(tmp_path / "settings.json")
        self.settings.set("moderator", "ana")

    def service(self, url: str = "http://127.0.0.1:9") -> tuple[Session, EvaluationService]:
        session = Session.create(self.settings, Endpoint(url), HistoryService(self.history))
        return session, session.evaluations()

    def run(self, url: str, labels: Path | str, **kwargs: Any) -> RunOutcome:
        session, service = self.service(url)

        async def go() -> RunOutcome:
            try:
                return await service.run("spam-scams", labels, backoff=QUICK, **kwargs)
            finally:
                await session.aclose_client()

        return asyncio.run(go())


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    b = Bench(tmp_path)
    try:
        yield b
    finally:
        b.history.close()


def labelled(tmp_path: Path, count: int = 6) -> Path:
    path = tmp_path / "set.jsonl"
    path.write_text(
        "".join(json.dumps({"text": f"item {i}", "label": i % 2}) + "\n" for i in range(count)),
        encoding="utf-8",
    )
    return path


def test_a_busy_server_is_waited_for_and_each_item_recorded_once(bench: Bench) -> None:
    labels = labelled(bench.tmp_path, 4)
    with FakeOllama(token_rate=50_000) as fake:
        fake.script(Scenario(status=503, error_message="server busy, please try again."))
        fake.script(Scenario(status=503, error_message="server busy, please try again."))
        outcome = bench.run(fake.url, labels, parallel=1)
        sent = len(fake.requests_to("/api/chat"))
    assert sent == 4 + 2 and outcome.report.retries == 2
    assert (outcome.info.done, outcome.info.failed, outcome.metrics.unparsed) == (4, 0, 0)
    assert not outcome.continued and not outcome.reused
    assert outcome.metrics.median_tokens is not None and outcome.metrics.median_seconds


def test_stop_keeps_what_finished_and_the_next_run_continues_it(bench: Bench) -> None:
    labels = labelled(bench.tmp_path, 6)
    stop = asyncio.Event()

    def progress(p: Progress) -> None:
        if p.done >= 2:
            stop.set()

    with FakeOllama(token_rate=50_000) as fake:
        first = bench.run(fake.url, labels, parallel=1, on_progress=progress, stop=stop)
        # Stopping starts no new item; the one already in flight finishes.
        done = first.info.done
        assert first.report.stopped and 2 <= done < 6 and first.info.pending == 6 - done
        assert first.metrics.n == done  # the figures so far; no item counted before its verdict
        _, service = bench.service(fake.url)
        with pytest.raises(EvaluationError, match="not finished"):
            service.compare(first.info.id, first.info.id)
        assert "Unfinished run" in service.report_markdown(first.info.id)

        second = bench.run(fake.url, labels, parallel=2)
        assert second.continued and second.info.id == first.info.id
        assert (second.info.done, second.report.done) == (6, 6 - done)
        third = bench.run(fake.url, labels)
        assert third.reused and third.info.id == first.info.id and third.report.done == 0
        fresh = bench.run(fake.url, labels, fresh=True)
        assert fresh.info.id != first.info.id and fresh.report.done == 6
        assert len(fake.requests_to("/api/chat")) == 12
    _, service = bench.service()
    assert [r.id for r in service.list()] == [fresh.info.id, first.info.id]
    assert service.compare(first.info.id, fresh.info.id).flips == ()


def test_a_server_that_stays_away_stops_the_run_and_nothing_is_recorded(bench: Bench) -> None:
    labels = labelled(bench.tmp_path, 3)
    with pytest.raises(EngineError):
        bench.run("http://127.0.0.1:9", labels)
    _, service = bench.service()
    (run,) = service.list()
    assert (run.done, run.failed, run.pending, run.running) == (0, 0, 3, False)
    assert bench.history.count() == 0


def test_a_missing_model_stops_at_once(bench: Bench) -> None:
    labels = labelled(bench.tmp_path, 3)
    with FakeOllama(token_rate=50_000) as fake:
        with pytest.raises(EngineError, match=r"llama3:8b.*not installed"):
            bench.run(fake.url, labels, model="llama3:8b", parallel=1)
        assert len(fake.requests_to("/api/chat")) == 1


def test_a_queue_export_counts_decisions_only(bench: Bench) -> None:
    def row(item: int, text: str, labels: list[str], decision: dict[str, str] | None) -> str:
        verdicts = [{"policy": f"p{n}", "label": lab, "review_id": n} for n, lab in
                    enumerate(labels)]  # fmt: skip
        violation = True if "violation" in labels else False if labels else None
        return json.dumps({"item": item, "state": "decided", "verdicts": verdicts,
                           "decision": decision, "violation": violation, "ref": None,
                           "content": {"kind": "message", "text": text},
                           "text": text}) + "\n"  # fmt: skip

    export = bench.tmp_path / "export.jsonl"
    export.write_text(
        row(1, "any policy said so", ["safe", "violation"], {"action": "agree"})
        + row(2, "all safe", ["safe", "safe"], {"action": "agree"})
        + row(3, "model was wrong", ["violation"], {"action": "override", "label": "safe"})
        + row(4, "asked a senior", ["violation"], {"action": "escalate"})
        + row(5, "not decided", ["safe"], None)
        + row(6, "never classified", [], {"action": "agree"}),
        encoding="utf-8",
    )
    _, service = bench.service()
    info = service.import_set(export, "decided")
    assert (info.shape, info.items, info.violations, info.left_out) == ("queue-export", 3, 1, 3)
    items = bench_items(service, info.id)
    assert items == [("any policy said so", True), ("all safe", False), ("model was wrong", False)]


def bench_items(service: EvaluationService, set_id: int) -> list[tuple[str, bool]]:
    return [(i.text, i.truth) for i in service.store.items(set_id)]


def test_label_problems_carry_what_a_picker_offers(bench: Bench) -> None:
    path = bench.tmp_path / "set.csv"
    path.write_text("message,verdict\nbuy,spam\nhi,ham\n", encoding="utf-8")
    _, service = bench.service()
    with pytest.raises(EvaluationError) as raised:
        service.import_set(path)
    assert raised.value.columns == ("message", "verdict")
    with pytest.raises(EvaluationError) as raised:
        service.import_set(path, text_column="message", label_column="verdict")
    assert raised.value.values == ("spam", "ham") and "--positive" in str(raised.value)
    first = service.import_set(
        path, text_column="message", label_column="verdict", positive=["spam"]
    )
    other = path.with_name("other.csv")
    other.write_text("message,verdict\nbuy,spam\nhi,spam\n", encoding="utf-8")
    other.replace(path)  # the same file name, other labels: the next free name
    second = service.import_set(
        path, text_column="message", label_column="verdict", positive=["spam"]
    )
    assert (first.name, second.name, second.violations) == ("set.csv", "set.csv (2)", 2)
    with pytest.raises(EvaluationError, match="no labelled set named"):
        service.labelled_set("nothing")
    assert service.labelled_set(str(first.id)).name == "set.csv"
