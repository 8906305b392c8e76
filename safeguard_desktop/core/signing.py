"""Ed25519 signatures for files carried into a room without network (bundles, installers).

Pure: keys, signatures and signature files as bytes; reading and hashing files lives in
``services/signing.py``. The crypto is the `cryptography` library's Ed25519, nothing made here.

Keys (written by ``safeguard-desktop keys new NAME``):

    NAME.key   the private key, PEM "PRIVATE KEY" (PKCS#8), unencrypted, file mode 0600
    NAME.pub   the public key, PEM "PUBLIC KEY" (SubjectPublicKeyInfo), to hand out

A key is named by its id: the sha256 (hex) of the 32 raw bytes of the public key.

What is signed is never the file itself (files are GBs) but a short, domain-separated
statement about it::

    b"safeguard-desktop-signature-v1\\0" + sha256(file) (32 bytes) + size (8 bytes, big-endian)

so a signature made here cannot be replayed as a signature of anything else, and both the
contents and the length of the file are bound.

The signature file, ``FILE.sig`` beside the file, is UTF-8 JSON in exactly this form (two-space
indent, these keys in this order, one final newline)::

    {
      "format": "safeguard-desktop-signature",
      "version": 1,
      "algorithm": "ed25519",
      "key": "<key id: sha256 hex of the raw public key>",
      "sha256": "<sha256 hex of the signed file>",
      "size": <size of the signed file in bytes>,
      "signature": "<base64 of the 64-byte Ed25519 signature over the statement above>"
    }

A file in any other form is refused as malformed, so that every byte of a ``.sig`` counts: a
changed byte either breaks the form, names another key, or breaks the signature. The file's
name is deliberately not signed: a bundle may be renamed and still verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

FORMAT = "safeguard-desktop-signature"
FORMAT_VERSION = 1
ALGORITHM = "ed25519"
DOMAIN = b"safeguard-desktop-signature-v1\0"
MAX_SIZE = 2**63 - 1  # what 8 signed bytes hold; no file is larger
MAX_TEXT = 64 * 1024  # a .sig or key file is a few hundred bytes
HEX64 = re.compile(r"^[0-9a-f]{64}$")
SIGNATURE_BYTES = 64

Problem = Literal[
    "malformed-key",  # the key file is not an Ed25519 key of the expected kind
    "no-signature",  # no .sig file where one was looked for
    "malformed-signature",  # the .sig is not in the form `sign` writes
    "wrong-key",  # signed, but by another key
    "bad-signature",  # the .sig names this key but its signature does not hold: .sig altered
    "altered",  # the signature holds but the file is not the one signed
    "unreadable",  # a file cannot be read or written (missing, a folder, no permission)
]


class SignatureError(ValueError):
    """A key or signature cannot be used; str() is one line saying what is wrong."""

    def __init__(self, problem: Problem, message: str) -> None:
        super().__init__(message)
        self.problem: Problem = problem


# -- keys ----------------------------------------------------------------------------------------
def new_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def short_id(key: str) -> str:
    """How a key id is shown: its first 16 hex digits."""
    return key[:16]


def load_private_key(data: bytes, name: str) -> Ed25519PrivateKey:
    """The private key in PEM `data` (from the file `name`, for messages)."""
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise SignatureError(
            "malformed-key",
            f"{name} is a public key; sign with the private key (the NAME.key file).",
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted with a passphrase
        raise SignatureError(
            "malformed-key",
            f"{name} is protected by a passphrase; use a key made by `safeguard-desktop keys new`.",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError(
            "malformed-key", f"{name} is not a private key (PEM); check the path."
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(
            "malformed-key",
            f"{name} is not an Ed25519 key; make one with `safeguard-desktop keys new`.",
        )
    return key


def load_public_key(data: bytes, name: str) -> Ed25519PublicKey:
    """The public key in PEM `data` (from the file `name`, for messages)."""
    if b"PRIVATE KEY-----" in data:
        raise SignatureError(
            "malformed-key",
            f"{name} is a private key; verify with the public key (the NAME.pub file), and "
            "keep the private key to yourself.",
        )
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise SignatureError(
            "malformed-key", f"{name} is not a public key (PEM); check the path."
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureError(
            "malformed-key",
            f"{name} is not an Ed25519 key; use a NAME.pub made by `safeguard-desktop keys new`.",
        )
    return key


# -- signatures ----------------------------------------------------------------------------------
def statement(sha256: bytes, size: int) -> bytes:
    """The bytes actually signed for a file with this digest and size."""
    if len(sha256) != 32 or not 0 <= size <= MAX_SIZE:
        raise ValueError("a sha256 digest is 32 bytes and a size 0..2**63-1")
    return DOMAIN + sha256 + struct.pack(">Q", size)


@dataclass(frozen=True)
class Signature:
    key: str  # key id of the signer (sha256 hex of the raw public key)
    sha256: str  # hex digest of the signed file
    size: int
    signature: bytes  # 64 bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "algorithm": ALGORITHM,
            "key": self.key,
            "sha256": self.sha256,
            "size": self.size,
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    def to_bytes(self) -> bytes:
        """The .sig file's exact contents."""
        return (json.dumps(self.to_json(), indent=2) + "\n").encode("ascii")


