"""One session of the app or of a CLI command, built once from the settings.

The GUI and every CLI command start here, so they agree on: the server address and its
token, the shared client, the history, the review options (with one effort precedence),
the policy folders, the models folder, the local server's lifecycle and its health check.
ui/ and cli/ present what this returns; they assemble no endpoint, option or client.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safeguard_desktop import paths, secrets
from safeguard_desktop.core.policy import Policy, builtin_policies, find_policies_with_errors
from safeguard_desktop.engine import models
from safeguard_desktop.engine.backend import make_client
from safeguard_desktop.engine.client import OllamaClient, preload_ollama
from safeguard_desktop.engine.endpoint import (
    DEFAULT_HOST,
    Endpoint,
    HostError,
    is_loopback,
    normalize_host,
    resolve_host,
    token_warning,
)
from safeguard_desktop.engine.errors import EngineError, OllamaNotFound, ServerUnreachable
from safeguard_desktop.engine.models import LoadedModel
from safeguard_desktop.engine.openai_client import OpenAIClient
from safeguard_desktop.hosts import HostConfig, HostList, kind_of_url
from safeguard_desktop.services.history_service import HistoryService
from safeguard_desktop.services.review import Reviewer, ReviewOptions
from safeguard_desktop.settings import Settings
from safeguard_desktop.store.db import HistoryError

if TYPE_CHECKING:  # imported where used: a CLI classify loads no queue, evaluation or server code
    from safeguard_desktop.services.evaluation import EvaluationService
    from safeguard_desktop.services.hosts import HostsService
    from safeguard_desktop.services.models_service import ModelsService
    from safeguard_desktop.services.queue_service import QueueService
    from safeguard_desktop.services.server_service import ServerLifecycle, ServerService

__all__ = [
    "TOKEN_ENV",
    "HostError",
    "ServerHealth",
    "Session",
    "configured_url",
    "normalize_host",
    "policy_folders",
    "resolve_endpoint",
    "token_warning",
]
log = logging.getLogger("safeguard.session")
TOKEN_ENV = "SAFEGUARD_OLLAMA_TOKEN"  # a token for this run only; else the keyring's
CHECK_TIMEOUT_S = 4.0


def configured_url(
    settings: Settings, host: str | None = None, env: Mapping[str, str] | None = None
) -> str:
    """`host` (--host: a URL, or the name of a configured host), else OLLAMA_HOST, else the
    host setting. Raises `HostError`."""
    env = os.environ if env is None else env
    named = named_host(settings, host)
    if named is not None:
        return normalize_host(named.url)
    return resolve_host(host, env.get("OLLAMA_HOST"), settings["host"])


def named_host(settings: Settings, host: str | None) -> HostConfig | None:
    """The configured host that `host` (--host) names, if it is a name and not a URL."""
    if not host or "/" in host or ":" in host:
        return None
    return HostList(settings).get(host)


def host_kind(settings: Settings, host: str | None) -> str:
    """The backend for --host: a named host's kind; a URL ending in /v1 is OpenAI-compatible
    (as the `openai` package addresses such servers); otherwise Ollama."""
    named = named_host(settings, host)
    if named is not None:
        return named.kind
    return kind_of_url(host) if host else "ollama"


def resolve_endpoint(
    settings: Settings,
    host: str | None = None,
    env: Mapping[str, str] | None = None,
    *,
    wait_for_keyring: bool = True,
) -> Endpoint:
    """The address with its token (SAFEGUARD_OLLAMA_TOKEN, else the keyring) and timeout.

    Raises `HostError` for an address that cannot be used. Reads the keyring: off the GUI
    thread, please; or, without `wait_for_keyring`, in a thread of its own (see
    `endpoint_for`).
    """
    env = os.environ if env is None else env
    url = configured_url(settings, host, env)
    return endpoint_for(url, settings, env, wait_for_keyring=wait_for_keyring)


def endpoint_for(
    url: str, settings: Settings, env: Mapping[str, str], *, wait_for_keyring: bool = True
) -> Endpoint:
    """`url` with its token and the timeout setting. Without `wait_for_keyring` the keyring
    is read in a thread (`pending_token`: the first request waits for it), unless the token
    must be known at once: over plain http to another machine it is warned about."""
    timeout = float(settings["request_timeout"])
    token = env.get(TOKEN_ENV)
    if token or wait_for_keyring or token_warning(url, "token") is not None:
        return Endpoint(url=url, token=token or secrets.get_token(url), timeout=timeout)
    return Endpoint(url=url, timeout=timeout, pending_token=secrets.TokenLookup(url))


def policy_folders(settings: Settings) -> list[Path]:
    """The `policy_folder` setting (a relative one is in the data folder), else data/policies."""
    folder = str(settings["policy_folder"] or "")
    if not folder:
        return [paths.user_policies_dir()]
    path = Path(folder).expanduser()
    return [path if path.is_absolute() else paths.data_dir() / path]


@dataclass(frozen=True)
class ServerHealth:
    """One health check; `models` is None when the installed list was not asked for."""

    url: str
    reachable: bool
    version: str | None = None
    error: str | None = None
    loaded: tuple[LoadedModel, ...] = ()
    models: tuple[str, ...] | None = None
    checked_at: float = 0.0


class Session:
    """Settings, the server endpoint and its one client, the history; see the module doc."""

    def __init__(
        self,
        settings: Settings,
        endpoint: Endpoint,
        history: HistoryService | None = None,
        *,
        host: str | None = None,
    ) -> None:
        self.settings = settings
        self.endpoint = endpoint
        self.history = history
        self.host = host  # the --host of this run, when given: it wins over the setting
        self.warnings: list[str] = []  # for the user, once
        self._client: OllamaClient | None = None
        self._openai: OpenAIClient | None = None  # --host naming an OpenAI-compatible server
        self._named_for: tuple[str | None, str, HostConfig | None] | None = None
        self._retired: list[OllamaClient | OpenAIClient] = []  # replaced, maybe still in use
        self._lifecycle: ServerLifecycle | None = None

    @classmethod
    def create(
        cls,
        settings: Settings,
        endpoint: Endpoint,
        history: HistoryService | None = None,
        *,
        host: str | None = None,
    ) -> Session:
        return cls(settings, endpoint, history, host=host)

    @property
    def client(self) -> OllamaClient:
        """The one client of this session, made on first use (a CLI history command has none)."""
        if self._client is None:
            self._client = OllamaClient(self.endpoint)
        return self._client

    @classmethod
    def open(
        cls,
        settings: Settings | None = None,
        *,
        host: str | None = None,
        with_history: bool = True,
        strict: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> Session:
        """Build the session from the settings.

        `strict` (the CLI): a bad address raises `HostError`. Otherwise (the GUI) it falls
        back to the default address and says so in `warnings`. A history that cannot be
        opened is a warning either way: reviews then still run, unsaved.
        """
        settings = settings or Settings()
        warnings: list[str] = []
        if settings.load_problem:
            warnings.append(settings.load_problem)
        # The keyring is read in a thread: the window opens meanwhile, a request waits for it.
        try:
            endpoint = resolve_endpoint(settings, host, env, wait_for_keyring=False)
        except HostError as exc:
            if strict:
                raise
            warnings.append(f"{exc} Using {DEFAULT_HOST} instead; fix the host in Settings.")
            env = os.environ if env is None else env
            endpoint = endpoint_for(DEFAULT_HOST, settings, env, wait_for_keyring=False)
        history = None
        if with_history:
            history, problem = HistoryService.open_default()
            if problem:
                warnings.append(problem)
            elif history is not None and (broken := history.trail_warning()):
                warnings.append(broken)
        session = cls.create(settings, endpoint, history, host=host)
        session.warnings.extend(warnings)
        return session

    async def warm_up(self) -> bool:
        """Load what the first review needs and start-up did not: the Ollama client library
        (pydantic models, 0.2-0.4 s of imports), in a thread, so the first Classify neither
        waits for it nor has its garbage collected while the answer streams. True when
        something was loaded (nothing for an OpenAI-compatible host: its client is loaded)."""
        if self.kind == "openai":
            return False
        return await preload_ollama()

    async def aclose(self) -> None:
        """Close the client (on the loop that used it) and the history."""
        await self.aclose_client()
        self.close_history()

    async def aclose_client(self) -> None:
        """Close the client on the loop that used it; the next use makes a new one."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._openai is not None:
            await self._openai.aclose()
            self._openai = None
        while self._retired:
            await self._retired.pop().aclose()

    def close_history(self) -> None:
        if self.history is not None:
            self.history.close()

    # -- the server address ------------------------------------------------------------------
    @property
    def token_warning(self) -> str | None:
        """A sentence when a token would travel over plain http to another machine."""
        return token_warning(self.endpoint.url, self.endpoint.token)

    def host_override(self) -> str | None:
        """The --host of this run when it differs from the configured address."""
        if self.host is None:
            return None
        try:
            configured: str | None = configured_url(self.settings)
        except HostError:
            configured = None
        return self.endpoint.url if self.endpoint.url != configured else None

    def forget_host_override(self) -> None:
        """A host chosen in Settings wins over --host from now on."""
        self.host = None

    async def apply_settings(self) -> None:
        """After the settings were saved: their address, token and server options apply.

        The --host of this run still wins unless a host was chosen since. Raises `HostError`
        for an unusable address (nothing changes then).
        """
        endpoint = await asyncio.to_thread(resolve_endpoint, self.settings, self.host_override())
        if endpoint != self.endpoint:
            # Reviews and pulls still running on the old client finish on it; it is closed
            # with the session.
            self._retired.append(self.replace_endpoint(endpoint))
        if self._lifecycle is not None:
            await self._lifecycle.retarget(self.server())

    def replace_endpoint(self, endpoint: Endpoint) -> OllamaClient:
        """Point at another server; returns the old client, for the caller to close."""
        old = self.client
        self.endpoint = endpoint
        self._client = OllamaClient(endpoint)
        return old

    # -- reviews -----------------------------------------------------------------------------
    def review_options(
        self,
        *,
        source: str,
        model: str | None = None,
        effort: str | None = None,
        num_ctx: int | None = None,
    ) -> ReviewOptions:
        """Options for reviews of this session.

        The effort of a review is the one chosen for it (`effort`: the picker, --effort),
        else the policy's own (front matter), else the `effort` setting; see
        `ReviewOptions.effort_for`.
        """
        s = self.settings
        seed = int(s["seed"])
        return ReviewOptions(
            model=(model or "").strip() or self.host_model() or str(s["model"]),
            effort=effort or None,
            default_effort=str(s["effort"]),
            num_ctx=int(num_ctx or s["num_ctx"]),
            seed=None if seed < 0 else seed,
            temperature=float(s["temperature"]),
            keep_alive=str(s["keep_alive"]) or None,
            moderator=str(s["moderator"]),
            source=source,
        )

    def reviewer(self, options: ReviewOptions, *, save: bool = True) -> Reviewer:
        """A reviewer on this session's client, recording in the history unless `save` is off."""
        store = self.history.store if save and self.history is not None else None
        return Reviewer(self.review_client, options, store)

    def _named(self) -> tuple[str, HostConfig | None]:
        """(kind, named host) for the current --host, read from the hosts file once."""
        if self._named_for is None or self._named_for[0] != self.host:
            named = named_host(self.settings, self.host)
            self._named_for = (self.host, host_kind(self.settings, self.host), named)
        return self._named_for[1], self._named_for[2]

    @property
    def kind(self) -> str:
        """The backend of this session's server: "ollama", or "openai" when --host names an
        OpenAI-compatible host (or is a URL ending in /v1)."""
        return self._named()[0]

    @property
    def review_client(self) -> OllamaClient | OpenAIClient:
        """The client reviews go through: the one client, or an OpenAI-compatible one."""
        if self.kind != "openai":
            return self.client
        if self._openai is None or self._openai.endpoint != self.endpoint:
            if self._openai is not None:
                self._retired.append(self._openai)
            client = make_client("openai", self.endpoint)
            assert isinstance(client, OpenAIClient)
            self._openai = client
        return self._openai

    def host_model(self) -> str | None:
        """The model name a host named by --host has configured, if any."""
        named = self._named()[1]
        return named.model or None if named is not None else None

    # -- the history ---------------------------------------------------------------------------
    def retention_days(self) -> int:
        """The `retention_days` setting when a history is open to apply it to, else 0."""
        days = int(self.settings["retention_days"] or 0)
        return days if days > 0 and self.history is not None else 0

    async def apply_retention(self) -> int | None:
        """Delete reviews older than `retention_days` (audited, in a thread); None when off.

        Raises `HistoryError`: the old reviews are then kept.
        """
        days = self.retention_days()
        if not days or self.history is None:
            return None
        moderator = str(self.settings["moderator"] or "") or "retention"
        return await asyncio.to_thread(
            self.history.purge, older_than_days=days, moderator=moderator
        )

    # -- model hosts ---------------------------------------------------------------------------
    def hosts(self) -> HostsService:
        """The model hosts of the settings (the local server is one), and run pools."""
        from safeguard_desktop.services.hosts import HostsService

        return HostsService(self)

    # -- review queues -------------------------------------------------------------------------
    def queues(self) -> QueueService:
        """The review queues, kept in this session's history. Raises `HistoryError` when no
        history is open (the session's warnings say why)."""
        if self.history is None:
            raise HistoryError(
                "io", "No history is open, and review queues are kept in it: fix the history first."
            )
        from safeguard_desktop.services.queue_service import QueueService
        from safeguard_desktop.store.queues import Queues

        return QueueService(self, Queues(self.history.store))

    # -- the policy workbench ------------------------------------------------------------------
    def evaluations(self) -> EvaluationService:
        """Labelled sets and evaluation runs, kept in this session's history. Raises
        `HistoryError` when no history is open (the session's warnings say why)."""
        if self.history is None:
            raise HistoryError(
                "io", "No history is open, and evaluations are kept in it: fix the history first."
            )
        from safeguard_desktop.services.evaluation import EvaluationService
        from safeguard_desktop.store.evaluations import Evaluations

        return EvaluationService(self, Evaluations(self.history.store))

    def failure_text(self, error: BaseException) -> str:
        """The sentence a failed review shows. Nothing answering at a local host where Ollama
        is not even installed is said as that (not "start it from the Server panel")."""
        if isinstance(error, ServerUnreachable) and is_loopback(self.endpoint.url):
            from safeguard_desktop.engine.server import find_ollama

            try:
                find_ollama(str(self.settings["ollama_path"] or ""))
            except OllamaNotFound:
                return (
                    f"Nothing answers at {self.endpoint.url}, and Ollama is not installed on "
                    "this machine. Install it (in a room without network: from the offline "
                    "bundle), set its path in Settings → Local server, or set the address of "
                    "a running Ollama in Settings (Ctrl+,)."
                )
        return str(error)

    # -- policies and models -----------------------------------------------------------------
    def policy_folders(self) -> list[Path]:
        return policy_folders(self.settings)

    def policies(self) -> tuple[list[Policy], list[tuple[Path, str]]]:
        """Built-in policies then the user's; plus (path, message) for files not readable."""
        found = list(builtin_policies())
        problems: list[tuple[Path, str]] = []
        configured = bool(self.settings["policy_folder"])
        for folder in self.policy_folders():
            if not folder.is_dir() and not configured:
                continue  # the default folder is made when the first policy is saved
            more, bad = find_policies_with_errors(folder)
            found.extend(more)
            problems.extend(bad)
        return found, problems

    def models(self) -> ModelsService:
        """Model operations and the models folder, on this session's client."""
        from safeguard_desktop.services.models_service import ModelsService

        return ModelsService(self.settings, self.endpoint, client=self.client)

    # -- the server --------------------------------------------------------------------------
    def server(self, *, start_timeout: float = 30.0, stop_timeout: float = 10.0) -> ServerService:
        from safeguard_desktop.services.server_service import ServerService

        return ServerService(
            self.settings, self.endpoint, start_timeout=start_timeout, stop_timeout=stop_timeout
        )

    @property
    def lifecycle(self) -> ServerLifecycle:
        """Attach or start at start-up, stop at quit only what this session started."""
        if self._lifecycle is None:
            from safeguard_desktop.services.server_service import ServerLifecycle

            self._lifecycle = ServerLifecycle(self.settings, self.server())
        return self._lifecycle

    async def health(self, *, with_models: bool = False) -> ServerHealth:
        """Version, loaded models and (with `with_models`) installed ones, each bounded in time.

        The loaded and installed lists only decorate the status: their failure is no error.
        """
        url = self.endpoint.url
        client = self.client
        try:
            version = await asyncio.wait_for(client.version(), CHECK_TIMEOUT_S)
        except EngineError as exc:
            return ServerHealth(url, False, error=str(exc), checked_at=time.time())
        except TimeoutError:
            error = ServerUnreachable(url, detail=f"no answer within {CHECK_TIMEOUT_S:g} s")
            return ServerHealth(url, False, error=str(error), checked_at=time.time())
        loaded: tuple[LoadedModel, ...] = ()
        try:
            loaded = tuple(await asyncio.wait_for(models.loaded_models(client), CHECK_TIMEOUT_S))
        except (EngineError, TimeoutError) as exc:
            log.debug("loaded models unavailable: %s", exc)
        names: tuple[str, ...] | None = None
        if with_models:
            try:
                listed = await asyncio.wait_for(models.list_models(client), CHECK_TIMEOUT_S)
                names = tuple(sorted(m.name for m in listed))
            except (EngineError, TimeoutError) as exc:
                log.debug("installed models unavailable: %s", exc)
        return ServerHealth(url, True, version, None, loaded, names, time.time())
