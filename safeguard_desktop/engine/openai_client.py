"""The OpenAI-compatible backend: `POST /v1/chat/completions` streamed as server-sent events.

For vLLM (OpenAI's recommended way to serve gpt-oss-safeguard at scale), llama.cpp's
llama-server and LM Studio. `OpenAIClient` has the calls `OllamaClient` has and that a
`Reviewer` uses (`classify`, `version`, `aclose`, `endpoint`, `http`) and yields the same
events, so a review runs unchanged on either; see engine/backend.py for the shared interface.

What differs from Ollama, and how it is bridged:

- Reasoning arrives in `delta.reasoning` or `delta.reasoning_content`, or (a server without a
  reasoning parser) as harmony channel text inside `content`, which is split back into
  reasoning and answer (engine/openai_stream.py).
- The effort is sent as `reasoning_effort` and also stated as "Reasoning: <effort>" at the top
  of the system message, where gpt-oss reads it when a server's chat template ignores the
  parameter. The policy stays byte-identical behind that line, so a batch still shares its
  prompt cache.
- The verdict schema (JSON policies) goes as `response_format` of type json_schema. A server
  that refuses it is asked again once without it (the verdict is parsed leniently anyway) and
  is not sent it again for that model (`schema_refused`). `stream_options` is dropped the same
  way; only the token counts need it.
- `num_ctx` and `keep_alive` have no equivalent: the window is fixed when the server starts.
- Stats: token counts from the `usage` chunk (else llama-server's `timings`, else the number of
  chunks), durations measured here unless llama-server reports them; `Stats.served_model` is
  the response's `model`.
- No digest: OpenAI-compatible servers do not say which weights they serve; `model_digest` of
  engine/backend.py is None for them.

Only the configured host is contacted (`Endpoint.httpx_options`: no redirects, no proxy from
the environment), with the host's bearer token when it has one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import urllib.parse
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from safeguard_desktop.core.prompt import ChatRequest
from safeguard_desktop.engine.client import (
    AnswerDelta,
    Done,
    Event,
    Stats,
    ThinkingDelta,
    unicode_text,
)
from safeguard_desktop.engine.endpoint import Endpoint
from safeguard_desktop.engine.errors import EngineError
from safeguard_desktop.engine.openai_errors import (
    NotOpenAICompatible,
    OpenAIConnectionDropped,
    OpenAIServerError,
    OpenAIStreamFailed,
    OpenAIUnauthorized,
    ServerProblem,
    map_problem,
    map_transport,
    read_problem,
    refused_parameter,
)
from safeguard_desktop.engine.openai_stream import (
    DONE,
    HarmonySplitter,
    Piece,
    SSEDecoder,
    SSEEvent,
    delta_texts,
)

log = logging.getLogger("safeguard.engine.openai")

API = "/v1"
CHAT_PATH = f"{API}/chat/completions"
MODELS_PATH = f"{API}/models"
SCHEMA_NAME = "safeguard_verdict"
# Parameters a server may refuse that the review does without: asked again once without them.
OPTIONAL_PARAMETERS = ("response_format", "stream_options")
# Ollama's option names that have an OpenAI equivalent (the rest: fixed at server start).
OPTION_NAMES = {"num_predict": "max_tokens", "top_p": "top_p", "top_k": "top_k", "stop": "stop"}


def split_base(url: str) -> str:
    """The server's root URL: a base URL given with its `/v1` (as OpenAI clients take it) is
    used without it, so `/health` and `/version` are found beside `/v1`."""
    text = url.rstrip("/")
    split = urllib.parse.urlsplit(text)
    if split.path.rstrip("/").endswith(API):
        path = split.path.rstrip("/")[: -len(API)]
        text = urllib.parse.urlunsplit(split._replace(path=path))
    return text


def effort_system(system: str, effort: str) -> str:
    """The system message with the effort stated first, as gpt-oss reads it."""
    line = f"Reasoning: {effort}"
    if system.startswith(line + "\n") or system == line:
        return system
    return f"{line}\n\n{system}"


def verdict_format(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "schema": dict(schema), "strict": True},
    }


def chat_body(request: ChatRequest, *, schema: bool = True) -> dict[str, Any]:
    """The JSON body for one classify request (pure)."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [
            {"role": "system", "content": effort_system(request.system, request.think)},
            {"role": "user", "content": request.user},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "reasoning_effort": request.think,
    }
    if request.seed is not None:
        body["seed"] = request.seed
    if request.temperature is not None:
        body["temperature"] = request.temperature
    for name, value in request.extra_options.items():
        if name in OPTION_NAMES and value is not None:
            body[OPTION_NAMES[name]] = value
    if schema and request.format is not None:
        body["response_format"] = verdict_format(request.format)
    return body


