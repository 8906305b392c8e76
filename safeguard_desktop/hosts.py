"""The model hosts a team points the app at, kept in `hosts.json` beside the settings file.

Each host has a name, a kind (`ollama`: native API; `openai`: `/v1/chat/completions`, as
vLLM, llama.cpp's llama-server and LM Studio serve), an address, the model's name on that
host (empty: the `model` setting), its slots (requests in flight) and whether it is enabled.
Tokens never go in the file: they live in the keyring under the host's address
(`secrets.py`), like the remote token of the single-host setup.

The managed local Ollama (the `host` setting, with `num_parallel` slots) is always one of
them, named `local`; it can be disabled, not removed. The file holds only what the user
said: the `local` entry stores nothing but its `enabled` flag.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from safeguard_desktop import paths
from safeguard_desktop.settings import Settings

log = logging.getLogger("safeguard.hosts")

LOCAL = "local"
KINDS = ("ollama", "openai")
MAX_SLOTS = 64
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")


class HostConfigError(ValueError):
    """A host that cannot be added or a hosts file that cannot be used; the message says
    what to do."""


@dataclass(frozen=True)
class HostConfig:
    name: str
    kind: str
    url: str
    model: str = ""  # the model's name on this host; "" = the `model` setting
    slots: int = 1
    enabled: bool = True

    @property
    def managed(self) -> bool:
        """The local Ollama of the Server panel (from the settings)."""
        return self.name == LOCAL

    def model_for(self, default: str) -> str:
        return self.model or default

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_name(name: str) -> str:
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise HostConfigError(
            f"Host name {name!r} cannot be used: 1-40 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


def check_slots(slots: int) -> int:
    if not 1 <= slots <= MAX_SLOTS:
        raise HostConfigError(f"Slots must be between 1 and {MAX_SLOTS}, not {slots}.")
    return slots


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise HostConfigError(f"Unknown host kind {kind!r}: use {' or '.join(KINDS)}.")
    return kind


def kind_of_url(url: str) -> str:
    """The kind an address given without one most likely has: OpenAI-compatible servers
    are addressed with their `/v1` base (as the `openai` package is), Ollama without."""
    return "openai" if url.rstrip("/").endswith("/v1") else "ollama"


class HostList:
    """The hosts file of one settings file; every change is written at once (privately)."""

    def __init__(self, settings: Settings, path: Path | None = None) -> None:
        self.settings = settings
        self.path = path or Path(settings.path).with_name("hosts.json")
        self.problem: str | None = None  # a file that could not be read: said once
        self._extra: list[HostConfig] = []
        self._local_enabled = True
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            entries = raw.get("hosts", []) if isinstance(raw, dict) else None
            if not isinstance(entries, list):
                raise ValueError('expected {"hosts": [...]}')
            hosts: list[HostConfig] = []
            for entry in entries:
                if not isinstance(entry, dict):
                    raise ValueError(f"a host entry is not an object: {entry!r}")
                if entry.get("name") == LOCAL:
                    self._local_enabled = bool(entry.get("enabled", True))
                    continue
                hosts.append(
                    HostConfig(
                        name=check_name(str(entry["name"])),
                        kind=check_kind(str(entry.get("kind", "ollama"))),
                        url=str(entry["url"]),
                        model=str(entry.get("model") or ""),
                        slots=check_slots(int(entry.get("slots", 1))),
                        enabled=bool(entry.get("enabled", True)),
                    )
                )
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            self.problem = (
                f"Hosts file {self.path} could not be read ({exc}); only the local server "
                "is used. Fix or delete the file, or add the hosts again."
            )
            log.warning("%s", self.problem)
            return
        self._extra = hosts

    def _save(self) -> None:
        entries: list[dict[str, Any]] = []
        if not self._local_enabled:
            entries.append({"name": LOCAL, "enabled": False})
        entries.extend(h.to_json() for h in self._extra)
        try:
            paths.write_private(self.path, json.dumps({"hosts": entries}, indent=2) + "\n")
        except OSError as exc:
            raise HostConfigError(f"Could not save the hosts to {self.path}: {exc}.") from exc

    def local(self) -> HostConfig:
        s = self.settings
        return HostConfig(
            name=LOCAL, kind="ollama", url=str(s["host"]), model="",
            slots=max(1, int(s["num_parallel"])), enabled=self._local_enabled,
        )  # fmt: skip

    def all(self) -> list[HostConfig]:
        """The local server first, then the others in the order they were added."""
        return [self.local(), *self._extra]

    def get(self, name: str) -> HostConfig | None:
        return next((h for h in self.all() if h.name == name), None)

    def add(self, host: HostConfig, *, replace_existing: bool = False) -> HostConfig:
        check_name(host.name)
        check_kind(host.kind)
        check_slots(host.slots)
        if host.name.casefold() == LOCAL:
            raise HostConfigError(
                "'local' is the managed local Ollama (its address is the host setting); "
                "choose another name."
            )
        taken = {
            h.name.casefold() for h in self._extra if h.name != host.name or not replace_existing
        }
        if host.name.casefold() in taken:
            raise HostConfigError(
                f"There is already a host named {host.name!r}; remove it first or choose "
                "another name."
            )
        self._extra = [h for h in self._extra if h.name != host.name] + [host]
        self._save()
        return host

    def remove(self, name: str) -> HostConfig:
        if name == LOCAL:
            raise HostConfigError(
                "The managed local Ollama cannot be removed; disable it instead "
                "(hosts disable local)."
            )
        host = self.get(name)
        if host is None:
            raise HostConfigError(f"No host named {name!r}; `hosts list` shows them.")
        self._extra = [h for h in self._extra if h.name != name]
        self._save()
        return host

    def set_enabled(self, name: str, enabled: bool) -> HostConfig:
        host = self.get(name)
        if host is None:
            raise HostConfigError(f"No host named {name!r}; `hosts list` shows them.")
        if host.managed:
            self._local_enabled = enabled
        else:
            self._extra = [
                replace(h, enabled=enabled) if h.name == name else h for h in self._extra
            ]
        self._save()
        return replace(host, enabled=enabled)
