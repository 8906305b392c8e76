"""Air-gapped model bundles: one .tar with a model's manifest and every blob it references.

Layout inside the tar (the same paths as in an Ollama models folder):

    bundle.json                                              index, always the first entry
    manifests/registry.ollama.ai/library/gpt-oss-safeguard/20b
    blobs/sha256-<hex>                                       one per config/layer digest

Blobs are 14-65 GB, so everything streams in 1 MiB pieces; nothing is read whole into memory.
The work is blocking file I/O: the `*_async` wrappers run it in a worker thread, relay progress
to the event loop and turn task cancellation into a prompt, clean stop. Import lives in
`bundle_import.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import io
import json
import os
import re
import shutil
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from safeguard_desktop.engine.errors import BundleError, OperationCancelled
from safeguard_desktop.engine.progress import Progress, ProgressCallback, RateMeter

FORMAT = "safeguard-desktop-model-bundle"
FORMAT_VERSION = 1
INDEX = "bundle.json"
PIECE = 1024 * 1024
MAX_SMALL = 1024 * 1024  # bundle.json and manifests are small JSON files
MAX_BLOB = 2**42  # 4 TiB: ten times the largest model file there is
DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
BLOB_ENTRY = re.compile(r"^blobs/sha256-([0-9a-f]{64})$")
COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:-]*$")
DEFAULT_REGISTRY, DEFAULT_NAMESPACE = "registry.ollama.ai", "library"


@dataclass(frozen=True)
class BundleBlob:
    digest: str  # "sha256:<hex>"
    size: int

    @property
    def entry(self) -> str:
        return blob_entry(self.digest)


@dataclass(frozen=True)
class BundleIndex:
    name: str
    manifest: str  # path of the manifest inside the tar and inside the models folder
    manifest_sha256: str
    blobs: tuple[BundleBlob, ...]
    created_at: str = ""
    app_version: str = ""

    @property
    def total(self) -> int:
        return sum(b.size for b in self.blobs)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "manifest": self.manifest,
            "manifest_sha256": self.manifest_sha256,
            "blobs": [{"digest": b.digest, "size": b.size, "path": b.entry} for b in self.blobs],
            "created_at": self.created_at,
            "app_version": self.app_version,
        }

    @classmethod
    def from_json(cls, data: Any) -> BundleIndex:
        """Validate an index read from an untrusted bundle."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise BundleError("This file is not a Safeguard Desktop model bundle (bad index).")
        if data.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                "This bundle was made by a newer Safeguard Desktop; update the app to import it."
            )
        try:
            manifest = str(data["manifest"])
            blobs = tuple(BundleBlob(str(b["digest"]), blob_size(b["size"])) for b in data["blobs"])
            index = cls(
                name=str(data["name"]),
                manifest=manifest,
                manifest_sha256=str(data["manifest_sha256"]),
                blobs=blobs,
                created_at=str(data.get("created_at") or ""),
                app_version=str(data.get("app_version") or ""),
            )
        except _BadSize as exc:
            raise BundleError(
                f"The bundle's index gives a blob the impossible size {exc.shown}; "
                "make the bundle again."
            ) from None
        except (KeyError, TypeError, ValueError):
            raise BundleError("The bundle's index is damaged; make the bundle again.") from None
        check_manifest_path(manifest)
        if any(not DIGEST.match(b.digest) for b in blobs):
            raise BundleError("The bundle's index lists an invalid blob; make the bundle again.")
        if len({b.digest for b in blobs}) != len(blobs):
            raise BundleError("The bundle's index lists a blob twice; make the bundle again.")
        return index


@dataclass(frozen=True)
class BundleResult:
    name: str
    path: Path  # the bundle written, or the models folder imported into
    blobs: int
    total: int  # bytes
    skipped: int = 0  # blobs the models folder already had


class _BadSize(ValueError):
    def __init__(self, value: object) -> None:
        super().__init__(value)
        try:
            shown = json.dumps(value)  # as the bundle wrote it: 1e309 reads back as Infinity
        except (TypeError, ValueError):
            shown = repr(value)
        self.shown = shown if len(shown) <= 40 else shown[:39] + "…"


