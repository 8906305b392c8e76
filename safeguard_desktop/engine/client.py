"""Async classify stream over `ollama.AsyncClient`, with error mapping.

Yields typed events (reasoning delta, answer delta, done with stats). Cancel
by cancelling the task that iterates: the HTTP stream is closed with it.

The `ollama` library is imported when the first review starts, not with this module: it
builds pydantic models at import (150-400 ms, tens of MiB) that nothing else needs. Health
checks and model calls go through plain httpx (`OllamaClient.http`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import httpx

from safeguard_desktop.engine.endpoint import ollama_host_hidden

if TYPE_CHECKING:
    import ollama

from safeguard_desktop.core.prompt import ChatRequest
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.engine.errors import (
    ConnectionDropped,
    EngineError,
    ModelMissing,
    QueueFull,
    RequestTimeout,
    ServerError,
    ServerUnreachable,
    StreamFailed,
    Unauthorized,
)

log = logging.getLogger("safeguard.engine")


@dataclass(frozen=True)
class ThinkingDelta:
    text: str


@dataclass(frozen=True)
class AnswerDelta:
    text: str


@dataclass(frozen=True)
class Stats:
    """Timings of one answer; Ollama's durations are nanoseconds."""

    done_reason: str | None = None
    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0
    first_token_s: float | None = None  # wall clock from request to first token
    wall_s: float = 0.0
    served_model: str | None = None  # the model id the server says answered (provenance)

    @property
    def tokens_per_s(self) -> float | None:
        if self.eval_count and self.eval_duration:
            return self.eval_count / (self.eval_duration / 1e9)
        return None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tokens_per_s"] = self.tokens_per_s
        return d


@dataclass(frozen=True)
class Done:
    stats: Stats


Event = ThinkingDelta | AnswerDelta | Done


def map_response_error(exc: ollama.ResponseError, *, model: str, in_stream: bool) -> EngineError:
    detail = str(exc.error)
    code = exc.status_code
    if code == 404 and "not found" in detail.lower():
        return ModelMissing(model, detail=detail)
    if code == 503:
        return QueueFull(detail=detail)
    if code in (401, 403):
        return Unauthorized(detail=detail)
    if code == -1 or in_stream:
        return StreamFailed(detail=detail)
    return ServerError(f"Ollama answered with HTTP {code}.", detail=detail)


def map_transport_error(exc: BaseException, endpoint: Endpoint, *, started: bool) -> EngineError:
    """httpx and socket failures, before or after the first byte of the answer."""
    if isinstance(exc, httpx.ConnectTimeout):
        return ServerUnreachable(endpoint.url, detail="connection timed out")
    if isinstance(exc, httpx.TimeoutException):
        return RequestTimeout(endpoint.timeout)
    if isinstance(exc, ConnectionError | httpx.ConnectError) and not started:
        return ServerUnreachable(endpoint.url)
    return ConnectionDropped(detail=str(exc) or type(exc).__name__)


_ollama: Any = None  # the module, once imported
_ollama_import = threading.Lock()  # one import; other callers wait for it to finish


def import_ollama() -> Any:
    """The `ollama` module (imported on first call, with OLLAMA_HOST hidden: see
    `ollama_host_hidden`)."""
    global _ollama
    with _ollama_import:
        if _ollama is None:
            with ollama_host_hidden():
                import ollama
            _ollama = ollama
    return _ollama


async def import_ollama_async() -> Any:
    """`import_ollama` without stopping the event loop: in a thread, unless OLLAMA_HOST is
    set (hiding it from a thread would hide it from the whole process meanwhile)."""
    if _ollama is not None:
        return _ollama
    if "OLLAMA_HOST" in os.environ:
        return import_ollama()
    return await asyncio.to_thread(import_ollama)


async def preload_ollama() -> bool:
    """Import the `ollama` module ahead of its first use, in a thread; True when it is
    imported. Nothing when that would stop the event loop (OLLAMA_HOST set: see
    `import_ollama_async`): the first review imports it then, as without this."""
    if _ollama is None and "OLLAMA_HOST" in os.environ:
        return False
    await import_ollama_async()
    return True


_SURROGATE = re.compile("[\ud800-\udfff]")


def unicode_text(text: str) -> str:
    """Text a server sent, with lone surrogates (a JSON escape such as \\ud800 without its
    pair) replaced by U+FFFD: they cannot be stored, printed or shown."""
    return _SURROGATE.sub("\ufffd", text)


