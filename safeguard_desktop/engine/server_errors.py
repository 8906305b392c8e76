"""Typed errors of server and model management, each a sentence that says what to do next.

They extend the `EngineError` family of `errors.py`, so callers that catch `EngineError`
show them the same way (`str(error)`).
"""

from __future__ import annotations

from collections.abc import Sequence

from safeguard_desktop.engine.errors import EngineError

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
