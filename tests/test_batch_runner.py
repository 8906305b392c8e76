"""The batch runner: N in flight in order, 503 backoff, a clean cancel, and a queue run against
the fake Ollama (several policies, the same policy prefix on every request, nothing doubled)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop.engine.errors import ModelMissing, QueueFull, ServerUnreachable
from safeguard_desktop.services.batch_runner import (
    Backoff,
    BatchRunner,
    Outcome,
    Progress,
    Retry,
    RunReport,
    run_batch,
)
from safeguard_desktop.services.history_service import Filters
from safeguard_desktop.services.queue_service import (
    ItemView,
    QueueService,
    VerdictCell,
    stored_policy,
)
from safeguard_desktop.services.review import policy_system_prompt
from safeguard_desktop.store.history import History
from tests.fake_ollama import FakeOllama, Scenario
from tests.test_queue_store import make_service, write_jsonl

NO_WAIT = Backoff(first=0.0, cap=0.0, jitter=0.0)


def ticking_clock() -> Callable[[], float]:
    """A clock that advances one second per reading: rates without real waiting."""
    ticks = itertools.count()
    return lambda: float(next(ticks))


# --- the generic runner --------------------------------------------------------------------------


def test_n_units_in_flight_started_in_order_with_progress() -> None:
    started: list[int] = []
    in_flight = 0
    most = 0
    seen: list[Progress] = []

    async def do_one(unit: int) -> Outcome:
        nonlocal in_flight, most
        started.append(unit)
        in_flight += 1
        most = max(most, in_flight)
        for _ in range(3):
            await asyncio.sleep(0)
        in_flight -= 1
        return "failed" if unit == 7 else "done"

    runner: BatchRunner[int] = BatchRunner(parallel=3, clock=ticking_clock())
    report = asyncio.run(runner.run(range(10), do_one, on_progress=seen.append, done_before=5))
    assert started == list(range(10)) and most == 3
    assert (report.done, report.failed, report.skipped, report.stopped) == (9, 1, 0, False)
    last = seen[-1]
    assert (last.done, last.total, last.failed, last.in_flight) == (15, 15, 1, 0)
    assert last.per_minute is not None and last.per_minute > 0 and last.percent == 100.0
    assert seen[0].done == 5 and seen[0].per_minute is None  # nothing of this run finished yet


def test_a_busy_server_is_retried_with_backoff_in_the_same_slot() -> None:
    calls: list[int] = []

    async def do_one(unit: int) -> Outcome:
        calls.append(unit)
        if unit == 2 and calls.count(2) <= 2:
            raise Retry(QueueFull())
        return "done"

    report = asyncio.run(run_batch(range(4), do_one, parallel=2, backoff=NO_WAIT))
    assert report.done == 4 and report.retries == 2 and calls.count(2) == 3
    assert [u for u in calls if u != 2] == [0, 1, 3]  # every other unit once


def test_backoff_grows_to_its_cap() -> None:
    backoff = Backoff(first=0.5, factor=2.0, cap=3.0, jitter=0.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 9)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def gated() -> tuple[Callable[[int], Awaitable[Outcome]], asyncio.Event, list[int], list[int]]:
    """do_one for units: 0 and 1 finish at once, the others wait until cancelled; the event
    is set once three wait (every slot of a parallel-3 run is taken)."""
    all_waiting = asyncio.Event()
    waiting: list[int] = []
    cleaned: list[int] = []

    async def do_one(unit: int) -> Outcome:
        if unit < 2:
            return "done"
        waiting.append(unit)
        if len(waiting) == 3:
            all_waiting.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.append(unit)
        return "done"

    return do_one, all_waiting, waiting, cleaned


def test_cancel_gives_back_exactly_the_units_in_flight() -> None:
    given_back: list[int] = []

    async def abandon(units: list[int]) -> None:
        given_back.extend(units)

    async def scenario() -> None:
        do_one, all_waiting, waiting, cleaned = gated()
        task = asyncio.ensure_future(run_batch(range(8), do_one, parallel=3, on_abandon=abandon))
        await all_waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert waiting == [2, 3, 4] and sorted(cleaned) == [2, 3, 4]

    asyncio.run(scenario())
    assert sorted(given_back) == [2, 3, 4]  # 0 and 1 finished; 5, 6, 7 never started


def test_an_error_stops_the_run_and_gives_back_the_rest() -> None:
    given_back: list[int] = []

    async def abandon(units: list[int]) -> None:
        given_back.extend(units)

    async def do_one(unit: int) -> Outcome:
        if unit == 1:
            await asyncio.sleep(0)
            raise ModelMissing("nope:1b")
        await asyncio.Event().wait()
        return "done"

    with pytest.raises(ModelMissing):
        asyncio.run(run_batch(range(6), do_one, parallel=3, on_abandon=abandon))
    assert sorted(given_back) == [0, 1, 2]


def test_a_server_that_stays_away_stops_the_run_after_its_attempts() -> None:
    async def do_one(unit: int) -> Outcome:
        raise Retry(ServerUnreachable("http://127.0.0.1:9"), max_attempts=3)

    with pytest.raises(ServerUnreachable):
        asyncio.run(run_batch(range(2), do_one, backoff=NO_WAIT))


def test_stop_lets_the_units_in_flight_finish_and_starts_no_more() -> None:
    stop = asyncio.Event()

    async def do_one(unit: int) -> Outcome:
        stop.set()
        await asyncio.sleep(0)
        return "done"

    report = asyncio.run(run_batch(range(10), do_one, parallel=2, stop=stop))
    assert report.done == 2 and report.stopped


def test_an_item_is_a_violation_when_any_policy_says_so() -> None:
    def item(*labels: str | None) -> ItemView:
        cells = tuple(VerdictCell(f"p{i}", label, None) for i, label in enumerate(labels))
        return ItemView(1, "classified", {}, "", None, cells, None)

    assert item("safe", "violation").violation is True
    assert item("violation", None).violation is True
    assert item("safe", "safe").violation is False
    assert item("safe", "unparsed").violation is None and item("safe", None).violation is None


# --- a queue against the fake Ollama ------------------------------------------------------------

TEXTS = ["buy now, limited offer", "see you tomorrow", "you idiot", "nice photo", "click here",
         "lunch at noon?", "the password is 1234", "thanks a lot"]  # fmt: skip


def new_queue(tmp_path: Path, url: str, policies: list[str]) -> tuple[QueueService, History]:
    service, history = make_service(tmp_path, url)
    service.create("q", [write_jsonl(tmp_path / "items.jsonl", TEXTS)], policies)
    return service, history


async def run_queue(service: QueueService, **kwargs: Any) -> RunReport:
    """One run on its own event loop, closing the session's client on it (as the CLI does)."""
    try:
        return await service.run("q", **kwargs)
    finally:
        await service.session.aclose_client()


