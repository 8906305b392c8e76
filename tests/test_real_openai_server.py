"""Reviews against a real OpenAI-compatible server with a real model, not a fake: llama.cpp
(llama-cpp-python's server) serving Gemma 3 270M on the CPU, installed by
.ci/real_server.sh (skipped with the reason when it is not installed).

A 270M model does not follow the verdict format, so only what holds for any answer is
asserted: text streams in, the review ends with a verdict or an answer marked unparsed or
incomplete, the ids and health the server reports, and a server killed mid-answer giving the
typed error and its sentence. The server's window (n_ctx) is small so that an answer that
never stops still ends soon on two cores.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop.core.content import from_text
from safeguard_desktop.core.policy import Policy, parse_policy
from safeguard_desktop.core.prompt import MIN_NUM_CTX
from safeguard_desktop.engine import backend
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.engine.errors import ConnectionDropped
from safeguard_desktop.engine.openai_errors import OpenAIConnectionDropped
from safeguard_desktop.services.review import Reviewer, ReviewOptions, ReviewResult
from safeguard_desktop.store.history import History
from tests.cli_helpers import cli, reset_data_dir  # noqa: F401 (fixture)
from tests.fake_ollama import FakeOllama
from tests.real_server_fixtures import *  # noqa: F403
from tests.real_server_fixtures import RealServer

pytestmark = pytest.mark.slow

# Short, so the prompt is about 200 tokens, and a JSON policy, so the verdict schema is sent as
# `response_format` (which this server refuses: the client must ask again without it).
POLICY = b"""---
id: real-server-spam
output: json
---
# Spam

## Violates (1)
- SP2 Offers that push the reader to buy something.

