"""A queue over two model hosts against the same queue on one (issue 14 item 7).

Two fake Ollama servers, each in its own process with N slots (as two GPU machines would
be), a reasoning of `--tokens` at `--rate` tokens/s per slot. Each repeat runs a fresh
queue of `--items` realistic texts through the real service path (`Session.queues().run`,
history on, in a temp data folder) once on the local host alone and once over both
(`hosts.json` with the second host, N slots each), and prints the throughput ratio
(target >= 1.9), min / median / max of the repeats.

Then the same two-host queue with the second host killed (SIGKILL) half-way: every item
must end classified with exactly one review, each recorded with the host that judged it.

    python3 bench/bench_hosts.py [--items 40] [--slots 2] [--tokens 1000] [--rate 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from bench_queue import fake_server, load_texts, open_session, write_items  # noqa: E402

from safeguard_desktop import paths  # noqa: E402
from safeguard_desktop.services.batch_runner import Progress  # noqa: E402
from safeguard_desktop.services.session import Session  # noqa: E402

POLICY = "harassment"
TARGET = 1.9


def session_for(data: Path, local: str, second: tuple[str, int] | None) -> Session:
    """A session whose local host is `local`, with the second host added when given."""
    session = open_session(data, local)
    session.settings.set("host", local)
    session.settings.save()
    if second is not None:
        url, slots = second
        session.hosts().add("gpu2", url, slots=slots)
    return session


async def timed_run(session: Session, name: str, items: Path, slots: int) -> float:
    queues = session.queues()
    await asyncio.to_thread(queues.create, name, [items], [POLICY])
    t0 = time.perf_counter()
    report = await queues.run(name, parallel=slots)
    elapsed = time.perf_counter() - t0
    assert report.failed == 0 and not report.stopped, report
    await session.aclose_client()
    return elapsed


def one_repeat(
    args: argparse.Namespace, items: Path, urls: list[str], n: int
) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        one = session_for(Path(tmp) / "one", urls[0], None)
        t_one = asyncio.run(timed_run(one, f"one{n}", items, args.slots))
        one.close_history()
        two = session_for(Path(tmp) / "two", urls[0], (urls[1], args.slots))
        t_two = asyncio.run(timed_run(two, f"two{n}", items, args.slots))
        two.close_history()
    paths.set_data_dir(None)
    return t_one, t_two


def killed_half_way(args: argparse.Namespace, items: Path, local: str, tmp: Path) -> None:
    """Two hosts, the second killed when half the items are done."""
    with fake_server(args, tmp / "chats-k.jsonl", tmp / "fake-k.log") as (url2, pid2):
        session = session_for(tmp / "killed", local, (url2, args.slots))
        queues = session.queues()
        queues.create("k", [items], [POLICY])
        killed: list[float] = []

        def progress(p: Progress) -> None:
            if not killed and p.done >= p.total // 2:
                os.kill(pid2, signal.SIGKILL)
                killed.append(time.perf_counter())

        async def run() -> None:
            try:
                await queues.run("k", parallel=args.slots, on_progress=progress)
            finally:
                await session.aclose_client()

        asyncio.run(run())
        rows = queues.items("k")
        session.close_history()
    paths.set_data_dir(None)
    states = Counter(r.state for r in rows)
    review_ids = [c.review_id for r in rows for c in r.verdicts]
    hosts = Counter(c.host for r in rows for c in r.verdicts)
    once = len(review_ids) == len(set(review_ids)) == len(rows) and None not in review_ids
    print(
        f"second host killed half-way: {states.get('classified', 0)} of {len(rows)} items "
        f"classified, {len(set(review_ids))} reviews for {len(rows)} items "
        f"({'each exactly once' if once else 'NOT once each'}); judged by "
        + ", ".join(f"{'local' if h == local else 'gpu2'} {c}" for h, c in hosts.items())
    )
    if not once or states.get("classified", 0) != len(rows) or not killed:
        raise SystemExit("FAILED: the killed host lost or doubled items")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--slots", type=int, default=2, help="slots per host (N)")
    parser.add_argument("--tokens", type=int, default=1000, help="reasoning tokens per answer")
    parser.add_argument("--rate", type=float, default=1000.0, help="tokens/s per slot")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    args.parallel = args.slots  # each fake's OLLAMA_NUM_PARALLEL
    texts, source = load_texts(args.items)
    print(
        f"{args.items} items from {source}, policy {POLICY}, {args.slots} slots per host, "
        f"{args.tokens} reasoning tokens at {args.rate:g} tokens/s per slot, history on; "
        f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        tmp = Path(folder)
        items = write_items(tmp / "items.jsonl", texts)
        urls = [
            stack.enter_context(fake_server(args, tmp / f"chats{i}.jsonl", tmp / f"fake{i}.log"))[0]
            for i in range(2)
        ]
        ratios, ones, twos = [], [], []
        for n in range(args.repeats):
            t_one, t_two = one_repeat(args, items, urls, n)
            ones.append(args.items / t_one)
            twos.append(args.items / t_two)
            ratios.append(t_one / t_two)
            print(f"  repeat {n + 1}: one host {ones[-1]:.2f} items/s, two hosts "
                  f"{twos[-1]:.2f} items/s, ratio {ratios[-1]:.2f}")  # fmt: skip
        med = statistics.median(ratios)
        print(
            f"two hosts / one host, items per second: min {min(ratios):.2f} / median "
            f"{med:.2f} / max {max(ratios):.2f} (target >= {TARGET}): "
            + ("met" if med >= TARGET else "NOT met")
        )
        killed_half_way(args, items, urls[0], tmp)
    print(json.dumps({"ratio_median": round(med, 3), "target": TARGET}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