def done_reviews(history: History) -> int:
    return history.count(Filters(status="done"))


def test_two_policies_classify_each_item_once_per_policy_with_one_prefix(tmp_path: Path) -> None:
    with FakeOllama(token_rate=50_000, parallel=4) as fake:
        service, history = new_queue(tmp_path, fake.url, ["harassment", "spam-scams"])
        with history:
            report = asyncio.run(run_queue(service, parallel=4))
            views = service.items("q")
            queue = service.store.get("q")
            assert queue is not None
            stored = {p.policy_id: p for p in service.store.policies(queue.id)}
            assert done_reviews(history) == 2 * len(TEXTS)
        chats = fake.requests_to("/api/chat")
    assert report.done == 2 * len(TEXTS) and report.failed == 0
    assert len(chats) == 2 * len(TEXTS)
    assert all(v.state == "classified" and len(v.verdicts) == 2 for v in views)
    review_ids = [c.review_id for v in views for c in v.verdicts]
    assert None not in review_ids and len(set(review_ids)) == len(review_ids)
    assert [c.policy for c in views[0].verdicts] == ["harassment", "spam-scams"]
    assert views[0].violation is True and views[1].violation is False
    # Every request of a policy carries the same system prompt, byte for byte, first.
    for policy_id, text in stored.items():
        expected = policy_system_prompt(stored_policy(text))
        mine = [c.json["messages"] for c in chats if c.json["messages"][0]["content"] == expected]
        assert len(mine) == len(TEXTS), policy_id
        assert all(m[0]["role"] == "system" for m in mine)


def test_a_full_server_queue_is_retried_and_nothing_is_recorded_twice(tmp_path: Path) -> None:
    # One slot and no waiting line: while one review streams, the others get 503.
    with FakeOllama(token_rate=500, parallel=1, max_queue=0) as fake:
        fake.script(*(Scenario(status=503, error_message="server busy") for _ in range(2)))
        service, history = new_queue(tmp_path, fake.url, ["harassment"])
        with history:
            report = asyncio.run(
                run_queue(service, parallel=3, backoff=Backoff(first=0.05, cap=0.2))
            )
            status = service.status("q")
            assert done_reviews(history) == len(TEXTS)
            assert history.count() == len(TEXTS)  # no review for a refused request
        requests = len(fake.requests_to("/api/chat"))
    assert status.counts["classified"] == len(TEXTS) and status.counts["failed"] == 0
    assert report.retries >= 2 and requests == len(TEXTS) + report.retries


