"""`python -m tests.fake_ollama serve|-v`: the fake as a process, configured like `ollama serve`.

Environment: OLLAMA_HOST, OLLAMA_NUM_PARALLEL, OLLAMA_MAX_QUEUE, OLLAMA_MODELS,
OLLAMA_KEEP_ALIVE, OLLAMA_CONTEXT_LENGTH, plus test knobs FAKE_OLLAMA_MODELS (comma list),
FAKE_OLLAMA_TOKEN_RATE, FAKE_OLLAMA_CRASH_AFTER (seconds, then exit code 2),
FAKE_OLLAMA_STATE (JSON state file), FAKE_OLLAMA_VERSION, FAKE_OLLAMA_TOKEN (bearer token),
FAKE_OLLAMA_REASONING_TOKENS, FAKE_OLLAMA_PULL_RATE, FAKE_OLLAMA_ENV_DUMP (a file that
receives the OLLAMA_* variables the process saw, as JSON) and FAKE_OLLAMA_REQUEST_LOG (a file
that gets, appended and flushed before the request is answered, one line per /api/chat
request: its JSON body as received, re-serialized with json.dumps; `null` if it was not JSON).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TextIO

from .server import FakeOllama, RecordedRequest, parse_keep_alive

DEFAULT_VERSION = "0.12.10"
DEFAULT_PORT = 11434
REAL_COMMANDS = frozenset(
    ("create", "show", "run", "stop", "pull", "push", "signin", "list", "ps", "cp", "rm")
)
USAGE = """Large language model runner (fake for tests)

Usage:
  ollama [flags]
  ollama [command]

Available Commands:
  serve       Start ollama

Flags:
  -h, --help      help for ollama
  -v, --version   Show version information
"""


def parse_ollama_host(value: str | None) -> tuple[str, int]:
    """(host, port) from OLLAMA_HOST the way Ollama reads it ("h:p", "http://h:p", ":p")."""
    text = (value or "").strip()
    default_port = DEFAULT_PORT
    scheme, sep, hostport = text.partition("://")
    if not sep:
        hostport = text
    elif scheme == "http":
        default_port = 80
    elif scheme == "https":
        default_port = 443
    hostport = hostport.split("/", 1)[0]
    host, port = "127.0.0.1", default_port
    if hostport.startswith("["):
        inner, _, rest = hostport[1:].partition("]")
        host = inner or host
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif hostport.count(":") == 1:
        name, _, digits = hostport.partition(":")
        host = name or "127.0.0.1"
        if digits.isdigit():
            port = int(digits)
    elif hostport:
        host = hostport
    return host, port


def _loopback(host: str) -> str:
    """The fake only ever listens on loopback."""
    return host if host.startswith("127.") else "127.0.0.1"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw.lstrip("-").isdigit() else default


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    try:
        return float(raw) if raw else default
    except ValueError:
        return default


def _slog(message: str, **attrs: str) -> None:
    """A log line in the shape of Ollama's slog output."""
    stamp = datetime.now().astimezone().isoformat(timespec="milliseconds")
    extra = "".join(f" {k}={json.dumps(v)}" for k, v in attrs.items())
    print(
        f"time={stamp} level=INFO source=routes.go:1528 msg={json.dumps(message)}{extra}",
        file=sys.stderr,
    )


def chat_logger(stream: TextIO) -> Callable[[RecordedRequest], None]:
    """FakeOllama.on_record for FAKE_OLLAMA_REQUEST_LOG: each /api/chat body as a JSON line."""
    lock = threading.Lock()

    def log(request: RecordedRequest) -> None:
        if request.path != "/api/chat":
            return
        line = json.dumps(request.json, separators=(",", ":")) + "\n"
        with lock:
            stream.write(line)
            stream.flush()

    return log