def sign(key: Ed25519PrivateKey, sha256: bytes, size: int) -> Signature:
    return Signature(
        key=key_id(key.public_key()),
        sha256=sha256.hex(),
        size=size,
        signature=key.sign(statement(sha256, size)),
    )


def parse_signature(data: bytes, name: str) -> Signature:
    """A .sig file's contents, checked to be exactly in the form `sign` writes."""
    bad = f"{name} is not a signature file made by `safeguard-desktop sign`"
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SignatureError("malformed-signature", f"{bad} (not JSON).") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise SignatureError("malformed-signature", f"{bad}.")
    if raw.get("version") != FORMAT_VERSION or raw.get("algorithm") != ALGORITHM:
        raise SignatureError(
            "malformed-signature",
            f"{name} uses a signature version or algorithm this app does not know; update the app.",
        )
    key, sha256, size, sig = (raw.get(k) for k in ("key", "sha256", "size", "signature"))
    if (
        not isinstance(key, str)
        or not HEX64.match(key)
        or not isinstance(sha256, str)
        or not HEX64.match(sha256)
        or isinstance(size, bool)
        or not isinstance(size, int)
        or not 0 <= size <= MAX_SIZE
        or not isinstance(sig, str)
    ):
        raise SignatureError("malformed-signature", f"{bad} (a field is damaged).")
    try:
        signature = base64.b64decode(sig.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise SignatureError("malformed-signature", f"{bad} (the signature is damaged).") from None
    if len(signature) != SIGNATURE_BYTES:
        raise SignatureError("malformed-signature", f"{bad} (the signature is damaged).")
    parsed = Signature(key, sha256, size, signature)
    if parsed.to_bytes() != data:  # also catches a re-encoded base64 or a changed space
        raise SignatureError(
            "malformed-signature", f"{name} was edited or damaged (it is not in its exact form)."
        )
    return parsed


def check(signature: Signature, key: Ed25519PublicKey, *, sig_name: str, key_name: str) -> None:
    """The signature was made by `key` over its own sha256 and size; else SignatureError.

    The file itself is compared afterwards (``matches``): a caller can refuse a wrong key or
    a damaged .sig before reading a byte of a large file.
    """
    expected = key_id(key)
    if signature.key != expected:
        raise SignatureError(
            "wrong-key",
            f"{sig_name} was signed by another key ({short_id(signature.key)}…), "
            f"not by {key_name} ({short_id(expected)}…).",
        )
    try:
        key.verify(signature.signature, statement(bytes.fromhex(signature.sha256), signature.size))
    except InvalidSignature:
        raise SignatureError(
            "bad-signature",
            f"{sig_name} was altered or damaged: its signature does not hold for {key_name}.",
        ) from None


def matches(signature: Signature, sha256: bytes, size: int, *, file_name: str) -> None:
    """The file read (digest and size) is the one signed; else SignatureError "altered"."""
    if size != signature.size:
        raise SignatureError(
            "altered",
            f"{file_name} was altered since it was signed: it is {size} bytes, "
            f"the signed file was {signature.size}.",
        )
    if sha256.hex() != signature.sha256:
        raise SignatureError(
            "altered",
            f"{file_name} was altered since it was signed: its contents differ (sha256 mismatch).",
        )
