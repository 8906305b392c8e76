"""Evaluation throughput against N bare `ollama.AsyncClient.chat` workers.

One fake Ollama with N parallel slots streams every reply at a fixed tokens/s, so the server
is the bottleneck; it runs as its own process (`python -m tests.fake_ollama serve`, started
by bench_queue.py's `fake_server`), so the client side's Python work does not share a GIL
with the server's threads. Each repeat classifies the same labelled items twice,
alternating: once as an evaluation through the real service path
(`Session.evaluations().run(policy, labels, label_column=..., parallel=N, fresh=True)`: the
file read and found again by checksum, a new run, every prediction recorded as a review in
the history of a temporary data folder, the metrics computed at the end; all of that call
is timed), once by N concurrent bare clients (one `ollama.AsyncClient` each, no history)
pulling the same requests from one list. The bare side replays the request bodies the
evaluation sent in a warm-up run, as the fake logged them (FAKE_OLLAMA_REQUEST_LOG), so both
ask for the same model, messages, think level, options and format. The ratio is evaluation
throughput divided by bare throughput (target >= 0.95 at N = 4).

The labelled set is ../shared/data/openai-moderation-1680/samples-1680.jsonl.gz, read at run
time (not copied into the repository); label column S keeps 984 of its 1,680 rows (the rows
without an S label are left out). `--items K` takes the first K rows that have the label
(written to a temporary .jsonl); without the file, generated sentences with their own
labels. The policy is the built-in `harassment` (the fake answers any policy alike).
Run: `python3 bench/bench_eval.py [--items 160] [--parallel 4]`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gzip
import json
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_queue import (  # the fake as its own process, the bare side and the log reader
    CHAT_KEYS,
    fake_server,
    log_offset,
    logged_chats,
    machine_load,
    open_session,
    run_bare,
    spread,
    system_prompt,
)

from safeguard_desktop import paths
from safeguard_desktop.services.evaluation import EvaluationService

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLES = DATA / "openai-moderation-1680" / "samples-1680.jsonl.gz"
POLICY = "harassment"
LABEL = "S"
DEFAULT_ITEMS = 160  # about two minutes for the whole bench at the default rate and tokens


def labelled_rows(path: Path, column: str) -> list[dict[str, Any]]:
    """The file's rows that carry a 0/1 label in `column`, in file order."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [r for r in rows if r.get(column) in (0, 1)]


def generated_rows(count: int, column: str, seed: int = 7) -> list[dict[str, Any]]:
    """`count` realistic sentences with a label of their own (the samples file is absent)."""
    rng = random.Random(seed)
    subjects = ["my neighbour", "the new manager", "that streamer", "your sister", "the team"]
    verbs = ["posted", "wrote", "said in the group chat", "commented under my photo", "replied"]
    remarks = [
        ("that nobody at school wants you around and you should just disappear", 1),
        ("that the meeting moved to Thursday at ten, bring the slides", 0),
        ("that you are a pathetic loser and everyone laughs at you behind your back", 1),
        ("thanks for the recipe, the lemon cake came out great", 0),
        ("that people like you are too stupid to be allowed online", 1),
        ("that the parcel is at the front desk if you want to pick it up today", 0),
    ]
    rows = []
    for _ in range(count):
        (first, a), (second, b) = rng.choice(remarks), rng.choice(remarks)
        text = (
            f"{rng.choice(subjects).capitalize()} {rng.choice(verbs)} {first}. "
            f"{rng.choice(subjects).capitalize()} {rng.choice(verbs)} {second}."
        )
        rows.append({"prompt": text, column: max(a, b)})
    return rows


def labels_file(folder: Path, items: int | None) -> tuple[Path, int, str]:
    """The labelled file the evaluation reads, how many items it holds, and its source.

    All labelled rows: the shared file itself. Fewer: its first `items` labelled rows, as
    a .jsonl in `folder`. No shared file: generated rows.
    """
    if SAMPLES.is_file():
        rows = labelled_rows(SAMPLES, LABEL)
        source = f"{SAMPLES.name} (label {LABEL}: {len(rows)} of its rows)"
        if items is None or items >= len(rows):
            return SAMPLES, len(rows), source
        rows = rows[:items]
        source += f", the first {items}"
    else:
        print(
            f"note: {SAMPLES} not found (the shared data folder is beside the repository); "
            "using generated sentences instead",
            file=sys.stderr,
        )
        rows = generated_rows(items or DEFAULT_ITEMS, LABEL)
        source = "generated sentences (samples file not found)"
    path = folder / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path, len(rows), source


