"""The state file of the managed server, and the process checks that make it trustworthy.

The CLI and the GUI share one JSON file (`paths.server_state_file()`) naming the `ollama serve`
this app started: pid, address, binary, start time. A pid alone can be reused by an unrelated
process after a reboot or a crash, so a record counts only while the process still runs,
its command line names "ollama" and (on Linux) its kernel start time matches the one recorded.
psutil is not a dependency: Linux reads /proc, and whether a pid still runs is
`processes.pid_alive` (never `os.kill(pid, 0)` on Windows, where it would terminate the process).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safeguard_desktop import processes

log = logging.getLogger("safeguard.server")

# Children this process started, so their exit is reaped (a zombie still answers kill(pid, 0)).
_children: dict[int, subprocess.Popen[bytes]] = {}


def adopt_child(proc: subprocess.Popen[bytes]) -> None:
    _children[proc.pid] = proc


def child(pid: int) -> subprocess.Popen[bytes] | None:
    return _children.get(pid)


@dataclass(frozen=True)
class ServerState:
    """What the state file records about the server we started."""

    pid: int
    host: str  # base URL, e.g. http://127.0.0.1:11434
    port: int
    started_at: str  # ISO 8601
    binary: str
    cmdline: tuple[str, ...] = ()
    proc_start: str | None = None  # Linux: field 22 of /proc/<pid>/stat
    models_dir: str | None = None
    log_file: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["cmdline"] = list(self.cmdline)
        return data

    @classmethod
    def from_json(cls, data: Any) -> ServerState | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls(
                pid=int(data["pid"]),
                host=str(data["host"]),
                port=int(data["port"]),
                started_at=str(data.get("started_at") or ""),
                binary=str(data.get("binary") or ""),
                cmdline=tuple(str(x) for x in data.get("cmdline") or ()),
                proc_start=data.get("proc_start"),
                models_dir=data.get("models_dir"),
                log_file=data.get("log_file"),
            )
        except (KeyError, TypeError, ValueError):
            return None


def read_state(path: Path) -> ServerState | None:
    """The recorded server, or None (no file, unreadable file, or a malformed record)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("server state file %s unreadable: %s", path, exc)
        return None
    return ServerState.from_json(raw)


def write_state(path: Path, state: ServerState) -> None:
    """Atomic and private to the user."""
    tmp = path.with_name(path.name + ".tmp")
    old = os.umask(0o077)
    try:
        tmp.write_text(json.dumps(state.to_json(), indent=2), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        os.umask(old)


def clear_state(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def live_state(path: Path) -> ServerState | None:
    """The recorded server if it still runs; a stale file (dead or reused pid) is removed."""
    state = read_state(path)
    if state is None:
        if path.exists():
            clear_state(path)
        return None
    if is_ours(state):
        return state
    log.info("removing stale server state (pid %s no longer runs ollama)", state.pid)
    clear_state(path)
    return None


# -- processes ---------------------------------------------------------------------------------
def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text.rpartition(")")[2].split()


def proc_start_time(pid: int) -> str | None:
    """Kernel start time of a process (Linux), to tell it apart from a later one with its pid."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None  # field 22 overall


def proc_cmdline(pid: int) -> tuple[str, ...] | None:
    """The command line of a process (Linux); None when it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)


def pid_alive(pid: int) -> bool:
    """Whether the process runs; a child of ours is polled, which also reaps it."""
    proc = _children.get(pid)
    if proc is not None:
        return proc.poll() is None
    return processes.pid_alive(pid)


def is_ours(state: ServerState) -> bool:
    """The recorded pid still runs the ollama we started (not a reused pid)."""
    if not pid_alive(state.pid):
        return False
    if sys.platform.startswith("linux"):
        cmdline = proc_cmdline(state.pid)
        if cmdline is None or not any("ollama" in part.lower() for part in cmdline):
            return False
        if state.proc_start and proc_start_time(state.pid) != state.proc_start:
            return False
    return True


def send_terminate(pid: int) -> None:
    """Ask the server to shut down (SIGTERM; on Windows there is only TerminateProcess)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)


def send_kill(pid: int) -> None:
    """Kill the server and, on POSIX, its process group (the model runners it spawned)."""
    if sys.platform == "win32":
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:  # we started it as a session leader
            os.killpg(pid, signal.SIGKILL)
            return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def exit_reason(returncode: int | None) -> str:
    """ "exit code 2" or "killed by signal 9 (SIGKILL)"; "exit status unknown" for a non-child."""
    if returncode is None:
        return "exit status unknown"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = "?"
        return f"killed by signal {-returncode} ({name})"
    return f"exit code {returncode}"
