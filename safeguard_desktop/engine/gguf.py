"""Offline import of a GGUF file: checksum, upload as a blob (unless present), create the model.

Files are many gigabytes: they are hashed and uploaded in 4 MiB chunks read off the event
loop (`asyncio.to_thread`), so the GUI stays responsive and progress flows throughout.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx

from safeguard_desktop.engine.client import OllamaClient, map_transport_error
from safeguard_desktop.engine.errors import ModelImportFailed, ServerError
from safeguard_desktop.engine.models import raise_for, request, stream_lines
from safeguard_desktop.engine.progress import Progress, ProgressCallback, RateMeter, emit

GGUF_MAGIC = b"GGUF"
CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class ImportResult:
    name: str
    digest: str  # "sha256:<hex>"
    size: int
    uploaded: bool  # False: the server already had the blob


def check_gguf(path: Path) -> int:
    """The file's size, after checking that it is a readable GGUF file."""
    try:  # a pipe would block the read below forever
        special = path.exists() and not path.is_dir() and not path.is_file()
    except OSError:
        special = False
    if special:
        raise ModelImportFailed(
            f"{path} is not a regular file (a pipe, device or socket); give the .gguf file itself."
        )
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
            size = path.stat().st_size
    except FileNotFoundError:
        raise ModelImportFailed(f"{path} does not exist; check the path.") from None
    except IsADirectoryError:
        raise ModelImportFailed(f"{path} is a folder; give the .gguf file itself.") from None
    except OSError as exc:
        raise ModelImportFailed(f"{path} cannot be read ({exc.strerror or exc}).") from None
    if magic != GGUF_MAGIC:
        raise ModelImportFailed(
            f"{path.name} is not a GGUF model file (it does not start with 'GGUF'). Export the "
            "model as .gguf, or move a whole model between machines with `models export`."
        )
    return size


def _read(handle: BinaryIO) -> bytes:
    return handle.read(CHUNK)


def _read_hash(handle: BinaryIO, hasher: hashlib._Hash) -> int:
    data = handle.read(CHUNK)
    hasher.update(data)  # hashlib releases the GIL on big buffers
    return len(data)


async def sha256_file(path: Path, on_progress: ProgressCallback | None = None) -> str:
    """Hex sha256 of a file, computed chunk by chunk off the event loop."""
    total = path.stat().st_size
    hasher = hashlib.sha256()
    meter, done = RateMeter(), 0
    with path.open("rb") as handle:
        while n := await asyncio.to_thread(_read_hash, handle, hasher):
            done += n
            rate = meter.update(done)
            emit(
                on_progress,
                Progress(
                    "hashing",
                    f"Checksumming {path.name}",
                    done,
                    total,
                    rate,
                    meter.eta(done, total),
                ),
            )
    return hasher.hexdigest()


async def _body(
    path: Path, total: int, on_progress: ProgressCallback | None, digest: str
) -> AsyncIterator[bytes]:
    meter, done = RateMeter(), 0
    with path.open("rb") as handle:
        while data := await asyncio.to_thread(_read, handle):
            yield data
            done += len(data)
            rate = meter.update(done)
            emit(
                on_progress,
                Progress(
                    "uploading",
                    f"Uploading {path.name}",
                    done,
                    total,
                    rate,
                    meter.eta(done, total),
                    digest=digest,
                ),
            )


async def import_gguf(
    client: OllamaClient, path: Path, name: str, on_progress: ProgressCallback | None = None
) -> ImportResult:
    """Create model `name` on the server from a local GGUF file."""
    name = name.strip()
    if not name:
        raise ModelImportFailed("Give the new model a name, e.g. --name my-model:latest.")
    size = check_gguf(path)
    digest = "sha256:" + await sha256_file(path, on_progress)
    head = await client_head(client, f"/api/blobs/{digest}")
    uploaded = head == 404
    if uploaded:
        resp = await request_upload(client, path, size, digest, on_progress)
        if resp not in (200, 201):
            raise ModelImportFailed(f"Ollama refused the upload (HTTP {resp}).")
    else:
        emit(
            on_progress,
            Progress(
                "uploading",
                "Ollama already has this file; not uploading it",
                size,
                size,
                digest=digest,
            ),
        )
    file_name = path.name if path.name.lower().endswith(".gguf") else f"{path.name}.gguf"
    body = {"model": name, "files": {file_name: digest}, "stream": True}
    try:
        async with stream_lines(client, "/api/create", body) as lines:
            async for line in lines:
                status = str(line.get("status") or "")
                emit(
                    on_progress,
                    Progress(
                        "done" if status == "success" else "creating",
                        status,
                        size,
                        size,
                        digest=digest,
                    ),
                )
    except ServerError as exc:
        raise ModelImportFailed(
            f"Ollama could not create {name} from {path.name}.", detail=exc.detail
        ) from None
    return ImportResult(name, digest, size, uploaded)


async def client_head(client: OllamaClient, path: str) -> int:
    """Status of a HEAD request: 200 the blob exists, 404 it does not."""
    try:
        resp = await client.http.head(path)
    except (httpx.HTTPError, OSError) as exc:
        raise map_transport_error(exc, client.endpoint, started=False) from None
    if resp.status_code != 404:
        raise_for(resp)
    return resp.status_code


async def request_upload(
    client: OllamaClient, path: Path, size: int, digest: str, on_progress: ProgressCallback | None
) -> int:
    try:
        resp = await request(
            client, "POST", f"/api/blobs/{digest}", content=_body(path, size, on_progress, digest)
        )
    except ServerError as exc:
        if exc.detail and "digest mismatch" in exc.detail:
            raise ModelImportFailed(
                f"{path.name} changed while it was being imported; try again.", detail=exc.detail
            ) from None
        raise
    return resp.status_code
