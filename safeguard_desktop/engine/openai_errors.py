"""The typed engine errors, worded for an OpenAI-compatible server (vLLM, llama-server, LM
Studio), and the mapping of its answers to them.

Each class here subclasses the error the Ollama client raises in the same situation, so
callers that sort failures (`isinstance(error, QueueFull)`: retry with backoff; `ModelMissing`
or `Unauthorized`: stop the run) treat both backends alike; only the sentence differs, since
"Ollama is not running" would send a moderator to the wrong program. A server's own words
follow as "(the server said: …)".
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

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

SERVER_SAID = "the server said"


class OpenAIServerUnreachable(ServerUnreachable):
    detail_label = "details"
    message = (
        "No server answers at {host}. Start the OpenAI-compatible server there (vLLM, "
        "llama-server, LM Studio) or check the host's address in Settings."
    )


class OpenAIModelMissing(ModelMissing):
    detail_label = SERVER_SAID

    def __init__(self, model: str, *, host: str = "", detail: str | None = None) -> None:
        self.model = model
        self.host = host
        where = f"The server at {host}" if host else "The server"
        EngineError.__init__(
            self,
            f"{where} does not serve a model named {model}. Set the model name this host "
            "lists (GET /v1/models, shown in the Server panel), or start the server with it.",
            detail=detail,
        )


class OpenAIStreamFailed(StreamFailed):
    detail_label = SERVER_SAID


class OpenAIConnectionDropped(ConnectionDropped):
    message = (
        "The connection to the model server was lost mid-answer (the server may have crashed "
        "or restarted). The partial reasoning is kept; check the server and try again."
    )


class OpenAIQueueFull(QueueFull):
    detail_label = SERVER_SAID
    message = (
        "The model server is busy and takes no more requests for now. Wait for running "
        "reviews to finish, or send fewer requests to it at once."
    )

    def __init__(
        self,
        message: str | None = None,
        *,
        detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after  # seconds, from a Retry-After header
        super().__init__(message, detail=detail)


class OpenAIRequestTimeout(RequestTimeout):
    detail_label = "details"
    message = (
        "The model server sent nothing for {seconds:g} s, so the review was stopped. The model "
        "may still be loading: try again, or raise 'Request timeout' in Settings."
    )


class OpenAIUnauthorized(Unauthorized):
    detail_label = SERVER_SAID
    message = (
        "The model server refused the request (not authorised). Set this host's token in "
        "Settings (the server's API key)."
    )


class OpenAIServerError(ServerError):
    detail_label = SERVER_SAID
    message = "The model server answered with an error."
    hint = " Check the server's log and try again."


class UnsupportedParameter(OpenAIServerError):
    """The server refused a request parameter the app sends (an old or different server)."""

    def __init__(self, param: str, *, host: str = "", detail: str | None = None) -> None:
        self.param = param
        where = f"The server at {host}" if host else "The model server"
        super().__init__(
            f"{where} does not accept the request parameter `{param}`. It may be too old for "
            "gpt-oss: update it to a release that serves gpt-oss (vLLM, llama-server), or use "
            "another host.",
            detail=detail,
        )


class ContextExceeded(OpenAIServerError):
    """The prompt and the room asked for the answer exceed the window the server runs with."""

    def __init__(self, *, detail: str | None = None) -> None:
        super().__init__(
            "The policy and the content do not fit in the context window this server runs the "
            "model with. Shorten the policy or the content, or start the server with a larger "
            "context (vLLM --max-model-len, llama-server --ctx-size).",
            detail=detail,
        )


class NotOpenAICompatible(OpenAIServerError):
    def __init__(self, url: str, *, detail: str | None = None) -> None:
        self.url = url
        super().__init__(
            f"No OpenAI-compatible API answers at {url}: the address may be wrong (it must be "
            "the server's base URL, e.g. http://host:8000) or the server of another kind.",
            detail=detail,
        )


# -- reading an error answer --------------------------------------------------------------------
@dataclass(frozen=True)
class ServerProblem:
    """An error answer, whichever shape it came in:

    - OpenAI and vLLM 0.10 and later: `{"error": {"message", "type", "param", "code"}}`
    - llama-server: `{"error": {"code": 400, "message", "type": "invalid_request_error"}}`
    - vLLM before 0.10: `{"object": "error", "message", "type", "param", "code"}`
    - FastAPI's unknown route `{"detail": "Not Found"}`, a proxy's text or HTML page.
    """

    status: int
    message: str
    type: str = ""
    code: str = ""
    param: str = ""
    json: bool = False  # the body was an error object (not a route's 404 or a proxy's page)

    def mentions(self, *words: str) -> bool:
        text = f"{self.message} {self.type} {self.code}".lower()
        return any(w in text for w in words)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def read_problem(status: int, body: str | bytes | Mapping[str, Any] | None) -> ServerProblem:
    data: Any = body
    if isinstance(body, bytes | str):
        raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            data = json.loads(raw)
        except ValueError:
            return ServerProblem(status, " ".join(raw.split())[:400])
    if not isinstance(data, Mapping):
        return ServerProblem(status, _text(data)[:400])
    error = data.get("error")
    if isinstance(error, Mapping):
        data = error
    elif isinstance(error, str):
        return ServerProblem(status, error, json=True)
    elif data.get("object") != "error" and "message" not in data:
        detail = data.get("detail")
        return ServerProblem(status, _text(detail if detail is not None else data)[:400])
    return ServerProblem(
        status,
        _text(data.get("message")),
        type=_text(data.get("type")),
        code=_text(data.get("code")),
        param=_text(data.get("param")),
        json=True,
    )


# Parameters the client may send, and words a server uses for each in its refusal.
PARAMETER_WORDS: dict[str, tuple[str, ...]] = {
    "response_format": (
        "response_format",
        "json_schema",
        "structured output",
        "guided",
        "grammar",
        "schema",
    ),
    "stream_options": ("stream_options", "include_usage"),
    "reasoning_effort": ("reasoning_effort",),
    "seed": ("seed",),
    "temperature": ("temperature",),
    "max_tokens": ("max_tokens",),
    "top_p": ("top_p",),
    "top_k": ("top_k",),
    "stop": ("stop",),
}
_MODEL_MISSING = re.compile(
    r"model\b.{0,200}\b(?:does not exist|not found|not loaded|no such|unknown|is not available)"
    r"|(?:no such|unknown) model|model_not_found",
    re.IGNORECASE | re.DOTALL,
)
_ROUTE_MISSING = re.compile(r"(?:(?:file|page) )?not found\.?|404\b.*|", re.IGNORECASE)
_CONTEXT = re.compile(
    r"maximum context length|context length|context size|context window|too many tokens"
    r"|exceeds the (?:available )?context",
    re.IGNORECASE,
)


def refused_parameter(problem: ServerProblem, sent: Mapping[str, Any]) -> str | None:
    """The request parameter a 400/422 answer names, among those that were sent."""
    if problem.param:
        root = problem.param.split(".")[0].split("[")[0]
        if root in sent:
            return root
    text = f"{problem.message} {problem.param}".lower()
    for param, words in PARAMETER_WORDS.items():
        if param in sent and any(re.search(rf"\b{re.escape(w)}\b", text) for w in words):
            return param
    return None


def model_missing(problem: ServerProblem) -> bool:
    return bool(_MODEL_MISSING.search(f"{problem.message} {problem.code}"))


def retry_after(headers: httpx.Headers | None) -> float | None:
    value = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:  # an HTTP date: not worth parsing, the runner backs off on its own
        return None


def map_problem(
    problem: ServerProblem,
    *,
    model: str,
    host: str,
    url: str,
    sent: Mapping[str, Any] | None = None,
    started: bool = False,
    in_stream: bool = False,
    headers: httpx.Headers | None = None,
) -> EngineError:
    """The typed error for an error answer: an HTTP status, or (`in_stream`) an error event in
    a stream that had sent `started` tokens or none."""
    status, detail = problem.status, problem.message or None
    if status in (401, 403):
        return OpenAIUnauthorized(detail=detail)
    if status == 404:
        # An error object means the route exists and refused the model; a bare "Not Found"
        # (FastAPI's, llama-server's "File Not Found", a proxy's page) means no such route.
        route_missing = not problem.json or _ROUTE_MISSING.fullmatch(problem.message.strip())
        if model_missing(problem) or not route_missing:
            return OpenAIModelMissing(model, host=host, detail=detail)
        return NotOpenAICompatible(url, detail=detail)
    if status in (429, 503) and not started:
        return OpenAIQueueFull(detail=detail, retry_after=retry_after(headers))
    if status in (400, 413, 422) and _CONTEXT.search(problem.message):
        return ContextExceeded(detail=detail)
    if status in (400, 422) and sent is not None:
        param = refused_parameter(problem, sent)
        if param is not None:
            return UnsupportedParameter(param, host=host, detail=detail)
    if model_missing(problem):  # LM Studio and some proxies answer 400 for a missing model
        return OpenAIModelMissing(model, host=host, detail=detail)
    if in_stream:
        return OpenAIStreamFailed(detail=detail)
    return OpenAIServerError(f"The model server answered with HTTP {status}.", detail=detail)


def map_transport(exc: BaseException, *, host: str, timeout: float, started: bool) -> EngineError:
    """httpx and socket failures, before or after the answer began."""
    if isinstance(exc, httpx.ConnectTimeout):
        return OpenAIServerUnreachable(host, detail="connection timed out")
    if isinstance(exc, httpx.TimeoutException):
        return OpenAIRequestTimeout(timeout)
    if isinstance(exc, ConnectionError | httpx.ConnectError) and not started:
        return OpenAIServerUnreachable(host, detail=str(exc) or None)
    return OpenAIConnectionDropped(detail=str(exc) or type(exc).__name__)
