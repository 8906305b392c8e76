"""The interface both model-server backends share, and the calls that differ between them.

`OllamaClient` (native Ollama API, the default: only it takes `num_ctx`) and `OpenAIClient`
(`/v1/chat/completions`: vLLM, llama-server, LM Studio) both satisfy `Backend`: `classify`
yields the same `ThinkingDelta` / `AnswerDelta` / `Done` events and raises the same typed
errors (engine/errors.py; the OpenAI ones subclass them). What only one of them can answer
(digest, context length from `/api/show` or `/v1/models`, the model list) goes through the
functions below, which take either.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

from safeguard_desktop.core.prompt import ChatRequest
from safeguard_desktop.engine import models as ollama_models
from safeguard_desktop.engine.client import Event, OllamaClient
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.engine.errors import EngineError
from safeguard_desktop.engine.openai_client import OpenAIClient

BackendKind = Literal["ollama", "openai"]
KINDS: tuple[str, ...] = get_args(BackendKind)


class Backend(Protocol):
    """What a review needs from a model server."""

    @property
    def kind(self) -> str: ...  # "ollama" | "openai": recorded with each review

    @property
    def endpoint(self) -> Endpoint: ...  # `.url` is the host recorded with each review

    def classify(self, request: ChatRequest) -> AsyncGenerator[Event, None]: ...

    async def version(self) -> str | None: ...

    async def aclose(self) -> None: ...


def make_client(kind: str, endpoint: Endpoint) -> OllamaClient | OpenAIClient:
    """The client for a host of this kind."""
    if kind == "ollama":
        return OllamaClient(endpoint)
    if kind == "openai":
        return OpenAIClient(endpoint)
    raise ValueError(f"Unknown server kind {kind!r}: expected one of {', '.join(KINDS)}.")


async def model_names(client: Backend) -> list[str]:
    """The models the server has (`/api/tags` names, `/v1/models` ids)."""
    if isinstance(client, OpenAIClient):
        return await client.model_ids()
    if isinstance(client, OllamaClient):
        return [m.name for m in await ollama_models.list_models(client)]
    return []


async def context_limit(client: Backend, model: str) -> int | None:
    """The most tokens `model` takes on this server, when the server says."""
    if isinstance(client, OpenAIClient):
        return await client.context_length(model)
    if isinstance(client, OllamaClient):
        return await ollama_models.context_length(client, model)
    return None


async def model_digest(client: Backend, model: str) -> str | None:
    """The installed weights' digest (Ollama); None for OpenAI-compatible servers, which do
    not say which weights they serve."""
    if isinstance(client, OllamaClient):
        names = {model, f"{model}:latest"}
        listed = await ollama_models.list_models(client)
        return next((m.digest for m in listed if m.name in names), None)
    return None


@dataclass(frozen=True)
class HostProbe:
    """One look at a host: for the Server panel's host list and `hosts list`."""

    kind: str
    url: str
    healthy: bool
    version: str | None = None
    models: tuple[str, ...] = ()
    has_model: bool | None = None  # None: no model was asked about, or the list is unknown
    digest: str | None = None  # the asked model's (Ollama only)
    problem: str | None = None  # why it is not healthy, or lacks the model

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["models"] = list(self.models)
        return data


async def probe(client: Backend, model: str | None = None) -> HostProbe:
    """Health, version and models of a host; never raises EngineError (it is the problem)."""
    kind, url = client.kind, client.endpoint.url
    try:
        if isinstance(client, OpenAIClient):
            health = await client.health()
            if not health.ok:
                not_ready = f"The server at {url} is not ready: {health.detail}."
                return HostProbe(kind, url, False, problem=not_ready)
        version = await client.version()
        names = await model_names(client)
        digest = await model_digest(client, model) if model else None
    except EngineError as exc:
        return HostProbe(kind, url, False, problem=str(exc))
    has = None
    problem = None
    if model:
        has = model in names or (kind == "ollama" and f"{model}:latest" in names)
        if not has:
            problem = f"{url} has no model named {model}."
    return HostProbe(kind, url, True, version, tuple(names), has, digest, problem)
