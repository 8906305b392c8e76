"""FakeOpenAI: a scripted, stdlib-only stand-in for an OpenAI-compatible server on 127.0.0.1.

It runs in a background thread of the test process (``with FakeOpenAI() as fake:``) and
speaks what vLLM's and llama.cpp's llama-server speak (`flavor`), including their failure
modes: SSE streams of `chat.completion.chunk` objects ending in `data: [DONE]`, reasoning in
`delta.reasoning` or `delta.reasoning_content` or leaked into `content` as harmony text,
the usage chunk of `stream_options.include_usage`, OpenAI-style error objects, 429/503 when
more requests come than its slots and queue hold, dropped and stalled streams.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import sys
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from .handler import Handler

Flavor = Literal["vllm", "llama.cpp", "bare"]
# Where the reasoning goes: current vLLM "reasoning", older vLLM and llama-server
# "reasoning_content", vLLM 0.10.x transitional "both" (same text twice), "harmony" (no
# reasoning parser: channel text with its special tokens in `content`), "bare-harmony" (the
# same with the special tokens stripped: "analysis…assistantfinal…"), "none" (not sent).
ReasoningField = Literal[
    "reasoning", "reasoning_content", "both", "harmony", "bare-harmony", "none"
]
DEFAULT_FIELD: dict[str, ReasoningField] = {
    "vllm": "reasoning",
    "llama.cpp": "reasoning_content",
    "bare": "reasoning",
}
DEFAULT_VERSION = {"vllm": "0.10.2", "llama.cpp": None, "bare": None}


@dataclass
class Scenario:
    """One scripted reply to one /v1/chat/completions request, consumed FIFO.

    With neither `reasoning` nor `content` the reply is the deterministic verdict of
    tests.fake_ollama.responder (reasoning that quotes the content and cites a rule).
    """

    reasoning: str = ""
    content: str = ""
    finish_reason: str = "stop"
    reasoning_field: ReasoningField | None = None  # None: the server's
    model: str | None = None  # the served model id to report (None: the server's)
    # An HTTP error instead of a stream, with an OpenAI-style error object.
    status: int | None = None
    error_message: str = "an error was encountered while running the model"
    error_type: str | None = None
    error_param: str | None = None
    error_code: int | str | None = None
    # An error event after this many tokens (then `data: [DONE]`, as vLLM does).
    error_after: int | None = None
    # Close the connection after this many tokens: no finish chunk, no [DONE].
    drop_after: int | None = None
    # Stream this many tokens, then nothing until `release` is set (then go on) or the server
    # stops (then drop): a stalled model, or a client killed mid-stream.
    stall_after: int | None = None
    release: threading.Event | None = None
    # Send the finish chunk (and usage) but end the body without `data: [DONE]`.
    no_done: bool = False
    first_token_delay: float = 0.0
    # Accept the request and send nothing (not even headers) until the server stops.
    hang: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the fake received it (headers with lowercase keys)."""

    method: str
    path: str
    json: Any
    headers: dict[str, str]


class QueueFull(Exception):
    """More requests wait than the queue holds."""


class Stopped(Exception):
    """The server stopped while the request waited for a slot."""


