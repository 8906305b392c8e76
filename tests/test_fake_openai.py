"""The fake OpenAI-compatible server speaks what vLLM and llama-server speak: its streams are
read by the `openai` package's own SSE parser (skipped, with the reason, when it is not
installed) and by plain httpx byte for byte; slots, queue, drops and records hold."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fake_ollama import tokenize
from tests.fake_openai import FakeOpenAI, Scenario

MODEL = "openai/gpt-oss-safeguard-20b"
REASONING = 'The content says "buy now". This violates SP2.a.'
ANSWER = '{"violation": 1}'
MESSAGES = [
    {"role": "system", "content": "# Spam\nSP0 fine. SP2.a pushes to buy.\nAnswer 1 or 0."},
    {"role": "user", "content": "buy now"},
]
NEEDS_OPENAI = "the `openai` package is not installed (pip install openai) to check the framing"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(token_rate=20_000) as server:
        yield server


def openai_client(fake: FakeOpenAI, **kwargs: Any) -> Any:
    openai = pytest.importorskip("openai", reason=NEEDS_OPENAI)
    return openai.OpenAI(base_url=f"{fake.url}/v1", api_key="none", max_retries=0, **kwargs)


def extra(obj: Any, name: str) -> Any:
    """A field the OpenAI schema lacks (reasoning), wherever the pydantic model keeps it."""
    value = getattr(obj, name, None)
    if value is None:
        value = (getattr(obj, "model_extra", None) or {}).get(name)
    return value


def sse_events(body: bytes) -> list[str]:
    text = body.decode()
    assert text.endswith("\n\n"), "every event ends with a blank line"
    return text[:-2].split("\n\n")


# -- the openai package's parser ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("flavor", "field"),
    [
        ("vllm", "reasoning"),
        ("vllm", "reasoning_content"),
        ("vllm", "both"),
        ("llama.cpp", "reasoning_content"),
        ("vllm", "harmony"),
    ],
)
def test_the_openai_package_reads_the_stream(flavor: str, field: str) -> None:
    with FakeOpenAI(flavor=flavor, reasoning_field=field, token_rate=20_000) as fake:  # type: ignore[arg-type]
        client = openai_client(fake)
        fake.script(Scenario(reasoning=REASONING, content=ANSWER))
        stream = client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            reasoning_effort="low",
        )
        chunks = list(stream)
        client.close()
    with_choices = [c for c in chunks if c.choices]
    reasoning = "".join(
        extra(c.choices[0].delta, "reasoning_content" if field != "reasoning" else field) or ""
        for c in with_choices
    )
    content = "".join(c.choices[0].delta.content or "" for c in with_choices)
    if field == "harmony":
        assert reasoning == "" and REASONING in content and content.endswith(ANSWER + "<|return|>")
    else:
        assert (reasoning, content) == (REASONING, ANSWER)
    assert with_choices[-1].choices[0].finish_reason == "stop"
    assert all(c.model == MODEL and c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0


def test_the_openai_package_sees_each_error_as_its_own_exception() -> None:
    openai = pytest.importorskip("openai", reason=NEEDS_OPENAI)
    with FakeOpenAI(token_rate=20_000) as fake:
        client = openai_client(fake)

        def create(model: str = MODEL) -> Any:
            return list(client.chat.completions.create(model=model, messages=MESSAGES, stream=True))

        with pytest.raises(openai.NotFoundError, match="does not exist"):
            create("nope")
        fake.script(Scenario(status=429, error_message="slow down"))
        with pytest.raises(openai.RateLimitError, match="slow down"):
            create()
        fake.script(Scenario(status=503, error_message="overloaded"))
        with pytest.raises(openai.InternalServerError, match="overloaded"):
            create()
        fake.script(Scenario(reasoning=REASONING, content="1", error_after=3, error_message="oops"))
        with pytest.raises(openai.APIError, match="oops"):
            create()
        fake.require_token = "k"
        with pytest.raises(openai.AuthenticationError):
            create()
        client.close()


def test_the_openai_package_lists_models_and_reads_a_whole_answer(fake: FakeOpenAI) -> None:
    client = openai_client(fake)
    assert [m.id for m in client.models.list()] == [MODEL]
    fake.script(Scenario(reasoning=REASONING, content=ANSWER))
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES)
    client.close()
    message = whole.choices[0].message
    assert message.content == ANSWER and extra(message, "reasoning") == REASONING
    assert whole.usage is not None and whole.usage.completion_tokens == len(
        tokenize(REASONING) + tokenize(ANSWER)
    )


# -- the bytes ----------------------------------------------------------------------------------
def post(fake: FakeOpenAI, body: dict[str, Any], **kwargs: Any) -> httpx.Response:
    with httpx.Client(base_url=fake.url, timeout=10) as client:
        return client.post("/v1/chat/completions", json=body, **kwargs)


@pytest.mark.parametrize("flavor", ["vllm", "llama.cpp"])
def test_sse_framing_byte_for_byte(flavor: str) -> None:
    with FakeOpenAI(flavor=flavor, token_rate=20_000) as fake:  # type: ignore[arg-type]
        fake.script(Scenario(reasoning=REASONING, content=ANSWER))
        body = {"model": MODEL, "messages": MESSAGES, "stream": True}
        resp = post(fake, {**body, "stream_options": {"include_usage": True}})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["transfer-encoding"] == "chunked"
    events = sse_events(resp.content)
    assert events[-1] == "data: [DONE]"
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    first, usage = chunks[0]["choices"][0]["delta"], chunks[-1]
    assert first["role"] == "assistant"
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == len(
        tokenize(REASONING) + tokenize(ANSWER)
    )
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    if flavor == "llama.cpp":
        assert chunks[-2]["choices"][0]["delta"] == {} and "timings" in chunks[-2]
        assert all("system_fingerprint" in c for c in chunks[:-1])


def test_an_error_mid_stream_in_each_flavor() -> None:
    scenario = Scenario(reasoning=REASONING, content="1", error_after=2, error_message="boom")
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    with FakeOpenAI(flavor="vllm") as fake:
        fake.script(scenario)
        vllm = sse_events(post(fake, body).content)
    with FakeOpenAI(flavor="llama.cpp") as fake:
        fake.script(scenario)
        llama = sse_events(post(fake, body).content)
    assert json.loads(vllm[-2][6:])["error"]["message"] == "boom" and vllm[-1] == "data: [DONE]"
    assert llama[-1].startswith("error: ") and json.loads(llama[-1][7:])["message"] == "boom"


def test_a_dropped_stream_leaves_the_body_unfinished(fake: FakeOpenAI) -> None:
    fake.script(Scenario(reasoning=REASONING, content="1", drop_after=3))
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    with pytest.raises(httpx.RemoteProtocolError):
        post(fake, body)


def test_error_objects_and_routes_per_flavor() -> None:
    with FakeOpenAI(flavor="vllm") as fake:
        missing = post(fake, {"model": "x", "messages": MESSAGES, "stream": True})
        bad = post(fake, {"model": MODEL, "messages": MESSAGES, "reasoning_effort": "max"})
        with httpx.Client(base_url=fake.url) as client:
            route = client.get("/nothing")
            fake.require_token = "k"
            denied = client.get("/v1/models")
            health = client.get("/health")
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "message": "The model `x` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "reasoning_effort"
    assert route.status_code == 404 and route.json() == {"detail": "Not Found"}
    assert denied.status_code == 401 and health.status_code == 200 and health.content == b""
    with (
        FakeOpenAI(flavor="llama.cpp", require_token="k") as fake,
        httpx.Client(base_url=fake.url) as client,
    ):
        denied = client.get("/version")
        models = client.get("/v1/models")
        fake.require_token = None
        route = client.get("/version")
        fake.loading = True
        loading = client.get("/health")
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
    assert route.status_code == 404 and route.json()["error"]["type"] == "not_found_error"
    assert models.status_code == 200  # llama-server leaves the model list open
    assert loading.status_code == 503 and loading.json()["error"]["message"] == "Loading model"


# -- slots, queue, records ----------------------------------------------------------------------
def test_slots_then_queue_then_busy() -> None:
    """Two slots and a queue of one: two streams run, one waits, the fourth is refused."""
    release = threading.Event()
    with FakeOpenAI(parallel=2, max_queue=1, busy_status=503, token_rate=20_000) as fake:
        fake.script(
            *[Scenario(reasoning=REASONING, content="1", stall_after=2, release=release)] * 3
        )
        body = {"model": MODEL, "messages": MESSAGES, "stream": True}

        async def go() -> list[Any]:
            async with httpx.AsyncClient(base_url=fake.url, timeout=10) as client:

                async def one() -> int:
                    async with client.stream("POST", "/v1/chat/completions", json=body) as resp:
                        await resp.aread()
                        return resp.status_code

                running = [asyncio.ensure_future(one()) for _ in range(3)]
                assert await asyncio.to_thread(fake.slots.wait_for, active=2, waiting=1)
                refused = await client.post("/v1/chat/completions", json=body)
                release.set()
                return [refused, *await asyncio.gather(*running)]

        refused, *statuses = asyncio.run(go())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == 503
    assert statuses == [200, 200, 200] and fake.slots.peak == 2 and fake.completions == 3


def test_requests_are_recorded_with_their_headers(fake: FakeOpenAI) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "reasoning_effort": "high"}
    post(fake, body, headers={"Authorization": "Bearer t"})
    [recorded] = fake.requests
    assert (recorded.method, recorded.path, recorded.json) == ("POST", "/v1/chat/completions", body)
    assert recorded.headers["authorization"] == "Bearer t" and fake.chat_bodies == [body]


def test_the_default_reply_follows_the_policy_and_a_schema(fake: FakeOpenAI) -> None:
    body = {"model": MODEL, "messages": MESSAGES, "stream": False}
    assert post(fake, body).json()["choices"][0]["message"]["content"] == "1"
    schema = {
        "type": "object",
        "properties": {"violation": {"type": "integer"}},
        "required": ["violation"],
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "v", "schema": schema}}
    answer = post(fake, {**body, "response_format": fmt}).json()["choices"][0]["message"]
    assert json.loads(answer["content"]) == {"violation": 1}
