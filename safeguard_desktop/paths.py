"""Every location the app uses, resolved in one place on top of platformdirs.

`--data-dir` (or the SAFEGUARD_DATA_DIR environment variable) puts everything
(settings, history, logs, server state) under one folder: used by tests and
portable installs.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

APP = "safeguard-desktop"
_override: Path | None = None


def set_data_dir(path: Path | str | None) -> None:
    """Override every location (the `--data-dir` option)."""
    global _override
    _override = Path(path).expanduser().resolve() if path else None


def _base() -> Path | None:
    if _override is not None:
        return _override
    env = os.environ.get("SAFEGUARD_DATA_DIR")
    return Path(env).expanduser().resolve() if env else None


PRIVATE_UMASK = 0o077  # files 0600, folders 0700
PRIVATE_FILE = 0o600


@contextmanager
def private_files() -> Iterator[None]:
    """Every file and folder created in this block is the user's only (`cli.main`, `run_gui`).

    Logs, notes, backups and settings hold content under review. The umask is restored when
    the block ends (it is per process, so in-process callers get theirs back).
    """
    old = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(old)


def make_private(path: Path) -> None:
    """Take group and other access away from an existing file or folder (POSIX only)."""
    if sys.platform == "win32":
        return
    with suppress(OSError):
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            path.chmod(mode & 0o700)


def write_private(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to `path`, readable and writable by the user only.

    A file that already exists with wider access is narrowed before it receives the text.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        if sys.platform != "win32":
            with suppress(OSError):  # someone else's file: written as it is
                os.fchmod(out.fileno(), PRIVATE_FILE)
        out.write(text)


def _private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Create a folder readable by the user only (reviews are sensitive).

    `tighten`: a folder of the app's own that exists with wider access is narrowed too.
    """
    if not path.exists():
        old = os.umask(PRIVATE_UMASK)
        try:
            path.mkdir(parents=True, exist_ok=True)
        finally:
            os.umask(old)
    elif tighten:
        make_private(path)
    return path


def data_dir() -> Path:
    base = _base()
    if base:
        return _private_dir(base)
    import platformdirs  # here: the window's frame comes before any folder is needed

    return _private_dir(Path(platformdirs.user_data_dir(APP, appauthor=False)), tighten=True)


def config_dir() -> Path:
    base = _base()
    if base:
        return _private_dir(base)
    import platformdirs

    return _private_dir(Path(platformdirs.user_config_dir(APP, appauthor=False)), tighten=True)


def settings_file() -> Path:
    return config_dir() / "settings.json"


def history_db() -> Path:
    return data_dir() / "history.sqlite3"


def logs_dir() -> Path:
    return _private_dir(data_dir() / "logs", tighten=True)


def server_state_file() -> Path:
    """pid and address of the Ollama server this app started (shared by CLI and GUI)."""
    return data_dir() / "managed-server.json"


def user_policies_dir() -> Path:
    return _private_dir(data_dir() / "policies")


def default_models_dir() -> Path:
    env = os.environ.get("OLLAMA_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".ollama" / "models"
