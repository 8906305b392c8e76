"""The app's Ollama client reads streams in the exact shape Ollama writes them.

Each fixture in tests/fixtures/ollama_streams/ (see its README for the upstream sources) is
served byte for byte by a tiny HTTP server on 127.0.0.1 (a 200 `application/x-ndjson`
response, one HTTP chunk per line as Ollama flushes them), and `OllamaClient.classify` must
turn it into the right ThinkingDelta / AnswerDelta / Done events, or the right typed error.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop.core.prompt import build_request
from safeguard_desktop.engine.client import (
    AnswerDelta,
    Done,
    Event,
    OllamaClient,
    Stats,
    ThinkingDelta,
)
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.engine.errors import ConnectionDropped, EngineError, StreamFailed

STREAMS = Path(__file__).parent / "fixtures" / "ollama_streams"


@dataclass
class Replay:
    """What the replay server answers with, and the /api/chat bodies it received."""

    body: bytes = b""
    requests: list[Any] = field(default_factory=list)
    url: str = ""


class _ReplayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    replay: Replay

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/api/chat":
            self.send_error(404)
            return
        self.replay.requests.append(json.loads(raw))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in self.replay.body.splitlines(keepends=True):
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


@pytest.fixture
def replay() -> Iterator[Replay]:
    state = Replay()
    handler = type("Handler", (_ReplayHandler,), {"replay": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def classify(replay: Replay, body: bytes) -> tuple[list[Event], EngineError | None]:
    """Serve `body`, run one classify call, return its events and the error it raised."""
    replay.body = body
    request = build_request(
        system="# Policy\n\nP0 Fine. P2 Not fine.", user="hello", effort="low", num_ctx=4096
    )

    async def go() -> tuple[list[Event], EngineError | None]:
        client = OllamaClient(Endpoint(url=replay.url, timeout=10.0))
        events: list[Event] = []
        try:
            async for event in client.classify(request):
                events.append(event)
        except EngineError as exc:
            return events, exc
        finally:
            await client.aclose()
        return events, None

    events, error = asyncio.run(go())
    assert len(replay.requests) == 1
    sent = replay.requests[0]
    assert sent["stream"] is True and sent["think"] == "low"
    return events, error


def fixture_bytes(name: str) -> bytes:
    data = (STREAMS / name).read_bytes()
    assert data.endswith(b"\n") and b"\r" not in data
    return data


def deltas(events: list[Event]) -> list[tuple[str, str]]:
    return [
        ("thinking" if isinstance(e, ThinkingDelta) else "answer", e.text)
        for e in events
        if isinstance(e, ThinkingDelta | AnswerDelta)
    ]


def done_stats(events: list[Event]) -> Stats:
    assert isinstance(events[-1], Done), events
    assert sum(isinstance(e, Done) for e in events) == 1
    return events[-1].stats


def test_gpt_oss_thinking_then_answer_then_durations(replay: Replay) -> None:
    events, error = classify(replay, fixture_bytes("chat_gptoss_thinking.ndjson"))
    assert error is None
    assert deltas(events) == [("thinking", "Thinking..."), ("answer", "Answer")]
    stats = done_stats(events)
    assert stats.done_reason == "stop"
    assert (stats.total_duration, stats.load_duration) == (4883583458, 1334875)
    assert (stats.prompt_eval_count, stats.prompt_eval_duration) == (26, 342546000)
    assert (stats.eval_count, stats.eval_duration) == (282, 4535599000)
    assert stats.tokens_per_s == pytest.approx(282 / 4.535599)
    assert stats.first_token_s is not None and stats.first_token_s <= stats.wall_s


def test_answer_carried_by_the_done_chunk_is_not_lost(replay: Replay) -> None:
    events, error = classify(replay, fixture_bytes("chat_gptoss_answer_on_done.ndjson"))
    assert error is None
    assert deltas(events) == [("thinking", "Deep "), ("thinking", "thought"), ("answer", "Done")]
    assert isinstance(events[-2], AnswerDelta)  # the answer comes before Done
    stats = done_stats(events)
    assert stats.done_reason == "stop"
    assert (stats.eval_count, stats.eval_duration) == (18, 52479709)
    assert (stats.prompt_eval_count, stats.total_duration) == (11, 174560334)


def test_documented_stream_without_thinking_or_done_reason(replay: Replay) -> None:
    events, error = classify(replay, fixture_bytes("chat_docs_llama32.ndjson"))
    assert error is None
    assert deltas(events) == [("answer", "The")]
    stats = done_stats(events)
    assert stats.done_reason is None
    assert (stats.eval_count, stats.eval_duration) == (282, 4535599000)


def test_length_ending_keeps_the_partial_answer(replay: Replay) -> None:
    events, error = classify(replay, fixture_bytes("chat_length.ndjson"))
    assert error is None
    assert deltas(events) == [("answer", "partial")]
    stats = done_stats(events)
    assert stats.done_reason == "length"
    assert stats.eval_count == 0 and stats.tokens_per_s is None  # no metrics on that line


def test_error_line_in_a_200_stream_is_a_stream_failure(replay: Replay) -> None:
    events, error = classify(replay, fixture_bytes("chat_error_midstream.ndjson"))
    assert deltas(events) == [
        ("answer", " Yes"),
        ("answer", "."),
        ("answer", "I"),
        ("answer", "can"),
    ]
    assert not any(isinstance(e, Done) for e in events)
    assert isinstance(error, StreamFailed)
    assert error.detail == "an error was encountered while running the model"
    assert "an error was encountered while running the model" in str(error)


def test_stream_cut_before_its_done_chunk_is_a_dropped_connection(replay: Replay) -> None:
    whole = fixture_bytes("chat_gptoss_thinking.ndjson")
    cut = b"".join(whole.splitlines(keepends=True)[:-1])
    events, error = classify(replay, cut)
    assert deltas(events) == [("thinking", "Thinking..."), ("answer", "Answer")]
    assert isinstance(error, ConnectionDropped)
    assert "final chunk" in str(error)


def test_every_fixture_line_is_one_compact_json_object() -> None:
    files = sorted(STREAMS.glob("*.ndjson"))
    assert len(files) >= 5
    for path in files:
        for line in fixture_bytes(path.name).splitlines():
            obj = json.loads(line)
            assert isinstance(obj, dict) and ("error" in obj or "message" in obj), path.name
            # Go's json.Marshal: no spaces between tokens (none of the texts contain ", ").
            assert json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() == line
