"""The managed server's log: `logs_dir()/ollama.log`, rotated at about 5 MB, 3 old files kept.

The child writes to the file directly (an inherited append-mode handle), because it outlives
the CLI command that started it. Rotation therefore happens before each start, and the GUI's
long-lived supervisor rotates in place with copy-and-truncate, which is safe for a writer in
append mode: its next write lands at the new end of the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

MAX_BYTES = 5 * 1024 * 1024
KEEP = 3


def _numbered(path: Path, n: int) -> Path:
    return path.with_name(f"{path.name}.{n}")


def _shift(path: Path, keep: int) -> None:
    _numbered(path, keep).unlink(missing_ok=True)
    for n in range(keep - 1, 0, -1):
        older = _numbered(path, n)
        if older.exists():
            os.replace(older, _numbered(path, n + 1))


def _due(path: Path, max_bytes: int) -> bool:
    """The log exists and has reached the size at which it is rotated."""
    try:
        return path.stat().st_size >= max_bytes
    except FileNotFoundError:
        return False


def rotate(path: Path, *, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> bool:
    """Before a start: move ollama.log to ollama.log.1 (and so on) when it is too big."""
    if not _due(path, max_bytes):
        return False
    _shift(path, keep)
    os.replace(path, _numbered(path, 1))
    return True


def rotate_in_place(path: Path, *, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> bool:
    """While a child still writes: copy to ollama.log.1, then truncate the live file."""
    if not _due(path, max_bytes):
        return False
    _shift(path, keep)
    shutil.copyfile(path, _numbered(path, 1))
    with path.open("r+b") as handle:
        handle.truncate(0)
    return True


def tail(path: Path, lines: int = 50, *, block: int = 64 * 1024) -> list[str]:
    """The last `lines` lines, reading from the end (the log can be megabytes)."""
    if lines <= 0:
        return []
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            end = handle.tell()
            data = b""
            while end > 0 and data.count(b"\n") <= lines:
                start = max(0, end - block)
                handle.seek(start)
                data = handle.read(end - start) + data
                end = start
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", errors="replace")
    return text.splitlines()[-lines:]


async def follow(path: Path, *, poll: float = 0.25, from_end: bool = True) -> AsyncIterator[str]:
    """New lines as they are written; survives rotation and truncation. Cancel to stop."""
    position = 0
    if from_end:
        with contextlib.suppress(FileNotFoundError):
            position = path.stat().st_size
    pending = b""
    while True:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size < position:  # rotated or truncated: start over
            position, pending = 0, b""
        if size > position:
            with path.open("rb") as handle:
                handle.seek(position)
                chunk = handle.read(size - position)
            position += len(chunk)
            pending += chunk
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.decode("utf-8", errors="replace").rstrip("\r")
        await asyncio.sleep(poll)
