"""Whether a process still runs, asked safely on every platform (no psutil).

POSIX answers `os.kill(pid, 0)`; Linux also reads /proc so an exited but unreaped child (a
zombie) counts as gone. On Windows `os.kill(pid, 0)` would *terminate* the process, so the
kernel is asked through ctypes instead. Any layer may import this module.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path
from typing import Any

_PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
_STILL_ACTIVE = 259
_ERROR_ACCESS_DENIED = 5


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists; a pid it cannot ask about counts as alive."""
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return _windows_alive(pid)
    if sys.platform.startswith("linux"):
        state = _linux_state(pid)
        if state is not None:
            return state not in ("Z", "X")  # a zombie has exited, only its entry is left
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to someone else
        return True
    except OverflowError:  # larger than any pid the system hands out
        return False
    except OSError:  # cannot tell: count it as alive rather than declare it gone
        return True
    return True


def _linux_state(pid: int) -> str | None:
    """The state letter in /proc/<pid>/stat ("R", "S", "Z"...); None when it cannot be read."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name may hold spaces and ')'
    return fields[0] if fields else None


@functools.cache
def _kernel32() -> Any:  # pragma: no cover - Windows only
    dll = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
    dll.OpenProcess.argtypes = (ctypes.c_uint32, ctypes.c_int, ctypes.c_uint32)
    dll.OpenProcess.restype = ctypes.c_void_p
    dll.GetExitCodeProcess.argtypes = (ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32))
    dll.GetExitCodeProcess.restype = ctypes.c_int
    dll.CloseHandle.argtypes = (ctypes.c_void_p,)
    dll.CloseHandle.restype = ctypes.c_int
    return dll


def _last_error() -> int:  # pragma: no cover - Windows only
    return int(ctypes.get_last_error())  # type: ignore[attr-defined]


def _windows_alive(pid: int) -> bool:
    """OpenProcess + GetExitCodeProcess; never `os.kill`, which would end the process."""
    if pid > 0xFFFFFFFF:
        return False
    kernel32 = _kernel32()
    handle = kernel32.OpenProcess(_PROCESS_QUERY_LIMITED_INFORMATION, False, pid)
    if not handle:
        # Access denied means it exists (a protected or another session's process).
        return _last_error() == _ERROR_ACCESS_DENIED
    try:
        code = ctypes.c_uint32()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.pointer(code))
        return bool(ok) and code.value == _STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)
