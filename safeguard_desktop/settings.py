"""Every setting declared once: name, type, default, help.

The settings dialog and the CLI both read `REGISTRY`. Values live in a JSON
file in the config folder; secrets (the remote token) never do: they go
through `secrets.py` to the OS keyring.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safeguard_desktop import paths
from safeguard_desktop.core.vocabulary import EFFORTS

log = logging.getLogger("safeguard.settings")


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str
    group: str = "General"
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    secret: bool = False  # kept in the keyring, never in the settings file
    label: str = ""

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "moderator"


_S = Setting
REGISTRY: tuple[Setting, ...] = (
    _S(
        "host",
        str,
        "http://127.0.0.1:11434",
        "Ollama address. OLLAMA_HOST and --host take precedence.",
        "Model server",
    ),
    _S(
        "remote_token",
        str,
        "",
        "Bearer token for a remote Ollama behind a proxy (kept in the OS keyring).",
        "Model server",
        secret=True,
    ),
    _S("model", str, "gpt-oss-safeguard:20b", "Model used for reviews.", "Model server"),
    _S(
        "effort",
        str,
        "medium",
        "Default reasoning effort (policy front matter can override).",
        "Review",
        choices=EFFORTS,
    ),
    _S(
        "num_ctx",
        int,
        16384,
        "Smallest context window in tokens; a longer policy and content get a larger one, "
        "up to the model's limit.",
        "Review",
        minimum=2048,
        maximum=131072,
        label="Context window (num_ctx)",
    ),
    _S(
        "seed",
        int,
        42,
        "Sampling seed recorded with every review; -1 lets Ollama pick one.",
        "Review",
        minimum=-1,
        maximum=2**31 - 1,
    ),
    _S(
        "temperature",
        float,
        1.0,
        "Sampling temperature (the model's default is 1).",
        "Review",
        minimum=0.0,
        maximum=2.0,
    ),
    _S(
        "request_timeout",
        float,
        300.0,
        "Seconds without any data from the server before a review is given up.",
        "Review",
        minimum=5.0,
        maximum=3600.0,
    ),
    _S(
        "manage_server",
        bool,
        True,
        "Start a local Ollama when none answers at the host.",
        "Local server",
    ),
    _S(
        "ollama_path",
        str,
        "",
        "Path of the ollama executable (empty: search PATH and the usual install folders).",
        "Local server",
    ),
    _S(
        "models_dir",
        str,
        "",
        "Ollama models folder (OLLAMA_MODELS; empty: ~/.ollama/models).",
        "Local server",
    ),
    _S(
        "keep_alive",
        str,
        "30m",
        "How long a model stays loaded after the last review (OLLAMA_KEEP_ALIVE).",
        "Local server",
    ),
    _S(
        "num_parallel",
        int,
        1,
        "Reviews the server runs at once (OLLAMA_NUM_PARALLEL).",
        "Local server",
        minimum=1,
        maximum=16,
    ),
    _S(
        "max_queue",
        int,
        64,
        "Requests waiting before the server answers busy (OLLAMA_MAX_QUEUE).",
        "Local server",
        minimum=1,
        maximum=4096,
    ),
    _S(
        "context_length",
        int,
        0,
        "Server default context (OLLAMA_CONTEXT_LENGTH); 0 keeps Ollama's default.",
        "Local server",
        minimum=0,
        maximum=131072,
    ),
    _S(
        "flash_attention",
        bool,
        True,
        "Use flash attention (OLLAMA_FLASH_ATTENTION).",
        "Local server",
    ),
    _S("moderator", str, _user(), "Your name as recorded in the audit trail.", "Moderator"),
    _S(
        "mask_content",
        bool,
        False,
        "Blur content until you reveal it (click or hold Alt+R).",
        "Moderator",
        label="Mask content until revealed",
    ),
    _S(
        "mask_quotes",
        bool,
        False,
        "Hide quotes in the reasoning until revealed.",
        "Moderator",
        label="Mask quotes in reasoning",
    ),
    _S(
        "mask_categories",
        str,
        "",
        "With masking on, mask only queue items the model found violating under these rule "
        "ids or categories (comma-separated, e.g. SH, V2; sub-rules included) and items not "
        "classified yet; empty masks every item.",
        "Moderator",
        label="Mask only these categories",
    ),
    _S(
        "break_minutes",
        int,
        0,
        "Remind me to take a break after this many minutes of continuous reviewing in a "
        "queue (0: no reminder). A pause of 5 minutes counts as a break.",
        "Moderator",
        minimum=0,
        maximum=480,
        label="Break reminder (minutes)",
    ),
    _S(
        "policy_folder",
        str,
        "",
        "Folder with your own policies (empty: the data folder's policies/; a relative path "
        "is inside the data folder).",
        "Policies",
    ),
    _S(
        "retention_days",
        int,
        0,
        "Delete reviews older than this many days at start (0: keep forever).",
        "History",
        minimum=0,
        maximum=36500,
    ),
    _S(
        "max_file_mb",
        int,
        2,
        "Largest file accepted by the importers, in MB.",
        "Review",
        minimum=1,
        maximum=200,
    ),
)
BY_NAME = {s.name: s for s in REGISTRY}


class SettingsError(ValueError):
    """A value does not fit its setting."""


def coerce(setting: Setting, value: Any) -> Any:
    """Convert text or JSON values to the setting's type, checking bounds and choices."""
    try:
        if setting.type is bool:
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
                    raise ValueError(value)
                value = low in {"1", "true", "yes", "on"}
            else:
                value = bool(value)
        else:
            value = setting.type(value)
    except (TypeError, ValueError):
        raise SettingsError(
            f"{setting.title}: {value!r} is not a valid {setting.type.__name__}."
        ) from None
    if setting.choices and value not in setting.choices:
        raise SettingsError(f"{setting.title}: choose one of {', '.join(setting.choices)}.")
    if setting.minimum is not None and value < setting.minimum:
        raise SettingsError(f"{setting.title}: at least {setting.minimum:g}.")
    if setting.maximum is not None and value > setting.maximum:
        raise SettingsError(f"{setting.title}: at most {setting.maximum:g}.")
    return value


