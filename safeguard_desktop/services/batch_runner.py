"""The one batch runner: N units of work in flight, started in order, with backoff on a busy
server, a clean stop, and progress (done / total, per minute, ETA).

Generic over the unit: a queue's (item, policy), an evaluation's example, later a unit bound
to one of several hosts. The caller says how to do one unit and what to do with units given
back; the runner only decides when. It keeps no state of its own between runs: whoever owns
the units keeps that (queues keep it in SQLite), so a killed process loses nothing.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

__all__ = [
    "Backoff",
    "BatchRunner",
    "Outcome",
    "Progress",
    "Retry",
    "RunReport",
    "release_slot",
    "run_batch",
    "throughput",
]

log = logging.getLogger("safeguard.batch")
U = TypeVar("U")
Outcome = Literal["done", "failed", "skipped"]
_RELEASE: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "batch_release", default=None
)


def release_slot() -> None:
    """Called by `do_one` once its request to the server is over: the runner starts the
    next unit at once while this one records its result (the server never idles while the
    database writes). Outside a runner, or called twice, it does nothing."""
    release = _RELEASE.get()
    if release is not None:
        release()


class Retry(Exception):
    """Raised by `do_one`: the unit could not run now (the server's queue is full); run it
    again after a backoff, in the same slot. With `max_attempts`, the whole run stops with
    `error` once the unit was tried that often (a server that stays away)."""

    def __init__(self, error: BaseException, *, max_attempts: int | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.max_attempts = max_attempts


@dataclass(frozen=True)
class Backoff:
    """Exponential delays between attempts of one unit, capped, with jitter so several
    slots do not knock again at the same instant."""

    first: float = 0.5
    factor: float = 2.0
    cap: float = 10.0
    jitter: float = 0.25  # each delay is shortened by up to this share

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 1)."""
        base = min(self.cap, self.first * self.factor ** max(0, attempt - 1))
        return base * (1.0 - self.jitter * random.random())


def throughput(finished: int, remaining: int, elapsed: float) -> tuple[float | None, float | None]:
    """(per minute, ETA in seconds) from what finished in `elapsed` seconds; None while
    nothing has finished yet."""
    if finished <= 0 or elapsed <= 0:
        return None, None
    rate = finished / elapsed
    return rate * 60.0, remaining / rate


@dataclass(frozen=True)
class Progress:
    """Where a run stands. `done` counts earlier runs' work too (`total` is the whole job);
    the rate and the ETA are measured on this run's work only."""

    done: int
    total: int
    failed: int = 0
    in_flight: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    per_minute: float | None = None
    eta_s: float | None = None

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0


@dataclass(frozen=True)
class RunReport:
    """What one run did that was not cancelled; `stopped`: `stop` left units undone."""

    done: int
    failed: int
    skipped: int
    retries: int
    stopped: bool
    elapsed_s: float
    by_host: str | None = None  # several hosts: how many each judged ("local 30, gpu2 10")


class BatchRunner(Generic[U]):
    """Runs `do_one` over units with at most `parallel` in flight, started in the given
    order. `do_one` returns how the unit ended, or raises `Retry` (server busy: again after
    a backoff), or anything else to stop the run (that error is raised by `run`).

    Cancelling `run` (Ctrl+C, a Pause) cancels the units in flight, awaits them, and hands
    them to `on_abandon` before the cancellation goes on: the owner puts them back to do.
    Setting `stop` starts no new unit and lets those in flight finish.
    """

    def __init__(
        self,
        *,
        parallel: int = 1,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if parallel < 1:
            raise ValueError("At least one unit must be in flight: parallel >= 1.")
        self.parallel = parallel
        self.backoff = backoff or Backoff()
        self._clock = clock

    async def run(
        self,
        units: Sequence[U],
        do_one: Callable[[U], Awaitable[Outcome]],
        *,
        on_progress: Callable[[Progress], None] | None = None,
        on_abandon: Callable[[list[U]], Awaitable[None]] | None = None,
        done_before: int = 0,
        stop: asyncio.Event | None = None,
    ) -> RunReport:
        todo: deque[U] = deque(units)
        total = done_before + len(units)
        counts = {"done": 0, "failed": 0, "skipped": 0}
        retries = 0
        in_flight: dict[asyncio.Future[Outcome], U] = {}
        started = self._clock()

        def progress() -> Progress:
            finished = counts["done"] + counts["failed"]
            elapsed = self._clock() - started
            per_minute, eta = throughput(finished, len(todo) + len(in_flight), elapsed)
            return Progress(
                done=done_before + sum(counts.values()), total=total, failed=counts["failed"],
                in_flight=len(in_flight), retries=retries, elapsed_s=elapsed,
                per_minute=per_minute, eta_s=eta,
            )  # fmt: skip

        def report() -> None:
            if on_progress is not None:
                on_progress(progress())

        released: set[asyncio.Future[Outcome]] = set()  # past their request: no slot held
        wake = asyncio.Event()

        def release() -> None:
            task = asyncio.current_task()
            if task is not None and task in in_flight and task not in released:
                released.add(task)
                wake.set()

        async def attempt(unit: U) -> Outcome:
            nonlocal retries
            attempts = 0
            _RELEASE.set(release)  # this task's own context (ensure_future copies it)
            while True:
                try:
                    return await do_one(unit)
                except Retry as retry:
                    task = asyncio.current_task()
                    if task is not None:
                        released.discard(task)  # trying again: it holds its slot again
                    attempts += 1
                    if retry.max_attempts is not None and attempts >= retry.max_attempts:
                        raise retry.error from None
                    retries += 1
                    delay = self.backoff.delay(attempts)
                    log.info("unit %r: %s; again in %.1f s", unit, retry.error, delay)
                    report()
                    await asyncio.sleep(delay)

        def stopping() -> bool:
            return stop is not None and stop.is_set()

        report()
        try:
            while todo or in_flight:
                # Up to `parallel` requests, and at most as many units again past theirs
                # still recording: a database slower than the server holds the next request
                # back instead of piling up answers that a killed process would lose.
                while (
                    todo
                    and len(in_flight) - len(released) < self.parallel
                    and len(in_flight) < 2 * self.parallel
                    and not stopping()
                ):
                    unit = todo.popleft()
                    in_flight[asyncio.ensure_future(attempt(unit))] = unit
                if not in_flight:
                    break
                wake.clear()
                waker: asyncio.Future[Any] = asyncio.ensure_future(wake.wait())
                waiting: list[asyncio.Future[Any]] = [*in_flight, waker]
                try:
                    finished, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
                    await asyncio.gather(waker, return_exceptions=True)
                for task in [t for t in in_flight if t in finished]:
                    error = task.exception()
                    if error is not None:
                        raise error  # the others are given back below; this one too
                    in_flight.pop(task)
                    released.discard(task)
                    counts[task.result()] += 1
                report()
        except BaseException:
            abandoned = await self._abandon(in_flight, counts)
            if on_abandon is not None and abandoned:
                await on_abandon(abandoned)
            raise
        return RunReport(
            done=counts["done"], failed=counts["failed"], skipped=counts["skipped"],
            retries=retries, stopped=bool(todo),
            elapsed_s=self._clock() - started,
        )  # fmt: skip

    @staticmethod
    async def _abandon(
        in_flight: dict[asyncio.Future[Outcome], U], counts: dict[str, int]
    ) -> list[U]:
        """Cancel what is in flight and wait for it; the units that did not finish."""
        for task in in_flight:
            task.cancel()
        await asyncio.gather(*in_flight, return_exceptions=True)
        abandoned: list[U] = []
        for task, unit in in_flight.items():
            if task.cancelled() or task.exception() is not None:
                abandoned.append(unit)
            else:
                counts[task.result()] += 1  # it finished while the others were cancelled
        return abandoned


async def run_batch(
    units: Sequence[U],
    do_one: Callable[[U], Awaitable[Outcome]],
    *,
    parallel: int = 1,
    on_progress: Callable[[Progress], None] | None = None,
    on_abandon: Callable[[list[U]], Awaitable[None]] | None = None,
    done_before: int = 0,
    stop: asyncio.Event | None = None,
    backoff: Backoff | None = None,
) -> RunReport:
    """`BatchRunner(parallel=..., backoff=...).run(...)` in one call."""
    runner: BatchRunner[U] = BatchRunner(parallel=parallel, backoff=backoff)
    return await runner.run(
        units,
        do_one,
        on_progress=on_progress,
        on_abandon=on_abandon,
        done_before=done_before,
        stop=stop,
    )
