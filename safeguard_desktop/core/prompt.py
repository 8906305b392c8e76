"""Build the Ollama chat request for gpt-oss-safeguard, following OpenAI's usage guide.

The policy is the system message and is byte-identical for every item that
uses it (so Ollama reuses its prompt cache across a batch); the content is the
user message and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from safeguard_desktop.core.vocabulary import CONFIDENCE_LEVELS, EFFORTS, Effort

DEFAULT_MODEL = "gpt-oss-safeguard:20b"
DEFAULT_NUM_CTX = 16384
MIN_NUM_CTX = 2048

BINARY_INSTRUCTION = (
    "\n\n## Output format\n"
    "Answer with a single character: 1 if the content violates this policy, "
    "0 if it does not. Output nothing else."
)
LABEL_INSTRUCTION = (
    "\n\n## Output format\n"
    "Answer with exactly one word: {violation} if the content violates this policy, "
    "{safe} if it does not. Output nothing else."
)
JSON_INSTRUCTION = (
    "\n\n## Output format\n"
    "Answer with one JSON object and nothing else:\n"
    '{{"violation": 0 or 1, "policy_category": "<rule id or tier, or null>", '
    '"rule_ids": ["<rule ids that apply>"], "confidence": '
    + " | ".join(f'"{level}"' for level in CONFIDENCE_LEVELS)
    + "{rationale}}}"
)

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "violation": {"type": "integer", "enum": [0, 1]},
        "policy_category": {"type": ["string", "null"]},
        "rule_ids": {"type": "array", "items": {"type": "string"}},
        "confidence": {"type": "string", "enum": list(CONFIDENCE_LEVELS)},
        "rationale": {"type": "string"},
    },
    "required": ["violation", "policy_category", "rule_ids", "confidence"],
}


class RequestError(ValueError):
    """Options that cannot make a valid request."""


def output_instruction(output: str | None, labels: tuple[str, str] | None) -> str:
    """The instruction appended when the policy does not state its own output format."""
    if output in ("json", "json-rationale"):
        rationale = ', "rationale": "<one or two sentences>"' if output == "json-rationale" else ""
        return JSON_INSTRUCTION.format(rationale=rationale)
    if labels:
        safe, violation = labels
        return LABEL_INSTRUCTION.format(safe=safe, violation=violation)
    return BINARY_INSTRUCTION


def system_prompt(
    body: str, *, output: str | None, labels: tuple[str, str] | None, states_output: bool
) -> str:
    """The exact system message: the policy, plus an output instruction when it lacks one."""
    text = body.strip("\n")
    if states_output:
        return text
    return text + output_instruction(output, labels)


def wants_schema(output: str | None) -> bool:
    return output in ("json", "json-rationale")


@dataclass(frozen=True)
class ChatRequest:
    """One classify call; `to_kwargs()` feeds `ollama.AsyncClient.chat`."""

    model: str
    system: str
    user: str
    think: Effort
    num_ctx: int
    seed: int | None
    temperature: float | None
    format: dict[str, Any] | None = None
    keep_alive: str | None = None
    extra_options: dict[str, Any] = field(default_factory=dict)

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user}]

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"num_ctx": self.num_ctx, **self.extra_options}
        if self.seed is not None:
            opts["seed"] = self.seed
        if self.temperature is not None:
            opts["temperature"] = self.temperature
        return opts

    def to_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": self.messages,
            "think": self.think,
            "options": self.options(),
            "stream": True,
        }
        if self.format is not None:
            kwargs["format"] = self.format
        if self.keep_alive is not None:
            kwargs["keep_alive"] = self.keep_alive
        return kwargs


def build_request(
    *,
    system: str,
    user: str,
    model: str = DEFAULT_MODEL,
    effort: str = "medium",
    num_ctx: int = DEFAULT_NUM_CTX,
    seed: int | None = None,
    temperature: float | None = None,
    schema: bool = False,
    keep_alive: str | None = None,
) -> ChatRequest:
    """Validate options and assemble the request (no I/O)."""
    if effort not in EFFORTS:
        raise RequestError(f"Effort must be one of {', '.join(EFFORTS)}, not {effort!r}.")
    if num_ctx < MIN_NUM_CTX:
        raise RequestError(f"num_ctx must be at least {MIN_NUM_CTX} tokens; got {num_ctx}.")
    if not user.strip():
        raise RequestError("There is no content to classify.")
    if not model.strip():
        raise RequestError("No model is set. Pick one in Settings or pass --model.")
    if seed is not None and seed < 0:
        seed = None
    return ChatRequest(
        model=model,
        system=system,
        user=user,
        think=effort,  # checked above
        num_ctx=num_ctx,
        seed=seed,
        temperature=temperature,
        format=dict(VERDICT_SCHEMA) if schema else None,
        keep_alive=keep_alive,
    )
