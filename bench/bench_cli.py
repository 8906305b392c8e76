"""`safeguard-desktop classify` against a bare `ollama.Client().chat` process, same request.

Both are fresh processes talking to one fake Ollama that runs in its own process (`python -m
tests.fake_ollama serve`, as real Ollama is a separate program). The CLI runs as a user runs
it, `python -m safeguard_desktop classify --policy harassment --text ...` (the console
script's code, from this checkout), with the history on (a temporary data folder whose
history already holds reviews) and the keyring left to its own backend detection. The bare
process imports `ollama`, makes an `ollama.Client` and sends the very request body the CLI
sent in the warm-up run (as the fake logged it, FAKE_OLLAMA_REQUEST_LOG), streaming it to its
end and printing the answer. Each is timed from just before its spawn to its exit.

One unmeasured warm-up run of each comes first (bytecode caches into a temporary
PYTHONPYCACHEPREFIX, as a pip install has them compiled; file cache). Then `--repeats`
pairs, alternating. Ratio CLI / bare per pair, min / median / max; "met" is judged on the
median. Target <= 1.15.

    python3 bench/bench_cli.py [--repeats 3] [--rate 1000] [--tokens 400] [--reviews 200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_startup import seed_history
from fake_process import REPO, LoadMeter, child_env, fake_ollama, spread

TARGET = 1.15
CHILD_SECONDS = 120.0  # bound on one child (a hang, not a timing claim)
TEXT = "nobody at school likes you, just leave and never come back"
CHAT_KEYS = ("model", "messages", "think", "format", "options", "keep_alive", "stream")
BARE = """
import json, sys
import ollama

request = json.loads(open(sys.argv[2], encoding="utf-8").read())
client = ollama.Client(host=sys.argv[1])
answer = []
for chunk in client.chat(**request):
    if chunk.message.content:
        answer.append(chunk.message.content)
print("".join(answer))
"""


def cli_command(data: Path) -> list[str]:
    """`python -m safeguard_desktop classify ...`: the code of this checkout (what the console
    script runs, without depending on which checkout is installed)."""
    return [
        *(sys.executable, "-m", "safeguard_desktop", "--data-dir", str(data)),
        *("classify", "--policy", "harassment", "--text", TEXT),
    ]


def timed(command: list[str], env: dict[str, str], log: Path) -> float:
    """Seconds from just before the spawn to the exit; the exit code must be a verdict's."""
    with log.open("ab") as err:
        t0 = time.perf_counter()
        proc = subprocess.run(
            command,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            timeout=CHILD_SECONDS,
            check=False,
        )
        elapsed = time.perf_counter() - t0
    if proc.returncode not in (0, 3):  # 3: the fake's answer read as unparsed is still a run
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        raise RuntimeError(f"{command[:3]}... exited {proc.returncode}:\n{tail}")
    return elapsed


def last_chat(log: Path) -> dict[str, object]:
    lines = [line for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    body = json.loads(lines[-1])
    return {k: body[k] for k in CHAT_KEYS if k in body}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rate", type=float, default=1000.0, help="fake tokens/s")
    ap.add_argument("--tokens", type=int, default=400, help="reasoning tokens per answer")
    ap.add_argument("--reviews", type=int, default=200, help="reviews in the history")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    meter = LoadMeter()
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        requests = root / "chat-requests.jsonl"
        fake_env = {
            "FAKE_OLLAMA_TOKEN_RATE": repr(float(args.rate)),
            "FAKE_OLLAMA_REASONING_TOKENS": str(args.tokens),
            "FAKE_OLLAMA_REQUEST_LOG": str(requests),
        }
        with fake_ollama(root / "seed-ollama.log", {"FAKE_OLLAMA_TOKEN_RATE": "100000"}) as (
            seed_url,
            _seed,
        ):
            asyncio.run(seed_history(data, seed_url, args.reviews))
        with fake_ollama(root / "fake-ollama.log", fake_env) as (url, _proc):
            env = child_env(root / "pycache", {"OLLAMA_HOST": url})
            log = root / "children.log"
            cli = cli_command(data)
            timed(cli, env, log)  # warm-up; its request is the bare side's
            body = root / "request.json"
            body.write_text(json.dumps(last_chat(requests)), encoding="utf-8")
            bare = [sys.executable, "-c", BARE, url, str(body)]
            timed(bare, env, log)
            bare_t: list[float] = []
            cli_t: list[float] = []
            for _ in range(args.repeats):
                bare_t.append(timed(bare, env, log))
                cli_t.append(timed(cli, env, log))
    ratios = [c / b for c, b in zip(cli_t, bare_t, strict=True)]
    print(
        f"classify CLI: {args.repeats} repeats (min / median / max), {args.tokens} reasoning "
        f"tokens at {args.rate:.0f} tokens/s, history on ({args.reviews} reviews before), "
        f"fake Ollama in its own process"
    )
    print(f"  bare ollama.Client().chat process  s  {spread(bare_t)}")
    print(f"  safeguard-desktop classify         s  {spread(cli_t)}")
    extra = [c - b for c, b in zip(cli_t, bare_t, strict=True)]
    print(f"  ratio CLI/bare: {spread(ratios, '.2f')}   (target <= {TARGET})"
          f"  {'met' if statistics.median(ratios) <= TARGET else 'NOT met'} (median)"
          f"   extra s {spread(extra)}")  # fmt: skip
    print(f"  {meter.report()}")


if __name__ == "__main__":
    main()
