"""Find, start, attach to and stop a local `ollama serve`; health probes.

Decisions worth knowing:

- The server is launched with `subprocess.Popen`, not `asyncio.create_subprocess_exec`:
  closing an asyncio subprocess transport (which `asyncio.run` does when the CLI's
  `server start` returns, and qasync does when the GUI quits) kills a child that still runs,
  and the server must outlive the command that started it. The child gets its own session
  (`start_new_session=True`), so a Ctrl+C in the terminal does not reach it. Its exit is
  watched by polling (`supervisor.py`), which works on any event loop.
- Short commands (`ollama -v`, `nvidia-smi`) do use `asyncio.create_subprocess_exec`.
  On Python 3.11 the default child watcher is `ThreadedChildWatcher`, which does not depend
  on the loop, so this works under `qasync.QEventLoop` too (checked in tests/test_server.py).
- Only a loopback address is ever managed; a remote host is attach-only.
- If anything answers as Ollama at the address we attach instead of starting a second one;
  anything else on the port is a `PortInUse` error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx

from safeguard_desktop.engine import server_log, server_state
from safeguard_desktop.engine.endpoint import Endpoint, host_port, is_loopback
from safeguard_desktop.engine.errors import (
    NotLocalHost,
    NotManaged,
    OllamaNotFound,
    PortInUse,
    ServerStartFailed,
)
from safeguard_desktop.engine.server_state import ServerState

log = logging.getLogger("safeguard.server")
START_MARK = "=== safeguard-desktop:"
_VERSION = re.compile(r"(client )?version is\s+v?(\d[^\s]*)", re.IGNORECASE)


# -- the binary --------------------------------------------------------------------------------
def candidate_paths(
    platform: str = sys.platform, env: Mapping[str, str] | None = None, home: Path | None = None
) -> list[Path]:
    """The standard install locations of Ollama on this platform, in search order."""
    env = os.environ if env is None else env
    home = home or Path.home()
    if platform == "win32":
        found = []
        if env.get("LOCALAPPDATA"):
            found.append(Path(env["LOCALAPPDATA"]) / "Programs" / "Ollama" / "ollama.exe")
        if env.get("ProgramFiles"):
            found.append(Path(env["ProgramFiles"]) / "Ollama" / "ollama.exe")
        return found
    if platform == "darwin":
        return [
            Path("/Applications/Ollama.app/Contents/Resources/ollama"),
            home / "Applications/Ollama.app/Contents/Resources/ollama",
            Path("/usr/local/bin/ollama"),
            Path("/opt/homebrew/bin/ollama"),
        ]
    return [
        Path("/usr/local/bin/ollama"),
        Path("/usr/bin/ollama"),
        home / ".local" / "bin" / "ollama",
        Path("/opt/ollama/bin/ollama"),
    ]


def _executable(path: Path) -> bool:
    return path.is_file() and (sys.platform == "win32" or os.access(path, os.X_OK))


def find_ollama(configured: str = "", *, candidates: Sequence[Path] | None = None) -> Path:
    """The `ollama_path` setting, else `ollama` on PATH, else the usual install folders."""
    if configured.strip():
        path = Path(configured.strip()).expanduser()
        if path.is_dir():
            path = path / ("ollama.exe" if sys.platform == "win32" else "ollama")
        if _executable(path):
            return path.resolve()
        raise OllamaNotFound(configured=configured)
    on_path = shutil.which("ollama")
    if on_path:
        return Path(on_path).resolve()
    searched = list(candidate_paths() if candidates is None else candidates)
    for path in searched:
        if _executable(path):
            return path
    raise OllamaNotFound([str(p) for p in searched])


def parse_version(output: str) -> str | None:
    """`ollama -v` output ("ollama version is X", maybe after warnings) → the binary's version.

    "Warning: client version is Y" (printed when the server differs or is absent) names the
    binary itself, so it wins over the server's version.
    """
    client = server = None
    for match in _VERSION.finditer(output):
        if match.group(1):
            client = match.group(2)
        else:
            server = server or match.group(2)
    return client or server


async def binary_version(
    binary: Path, *, url: str | None = None, timeout: float = 10.0
) -> str | None:
    """Run `ollama -v` (it contacts OLLAMA_HOST, so point it at our own host)."""
    env = dict(os.environ)
    if url:
        env["OLLAMA_HOST"] = ollama_host_value(url)
    try:
        proc = await asyncio.create_subprocess_exec(
            str(binary),
            "-v",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    except OSError as exc:
        log.info("cannot run %s -v: %s", binary, exc)
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        return None
    return parse_version(out.decode("utf-8", errors="replace"))


# -- probing -------------------------------------------------------------------------------------
ProbeKind = Literal["ollama", "free", "other", "unauthorized"]


@dataclass(frozen=True)
class Probe:
    """What answers at an address: Ollama, nothing, or something else."""

    kind: ProbeKind
    version: str | None = None
    detail: str = ""


async def probe(endpoint: Endpoint, *, timeout: float = 2.0) -> Probe:
    """`GET /` says "Ollama is running"; `/api/version` is JSON. Anything else is not Ollama."""
    t = httpx.Timeout(timeout, connect=min(timeout, 1.0))
    opts = {**endpoint.httpx_options(), "timeout": t}
    async with httpx.AsyncClient(base_url=endpoint.url, **opts) as c:  # type: ignore[arg-type]
        try:
            root = await c.get("/")
        except httpx.ConnectError as exc:
            return Probe("free", detail=str(exc) or "connection refused")
        except httpx.TimeoutException:
            return Probe("other", detail="it accepts connections but does not answer HTTP")
        except (httpx.HTTPError, OSError) as exc:
            return Probe("other", detail=f"it does not speak HTTP ({type(exc).__name__})")
        if root.status_code in (401, 403):
            return Probe("unauthorized", detail=f"HTTP {root.status_code}")
        is_ollama = root.status_code == 200 and "ollama is running" in root.text.lower()
        version = None
        try:
            resp = await c.get("/api/version")
            data: Any = resp.json() if resp.status_code == 200 else None
            if isinstance(data, dict) and isinstance(data.get("version"), str):
                version, is_ollama = data["version"], True
        except (httpx.HTTPError, OSError, ValueError):
            pass
    if is_ollama:
        return Probe("ollama", version=version)
    return Probe("other", detail=f"HTTP {root.status_code} on / ({root.text[:60].strip()!r})")


# -- configuration -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerConfig:
    """Everything needed to run `ollama serve` the way the settings describe."""

    endpoint: Endpoint
    state_file: Path
    log_file: Path
    ollama_path: str = ""
    models_dir: str = ""
    keep_alive: str = ""
    num_parallel: int = 1
    max_queue: int = 64
    context_length: int = 0
    flash_attention: bool = True
    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    probe_timeout: float = 2.0  # a silent TCP listener on the port costs this much
    extra_env: tuple[tuple[str, str], ...] = ()

    @property
    def url(self) -> str:
        return self.endpoint.url

    @property
    def local(self) -> bool:
        return is_loopback(self.url) and self.url.startswith("http://")


def ollama_host_value(url: str) -> str:
    """OLLAMA_HOST for a base URL: "127.0.0.1:11434" (localhost as 127.0.0.1)."""
    host, port = host_port(url)
    if host == "localhost":
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def server_env(config: ServerConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child's environment: the settings mapped to Ollama's variables.

    OLLAMA_NO_CLOUD=1 comes last, so no setting undoes it: the server this app starts never
    offers Ollama's cloud models (the review room is air-gapped).
    """
    env = dict(os.environ if base is None else base)
    env["OLLAMA_HOST"] = ollama_host_value(config.url)
    if config.models_dir:
        env["OLLAMA_MODELS"] = str(Path(config.models_dir).expanduser())
    if config.keep_alive:
        env["OLLAMA_KEEP_ALIVE"] = config.keep_alive
    env["OLLAMA_NUM_PARALLEL"] = str(config.num_parallel)
    env["OLLAMA_MAX_QUEUE"] = str(config.max_queue)
    if config.context_length > 0:
        env["OLLAMA_CONTEXT_LENGTH"] = str(config.context_length)
    env["OLLAMA_FLASH_ATTENTION"] = "1" if config.flash_attention else "0"
    env.update(dict(config.extra_env))
    env["OLLAMA_NO_CLOUD"] = "1"
    return env