## Allowed (0)
- SP0 Anything else.
"""
CONTENT = "Buy cheap watches now!!! Limited offer, click the link."
N_CTX = 512  # prompt plus answer: at most ~300 tokens generated
HANG_BOUND_S = 120.0  # per read on the stream; a hang guard, not a measurement


def options(model: str) -> ReviewOptions:
    return ReviewOptions(
        model=model,
        effort="low",
        default_effort="low",
        num_ctx=MIN_NUM_CTX,  # Ollama's option: an OpenAI server's window is its n_ctx
        seed=42,
        temperature=None,
        keep_alive=None,
        moderator="ana",
        source="cli",
    )


def policy() -> Policy:
    return parse_policy(POLICY)


async def review(
    server: RealServer, history: History | None, *, kill_on_first_delta: bool = False
) -> tuple[ReviewResult, list[tuple[str, str]]]:
    """One review through the services, as the CLI runs it; the streamed deltas with it."""
    client = backend.make_client("openai", Endpoint(server.url, timeout=HANG_BOUND_S))
    deltas: list[tuple[str, str]] = []

    def on_delta(kind: str, text: str) -> None:
        deltas.append((kind, text))
        if kill_on_first_delta and server.alive:
            server.kill()

    try:
        reviewer = Reviewer(client, options(server.model), history)
        result = await reviewer.review(policy(), from_text(CONTENT), on_delta=on_delta)
    finally:
        await client.aclose()
    return result, deltas


def test_a_review_runs_on_a_real_server_with_a_real_model(
    start_real_server: Any, tmp_path: Path
) -> None:
    server: RealServer = start_real_server(n_ctx=N_CTX)

    async def go() -> tuple[ReviewResult, list[tuple[str, str]], backend.HostProbe]:
        with History.open(tmp_path / "h.db") as history:
            result, deltas = await review(server, history)
            client = backend.make_client("openai", Endpoint(server.url))
            try:
                probe = await backend.probe(client, server.model)
            finally:
                await client.aclose()
            stored = history.get(result.review_id) if result.review_id else None
            assert stored is not None and stored.status == "done"
            assert stored.answer == result.answer and stored.host == server.url
        return result, deltas, probe

    result, deltas, probe = asyncio.run(go())

    assert result.status == "done" and result.error is None, result.error
    # The text streamed in, as reasoning and/or answer, and is what the review kept.
    assert deltas and all(text for _, text in deltas)
    assert "".join(t for k, t in deltas if k == "thinking") == result.reasoning
    assert "".join(t for k, t in deltas if k == "answer") == result.answer
    assert (result.reasoning + result.answer).strip()
    # A verdict, or the answer kept and marked as not one; which one is up to the model.
    verdict = result.verdict
    assert verdict is not None
    if verdict.label in ("violation", "safe"):
        assert verdict.violation is (verdict.label == "violation")
    else:
        assert verdict.label in ("unparsed", "incomplete") and verdict.violation is None
        assert verdict.raw == result.answer and verdict.problem
    # The server's own ids and health.
    stats = result.stats
    assert stats is not None and stats.done_reason in ("stop", "length")
    assert stats.served_model == server.model  # the id GET /v1/models lists
    assert stats.eval_count > 0
    assert probe.healthy and probe.has_model and probe.problem is None
    assert probe.models == (server.model,) and probe.kind == "openai"


def test_a_server_killed_mid_answer_fails_the_review_with_its_sentence(
    start_real_server: Any,
) -> None:
    server: RealServer = start_real_server(n_ctx=N_CTX)

    result, deltas = asyncio.run(review(server, None, kill_on_first_delta=True))

    assert not server.alive and deltas  # killed on the first text it sent
    assert result.status == "failed" and result.verdict is None
    error = result.error
    assert isinstance(error, OpenAIConnectionDropped) and isinstance(error, ConnectionDropped)
    assert str(error).startswith("The connection to the model server was lost mid-answer")
    assert "check the server and try again" in str(error)
    assert "Ollama" not in str(error)
    # What had streamed before the cut is kept for the moderator.
    assert deltas[0][1] in result.reasoning + result.answer


# --- the CLI, and a queue over the real server beside a fake Ollama host -------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def test_classify_with_host_on_the_real_server_prints_a_verdict_and_its_reasoning(
    start_real_server: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path
) -> None:
    server: RealServer = start_real_server(n_ctx=N_CTX)
    policy_file = tmp_path / "spam.md"
    policy_file.write_bytes(POLICY)
    code, out, err = cli(capsys, data_dir, "classify", "--host", server.url + "/v1",
                         "--model", server.model, "--policy", str(policy_file),
                         "--effort", "low", "--text", CONTENT, "--json")  # fmt: skip
    assert code in (0, 3), err  # 3: the answer is not a verdict (a 270M model's may not be)
    result = json.loads(out)
    assert (result["reasoning"] + result["answer"]).strip()
    assert "verdict" in result
    listed = json.loads(cli(capsys, data_dir, "history", "list", "--json")[1])
    shown = json.loads(cli(capsys, data_dir, "history", "show", str(listed[0]["id"]), "--json")[1])
    assert shown["backend"] == "openai" and shown["served_model"] == server.model
    assert shown["host"] == server.url + "/v1"


def test_a_queue_over_the_real_server_and_a_fake_ollama_host(
    start_real_server: Any, capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path
) -> None:
    server: RealServer = start_real_server(n_ctx=N_CTX)
    policy_file = tmp_path / "spam.md"
    policy_file.write_bytes(POLICY)
    items = tmp_path / "items.jsonl"
    items.write_text(
        "".join(json.dumps({"text": f"{CONTENT} #{i}"}) + "\n" for i in range(1, 7)),
        encoding="utf-8",
    )
    with FakeOllama(token_rate=20_000, parallel=2) as fake:
        data_dir.mkdir(parents=True)
        (data_dir / "settings.json").write_text(json.dumps({"host": fake.url, "effort": "low"}))
        code, _, err = cli(capsys, data_dir, "hosts", "add", "real", server.url + "/v1",
                           "--model", server.model, "--slots", "1")  # fmt: skip
        assert code == 0, err
        assert cli(capsys, data_dir, "queue", "create", "q", "--from", str(items),
                   "--policy", str(policy_file))[0] == 0  # fmt: skip
        code, out, err = cli(capsys, data_dir, "queue", "run", "q", "--parallel", "2")
        assert code == 0, err
        assert "6 of 6 items classified, 0 failed" in out
    rows = json.loads(cli(capsys, data_dir, "queue", "items", "q", "--json")[1])
    hosts = {v["host"] for r in rows for v in r["verdicts"]}
    assert hosts == {fake.url, server.url + "/v1"}  # each host judged at least one item
    review_ids = [v["review_id"] for r in rows for v in r["verdicts"]]
    assert len(set(review_ids)) == 6
