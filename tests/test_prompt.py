"""The request sent to Ollama: what the model sees and which options travel with it."""

from __future__ import annotations

import pytest

from safeguard_desktop.core.prompt import (
    BINARY_INSTRUCTION,
    RequestError,
    build_request,
    output_instruction,
    system_prompt,
)

POLICY = "# Harassment\n\nR1 Insults aimed at a person violate.\n"


def test_policy_is_system_message_and_content_is_user_message() -> None:
    req = build_request(system="POLICY TEXT", user="hello there", model="m", effort="high")
    kwargs = req.to_kwargs()
    assert kwargs["messages"] == [
        {"role": "system", "content": "POLICY TEXT"},
        {"role": "user", "content": "hello there"},
    ]
    assert kwargs["think"] == "high"
    assert kwargs["stream"] is True
    assert kwargs["model"] == "m"


def test_num_ctx_always_explicit_and_seed_temperature_recorded() -> None:
    req = build_request(system="p", user="u", num_ctx=8192, seed=7, temperature=0.5)
    assert req.to_kwargs()["options"] == {"num_ctx": 8192, "seed": 7, "temperature": 0.5}
    default = build_request(system="p", user="u")
    assert default.to_kwargs()["options"]["num_ctx"] >= 8192


def test_negative_seed_means_let_ollama_pick() -> None:
    req = build_request(system="p", user="u", seed=-1)
    assert "seed" not in req.to_kwargs()["options"]
    assert req.seed is None


@pytest.mark.parametrize("effort", ["none", "true", "", "HIGH"])
def test_effort_must_be_low_medium_high(effort: str) -> None:
    with pytest.raises(RequestError, match="low, medium, high"):
        build_request(system="p", user="u", effort=effort)


def test_small_context_and_empty_content_refused() -> None:
    with pytest.raises(RequestError, match="num_ctx"):
        build_request(system="p", user="u", num_ctx=512)
    with pytest.raises(RequestError, match="no content"):
        build_request(system="p", user="   \n")


def test_system_prompt_is_byte_identical_for_the_same_policy() -> None:
    a = system_prompt(POLICY, output="json-rationale", labels=None, states_output=False)
    b = system_prompt(POLICY, output="json-rationale", labels=None, states_output=False)
    assert a == b and a.startswith("# Harassment")
    reqs = [build_request(system=a, user=f"item {i}") for i in range(3)]
    assert len({r.messages[0]["content"] for r in reqs}) == 1


def test_output_instruction_added_only_when_policy_lacks_one() -> None:
    assert system_prompt(POLICY, output=None, labels=None, states_output=True) == POLICY.strip("\n")
    assert system_prompt(POLICY, output=None, labels=None, states_output=False).endswith(
        BINARY_INSTRUCTION
    )
    labelled = output_instruction(None, ("VALID", "INVALID"))
    assert "INVALID if the content violates" in labelled and "VALID if it does not" in labelled
    assert '"rationale"' in output_instruction("json-rationale", None)
    assert '"rationale"' not in output_instruction("json", None)


def test_schema_only_when_asked() -> None:
    assert "format" not in build_request(system="p", user="u").to_kwargs()
    fmt = build_request(system="p", user="u", schema=True).to_kwargs()["format"]
    assert fmt["properties"]["violation"]["enum"] == [0, 1]
