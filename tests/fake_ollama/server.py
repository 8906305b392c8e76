"""FakeOllama: a scripted, stdlib-only stand-in for `ollama serve` on 127.0.0.1.

It runs in a background thread of the test process (``with FakeOllama() as fake:``) or as a
process (``python -m tests.fake_ollama serve``), and speaks the HTTP API the real `ollama`
Python client and plain httpx use, including its failure modes.
"""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from .handler import Handler
from .registry import KNOWN_SIZES, ModelEntry, Registry, make_entry, normalize
from .slots import Slots

DEFAULT_PULLABLE = ("gpt-oss-safeguard:20b", "gpt-oss-safeguard:120b", "gpt-oss-safeguard:latest")
_DURATION = re.compile(r"(-?\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass
class Scenario:
    """One scripted reply to one /api/chat (or /api/generate) request, consumed FIFO."""

    thinking: str = ""
    content: str = ""
    done_reason: str = "stop"
    error_after: int | None = None
    error_message: str = "an error was encountered while running the model"
    drop_after: int | None = None
    status: int | None = None
    first_token_delay: float = 0.0
    hang: bool = False
    # Stream this many tokens, then send nothing more until the server stops (a model that
    # stalls mid-answer, or a client killed mid-stream: the partial stream is all there is).
    stall_after: int | None = None


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the fake received it (headers with lowercase keys)."""

    method: str
    path: str
    json: Any
    headers: dict[str, str]


@dataclass
class LoadedModel:
    """A model held in (fake) VRAM, as /api/ps reports it."""

    entry: ModelEntry
    context_length: int
    expires_at: datetime | None  # None: kept forever (keep_alive < 0)
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def parse_keep_alive(value: Any, default: float | None) -> float | None:
    """Seconds to keep a model loaded; None means forever, 0 means unload now."""
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return default
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts:
                return default
            seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    return None if seconds < 0 else seconds


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeOllama

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup (slow on machines without network)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Like ThreadingMixIn, but threads are tracked so stop() can wait for them."""
        thread = threading.Thread(
            target=self.process_request_thread, args=(request, client_address), daemon=True
        )
        self.fake._threads.add(thread)
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.fake._threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client closing an idle keep-alive connection is normal, not a fake bug.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        if not self.fake.stopping.is_set():
            super().handle_error(request, client_address)


class FakeOllama:
    """A faithful fake of the Ollama server; see the module docstring."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token_rate: float = 2000.0,
        parallel: int = 1,
        max_queue: int = 512,
        models: Sequence[str] = ("gpt-oss-safeguard:20b",),
        version: str = "0.12.10",
        require_token: str | None = None,
        models_dir: Path | None = None,
        state_file: Path | None = None,
        log_stream: TextIO | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.url = ""
        self.version = version
        self.require_token = require_token
        self.token_rate = token_rate
        self.reasoning_tokens = 120
        self.pull_rate = 1e12
        self.pull_steps = 10
        # A pull can be held when its model layer reaches this fraction, until the test calls
        # release_pull(): a cancel then lands mid-pull however slow the machine is.
        self.pull_hold_at: float | None = None
        self.pull_released = threading.Event()
        self.load_seconds = 0.0
        self.keep_alive: float | None = 300.0
        self.context_length = 4096
        self.log_stream = log_stream
        self.pullable: dict[str, int] = {n: KNOWN_SIZES[n] for n in DEFAULT_PULLABLE}
        self.requests: list[RecordedRequest] = []
        # Called with each request as it is recorded, under the lock (standalone's request log).
        self.on_record: Callable[[RecordedRequest], None] | None = None
        self.loaded: dict[str, LoadedModel] = {}
        self.registry = Registry(state_file=state_file, models_dir=models_dir)
        self.slots = Slots(parallel, max_queue)
        self.stopping = threading.Event()
        self.lock = threading.RLock()
        self._scripts: dict[str | None, deque[Scenario]] = {}
        self._connections: set[socket.socket] = set()
        self.connections_accepted = 0  # TCP connections the fake accepted so far
        self._threads: set[threading.Thread] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for name in models:
            if self.registry.get(name) is None:
                self.add_model(name)

    # -- lifecycle ----------------------------------------------------------------------------
    def bind(self) -> FakeOllama:
        """Open the listening socket (OSError if the port is taken) without serving yet."""
        server = _Server((self.host, self.port), Handler, bind_and_activate=False)
        server.fake = self
        try:
            server.server_bind()
            server.server_activate()
        except OSError:
            server.server_close()
            raise
        self._server = server
        self.port = server.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        return self

    def start(self) -> FakeOllama:
        """Bind and serve in a background thread; returns self for chaining."""
        if self._server is None:
            self.bind()
        assert self._server is not None
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def release_pull(self) -> None:
        """Let a pull held at `pull_hold_at` go on (and every later one)."""
        self.pull_released.set()

    def stop(self) -> None:
        """Stop serving, break open connections and wait briefly for handler threads.

        The listening socket closes first, as when a server dies: a client whose stream is
        broken here and that asks again gets its connection refused, not answered."""
        server, self._server = self._server, None
        if server is not None:
            if self._thread is not None:
                server.shutdown()
                self._thread.join(timeout=5)
            server.server_close()
        self.stopping.set()
        self.slots.stop()
        if server is None:
            return
        with self.lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(timeout=2)

    def __enter__(self) -> FakeOllama:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _track_connection(self, conn: socket.socket, *, add: bool) -> None:
        with self.lock:
            if add:
                self._connections.add(conn)
                self.connections_accepted += 1
            else:
                self._connections.discard(conn)

    # -- knobs --------------------------------------------------------------------------------
    @property
    def parallel(self) -> int:
        return self.slots.parallel

    @parallel.setter
    def parallel(self, value: int) -> None:
        self.slots.parallel = value

    @property
    def max_queue(self) -> int:
        return self.slots.max_queue

    @max_queue.setter
    def max_queue(self, value: int) -> None:
        self.slots.max_queue = value

    # -- scripting ----------------------------------------------------------------------------
    def script(self, *scenarios: Scenario, model: str | None = None) -> None:
        """Queue scripted replies, for one model or (model=None) for any model."""
        key = normalize(model) if model is not None else None
        with self.lock:
            self._scripts.setdefault(key, deque()).extend(scenarios)

    def next_scenario(self, model: str) -> Scenario | None:
        """The next scripted reply for this model: its own queue first, then the global one."""
        with self.lock:
            for key in (normalize(model), None):
                queue = self._scripts.get(key)
                if queue:
                    return queue.popleft()
        return None

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)
            if self.on_record is not None:
                self.on_record(request)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """The recorded requests for one path, e.g. "/api/chat"."""
        with self.lock:
            return [r for r in self.requests if r.path == path]

    # -- models -------------------------------------------------------------------------------
    def add_model(
        self,
        name: str,
        size: int | None = None,
        digest: str | None = None,
        capabilities: Sequence[str] = ("completion", "thinking"),
        family: str = "gptoss",
    ) -> None:
        """Install a model (size defaults to the real size of known gpt-oss tags).

        `family` "gptoss" gets gpt-oss behaviour (harmony: think levels, always reasons); any
        other family thinks only when `think` is unset or true and rejects levels.
        """
        self.registry.add(make_entry(name, size, digest, capabilities, family))

    def remove_model(self, name: str) -> None:
        """Uninstall a model (and unload it)."""
        self.registry.remove(name)
        with self.lock:
            self.loaded.pop(normalize(name), None)

    @property
    def models(self) -> list[str]:
        """Names of the installed models."""
        with self.registry.lock:
            return sorted(self.registry.models)

    def load(self, entry: ModelEntry, keep_alive: Any, num_ctx: Any) -> bool:
        """Mark a model loaded (or refresh its expiry); True when it was not loaded before."""
        seconds = parse_keep_alive(keep_alive, self.keep_alive)
        now = datetime.now(UTC)
        expires = None if seconds is None else now + timedelta(seconds=seconds)
        ctx = num_ctx if isinstance(num_ctx, int) and num_ctx > 0 else self.context_length
        with self.lock:
            current = self.loaded.get(entry.name)
            fresh = current is None or current.expired(now)
            if fresh or current is None or current.context_length != ctx:
                self.loaded[entry.name] = LoadedModel(entry, ctx, expires)
            else:
                current.expires_at = expires
        return fresh

    def unload(self, name: str) -> None:
        with self.lock:
            self.loaded.pop(normalize(name), None)

    def running(self) -> list[LoadedModel]:
        """Loaded models that have not expired (what /api/ps lists)."""
        now = datetime.now(UTC)
        with self.lock:
            for name in [n for n, m in self.loaded.items() if m.expired(now)]:
                del self.loaded[name]
            return list(self.loaded.values())
