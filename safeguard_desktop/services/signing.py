"""Sign and verify files on disk; make key pairs. The formats are in ``core/signing.py``.

Files are streamed in 1 MiB pieces (bundles are tens of GB; nothing is read whole). A verify
reads the key and the .sig first and refuses a wrong key or a damaged .sig before it reads a
byte of the file. Every failure is a ``SignatureError`` whose str() is one line and whose
``problem`` says which kind it is (for `--json` and tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from safeguard_desktop.core import signing
from safeguard_desktop.core.signing import MAX_TEXT, Signature, SignatureError
from safeguard_desktop.engine.bundle import Meter
from safeguard_desktop.engine.progress import ProgressCallback

__all__ = [
    "KeyPair",
    "Signature",
    "SignatureError",
    "Signed",
    "Verified",
    "check_signature",
    "file_digest",
    "new_keys",
    "read_private_key",
    "read_public_key",
    "sig_path_for",
    "sign_file",
    "verify_file",
]

PIECE = 1024 * 1024
KEY_SUFFIX, PUB_SUFFIX, SIG_SUFFIX = ".key", ".pub", ".sig"


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    key: str  # key id


@dataclass(frozen=True)
class Signed:
    path: Path
    sig_path: Path
    signature: Signature


@dataclass(frozen=True)
class Verified:
    path: Path
    sig_path: Path
    signature: Signature


def sig_path_for(path: Path) -> Path:
    """Where `sign` puts a file's signature: FILE.sig beside FILE."""
    return path.with_name(path.name + SIG_SUFFIX)


# -- reading -------------------------------------------------------------------------------------
def _check_regular(path: Path, what: str, *, missing: signing.Problem = "unreadable") -> None:
    """Refuse a folder, pipe or device before opening it (a FIFO would block)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SignatureError(missing, f"{what} {path} does not exist; check the path.") from None
    except OSError as exc:
        raise SignatureError(
            "unreadable", f"{what} {path} cannot be read ({exc.strerror or exc})."
        ) from None
    if not stat.S_ISREG(mode):
        raise SignatureError("unreadable", f"{what} {path} is not a regular file.")


def _read_small(path: Path, what: str, *, missing: signing.Problem = "unreadable") -> bytes:
    _check_regular(path, what, missing=missing)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_TEXT + 1)
    except OSError as exc:
        raise SignatureError(
            "unreadable", f"{what} {path} cannot be read ({exc.strerror or exc})."
        ) from None
    if len(data) > MAX_TEXT:
        problem: signing.Problem = (
            "malformed-signature" if what == "The signature file" else "malformed-key"
        )
        raise SignatureError(problem, f"{what} {path} is far too large to be one.")
    return data


def read_private_key(path: Path) -> Ed25519PrivateKey:
    return signing.load_private_key(_read_small(path, "The key file"), str(path))


def read_public_key(path: Path) -> Ed25519PublicKey:
    return signing.load_public_key(_read_small(path, "The key file"), str(path))


def file_digest(
    path: Path,
    *,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    phase: str = "hashing",
    status: str = "Hashing",
) -> tuple[bytes, int]:
    """sha256 and size of the bytes read from `path`, in 1 MiB pieces."""
    _check_regular(path, "The file")
    hasher = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as handle:
            meter = Meter(phase, os.fstat(handle.fileno()).st_size, on_progress, cancel)
            meter.status = f"{status} {path.name}"
            while piece := handle.read(PIECE):
                hasher.update(piece)
                size += len(piece)
                meter.add(len(piece))
    except OSError as exc:
        raise SignatureError(
            "unreadable", f"The file {path} cannot be read ({exc.strerror or exc})."
        ) from None
    return hasher.digest(), size


# -- keys ----------------------------------------------------------------------------------------
def new_keys(name: str, folder: Path, *, force: bool = False) -> KeyPair:
    """Write NAME.key (0600, private) and NAME.pub in `folder`; refuse to overwrite unless forced.

    Both files are written to temporary names first and renamed at the end, so a failure
    leaves no half pair behind.
    """
    if not name or name in (".", "..") or "/" in name or os.sep in name or "\0" in name:
        raise ValueError(
            f"{name!r} is not a key name: give a plain name like `review-room`, and the "
            "folder with --dir."
        )
    private, public = folder / (name + KEY_SUFFIX), folder / (name + PUB_SUFFIX)
    if not force:
        for path in (private, public):
            if os.path.lexists(path):
                raise FileExistsError(
                    f"{path} already exists; choose another name, or pass --force to replace it."
                )
    key = signing.new_private_key()
    tmp_private = _write_temp(private, signing.private_pem(key), mode=0o600)
    try:
        tmp_public = _write_temp(public, signing.public_pem(key.public_key()), mode=0o644)
    except BaseException:
        tmp_private.unlink(missing_ok=True)
        raise
    try:
        os.replace(tmp_public, public)
        os.replace(tmp_private, private)
    except BaseException:
        tmp_public.unlink(missing_ok=True)
        tmp_private.unlink(missing_ok=True)
        raise
    return KeyPair(private, public, signing.key_id(key.public_key()))


def _write_temp(path: Path, data: bytes, *, mode: int) -> Path:
    """Write `data` to a new temporary file beside `path`, created with `mode` (less the
    umask), synced; the caller renames it over `path`. A failure leaves no file."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


# -- sign and verify -----------------------------------------------------------------------------
def sign_file(
    path: Path,
    key_path: Path,
    *,
    sig_path: Path | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Signed:
    """Hash `path` and write its signature (default FILE.sig), replacing an older one."""
    key = read_private_key(key_path)
    digest, size = file_digest(path, on_progress=on_progress, cancel=cancel)
    signature = signing.sign(key, digest, size)
    target = sig_path or sig_path_for(path)
    try:
        tmp = _write_temp(target, signature.to_bytes(), mode=0o644)
        try:
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise SignatureError(
            "unreadable", f"The signature {target} cannot be written ({exc.strerror or exc})."
        ) from None
    return Signed(path, target, signature)


def check_signature(path: Path, pub_path: Path, *, sig_path: Path | None = None) -> Signature:
    """The .sig of `path` is well formed and made by the key in `pub_path`, without reading
    `path` itself (cheap; `verify_file` then compares the file)."""
    key = read_public_key(pub_path)
    sig_file = sig_path or sig_path_for(path)
    if not os.path.lexists(sig_file):
        raise SignatureError(
            "no-signature",
            f"{path.name} is not signed: there is no {sig_file} (sign it with "
            "`safeguard-desktop sign`, or pass --sig).",
        )
    data = _read_small(sig_file, "The signature file", missing="no-signature")
    signature = signing.parse_signature(data, str(sig_file))
    signing.check(signature, key, sig_name=str(sig_file), key_name=str(pub_path))
    return signature


def verify_file(
    path: Path,
    pub_path: Path,
    *,
    sig_path: Path | None = None,
    on_progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> Verified:
    """`path` is intact and signed by the key in `pub_path`; else SignatureError."""
    _check_regular(path, "The file")
    signature = check_signature(path, pub_path, sig_path=sig_path)
    size = path.stat().st_size
    if size != signature.size:  # truncated or grown: no need to read it all to know
        signing.matches(signature, b"", size, file_name=str(path))
    digest, size = file_digest(
        path,
        on_progress=on_progress,
        cancel=cancel,
        phase="verifying",
        status="Checking the signature of",
    )
    signing.matches(signature, digest, size, file_name=str(path))
    return Verified(path, sig_path or sig_path_for(path), signature)
