"""Helpers shared by the start-up benches: the fake Ollama as its own process, the children's
environment, the machine's load, and min / median / max.

Not a bench itself (bench_startup.py and bench_cli.py import it).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READY_SECONDS = 30.0  # bound on the fake's start-up (a hang, not a timing claim)
STOP_SECONDS = 10.0


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


def child_env(pycache: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a measured child: no Ollama or test knobs from ours, bytecode cached.

    A user's install has its bytecode compiled (pip does it), so the children may write
    theirs, into `pycache` (PYTHONPYCACHEPREFIX, not the repository): the unmeasured warm-up
    run fills it. The keyring is left to its own detection, as a user has it. Offscreen
    unless a display is set.
    """
    drop = ("OLLAMA_", "FAKE_OLLAMA_", "SAFEGUARD_", "PYTHON_KEYRING_BACKEND")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    if not env.get("DISPLAY") and not env.get("WAYLAND_DISPLAY"):
        env["QT_QPA_PLATFORM"] = "offscreen"
    env.update(extra or {})
    return env


@contextlib.contextmanager
def fake_ollama(
    stderr: Path, env: Mapping[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m tests.fake_ollama serve` on a free port; yields its URL and process.

    Its stderr goes to a file (a pipe nobody reads would fill up and block it).
    """
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OLLAMA_", "FAKE_OLLAMA_"))}
    base.update(env or {})
    for _ in range(3):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        base["OLLAMA_HOST"] = f"127.0.0.1:{port}"
        with stderr.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.fake_ollama", "serve"],
                cwd=REPO,
                env=base,
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
        yield url, proc
    finally:
        stop_process(proc)


def busy_cpus() -> float | None:
    """CPU seconds used so far by the whole machine (all but idle and iowait); Linux only."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class LoadMeter:
    """How busy the machine was during the bench: load averages and CPUs kept busy."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = busy_cpus()

    def report(self) -> str:
        cpus = os.cpu_count() or 1
        one, five, _ = os.getloadavg()
        text = f"machine: {cpus} CPUs, load average {one:.2f} (1 min) {five:.2f} (5 min)"
        cpu1 = busy_cpus()
        elapsed = time.monotonic() - self.t0
        if self.cpu0 is not None and cpu1 is not None and elapsed > 0:
            text += f", {(cpu1 - self.cpu0) / elapsed:.2f} CPUs busy on average (bench included)"
        return text


def load_average() -> str:
    """The machine's load averages now, for a bench's header."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"


def spread(values: list[float], fmt: str = ".3f") -> str:
    """min / median / max."""
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))
