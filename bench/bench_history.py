"""How the review history scales: insert rate, search latency, opening the History view.

Grows one synthetic history to 10,000 then 100,000 reviews (and 1,000,000 with --full) and
prints, at each size: bulk insert rate, real-API cost of one review, FTS search median/p95
over 50 queries of 1-2 words, list(limit=200) + count(), save_progress, and file size.
Ratios are against the 10,000 figures of the same run.

    python bench/bench_history.py [--full] [--dir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import accumulate
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from safeguard_desktop.store.db import format_utc
from safeguard_desktop.store.history import Filters, History

BATCH = 10_000
SEED = 20251128
POLICIES = [("spam", "2", "a" * 64), ("hate", "1", "b" * 64), ("self-harm", "3", "c" * 64)]
_SYLLABLES = ("ka", "lo", "mi", "re", "tu", "sa", "ne", "po", "di", "va", "ru", "te", "bo",
              "li", "fa", "gu", "ze", "ho", "ni", "ma", "so", "pe", "ta", "ci")  # fmt: skip


def make_vocabulary(rng: random.Random, size: int = 3000) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))))
    return sorted(words, key=lambda w: (len(w), w))  # short words are the frequent ones


@dataclass
class TextMaker:
    """Zipf-distributed words from a small vocabulary: realistic posting-list skew."""

    rng: random.Random
    vocab: list[str]

    def __post_init__(self) -> None:
        self.cum = list(accumulate(1.0 / (rank + 1) ** 1.07 for rank in range(len(self.vocab))))

    def words(self, n: int) -> str:
        return " ".join(self.rng.choices(self.vocab, cum_weights=self.cum, k=n))


def review_rows(
    maker: TextMaker, start: int, count: int, t0: datetime
) -> Iterator[tuple[object, ...]]:
    rng = maker.rng
    for i in range(start, start + count):
        created = format_utc(t0 + timedelta(seconds=10 * i))
        policy_id, version, sha = POLICIES[i % len(POLICIES)]
        roll = rng.random()
        label = "violation" if roll < 0.3 else "safe" if roll < 0.93 else "unparsed"
        status = "failed" if roll > 0.99 else "done"
        content = maker.words(rng.randint(40, 80))
        verdict = f'{{"violation": {int(label == "violation")}, "policy_category": "{policy_id}"}}'
        yield (
            created, created, created, status, f'{{"text": "{content}"}}', content, "message",
            "queue", sha, policy_id, version, "gpt-oss-safeguard:20b", "sha256:0f0f", "0.12.6",
            "", "medium", 16384, 7, None, "ana", maker.words(rng.randint(100, 200)), "1",
            verdict, label, policy_id, f"{policy_id.upper()}1", "high", maker.words(15),
            '{"eval_count": 600}', None, int(rng.random() < 0.05),
        )  # fmt: skip


INSERT = (
    "INSERT INTO reviews (created_at, heartbeat_at, finished_at, status, content_json, "
    "content_text, content_kind, source, policy_sha256, policy_id, policy_version, model, "
    "model_digest, ollama_version, host, effort, num_ctx, seed, temperature, moderator, "
    "reasoning, answer, verdict_json, verdict_label, category, rule_ids, confidence, rationale, "
    f"stats_json, error, escalated) VALUES ({', '.join('?' * 31)})"
)


def bulk_insert(path: Path, maker: TextMaker, start: int, count: int, t0: datetime) -> float:
    """Plain SQL through the real schema and triggers, one transaction per 10,000 rows."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    began = time.perf_counter()
    for offset in range(0, count, BATCH):
        n = min(BATCH, count - offset)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT, review_rows(maker, start + offset, n, t0))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - began
    conn.close()
    return count / elapsed


def timed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) * 1000


def open_view(h: History, filters: Filters, cap: int | None = None) -> None:
    h.list(filters=filters, limit=200)
    h.count(filters, cap=cap)


def api_review_ms(h: History, maker: TextMaker, n: int = 200) -> float:
    """One review the way the app writes it: start, 3 progress writes, finish."""
    times = []
    for _ in range(n):
        content, reasoning = maker.words(60), maker.words(150)

        def one(content: str = content, reasoning: str = reasoning) -> None:
            rid = h.start_review(
                content={"text": content}, content_text=content, content_kind="message",
                policy_sha256=POLICIES[0][2], policy_id="spam", policy_version="2",
                policy_title="Spam", policy_text="policy", model="gpt-oss-safeguard:20b",
                effort="medium", num_ctx=16384, seed=7, temperature=None, moderator="ana",
                source="gui",
            )  # fmt: skip
            for k in (50, 100, 150):
                h.save_progress(rid, reasoning=" ".join(reasoning.split()[:k]), answer="")
            h.finish_review(rid, status="done", reasoning=reasoning, answer="0",
                            verdict={"violation": 0}, stats={"eval_count": 500})  # fmt: skip

        times.append(timed(one))
    return statistics.median(times)


