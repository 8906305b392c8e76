"""Typed engine errors, each with a sentence a moderator understands.

`str(error)` is that sentence followed by the server's own message when there
is one; the UI and CLI show it as is.
"""

from __future__ import annotations


class EngineError(Exception):
    """Base: something between us and the model went wrong."""

    message = "The model server returned an error."
    detail_label = "Ollama said"  # transport failures say "details" instead

    def __init__(self, message: str | None = None, *, detail: str | None = None) -> None:
        self.message = message or type(self).message
        # One line, short: a proxy's HTML error page must not flood the terminal.
        flat = " ".join((detail or "").split())
        self.detail = (flat[:237] + "…" if len(flat) > 240 else flat) or None
        super().__init__(str(self))

    def __str__(self) -> str:
        if not self.detail:
            return self.message
        return f"{self.message} ({self.detail_label}: {self.detail})"


class ServerUnreachable(EngineError):
    message = (
        "Ollama is not running at {host}. Start it from the Server panel or run "
        "`safeguard-desktop server start` (or `ollama serve`)."
    )

    def __init__(self, host: str, *, detail: str | None = None) -> None:
        self.host = host
        super().__init__(type(self).message.format(host=host), detail=detail)


class ModelMissing(EngineError):
    def __init__(self, model: str, *, detail: str | None = None) -> None:
        self.model = model
        super().__init__(
            f"The model {model} is not installed on this server. Pull it with "
            f"`safeguard-desktop models pull {model}` or, offline, import a GGUF or bundle "
            "from the Server panel.",
            detail=detail,
        )


class StreamFailed(EngineError):
    message = (
        "The model stopped with an error while answering. The partial reasoning is kept; "
        "try again, or lower the effort or the context size if it keeps happening."
    )


class ConnectionDropped(EngineError):
    detail_label = "details"
    message = (
        "The connection to Ollama was lost mid-answer (the server may have crashed or "
        "restarted). The partial reasoning is kept; check the server log and try again."
    )


class QueueFull(EngineError):
    message = (
        "Ollama is busy: its request queue is full. Wait for running reviews to finish, "
        "or raise 'Max queue' in Settings."
    )


class RequestTimeout(EngineError):
    message = (
        "Ollama sent nothing for {seconds:g} s, so the review was stopped. The model may "
        "still be loading: try again, or raise 'Request timeout' in Settings."
    )

    def __init__(self, seconds: float, *, detail: str | None = None) -> None:
        self.seconds = seconds
        super().__init__(type(self).message.format(seconds=seconds), detail=detail)


class Unauthorized(EngineError):
    message = (
        "The server refused the request (not authorised). Set the remote token in "
        "Settings → Model server."
    )


class InternalError(EngineError):
    """A bug of ours surfaced during a review; recorded, then re-raised."""

    message = "The review stopped on an internal error; details are in the log."
    detail_label = "details"


class ServerError(EngineError):
    message = "Ollama answered with an error."
    hint = " Check the server log (Server panel, or `safeguard-desktop server logs`) and try again."

    def __init__(self, message: str | None = None, *, detail: str | None = None) -> None:
        super().__init__((message or type(self).message) + self.hint, detail=detail)