class Settings:
    """Values of the registry, loaded from and saved to one JSON file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.settings_file()
        self._values: dict[str, Any] = {}
        self.load_problem: str | None = None
        self.unreadable = False  # the file exists but is not JSON: keep a copy before saving
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as exc:
            self.unreadable = True
            self.load_problem = (
                f"Settings file {self.path} could not be read ({exc}); defaults are used. "
                "Fix or delete the file (saving keeps a copy as settings.json.broken)."
            )
            log.warning(self.load_problem)
            return
        ignored: list[str] = []
        for name, value in raw.items():
            setting = BY_NAME.get(name)
            if setting is None:
                continue  # from a newer or older version: harmless
            if setting.secret:
                ignored.append(f"{name} (secrets belong in the keyring; remove it from the file)")
                continue
            if setting.type is str and not isinstance(value, str):
                ignored.append(f"{name} (expected text)")
                continue
            try:
                self._values[name] = coerce(setting, value)
            except SettingsError as exc:
                ignored.append(f"{name} ({exc})")
        if ignored:
            self.load_problem = (
                f"Settings file {self.path}: ignored {'; '.join(ignored)}. Defaults are used "
                "for these; fix them in Settings."
            )
            log.warning(self.load_problem)

    def get(self, name: str) -> Any:
        return self._values.get(name, BY_NAME[name].default)

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def set(self, name: str, value: Any) -> None:
        setting = BY_NAME.get(name)
        if setting is None:
            raise SettingsError(f"Unknown setting {name!r}.")
        if setting.secret:
            raise SettingsError(f"{setting.title} is kept in the keyring, not in settings.")
        self._values[name] = coerce(setting, value)

    def items(self) -> Iterator[tuple[Setting, Any]]:
        for setting in REGISTRY:
            yield setting, self.get(setting.name)

    def save(self) -> None:
        """Write atomically, private to the user."""
        data = {k: v for k, v in self._values.items() if not BY_NAME[k].secret}
        tmp = self.path.with_suffix(".tmp")
        old = os.umask(0o077)
        try:
            if self.unreadable and self.path.exists():  # keep what the user had, once
                os.replace(self.path, self.path.with_suffix(".json.broken"))
                self.unreadable = False
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)
        finally:
            os.umask(old)
