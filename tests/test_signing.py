"""Ed25519 signatures (core/signing.py, services/signing.py): real keys, real crypto, streamed
files, and every way a signature check must fail: another key, a changed byte anywhere in the
file or in its .sig, a truncated file, a malformed key or signature file."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from safeguard_desktop.core import signing as core
from safeguard_desktop.engine.errors import OperationCancelled
from safeguard_desktop.services import signing
from safeguard_desktop.services.signing import SignatureError

PIECE = signing.PIECE


@pytest.fixture
def keys(tmp_path: Path) -> signing.KeyPair:
    return signing.new_keys("room", tmp_path)


@pytest.fixture
def other(tmp_path: Path) -> signing.KeyPair:
    return signing.new_keys("other", tmp_path)


@pytest.fixture
def big(tmp_path: Path) -> Path:
    """A file of several 1 MiB pieces and a partial one, with no repeating pattern."""
    path = tmp_path / "bundle.tar"
    path.write_bytes(os.urandom(3 * PIECE + 12345))
    return path


def problem(fn: Any, *args: Any, **kwargs: Any) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert message and "\n" not in message and "Traceback" not in message
    return info.value


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


# -- keys ----------------------------------------------------------------------------------------
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_new_keys_are_pem_ed25519_and_the_private_one_is_private(
    tmp_path: Path, keys: signing.KeyPair
) -> None:
    assert keys.private == tmp_path / "room.key" and keys.public == tmp_path / "room.pub"
    assert stat.S_IMODE(keys.private.stat().st_mode) == 0o600
    private_pem = keys.private.read_bytes()
    public_pem = keys.public.read_bytes()
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, unencrypted
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")  # SubjectPublicKeyInfo
    private = serialization.load_pem_private_key(private_pem, password=None)
    public = serialization.load_pem_public_key(public_pem)
    assert isinstance(private, Ed25519PrivateKey)
    assert private.public_key() == public
    assert keys.key == core.key_id(signing.read_public_key(keys.public))
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_new_keys_refuse_to_overwrite_unless_forced(tmp_path: Path, keys: signing.KeyPair) -> None:
    before = (keys.private.read_bytes(), keys.public.read_bytes())
    with pytest.raises(FileExistsError, match=r"already exists.*--force"):
        signing.new_keys("room", tmp_path)
    assert (keys.private.read_bytes(), keys.public.read_bytes()) == before
    keys.private.unlink()  # half a pair: the other half is not overwritten either
    with pytest.raises(FileExistsError, match=r"room\.pub already exists"):
        signing.new_keys("room", tmp_path)
    assert not keys.private.exists()
    again = signing.new_keys("room", tmp_path, force=True)
    assert again.key != keys.key and keys.public.read_bytes() != before[1]
    if sys.platform != "win32":
        assert stat.S_IMODE(again.private.stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "x\0y"])
def test_a_key_name_is_a_plain_name(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="not a key name"):
        signing.new_keys(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- round trip ----------------------------------------------------------------------------------
def test_sign_then_verify_a_multi_piece_file(big: Path, keys: signing.KeyPair) -> None:
    signed = signing.sign_file(big, keys.private)
    assert signed.sig_path == big.with_name("bundle.tar.sig")
    data = json.loads(signed.sig_path.read_bytes())
    assert list(data) == ["format", "version", "algorithm", "key", "sha256", "size", "signature"]
    assert data["format"] == "safeguard-desktop-signature" and data["version"] == 1
    assert data["algorithm"] == "ed25519" and data["key"] == keys.key
    assert data["sha256"] == hashlib.sha256(big.read_bytes()).hexdigest()
    assert data["size"] == big.stat().st_size == 3 * PIECE + 12345
    assert len(base64.b64decode(data["signature"], validate=True)) == 64

    verified = signing.verify_file(big, keys.public)
    assert verified.signature == signed.signature and verified.sig_path == signed.sig_path


def test_the_signature_is_ed25519_over_the_domain_separated_statement(
    big: Path, keys: signing.KeyPair
) -> None:
    """Checked with the library directly, not through our own verify."""
    signed = signing.sign_file(big, keys.private)
    digest = hashlib.sha256(big.read_bytes()).digest()
    message = b"safeguard-desktop-signature-v1\0" + digest + big.stat().st_size.to_bytes(8, "big")
    assert core.statement(digest, big.stat().st_size) == message
    signing.read_public_key(keys.public).verify(signed.signature.signature, message)


def test_a_bare_signature_of_the_digest_is_not_accepted(big: Path, keys: signing.KeyPair) -> None:
    """Domain separation: the key signing something else (here the raw digest) is no signature."""
    private = signing.read_private_key(keys.private)
    digest = hashlib.sha256(big.read_bytes()).digest()
    forged = core.Signature(keys.key, digest.hex(), big.stat().st_size, private.sign(digest))
    big.with_name(big.name + ".sig").write_bytes(forged.to_bytes())
    assert problem(signing.verify_file, big, keys.public).problem == "bad-signature"


def test_an_empty_file_and_a_signature_elsewhere(tmp_path: Path, keys: signing.KeyPair) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    sig = tmp_path / "sigs" / "e.sig"
    sig.parent.mkdir()
    signing.sign_file(empty, keys.private, sig_path=sig)
    assert not (tmp_path / "empty.sig").exists()
    assert problem(signing.verify_file, empty, keys.public).problem == "no-signature"
    assert signing.verify_file(empty, keys.public, sig_path=sig).signature.size == 0


def test_hashing_streams_in_pieces(
    big: Path, keys: signing.KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bundles are tens of GB: no read may ask for more than one piece."""
    asked: list[int] = []
    real_open = Path.open

    class Spy:
        def __init__(self, handle: Any) -> None:
            self.handle = handle

        def read(self, n: int = -1) -> bytes:
            asked.append(n)
            return bytes(self.handle.read(n))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.handle, name)

        def __enter__(self) -> Spy:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()

    def spying_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        handle = real_open(self, *args, **kwargs)
        return Spy(handle) if self == big else handle

    expected = (hashlib.sha256(big.read_bytes()).digest(), big.stat().st_size)
    monkeypatch.setattr(Path, "open", spying_open)
    assert signing.file_digest(big) == expected
    assert asked and all(0 < n <= PIECE for n in asked) and len(asked) >= 4


