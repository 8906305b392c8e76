"""Every location the app uses, resolved in one place on top of platformdirs.

`--data-dir` (or the SAFEGUARD_DATA_DIR environment variable) puts everything
(settings, history, logs, server state) under one folder: used by tests and
portable installs.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

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


def _private_dir(path: Path) -> Path:
    """Create a folder readable by the user only (reviews are sensitive)."""
    if not path.exists():
        old = os.umask(0o077)
        try:
            path.mkdir(parents=True, exist_ok=True)
        finally:
            os.umask(old)
    return path


def data_dir() -> Path:
    base = _base()
    return _private_dir(base if base else Path(platformdirs.user_data_dir(APP, appauthor=False)))


def config_dir() -> Path:
    base = _base()
    if base:
        return _private_dir(base)
    return _private_dir(Path(platformdirs.user_config_dir(APP, appauthor=False)))


def settings_file() -> Path:
    return config_dir() / "settings.json"


def history_db() -> Path:
    return data_dir() / "history.sqlite3"


def logs_dir() -> Path:
    return _private_dir(data_dir() / "logs")


def server_state_file() -> Path:
    """pid and address of the Ollama server this app started (shared by CLI and GUI)."""
    return data_dir() / "managed-server.json"


def user_policies_dir() -> Path:
    return _private_dir(data_dir() / "policies")


def default_models_dir() -> Path:
    env = os.environ.get("OLLAMA_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".ollama" / "models"