def blob_size(value: object) -> int:
    """A blob size from untrusted JSON: a whole number of bytes from 0 to MAX_BLOB.

    `1e309` (infinity), `1.5`, `"12"`, `true` or 10**30 are refused, never converted.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_BLOB:
        raise _BadSize(value)
    return value


# -- names and paths -----------------------------------------------------------------------------
def manifest_entry(name: str) -> str:
    """`gpt-oss-safeguard:20b` → manifests/registry.ollama.ai/library/gpt-oss-safeguard/20b."""
    text = name.strip()
    base, tag = text, "latest"
    last = text.rsplit("/", 1)[-1]
    if ":" in last:
        base, _, tag = text.rpartition(":")
    parts = base.split("/")
    if len(parts) == 1:
        parts = [DEFAULT_REGISTRY, DEFAULT_NAMESPACE, *parts]
    elif len(parts) == 2:
        parts = [DEFAULT_REGISTRY, *parts]
    if len(parts) != 3 or not all(COMPONENT.match(p) for p in (*parts, tag)) or ".." in text:
        raise BundleError(
            f"{name!r} is not a model name Ollama uses (e.g. gpt-oss-safeguard:20b or "
            "user/model:tag)."
        )
    return "/".join(["manifests", *parts, tag])


def check_manifest_path(entry: str) -> None:
    parts = entry.split("/")
    if (
        len(parts) != 5
        or parts[0] != "manifests"
        or not all(COMPONENT.match(p) and p not in (".", "..") for p in parts[1:])
    ):
        raise BundleError(f"The bundle names an unsafe manifest path {entry!r}; it is refused.")


def blob_entry(digest: str) -> str:
    return "blobs/" + digest.replace(":", "-", 1)


def read_manifest_digests(data: bytes, fix: str = "re-pull the model") -> list[BundleBlob]:
    """The config and layer digests (with sizes) a manifest references, in order.

    ``fix`` says what to do when the manifest cannot be used.
    """
    try:
        manifest = json.loads(data)
        items = [manifest["config"], *manifest.get("layers", [])]
        blobs = [BundleBlob(str(x["digest"]), _manifest_size(x.get("size"))) for x in items]
    except _BadSize as exc:
        raise BundleError(
            f"The model's manifest gives a blob the impossible size {exc.shown}; {fix}."
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise BundleError(f"The model's manifest is not valid JSON; {fix}.") from None
    unique: dict[str, BundleBlob] = {}
    for blob in blobs:
        if not DIGEST.match(blob.digest):
            raise BundleError(f"The manifest references an invalid digest {blob.digest!r}.")
        unique.setdefault(blob.digest, blob)
    return list(unique.values())


def _manifest_size(value: object) -> int:
    return -1 if value is None else blob_size(value)  # -1: the manifest does not say


# -- streaming helpers ---------------------------------------------------------------------------
class Meter:
    """Byte counter across a whole operation; reports at most ~10 times a second."""

    def __init__(
        self,
        phase: str,
        total: int,
        on_progress: ProgressCallback | None,
        cancel: threading.Event | None,
    ) -> None:
        self.phase, self.total = phase, total
        self.on_progress, self.cancel = on_progress, cancel
        self.done = 0
        self.rate = RateMeter()
        self._last = 0.0
        self.status = ""

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise OperationCancelled()

    def add(self, n: int, *, force: bool = False) -> None:
        self.done += n
        self.check()
        now = time.monotonic()
        if self.on_progress is not None and (force or now - self._last >= 0.1):
            self._last = now
            rate = self.rate.update(self.done)
            self.on_progress(
                Progress(
                    self.phase,
                    self.status,
                    self.done,
                    self.total,
                    rate,
                    self.rate.eta(self.done, self.total),
                )
            )


def copy_hashing(src: IO[bytes], dst: IO[bytes] | None, size: int, meter: Meter) -> str:
    """Copy exactly `size` bytes (or just read them when dst is None); their sha256 hex."""
    hasher = hashlib.sha256()
    left = size
    while left > 0:
        data = src.read(min(PIECE, left))
        if not data:
            raise BundleError("The bundle is truncated; copy it again from the source machine.")
        hasher.update(data)
        if dst is not None:
            dst.write(data)
        left -= len(data)
        meter.add(len(data))
    return hasher.hexdigest()


class _HashingReader(io.RawIOBase):
    """A blob file as tarfile reads it: hashed and counted on the way."""

    def __init__(self, handle: IO[bytes], meter: Meter) -> None:
        self.handle, self.meter = handle, meter
        self.hasher = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.hasher.update(data)
        self.meter.add(len(data))
        return data


def _small_entry(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
    tar.addfile(info, io.BytesIO(data))


# -- export --------------------------------------------------------------------------------------
def export_bundle(
    models_dir: Path,
    name: str,
    dest: Path,
    *,
    app_version: str = "",
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> BundleResult:
    """Write `dest` (via dest.part, renamed at the end) from the models folder."""
    entry = manifest_entry(name)
    manifest_path = models_dir / entry
    try:
        manifest = manifest_path.read_bytes()
    except FileNotFoundError:
        raise BundleError(
            f"{name} is not in {models_dir}; check the name with `models list`, or pass the "
            "folder Ollama keeps its models in with --models-dir."
        ) from None
    except OSError as exc:
        raise BundleError(f"{manifest_path} cannot be read ({exc.strerror or exc}).") from None
    blobs = []
    for ref in read_manifest_digests(manifest):
        path = models_dir / blob_entry(ref.digest)
        try:
            size = path.stat().st_size
        except OSError:
            raise BundleError(
                f"{name} is incomplete in {models_dir} (blob {ref.digest[:19]}… is missing); "
                "pull it again before exporting."
            ) from None
        blobs.append(BundleBlob(ref.digest, size))
    index = BundleIndex(
        name=name.strip(),
        manifest=entry,
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
        blobs=tuple(blobs),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        app_version=app_version,
    )
    dest = dest.expanduser()
    part = dest.with_name(dest.name + ".part")
    free = _free_bytes(dest.parent)
    if free is not None and free < index.total + MAX_SMALL:
        raise BundleError(
            f"Not enough space in {dest.parent}: the bundle needs {_gb(index.total)}, "
            f"{_gb(free)} is free. Choose another folder or drive."
        )
    meter = Meter("writing", index.total, on_progress, cancel)
    try:
        with (
            part.open("wb") as raw,
            tarfile.TarFile(
                fileobj=raw, mode="w", format=tarfile.PAX_FORMAT, copybufsize=PIECE
            ) as tar,
        ):
            _small_entry(tar, INDEX, json.dumps(index.to_json(), indent=1).encode())
            _small_entry(tar, entry, manifest)
            for blob in blobs:
                meter.status = f"Writing {blob.digest[7:19]}"
                info = tarfile.TarInfo(blob.entry)
                info.size, info.mode, info.mtime = blob.size, 0o644, int(time.time())
                with (models_dir / blob.entry).open("rb") as handle:
                    reader = _HashingReader(handle, meter)
                    tar.addfile(info, reader)
                if "sha256:" + reader.hasher.hexdigest() != blob.digest:
                    raise BundleError(
                        f"Blob {blob.digest[:19]}… of {name} is corrupt in {models_dir}; "
                        "pull the model again before exporting."
                    )
            tar.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(part, dest)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise BundleError(f"Writing {dest} failed ({exc.strerror or exc}).") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    meter.status = f"Wrote {dest.name}"
    meter.add(0, force=True)
    return BundleResult(index.name, dest, len(blobs), index.total)


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


# -- running in a thread -------------------------------------------------------------------------
T = TypeVar("T")


async def in_thread(
    fn: Callable[..., T], *args: Any, on_progress: ProgressCallback | None = None, **kwargs: Any
) -> T:
    """Run a blocking bundle operation in a worker thread; cancelling the task stops it cleanly."""
    loop = asyncio.get_running_loop()
    cancel = threading.Event()

    def relay(event: Progress) -> None:
        if on_progress is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(on_progress, event)

    call = functools.partial(fn, *args, on_progress=relay, cancel=cancel, **kwargs)
    future = loop.run_in_executor(None, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        with contextlib.suppress(Exception):
            await future  # let the worker clean up its temporary files first
        raise


def iter_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Members of a streamed tar; damage shows up as BundleError."""
    while True:
        try:
            member = tar.next()
        except (tarfile.TarError, EOFError, OSError):
            raise BundleError(
                "The bundle is truncated or damaged; copy it again from the source machine."
            ) from None
        if member is None:
            return
        yield member
