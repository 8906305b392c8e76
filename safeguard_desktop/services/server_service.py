"""The local Ollama server as the GUI's Server panel and the `server` commands use it.

Settings in, engine calls out: the host, token and server options come from `Settings`;
start/attach/stop/status/logs and the supervisor come from `engine/server.py`. Everything is
async and reports through return values, typed `EngineError`s and callbacks; nothing prints.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safeguard_desktop import paths, secrets
from safeguard_desktop.engine import server_log
from safeguard_desktop.engine.client import OllamaClient
from safeguard_desktop.engine.endpoint import Endpoint, token_warning
from safeguard_desktop.engine.errors import DOWNLOAD_URL, EngineError, NotLocalHost, OllamaNotFound
from safeguard_desktop.engine.models import LoadedModel, loaded_models
from safeguard_desktop.engine.server import (
    ServerConfig,
    ServerController,
    ServerStatus,
    StartResult,
    StopResult,
    find_ollama,
)
from safeguard_desktop.engine.supervisor import EventCallback, ServerSupervisor, SupervisorEvent
from safeguard_desktop.settings import Settings

__all__ = [
    "DOWNLOAD_URL",
    "EngineError",
    "NotLocalHost",
    "OllamaNotFound",
    "ServerLifecycle",
    "ServerReport",
    "ServerService",
    "ServerSupervisor",
    "StartResult",
    "StartupOutcome",
    "SupervisorEvent",
    "clear_token",
    "save_token",
    "server_config",
]
log = logging.getLogger("safeguard.server")


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
    """Forget a host's token. Raises `secrets.SecretStoreUnavailable` when there is no
    keyring: none was kept, and "removed" would not be true."""
    if not secrets.available():
        raise secrets.SecretStoreUnavailable(
            "No system keyring is available here, so no token is kept for this host: "
            "nothing to remove."
        )
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
        endpoint: Endpoint,
        *,
        start_timeout: float = 30.0,
        stop_timeout: float = 10.0,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint
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

    def use_binary(self, path: str) -> Path:
        """Check that `path` runs as Ollama and save it as the `ollama_path` setting.

        Raises `OllamaNotFound` (not Ollama), `SettingsError` or `OSError` (not saved).
        """
        binary = find_ollama(path)
        self.settings.set("ollama_path", str(binary))
        self.settings.save()
        self.config = server_config(
            self.settings,
            self.endpoint,
            start_timeout=self.config.start_timeout,
            stop_timeout=self.config.stop_timeout,
        )
        self.controller = ServerController(self.config)
        return binary

    def log_tail(self, lines: int = 50) -> list[str]:
        return server_log.tail(self.log_file, lines)

    def follow_log(self, *, from_end: bool = True) -> AsyncIterator[str]:
        """New log lines as they come; cancel the iterating task to stop."""
        return server_log.follow(self.log_file, from_end=from_end)


@dataclass(frozen=True)
class StartupOutcome:
    """What `ServerLifecycle.startup` did: nothing, attached, or started a server."""

    action: str  # "none" (not managed here), "attached", "started", "failed"
    result: StartResult | None = None
    error: EngineError | None = None


class ServerLifecycle:
    """The managed local server over one session: attach or start, and stop only our own.

    At start-up, with the `manage_server` setting on and a loopback host: a free port gets a
    server started here, a running Ollama is attached to (and watched when this app started
    it in an earlier session). A user's Start does the same on demand. At quit, only the
    servers this session started are stopped; any other is left running.
    """

    def __init__(self, settings: Settings, service: ServerService) -> None:
        self.settings = settings
        self.service = service
        self.supervisor: ServerSupervisor | None = None
        self.started: list[ServerSupervisor] = []
        self.on_event: EventCallback | None = None

    @property
    def managed_here(self) -> bool:
        return bool(self.settings["manage_server"]) and self.service.config.local

    def started_here(self, url: str) -> bool:
        return any(s.controller.url == url for s in self.started)

    async def retarget(self, service: ServerService) -> None:
        """Another address or server options: a server only attached to is let go."""
        old_url = self.service.url
        self.service = service
        supervisor = self.supervisor
        if service.url != old_url and supervisor is not None:
            self.supervisor = None
            if supervisor not in self.started:
                await supervisor.detach()

    async def startup(self, on_launch: Callable[[], None] | None = None) -> StartupOutcome:
        """The start-up policy above. Never raises `EngineError`: it is in the outcome.

        `on_launch` is called when a server is about to be started (not for an attach).
        """
        if not self.managed_here:
            return StartupOutcome("none")
        found = await self.service.controller.probe()
        if found.kind not in ("free", "ollama", "unauthorized"):
            return StartupOutcome("none")  # something else holds the port: say it elsewhere
        if found.kind == "free" and on_launch is not None:
            on_launch()
        try:
            result = await self.start()
        except EngineError as exc:
            return StartupOutcome("failed", error=exc)
        return StartupOutcome("started" if result.started else "attached", result)

    async def start(self) -> StartResult:
        """Attach to a running Ollama or start one, under a supervisor (raises EngineError)."""
        supervisor = self.service.supervisor(self.on_event)
        result = await supervisor.start()
        if self.supervisor is not None and self.supervisor not in self.started:
            await self.supervisor.detach()
        self.supervisor = supervisor
        if result.started:
            self.started.append(supervisor)
        return result

    async def stop(self) -> StopResult:
        """Stop the server at this address if this app started it (raises `NotManaged`)."""
        supervisor = self.supervisor
        if supervisor is not None and supervisor.controller.url == self.service.url:
            result = await supervisor.stop()
        else:
            result = await self.service.stop()
        self.started = [s for s in self.started if s.controller.url != result.url]
        self.supervisor = None
        return result

    async def shutdown(self) -> None:
        """Stop what this session started; leave any other server running."""
        stopped: set[str] = set()
        for supervisor in reversed(self.started):
            url = supervisor.controller.url
            if url in stopped:
                await supervisor.detach()
                continue
            stopped.add(url)
            try:
                await supervisor.stop()
            except EngineError as exc:
                log.info("not stopped at quit: %s", exc)
        if self.supervisor is not None and self.supervisor not in self.started:
            await self.supervisor.detach()
        self.started.clear()
        self.supervisor = None
