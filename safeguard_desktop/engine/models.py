"""Models on an Ollama server: list, loaded, show/capabilities, pull, delete, warm-up, unload.

Plain httpx on `OllamaClient.http` (auth headers included) for every call, so one error
mapping covers them all. Long calls report `Progress` through a callback; cancel them by
cancelling the task that awaits them (the HTTP stream is closed with it). A cancelled pull
resumes where it stopped when it is started again: Ollama keeps the downloaded parts.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from safeguard_desktop.engine.client import OllamaClient, map_transport_error
from safeguard_desktop.engine.errors import (
    ModelMissing,
    PullFailed,
    QueueFull,
    ServerError,
    Unauthorized,
)
from safeguard_desktop.engine.progress import Progress, ProgressCallback, RateMeter, emit

log = logging.getLogger("safeguard.models")
REQUIRED_CAPABILITY = "thinking"


@dataclass(frozen=True)
class ModelInfo:
    """One installed model (`/api/tags`)."""

    name: str
    size: int
    digest: str
    modified_at: str
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""
    format: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class LoadedModel:
    """One model in memory (`/api/ps`)."""

    name: str
    size: int
    size_vram: int
    expires_at: str
    context_length: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class ModelDetails:
    """What `/api/show` says about a model that matters here."""

    name: str
    capabilities: tuple[str, ...]
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""
    context_length: int | None = None
    parameters: str = ""
    license: str = ""

    @property
    def has_thinking(self) -> bool:
        return REQUIRED_CAPABILITY in self.capabilities

    def warnings(self) -> list[str]:
        if self.has_thinking:
            return []
        return [
            f"{self.name} has no 'thinking' capability, so it returns no reasoning: "
            "gpt-oss-safeguard has it; check that this is the model you meant."
        ]

    def to_json(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["capabilities"] = list(self.capabilities)
        data["warnings"] = self.warnings()
        return data


@dataclass(frozen=True)
class PullResult:
    name: str
    total: int
    resumed_from: float | None


# -- HTTP plumbing -------------------------------------------------------------------------------
def _detail(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return resp.text[:200]


def raise_for(resp: httpx.Response, *, model: str | None = None) -> None:
    """Map an HTTP error answer to a typed error (the body must have been read)."""
    code = resp.status_code
    if code < 400:
        return
    detail = _detail(resp)
    if code == 404 and model:
        raise ModelMissing(model, detail=detail)
    if code in (401, 403):
        raise Unauthorized(detail=detail)
    if code == 503:
        raise QueueFull(detail=detail)
    raise ServerError(f"Ollama answered with HTTP {code}.", detail=detail)


async def request(
    client: OllamaClient, method: str, path: str, *, model: str | None = None, **kwargs: Any
) -> httpx.Response:
    try:
        resp = await client.http.request(method, path, **kwargs)
    except (httpx.HTTPError, OSError) as exc:
        raise map_transport_error(exc, client.endpoint, started=False) from None
    raise_for(resp, model=model)
    return resp


@asynccontextmanager
async def stream_lines(
    client: OllamaClient, path: str, body: Mapping[str, Any], *, model: str | None = None
) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    """POST and iterate the NDJSON answer; `{"error": ...}` lines raise `ServerError`."""
    started = False
    try:
        async with client.http.stream("POST", path, json=dict(body)) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                raise_for(resp, model=model)

            async def lines() -> AsyncIterator[dict[str, Any]]:
                nonlocal started
                async for line in resp.aiter_lines():
                    if not line.strip():
                        continue
                    started = True
                    try:
                        data = json.loads(line)
                    except ValueError:
                        raise ServerError(
                            "Ollama sent a line that is not JSON.", detail=line[:120]
                        ) from None
                    if isinstance(data, dict) and data.get("error"):
                        raise ServerError("Ollama reported an error.", detail=str(data["error"]))
                    if isinstance(data, dict):
                        yield data

            yield lines()
    except (httpx.HTTPError, OSError) as exc:
        raise map_transport_error(exc, client.endpoint, started=started) from None


# -- queries -------------------------------------------------------------------------------------
async def list_models(client: OllamaClient) -> list[ModelInfo]:
    data = (await request(client, "GET", "/api/tags")).json()
    out = []
    for m in data.get("models") or []:
        details = m.get("details") or {}
        out.append(
            ModelInfo(
                name=str(m.get("name") or m.get("model") or ""),
                size=int(m.get("size") or 0),
                digest=str(m.get("digest") or ""),
                modified_at=str(m.get("modified_at") or ""),
                family=str(details.get("family") or ""),
                parameter_size=str(details.get("parameter_size") or ""),
                quantization=str(details.get("quantization_level") or ""),
                format=str(details.get("format") or ""),
            )
        )
    return out


async def loaded_models(client: OllamaClient) -> list[LoadedModel]:
    data = (await request(client, "GET", "/api/ps")).json()
    return [
        LoadedModel(
            name=str(m.get("name") or m.get("model") or ""),
            size=int(m.get("size") or 0),
            size_vram=int(m.get("size_vram") or 0),
            expires_at=str(m.get("expires_at") or ""),
            context_length=int(m["context_length"]) if m.get("context_length") else None,
        )
        for m in data.get("models") or []
    ]


async def show_model(client: OllamaClient, name: str) -> ModelDetails:
    data = (await request(client, "POST", "/api/show", model=name, json={"model": name})).json()
    details = data.get("details") or {}
    info = data.get("model_info") or {}
    ctx = trained_context(info)
    return ModelDetails(
        name=name,
        capabilities=tuple(str(c) for c in data.get("capabilities") or ()),
        family=str(details.get("family") or ""),
        parameter_size=str(details.get("parameter_size") or ""),
        quantization=str(details.get("quantization_level") or ""),
        context_length=int(ctx) if isinstance(ctx, int | float) else None,
        parameters=str(data.get("parameters") or ""),
        license=(str(data.get("license") or "").strip().splitlines() or [""])[0],
    )


def trained_context(model_info: Mapping[str, Any]) -> int | None:
    """`<arch>.context_length` of `/api/show`'s model_info: the most tokens the model takes.

    Only the architecture's own key: gpt-oss also has `gptoss.rope.scaling.
    original_context_length` (4096), which is not its window.
    """
    arch = model_info.get("general.architecture")
    value = model_info.get(f"{arch}.context_length") if isinstance(arch, str) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return int(value)


async def context_length(client: OllamaClient, name: str) -> int | None:
    """The model's context length from `/api/show`, or None when the server does not say."""
    return (await show_model(client, name)).context_length


async def delete_model(client: OllamaClient, name: str) -> None:
    await request(client, "DELETE", "/api/delete", model=name, json={"model": name})


async def warm_up(client: OllamaClient, name: str, keep_alive: str | int | None) -> None:
    """Load the model now (an empty chat), so the first review does not wait for it."""
    body: dict[str, Any] = {"model": name, "messages": [], "stream": False}
    if keep_alive not in (None, ""):
        body["keep_alive"] = keep_alive
    await request(client, "POST", "/api/chat", model=name, json=body)


async def unload(client: OllamaClient, name: str) -> None:
    """Free the model's memory now (`keep_alive: 0`)."""
    body = {"model": name, "messages": [], "stream": False, "keep_alive": 0}
    await request(client, "POST", "/api/chat", model=name, json=body)


# -- pull ----------------------------------------------------------------------------------------
class PullMeter:
    """Turns Ollama's per-layer pull lines into overall progress with rate, ETA and resume."""

    def __init__(self, meter: RateMeter | None = None) -> None:
        self.meter = meter or RateMeter()
        self.totals: dict[str, int] = {}
        self.done: dict[str, int] = {}
        self.resumed_from: float | None = None
        self._seen_bytes = False

    def update(self, line: Mapping[str, Any]) -> Progress:
        status = str(line.get("status") or "")
        digest = line.get("digest")
        if digest and line.get("total"):
            digest = str(digest)
            first = digest not in self.totals
            self.totals[digest] = int(line["total"])
            completed = int(line.get("completed") or 0)
            if first and completed > 0 and not self._seen_bytes and self.resumed_from is None:
                self.resumed_from = 100.0 * completed / max(1, self.totals[digest])
            self._seen_bytes = self._seen_bytes or (not first and completed > 0)
            self.done[digest] = max(self.done.get(digest, 0), completed)
        total, completed = sum(self.totals.values()), sum(self.done.values())
        rate = self.meter.update(completed)
        return Progress(
            phase="done" if status == "success" else "pulling",
            status=status,
            completed=completed,
            total=total,
            rate=rate,
            eta=self.meter.eta(completed, total),
            resumed_from=self.resumed_from,
            digest=str(digest) if digest else None,
        )


async def pull_model(
    client: OllamaClient, name: str, on_progress: ProgressCallback | None = None
) -> PullResult:
    """Download a model with progress. Cancel the awaiting task to stop; pull again to resume."""
    meter = PullMeter()
    last: Progress | None = None
    try:
        async with stream_lines(
            client, "/api/pull", {"model": name, "stream": True}, model=name
        ) as lines:
            async for line in lines:
                last = meter.update(line)
                emit(on_progress, last)
    except ModelMissing as exc:
        raise PullFailed(name, detail=exc.detail) from None
    except ServerError as exc:
        raise PullFailed(name, detail=exc.detail or exc.message) from None
    if last is None or last.status != "success":
        raise PullFailed(name, detail="the download ended before Ollama reported success")
    return PullResult(name, last.total, meter.resumed_from)