class Slots:
    """At most `parallel` generations at once; up to `max_queue` more wait in arrival order."""

    def __init__(self, parallel: int, max_queue: int) -> None:
        self._cond = threading.Condition()
        self.parallel = max(1, parallel)
        self.max_queue = max(0, max_queue)
        self.active = 0
        self._waiting: deque[object] = deque()
        self._stopped = False
        self.peak = 0  # the most generations that ran at once

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def acquire(self) -> None:
        with self._cond:
            if self._stopped:
                raise Stopped
            if self.active < self.parallel and not self._waiting:
                self._take()
                return
            if len(self._waiting) >= self.max_queue:
                raise QueueFull
            ticket = object()
            self._waiting.append(ticket)
            self._cond.notify_all()  # for wait_for(waiting=…)
            try:
                while not (
                    self._stopped or (self._waiting[0] is ticket and self.active < self.parallel)
                ):
                    self._cond.wait()
                if self._stopped:
                    raise Stopped
                self._take()
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()

    def _take(self) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self.active = max(0, self.active - 1)
            self._cond.notify_all()

    def wait_for(self, *, active: int | None = None, waiting: int | None = None) -> bool:
        """Block until that many generations run / wait (a test's sync point; 10 s at most)."""

        def reached() -> bool:
            return (active is None or self.active == active) and (
                waiting is None or len(self._waiting) == waiting
            )

        with self._cond:
            return self._cond.wait_for(reached, timeout=10)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeOpenAI

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup (slow on machines without network)."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
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
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        if not self.fake.stopping.is_set():
            super().handle_error(request, client_address)


class FakeOpenAI:
    """A faithful fake of an OpenAI-compatible server; see the module docstring.

    Knobs (attributes, changeable while it runs): `reasoning_field`, `token_rate` (tokens a
    second, paced on a deadline schedule), `busy_status` (429 or 503 past the queue),
    `require_token`, `loading` (/health and chat answer 503 "Loading model"),
    `schema_support` (False: 400 naming response_format), `refuse_params` (400 naming the
    first of them a request carries), `version` (None: no /version route).
    """

    def __init__(
        self,
        *,
        flavor: Flavor = "vllm",
        models: Sequence[str] = ("openai/gpt-oss-safeguard-20b",),
        reasoning_field: ReasoningField | None = None,
        token_rate: float = 2000.0,
        parallel: int = 1,
        max_queue: int = 64,
        busy_status: int = 429,
        require_token: str | None = None,
        version: str | Literal["default"] | None = "default",
        max_model_len: int = 131072,
        schema_support: bool = True,
        refuse_params: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.flavor: Flavor = flavor
        self.models = list(models)
        self.reasoning_field: ReasoningField = reasoning_field or DEFAULT_FIELD[flavor]
        self.token_rate = token_rate
        self.busy_status = busy_status
        self.require_token = require_token
        self.version = DEFAULT_VERSION[flavor] if version == "default" else version
        self.max_model_len = max_model_len
        self.schema_support = schema_support
        self.refuse_params = tuple(refuse_params)
        self.loading = False
        self.reasoning_tokens = 120
        self.host, self.port, self.url = host, port, ""
        self.requests: list[RecordedRequest] = []
        self.slots = Slots(parallel, max_queue)
        self.stopping = threading.Event()
        self.lock = threading.RLock()
        self.completions = 0  # streams that reached their end ([DONE] or its absence)
        self._scripts: deque[Scenario] = deque()
        self._connections: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> FakeOpenAI:
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
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, break open connections (streams end without [DONE])."""
        self.stopping.set()
        self.slots.stop()
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
        server.server_close()
        with self.lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(timeout=2)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self.lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # -- scripting and records ----------------------------------------------------------------
    def script(self, *scenarios: Scenario) -> None:
        """Queue scripted replies (any model)."""
        with self.lock:
            self._scripts.extend(scenarios)

    def next_scenario(self) -> Scenario | None:
        with self.lock:
            return self._scripts.popleft() if self._scripts else None

    def record(self, request: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(request)

    def requests_to(self, path: str) -> list[RecordedRequest]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    @property
    def chat_bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of every /v1/chat/completions request, in order."""
        return [r.json for r in self.requests_to("/v1/chat/completions")]

    def served_model(self, requested: str) -> str | None:
        """The model id that answers a request for `requested` (None: not served).

        llama-server serves its one model whatever name a request gives, and reports its own
        name (the alias, else the file name); vLLM and the rest serve only what they list.
        """
        if self.flavor == "llama.cpp":
            return self.models[0] if self.models else None
        return requested if requested in self.models else None
