"""The OpenAI-compatible backend against the fake vLLM / llama-server: streams in each
reasoning spelling, harmony split back, effort and schema as sent, every error as a typed
error, discovery and health, and a real `Reviewer` run end to end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop import egress
from safeguard_desktop.core.content import from_text
from safeguard_desktop.core.policy import resolve_policy
from safeguard_desktop.core.prompt import VERDICT_SCHEMA, ChatRequest, build_request
from safeguard_desktop.core.verdict import parse_verdict
from safeguard_desktop.engine import backend
from safeguard_desktop.engine.client import AnswerDelta, Done, Event, OllamaClient, ThinkingDelta
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.engine.errors import (
    ConnectionDropped,
    EngineError,
    ModelMissing,
    QueueFull,
    ServerError,
    ServerUnreachable,
    StreamFailed,
    Unauthorized,
)
from safeguard_desktop.engine.openai_client import (
    OpenAIClient,
    chat_body,
    effort_system,
    split_base,
)
from safeguard_desktop.engine.openai_errors import (
    ContextExceeded,
    NotOpenAICompatible,
    OpenAIQueueFull,
    UnsupportedParameter,
    read_problem,
)
from safeguard_desktop.engine.openai_stream import HarmonySplitter, SSEDecoder, delta_texts
from safeguard_desktop.services.review import Reviewer, ReviewOptions
from safeguard_desktop.store.history import History
from tests.fake_ollama import FakeOllama, tokenize
from tests.fake_openai import FakeOpenAI, Scenario

MODEL = "openai/gpt-oss-safeguard-20b"
SPAM = "# Spam Policy\nSP0 Ordinary messages. SP2.a Offers that push the reader to buy.\n"
REASONING = 'The content says "buy now". It pushes the reader to buy. This violates SP2.a.'
JSON_ANSWER = (
    '{"violation": 1, "policy_category": "spam", "rule_ids": ["SP2.a"], "confidence": "high"}'
)
FIELDS = ["reasoning", "reasoning_content", "both", "harmony", "bare-harmony"]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(token_rate=20_000) as server:
        yield server


def request(model: str = MODEL, **kwargs: Any) -> ChatRequest:
    options: dict[str, Any] = {"effort": "medium", "seed": 42, "temperature": 0.0}
    options.update(kwargs)
    return build_request(system=SPAM, user="buy now, cheap watches", model=model, **options)


def endpoint(fake: FakeOpenAI, **kwargs: Any) -> Endpoint:
    return Endpoint(fake.url, **kwargs)


async def collect(stream: AsyncIterator[Event]) -> list[Event]:
    async with contextlib.aclosing(stream):  # type: ignore[type-var]
        return [event async for event in stream]


def classify(
    fake: FakeOpenAI, req: ChatRequest | None = None, *, client: OpenAIClient | None = None
) -> list[Event]:
    async def go() -> list[Event]:
        own = client or OpenAIClient(endpoint(fake))
        try:
            return await collect(own.classify(req or request()))
        finally:
            if client is None:
                await own.aclose()

    return asyncio.run(go())


def fails(fake: FakeOpenAI, req: ChatRequest | None = None, **kwargs: Any) -> EngineError:
    partial: list[Event] = []

    async def go() -> None:
        client = OpenAIClient(endpoint(fake, **kwargs))
        try:
            async for event in client.classify(req or request()):
                partial.append(event)
        finally:
            await client.aclose()

    with pytest.raises(EngineError) as caught:
        asyncio.run(go())
    caught.value.partial = partial  # type: ignore[attr-defined]
    return caught.value


def texts(events: list[Event]) -> tuple[str, str]:
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return thinking, answer


def done(events: list[Event]) -> Done:
    assert isinstance(events[-1], Done)
    assert sum(isinstance(e, Done) for e in events) == 1
    return events[-1]


# -- streams ------------------------------------------------------------------------------------
@pytest.mark.parametrize("flavor", ["vllm", "llama.cpp"])
@pytest.mark.parametrize("field", FIELDS)
def test_reasoning_and_answer_in_each_spelling(flavor: str, field: str) -> None:
    with FakeOpenAI(flavor=flavor, reasoning_field=field, token_rate=20_000) as fake:  # type: ignore[arg-type]
        fake.script(Scenario(reasoning=REASONING, content=JSON_ANSWER))
        events = classify(fake)
    thinking, answer = texts(events)
    assert thinking == REASONING
    assert answer == JSON_ANSWER
    stats = done(events).stats
    assert stats.done_reason == "stop" and stats.served_model == MODEL
    assert stats.first_token_s is not None and stats.eval_count > 0


def test_the_answer_alone_when_the_server_sends_no_reasoning(fake: FakeOpenAI) -> None:
    fake.script(Scenario(reasoning=REASONING, content="1", reasoning_field="none"))
    assert texts(classify(fake)) == ("", "1")


def test_a_harmony_answer_with_constrain_and_a_truncated_one(fake: FakeOpenAI) -> None:
    """`final <|constrain|>json` header; and a reply cut by the token limit mid-reasoning."""
    raw = (
        "<|channel|>analysis<|message|>Weigh it.<|end|><|start|>assistant"
        '<|channel|>final <|constrain|>json<|message|>{"violation": 0}<|return|>'
    )
    fake.script(Scenario(content=raw, reasoning_field="reasoning"))
    assert texts(classify(fake)) == ("Weigh it.", '{"violation": 0}')
    fake.script(Scenario(content="<|channel|>analysis<|message|>Step one", finish_reason="length"))
    events = classify(fake)
    assert texts(events) == ("Step one", "")
    assert done(events).stats.done_reason == "length"


def test_harmony_markers_are_recognised_wherever_chunks_cut_them() -> None:
    reasoning, answer = "Is <b> a tag? Check SP2.", '{"violation": 1}'
    whole = (
        f"<|channel|>analysis<|message|>{reasoning}<|end|>"
        f"<|start|>assistant<|channel|>final<|message|>{answer}<|return|>"
    )
    bare = f"analysis{reasoning}assistantfinal{answer}"
    for text in (whole, bare):
        for size in range(1, len(text) + 1):
            splitter = HarmonySplitter()
            pieces = []
            for start in range(0, len(text), size):
                pieces += splitter.feed(text[start : start + size])
            pieces += splitter.close()
            got = (
                "".join(t for k, t in pieces if k == "thinking"),
                "".join(t for k, t in pieces if k == "answer"),
            )
            assert got == (reasoning, answer), (text[:12], size)


def test_plain_answers_pass_the_splitter_untouched() -> None:
    for text in ("0", "1", "a < b <", "INVALID", "anal", ' {"violation": 0}', "<|"):
        splitter = HarmonySplitter()
        pieces = [p for ch in text for p in splitter.feed(ch)] + splitter.close()
        assert "".join(t for _, t in pieces) == text
        assert {k for k, _ in pieces} <= {"answer"}


def test_sse_decoding_follows_the_spec() -> None:
    decoder = SSEDecoder()
    lines = [": keep-alive", "event: x", 'data: {"a":', "data:1}", "id: 7", "", "", "data: [DONE]"]
    events = [e for line in lines if (e := decoder.feed(line)) is not None]
    assert [(e.event, e.data) for e in events] == [("x", '{"a":\n1}')]
    last = decoder.close()
    assert last is not None and last.data == "[DONE]"
    assert decoder.feed('error: {"message": "boom"}') is None
    error = decoder.feed("")
    assert error is not None and error.event == "error"


def test_only_one_of_two_reasoning_fields_is_read() -> None:
    chunk = {"choices": [{"delta": {"reasoning": "a", "reasoning_content": "a"}}]}
    assert delta_texts(chunk).reasoning == "a"
    chunk = {"choices": [{"delta": {"reasoning": None, "reasoning_content": "b"}}]}
    assert delta_texts(chunk).reasoning == "b"
    assert delta_texts({"choices": []}).content == ""


# -- what is sent -------------------------------------------------------------------------------
@pytest.mark.parametrize("effort", ["low", "medium", "high"])
def test_effort_is_sent_as_parameter_and_in_the_system_message(
    fake: FakeOpenAI, effort: str
) -> None:
    req = request(effort=effort)
    classify(fake, req)
    [body] = fake.chat_bodies
    assert body["reasoning_effort"] == effort
    system, user = body["messages"]
    assert system == {"role": "system", "content": f"Reasoning: {effort}\n\n{req.system}"}
    assert user == {"role": "user", "content": req.user}
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["seed"] == 42 and body["temperature"] == 0.0
    assert "num_ctx" not in json.dumps(body) and "options" not in body
    assert effort_system(system["content"], effort) == system["content"]  # not stated twice


def test_no_token_is_sent_without_one_and_the_bearer_with_one() -> None:
    with FakeOpenAI(token_rate=20_000, require_token="s3cret") as fake:
        error = fails(fake)
        assert isinstance(error, Unauthorized) and "token" in str(error)
        assert "authorization" not in fake.requests[-1].headers

        async def go() -> list[Event]:
            client = OpenAIClient(Endpoint(fake.url, token="s3cret"))
            try:
                return await collect(client.classify(request()))
            finally:
                await client.aclose()

        assert texts(asyncio.run(go()))[1] == "1"
        assert fake.requests[-1].headers["authorization"] == "Bearer s3cret"


def test_the_verdict_schema_goes_as_response_format(fake: FakeOpenAI) -> None:
    events = classify(fake, request(schema=True))
    [body] = fake.chat_bodies
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "safeguard_verdict", "schema": VERDICT_SCHEMA, "strict": True},
    }
    answer = json.loads(texts(events)[1])
    assert answer["violation"] == 1 and answer["rule_ids"] == ["SP2.a"]
    assert "response_format" not in chat_body(request(schema=False))


@pytest.mark.parametrize("flavor", ["vllm", "llama.cpp"])
def test_a_refused_schema_is_asked_again_without_it_once(flavor: str) -> None:
    with FakeOpenAI(flavor=flavor, schema_support=False, token_rate=20_000) as fake:  # type: ignore[arg-type]
        json_policy = SPAM + "Answer with one JSON object and nothing else."

        async def go() -> tuple[list[Event], list[Event]]:
            client = OpenAIClient(endpoint(fake))
            try:
                req = build_request(system=json_policy, user="buy now", model=MODEL, schema=True)
                return await collect(client.classify(req)), await collect(client.classify(req))
            finally:
                await client.aclose()

        first, second = asyncio.run(go())
        bodies = fake.chat_bodies
    assert ["response_format" in b for b in bodies] == [True, False, False]
    for events in (first, second):
        verdict = parse_verdict(texts(events)[1])
        assert verdict.violation is True and verdict.problem is None


# llama-cpp-python's server (0.3.x) takes `response_format` of type text or json_object only,
# and answers a body it cannot validate with HTTP 500, word for word as below.
LLAMA_CPP_PYTHON_REFUSAL = {
    "error": {
        "message": "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', "
        "'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\", "
        "'input': 'json_schema', 'ctx': {'expected': \"'text' or 'json_object'\"}}\n\n  File "
        '"llama_cpp/server/app.py", line 376, in create_chat_completion\n'
        "    POST /v1/chat/completions",
        "type": "internal_server_error",
        "param": None,
        "code": None,
    }
}


class _LlamaCppPython(BaseHTTPRequestHandler):
    """Its chat route: the 500 above for a json_schema, else a two-chunk stream."""

    bodies: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.bodies.append(body)
        if "response_format" in body:
            data = json.dumps(LLAMA_CPP_PYTHON_REFUSAL).encode()
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for delta, finish in (({"content": '{"violation": 1}'}, None), ({}, "stop")):
            chunk = {"model": body["model"], "choices": [{"delta": delta, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_schema_refused_with_llama_cpp_pythons_http_500_is_asked_again_without_it() -> None:
    handler = type("Handler", (_LlamaCppPython,), {"bodies": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"

        async def go() -> list[Event]:
            client = OpenAIClient(Endpoint(url))
            try:
                return await collect(client.classify(request(schema=True)))
            finally:
                await client.aclose()

        events = asyncio.run(go())
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert ["response_format" in b for b in handler.bodies] == [True, False]
    assert texts(events)[1] == '{"violation": 1}'
    assert parse_verdict(texts(events)[1]).violation is True


def test_refused_stream_options_are_dropped_and_tokens_counted_from_chunks() -> None:
    with FakeOpenAI(refuse_params=["stream_options"], token_rate=20_000) as fake:
        fake.script(Scenario(reasoning="one two three four", content="0"))
        events = classify(fake)
        bodies = fake.chat_bodies
    assert ["stream_options" in b for b in bodies] == [True, False]
    stats = done(events).stats
    assert texts(events) == ("one two three four", "0")
    assert stats.prompt_eval_count == 0 and stats.eval_count > 0


@pytest.mark.parametrize("flavor", ["vllm", "llama.cpp"])
def test_a_refused_parameter_is_named(flavor: str) -> None:
    with FakeOpenAI(flavor=flavor, refuse_params=["reasoning_effort"]) as fake:  # type: ignore[arg-type]
        error = fails(fake)
    assert isinstance(error, UnsupportedParameter) and isinstance(error, ServerError)
    assert error.param == "reasoning_effort" and "`reasoning_effort`" in str(error)
    assert fake.url in str(error)


def test_usage_gives_the_token_counts(fake: FakeOpenAI) -> None:
    fake.script(Scenario(reasoning="alpha beta gamma", content="1"))
    stats = done(classify(fake)).stats
    body = fake.chat_bodies[0]
    assert stats.prompt_eval_count > len(body["messages"][0]["content"]) // 4
    assert stats.eval_count == len(tokenize("alpha beta gamma")) + 1  # the usage chunk's count
    assert stats.tokens_per_s is not None and stats.to_dict()["served_model"] == MODEL


def test_llama_server_reports_its_own_model_and_timings() -> None:
    served = "gpt-oss-safeguard-20b-Q4_K_M.gguf"
    with FakeOpenAI(flavor="llama.cpp", models=[served], token_rate=20_000) as fake:
        stats = done(classify(fake, request(model="whatever-name"))).stats
    assert stats.served_model == served
    assert stats.prompt_eval_duration == 12_500_000  # prompt_ms of its timings


# -- errors -------------------------------------------------------------------------------------
def test_an_unknown_model_is_model_missing(fake: FakeOpenAI) -> None:
    error = fails(fake, request(model="gpt-oss-safeguard:20b"))
    assert isinstance(error, ModelMissing) and error.model == "gpt-oss-safeguard:20b"
    assert "does not exist" in str(error) and "Ollama" not in str(error)
    assert "models pull" not in str(error)


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("flavor", ["vllm", "llama.cpp"])
def test_busy_answers_are_queue_full(status: int, flavor: str) -> None:
    with FakeOpenAI(flavor=flavor) as fake:  # type: ignore[arg-type]
        fake.script(Scenario(status=status, error_message="server overloaded"))
        error = fails(fake)
    assert isinstance(error, QueueFull) and "overloaded" in str(error)
    assert "Ollama" not in str(error)


def test_a_loading_server_is_queue_full_and_unhealthy(fake: FakeOpenAI) -> None:
    fake.flavor = "llama.cpp"
    fake.loading = True
    error = fails(fake)
    assert isinstance(error, QueueFull) and "Loading model" in str(error)

    async def go() -> Any:
        client = OpenAIClient(endpoint(fake))
        try:
            return await client.health()
        finally:
            await client.aclose()

    health = asyncio.run(go())
    assert not health.ok and health.detail == "Loading model"


@pytest.mark.parametrize("status", [429, 503])
def test_requests_beyond_slots_and_queue_are_refused_as_queue_full(status: int) -> None:
    """One slot, no queue: while one answer streams, the next request is turned away."""
    with FakeOpenAI(parallel=1, max_queue=0, busy_status=status, token_rate=20_000) as fake:
        release = threading.Event()
        fake.script(Scenario(reasoning=REASONING, content="1", stall_after=3, release=release))

        async def go() -> tuple[EngineError, list[Event]]:
            client = OpenAIClient(endpoint(fake))
            first = client.classify(request())
            got = [await anext(first)]  # the slot is taken: a token came from it
            try:
                await collect(client.classify(request()))
            except EngineError as exc:
                refused = exc
            release.set()
            got += await collect(first)
            await client.aclose()
            return refused, got

        refused, events = asyncio.run(go())
    assert isinstance(refused, OpenAIQueueFull) and refused.retry_after == 1.0
    assert texts(events) == (REASONING, "1")
    assert fake.slots.peak == 1


def test_a_dropped_stream_is_connection_dropped_with_the_partial_reasoning(
    fake: FakeOpenAI,
) -> None:
    fake.script(Scenario(reasoning=REASONING, content="1", drop_after=5))
    error = fails(fake)
    assert isinstance(error, ConnectionDropped) and "lost mid-answer" in str(error)
    assert texts(error.partial)[0] == "".join(tokenize(REASONING)[:5])  # type: ignore[attr-defined]


def test_a_server_stopped_mid_answer_is_connection_dropped() -> None:
    fake = FakeOpenAI(token_rate=20_000).start()
    fake.script(Scenario(reasoning=REASONING, content="1", stall_after=4))

    async def go() -> EngineError:
        client = OpenAIClient(endpoint(fake))
        stream = client.classify(request())
        try:
            await anext(stream)
            await asyncio.to_thread(fake.stop)
            with pytest.raises(EngineError) as caught:
                await collect(stream)
            return caught.value
        finally:
            await client.aclose()

    assert isinstance(asyncio.run(go()), ConnectionDropped)


@pytest.mark.parametrize("flavor", ["vllm", "llama.cpp"])
def test_an_error_event_mid_stream_is_stream_failed(flavor: str) -> None:
    with FakeOpenAI(flavor=flavor, token_rate=20_000) as fake:  # type: ignore[arg-type]
        fake.script(
            Scenario(reasoning=REASONING, content="1", error_after=6, error_message="CUDA oops")
        )
        error = fails(fake)
    assert isinstance(error, StreamFailed) and "CUDA oops" in str(error)
    assert texts(error.partial)[0] == "".join(tokenize(REASONING)[:6])  # type: ignore[attr-defined]


def test_a_stream_without_done_after_its_finish_reason_stands(fake: FakeOpenAI) -> None:
    fake.script(Scenario(reasoning="Think.", content="0", no_done=True))
    events = classify(fake)
    assert texts(events) == ("Think.", "0") and done(events).stats.done_reason == "stop"


def test_other_server_errors(fake: FakeOpenAI) -> None:
    fake.script(Scenario(status=500, error_message="engine dead"))
    error = fails(fake)
    assert (
        isinstance(error, ServerError) and "HTTP 500" in str(error) and "engine dead" in str(error)
    )
    message = (
        "This model's maximum context length is 8192 tokens. However, you requested 9000 tokens."
    )
    fake.script(Scenario(status=400, error_message=message))
    assert isinstance(fails(fake), ContextExceeded)


def test_a_url_without_the_api_is_not_openai_compatible(fake: FakeOpenAI) -> None:
    async def go() -> EngineError:
        client = OpenAIClient(Endpoint(fake.url + "/nothing-here"))
        try:
            with pytest.raises(EngineError) as caught:
                await collect(client.classify(request()))
            return caught.value
        finally:
            await client.aclose()

    error = asyncio.run(go())
    assert isinstance(error, NotOpenAICompatible) and not isinstance(error, ModelMissing)


def test_connection_refused_is_server_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"

    async def go() -> EngineError:
        client = OpenAIClient(Endpoint(url, connect_timeout=2))
        try:
            with pytest.raises(EngineError) as caught:
                await collect(client.classify(request()))
            return caught.value
        finally:
            await client.aclose()

    error = asyncio.run(go())
    assert isinstance(error, ServerUnreachable) and url in str(error)
    assert "Ollama" not in str(error)


def test_error_bodies_in_every_shape_are_read() -> None:
    shapes: list[tuple[Any, str]] = [
        ({"error": {"message": "m1", "type": "t", "param": "p", "code": 400}}, "m1"),
        ({"error": {"code": 400, "message": "m2", "type": "invalid_request_error"}}, "m2"),
        ({"object": "error", "message": "m3", "type": "BadRequestError", "code": 400}, "m3"),
        ({"error": "m4"}, "m4"),
        ({"detail": "Not Found"}, "Not Found"),
        ("<html><body>502 Bad Gateway</body></html>", "<html><body>502 Bad Gateway</body></html>"),
    ]
    for body, message in shapes:
        raw = body if isinstance(body, str) else json.dumps(body)
        assert read_problem(400, raw).message == message


def test_cancelling_a_review_closes_the_stream_and_frees_the_slot(fake: FakeOpenAI) -> None:
    fake.script(Scenario(reasoning=REASONING, content="1", stall_after=3))

    async def go() -> None:
        client = OpenAIClient(endpoint(fake))
        started = asyncio.Event()

        async def consume() -> None:
            async for _ in client.classify(request()):
                started.set()

        task = asyncio.ensure_future(consume())
        await started.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.aclose()

    asyncio.run(go())
    assert fake.slots.wait_for(active=0)


# -- discovery, health, version -----------------------------------------------------------------
def about(fake: FakeOpenAI, url: str | None = None, **kwargs: Any) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        client = OpenAIClient(Endpoint(url or fake.url, **kwargs))
        try:
            return {
                "health": await client.health(),
                "version": await client.version(),
                "models": await client.models(),
                "context": await client.context_length(fake.models[0]),
                "probe": await backend.probe(client, fake.models[0]),
            }
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_discovery_and_health_on_vllm() -> None:
    with FakeOpenAI(flavor="vllm", max_model_len=32768) as fake:
        info = about(fake)
        paths = [r.path for r in fake.requests]
    assert info["health"].ok and info["health"].checked == "/health"
    assert info["version"] == "0.10.2"
    assert [m.id for m in info["models"]] == [MODEL] and info["context"] == 32768
    probe = info["probe"]
    assert probe.healthy and probe.has_model and probe.kind == "openai" and probe.digest is None
    assert {"/health", "/version", "/v1/models"} <= set(paths)


def test_discovery_and_health_on_llama_server() -> None:
    with FakeOpenAI(flavor="llama.cpp", models=["gpt-oss.gguf"], max_model_len=8192) as fake:
        info = about(fake)
    assert info["health"].ok and info["version"] is None  # no /version: 404
    assert info["context"] == 8192 and info["models"][0].owned_by == "llamacpp"


def test_health_falls_back_to_the_model_list() -> None:
    """A server without /health (LM Studio answers unknown routes 200 with an error)."""
    with FakeOpenAI(flavor="bare") as fake:
        info = about(fake)
        assert info["health"].checked == "/v1/models" and info["version"] is None
        fake.require_token = "k"
        with pytest.raises(Unauthorized):
            about(fake)
        assert about(fake, token="k")["health"].ok


def test_a_base_url_given_with_v1_is_the_same_server(fake: FakeOpenAI) -> None:
    assert split_base(fake.url + "/v1/") == fake.url
    assert split_base("https://gpu.example/proxy/v1") == "https://gpu.example/proxy"
    info = about(fake, url=fake.url + "/v1")
    assert info["health"].ok and info["models"][0].id == MODEL
    classify(fake)
    assert {r.path for r in fake.requests} >= {"/health", "/v1/models", "/v1/chat/completions"}


def test_probe_marks_a_host_without_the_model_and_an_unreachable_one() -> None:
    with FakeOpenAI(models=["other"]) as fake:

        async def go() -> backend.HostProbe:
            client = backend.make_client("openai", Endpoint(fake.url))
            try:
                return await backend.probe(client, MODEL)
            finally:
                await client.aclose()

        probe = asyncio.run(go())
        url = fake.url
    assert probe.healthy and probe.has_model is False and probe.problem and MODEL in probe.problem

    async def gone() -> backend.HostProbe:
        client = backend.make_client("openai", Endpoint(url, connect_timeout=2))
        try:
            return await backend.probe(client, MODEL)
        finally:
            await client.aclose()

    down = asyncio.run(gone())
    assert not down.healthy and down.problem and "No server answers" in down.problem
    with pytest.raises(ValueError, match="Unknown server kind"):
        backend.make_client("tgi", Endpoint(url))


def test_the_backend_helpers_answer_for_ollama_too() -> None:
    with FakeOllama(token_rate=20_000) as fake:

        async def go() -> tuple[Any, ...]:
            client = backend.make_client("ollama", Endpoint(fake.url))
            assert isinstance(client, OllamaClient)
            try:
                events = await collect(client.classify(request(model="gpt-oss-safeguard:20b")))
                return (
                    await backend.model_names(client),
                    await backend.model_digest(client, "gpt-oss-safeguard:20b"),
                    await backend.context_limit(client, "gpt-oss-safeguard:20b"),
                    await backend.probe(client, "gpt-oss-safeguard:20b"),
                    done(events).stats.served_model,
                    client.kind,
                )
            finally:
                await client.aclose()

        names, digest, context, probe, served, kind = asyncio.run(go())
    assert names == ["gpt-oss-safeguard:20b"] and digest and context
    assert probe.healthy and probe.has_model and probe.digest == digest
    assert served == "gpt-oss-safeguard:20b" and kind == "ollama"


def test_only_the_configured_host_is_contacted(fake: FakeOpenAI) -> None:
    with egress.guarded():
        egress.allow(fake.url)
        events = classify(fake)
        info = about(fake)
    assert texts(events)[1] == "1" and info["health"].ok


# -- a Reviewer, unchanged, on this backend -----------------------------------------------------
def options(model: str) -> ReviewOptions:
    return ReviewOptions(
        model=model,
        effort=None,
        default_effort="medium",
        num_ctx=8192,
        seed=42,
        temperature=None,
        keep_alive=None,
        moderator="ana",
        source="cli",
    )


@pytest.mark.parametrize(
    ("flavor", "field"),
    [("vllm", "reasoning"), ("llama.cpp", "reasoning_content"), ("vllm", "harmony")],
)
def test_a_reviewer_runs_end_to_end_on_an_openai_server(
    tmp_path: Path, flavor: str, field: str
) -> None:
    with (
        FakeOpenAI(flavor=flavor, reasoning_field=field, token_rate=20_000) as fake,  # type: ignore[arg-type]
        History.open(tmp_path / "h.db") as history,
    ):

        async def go() -> Any:
            client = OpenAIClient(Endpoint(fake.url))
            try:
                reviewer = Reviewer(client, options(MODEL), history)  # type: ignore[arg-type]
                return await reviewer.review(resolve_policy("harassment"), from_text("you idiot"))
            finally:
                await client.aclose()

        result = asyncio.run(go())
        stored = history.get(result.review_id)
        body = fake.chat_bodies[0]
    assert result.status == "done" and result.error is None
    assert result.verdict is not None and result.verdict.violation is True
    assert '"idiot"' in result.reasoning and result.answer.startswith("{")
    assert stored is not None and stored.status == "done" and stored.host == fake.url
    assert stored.reasoning == result.reasoning and stored.verdict_label == "violation"
    assert stored.stats and stored.stats["served_model"] == MODEL
    assert stored.model_digest is None
    assert body["reasoning_effort"] == "medium"
    assert body["messages"][0]["content"].startswith("Reasoning: medium\n\n")


def test_a_json_policy_asks_an_openai_server_for_the_verdict_schema(tmp_path: Path) -> None:
    """vLLM's version ("0.10.2") is not Ollama's: the Ollama 0.12.4 gate must not keep the
    schema from an OpenAI-compatible server, nor warn about updating Ollama."""
    from safeguard_desktop.core.policy import parse_policy

    policy = parse_policy(
        b"---\nid: sales\noutput: json\n---\n# Sales\n\n## Violates (1)\n- SA2 Selling.\n\n"
        b"## Allowed (0)\n- SA0 Anything else.\n",
        source=tmp_path / "sales.md",
    )
    with (
        FakeOpenAI(flavor="vllm", token_rate=20_000) as fake,
        History.open(tmp_path / "h.db") as history,
    ):

        async def go() -> Any:
            client = OpenAIClient(Endpoint(fake.url))
            try:
                reviewer = Reviewer(client, options(MODEL), history)  # type: ignore[arg-type]
                return await reviewer.review(policy, from_text("buy now"))
            finally:
                await client.aclose()

        result = asyncio.run(go())
        body = fake.chat_bodies[0]
    assert body.get("response_format", {}).get("type") == "json_schema"
    assert not any("Ollama" in w for w in result.warnings)