class OllamaClient:
    """One server address; cheap to create, holds one connection pool.

    The `ollama.AsyncClient` (for chat) is made at the first review; `http` (everything
    else) at once. Both share the endpoint's SSL context and wait for its pending token.
    """

    kind = "ollama"  # the backend kind (engine/backend.py); OpenAIClient's is "openai"

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._options = endpoint.httpx_options()
        self._client: ollama.AsyncClient | None = None
        # Plain HTTP for what the ollama client has no call for (/api/version, blobs).
        self.http = httpx.AsyncClient(base_url=endpoint.url, **self._options)  # type: ignore[arg-type]

    @property
    def raw(self) -> ollama.AsyncClient:
        if self._client is None:
            client = import_ollama().AsyncClient(host=self.endpoint.url, **self._options)
            if not self.endpoint.token:
                # The ollama library adds OLLAMA_API_KEY from the environment on its own; the
                # only token we send is the one from the keyring for this host.
                client._client.headers.pop("authorization", None)
            self._client = client
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()  # type: ignore[no-untyped-call]
        await self.http.aclose()

    async def classify(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        """Stream one answer. Raises an `EngineError` subclass on any failure."""
        ollama = await import_ollama_async()
        started = False
        t0 = time.perf_counter()
        first: float | None = None
        try:
            stream = await self.raw.chat(**request.to_kwargs())
            # Close the HTTP stream here, on this loop, however the iteration ends.
            final: Done | None = None
            async with contextlib.aclosing(stream):
                async for chunk in stream:
                    if final is not None:
                        continue  # nothing follows Ollama's final chunk: read to the end
                    started = True
                    msg = chunk.message
                    if msg.thinking:
                        first = first or time.perf_counter() - t0
                        yield ThinkingDelta(unicode_text(msg.thinking))
                    if msg.content:
                        first = first or time.perf_counter() - t0
                        yield AnswerDelta(unicode_text(msg.content))
                    if chunk.done:
                        final = Done(_stats(chunk, first, time.perf_counter() - t0))
            # The response is read to its end before Done is handed out, so the connection
            # goes back to the pool (closing mid-response cost a new TCP connection per
            # review: 124 connections for 120 evaluation items).
            if final is not None:
                yield final
                return
        except ollama.ResponseError as exc:
            raise map_response_error(exc, model=request.model, in_stream=started) from None
        except json.JSONDecodeError as exc:
            raise StreamFailed(
                "Ollama sent a line that is not JSON; the server may be a different program.",
                detail=str(exc),
            ) from None
        except (httpx.HTTPError, ConnectionError, OSError) as exc:
            raise map_transport_error(exc, self.endpoint, started=started) from None
        # The stream ended without its final `done` chunk.
        raise ConnectionDropped(detail="the answer ended without its final chunk")

    async def version(self) -> str | None:
        """`/api/version` (the ollama client has no call for it)."""
        data = await self.get_json("/api/version")
        value = data.get("version")
        return str(value) if value else None

    async def get_json(self, path: str) -> Mapping[str, Any]:
        try:
            resp = await self.http.get(path)
        except (httpx.HTTPError, OSError) as exc:
            raise map_transport_error(exc, self.endpoint, started=False) from None
        if resp.status_code in (401, 403):
            raise Unauthorized(detail=resp.text[:200])
        if resp.status_code >= 400:
            raise ServerError(
                f"Ollama answered with HTTP {resp.status_code}.", detail=resp.text[:200]
            )
        try:
            data = resp.json()
        except ValueError:
            raise ServerError(
                f"Something that is not Ollama answers at {self.endpoint.url}.",
                detail=resp.text[:120],
            ) from None
        if not isinstance(data, dict):
            raise ServerError(f"Something that is not Ollama answers at {self.endpoint.url}.")
        return data


def _stats(chunk: Any, first: float | None, wall: float) -> Stats:
    return Stats(
        done_reason=chunk.done_reason,
        total_duration=chunk.total_duration or 0,
        load_duration=chunk.load_duration or 0,
        prompt_eval_count=chunk.prompt_eval_count or 0,
        prompt_eval_duration=chunk.prompt_eval_duration or 0,
        eval_count=chunk.eval_count or 0,
        eval_duration=chunk.eval_duration or 0,
        first_token_s=first,
        wall_s=wall,
        served_model=chunk.model or None,
    )