def test_a_cancelled_verify_stops(big: Path, keys: signing.KeyPair) -> None:
    signing.sign_file(big, keys.private)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(OperationCancelled):
        signing.verify_file(big, keys.public, cancel=cancel)


# -- the file changed ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "where", ["first byte", "middle", "last byte", "piece boundary"], ids=lambda w: w
)
def test_a_changed_byte_in_the_file_is_caught(big: Path, keys: signing.KeyPair, where: str) -> None:
    signing.sign_file(big, keys.private)
    size = big.stat().st_size
    offset = {"first byte": 0, "middle": size // 2, "last byte": size - 1, "piece boundary": PIECE}
    flip(big, offset[where])
    err = problem(signing.verify_file, big, keys.public)
    assert err.problem == "altered" and "was altered since it was signed" in str(err)


@pytest.mark.parametrize("change", ["truncated by one byte", "cut to one piece", "one byte more"])
def test_a_file_of_another_size_is_caught(big: Path, keys: signing.KeyPair, change: str) -> None:
    signing.sign_file(big, keys.private)
    data = big.read_bytes()
    big.write_bytes(
        {
            "truncated by one byte": data[:-1],
            "cut to one piece": data[:PIECE],
            "one byte more": data + b"\0",
        }[change]
    )
    err = problem(signing.verify_file, big, keys.public)
    assert err.problem == "altered" and "bytes" in str(err)


def test_the_file_missing_or_not_a_file(tmp_path: Path, big: Path, keys: signing.KeyPair) -> None:
    signing.sign_file(big, keys.private)
    big.unlink()
    assert "does not exist" in str(problem(signing.verify_file, big, keys.public))
    folder = tmp_path / "folder.tar"
    folder.mkdir()
    assert "not a regular file" in str(problem(signing.sign_file, folder, keys.private))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX FIFOs")
def test_a_pipe_is_refused_without_blocking(tmp_path: Path, keys: signing.KeyPair) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert "not a regular file" in str(problem(signing.sign_file, fifo, keys.private))


# -- the signature changed, or is by another key ------------------------------------------------
def test_another_key_is_named(big: Path, keys: signing.KeyPair, other: signing.KeyPair) -> None:
    signing.sign_file(big, keys.private)
    err = problem(signing.verify_file, big, other.public)
    assert err.problem == "wrong-key"
    assert f"signed by another key ({keys.key[:16]}…)" in str(err)
    assert f"not by {other.public} ({other.key[:16]}…)" in str(err)


def test_every_byte_of_the_sig_file_counts(tmp_path: Path, keys: signing.KeyPair) -> None:
    """Flip some bits of every byte of the .sig: never a good signature. The loop runs the
    same checks as verify_file, in memory; a few flips go through the files too."""
    small = tmp_path / "small"
    small.write_bytes(b"x" * 1000)
    sig = signing.sign_file(small, keys.private).sig_path
    original = sig.read_bytes()
    public = signing.read_public_key(keys.public)
    digest, size = signing.file_digest(small)

    def verify_in_memory(data: bytes) -> None:
        parsed = core.parse_signature(data, "small.sig")
        core.check(parsed, public, sig_name="small.sig", key_name="room.pub")
        core.matches(parsed, digest, size, file_name="small")

    verify_in_memory(original)
    kinds: set[str] = set()
    for offset in range(len(original)):
        for mask in (0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80):
            data = bytearray(original)
            data[offset] ^= mask
            kinds.add(problem(verify_in_memory, bytes(data)).problem)
    assert kinds == {"malformed-signature", "wrong-key", "bad-signature"}
    for offset in (0, original.index(b'"signature"') + 20, len(original) - 1):
        flip(sig, offset)
        assert problem(signing.verify_file, small, keys.public).problem != "altered"
        flip(sig, offset)
    signing.verify_file(small, keys.public)


def test_a_truncated_or_extended_sig_file_is_refused(big: Path, keys: signing.KeyPair) -> None:
    sig = signing.sign_file(big, keys.private).sig_path
    original = sig.read_bytes()
    for data in (original[:-1], original[: len(original) // 2], b"", original + b"\n"):
        sig.write_bytes(data)
        assert problem(signing.verify_file, big, keys.public).problem == "malformed-signature"


def sig_json(sig: Path) -> dict[str, Any]:
    return dict(json.loads(sig.read_bytes()))


def write_sig(sig: Path, data: dict[str, Any]) -> None:
    sig.write_bytes((json.dumps(data, indent=2) + "\n").encode())


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("sha256", "0" * 64, "bad-signature"),  # claims another file: the signature fails
        ("size", 1, "bad-signature"),
        ("signature", base64.b64encode(bytes(64)).decode(), "bad-signature"),
        ("key", "f" * 64, "wrong-key"),
        ("key", "F" * 64, "malformed-signature"),
        ("sha256", "short", "malformed-signature"),
        ("size", -1, "malformed-signature"),
        ("size", True, "malformed-signature"),
        ("size", 1.5, "malformed-signature"),
        ("signature", "not base64!", "malformed-signature"),
        ("signature", base64.b64encode(bytes(63)).decode(), "malformed-signature"),
        ("algorithm", "rsa", "malformed-signature"),
        ("version", 2, "malformed-signature"),
        ("format", "minisign", "malformed-signature"),
    ],
)
def test_an_edited_field_is_refused(
    big: Path, keys: signing.KeyPair, field: str, value: object, expected: str
) -> None:
    sig = signing.sign_file(big, keys.private).sig_path
    data = sig_json(sig)
    data[field] = value
    write_sig(sig, data)
    assert problem(signing.verify_file, big, keys.public).problem == expected


def test_a_resigned_statement_for_the_other_key_is_caught_by_the_key_id(
    big: Path, keys: signing.KeyPair, other: signing.KeyPair
) -> None:
    """The key id is checked against the key given: editing it to match does not help."""
    sig = signing.sign_file(big, other.private).sig_path
    data = sig_json(sig)
    data["key"] = keys.key
    write_sig(sig, data)
    assert problem(signing.verify_file, big, keys.public).problem == "bad-signature"


def test_a_sig_file_not_in_its_exact_form_is_refused(big: Path, keys: signing.KeyPair) -> None:
    sig = signing.sign_file(big, keys.private).sig_path
    data = sig_json(sig)
    for text in (
        json.dumps(data),  # same values, other whitespace
        json.dumps(data, indent=2).replace("\n", "\r\n") + "\r\n",
        json.dumps(dict(reversed(list(data.items()))), indent=2) + "\n",
        json.dumps({**data, "comment": "hi"}, indent=2) + "\n",
        "[]",
        "not json at all",
    ):
        sig.write_text(text)
        assert problem(signing.verify_file, big, keys.public).problem == "malformed-signature"
    sig.write_bytes(b"\xff\xfe" + bytes(300))
    assert problem(signing.verify_file, big, keys.public).problem == "malformed-signature"
    sig.write_bytes(b"{" * 100_000)  # far too large to be a signature
    assert problem(signing.verify_file, big, keys.public).problem == "malformed-signature"


def test_a_non_canonical_base64_signature_is_refused(big: Path, keys: signing.KeyPair) -> None:
    """64 bytes in base64 end in 'x==' where x carries 4 unused bits: changing them decodes to
    the same bytes, so without the exact-form check that changed byte would go unnoticed."""
    sig = signing.sign_file(big, keys.private).sig_path
    data = sig_json(sig)
    encoded = data["signature"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(encoded[-3])
    twin = encoded[:-3] + alphabet[last ^ 0x01] + "=="
    assert base64.b64decode(twin) == base64.b64decode(encoded)  # same bytes, another text
    data["signature"] = twin
    write_sig(sig, data)
    assert problem(signing.verify_file, big, keys.public).problem == "malformed-signature"


def test_the_key_and_the_sig_are_checked_before_the_file_is_read(
    big: Path, keys: signing.KeyPair, other: signing.KeyPair, monkeypatch: pytest.MonkeyPatch
) -> None:
    signing.sign_file(big, keys.private)

    def no_hashing(*args: object, **kwargs: object) -> tuple[bytes, int]:
        raise AssertionError("the file was read")

    monkeypatch.setattr(signing, "file_digest", no_hashing)
    assert problem(signing.verify_file, big, other.public).problem == "wrong-key"
    big.unlink()
    big.write_bytes(b"short")  # another size: known without hashing
    assert problem(signing.verify_file, big, keys.public).problem == "altered"


# -- keys that cannot be used --------------------------------------------------------------------
def test_unusable_keys_are_one_clear_line(tmp_path: Path, big: Path, keys: signing.KeyPair) -> None:
    signing.sign_file(big, keys.private)
    garbage = tmp_path / "garbage.pub"
    garbage.write_bytes(b"hello")
    ec_pub = tmp_path / "ec.pub"
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_pub.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    ec_priv = tmp_path / "ec.key"
    ec_priv.write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    locked = tmp_path / "locked.key"
    locked.write_bytes(
        signing.read_private_key(keys.private).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    truncated = tmp_path / "truncated.pub"
    truncated.write_bytes(keys.public.read_bytes()[:-40])

    cases = [
        (signing.verify_file, garbage, "is not a public key"),
        (signing.verify_file, ec_pub, "is not an Ed25519 key"),
        (signing.verify_file, truncated, "is not a public key"),
        (signing.verify_file, keys.private, "is a private key"),
        (signing.verify_file, tmp_path / "missing.pub", "does not exist"),
        (signing.sign_file, keys.public, "is a public key"),
        (signing.sign_file, ec_priv, "is not an Ed25519 key"),
        (signing.sign_file, locked, "passphrase"),
        (signing.sign_file, garbage, "is not a private key"),
    ]
    for fn, key, message in cases:
        err = problem(fn, big, key)
        assert message in str(err), (key, str(err))
        assert err.problem in ("malformed-key", "unreadable")
