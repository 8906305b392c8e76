"""Typed engine errors, each with a sentence a moderator understands.

`str(error)` is that sentence followed by the server's own message when there
is one; the UI and CLI show it as is. The first part covers requests to the model
server; the second, managing the server and its models (start, stop, pull, bundles).
"""

from __future__ import annotations

from collections.abc import Sequence


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


# -- managing the server and its models --------------------------------------------------
DOWNLOAD_URL = "https://ollama.com/download"


class OllamaNotFound(EngineError):
    """No `ollama` executable was found (or the configured path is wrong)."""

    def __init__(self, searched: Sequence[str] = (), *, configured: str | None = None) -> None:
        self.searched = tuple(searched)
        self.configured = configured
        where = (
            f"The Ollama path {configured!r} set in Settings does not exist or is not executable."
            if configured
            else "Ollama is not installed (no `ollama` on PATH or in the usual install folders)."
        )
        super().__init__(
            f"{where} Install it from {DOWNLOAD_URL} (in an air-gapped room, copy the Linux "
            "tarball from a connected machine), then set Settings → Local server → Ollama path "
            "or `ollama_path` in the settings file."
        )


class NotLocalHost(EngineError):
    """Managing (start/stop) only applies to a loopback address."""

    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(
            f"{host} is a remote server: Safeguard Desktop only starts and stops an Ollama on "
            "this machine. Start it on that machine, or set the host to http://127.0.0.1:11434."
        )


class PortInUse(EngineError):
    """Something that is not Ollama holds the port."""

    def __init__(self, port: int, *, detail: str | None = None) -> None:
        self.port = port
        super().__init__(
            f"Port {port} is taken by another program that is not Ollama. Stop that program, "
            "or choose another port in Settings → Model server (e.g. http://127.0.0.1:11435).",
            detail=detail,
        )


class ServerStartFailed(EngineError):
    """`ollama serve` exited or never answered; the last log lines say why."""

    def __init__(self, reason: str, *, log_tail: Sequence[str] = (), log_file: str = "") -> None:
        self.reason = reason
        self.log_tail = tuple(log_tail)
        self.log_file = log_file
        where = f" See {log_file}." if log_file else ""
        last = self.log_tail[-1].strip() if self.log_tail else None
        super().__init__(f"Ollama did not start: {reason}.{where}", detail=last)


class NotManaged(EngineError):
    """A stop request for a server this app did not start."""

    def __init__(self, host: str, *, managed_host: str | None = None) -> None:
        self.host = host
        if managed_host and managed_host != host:
            hint = f" The one it started is at {managed_host}; use --host {managed_host}."
        else:
            hint = " Stop it where it was started (the Ollama app, or `systemctl stop ollama`)."
        super().__init__(f"The Ollama at {host} was not started by Safeguard Desktop.{hint}")


class PullFailed(EngineError):
    def __init__(self, model: str, *, detail: str | None = None) -> None:
        self.model = model
        text = (detail or "").lower()
        if "file does not exist" in text or "not found" in text:
            message = (
                f"The model {model} does not exist in the Ollama library. Check the name "
                "(e.g. gpt-oss-safeguard:20b)."
            )
        else:
            message = (
                f"Could not pull {model}. Check that this machine can reach registry.ollama.ai, "
                "or import a bundle made on a connected machine (`models import-bundle`)."
            )
        super().__init__(message, detail=detail)


class ModelImportFailed(EngineError):
    """A GGUF file could not be imported (not a GGUF, unreadable, refused by the server)."""

    message = "The model file could not be imported."


class BundleError(EngineError):
    """An air-gapped bundle could not be written or is not safe to import."""

    message = "The model bundle could not be used."


class OperationCancelled(EngineError):
    message = "Cancelled; nothing was changed."
