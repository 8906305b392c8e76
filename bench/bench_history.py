"""How the review history scales: search, opening the History view, progress saves.

Grows one synthetic history (Zipf-distributed words; bulk SQL through the real schema and
its triggers, one transaction per 10,000 rows) to 10,000 then 100,000 reviews (and
1,000,000 with --full). At each size, 3 repeats, min / median / max:

- search p95, warm: 50 queries of 1-2 words plus 30 word beginnings of 2-4 letters (the last
  word is a prefix, as the moderator types), each through History.search(limit=200) as the
  History view asks for a page. Baseline, same file, same run: the same queries as the search
  before issue 12 ran them (every match ranked by bm25, then the page read);
- the first search after the file is opened (SQLite's cache empty; the OS cache is warm: a
  cold disk is slower still);
- the same searches with a verdict filter, and the capped match count (10,001);
- opening the History view: list(200) + count, without and with filters; the view counts a
  filter up to 10,001 (baseline: the uncapped count, as before);
- a streaming review's progress saves: start, a save every 1,000 characters of a 16,000-
  character reasoning (each an FTS delete + insert of the row), finish: median and max per
  save. Baseline: the same delete + insert into an FTS table of the same columns without
  prefix indexes, in the same file.

Target: search p95 under 50 ms, warm, at the largest size.

    python3 bench/bench_history.py [--full] [--repeats 3] [--dir DIR] [--keep]
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
from itertools import accumulate
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fake_process import load_average, spread

from safeguard_desktop.store.db import format_utc
from safeguard_desktop.store.history import Filters, History
from safeguard_desktop.store.records import SUMMARY_COLUMNS, fts_query

BATCH = 10_000
SEED = 20251128
TARGET_MS = 50.0
COUNT_CAP = 10_001  # as the History view counts a filter (ui/history_model.py)
PAGE = 200
POLICIES = [("spam", "2", "a" * 64), ("hate", "1", "b" * 64), ("self-harm", "3", "c" * 64)]
_SYLLABLES = ("ka", "lo", "mi", "re", "tu", "sa", "ne", "po", "di", "va", "ru", "te", "bo",
              "li", "fa", "gu", "ze", "ho", "ni", "ma", "so", "pe", "ta", "ci")  # fmt: skip
# The search before issue 12: every match ranked by bm25, then the page's rows read.
OLD_SEARCH = (
    "SELECT f.rowid FROM reviews_fts f WHERE reviews_fts MATCH ? "
    "ORDER BY bm25(reviews_fts), f.rowid DESC LIMIT ? OFFSET 0"
)
PLAIN_FTS = (
    "CREATE VIRTUAL TABLE IF NOT EXISTS bench_plain_fts USING fts5 (content_text, reasoning, "
    "rationale, notes, content = 'reviews', content_rowid = 'id', "
    "tokenize = 'unicode61 remove_diacritics 2')"
)


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
    """Rows of finished reviews. `escalated` stays 0: it follows the decision trail (a
    trigger refuses anything else), so escalations are added as decisions afterwards."""
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
            '{"eval_count": 600}', None,
        )  # fmt: skip


INSERT = (
    "INSERT INTO reviews (created_at, heartbeat_at, finished_at, status, content_json, "
    "content_text, content_kind, source, policy_sha256, policy_id, policy_version, model, "
    "model_digest, ollama_version, host, effort, num_ctx, seed, temperature, moderator, "
    "reasoning, answer, verdict_json, verdict_label, category, rule_ids, confidence, rationale, "
    f"stats_json, error) VALUES ({', '.join('?' * 30)})"
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


def escalate_some(path: Path, rng: random.Random, start: int, end: int) -> None:
    """One review in 1,000 escalated, through the API (sealed decisions): a rare filter."""
    with History.open(path) as h:
        for review_id in rng.sample(range(start + 1, end + 1), max(1, (end - start) // 1000)):
            h.add_decision(review_id, action="escalate", moderator="ana")


def timed(fn: Callable[[], object]) -> float:
    began = time.perf_counter()
    fn()
    return (time.perf_counter() - began) * 1000


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def old_search(conn: sqlite3.Connection, text: str) -> list[sqlite3.Row]:
    match = fts_query(text, min_prefix=1)  # as before: every last word a prefix
    ids = [r[0] for r in conn.execute(OLD_SEARCH, (match, PAGE))]
    return conn.execute(
        f"SELECT {SUMMARY_COLUMNS} FROM reviews r WHERE r.id IN ({', '.join('?' * len(ids))})",
        ids,
    ).fetchall()


def progress_saves(h: History, maker: TextMaker, path: Path) -> tuple[list[float], list[float]]:
    """One streaming review as the app writes it: ms per save, and per baseline save."""
    reasoning = maker.words(3200)[:16_000]
    rid = h.start_review(
        content={"text": "hello"}, content_text=maker.words(60), content_kind="message",
        policy_sha256=POLICIES[0][2], policy_id="spam", policy_version="2", policy_title="Spam",
        policy_text="policy", model="gpt-oss-safeguard:20b", effort="medium", num_ctx=16384,
        seed=7, temperature=None, moderator="ana", source="gui",
    )  # fmt: skip
    cuts = range(1000, len(reasoning) + 1, 1000)
    saves = [
        timed(lambda k=k: h.save_progress(rid, reasoning=reasoning[:k], answer=""))  # type: ignore[misc]
        for k in cuts
    ]
    h.finish_review(rid, status="done", reasoning=reasoning, answer="0",
                    verdict={"violation": 0}, stats={"eval_count": 4000})  # fmt: skip
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(PLAIN_FTS)
        base, before = [], ""
        for k in cuts:

            def save(k: int = k, before: str = before) -> None:
                conn.execute("BEGIN IMMEDIATE")
                if before:
                    conn.execute(
                        "INSERT INTO bench_plain_fts (bench_plain_fts, rowid, content_text, "
                        "reasoning, rationale, notes) VALUES ('delete', ?, '', ?, NULL, '')",
                        (rid, before),
                    )
                conn.execute(
                    "INSERT INTO bench_plain_fts (rowid, content_text, reasoning, rationale, "
                    "notes) VALUES (?, '', ?, NULL, '')",
                    (rid, reasoning[:k]),
                )
                conn.execute("COMMIT")

            base.append(timed(save))
            before = reasoning[:k]
        conn.execute("DROP TABLE bench_plain_fts")
    finally:
        conn.close()
    return saves, base


def queries(vocab: list[str]) -> list[str]:
    rng = random.Random(SEED + 1)
    words = [" ".join(rng.sample(vocab[50:2000], rng.choice((1, 2)))) for _ in range(50)]
    starts = []
    for word in rng.sample([w for w in vocab[:400] if len(w) >= 4], 30):
        starts.append(word[: rng.choice((2, 3, 4))])
    return words + starts


def measure(path: Path, maker: TextMaker, qs: list[str], repeat: int) -> dict[str, float]:
    violation = Filters(verdict="violation")
    views = (
        Filters(verdict="violation"),
        Filters(escalated=True),
        Filters(since="2024-06-10"),
        Filters(policy_id="spam", verdict="violation"),
    )
    # First search after opening: SQLite's page cache starts empty.
    with History.open(path) as h:
        first = timed(lambda: h.search(qs[(repeat * 7) % len(qs)], limit=PAGE))
    with History.open(path) as h:
        search = [timed(lambda q=q: h.search(q, limit=PAGE)) for q in qs]  # type: ignore[misc]
        filtered = [timed(lambda q=q: h.search(q, filters=violation, limit=PAGE)) for q in qs]  # type: ignore[misc]  # fmt: skip
        counted = [timed(lambda q=q: h.count_matches(q, violation, cap=COUNT_CAP)) for q in qs]  # type: ignore[misc]  # fmt: skip
        view = timed(lambda: (h.list(limit=PAGE), h.count()))
        capped = [
            timed(lambda f=f: (h.list(filters=f, limit=PAGE), h.count(f, cap=COUNT_CAP)))  # type: ignore[misc]
            for f in views
        ]
        uncapped = [
            timed(lambda f=f: (h.list(filters=f, limit=PAGE), h.count(f)))  # type: ignore[misc]
            for f in views
        ]
        saves, plain = progress_saves(h, maker, path)
    conn = sqlite3.connect(path)
    try:
        old = [timed(lambda q=q: old_search(conn, q)) for q in qs]  # type: ignore[misc]
    finally:
        conn.close()
    return {
        "search_p95": p95(search),
        "search_median": statistics.median(search),
        "old_p95": p95(old),
        "first": first,
        "filtered_p95": p95(filtered),
        "count_p95": p95(counted),
        "view": view,
        "capped_max": max(capped),
        "uncapped": max(uncapped),
        "save_median": statistics.median(saves),
        "save_max": max(saves),
        "plain_median": statistics.median(plain),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also grow to 1,000,000 reviews")
    parser.add_argument("--repeats", type=int, default=3)
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
    qs = queries(vocab)

    History.open(path).close()
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO policy_versions VALUES (?, ?, ?, ?, 'synthetic policy', '2025-01-01')",
        [(sha, pid, pid.title(), ver) for pid, ver, sha in POLICIES],
    )
    conn.commit()
    conn.close()

    t0 = datetime(2024, 6, 1, tzinfo=UTC)
    built = 0
    print(
        f"history bench in {folder}: {len(qs)} searches per repeat (50 of 1-2 words, 30 word "
        f"beginnings of 2-4 letters), page {PAGE}, {args.repeats} repeats (min / median / max)"
    )
    print(f"machine load at start: {load_average()}")
    try:
        for size in sizes:
            rate = bulk_insert(path, maker, built, size - built, t0)
            escalate_some(path, rng, built, size)
            built = size
            runs = [measure(path, maker, qs, i) for i in range(args.repeats)]
            size_mb = sum(p.stat().st_size for p in folder.glob(path.name + "*")) / 1e6

            def col(key: str, runs: list[dict[str, float]] = runs) -> list[float]:
                return [r[key] for r in runs]

            def ms(key: str) -> str:
                return f"{spread(col(key), '.1f')} ms"

            ratio = [a / b for a, b in zip(col("search_p95"), col("old_p95"), strict=True)]
            print(f"{size:>9,} reviews (bulk insert {rate:,.0f}/s, {size_mb:,.0f} MB)")
            for line in (
                f"search p95, warm                    {ms('search_p95')}"
                f"   (median {ms('search_median')})",
                f"before: bm25 over every match, p95  {ms('old_p95')}"
                f"   ratio now/before {spread(ratio, '.3f')}",
                f"first search after opening          {ms('first')}",
                f"search with a verdict filter, p95   {ms('filtered_p95')}"
                f"   its match count (capped at {COUNT_CAP:,}), p95 {ms('count_p95')}",
                f"History view, list(200) + count     {ms('view')}",
                f"  filtered, worst of 4 filters      {ms('capped_max')}"
                f"   (count not capped, as before: {ms('uncapped')})",
                f"progress save (FTS delete+insert)   median {ms('save_median')},"
                f" max {ms('save_max')}",
                f"  same FTS work, no prefix indexes  median {ms('plain_median')}",
            ):
                print("  " + line)
            print(f"  machine load: {load_average()}")
            if size == sizes[-1]:
                ratios = [v / TARGET_MS for v in col("search_p95")]
                verdict = "met" if max(ratios) < 1 else "NOT met"
                print(
                    f"ratio search p95 / {TARGET_MS:.0f} ms at {size:,} reviews: "
                    f"{spread(ratios, '.3f')}   (target < 1) -> {verdict}"
                )
    finally:
        if not args.keep and args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