# -- results -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StartResult:
    url: str
    started: bool  # False: an Ollama already answered and we attached to it
    managed: bool  # this app started it (now or in an earlier run)
    pid: int | None
    version: str | None
    binary: str | None = None
    log_file: str | None = None


@dataclass(frozen=True)
class StopResult:
    url: str
    was_running: bool
    pid: int | None = None
    forced: bool = False  # it ignored SIGTERM and was killed


@dataclass(frozen=True)
class ServerStatus:
    host: str
    local: bool
    running: bool
    managed: bool
    pid: int | None = None
    version: str | None = None
    started_at: str | None = None
    binary: str | None = None
    binary_version: str | None = None
    binary_problem: str | None = None
    problem: str | None = None
    log_file: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- the controller ------------------------------------------------------------------------------
class ServerController:
    """Start/attach/stop/status of the one server at `config.url`; the state file is shared."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.config.url

    def managed_state(self) -> ServerState | None:
        """The server this app started, when it still runs (stale records are removed)."""
        return server_state.live_state(self.config.state_file)

    def _state_here(self) -> ServerState | None:
        state = self.managed_state()
        return state if state is not None and state.host == self.url else None

    async def probe(self, timeout: float | None = None) -> Probe:
        wait = self.config.probe_timeout if timeout is None else timeout
        return await probe(self.config.endpoint, timeout=wait)

    async def start(self) -> StartResult:
        """Attach to a running Ollama, or start one and return once it answers."""
        if not self.config.local:
            raise NotLocalHost(self.url)
        found = await self.probe()
        if found.kind in ("ollama", "unauthorized"):
            return self._attached(found)
        port = host_port(self.url)[1]
        state = self._state_here()
        if state is not None:  # ours, alive, but not answering: do not start a second one
            raise ServerStartFailed(
                f"the Ollama it started earlier (pid {state.pid}) runs but does not answer; "
                "run `safeguard-desktop server stop`, then start it again",
                log_tail=self.log_tail(),
                log_file=str(self.config.log_file),
            )
        if found.kind == "other":
            raise PortInUse(port, detail=found.detail)
        binary = find_ollama(self.config.ollama_path)
        return await self._launch(binary, port)

    def _attached(self, found: Probe) -> StartResult:
        state = self._state_here()
        return StartResult(
            url=self.url,
            started=False,
            managed=state is not None,
            pid=state.pid if state else None,
            version=found.version,
            binary=state.binary if state else None,
            log_file=state.log_file if state else None,
        )

    async def _launch(self, binary: Path, port: int) -> StartResult:
        log_file = self.config.log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        server_log.rotate(log_file)
        stamp = datetime.now(UTC).astimezone().isoformat(timespec="seconds")
        cmd = [str(binary), "serve"]
        with log_file.open("ab") as out:
            out.write(f"{START_MARK} {stamp} starting {binary} serve at {self.url}\n".encode())
            out.flush()
            proc = _spawn(cmd, server_env(self.config), out)
        server_state.adopt_child(proc)
        self.process = proc
        log.info("started %s serve (pid %s) for %s", binary, proc.pid, self.url)
        try:
            ours, found = await self._wait_healthy(proc, port)
        except asyncio.CancelledError:
            server_state.send_terminate(proc.pid)
            raise
        if not ours:  # lost a race: another Ollama took the port first
            return self._attached(found)
        state = ServerState(
            pid=proc.pid,
            host=self.url,
            port=port,
            started_at=stamp,
            binary=str(binary),
            cmdline=tuple(cmd),
            proc_start=server_state.proc_start_time(proc.pid),
            models_dir=self.config.models_dir or None,
            log_file=str(log_file),
        )
        server_state.write_state(self.config.state_file, state)
        return StartResult(
            url=self.url,
            started=True,
            managed=True,
            pid=proc.pid,
            version=found.version,
            binary=str(binary),
            log_file=str(log_file),
        )

    async def _wait_healthy(self, proc: subprocess.Popen[bytes], port: int) -> tuple[bool, Probe]:
        """Back-off probes (0.1 s doubling to 1 s) until it answers, exits or times out."""
        deadline = time.monotonic() + self.config.start_timeout
        delay = 0.1
        while True:
            if proc.poll() is not None:
                return False, await self._early_exit(proc, port)
            found = await self.probe(timeout=min(1.0, self.config.probe_timeout))
            if found.kind == "ollama":
                return True, found
            if time.monotonic() >= deadline:
                await self._terminate(proc.pid)
                raise ServerStartFailed(
                    f"it did not answer within {self.config.start_timeout:g} s",
                    log_tail=self.log_tail(),
                    log_file=str(self.config.log_file),
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _early_exit(self, proc: subprocess.Popen[bytes], port: int) -> Probe:
        """An Ollama that won the port race is fine; anything else is an error."""
        self.process = None
        lines = self.log_tail()
        if any("address already in use" in line for line in lines):
            found = await self.probe()
            if found.kind == "ollama":
                return found
            raise PortInUse(port, detail=lines[-1] if lines else None)
        raise ServerStartFailed(
            f"`ollama serve` ended at once ({server_state.exit_reason(proc.returncode)})",
            log_tail=lines,
            log_file=str(self.config.log_file),
        )

    def log_tail(self, lines: int = 20) -> list[str]:
        """The last lines written since the latest start."""
        tail = server_log.tail(self.config.log_file, lines + 1)
        for i in range(len(tail) - 1, -1, -1):
            if tail[i].startswith(START_MARK):
                return tail[i + 1 :]
        return tail[-lines:]

    async def stop(self) -> StopResult:
        """Stop the server this app started: SIGTERM, then kill after `stop_timeout`."""
        if not self.config.local:
            raise NotLocalHost(self.url)
        any_state = self.managed_state()
        state = any_state if any_state is not None and any_state.host == self.url else None
        if state is None:
            found = await self.probe()
            if found.kind in ("ollama", "unauthorized"):
                raise NotManaged(self.url, managed_host=any_state.host if any_state else None)
            return StopResult(self.url, was_running=False)
        forced = await self._terminate(state.pid)
        server_state.clear_state(self.config.state_file)
        self.process = None
        return StopResult(self.url, was_running=True, pid=state.pid, forced=forced)

    async def _terminate(self, pid: int) -> bool:
        """True when SIGTERM was not enough and the process group had to be killed."""
        server_state.send_terminate(pid)
        if await _wait_gone(pid, self.config.stop_timeout):
            return False
        log.warning(
            "ollama (pid %s) ignored SIGTERM for %g s; killing it", pid, self.config.stop_timeout
        )
        server_state.send_kill(pid)
        await _wait_gone(pid, 5.0)
        return True

    async def status(self, *, with_binary: bool = True) -> ServerStatus:
        found = await self.probe()
        recorded = server_state.read_state(self.config.state_file) if self.config.local else None
        if recorded is not None and recorded.host == self.url and server_state.is_ours(recorded):
            state: ServerState | None = recorded
        else:
            state = None
        binary = binary_version_text = problem = binary_problem = None
        if recorded is not None and state is None and recorded.host == self.url:
            # Kept until the next start, so every status call can say what happened.
            problem = (
                f"The Ollama that Safeguard Desktop started (pid {recorded.pid}) is no longer "
                f"running; see {self.config.log_file} and run `safeguard-desktop server start`."
            )
        if found.kind == "other":
            problem = str(PortInUse(host_port(self.url)[1], detail=found.detail))
        elif found.kind == "unauthorized":
            problem = "The server refused the request (not authorised): set the remote token."
        if with_binary and self.config.local:
            try:
                path = find_ollama(self.config.ollama_path)
                binary = str(path)
                binary_version_text = await binary_version(path, url=self.url)
            except OllamaNotFound as exc:
                binary_problem = str(exc)
        return ServerStatus(
            host=self.url,
            local=self.config.local,
            running=found.kind in ("ollama", "unauthorized"),
            managed=state is not None,
            pid=state.pid if state else None,
            version=found.version,
            started_at=state.started_at if state else None,
            binary=binary,
            binary_version=binary_version_text,
            binary_problem=binary_problem,
            problem=problem,
            log_file=str(self.config.log_file) if self.config.log_file.exists() else None,
        )


def _spawn(cmd: list[str], env: dict[str, str], out: Any) -> subprocess.Popen[bytes]:
    """A detached child: own session/process group, output straight into the log file."""
    kwargs: dict[str, Any] = {}
    if sys.platform == "win32":  # pragma: no cover - Windows only
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
    else:
        kwargs["start_new_session"] = True
        # The app runs with umask 077 (its files hold content); models Ollama writes keep
        # Ollama's usual modes.
        kwargs["umask"] = 0o022
    try:
        return subprocess.Popen(
            cmd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            close_fds=True,
            **kwargs,
        )
    except OSError as exc:
        raise ServerStartFailed(f"{cmd[0]} could not be run ({exc.strerror or exc})") from None


async def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while server_state.pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True
