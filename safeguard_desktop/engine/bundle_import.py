"""Import an air-gapped bundle into an Ollama models folder, all or nothing.

One streamed pass over the tar: every blob goes to `blobs/sha256-<hex>.partial` while its
sha256 is computed; only when every blob matched both its name and the index, and the
manifest references nothing missing, are the partial files fsynced blobs renamed into place,
the manifest last. Any problem (bad digest, missing blob, truncated or foreign tar, unexpected
or traversing entries) removes what this import created, so the folder is as before.
A running Ollama lists the new model on its next `/api/tags` (it reads the manifests folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from safeguard_desktop.engine.bundle import (
    BLOB_ENTRY,
    INDEX,
    MAX_SMALL,
    BundleIndex,
    BundleResult,
    Meter,
    blob_entry,
    copy_hashing,
    iter_members,
    read_manifest_digests,
)
from safeguard_desktop.engine.errors import BundleError
from safeguard_desktop.engine.progress import ProgressCallback

DAMAGED = "The bundle is damaged ({why}); copy it again from the source machine."


@dataclass
class _Work:
    """What this import created so far, to undo on failure."""

    root: Path
    dirs: list[Path] = field(default_factory=list)
    partials: dict[str, Path] = field(default_factory=dict)  # digest -> partial file
    placed: list[Path] = field(default_factory=list)

    def mkdir(self, folder: Path) -> None:
        missing = []
        for parent in (folder, *folder.parents):
            if parent.exists():
                break
            missing.append(parent)
        for parent in reversed(missing):
            parent.mkdir()
            self.dirs.append(parent)

    def undo(self) -> None:
        for path in [*self.partials.values(), *self.placed]:
            path.unlink(missing_ok=True)
        for folder in reversed(self.dirs):
            with contextlib.suppress(OSError):
                folder.rmdir()


def _read_small(tar: tarfile.TarFile, member: tarfile.TarInfo, what: str) -> bytes:
    if not member.isfile() or member.size > MAX_SMALL:
        raise BundleError(DAMAGED.format(why=f"{what} is not a small regular file"))
    handle = tar.extractfile(member)
    if handle is None:
        raise BundleError(DAMAGED.format(why=f"{what} cannot be read"))
    try:
        data = handle.read()
    except (tarfile.TarError, EOFError, OSError):
        raise BundleError(DAMAGED.format(why="it ends early")) from None
    if len(data) != member.size:
        raise BundleError(DAMAGED.format(why="it ends early"))
    return data


def import_bundle(
    src: Path,
    models_dir: Path,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    expect: tuple[str, int] | None = None,
) -> BundleResult:
    """Verify the whole bundle, then place its blobs and (last) its manifest in models_dir.

    `expect` (sha256 hex, size) is what a checked signature says the whole file is: the bytes
    read here are hashed on the way and must be exactly those, else nothing is placed (the
    file may have been swapped after its signature was checked).
    """
    _check_regular(src)
    work = _Work(models_dir)
    try:
        with src.open("rb") as opened:
            raw = _WholeFileHash(opened)
            try:
                tar = tarfile.open(fileobj=raw, mode="r|")  # noqa: SIM115 - closed below
            except (tarfile.TarError, EOFError):
                raise BundleError(f"{src.name} is not a model bundle (not a tar file).") from None
            with tar:
                index, manifest, skipped = _receive(tar, work, on_progress, cancel)
            if expect is not None and raw.finish() != expect:
                raise BundleError(
                    f"{src.name} changed while it was imported: it no longer matches its "
                    "signature. Nothing was imported; copy the bundle again."
                )
        _place(work, index, manifest)
    except FileNotFoundError as exc:
        work.undo()
        if Path(exc.filename or "") == src:
            raise BundleError(f"{src} does not exist; check the path.") from None
        raise BundleError(f"Import into {models_dir} failed ({exc}).") from None
    except OSError as exc:
        work.undo()
        raise BundleError(f"Import into {models_dir} failed ({exc.strerror or exc}).") from None
    except BaseException:
        work.undo()
        raise
    return BundleResult(index.name, models_dir, len(index.blobs), index.total, skipped)


class _WholeFileHash(io.RawIOBase):
    """The bundle file as tarfile reads it, hashed and counted on the way."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle
        self.hasher = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self.handle.read(-1 if size is None else size)
        self.hasher.update(data)
        self.size += len(data)
        return data

    def finish(self) -> tuple[str, int]:
        """Read what tarfile left (the end-of-archive padding); the whole file's digest, size."""
        while self.read(1024 * 1024):
            pass
        return self.hasher.hexdigest(), self.size