def test_cancel_puts_the_items_in_flight_back_and_the_next_run_finishes(tmp_path: Path) -> None:
    with FakeOllama(token_rate=2000, parallel=3) as fake:
        service, history = new_queue(tmp_path, fake.url, ["harassment"])
        with history:

            async def cancelled_run() -> None:
                task = asyncio.current_task()
                assert task is not None

                def cancel_after_three(p: Progress) -> None:
                    if p.done >= 3:
                        task.cancel()

                await run_queue(service, parallel=3, on_progress=cancel_after_three)

            with pytest.raises(asyncio.CancelledError):
                asyncio.run(cancelled_run())
            after_cancel = service.status("q").counts
            reviews_after_cancel = done_reviews(history)
            asyncio.run(run_queue(service, parallel=3))
            final = service.status("q").counts
            views = service.items("q")
            assert history.count(Filters(status="cancelled")) == 0
            assert history.count() == done_reviews(history) == len(TEXTS)
    assert after_cancel["classifying"] == 0 and after_cancel["interrupted"] == 0
    assert 3 <= after_cancel["classified"] < len(TEXTS)
    assert after_cancel["pending"] == len(TEXTS) - after_cancel["classified"]
    assert reviews_after_cancel == after_cancel["classified"]
    assert final["classified"] == len(TEXTS)
    assert len({v.verdicts[0].review_id for v in views}) == len(TEXTS)


def test_a_missing_model_stops_the_run_and_leaves_every_item_to_do(tmp_path: Path) -> None:
    with FakeOllama(token_rate=50_000) as fake:
        service, history = make_service(tmp_path, fake.url)
        with history:
            service.create("q", [write_jsonl(tmp_path / "i.jsonl", TEXTS)], ["harassment"],
                           model="nope:1b")  # fmt: skip
            with pytest.raises(ModelMissing):
                asyncio.run(run_queue(service, parallel=2))
            counts = service.status("q").counts
            assert history.count() == 0
    assert counts["pending"] == len(TEXTS)


def test_no_server_stops_the_run_after_a_few_attempts(tmp_path: Path) -> None:
    service, history = make_service(tmp_path, "http://127.0.0.1:9")
    with history:
        service.create("q", [write_jsonl(tmp_path / "i.jsonl", TEXTS)], ["harassment"])
        with pytest.raises(ServerUnreachable):
            asyncio.run(run_queue(service, parallel=2, backoff=NO_WAIT))
        counts = service.status("q").counts
    assert counts["pending"] == len(TEXTS) and counts["failed"] == 0


def test_a_unit_past_its_request_frees_its_slot_for_the_next() -> None:
    """With one slot, unit 2's request starts while unit 1 still records its result (the
    server never waits for the database); without release_slot it would wait."""
    from safeguard_desktop.services.batch_runner import release_slot

    async def scenario() -> tuple[list[str], RunReport]:
        events: list[str] = []
        recorded = asyncio.Event()

        async def do_one(unit: int) -> Outcome:
            events.append(f"request {unit}")
            await asyncio.sleep(0)
            release_slot()
            release_slot()  # twice: still one slot
            if unit == 1:
                await recorded.wait()  # recording is slow: it ends when unit 2 asked
            else:
                recorded.set()
            events.append(f"recorded {unit}")
            return "done"

        report = await BatchRunner[int](parallel=1).run([1, 2], do_one)
        return events, report

    events, report = asyncio.run(scenario())
    assert events.index("request 2") < events.index("recorded 1")
    assert report.done == 2 and not report.stopped


def test_answers_waiting_for_the_database_hold_back_new_requests() -> None:
    """A database slower than the server: at most `parallel` units wait to record beside
    `parallel` requests, so a killed process loses a bounded number of answers."""
    from safeguard_desktop.services.batch_runner import release_slot

    async def scenario() -> tuple[int, int]:
        started: list[int] = []
        database = asyncio.Event()

        async def do_one(unit: int) -> Outcome:
            started.append(unit)
            release_slot()  # the answer came at once
            await database.wait()  # recording waits for the database
            return "done"

        task = asyncio.ensure_future(BatchRunner[int](parallel=2).run(range(10), do_one))
        for _ in range(100):  # the loop has long settled: nothing else can start
            await asyncio.sleep(0)
        held = len(started)
        database.set()
        report = await task
        return held, report.done

    held, done = asyncio.run(scenario())
    assert held == 4 and done == 10


def test_released_units_still_count_as_in_flight_when_stopped() -> None:
    """Cancelled while recording: the unit is handed back like any unit in flight."""
    from safeguard_desktop.services.batch_runner import release_slot

    async def scenario() -> tuple[list[int], list[int]]:
        given_back: list[int] = []
        started: list[int] = []
        blocked = asyncio.Event()

        async def do_one(unit: int) -> Outcome:
            started.append(unit)
            release_slot()
            if unit == 1:
                blocked.set()
                await asyncio.Event().wait()  # never records
            await asyncio.Event().wait()
            return "done"

        async def on_abandon(units: list[int]) -> None:
            given_back.extend(units)

        task = asyncio.ensure_future(
            BatchRunner[int](parallel=1).run([1, 2, 3], do_one, on_abandon=on_abandon)
        )
        await blocked.wait()
        while len(started) < 2:  # unit 2 starts although unit 1 has not finished
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return sorted(given_back), sorted(started)

    given_back, started = asyncio.run(scenario())
    assert given_back == started and started[:2] == [1, 2]
