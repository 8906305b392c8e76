"""The policy is never silently cut: the window fits policy + content + reasoning, or the
review is refused, and a prompt Ollama cut anyway is flagged on the verdict."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from safeguard_desktop import paths
from safeguard_desktop.cli import main
from safeguard_desktop.core.tokens import (
    estimate_tokens,
    floor_tokens,
    prompt_estimate,
    reasoning_budget,
    tokens_needed,
    truncated,
    window_size,
)
from safeguard_desktop.services import review as review_service
from tests.fake_ollama import FakeOllama

MODEL = "gpt-oss-safeguard:20b"
CONTENT = "Buy now and save big"
FIRST_RULE = "LP2.a"  # the policy's first rule: the model cites it only if it saw the start


def long_policy(lines: int = 547) -> str:
    """A plain-text policy of about 20.9k tokens (the size that was sent with num_ctx 16384)."""
    head = (
        "# Long promotions policy\n\n## Instructions\nDecide whether the content pushes the "
        "reader to buy. Answer 1 if it does, 0 if it does not.\n\n## Violates (1)\n"
        f"- {FIRST_RULE} Pushing the reader to buy something they did not ask for.\n"
    )
    body = "".join(
        f"- LP5.{i} Offers in category {i}: wording that urges the reader to buy, subscribe "
        "or click through to a seller they did not ask about, in any language.\n"
        for i in range(lines)
    )
    return head + body


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama(token_rate=50_000) as server:
        yield server


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"
    paths.set_data_dir(None)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "long-promotions.txt"
    path.write_text(long_policy(), encoding="utf-8")
    return path


def classify(capsys, tmp_path: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--data-dir", str(tmp_path / "data"), "classify", *args])
    out, err = capsys.readouterr()
    return code, out, err


def set_context_length(fake: FakeOllama, tokens: int) -> None:
    """The model's trained context (what /api/show reports, and what Ollama caps num_ctx at)."""
    entry = fake.registry.get(MODEL)
    assert entry is not None
    fake.registry.add(dataclasses.replace(entry, context_length=tokens))


# -- the estimate, on hand-counted examples ------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "estimate", "floor", "o200k"),
    [
        # o200k counts by hand: "Hello" " world"
        ("Hello world", 3, 1, 2),
        # "The" " quick" " brown" " fox" " jumps" " over" " the" " lazy" " dog" "."
        ("The quick brown fox jumps over the lazy dog.", 11, 6, 10),
        # 2 ASCII chars (1) + 9 Cyrillic letters (5); "Привет" "," " мир"
        ("Привет, мир", 6, 1, 3),
        # one token per CJK character; "你好" "，" "世界"
        ("你好，世界", 5, 1, 3),
        ("", 0, 0, 0),
    ],
)
def test_estimate_brackets_hand_counted_tokens(
    text: str, estimate: int, floor: int, o200k: int
) -> None:
    assert estimate_tokens(text) == estimate
    assert floor_tokens(text) == floor
    assert floor <= o200k <= estimate


def test_window_is_the_setting_at_least_and_grows_in_steps_to_the_model_limit() -> None:
    assert [reasoning_budget(e) for e in ("low", "medium", "high")] == [2560, 4608, 8704]
    assert tokens_needed(20_000, "medium") == 25_000 + 4_608
    assert window_size(tokens_needed(800, "medium"), 16_384, 131_072) == 16_384
    assert window_size(29_608, 16_384, 131_072) == 32_768
    assert window_size(29_608, 65_536, 131_072) == 65_536  # the setting is a minimum
    assert window_size(29_608, 16_384, 30_000) == 30_000  # never past the model
    assert window_size(29_608, 16_384, None) == 32_768  # limit unknown


def test_truncation_shows_under_the_floor_or_as_a_full_window() -> None:
    assert not truncated(20_950, floor=14_000, num_ctx=32_768)
    assert truncated(8_192, floor=14_000, num_ctx=32_768)  # a server that held 8k
    assert truncated(16_384, floor=2_000, num_ctx=16_384)  # Ollama kept exactly num_ctx
    assert not truncated(0, floor=14_000, num_ctx=32_768)  # not reported


# -- against the fake server ---------------------------------------------------------------------
def test_the_fake_cuts_a_long_prompt_from_the_front_like_ollama(fake: FakeOllama) -> None:
    """What happened before: 16384 tokens kept, the start of the policy (its first rule) gone."""
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": long_policy()},
            {"role": "user", "content": CONTENT},
        ],
        "think": "medium",
        "stream": False,
        "options": {"num_ctx": 16_384},
    }
    data = httpx.post(f"{fake.url}/api/chat", json=body, timeout=30).json()
    assert data["prompt_eval_count"] == 16_384
    assert FIRST_RULE not in data["message"]["thinking"]
    assert "LP5." in data["message"]["thinking"]


def test_a_20k_token_policy_is_sent_with_a_window_that_holds_it(
    fake: FakeOllama, policy_file: Path, capsys, tmp_path: Path
) -> None:
    code, out, err = classify(
        capsys, tmp_path, "--policy", str(policy_file), "--text", CONTENT, "--host", fake.url
    )
    assert code == 0, err
    (chat,) = fake.requests_to("/api/chat")
    system = chat.json["messages"][0]["content"]
    assert prompt_estimate(system, CONTENT) == 20_922  # the 20.9k-token policy
    assert chat.json["options"]["num_ctx"] == 32_768
    # The model read the whole prompt and applied the policy's first rule.
    assert f"The closest rule is {FIRST_RULE}." in out and "VIOLATION" in out
    assert "truncated" not in err


def test_a_policy_beyond_the_models_context_is_refused_before_sending(
    fake: FakeOllama, policy_file: Path, capsys, tmp_path: Path
) -> None:
    set_context_length(fake, 16_384)
    code, out, err = classify(
        capsys,
        tmp_path,
        "--policy",
        str(policy_file),
        "--text",
        CONTENT,
        "--host",
        fake.url,
        "--json",
    )
    assert code == 1
    data = json.loads(out)
    assert data["status"] == "failed" and data["verdict"] is None
    assert "holds at most 16,384 tokens, so it was not sent" in data["error"]
    assert "take about 20,922 tokens" in data["error"]  # the estimate
    assert "holds at most 16,384 tokens" in err
    assert fake.requests_to("/api/chat") == []


def test_a_prompt_cut_by_the_server_anyway_is_flagged(
    fake: FakeOllama, policy_file: Path, capsys, tmp_path: Path, monkeypatch
) -> None:
    """A server whose /api/show gives no context length and holds only 8192 tokens."""

    async def unknown(client: object, name: str) -> None:
        return None

    monkeypatch.setattr(review_service, "server_context_limit", unknown)
    set_context_length(fake, 8_192)
    code, out, err = classify(
        capsys, tmp_path, "--policy", str(policy_file), "--text", CONTENT, "--host", fake.url
    )
    assert code == 0  # the verdict stands, with the warning beside it
    assert FIRST_RULE not in out  # the model never saw the first rule
    warnings = [line for line in err.splitlines() if "policy may have been truncated" in line]
    assert len(warnings) == 1
    assert "Ollama read 8,192 prompt tokens" in warnings[0]