def measure(path: Path, maker: TextMaker, queries: list[str]) -> dict[str, float]:
    h = History.open(path)
    try:
        first_view = timed(partial(open_view, h, Filters()))  # first call after open
        search = [timed(partial(h.search, q, limit=100)) for q in queries]
        view = [timed(partial(open_view, h, Filters())) for _ in range(5)]
        views = (
            Filters(verdict="violation"),
            Filters(escalated=True),
            Filters(since="2024-06-10"),
            Filters(policy_id="spam", verdict="violation"),
        )
        filtered = [timed(partial(open_view, h, f)) for f in views]
        capped = [timed(partial(open_view, h, f, 10_000)) for f in views]
        filtered_search = [
            timed(partial(h.search, q, filters=Filters(verdict="violation"), limit=100))
            for q in queries
        ]
        deep = timed(lambda: h.list(offset=50_000 if h.count() > 50_000 else 0, limit=200))
        review_ms = api_review_ms(h, maker)
    finally:
        h.close()
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    quantiles = statistics.quantiles(search, n=20)
    return {
        "search_median": statistics.median(search),
        "search_p95": quantiles[18],
        "first_view": first_view,
        "view": statistics.median(view),
        "filtered_search_median": statistics.median(filtered_search),
        "filtered_search_p95": statistics.quantiles(filtered_search, n=20)[18],
        "filtered_view_max": max(filtered),
        "capped_view_max": max(capped),
        "deep_offset_page": deep,
        "review_ms": review_ms,
        "size_mb": size / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also grow to 1,000,000 reviews")
    parser.add_argument("--dir", type=Path, help="where to build (default: a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args()
    sizes = [10_000, 100_000] + ([1_000_000] if args.full else [])

    folder = Path(args.dir or tempfile.mkdtemp(prefix="bench-history-"))
    path = folder / "history.sqlite"
    if path.exists():
        sys.exit(f"{path} exists: choose an empty --dir.")
    rng = random.Random(SEED)
    vocab = make_vocabulary(rng)
    maker = TextMaker(rng, vocab)
    qrng = random.Random(SEED + 1)
    queries = [" ".join(qrng.sample(vocab[50:2000], qrng.choice((1, 2)))) for _ in range(50)]

    History.open(path).close()
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO policy_versions VALUES (?, ?, ?, ?, 'synthetic policy', '2025-01-01')",
        [(sha, pid, pid.title(), ver) for pid, ver, sha in POLICIES],
    )
    conn.commit()
    conn.close()

    t0 = datetime(2024, 6, 1, tzinfo=UTC)
    built, results = 0, {}
    print(f"building in {folder} (insert batches of {BATCH:,} rows, one transaction each)")
    try:
        for size in sizes:
            rate = bulk_insert(path, maker, built, size - built, t0)
            built = size
            m = measure(path, maker, queries)
            results[size] = m
            print(
                f"{size:>9,} reviews: insert {rate:,.0f}/s"
                f" | search median {m['search_median']:.1f} ms, p95 {m['search_p95']:.1f} ms"
                f" | search with a verdict filter median {m['filtered_search_median']:.1f} ms,"
                f" p95 {m['filtered_search_p95']:.1f} ms"
                f" | list(200)+count() first {m['first_view']:.1f} ms, then {m['view']:.1f} ms"
                f" | filtered list+count worst {m['filtered_view_max']:.1f} ms"
                f" (count capped at 10k: {m['capped_view_max']:.1f} ms)"
                f" | page at offset 50k {m['deep_offset_page']:.1f} ms"
                f" | one API review {m['review_ms']:.1f} ms | {m['size_mb']:,.0f} MB",
                flush=True,
            )
        base = results[10_000]
        for size in sizes[1:]:
            r = results[size]
            print(
                f"ratio {size:,} vs 10,000: search median"
                f" x{r['search_median'] / base['search_median']:.1f}"
                f", p95 x{r['search_p95'] / base['search_p95']:.1f}"
                f", list+count x{r['view'] / base['view']:.1f}"
                f", size x{r['size_mb'] / base['size_mb']:.1f}"
            )
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