@dataclass(frozen=True)
class ServedModel:
    """One entry of `GET /v1/models`."""

    id: str
    owned_by: str = ""
    context_length: int | None = None  # vLLM's max_model_len, llama-server's n_ctx_train

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Health:
    """Whether the server takes requests: `/health` when it has one, else `/v1/models`."""

    ok: bool
    checked: str  # the path that answered
    detail: str = ""  # the server's words when not ok ("Loading model")


def _served_model(entry: Mapping[str, Any]) -> ServedModel | None:
    ident = entry.get("id")
    if not isinstance(ident, str) or not ident:
        return None
    length: Any = entry.get("max_model_len") or entry.get("context_length")
    meta = entry.get("meta")
    if not length and isinstance(meta, Mapping):
        length = meta.get("n_ctx") or meta.get("n_ctx_train")
    return ServedModel(
        id=ident,
        owned_by=str(entry.get("owned_by") or ""),
        context_length=length if isinstance(length, int) and length > 0 else None,
    )


class _Answer:
    """What one stream has said so far, turned into events and stats."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.first: float | None = None
        self.last: float | None = None
        self.model: str | None = None
        self.finish: str | None = None
        self.chunks = 0
        self.usage: Mapping[str, Any] = {}
        self.timings: Mapping[str, Any] = {}
        self.splitter = HarmonySplitter()
        self.done = False

    def take(self, chunk: Mapping[str, Any]) -> list[Event]:
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if isinstance(chunk.get("usage"), Mapping):
            self.usage = chunk["usage"]
        if isinstance(chunk.get("timings"), Mapping):
            self.timings = chunk["timings"]
        parts = delta_texts(chunk)
        self.finish = parts.finish_reason or self.finish
        pieces: list[Piece] = []
        if parts.reasoning:
            pieces.append(("thinking", parts.reasoning))
        if parts.content:
            pieces.extend(self.splitter.feed(parts.content))
        if parts.reasoning or parts.content:
            self.chunks += 1
        return self._events(pieces)

    def close(self) -> list[Event]:
        events = self._events(self.splitter.close())
        events.append(Done(self.stats()))
        return events

    def _events(self, pieces: list[Piece]) -> list[Event]:
        events: list[Event] = []
        for kind, text in pieces:
            now = time.perf_counter() - self.t0
            self.first = self.first if self.first is not None else now
            self.last = now
            text = unicode_text(text)
            events.append(ThinkingDelta(text) if kind == "thinking" else AnswerDelta(text))
        return events

    def stats(self) -> Stats:
        wall = time.perf_counter() - self.t0
        usage, timings = self.usage, self.timings
        prompt = _int(usage.get("prompt_tokens"))
        if not prompt:
            prompt = _int(timings.get("prompt_n")) + _int(timings.get("cache_n"))
        completion = _int(usage.get("completion_tokens")) or _int(timings.get("predicted_n"))
        first = self.first if self.first is not None else wall
        prompt_ns = _ms_ns(timings.get("prompt_ms")) or int(first * 1e9)
        eval_ns = _ms_ns(timings.get("predicted_ms")) or int(((self.last or first) - first) * 1e9)
        return Stats(
            done_reason=self.finish,
            total_duration=int(wall * 1e9),
            load_duration=0,
            prompt_eval_count=prompt,
            prompt_eval_duration=prompt_ns,
            eval_count=completion or self.chunks,
            eval_duration=eval_ns,
            first_token_s=self.first,
            wall_s=wall,
            served_model=self.model,
        )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _ms_ns(value: Any) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return int(value * 1e6)
    return 0


class OpenAIClient:
    """One OpenAI-compatible server; cheap to create, holds one connection pool."""

    kind = "openai"

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.base_url = split_base(endpoint.url)
        self.http = httpx.AsyncClient(base_url=self.base_url, **endpoint.httpx_options())  # type: ignore[arg-type]
        # Models whose server refused `response_format`: not sent again (one request an item).
        self.schema_refused: set[str] = set()
        self._usage_refused = False

    async def aclose(self) -> None:
        await self.http.aclose()

    # -- classify ---------------------------------------------------------------------------
    def body(self, request: ChatRequest) -> dict[str, Any]:
        body = chat_body(request, schema=request.model not in self.schema_refused)
        if self._usage_refused:
            body.pop("stream_options", None)
        return body

    async def classify(self, request: ChatRequest) -> AsyncGenerator[Event, None]:
        """Stream one answer. Raises an `EngineError` subclass on any failure."""
        body = self.body(request)
        dropped: set[str] = set()
        t0 = time.perf_counter()
        answer = _Answer(t0)
        started = False
        try:
            while True:
                async with self.http.stream("POST", CHAT_PATH, json=body) as resp:
                    if resp.status_code >= 400:
                        await resp.aread()
                        problem = read_problem(resp.status_code, resp.content)
                        param = _optional(problem, body)
                        if param is not None and param not in dropped:
                            dropped.add(param)
                            body = self._without(body, param, request.model, problem)
                            continue
                        raise self._error(problem, request.model, body, resp.headers)
                    started = True
                    events = self._read(resp, answer, request.model, body)
                    async with contextlib.aclosing(events):
                        async for event in events:
                            yield event
                    return
        except EngineError:
            raise
        except json.JSONDecodeError as exc:
            raise OpenAIStreamFailed(
                "The server sent an event that is not JSON; it may not be OpenAI-compatible.",
                detail=str(exc),
            ) from None
        except (httpx.HTTPError, ConnectionError, OSError) as exc:
            raise map_transport(
                exc, host=self.endpoint.url, timeout=self.endpoint.timeout, started=started
            ) from None

    def _without(
        self, body: dict[str, Any], param: str, model: str, problem: ServerProblem
    ) -> dict[str, Any]:
        log.warning(
            "%s refused %s (%s); asking again without it", self.endpoint.url, param, problem.message
        )
        if param == "response_format":
            self.schema_refused.add(model)
        else:
            self._usage_refused = True
        return {k: v for k, v in body.items() if k != param}

    def _error(
        self,
        problem: ServerProblem,
        model: str,
        body: Mapping[str, Any] | None,
        headers: httpx.Headers | None = None,
    ) -> EngineError:
        return map_problem(
            problem,
            model=model,
            host=self.endpoint.url,
            url=self.base_url,
            sent=body,
            headers=headers,
        )

    async def _read(
        self, resp: httpx.Response, answer: _Answer, model: str, body: Mapping[str, Any]
    ) -> AsyncGenerator[Event, None]:
        decoder = SSEDecoder()
        async for line in resp.aiter_lines():  # closed with the response
            event = decoder.feed(line)
            if event is None:
                continue
            for out in self._event(event, answer, model, body):
                yield out
            if answer.done:
                return
        event = decoder.close()
        if event is not None:
            for out in self._event(event, answer, model, body):
                yield out
            if answer.done:
                return
        if answer.finish is not None:
            # Complete (it said why it stopped) but closed without `data: [DONE]`, as a few
            # servers do: the answer stands.
            log.info("%s ended a stream without [DONE]", self.endpoint.url)
            for out in answer.close():
                yield out
            return
        raise OpenAIConnectionDropped(detail="the answer ended before its last event ([DONE])")

    def _event(
        self, event: SSEEvent, answer: _Answer, model: str, body: Mapping[str, Any]
    ) -> list[Event]:
        if event.data.strip() == DONE:
            answer.done = True
            return answer.close()
        data = json.loads(event.data)
        if event.event == "error" or (
            isinstance(data, Mapping) and ("error" in data or data.get("object") == "error")
        ):
            problem = read_problem(_status(data), data)
            raise map_problem(
                problem,
                model=model,
                host=self.endpoint.url,
                url=self.base_url,
                sent=body,
                started=answer.chunks > 0,
                in_stream=True,
            )
        if not isinstance(data, Mapping):
            raise OpenAIStreamFailed(
                "The server sent an event that is not a chat completion chunk.",
                detail=event.data[:120],
            )
        return answer.take(data)

    # -- about the server -------------------------------------------------------------------
    async def version(self) -> str | None:
        """`GET /version` (vLLM has it; llama-server and LM Studio do not: None)."""
        status, data = await self.get_json("/version", error_ok=True)
        if status in (401, 403):
            raise OpenAIUnauthorized(detail=read_problem(status, _raw(data)).message or None)
        if status >= 400 or not isinstance(data, Mapping):
            return None
        value = data.get("version")
        return str(value) if isinstance(value, str | int | float) and value else None

    async def models(self) -> list[ServedModel]:
        """The models the server serves (`GET /v1/models`)."""
        _, data = await self.get_json(MODELS_PATH)
        entries = data.get("data") if isinstance(data, Mapping) else None
        if not isinstance(entries, list):
            raise NotOpenAICompatible(self.base_url, detail="GET /v1/models has no data list")
        found = (_served_model(e) for e in entries if isinstance(e, Mapping))
        return [m for m in found if m is not None]

    async def model_ids(self) -> list[str]:
        return [m.id for m in await self.models()]

    async def context_length(self, model: str) -> int | None:
        """The window the server runs `model` with, when `/v1/models` says (vLLM does)."""
        for served in await self.models():
            if served.id == model:
                return served.context_length
        return None

    async def health(self) -> Health:
        """`/health` (vLLM, llama-server: 503 while loading), else `/v1/models`.

        Raises the typed errors when the server cannot be reached or refuses the token.
        """
        status, data = await self.get_json("/health", error_ok=True)
        # LM Studio has no /health; some servers answer an unknown route with an error object.
        unknown = status in (404, 405) or (isinstance(data, Mapping) and "error" in data)
        if status in (401, 403):
            raise OpenAIUnauthorized(detail=read_problem(status, _raw(data)).message or None)
        if not unknown or status >= 500:
            if status < 400:
                return Health(True, "/health")
            problem = read_problem(status, _raw(data))
            return Health(False, "/health", problem.message or f"HTTP {status}")
        await self.models()
        return Health(True, MODELS_PATH)

    async def get_json(self, path: str, *, error_ok: bool = False) -> tuple[int, Any]:
        """(status, parsed body: JSON, else the text, None when empty).

        Transport failures raise the typed errors; so do error statuses and a 200 that is not
        JSON, unless `error_ok` (the caller reads what came back).
        """
        try:
            resp = await self.http.get(path)
        except (httpx.HTTPError, OSError) as exc:
            raise map_transport(
                exc, host=self.endpoint.url, timeout=self.endpoint.timeout, started=False
            ) from None
        status = resp.status_code
        try:
            data: Any = resp.json() if resp.content else None
        except ValueError:
            data = resp.text
        if error_ok:
            return status, data
        if status >= 400:
            problem = read_problem(status, resp.content)
            if status in (401, 403):
                raise OpenAIUnauthorized(detail=problem.message or None)
            if status == 404:
                raise NotOpenAICompatible(self.base_url, detail=f"GET {path}: {problem.message}")
            raise map_problem(
                problem, model="", host=self.endpoint.url, url=self.base_url, headers=resp.headers
            )
        if isinstance(data, str):
            raise OpenAIServerError(
                f"Something that is not an OpenAI-compatible server answers at {self.base_url}.",
                detail=data[:120],
            )
        return status, data


def _optional(problem: ServerProblem, body: Mapping[str, Any]) -> str | None:
    """The optional parameter a refusal names, if that is what it refused.

    llama-cpp-python's server answers a body it cannot validate (`response_format` of type
    json_schema) with HTTP 500 and pydantic's "1 validation error: … ('body',
    'response_format', 'type') …": a refusal all the same.
    """
    invalid = problem.status == 500 and "validation error" in problem.message.lower()
    if problem.status not in (400, 422) and not invalid:
        return None
    param = refused_parameter(problem, body)
    return param if param in OPTIONAL_PARAMETERS else None


def _raw(data: Any) -> str | Mapping[str, Any] | None:
    return data if isinstance(data, Mapping) or data is None else str(data)


def _status(data: Any) -> int:
    """The HTTP status an error event carries (`code`), else 500."""
    error = data.get("error") if isinstance(data, Mapping) else None
    source = error if isinstance(error, Mapping) else data
    code = source.get("code") if isinstance(source, Mapping) else None
    if isinstance(code, int) and 400 <= code < 600:
        return code
    if isinstance(code, str) and code.isdigit() and 400 <= int(code) < 600:
        return int(code)
    return 500
