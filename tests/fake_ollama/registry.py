"""Installed models, stored blobs and half-finished pulls of the fake server.

Kept apart from HTTP so the state can be saved to a JSON file (FAKE_OLLAMA_STATE) or to an
Ollama-like models folder and survive a restart of the standalone process.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GIB = 1024**3
DEFAULT_SIZE = 13_780_173_839
KNOWN_SIZES = {
    "gpt-oss-safeguard:20b": 13_780_173_839,
    "gpt-oss-safeguard:latest": 13_780_173_839,
    "gpt-oss-safeguard:120b": 65_290_180_121,
    "gpt-oss:20b": 13_780_173_839,
    "gpt-oss:120b": 65_290_180_121,
}
SMALL_LAYERS = (  # (media type suffix, size) of the layers that come with a model blob
    ("template", 7_240),
    ("license", 11_353),
    ("params", 18),
)


def normalize(name: str) -> str:
    """Ollama's short names: "model" means "model:latest"."""
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def fake_digest(*parts: str) -> str:
    """A stable sha256 digest string derived from a name."""
    return "sha256:" + hashlib.sha256("\0".join(parts).encode()).hexdigest()


def now_iso() -> str:
    """RFC 3339 time with nanosecond-like precision, as Ollama writes it."""
    return datetime.now(UTC).astimezone().isoformat(timespec="microseconds")


def parameter_size(size: int) -> str:
    """A plausible parameter count label for a MXFP4 model of this many bytes."""
    if size >= 40 * GIB:
        return "116.8B"
    if size >= 8 * GIB:
        return "20.9B"
    return f"{max(size / 0.55e9, 0.1):.1f}B"


@dataclass(frozen=True)
class Layer:
    """One blob of a model manifest."""

    media_type: str
    digest: str
    size: int


@dataclass(frozen=True)
class ModelEntry:
    """One installed model as /api/tags and /api/show describe it."""

    name: str
    size: int
    digest: str
    capabilities: tuple[str, ...] = ("completion", "thinking")
    modified_at: str = field(default_factory=now_iso)
    family: str = "gptoss"
    quantization_level: str = "MXFP4"
    context_length: int = 131_072
    layers: tuple[Layer, ...] = ()

    def details(self) -> dict[str, Any]:
        """The "details" object shared by tags, ps and show."""
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": parameter_size(self.size),
            "quantization_level": self.quantization_level,
        }


def layers_for(name: str, size: int) -> tuple[Layer, ...]:
    """The layers a pullable model is made of: the big model blob plus small text blobs."""
    model = Layer("application/vnd.ollama.image.model", fake_digest(name, "model"), size)
    small = tuple(
        Layer(f"application/vnd.ollama.image.{kind}", fake_digest(name, kind), n)
        for kind, n in SMALL_LAYERS
    )
    return (model, *small)


def make_entry(
    name: str,
    size: int | None = None,
    digest: str | None = None,
    capabilities: Sequence[str] = ("completion", "thinking"),
    family: str = "gptoss",
) -> ModelEntry:
    """A model entry with realistic defaults for a gpt-oss(-safeguard) tag."""
    name = normalize(name)
    size = size if size is not None else KNOWN_SIZES.get(name, DEFAULT_SIZE)
    return ModelEntry(
        name=name,
        size=size,
        digest=(digest or fake_digest(name, "manifest")).removeprefix("sha256:"),
        capabilities=tuple(capabilities),
        family=family,
        layers=layers_for(name, size),
    )