def _check_regular(src: Path) -> None:
    """Refuse a folder, pipe, device or socket before opening it (a FIFO would block)."""
    try:
        mode = src.stat().st_mode
    except FileNotFoundError:
        raise BundleError(f"{src} does not exist; check the path.") from None
    except OSError as exc:
        raise BundleError(f"{src} cannot be read ({exc.strerror or exc}).") from None
    if stat.S_ISDIR(mode):
        raise BundleError(f"{src} is a folder; choose the bundle (.tar) file inside it.")
    if not stat.S_ISREG(mode):
        raise BundleError(
            f"{src} is not a regular file (a pipe, device or socket); copy the bundle to a "
            "file and import that."
        )


def _receive(
    tar: tarfile.TarFile,
    work: _Work,
    on_progress: ProgressCallback | None,
    cancel: threading.Event | None,
) -> tuple[BundleIndex, bytes, int]:
    members = iter_members(tar)
    first = next(members, None)
    if first is None or first.name != INDEX:
        raise BundleError("This tar file is not a Safeguard Desktop model bundle (no index).")
    try:
        data = json.loads(_read_small(tar, first, INDEX))
    except (ValueError, RecursionError):  # also too deep, or a number too long to read
        raise BundleError("The bundle's index is not valid JSON; make the bundle again.") from None
    index = BundleIndex.from_json(data)
    expected = {b.digest: b for b in index.blobs}
    blobs_dir = work.root / "blobs"
    needed = sum(b.size for b in index.blobs if not (blobs_dir / blob_entry(b.digest)[6:]).exists())
    free = _free(work.root)
    if free is not None and free < needed:
        raise BundleError(
            f"Not enough space in {work.root}: the model needs {needed / 1e9:.1f} GB, "
            f"{free / 1e9:.1f} GB is free. Free some space and import again."
        )
    meter = Meter("verifying", index.total, on_progress, cancel)
    manifest: bytes | None = None
    seen: set[str] = set()
    skipped = 0
    for member in members:
        meter.check()
        match = BLOB_ENTRY.match(member.name)
        if member.name == index.manifest and manifest is None:
            manifest = _read_small(tar, member, "the manifest")
            if hashlib.sha256(manifest).hexdigest() != index.manifest_sha256:
                raise BundleError(DAMAGED.format(why="the manifest does not match its checksum"))
            continue
        if match is None or not member.isfile():
            raise BundleError(
                f"The bundle holds an unexpected entry {member.name!r}; it is refused "
                "(only the index, one manifest and blobs/sha256-* files are allowed)."
            )
        digest = "sha256:" + match.group(1)
        blob = expected.get(digest)
        if blob is None or digest in seen:
            raise BundleError(DAMAGED.format(why=f"blob {digest[:19]}… is not in its index"))
        if member.size != blob.size:
            raise BundleError(DAMAGED.format(why=f"blob {digest[:19]}… has the wrong size"))
        seen.add(digest)
        if _receive_blob(tar, member, work, blob_entry(digest)[6:], meter) != match.group(1):
            raise BundleError(DAMAGED.format(why=f"blob {digest[:19]}… fails its checksum"))
        if digest not in work.partials:
            skipped += 1
    if manifest is None:
        raise BundleError(DAMAGED.format(why="the manifest is missing"))
    missing = [d for d in expected if d not in seen]
    if missing:
        raise BundleError(DAMAGED.format(why=f"blob {missing[0][:19]}… is missing"))
    referenced = {b.digest for b in read_manifest_digests(manifest, "make the bundle again")}
    if referenced != set(expected):
        raise BundleError(DAMAGED.format(why="its manifest and index disagree"))
    return index, manifest, skipped


def _receive_blob(
    tar: tarfile.TarFile, member: tarfile.TarInfo, work: _Work, file_name: str, meter: Meter
) -> str:
    """Stream one blob to its .partial file (or only hash it when the folder has it)."""
    handle = tar.extractfile(member)
    if handle is None:
        raise BundleError(DAMAGED.format(why=f"{member.name} cannot be read"))
    meter.status = f"Verifying {file_name[7:19]}"
    final = work.root / "blobs" / file_name
    try:
        if final.exists():
            return copy_hashing(handle, None, member.size, meter)
        work.mkdir(final.parent)
        partial = final.with_name(file_name + ".partial")
        work.partials["sha256:" + file_name[7:]] = partial
        with partial.open("wb") as out:
            digest = copy_hashing(handle, out, member.size, meter)
            out.flush()
            os.fsync(out.fileno())
        return digest
    except (tarfile.TarError, EOFError):
        raise BundleError(DAMAGED.format(why="it ends early")) from None


def _place(work: _Work, index: BundleIndex, manifest: bytes) -> None:
    """Everything verified: rename the blobs into place, then write the manifest."""
    for partial in list(work.partials.values()):
        final = partial.with_name(partial.name.removesuffix(".partial"))
        os.replace(partial, final)
        work.placed.append(final)
    work.partials.clear()
    target = work.root / index.manifest
    work.mkdir(target.parent)
    tmp = target.with_name(target.name + ".partial")
    work.partials["manifest"] = tmp
    with tmp.open("wb") as out:
        out.write(manifest)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)
    work.partials.clear()


def _free(folder: Path) -> int | None:
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None