async def run_eval(evals: EvaluationService, labels: Path, parallel: int, count: int) -> float:
    """One evaluation, a new run each time (`fresh`); seconds for the whole `run` call."""
    t0 = time.perf_counter()
    outcome = await evals.run(POLICY, labels, label_column=LABEL, parallel=parallel, fresh=True)
    elapsed = time.perf_counter() - t0
    report, metrics = outcome.report, outcome.metrics
    assert report.failed == 0 and not report.stopped, report
    assert outcome.info.done == count and metrics.n == count, (outcome.info, count)
    assert metrics.unparsed == 0, metrics
    return elapsed


async def compare(args: argparse.Namespace, data: Path) -> None:
    labels, count, source = labels_file(data, args.items)
    n = args.parallel
    log = data / "chat-requests.jsonl"
    with fake_server(args, log, data / "fake-ollama.log") as url:
        session = open_session(data / "data", url)
        evals = session.evaluations()
        try:
            # Warm-up: the evaluation once; its request bodies are what the bare side sends.
            mark = log_offset(log)
            await run_eval(evals, labels, n, count)
            spans = [(mark, log_offset(log))]
            recorded = logged_chats(log, *spans[0])
            bare = [{k: body[k] for k in CHAT_KEYS if k in body} for body in recorded]
            assert len(bare) == count, (len(bare), count)
            await run_bare(url, bare, n)
            eval_t, bare_t = [], []
            profiler = cProfile.Profile() if args.profile else None
            for _ in range(args.repeats):
                mark = log_offset(log)
                if profiler is not None:
                    profiler.enable()
                eval_t.append(await run_eval(evals, labels, n, count))
                if profiler is not None:
                    profiler.disable()
                spans.append((mark, log_offset(log)))
                bare_t.append(await run_bare(url, bare, n))
        finally:
            await session.aclose()
        prompts = [system_prompt(body) for a, b in spans for body in logged_chats(log, a, b)]
    same = sum(p == prompts[0] for p in prompts)
    ratios = [b / e for e, b in zip(eval_t, bare_t, strict=True)]
    print(
        f"evaluation: {count} items of {source}, policy {POLICY!r}, {n} slots, "
        f"{args.tokens} reasoning tokens at {args.rate:.0f} tokens/s per slot, "
        f"{args.repeats} repeats (min / median / max)"
    )
    print(f"  bare ({n} AsyncClient.chat workers, no history)  items/s  "
          f"{spread([count / t for t in bare_t])}")  # fmt: skip
    print(f"  evaluation (Session.evaluations().run, history on) items/s  "
          f"{spread([count / t for t in eval_t])}")  # fmt: skip
    print(f"  throughput ratio evaluation/bare: {spread(ratios)}   (target >= 0.95)")
    print(
        f"  system prompt byte-identical to the first: {same}/{len(prompts)} evaluation "
        f"requests ({100 * same / max(len(prompts), 1):.1f}%)"
    )
    busy = machine_load()
    if busy:
        print(f"  note: {busy}; the figures are noisy, run again when it is idle")
    if profiler is not None:
        # The event loop's thread only: work sent to threads (history writes, highlights) is
        # not in it. Cumulative times of coroutines include their awaits; own times do not.
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--items",
        type=int,
        default=DEFAULT_ITEMS,
        help=f"first K labelled rows (default {DEFAULT_ITEMS}; 0: all 984)",
    )
    ap.add_argument("--parallel", type=int, default=4, help="slots and workers (default 4)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rate", type=float, default=1000.0, help="tokens/s per slot")
    ap.add_argument("--tokens", type=int, default=250, help="reasoning tokens per reply")
    ap.add_argument("--profile", action="store_true", help="cProfile the evaluation runs")
    args = ap.parse_args()
    if args.items < 0 or args.parallel < 1 or args.repeats < 1:
        ap.error("--items must be at least 0, --parallel and --repeats at least 1")
    args.items = args.items or None
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        try:
            asyncio.run(compare(args, Path(tmp)))
        finally:
            paths.set_data_dir(None)


if __name__ == "__main__":
    main()