def serve() -> int:
    """Run the fake in the foreground until SIGTERM/SIGINT (exit 0)."""
    env = {k: v for k, v in os.environ.items() if k.startswith("OLLAMA_")}
    dump = os.environ.get("FAKE_OLLAMA_ENV_DUMP")
    if dump:
        Path(dump).write_text(json.dumps(env, indent=1, sort_keys=True), encoding="utf-8")
    host, port = parse_ollama_host(os.environ.get("OLLAMA_HOST"))
    bind_host = _loopback(host)
    raw_models = os.environ.get("FAKE_OLLAMA_MODELS")
    models: Sequence[str] = (
        [m.strip() for m in raw_models.split(",") if m.strip()]
        if raw_models is not None
        else ("gpt-oss-safeguard:20b",)
    )
    models_dir = os.environ.get("OLLAMA_MODELS")
    state = os.environ.get("FAKE_OLLAMA_STATE")
    fake = FakeOllama(
        host=bind_host,
        port=port,
        token_rate=_env_float("FAKE_OLLAMA_TOKEN_RATE", 2000.0),
        parallel=_env_int("OLLAMA_NUM_PARALLEL", 1) or 1,
        max_queue=_env_int("OLLAMA_MAX_QUEUE", 512),
        models=models,
        version=os.environ.get("FAKE_OLLAMA_VERSION") or DEFAULT_VERSION,
        require_token=os.environ.get("FAKE_OLLAMA_TOKEN") or None,
        models_dir=Path(models_dir) if models_dir else None,
        state_file=Path(state) if state else None,
        log_stream=sys.stderr,
    )
    fake.reasoning_tokens = _env_int("FAKE_OLLAMA_REASONING_TOKENS", fake.reasoning_tokens)
    fake.pull_rate = _env_float("FAKE_OLLAMA_PULL_RATE", fake.pull_rate)
    fake.context_length = _env_int("OLLAMA_CONTEXT_LENGTH", fake.context_length)
    if os.environ.get("OLLAMA_KEEP_ALIVE"):
        fake.keep_alive = parse_keep_alive(os.environ["OLLAMA_KEEP_ALIVE"], fake.keep_alive)
    try:
        fake.bind()
    except OSError as exc:
        reason = (
            "address already in use"
            if exc.errno == errno.EADDRINUSE
            else (exc.strerror or str(exc)).lower()
        )
        print(f"Error: listen tcp {host}:{port}: bind: {reason}", file=sys.stderr)
        return 1

    request_log = os.environ.get("FAKE_OLLAMA_REQUEST_LOG")
    try:
        log_file = open(request_log, "a", encoding="utf-8") if request_log else None  # noqa: SIM115
    except OSError as exc:
        print(f"Error: FAKE_OLLAMA_REQUEST_LOG: {exc}", file=sys.stderr)
        return 1
    if log_file is not None:
        fake.on_record = chat_logger(log_file)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    crash_after = _env_float("FAKE_OLLAMA_CRASH_AFTER", 0.0)
    if crash_after > 0:
        timer = threading.Timer(crash_after, os._exit, args=(2,))
        timer.daemon = True
        timer.start()
    _slog("server config", env="map[" + " ".join(f"{k}:{v}" for k, v in sorted(env.items())) + "]")
    _slog(f"Listening on {bind_host}:{fake.port} (version {fake.version})")
    sys.stderr.flush()
    try:
        fake.start()
        while not stop.wait(0.2):
            pass
        fake.stop()
    finally:
        if log_file is not None:
            with fake.lock:  # a straggling handler thread may still record
                fake.on_record = None
            log_file.close()
    return 0


def version() -> int:
    """Print what `ollama -v` prints (to stdout, warnings included), exit 0."""
    client = os.environ.get("FAKE_OLLAMA_VERSION") or DEFAULT_VERSION
    host, port = parse_ollama_host(os.environ.get("OLLAMA_HOST"))
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server = ""
    try:
        with urllib.request.urlopen(f"http://{netloc}/api/version", timeout=3) as response:
            server = str(json.loads(response.read()).get("version", ""))
    except (OSError, ValueError, urllib.error.URLError):
        print("Warning: could not connect to a running Ollama instance")
    if server:
        print(f"ollama version is {server}")
    if server != client:
        print(f"Warning: client version is {client}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point shared by `python -m tests.fake_ollama` and tests/bin/ollama."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command = args[0]
    if command in ("-v", "--version"):
        return version()
    if command in ("serve", "start"):
        return serve()
    if command in REAL_COMMANDS:
        print(f'Error: the fake ollama does not implement "{command}"', file=sys.stderr)
    elif command.startswith("-"):
        print(f"Error: unknown flag: {command}", file=sys.stderr)
    else:
        print(f'Error: unknown command "{command}" for "ollama"', file=sys.stderr)
    return 1
