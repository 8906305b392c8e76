"""The local Ollama server as the GUI's Server panel and the `server` commands use it.

Settings in, engine calls out: the host, token and server options come from `Settings`;
start/attach/stop/status/logs and the supervisor come from `engine/server.py`. Everything is
async and reports through return values, typed `EngineError`s and callbacks; nothing prints.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safeguard_desktop import paths, secrets
from safeguard_desktop.engine import server_log
from safeguard_desktop.engine.client import OllamaClient
from safeguard_desktop.engine.endpoint import Endpoint, resolve_host, token_warning
from safeguard_desktop.engine.errors import EngineError
from safeguard_desktop.engine.models import LoadedModel, loaded_models
from safeguard_desktop.engine.server import (
    ServerConfig,
    ServerController,
    ServerStatus,
    StartResult,
    StopResult,
)
from safeguard_desktop.engine.supervisor import EventCallback, ServerSupervisor
from safeguard_desktop.settings import Settings

log = logging.getLogger("safeguard.server")
TOKEN_ENV = "SAFEGUARD_OLLAMA_TOKEN"


def endpoint_from_settings(
    settings: Settings, *, host: str | None = None, env: Mapping[str, str] | None = None
) -> Endpoint:
    """The address the app talks to: `host` argument, else OLLAMA_HOST, else the setting.

    Raises `endpoint.HostError` for an address that cannot be used.
    """
    env = os.environ if env is None else env
    url = resolve_host(host, env.get("OLLAMA_HOST"), settings["host"])
    token = env.get(TOKEN_ENV) or secrets.get_token(url)
    return Endpoint(url=url, token=token, timeout=float(settings["request_timeout"]))


def server_config(
    settings: Settings,
    endpoint: Endpoint,
    *,
    start_timeout: float = 30.0,
    stop_timeout: float = 10.0,
) -> ServerConfig:
    return ServerConfig(
        endpoint=endpoint,
        state_file=paths.server_state_file(),
        log_file=paths.logs_dir() / "ollama.log",
        ollama_path=str(settings["ollama_path"] or ""),
        models_dir=str(settings["models_dir"] or ""),
        keep_alive=str(settings["keep_alive"] or ""),
        num_parallel=int(settings["num_parallel"]),
        max_queue=int(settings["max_queue"]),
        context_length=int(settings["context_length"]),
        flash_attention=bool(settings["flash_attention"]),
        start_timeout=start_timeout,
        stop_timeout=stop_timeout,
    )


def save_token(url: str, token: str) -> str | None:
    """Keep a remote host's token in the OS keyring; returns a warning for plain http.

    Raises `secrets.SecretStoreUnavailable` when there is no keyring: the token is then
    not written anywhere else.
    """
    secrets.set_token(url, token)
    return token_warning(url, token)


def clear_token(url: str) -> None:
    secrets.delete_token(url)


@dataclass(frozen=True)
class ServerReport:
    """Status plus what is loaded, for the panel and `server status --json`."""

    status: ServerStatus
    loaded: tuple[LoadedModel, ...] = ()
    token_warning: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = self.status.to_json()
        data["loaded"] = [m.to_json() for m in self.loaded]
        data["token_warning"] = self.token_warning
        return data


class ServerService:
    """One server address with the settings' options. Cheap to create."""

    def __init__(
        self,
        settings: Settings,
        endpoint: Endpoint | None = None,
        *,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint or endpoint_from_settings(settings)
        self.config = server_config(
            settings, self.endpoint, start_timeout=start_timeout, stop_timeout=stop_timeout
        )
        self.controller = ServerController(self.config)

    @property
    def url(self) -> str:
        return self.endpoint.url

    @property
    def log_file(self) -> Path:
        return self.config.log_file

    async def status(self, *, with_binary: bool = True) -> ServerReport:
        status = await self.controller.status(with_binary=with_binary)
        loaded: tuple[LoadedModel, ...] = ()
        if status.running:
            client = OllamaClient(self.endpoint)
            try:
                loaded = tuple(await loaded_models(client))
            except EngineError as exc:
                log.info("ps failed: %s", exc)
            finally:
                await client.aclose()
        return ServerReport(status, loaded, token_warning(self.url, self.endpoint.token))

    async def start(self) -> StartResult:
        """Attach to a running Ollama or start one; returns once it answers."""
        return await self.controller.start()

    async def stop(self) -> StopResult:
        """Stop the server this app started; `NotManaged` for any other."""
        return await self.controller.stop()

    def supervisor(self, on_event: EventCallback | None = None, **options: Any) -> ServerSupervisor:
        """A supervisor for the GUI: restarts the managed server after a crash (bounded)."""
        return ServerSupervisor(self.controller, on_event=on_event, **options)

    async def autostart(self, on_event: EventCallback | None = None) -> ServerSupervisor | None:
        """At GUI start: with `manage_server` on and a local host, attach or start and watch.

        Returns the running supervisor (keep a reference), or None when nothing is managed.
        """
        if not self.settings["manage_server"] or not self.config.local:
            return None
        supervisor = self.supervisor(on_event)
        await supervisor.start()
        return supervisor

    def log_tail(self, lines: int = 50) -> list[str]:
        return server_log.tail(self.log_file, lines)

    def follow_log(self, *, from_end: bool = True) -> AsyncIterator[str]:
        """New log lines as they come; cancel the iterating task to stop."""
        return server_log.follow(self.log_file, from_end=from_end)
