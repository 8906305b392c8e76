"""Review-queue throughput against N bare `ollama.AsyncClient.chat` workers, and prompt reuse.

One fake Ollama with N parallel slots streams every reply at a fixed tokens/s, so the server
is the bottleneck. It runs as its own process (`python -m tests.fake_ollama serve`, as real
Ollama is a separate Go process), so the client side's Python work does not share a GIL with
the server's threads and slow its pacing. Each repeat classifies the same items twice,
alternating: once as a queue through the real service path (`Session.queues()`: create, then
`run(parallel=N)`, with the history on, in a temporary data folder), once by N concurrent
bare clients (one `ollama.AsyncClient` each, no history) pulling the same requests from one
list. The bare side replays the request bodies the queue sent in a warm-up run, as the fake
logged them, so both ask for the same model, messages, think level, options and format. The
ratio is queue throughput divided by bare throughput (target >= 0.95 at N = 4).

Second figure: the share of the queue's /api/chat requests, as the fake server received
them (its FAKE_OLLAMA_REQUEST_LOG, read between byte offsets taken around each queue run, so
the bare side's requests are not counted), whose system prompt is byte-identical to the first
one's (target 100%: Ollama can then reuse its prompt cache across items).

Items are drawn at run time from ../shared/data/openai-moderation-1680/samples-1680.jsonl.gz
(not copied into the repository), else generated sentences; the policy is the built-in
`harassment`. Run: `python3 bench/bench_queue.py [--items 80] [--parallel 4]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gzip
import json
import os
import pstats
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ollama

from safeguard_desktop import paths
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.services.history_service import HistoryService
from safeguard_desktop.services.queue_service import QueueService
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import Settings

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO.parent / "shared/data/openai-moderation-1680/samples-1680.jsonl.gz"
POLICY = "harassment"
CHAT = "/api/chat"
# What a request carries to /api/chat, as ollama.AsyncClient.chat takes it.
CHAT_KEYS = ("model", "messages", "think", "format", "options", "keep_alive")
READY_SECONDS = 30.0  # bound on the fake's start-up (a hang, not a timing claim)
STOP_SECONDS = 10.0  # bound on its exit after SIGTERM, before it is killed


def load_texts(count: int, seed: int = 7) -> tuple[list[str], str]:
    """`count` realistic texts and where they came from."""
    rng = random.Random(seed)
    if SAMPLES.is_file():
        with gzip.open(SAMPLES, "rt", encoding="utf-8") as fh:
            prompts = [str(json.loads(line)["prompt"]) for line in fh if line.strip()]
        prompts = [p for p in prompts if p.strip()]
        if prompts:
            picked = rng.sample(prompts, min(count, len(prompts)))
            while len(picked) < count:
                picked.append(rng.choice(prompts))
            return picked, f"{SAMPLES.name} ({len(prompts)} samples)"
    subjects = ["my neighbour", "the new manager", "that streamer", "your sister", "the team"]
    verbs = ["posted", "wrote", "said in the group chat", "commented under my photo", "replied"]
    remarks = [
        "that nobody at school wants you around and you should just disappear",
        "that the meeting moved to Thursday at ten, bring the slides",
        "that you are a pathetic loser and everyone laughs at you behind your back",
        "thanks for the recipe, the lemon cake came out great",
        "that people like you are too stupid to be allowed online",
        "that the parcel is at the front desk if you want to pick it up today",
    ]
    texts = [
        f"{rng.choice(subjects).capitalize()} {rng.choice(verbs)} {rng.choice(remarks)}. "
        f"{rng.choice(subjects).capitalize()} {rng.choice(verbs)} {rng.choice(remarks)}."
        for _ in range(count)
    ]
    return texts, "generated sentences (samples file not found)"


def write_items(path: Path, texts: list[str]) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": t}) + "\n" for i, t in enumerate(texts, 1)),
        encoding="utf-8",
    )
    return path


def open_session(data: Path, url: str) -> Session:
    """A session as the CLI builds one, on a private data folder with its history."""
    paths.set_data_dir(data)
    settings = Settings(data / "settings.json")
    settings.set("moderator", "bench")
    history = HistoryService.open(data / "history.sqlite3")
    return Session.create(settings, Endpoint(url), history)


async def run_queue(queues: QueueService, name: str, items: Path, parallel: int) -> float:
    """Create the queue (not timed) and run it; seconds for the run."""
    await asyncio.to_thread(queues.create, name, [items], [POLICY])
    t0 = time.perf_counter()
    report = await queues.run(name, parallel=parallel)
    elapsed = time.perf_counter() - t0
    assert report.failed == 0 and not report.stopped, report
    return elapsed


async def run_bare(url: str, requests: list[dict[str, Any]], parallel: int) -> float:
    """N workers, one bare client each, pulling from one list; seconds for all of them.

    The clients are made before the clock starts (each builds an SSL context, tens of ms),
    as the queue's session client is made in the warm-up.
    """
    todo = iter(requests)
    clients = [ollama.AsyncClient(host=url) for _ in range(parallel)]

    async def worker(client: ollama.AsyncClient) -> None:
        for request in todo:  # one shared iterator: each request is taken once
            answer = []
            async for chunk in await client.chat(**request, stream=True):
                if chunk.message.content:
                    answer.append(chunk.message.content)
            assert answer, "empty answer"

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in clients))
        return time.perf_counter() - t0
    finally:
        for client in clients:
            await client.close()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no proxy from env
    try:
        with opener.open(f"{url}/api/version", timeout=1) as response:
            return bool(json.loads(response.read()).get("version"))
    except (OSError, ValueError, urllib.error.URLError):
        return False


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, a bounded wait, then SIGKILL."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_SECONDS)


@contextlib.contextmanager
def fake_server(args: argparse.Namespace, log: Path, stderr: Path) -> Iterator[tuple[str, int]]:
    """The fake Ollama as its own process, logging /api/chat bodies to `log`; yields its URL
    and process id.

    Its stderr (a gin-style line per request) goes to a file: a pipe nobody reads would
    fill up and block it. A port taken between picking and binding is retried.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "FAKE_OLLAMA_"))}
    env.update(
        OLLAMA_NUM_PARALLEL=str(args.parallel),
        FAKE_OLLAMA_TOKEN_RATE=repr(float(args.rate)),
        FAKE_OLLAMA_REASONING_TOKENS=str(args.tokens),
        FAKE_OLLAMA_REQUEST_LOG=str(log),
    )
    for _ in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env["OLLAMA_HOST"] = f"127.0.0.1:{port}"
        with stderr.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.fake_ollama", "serve"],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + READY_SECONDS
        while proc.poll() is None and time.monotonic() < deadline and not answers(url):
            time.sleep(0.05)
        if proc.poll() is None and answers(url):
            break
        stop_process(proc)
        output = stderr.read_text(encoding="utf-8", errors="replace")
        if "address already in use" not in output:
            raise RuntimeError(f"fake Ollama did not start (exit {proc.returncode}):\n{output}")
    else:
        raise RuntimeError("fake Ollama: no free port after 3 tries")
    try:
        yield url, proc.pid
    finally:
        stop_process(proc)


