"""The fake Ollama server behaves like Ollama for the real `ollama` client and for httpx."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from safeguard_desktop.core.prompt import system_prompt
from tests.fake_ollama import FakeOllama, Scenario, parse_ollama_host

MODEL = "gpt-oss-safeguard:20b"
FAKE_BIN = Path(__file__).parent / "bin" / "ollama"
SPAM_POLICY = (
    "# Spam Policy\nAnswer with 1 (spam) or 0 (not spam).\n"
    "SP0 Ordinary messages. SP2.a Unsolicited offers that push the reader to buy.\n"
)
JSON_POLICY = (
    "# Harassment\nReturn a JSON object.\nH0 Disagreement is fine. H2.f Insults at a person.\n"
)


def chat_messages(content: str, policy: str = SPAM_POLICY) -> list[dict[str, str]]:
    return [{"role": "system", "content": policy}, {"role": "user", "content": content}]


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(token_rate=20_000) as server:
        yield server


async def collect(stream: AsyncIterator[Any]) -> list[Any]:
    return [part async for part in stream]


def run_chat(url: str, model: str = MODEL, **kwargs: Any) -> list[ollama.ChatResponse]:
    async def go() -> list[ollama.ChatResponse]:
        client = ollama.AsyncClient(host=url)
        return await collect(await client.chat(model=model, stream=True, **kwargs))

    return asyncio.run(go())


def answer(parts: list[ollama.ChatResponse]) -> str:
    return "".join(p.message.content or "" for p in parts)


def reasoning(parts: list[ollama.ChatResponse]) -> str:
    return "".join(p.message.thinking or "" for p in parts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- chat -------------------------------------------------------------------------------------
def test_stream_gives_reasoning_then_answer_then_durations(fake: FakeOllama) -> None:
    content = "Limited offer, Buy now at example.test!"
    parts = run_chat(fake.url, messages=chat_messages(content), think="low")

    kinds = ["thinking" if p.message.thinking else "content" for p in parts if not p.done]
    assert kinds == sorted(kinds, key=lambda k: k != "thinking")  # thinking first
    assert "content" in kinds
    thought = reasoning(parts)
    assert answer(parts) == "1"
    assert '"Buy now"' in thought and "SP2.a" in thought
    assert "This violates SP2.a" in thought
    final = parts[-1]
    assert final.done and final.done_reason == "stop"
    assert final.eval_count == len(parts) - 1
    assert final.eval_duration and final.eval_duration > 0
    assert final.total_duration and final.total_duration >= final.eval_duration
    assert final.prompt_eval_count and final.prompt_eval_count > 0


def test_non_streamed_reply_equals_the_joined_stream(fake: FakeOllama) -> None:
    messages = chat_messages("See you at the meeting tomorrow, bring the notes please")
    parts = run_chat(fake.url, messages=messages)
    whole = asyncio.run(
        ollama.AsyncClient(host=fake.url).chat(model=MODEL, messages=messages, stream=False)
    )
    assert whole.message.content == answer(parts) == "0"
    assert whole.message.thinking == reasoning(parts)
    assert '"See you at the meeting tomorrow,"' in (whole.message.thinking or "")
    assert "SP0" in (whole.message.thinking or "")
    assert "does not violate" in (whole.message.thinking or "")


def test_answer_format_follows_the_policy(fake: FakeOllama) -> None:
    fake.reasoning_tokens = 20
    parts = run_chat(fake.url, messages=chat_messages("You are an idiot", JSON_POLICY), think="low")
    verdict = json.loads(answer(parts))
    assert verdict["violation"] == 1 and verdict["rule_ids"] == ["H2.f"]
    assert "rationale" not in verdict  # the policy does not ask for one
    labelled = run_chat(
        fake.url, messages=chat_messages("hello", "Label VALID or INVALID. R0 fine. R2 bad.")
    )
    assert answer(labelled) == "VALID"


APP_POLICY = (
    "# Pets\n\nP0 Talking about pets is fine, and so is sharing JSON files of pet names.\n"
    "P2.a Insults aimed at a person.\n"
)


@pytest.mark.parametrize(
    ("output", "labels", "expected"),
    [
        (None, None, "1"),
        ("binary", ("KEEP", "REMOVE"), "REMOVE"),
        ("json", None, {"violation", "policy_category", "rule_ids", "confidence"}),
        (
            "json-rationale",
            None,
            {"violation", "policy_category", "rule_ids", "confidence", "rationale"},
        ),
    ],
)
def test_answer_follows_the_instruction_the_app_appends(
    fake: FakeOllama, output: str | None, labels: tuple[str, str] | None, expected: object
) -> None:
    """No `format`: JSON only when the system message asks for it (not because it says JSON)."""
    system = system_prompt(APP_POLICY, output=output, labels=labels, states_output=False)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "you idiot"}]
    reply = answer(run_chat(fake.url, messages=messages, think="low"))
    if isinstance(expected, set):
        verdict = json.loads(reply)
        assert set(verdict) == expected and verdict["violation"] == 1
        assert verdict["rule_ids"] == ["P2.a"]
    else:
        assert reply == expected


def test_format_constrains_the_answer_to_json(fake: FakeOllama) -> None:
    schema = {
        "type": "object",
        "properties": {
            "violation": {"type": "integer", "enum": [0, 1]},
            "rule_ids": {"type": "array", "items": {"type": "string"}},
            "severity": {"type": "string"},
            "rationale": {"type": "string"},
        },
        "required": ["violation", "rule_ids", "severity"],
    }
    messages = chat_messages("Buy now!")  # a 1/0 policy: only `format` makes the answer JSON
    parts = run_chat(fake.url, messages=messages, format=schema, think="low")
    assert reasoning(parts)  # the reasoning is not constrained
    assert json.loads(answer(parts)) == {"violation": 1, "rule_ids": ["SP2.a"], "severity": ""}
    as_json = json.loads(answer(run_chat(fake.url, messages=messages, format="json")))
    assert as_json["violation"] == 1
    assert answer(run_chat(fake.url, messages=messages, format="")) == "1"  # "" means unset


def test_invalid_format_fails_when_the_answer_starts(fake: FakeOllama) -> None:
    fake.reasoning_tokens = 10
    body = {"model": MODEL, "messages": chat_messages("x"), "format": "yaml", "think": "low"}
    with httpx.stream("POST", f"{fake.url}/api/chat", json=body, timeout=5) as response:
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert response.status_code == 200
    assert all(line["message"]["thinking"] for line in lines[:-1])
    assert lines[-1] == {
        "error": 'invalid format: "\\"yaml\\""; expected "json" or a valid JSON Schema object'
    }


@pytest.mark.parametrize(
    ("think", "error"),
    [
        (
            "extreme",
            'invalid think value: "extreme" (must be "high", "medium", "low", true, or false)',
        ),
        ("", 'invalid think value: "" (must be "high", "medium", "low", true, or false)'),
        (1, 'think must be a boolean or string ("high", "medium", "low", true, or false)'),
        (
            {"level": "low"},
            'think must be a boolean or string ("high", "medium", "low", true, or false)',
        ),
    ],
)
@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_invalid_think_is_a_400_like_ollama(
    fake: FakeOllama, path: str, think: object, error: str
) -> None:
    body = {"model": MODEL, "messages": chat_messages("x"), "prompt": "x", "think": think}
    response = httpx.post(f"{fake.url}{path}", json=body, timeout=5)
    assert response.status_code == 400
    assert response.json() == {"error": error}
    # Request binding fails before the model is looked up.
    missing = httpx.post(f"{fake.url}{path}", json={**body, "model": "nope:1b"}, timeout=5)
    assert missing.status_code == 400 and missing.json() == {"error": error}


@pytest.mark.parametrize("think", [None, False, True, "low", "medium", "high"])
def test_gpt_oss_always_reasons(fake: FakeOllama, think: object) -> None:
    """gpt-oss accepts booleans but ignores them: the trace cannot be turned off."""
    fake.reasoning_tokens = 10
    kwargs = {} if think is None else {"think": think}
    parts = run_chat(fake.url, messages=chat_messages("hello"), **kwargs)
    assert reasoning(parts) and answer(parts) == "0"


def test_other_families_take_booleans_but_no_levels(fake: FakeOllama) -> None:
    fake.add_model("qwen3:8b", family="qwen3")
    fake.reasoning_tokens = 10
    thinks = run_chat(fake.url, model="qwen3:8b", messages=chat_messages("hello"), think=True)
    assert reasoning(thinks) and answer(thinks) == "0"
    quiet = run_chat(fake.url, model="qwen3:8b", messages=chat_messages("hello"), think=False)
    assert not reasoning(quiet) and answer(quiet) == "0"
    body = {"model": "qwen3:8b", "messages": chat_messages("hello"), "think": "low"}
    response = httpx.post(f"{fake.url}/api/chat", json=body, timeout=5)
    assert response.status_code == 400
    assert response.json() == {"error": 'think value "low" is not supported for this model'}


def test_model_without_thinking_rejects_think(fake: FakeOllama) -> None:
    fake.add_model("plain:1b", capabilities=("completion",))
    body = {"model": "plain:1b", "messages": chat_messages("hello"), "think": "low"}
    response = httpx.post(f"{fake.url}/api/chat", json=body, timeout=5)
    assert response.status_code == 400
    assert response.json() == {"error": '"plain:1b" does not support thinking'}
    parts = run_chat(fake.url, model="plain:1b", messages=chat_messages("hello"))
    assert not reasoning(parts) and answer(parts) == "0"


def test_scripted_scenarios_are_consumed_in_order(fake: FakeOllama) -> None:
    fake.script(Scenario(thinking="first thought", content="1", done_reason="length"))
    fake.script(Scenario(content="per model"), model=MODEL)
    first = run_chat(fake.url, messages=chat_messages("x"))
    second = run_chat(fake.url, messages=chat_messages("x"))
    assert answer(first) == "per model"
    assert reasoning(second) == "first thought"
    assert second[-1].done_reason == "length"
    assert fake.requests_to("/api/chat")[0].json["messages"][1]["content"] == "x"


def test_missing_model_is_a_404_response_error(fake: FakeOllama) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        run_chat(fake.url, model="nope:1b", messages=chat_messages("x"))
    assert info.value.status_code == 404
    assert info.value.error == 'model "nope:1b" not found, try pulling it first'


def test_error_line_inside_the_stream_raises(fake: FakeOllama) -> None:
    fake.script(Scenario(thinking="a b c d e f g h", error_after=2, error_message="GPU fell over"))
    with pytest.raises(ollama.ResponseError, match="GPU fell over"):
        run_chat(fake.url, messages=chat_messages("x"))


def test_error_before_the_first_line_is_a_plain_500(fake: FakeOllama) -> None:
    fake.script(Scenario(thinking="a b c", error_after=0, error_message="GPU fell over"))
    body = {"model": MODEL, "messages": chat_messages("x")}
    response = httpx.post(f"{fake.url}/api/chat", json=body, timeout=5)
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"error": "GPU fell over"}


def test_scripted_status_is_returned_at_once(fake: FakeOllama) -> None:
    fake.script(Scenario(status=500, error_message="llama runner process has terminated"))
    with pytest.raises(ollama.ResponseError) as info:
        run_chat(fake.url, messages=chat_messages("x"))
    assert info.value.status_code == 500
    assert "terminated" in info.value.error


def test_dropped_connection_is_a_transport_error(fake: FakeOllama) -> None:
    fake.script(Scenario(thinking="one two three four five six", drop_after=3))
    with pytest.raises(httpx.TransportError):
        run_chat(fake.url, messages=chat_messages("x"))
    assert run_chat(fake.url, messages=chat_messages("x"))[-1].done  # server still fine


def test_hang_lets_the_client_time_out(fake: FakeOllama) -> None:
    fake.script(Scenario(hang=True))
    body = {"model": MODEL, "messages": chat_messages("x")}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{fake.url}/api/chat", json=body, timeout=0.3)


def test_full_queue_answers_503(fake: FakeOllama) -> None:
    fake.parallel, fake.max_queue = 1, 0
    fake.script(Scenario(content="slow", first_token_delay=0.5))
    body = {"model": MODEL, "messages": chat_messages("x"), "stream": False}

    async def go() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(base_url=fake.url, timeout=5) as client:
            first = asyncio.create_task(client.post("/api/chat", json=body))
            deadline = time.monotonic() + 60  # a hang bound
            while fake.slots.active == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            second = await client.post("/api/chat", json=body)
            return await first, second

    first, second = asyncio.run(go())
    assert first.json()["message"]["content"] == "slow"
    assert second.status_code == 503
    assert second.json()["error"] == (
        "server busy, please try again.  maximum pending requests exceeded"
    )


def test_requests_past_the_parallel_slots_wait_their_turn(fake: FakeOllama) -> None:
    fake.script(Scenario(content="A", first_token_delay=0.2), Scenario(content="B"))
    body = {"model": MODEL, "messages": chat_messages("x"), "stream": False}

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=fake.url, timeout=5) as client:
            return list(await asyncio.gather(*(client.post("/api/chat", json=body) for _ in "AB")))

    replies = sorted(r.json()["message"]["content"] for r in asyncio.run(go()))
    assert replies == ["A", "B"]


# -- models -----------------------------------------------------------------------------------
def test_load_unload_and_ps(fake: FakeOllama) -> None:
    client = ollama.Client(host=fake.url)
    assert client.ps().models == []
    loaded = client.chat(model=MODEL, messages=[], keep_alive="10m")
    assert loaded.done_reason == "load"
    ps = client.ps().models
    assert [m.model for m in ps] == [MODEL]
    assert ps[0].size_vram and ps[0].context_length == 4096
    client.chat(model=MODEL, messages=chat_messages("x"), options={"num_ctx": 16384})
    assert client.ps().models[0].context_length == 16384
    assert client.chat(model=MODEL, messages=[], keep_alive=0).done_reason == "unload"
    assert client.ps().models == []


def test_show_tags_and_delete(fake: FakeOllama) -> None:
    client = ollama.Client(host=fake.url)
    shown = client.show(MODEL)
    assert shown.capabilities == ["completion", "thinking"]
    assert shown.modelinfo and shown.modelinfo["general.architecture"] == "gptoss"
    assert [m.model for m in client.list().models] == [MODEL]
    assert client.delete(MODEL).status == "success"
    assert client.list().models == []
    with pytest.raises(ollama.ResponseError) as info:
        client.delete(MODEL)
    assert info.value.status_code == 404
    with pytest.raises(ollama.ResponseError):
        client.show(MODEL)


def test_pull_reports_progress_and_resumes_after_cancel(fake: FakeOllama) -> None:
    fake.pullable = {"tiny:1b": 400_000}
    fake.pull_rate = 2_000_000  # 0.2 s for the model layer

    async def go() -> tuple[int, list[ollama.ProgressResponse]]:
        client = ollama.AsyncClient(host=fake.url)
        stream = await client.pull("tiny:1b", stream=True)
        seen = 0
        async for part in stream:
            if part.completed and part.total == 400_000:
                seen = part.completed
                if seen >= 80_000:
                    break
        await stream.aclose()  # type: ignore[attr-defined]
        await asyncio.sleep(0.1)
        return seen, await collect(await client.pull("tiny:1b", stream=True))

    seen, retry = asyncio.run(go())
    layer = [p for p in retry if p.total == 400_000]
    assert layer[0].completed is not None and layer[0].completed >= seen > 0
    assert layer[-1].completed == 400_000
    assert [p.status for p in retry][-3:] == [
        "verifying sha256 digest",
        "writing manifest",
        "success",
    ]
    assert "tiny:1b" in [m.model for m in ollama.Client(host=fake.url).list().models]


def test_pull_of_an_unknown_model_fails(fake: FakeOllama) -> None:
    with pytest.raises(ollama.ResponseError, match="file does not exist"):
        list(ollama.Client(host=fake.url).pull("nonexistent:7b", stream=True))


def test_blob_upload_and_create(fake: FakeOllama, tmp_path: Path) -> None:
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 300)
    digest = f"sha256:{hashlib.sha256(gguf.read_bytes()).hexdigest()}"
    assert httpx.head(f"{fake.url}/api/blobs/{digest}").status_code == 404
    wrong = httpx.post(f"{fake.url}/api/blobs/sha256:{'0' * 64}", content=gguf.read_bytes())
    assert wrong.status_code == 400
    assert wrong.json()["error"] == (
        f'digest mismatch, expected "sha256:{"0" * 64}", got "{digest}"'
    )
    client = ollama.Client(host=fake.url)
    missing = httpx.post(
        f"{fake.url}/api/create", json={"model": "mine:1", "files": {"model.gguf": digest}}
    )
    assert missing.status_code == 400
    assert client.create_blob(gguf) == digest  # chunked upload
    assert httpx.head(f"{fake.url}/api/blobs/{digest}").status_code == 200
    statuses = [
        p.status for p in client.create("mine:1", files={"model.gguf": digest}, stream=True)
    ]
    assert statuses == [
        "parsing GGUF",
        f"using existing layer {digest}",
        "writing manifest",
        "success",
    ]
    assert "mine:1" in [m.model for m in client.list().models]


def test_token_is_required_when_configured() -> None:
    with FakeOllama(require_token="s3cret") as server:
        assert httpx.get(f"{server.url}/api/tags").status_code == 401
        assert httpx.get(server.url).text == "Ollama is running"
        client = ollama.Client(host=server.url, headers={"Authorization": "Bearer s3cret"})
        assert [m.model for m in client.list().models] == [MODEL]


def test_unknown_path_is_gins_404(fake: FakeOllama) -> None:
    response = httpx.get(f"{fake.url}/api/nothing")
    assert response.status_code == 404 and response.text == "404 page not found"


# -- standalone -------------------------------------------------------------------------------
def test_parse_ollama_host() -> None:
    assert parse_ollama_host("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_ollama_host("http://127.0.0.1:9") == ("127.0.0.1", 9)
    assert parse_ollama_host(":7000") == ("127.0.0.1", 7000)
    assert parse_ollama_host("") == ("127.0.0.1", 11434)


def test_fake_binary_serves_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    dump = tmp_path / "env.json"
    env = {
        **os.environ,
        "OLLAMA_HOST": f"127.0.0.1:{port}",
        "OLLAMA_NUM_PARALLEL": "2",
        "FAKE_OLLAMA_ENV_DUMP": str(dump),
        "FAKE_OLLAMA_MODELS": "gpt-oss-safeguard:120b",
    }
    proc = subprocess.Popen(
        [sys.executable, str(FAKE_BIN), "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60  # a hang bound
        while True:
            try:
                response = httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.05)
        assert response.text == "Ollama is running"
        tags = httpx.get(f"{url}/api/tags").json()["models"]
        assert [m["name"] for m in tags] == ["gpt-oss-safeguard:120b"]
        assert json.loads(dump.read_text())["OLLAMA_NUM_PARALLEL"] == "2"
        version = subprocess.run(
            [sys.executable, str(FAKE_BIN), "-v"], env=env, capture_output=True, text=True
        )
        assert version.stdout == "ollama version is 0.12.10\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0  # bounds for a hang, not timing claims
    finally:
        if proc.poll() is None:
            proc.kill()
        _, stderr = proc.communicate(timeout=60)
    assert f"Listening on 127.0.0.1:{port}" in stderr
    assert '"/api/tags"' in stderr  # one gin-style line per request


def test_fake_binary_reports_a_taken_port(fake: FakeOllama) -> None:
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{fake.port}"}
    result = subprocess.run(
        [sys.executable, str(FAKE_BIN), "serve"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error: listen tcp 127.0.0.1:{fake.port}: bind: address already in use"
    )


def test_version_without_a_server_warns() -> None:
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{free_port()}"}
    result = subprocess.run(
        [sys.executable, str(FAKE_BIN), "--version"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "Warning: could not connect to a running Ollama instance",
        "Warning: client version is 0.12.10",
    ]
