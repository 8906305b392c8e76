"""Several model hosts: the list the user keeps, their health, and the pool a run spreads over.

`HostsService` adds, removes, enables, probes and tests the hosts of `hosts.json` (see
safeguard_desktop/hosts.py; the managed local Ollama is always one of them, `local`).

`HostPool` is what the one batch runner's units review through: each host has a reviewer on
its own client and `slots` requests in flight; `review` takes the least-loaded host that is
up and has a free slot. A host that stops answering (refused, dropped stream, timeout) is
taken out for a while (exponential backoff) and its unit is given back to the runner as a
`Retry`, which runs it again on another host; a host without the model or refusing the
token is out for the rest of the run. A unit is recorded by whoever owns the units, which
checks that it has no finished review yet: nothing is recorded twice. A pool of one host is
how a single-server run goes too, so there is one path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from safeguard_desktop import egress, secrets
from safeguard_desktop.core.content import Content, from_text
from safeguard_desktop.core.policy import Policy, resolve_policy
from safeguard_desktop.engine.backend import HostProbe, make_client, probe
from safeguard_desktop.engine.client import OllamaClient
from safeguard_desktop.engine.endpoint import Endpoint, HostError, normalize_host
from safeguard_desktop.engine.errors import (
    ConnectionDropped,
    EngineError,
    ModelMissing,
    QueueFull,
    RequestTimeout,
    ServerUnreachable,
    Unauthorized,
)
from safeguard_desktop.engine.openai_client import OpenAIClient
from safeguard_desktop.hosts import (
    LOCAL,
    HostConfig,
    HostConfigError,
    HostList,
    check_kind,
    check_name,
    check_slots,
    kind_of_url,
)
from safeguard_desktop.services.batch_runner import Backoff, Retry, release_slot
from safeguard_desktop.services.review import Reviewer, ReviewOptions, ReviewResult

if TYPE_CHECKING:
    from safeguard_desktop.services.session import Session

__all__ = [
    "HostConfigError",
    "HostPool",
    "HostStatus",
    "HostTest",
    "HostsService",
    "PoolHost",
]
log = logging.getLogger("safeguard.hosts")
PROBE_TIMEOUT_S = 5.0
UNREACHABLE_ATTEMPTS = 4  # per host of the pool, before the run stops
HOST_BACKOFF = Backoff(first=2.0, factor=2.0, cap=60.0, jitter=0.25)
Client = OllamaClient | OpenAIClient


@dataclass(frozen=True)
class HostStatus:
    """One host as the Server panel and `hosts list` show it."""

    config: HostConfig
    probe: HostProbe
    token: bool  # a token is kept in the keyring for its address
    mark: str | None = None  # why it would not take part in a run, in a sentence

    @property
    def usable(self) -> bool:
        return self.config.enabled and self.probe.healthy and self.mark is None

    def to_json(self) -> dict[str, Any]:
        p = self.probe
        return {
            **self.config.to_json(), "token": self.token, "healthy": p.healthy,
            "version": p.version, "models": list(p.models), "has_model": p.has_model,
            "digest": p.digest, "problem": p.problem, "mark": self.mark,
        }  # fmt: skip


@dataclass(frozen=True)
class HostTest:
    """`hosts test`: one tiny review on the host, timed."""

    name: str
    url: str
    kind: str
    model: str
    seconds: float
    status: str
    label: str | None
    served_model: str | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(eq=False)
class PoolHost:
    """A host of one run: its reviewer, its slots and how it fares."""

    config: HostConfig
    reviewer: Reviewer
    slots: int
    busy: int = 0
    failures: int = 0  # in a row
    down_until: float = 0.0
    out: str | None = None  # taken out for the rest of the run: why
    version: str | None = None
    digest: str | None = None
    reviews: int = 0
    owned: bool = False  # its client was made for this run (closed with it)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def url(self) -> str:
        return self.reviewer.client.endpoint.url

    @property
    def kind(self) -> str:
        return getattr(self.reviewer.client, "kind", "ollama")

    @property
    def ollama_version(self) -> str | None:
        """The version for provenance (only Ollama's is kept in that column)."""
        return self.version if self.kind == "ollama" else None


class HostPool:
    """The hosts one run reviews through; see the module doc."""

    def __init__(
        self,
        hosts: Sequence[PoolHost],
        *,
        backoff: Backoff = HOST_BACKOFF,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not hosts:
            raise HostConfigError("No host to run on: enable one with `hosts enable NAME`.")
        self.hosts = list(hosts)
        self.backoff = backoff
        self._clock = clock
        self._changed = asyncio.Event()
        self.warnings: list[str] = []  # hosts left out at the start, for the user
        self.last_error: EngineError | None = None
        # Told when a host stops answering or is taken out during the run (the CLI prints
        # it, the Queues view shows it): a moderator sees which host went and why.
        self.on_event: Callable[[str], None] | None = None

    @property
    def parallel(self) -> int:
        return sum(h.slots for h in self.hosts if h.out is None)

    @property
    def single(self) -> bool:
        return len(self.hosts) == 1

    async def prepare(self) -> None:
        """Version and model digest of every host, for provenance (best effort, once)."""

        async def one(host: PoolHost) -> None:
            host.version = await host.reviewer.server_version()
            host.digest = await host.reviewer.model_digest(host.reviewer.options.model)

        await asyncio.gather(*(one(h) for h in self.hosts if h.out is None))

    async def aclose(self) -> None:
        for host in self.hosts:
            if host.owned:
                await host.reviewer.client.aclose()

    # --- slots ------------------------------------------------------------------------------

    def _pick(self, now: float) -> PoolHost | None:
        free = [h for h in self.hosts if h.out is None and h.down_until <= now and h.busy < h.slots]
        if not free:
            return None
        return min(free, key=lambda h: (h.busy / h.slots, h.busy, self.hosts.index(h)))

    async def acquire(self) -> PoolHost:
        """A slot on the least-loaded host that is up; waits for one. Raises the error that
        took the last host out when none is left."""
        while True:
            live = [h for h in self.hosts if h.out is None]
            if not live:
                assert self.last_error is not None
                raise self.last_error
            now = self._clock()
            host = self._pick(now)
            if host is not None:
                host.busy += 1
                return host
            self._changed.clear()
            back = [h.down_until for h in live if h.down_until > now]
            timeout = max(0.0, min(back) - now) if back else None
            with contextlib.suppress(TimeoutError):  # a host's backoff is over: try it again
                await asyncio.wait_for(self._changed.wait(), timeout)

    def release(self, host: PoolHost) -> None:
        host.busy -= 1
        self._changed.set()

    def mark_down(self, host: PoolHost, error: EngineError) -> None:
        host.failures += 1
        delay = self.backoff.delay(host.failures)
        host.down_until = self._clock() + delay
        self.last_error = error
        log.warning("host %s (%s) failed: %s; tried again in %.0f s", host.name, host.url,
                    error, delay)  # fmt: skip
        if host.failures == 1 and not self.single and self.on_event is not None:
            self.on_event(
                f"Host {host.name} ({host.url}) stopped answering ({error}); its items run "
                "on the other hosts, and it is tried again later."
            )
        self._changed.set()

    def take_out(self, host: PoolHost, reason: str, error: EngineError | None = None) -> None:
        host.out = reason
        if error is not None:
            self.last_error = error
        log.warning("host %s (%s) left out of this run: %s", host.name, host.url, reason)
        if error is not None and self.on_event is not None:  # out mid-run, not at the start
            self.on_event(f"Host {host.name} ({host.url}) is out of this run: {reason}")
        self._changed.set()

    def summary(self) -> str | None:
        """Which host judged how many (for several hosts), e.g. "local 30, gpu2 10"."""
        if self.single:
            return None
        return ", ".join(f"{h.name} {h.reviews}" for h in self.hosts)

    # --- a review on the pool ---------------------------------------------------------------

    async def review(self, policy: Policy, content: Content) -> tuple[ReviewResult, PoolHost]:
        """Review on a host of the pool, for a unit of the batch runner.

        Raises `Retry` for what another attempt (maybe on another host) may cure, and the
        error itself for what no attempt can (one host: model missing, token refused; all
        hosts out). Frees the runner's slot once the request is over.
        """
        host = await self.acquire()
        try:
            result = await host.reviewer.review(policy, content)
        finally:
            self.release(host)
        error = result.error
        if isinstance(error, QueueFull):
            raise Retry(error)
        gone = ServerUnreachable if self.single else (ServerUnreachable, ConnectionDropped,
                                                      RequestTimeout)  # fmt: skip
        if isinstance(error, gone):
            self.mark_down(host, error)
            raise Retry(error, max_attempts=UNREACHABLE_ATTEMPTS * len(self.hosts))
        if isinstance(error, ModelMissing | Unauthorized):
            if self.single:
                raise error  # no later item can do better: stop the run
            self.take_out(host, str(error), error)
            raise Retry(error)
        host.failures = 0
        host.reviews += 1
        release_slot()  # the request is over: the next unit starts while this one records
        return result, host


# --- the list of hosts ------------------------------------------------------------------------


class HostsService:
    """The hosts of the settings; quick calls except `statuses`, `test` and `pool`."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.list = HostList(session.settings)

    def _as_used(self, host: HostConfig) -> HostConfig:
        """The local host at the address this session uses (OLLAMA_HOST, --host, the
        setting), which is where its requests go."""
        if host.managed and self.session.host is None:
            return dataclasses.replace(host, url=self.session.endpoint.url)
        return host

    def all(self) -> list[HostConfig]:
        return [self._as_used(h) for h in self.list.all()]

    def get(self, name: str) -> HostConfig:
        host = self.list.get(name)
        if host is None:
            raise HostConfigError(f"No host named {name!r}; `hosts list` shows them.")
        return self._as_used(host)

    def add(
        self,
        name: str,
        url: str,
        *,
        kind: str | None = None,
        model: str = "",
        slots: int = 1,
        token: str | None = None,
    ) -> HostConfig:
        """Add a host (its token, if given, goes to the keyring only). Reads the keyring:
        off the GUI thread."""
        name = check_name(name)
        raw = url.strip()
        if "://" in raw and not urllib.parse.urlsplit(raw).hostname:
            raise HostConfigError(f"Host address {raw!r} names no machine: e.g. http://gpu2:11434.")
        try:
            address = normalize_host(raw)
        except HostError as exc:
            raise HostConfigError(str(exc)) from None
        if kind == "ollama" and kind_of_url(address) == "openai":
            raise HostConfigError(
                f"{address} ends in /v1, an OpenAI-compatible server's address: use --kind "
                "openai, or leave /v1 out for an Ollama server."
            )
        same = next((h for h in self.all() if h.url == address), None)
        if same is not None:
            raise HostConfigError(
                f"Host {same.name} already has the address {address}: one server is one host "
                "(give it more slots instead)."
            )
        host = HostConfig(
            name=name.strip(), kind=check_kind(kind or kind_of_url(address)), url=address,
            model=model.strip(), slots=check_slots(int(slots)), enabled=True,
        )  # fmt: skip
        self.list.add(host)
        if token:
            secrets.set_token(address, token)
        return host

    def remove(self, name: str) -> HostConfig:
        host = self.list.remove(name)
        still_used = {h.url for h in self.list.all()}
        if host.url not in still_used:
            try:
                secrets.delete_token(host.url)
            except Exception as exc:  # the keyring's own errors: the host is gone anyway
                log.warning("token of %s not deleted: %s", host.url, exc)
        return host

    def set_enabled(self, name: str, enabled: bool) -> HostConfig:
        return self.list.set_enabled(name, enabled)

    def default_model(self) -> str:
        return str(self.session.settings["model"])

    def endpoint(self, host: HostConfig) -> Endpoint:
        """Its address and keyring token. Reads the keyring: off the GUI thread."""
        if host.managed:
            return self.session.endpoint
        egress.allow(host.url)  # a configured model host: this process may contact it
        token = secrets.get_token(host.url)
        return Endpoint(host.url, token, float(self.session.settings["request_timeout"]))

    async def _client(self, host: HostConfig) -> tuple[Client, bool]:
        """The session's own client for the local host; a new one (owned) for the others,
        its token read from the keyring in a thread (the client is made on the loop)."""
        if host.managed:
            return self.session.client, False
        endpoint = await asyncio.to_thread(self.endpoint, host)
        return make_client(host.kind, endpoint), True

    def select(self, names: Sequence[str] | None) -> list[HostConfig]:
        """The hosts named (in that order), else every enabled one."""
        if names:
            return [self.get(n) for n in dict.fromkeys(names)]  # named: used even if disabled
        enabled = [h for h in self.all() if h.enabled]
        if not enabled:
            raise HostConfigError(
                "Every host is disabled: enable one with `hosts enable NAME` or in the "
                "Server panel."
            )
        return enabled

    async def statuses(self, names: Sequence[str] | None = None) -> list[HostStatus]:
        """Every host (or those named) probed at once: health, models, and a mark on those
        that lack the model or serve other weights than the rest."""
        hosts = [self.get(n) for n in names] if names else self.all()
        model = self.default_model()

        async def one(host: HostConfig) -> tuple[HostProbe, bool]:
            client, owned = await self._client(host)
            token = bool(client.endpoint.token)
            try:
                found = await asyncio.wait_for(probe(client, host.model_for(model)),
                                               PROBE_TIMEOUT_S)  # fmt: skip
            except TimeoutError:
                found = HostProbe(host.kind, host.url, False,
                                  problem=f"{host.url} did not answer within "
                                  f"{PROBE_TIMEOUT_S:g} s.")  # fmt: skip
            finally:
                if owned:
                    await client.aclose()
            return found, token

        probes = await asyncio.gather(*(one(h) for h in hosts))
        marks = weights_marks(hosts, [p for p, _ in probes])
        return [
            HostStatus(h, p, token, marks.get(h.name))
            for h, (p, token) in zip(hosts, probes, strict=True)
        ]

    async def test(self, name: str, *, policy: str = "harassment") -> HostTest:
        """One tiny review on the host (low effort, a one-line message), timed; recorded in
        nothing."""
        host = self.get(name)
        client, owned = await self._client(host)
        options = self.session.review_options(source="cli", model=host.model_for(
            self.default_model()), effort="low")  # fmt: skip
        reviewer = Reviewer(client, options, None)
        started = time.perf_counter()
        try:
            result = await reviewer.review(resolve_policy(policy), from_text("Have a nice day."))
        finally:
            if owned:
                await client.aclose()
        seconds = time.perf_counter() - started
        return HostTest(
            name=host.name, url=host.url, kind=host.kind, model=options.model, seconds=seconds,
            status=result.status, label=result.verdict.label if result.verdict else None,
            served_model=result.stats.served_model if result.stats else None,
            error=str(result.error) if result.error else None,
        )  # fmt: skip

    async def pool(
        self,
        options: ReviewOptions,
        names: Sequence[str] | None = None,
        *,
        parallel: int | None = None,
    ) -> HostPool:
        """The pool a run spreads over. With --host (the session's address) or no other host
        enabled: the session's server alone, `parallel` slots. Otherwise the hosts named
        (default: every enabled one), each with its slots (`parallel` sets the local host's),
        checked first: a host without the model or with other weights is left out (said in
        `warnings`), one not answering is tried again later."""
        slots = max(1, int(parallel or self.session.settings["num_parallel"]))
        configs = None if self.session.host is not None and not names else self.select(names)
        if configs is None or (len(configs) == 1 and configs[0].managed):
            reviewer = self.session.reviewer(options, save=False)
            config = HostConfig(LOCAL, self.session.kind, self.session.endpoint.url,
                                slots=slots)  # fmt: skip
            pool = HostPool([PoolHost(config, reviewer, slots)])
            await pool.prepare()
            return pool
        members: list[PoolHost] = []
        for config in configs:
            client, owned = await self._client(config)
            host_options = dataclasses.replace(options, model=config.model_for(options.model))
            n = slots if config.managed else config.slots
            members.append(PoolHost(config, Reviewer(client, host_options, None), n, owned=owned))
        pool = HostPool(members)
        pool.warnings.extend(
            f"Host {c.name} is disabled but named, so it is used for this run."
            for c in configs
            if not c.enabled
        )
        try:
            await self._check(pool)
        except BaseException:
            await pool.aclose()
            raise
        return pool

    async def _check(self, pool: HostPool) -> None:
        """Probe every host at once: leave out those without the model or with other weights;
        one that does not answer starts in backoff (tried again during the run)."""

        async def one(host: PoolHost) -> HostProbe:
            try:
                return await asyncio.wait_for(
                    probe(host.reviewer.client, host.reviewer.options.model), PROBE_TIMEOUT_S
                )
            except TimeoutError:
                return HostProbe(host.kind, host.url, False,
                                 problem=f"no answer within {PROBE_TIMEOUT_S:g} s")  # fmt: skip

        probes = await asyncio.gather(*(one(h) for h in pool.hosts))
        marks = weights_marks([h.config for h in pool.hosts], probes)
        for host, found in zip(pool.hosts, probes, strict=True):
            name = f"Host {host.name} ({host.url})"
            if not found.healthy:
                pool.mark_down(host, ServerUnreachable(host.url, detail=found.problem))
                pool.warnings.append(f"{name} is not answering: {found.problem} It is tried "
                                     "again during the run.")  # fmt: skip
            elif (mark := marks.get(host.name)) is not None:
                pool.take_out(host, mark)
                pool.warnings.append(f"{name} is left out: {mark}")
            else:
                host.version = found.version
                host.digest = found.digest
        if all(h.out is not None for h in pool.hosts):
            raise HostConfigError(
                "No host can run this: " + " ".join(pool.warnings) + " Pull the model there, "
                "or set the model name the host uses (`hosts add NAME URL --model M`)."
            )


def weights_marks(hosts: Sequence[HostConfig], probes: Sequence[HostProbe]) -> dict[str, str]:
    """Per host name, why it should not judge beside the others: it lacks the model, or (an
    Ollama host) it has the model under the same name with other weights (digest) than the
    first host that has it (the local one when it does). OpenAI-compatible servers do not
    say which weights they serve: only the name is checked there."""
    marks: dict[str, str] = {}
    reference: tuple[str, str] | None = None  # (host name, digest)
    for host, found in zip(hosts, probes, strict=True):
        if not found.healthy:
            continue
        if found.has_model is False:
            marks[host.name] = found.problem or f"{host.url} lacks the model."
        elif found.digest:
            if reference is None:
                reference = (host.name, found.digest)
            elif found.digest != reference[1]:
                marks[host.name] = (
                    f"it serves other weights (digest {found.digest[:19]}) than host "
                    f"{reference[0]} ({reference[1][:19]}): its verdicts would not be "
                    "comparable. Pull the same model there."
                )
    return marks