def log_offset(log: Path) -> int:
    """Where the next logged request will start (the log is flushed per request)."""
    return log.stat().st_size if log.exists() else 0


def logged_chats(log: Path, start: int, end: int) -> list[dict[str, Any]]:
    """The /api/chat bodies the fake logged between two offsets."""
    with log.open("rb") as fh:
        fh.seek(start)
        data = fh.read(end - start)
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def system_prompt(body: dict[str, Any]) -> str | None:
    """The content of the request's system message, as sent."""
    for message in body.get("messages") or []:
        if message.get("role") == "system":
            return str(message.get("content"))
    return None


def cpu_seconds(pid: int | None = None) -> float | None:
    """CPU seconds used so far by all CPUs (busy, not idle), or by one process; Linux only."""
    try:
        if pid is None:
            ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
            used = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
        else:  # utime and stime, after the command name (which may hold spaces)
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            used = int(fields[11]) + int(fields[12])
        return used / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def cpu_sample(server_pid: int) -> tuple[float, float, float] | None:
    """(clock, CPU seconds of the whole machine, CPU seconds of this bench and its fake)."""
    total, server = cpu_seconds(), cpu_seconds(server_pid)
    if total is None or server is None:
        return None
    own = os.times()
    return time.monotonic(), total, server + own.user + own.system