class Registry:
    """Thread-safe store of models, blobs (digest -> size) and partial pulls."""

    def __init__(self, *, state_file: Path | None = None, models_dir: Path | None = None) -> None:
        self.lock = threading.RLock()
        self.models: dict[str, ModelEntry] = {}
        self.blobs: dict[str, int] = {}
        self.partial: dict[str, int] = {}
        self.state_file = state_file
        self.models_dir = models_dir
        self._load()

    # -- models -----------------------------------------------------------------------------
    def add(self, entry: ModelEntry) -> None:
        """Install or replace a model; its layers count as stored blobs."""
        with self.lock:
            self.models[entry.name] = entry
            for layer in entry.layers:
                self.blobs.setdefault(layer.digest, layer.size)
            self._write_manifest(entry)
            self.save()

    def remove(self, name: str) -> bool:
        """Delete a model; False when it was not installed."""
        with self.lock:
            entry = self.models.pop(normalize(name), None)
            if entry is None:
                return False
            if self.models_dir is not None:
                self._manifest_path(entry.name).unlink(missing_ok=True)
            self.save()
            return True

    def get(self, name: str) -> ModelEntry | None:
        """The installed model of that name (short names accepted)."""
        with self.lock:
            return self.models.get(normalize(name))

    def touch(self, name: str) -> None:
        """Refresh modified_at, as a re-pull or re-create does."""
        with self.lock:
            entry = self.models.get(name)
            if entry is not None:
                self.models[name] = replace(entry, modified_at=now_iso())

    # -- blobs and pulls --------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path | None:
        """Where an uploaded blob lives on disk, when a models folder is configured."""
        if self.models_dir is None:
            return None
        return self.models_dir / "blobs" / digest.replace(":", "-")

    def add_blob(self, digest: str, size: int) -> None:
        with self.lock:
            self.blobs[digest] = size
            self.partial.pop(digest, None)
            self.save()

    def has_blob(self, digest: str) -> bool:
        with self.lock:
            return digest in self.blobs

    def progress(self, digest: str, completed: int) -> None:
        """Remember how far a pull of this blob got, so a retry resumes there."""
        with self.lock:
            self.partial[digest] = max(self.partial.get(digest, 0), completed)

    def completed(self, digest: str) -> int:
        with self.lock:
            if digest in self.blobs:
                return self.blobs[digest]
            return self.partial.get(digest, 0)

    # -- persistence ------------------------------------------------------------------------
    def save(self) -> None:
        """Write the JSON state file, when one is configured."""
        if self.state_file is None:
            return
        with self.lock:
            data = {
                "models": [asdict(m) for m in self.models.values()],
                "blobs": self.blobs,
                "partial": self.partial,
            }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        tmp.replace(self.state_file)

    def _load(self) -> None:
        if self.models_dir is not None:
            self._load_models_dir(self.models_dir)
        if self.state_file is None or not self.state_file.exists():
            return
        data = json.loads(self.state_file.read_text(encoding="utf-8"))
        for raw in data.get("models", []):
            raw["capabilities"] = tuple(raw.get("capabilities", ()))
            raw["layers"] = tuple(Layer(**layer) for layer in raw.get("layers", ()))
            entry = ModelEntry(**raw)
            self.models[entry.name] = entry
        self.blobs.update({k: int(v) for k, v in data.get("blobs", {}).items()})
        self.partial.update({k: int(v) for k, v in data.get("partial", {}).items()})

    def _manifest_path(self, name: str) -> Path:
        assert self.models_dir is not None
        base, tag = normalize(name).rsplit(":", 1)
        parts = base.split("/")
        if len(parts) == 1:
            parts = ["registry.ollama.ai", "library", *parts]
        elif len(parts) == 2:
            parts = ["registry.ollama.ai", *parts]
        return self.models_dir.joinpath("manifests", *parts, tag)

    def _write_manifest(self, entry: ModelEntry) -> None:
        if self.models_dir is None:
            return
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "digest": fake_digest(entry.name, "config"),
                "size": 487,
            },
            "layers": [
                {"mediaType": x.media_type, "digest": x.digest, "size": x.size}
                for x in entry.layers
            ],
        }
        path = self._manifest_path(entry.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(manifest), encoding="utf-8")

    def _load_models_dir(self, root: Path) -> None:
        blobs = root / "blobs"
        if blobs.is_dir():
            for path in blobs.glob("sha256-*"):
                self.blobs[path.name.replace("-", ":", 1)] = path.stat().st_size
        manifests = root / "manifests"
        if not manifests.is_dir():
            return
        for path in manifests.rglob("*"):
            if not path.is_file():
                continue
            rel = path.relative_to(manifests).parts
            if len(rel) < 4:
                continue
            host, namespace, *rest = rel
            name = "/".join(rest[:-1])
            if host != "registry.ollama.ai" or namespace != "library":
                name = f"{host}/{namespace}/{name}"
            data = json.loads(path.read_text(encoding="utf-8"))
            layers = tuple(
                Layer(x["mediaType"], x["digest"], int(x["size"])) for x in data.get("layers", [])
            )
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            entry = ModelEntry(
                name=f"{name}:{rest[-1]}",
                size=sum(x.size for x in layers),
                digest=digest,
                layers=layers,
            )
            self.models[entry.name] = entry
            for layer in layers:
                self.blobs.setdefault(layer.digest, layer.size)
