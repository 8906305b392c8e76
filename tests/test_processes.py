"""Whether a process still runs: right on POSIX, and never `os.kill(pid, 0)` on Windows."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from typing import Any

import pytest

from safeguard_desktop import processes
from safeguard_desktop.engine import server_state
from safeguard_desktop.store import history

STILL_ACTIVE = 259
ERROR_ACCESS_DENIED = 5
ERROR_INVALID_PARAMETER = 87


def test_own_process_is_alive() -> None:
    assert processes.pid_alive(os.getpid())


def test_reaped_child_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not processes.pid_alive(proc.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_exited_but_unreaped_child_is_not_alive() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # exited, left a zombie
        assert not processes.pid_alive(proc.pid)
    finally:
        proc.wait()


@pytest.mark.parametrize("pid", [0, -1, -os.getpid(), 2**40])
def test_impossible_pids_are_not_alive(pid: int) -> None:
    assert not processes.pid_alive(pid)


def _posix(monkeypatch: pytest.MonkeyPatch, error: type[BaseException]) -> None:
    def kill(pid: int, sig: int) -> None:
        raise error(pid, sig)

    monkeypatch.setattr(processes, "sys", types.SimpleNamespace(platform="darwin"))
    monkeypatch.setattr(processes.os, "kill", kill)


def test_another_users_process_counts_as_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    _posix(monkeypatch, PermissionError)
    assert processes.pid_alive(4242)


def test_missing_process_is_not_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    _posix(monkeypatch, ProcessLookupError)
    assert not processes.pid_alive(4242)


class FakeKernel32:
    """OpenProcess/GetExitCodeProcess/CloseHandle over a table of pid -> exit code."""

    def __init__(self, codes: dict[int, int], denied: frozenset[int] = frozenset()) -> None:
        self.codes = codes
        self.denied = denied
        self.last_error = 0
        self.opened: list[tuple[int, int]] = []
        self.closed: list[int] = []

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:
        self.opened.append((access, pid))
        if pid in self.denied:
            self.last_error = ERROR_ACCESS_DENIED
            return 0
        if pid not in self.codes:
            self.last_error = ERROR_INVALID_PARAMETER
            return 0
        return 1000 + pid

    def GetExitCodeProcess(self, handle: int, code: Any) -> int:
        code.contents.value = self.codes[handle - 1000]
        return 1

    def CloseHandle(self, handle: int) -> int:
        self.closed.append(handle)
        return 1


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> FakeKernel32:
    """Pretend to run on Windows; os.kill would terminate the process there, so it fails."""
    kernel32 = FakeKernel32({10: STILL_ACTIVE, 11: 0, 12: 1}, denied=frozenset({13}))

    def kill(pid: int, sig: int) -> None:
        raise AssertionError(f"os.kill({pid}, {sig}) on Windows terminates the process")

    monkeypatch.setattr(processes, "sys", types.SimpleNamespace(platform="win32"))
    monkeypatch.setattr(processes, "_kernel32", lambda: kernel32)
    monkeypatch.setattr(processes, "_last_error", lambda: kernel32.last_error)
    monkeypatch.setattr(os, "kill", kill)
    return kernel32


def test_windows_asks_the_kernel_and_closes_the_handle(windows: FakeKernel32) -> None:
    assert processes.pid_alive(10)
    assert windows.opened == [(0x1000, 10)]  # PROCESS_QUERY_LIMITED_INFORMATION
    assert windows.closed == [1010]


@pytest.mark.parametrize(("pid", "alive"), [(10, True), (11, False), (12, False), (13, True)])
def test_windows_running_exited_and_protected_processes(
    windows: FakeKernel32, pid: int, alive: bool
) -> None:
    assert processes.pid_alive(pid) is alive


def test_windows_unknown_and_impossible_pids(windows: FakeKernel32) -> None:
    assert not processes.pid_alive(99)
    assert not processes.pid_alive(0)
    assert not processes.pid_alive(2**40)
    assert windows.opened == [(0x1000, 99)]


def test_server_state_and_history_use_the_safe_check_on_windows(windows: FakeKernel32) -> None:
    assert server_state.pid_alive(10)
    assert not server_state.pid_alive(11)
    assert history._process_alive(10)
    assert not history._process_alive(11)
    assert history._process_alive(None)  # no pid recorded: not declared dead
