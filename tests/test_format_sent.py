"""A JSON-output review sends Ollama the verdict schema as `format`, when the server has it.

Run through the public CLI in-process against the fake Ollama, and checked on the requests the
fake recorded: the fake answers JSON for a JSON policy either way (the policy text asks for it),
so only the recorded request shows whether the output was constrained.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import main
from tests.fake_ollama import FakeOllama

JSON_POLICY = """---
id: pets
title: Pet talk
output: json
---
# Pet talk

## Violates (1)
- PT2.a Insults aimed at a person's pet.

## Does not violate (0)
- PT0.a Any other talk about pets.
"""
BINARY_POLICY = JSON_POLICY.replace("output: json\n", "")
VERDICT_KEYS = {"violation", "policy_category", "rule_ids", "confidence"}


@pytest.fixture(autouse=True)
def _reset_data_dir() -> Iterator[None]:
    yield
    paths.set_data_dir(None)


def classify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake: FakeOllama, policy: str, text: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `classify --json`; return (printed result, the /api/chat request body)."""
    if "\n" in policy:
        path = tmp_path / "policy.md"
        path.write_text(policy, encoding="utf-8")
        policy = str(path)
    argv = ["--data-dir", str(tmp_path / "data"), "classify", "--policy", policy]
    code = main([*argv, "--text", text, "--json", "--host", fake.url])
    out, err = capsys.readouterr()
    assert code == 0, err
    chats = fake.requests_to("/api/chat")
    assert len(chats) == 1
    return json.loads(out), chats[0].json


def assert_verdict_schema(fmt: object) -> dict[str, Any]:
    assert isinstance(fmt, dict), f"format must be a JSON schema object, got {fmt!r}"
    assert fmt["type"] == "object"
    props = fmt["properties"]
    assert set(props) >= VERDICT_KEYS
    assert props["violation"]["enum"] == [0, 1]
    assert props["confidence"]["enum"] == ["low", "medium", "high"]
    assert props["rule_ids"]["type"] == "array"
    assert "violation" in fmt["required"]
    return fmt


@pytest.mark.parametrize("version", ["0.12.10", "0.12.4", "0.13.0"])
@pytest.mark.parametrize(
    ("policy", "text", "violation"),
    [
        ("spam-scams", "Buy now at example.test, limited offer!", True),
        ("harassment", "See you at the meeting tomorrow", False),
        (JSON_POLICY, "Your cat is an idiot", True),
    ],
    ids=["spam-scams", "harassment", "output-json"],
)
def test_json_policy_sends_the_verdict_schema(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    version: str,
    policy: str,
    text: str,
    violation: bool,
) -> None:
    with FakeOllama(token_rate=20_000, version=version) as fake:
        result, request = classify(tmp_path, capsys, fake, policy, text)
    fmt = assert_verdict_schema(request.get("format"))
    assert result["verdict"]["violation"] is violation
    answer = json.loads(result["answer"])
    assert VERDICT_KEYS <= set(answer) <= set(fmt["properties"])


@pytest.mark.parametrize("version", ["0.12.3", "0.11.10", "0.9.0"])
def test_older_server_gets_no_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], version: str
) -> None:
    """Before 0.12.4 Ollama constrains the thinking phase too, so the schema must not be sent."""
    with FakeOllama(token_rate=20_000, version=version) as fake:
        result, request = classify(tmp_path, capsys, fake, "spam-scams", "Buy now, click here")
    assert "format" not in request
    # The policy's own instructions still get a JSON answer from the model.
    assert result["verdict"]["violation"] is True
    assert set(json.loads(result["answer"])) >= VERDICT_KEYS


def test_binary_policy_gets_no_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeOllama(token_rate=20_000) as fake:
        result, request = classify(tmp_path, capsys, fake, BINARY_POLICY, "Your cat is an idiot")
    assert "format" not in request
    assert result["answer"] == "1" and result["verdict"]["violation"] is True
