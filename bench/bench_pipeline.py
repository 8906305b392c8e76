"""Pipeline overhead against a bare `ollama.AsyncClient.chat` loop, and highlight time.

Both sides stream the same 2,000-token reasoning from the fake Ollama at 5,000
tokens/s, alternating runs; the printed ratio is pipeline throughput divided by
baseline throughput (target >= 0.95). Run: `python3 bench/bench_pipeline.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ollama

from safeguard_desktop.core.content import from_text
from safeguard_desktop.core.highlight import highlight
from safeguard_desktop.core.policy import resolve_policy
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.services.history_service import HistoryService
from safeguard_desktop.services.review import Reviewer
from safeguard_desktop.services.session import Session
from safeguard_desktop.settings import Settings
from tests.fake_ollama import FakeOllama

CONTENT = "you are worthless and everyone at school laughs at you"


async def baseline(url: str, request: dict[str, object]) -> tuple[float, int]:
    client = ollama.AsyncClient(host=url)
    t0 = time.perf_counter()
    thinking, answer = [], []
    async for chunk in await client.chat(**request):  # type: ignore[call-overload]
        if chunk.message.thinking:
            thinking.append(chunk.message.thinking)
        if chunk.message.content:
            answer.append(chunk.message.content)
    elapsed = time.perf_counter() - t0
    return elapsed, len("".join(thinking))


async def pipeline(reviewer: Reviewer, policy: object, content: object) -> tuple[float, int]:
    t0 = time.perf_counter()
    seen: list[str] = []
    result = await reviewer.review(policy, content, on_delta=lambda k, t: seen.append(t))  # type: ignore[arg-type]
    highlight(result.reasoning, content.render(), [r.id for r in result.policy.rules])  # type: ignore[attr-defined]
    elapsed = time.perf_counter() - t0
    assert result.verdict is not None and result.verdict.label == "violation", result.error
    return elapsed, len(result.reasoning)


async def compare(runs: int, rate: float, tokens: int) -> None:
    with FakeOllama(token_rate=rate) as fake:
        fake.reasoning_tokens = tokens
        policy = resolve_policy("harassment")
        content = from_text(CONTENT)
        folder = tempfile.TemporaryDirectory()  # history on, as a user has it
        history = HistoryService.open(Path(folder.name) / "history.sqlite3")
        session = Session.create(Settings(), Endpoint(fake.url), history)
        options = session.review_options(source="gui", model="gpt-oss-safeguard:20b")
        reviewer = session.reviewer(options)
        request = reviewer.build(policy, content, schema=False).to_kwargs()
        await pipeline(reviewer, policy, content)  # warm-up both paths
        await baseline(fake.url, request)
        base_t, pipe_t = [], []
        for _ in range(runs):
            pipe_t.append((await pipeline(reviewer, policy, content))[0])
            elapsed, chars = await baseline(fake.url, request)
            base_t.append(elapsed)
        await session.aclose_client()
        history.close()
        folder.cleanup()
    b, p = statistics.median(base_t), statistics.median(pipe_t)
    print(
        f"stream: {tokens} reasoning tokens at {rate:.0f} tokens/s, {runs} runs each, "
        f"~{chars} chars"
    )
    print(f"  baseline (bare AsyncClient.chat loop)   median {b * 1000:8.1f} ms")
    print(f"  pipeline (request+stream+parse+highlight) median {p * 1000:8.1f} ms")
    print(f"  throughput ratio pipeline/baseline: {b / p:.3f}   (target >= 0.95)")


def bench_highlight(repeats: int) -> None:
    rng = random.Random(7)
    words = [
        "the",
        "user",
        "wrote",
        "message",
        "policy",
        "rule",
        "says",
        "harassment",
        "target",
        "person",
        "group",
        "insult",
        "school",
        "friend",
        "online",
        "post",
        "reply",
        "thread",
        "worthless",
        "laughs",
    ]
    content_words = [rng.choice(words) for _ in range(4000)]
    content = " ".join(content_words)
    parts = []
    while sum(len(p) for p in parts) < 32_000:  # ~8,000 tokens at ~4 chars/token
        start = rng.randrange(0, 3990)
        quote = " ".join(content_words[start : start + rng.randint(2, 6)])
        parts.append(f'The content says "{quote}", which matches HB2.a, so this violates HB2. ')
        parts.append("Consider whether it does not violate HB0.b given the context. ")
    reasoning = "".join(parts)
    ids = ["HB0.a", "HB0.b", "HB2", "HB2.a", "HB3"]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        h = highlight(reasoning, content, ids)
        times.append(time.perf_counter() - t0)
    base = []
    for _ in range(repeats):  # baseline: one case-insensitive scan of the content per quote
        t0 = time.perf_counter()
        low = content.lower()
        for q in h.quotes:
            low.find(q)
        base.append(time.perf_counter() - t0)
    print(
        f"highlight: {len(reasoning)} chars reasoning (~8,000 tokens), 4,000-word content, "
        f"{len(h.reasoning)} reasoning spans, {len(h.content)} content spans"
    )
    print(
        f"  highlight() median {statistics.median(times) * 1000:.1f} ms; "
        f"bare str.find over the same quotes {statistics.median(base) * 1000:.2f} ms; "
        f"ratio {statistics.median(times) / max(statistics.median(base), 1e-9):.1f}x"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--rate", type=float, default=5000.0)
    ap.add_argument("--tokens", type=int, default=2000)
    args = ap.parse_args()
    asyncio.run(compare(args.runs, args.rate, args.tokens))
    bench_highlight(5)


if __name__ == "__main__":
    main()