def other_cpus(
    start: tuple[float, float, float] | None, end: tuple[float, float, float] | None
) -> float | None:
    """CPUs' worth of work other processes did between two samples (noise for the bench)."""
    if start is None or end is None or end[0] <= start[0]:
        return None
    return max(0.0, ((end[1] - start[1]) - (end[2] - start[2])) / (end[0] - start[0]))


def spread(values: list[float]) -> str:
    return f"{min(values):.3f} / {statistics.median(values):.3f} / {max(values):.3f}"


async def compare(args: argparse.Namespace, data: Path) -> None:
    texts, source = load_texts(args.items)
    items = write_items(data / "items.jsonl", texts)
    n = args.parallel
    log = data / "chat-requests.jsonl"
    with fake_server(args, log, data / "fake-ollama.log") as (url, server_pid):
        session = open_session(data / "data", url)
        queues = session.queues()
        try:
            # Warm-up: the queue path once; its request bodies are what the bare side sends.
            mark = log_offset(log)
            await run_queue(queues, "warm-up", items, n)
            queue_spans = [(mark, log_offset(log))]
            recorded = logged_chats(log, *queue_spans[0])
            bare = [{k: body[k] for k in CHAT_KEYS if k in body} for body in recorded]
            assert len(bare) == len(texts), (len(bare), len(texts))
            await run_bare(url, bare, n)
            queue_t, bare_t = [], []
            first = cpu_sample(server_pid)
            profiler = cProfile.Profile() if args.profile else None
            for i in range(args.repeats):
                mark = log_offset(log)
                if profiler is not None:
                    profiler.enable()
                queue_t.append(await run_queue(queues, f"bench-{i + 1}", items, n))
                if profiler is not None:
                    profiler.disable()
                queue_spans.append((mark, log_offset(log)))
                bare_t.append(await run_bare(url, bare, n))
            other = other_cpus(first, cpu_sample(server_pid))
        finally:
            await session.aclose()
        prompts = [system_prompt(body) for a, b in queue_spans for body in logged_chats(log, a, b)]
    same = sum(p == prompts[0] for p in prompts)
    count = len(texts)
    ratios = [b / q for q, b in zip(queue_t, bare_t, strict=True)]
    print(
        f"queue: {count} items of {source}, policy {POLICY!r}, {n} slots, "
        f"{args.tokens} reasoning tokens at {args.rate:.0f} tokens/s per slot, "
        f"{args.repeats} repeats (min / median / max)"
    )
    print(f"  bare ({n} AsyncClient.chat workers, no history) items/s  "
          f"{spread([count / t for t in bare_t])}")  # fmt: skip
    print(f"  queue (Session.queues().run, history on)     items/s  "
          f"{spread([count / t for t in queue_t])}")  # fmt: skip
    print(f"  throughput ratio queue/bare: {spread(ratios)}   (target >= 0.95)")
    print(
        f"  system prompt byte-identical to the first: {same}/{len(prompts)} queue requests "
        f"({100 * same / max(len(prompts), 1):.1f}%, {len(set(prompts))} distinct; "
        f"target 100%)"
    )
    cpus = os.cpu_count() or 1
    if other is not None and other > 0.25 * cpus:
        print(
            f"  note: other processes kept {other:.1f} of {cpus} CPUs busy meanwhile; "
            f"the figures are noisy, run again when the machine is idle"
        )
    if profiler is not None:
        # The event loop's thread only: work sent to threads (history writes, highlights) is
        # not in it. Cumulative times of coroutines include their awaits; own times do not.
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(30)
        stats.sort_stats("tottime").print_stats(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=80, help="items per run (default 80)")
    ap.add_argument("--parallel", type=int, default=4, help="slots and workers (default 4)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rate", type=float, default=1000.0, help="tokens/s per slot")
    ap.add_argument("--tokens", type=int, default=250, help="reasoning tokens per reply")
    ap.add_argument("--profile", action="store_true", help="cProfile the queue runs")
    args = ap.parse_args()
    if args.items < 1 or args.parallel < 1 or args.repeats < 1:
        ap.error("--items, --parallel and --repeats must be at least 1")
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        try:
            asyncio.run(compare(args, Path(tmp)))
        finally:
            paths.set_data_dir(None)


if __name__ == "__main__":
    main()
