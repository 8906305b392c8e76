"""`keys new`, `sign`, `verify`, `models import-bundle --require-signature` and `--version`, as a
user runs them: output, JSON, exit codes, one clean line for every refusal, nothing written
when a bundle is refused."""

from __future__ import annotations

import base64
import json
import os
import platform
import re
import stat
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

import safeguard_desktop
from safeguard_desktop.cli import main
from safeguard_desktop.engine import bundle_import
from safeguard_desktop.engine.bundle import export_bundle
from safeguard_desktop.engine.errors import BundleError
from safeguard_desktop.settings import Settings
from tests.test_bundle import MANIFEST, NAME, make_models_dir, snapshot

pytest_plugins = ["tests.server_fixtures"]
REPO = Path(__file__).resolve().parents[1]
PIECE = 1024 * 1024


def cli(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> tuple[int, str, str]:
    code = main(["--data-dir", str(data), *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_clean_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("safeguard-desktop: ")
    return lines[0]


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def keys(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """tmp_path/keys/room.{key,pub} and other.{key,pub}, made with the CLI."""
    folder = tmp_path / "keys"
    folder.mkdir()
    for name in ("room", "other"):
        code, _, err = cli(capsys, data_dir, "keys", "new", name, "--dir", str(folder))
        assert code == 0, err
    return folder


# -- keys new ------------------------------------------------------------------------------------
def test_keys_new_in_the_current_folder(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    code, out, err = cli(capsys, data_dir, "keys", "new", "room")
    assert code == 0, err
    assert sorted(p.name for p in here.iterdir()) == ["room.key", "room.pub"]
    assert f"Wrote {here / 'room.key'} (private" in out and f"Wrote {here / 'room.pub'}" in out
    key_id = out.splitlines()[-1].removeprefix("Key id ")
    assert re.fullmatch(r"[0-9a-f]{64}", key_id)
    if sys.platform != "win32":
        assert stat.S_IMODE((here / "room.key").stat().st_mode) == 0o600
    assert (here / "room.key").read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (here / "room.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")

    before = (here / "room.key").read_bytes()
    code, out, err = cli(capsys, data_dir, "keys", "new", "room")
    assert code == 2 and out == ""
    assert "already exists; choose another name, or pass --force" in one_clean_line(err)
    assert (here / "room.key").read_bytes() == before

    code, out, err = cli(capsys, data_dir, "keys", "new", "room", "--force", "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made == {
        "private": str(here / "room.key"),
        "public": str(here / "room.pub"),
        "key": made["key"],
    }
    assert made["key"] != key_id and (here / "room.key").read_bytes() != before


def test_keys_new_refuses_a_missing_folder_and_a_path_as_name(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, data_dir, "keys", "new", "room", "--dir", str(tmp_path / "no"))
    assert code == 2 and "is not a folder" in one_clean_line(err)
    code, _, err = cli(capsys, data_dir, "keys", "new", "a/b", "--dir", str(tmp_path))
    assert code == 2 and "is not a key name" in one_clean_line(err)


# -- sign and verify -----------------------------------------------------------------------------
def test_sign_and_verify(
    data_dir: Path, tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "offline.tar.gz"
    target.write_bytes(os.urandom(2 * PIECE + 7))
    code, out, err = cli(capsys, data_dir, "sign", str(target), "--key", str(keys / "room.key"))
    assert code == 0, err
    sig = tmp_path / "offline.tar.gz.sig"
    assert out.strip().endswith(f"wrote {sig}.") and sig.is_file()

    code, out, err = cli(capsys, data_dir, "verify", str(target), "--key", str(keys / "room.pub"))
    assert code == 0 and err == ""
    assert out.startswith(f"Good signature: {target} is intact")

    code, out, _ = cli(
        capsys, data_dir, "verify", str(target), "--key", str(keys / "room.pub"), "--json"
    )
    facts = json.loads(out)
    assert code == 0 and facts["ok"] is True and facts["size"] == 2 * PIECE + 7
    assert (
        facts["signature"] == str(sig) and facts["sha256"] == json.loads(sig.read_text())["sha256"]
    )

    code, out, err = cli(
        capsys, data_dir, "sign", str(target), "--key", str(keys / "room.key"), "--json"
    )
    assert code == 0, err
    assert json.loads(out)["key"] == facts["key"]


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_verify_catches_one_changed_byte(
    data_dir: Path, tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    target = tmp_path / "bundle.tar"
    target.write_bytes(os.urandom(3 * PIECE + 99))
    assert cli(capsys, data_dir, "sign", str(target), "--key", str(keys / "room.key"))[0] == 0
    size = target.stat().st_size
    flip(target, {"start": 0, "middle": size // 2, "end": size - 1}[where])
    code, out, err = cli(capsys, data_dir, "verify", str(target), "--key", str(keys / "room.pub"))
    assert code == 1 and out == ""
    assert one_clean_line(err) == (
        f"safeguard-desktop: {target} was altered since it was signed: its contents differ "
        "(sha256 mismatch)."
    )


def test_every_refusal_of_verify_is_exit_1_and_one_line(
    data_dir: Path, tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"contents " * 1000)
    pub = str(keys / "room.pub")

    def refused(*extra: str, problem: str, says: str) -> None:
        code, out, err = cli(capsys, data_dir, "verify", str(target), "--key", pub, *extra)
        assert code == 1 and out == "", (code, out, err)
        assert says in one_clean_line(err)
        code, out, err = cli(
            capsys, data_dir, "verify", str(target), "--key", pub, *extra, "--json"
        )
        result = json.loads(out)
        assert code == 1 and result["ok"] is False and result["problem"] == problem
        assert says in result["message"] and says in one_clean_line(err)

    refused(problem="no-signature", says="is not signed: there is no")
    assert cli(capsys, data_dir, "sign", str(target), "--key", str(keys / "other.key"))[0] == 0
    refused(problem="wrong-key", says="was signed by another key")
    assert cli(capsys, data_dir, "sign", str(target), "--key", str(keys / "room.key"))[0] == 0
    sig = tmp_path / "file.bin.sig"
    good_sig = sig.read_bytes()
    # One bit of the signature itself changed (a bit of its base64 text could turn into a
    # character that is not base64, or land in the padding bits: not the same case).
    encoded = json.loads(good_sig)["signature"].encode("ascii")
    raw = bytearray(base64.b64decode(encoded))
    raw[10] ^= 0x01
    sig.write_bytes(good_sig.replace(encoded, base64.b64encode(bytes(raw))))  # same form
    refused(problem="bad-signature", says="was altered or damaged")
    sig.write_text("{}")
    refused(problem="malformed-signature", says="is not a signature file")
    sig.write_bytes(good_sig)
    target.write_bytes(b"contents " * 999)
    refused(problem="altered", says="was altered since it was signed: it is 8991 bytes")
    target.write_bytes(b"contents " * 1000)
    moved = tmp_path / "elsewhere.sig"
    sig.rename(moved)
    refused(problem="no-signature", says="is not signed")
    code, out, _ = cli(capsys, data_dir, "verify", str(target), "--key", pub, "--sig", str(moved))
    assert code == 0 and out.startswith("Good signature")
    pub = str(keys / "room.key")
    refused("--sig", str(moved), problem="malformed-key", says="is a private key")
    pub = str(tmp_path / "nowhere.pub")
    refused("--sig", str(moved), problem="unreadable", says="does not exist")


def test_sign_refusals_are_one_line(
    data_dir: Path, tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "file.bin"
    target.write_bytes(b"x")
    for key, says in [
        (keys / "room.pub", "is a public key; sign with the private key"),
        (tmp_path / "none.key", "does not exist"),
    ]:
        code, out, err = cli(capsys, data_dir, "sign", str(target), "--key", str(key))
        assert code == 2 and out == "" and says in one_clean_line(err)
    code, _, err = cli(capsys, data_dir, "sign", str(tmp_path), "--key", str(keys / "room.key"))
    assert code == 2 and "is not a regular file" in one_clean_line(err)
    assert not (tmp_path / "file.bin.sig").exists()


# -- models import-bundle --require-signature ----------------------------------------------------
@pytest.fixture
def signed_bundle(
    data_dir: Path, tmp_path: Path, keys: Path, capsys: pytest.CaptureFixture[str]
) -> Path:
    """A bundle of several 1 MiB pieces, signed with room.key."""
    make_models_dir(tmp_path / "source", big=3 * PIECE)
    bundle = tmp_path / "tiny.tar"
    export_bundle(tmp_path / "source", NAME, bundle)
    assert bundle.stat().st_size > 3 * PIECE
    code, _, err = cli(capsys, data_dir, "sign", str(bundle), "--key", str(keys / "room.key"))
    assert code == 0, err
    return bundle


@pytest.fixture
def import_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Each call of the importer (the only code that writes into a models folder)."""
    calls: list[Path] = []
    real = bundle_import.import_bundle

    def recording(src: Path, *args: Any, **kwargs: Any) -> Any:
        calls.append(src)
        return real(src, *args, **kwargs)

    monkeypatch.setattr(bundle_import, "import_bundle", recording)
    return calls


def import_signed(
    capsys: pytest.CaptureFixture[str], data: Path, bundle: Path, dest: Path, pub: Path
) -> tuple[int, str, str]:
    return cli(
        capsys,
        data,
        "models",
        "import-bundle",
        str(bundle),
        "--models-dir",
        str(dest),
        "--require-signature",
        str(pub),
    )


def test_a_signed_bundle_is_imported(
    settings: Settings,
    data_dir: Path,
    tmp_path: Path,
    keys: Path,
    signed_bundle: Path,
    import_calls: list[Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    dest = tmp_path / "dest"
    code, out, err = import_signed(capsys, data_dir, signed_bundle, dest, keys / "room.pub")
    assert code == 0, err
    assert f"Imported {NAME} into {dest}" in out
    assert f"signature by {keys / 'room.pub'} checked" in out
    assert (dest / MANIFEST).is_file() and import_calls == [signed_bundle]

    sig = signed_bundle.with_name("tiny.tar.sig")
    code, _, err = cli(
        capsys, data_dir, "models", "import-bundle", str(signed_bundle), "--sig", str(sig)
    )
    assert code == 2 and "--sig is used with --require-signature" in one_clean_line(err)
    moved = sig.rename(tmp_path / "moved.sig")
    code, out, err = cli(
        capsys,
        data_dir,
        "models",
        "import-bundle",
        str(signed_bundle),
        "--models-dir",
        str(tmp_path / "dest2"),
        "--require-signature",
        str(keys / "room.pub"),
        "--sig",
        str(moved),
    )
    assert code == 0 and (tmp_path / "dest2" / MANIFEST).is_file(), err


def damage_start(bundle: Path) -> None:
    flip(bundle, 0)


def damage_middle(bundle: Path) -> None:
    flip(bundle, bundle.stat().st_size // 2)


def damage_end(bundle: Path) -> None:
    """The tar's end-of-archive padding: a plain import would not even notice."""
    flip(bundle, bundle.stat().st_size - 1)


def damage_truncate(bundle: Path) -> None:
    bundle.write_bytes(bundle.read_bytes()[:-512])


def damage_sig(bundle: Path) -> None:
    """One hex digit of the recorded sha256 changed into another hex digit (a flipped bit
    could make it a letter that is not hex: a malformed file, another case)."""
    sig = bundle.with_name(bundle.name + ".sig")
    data = bytearray(sig.read_bytes())
    at = data.index(b'"sha256"') + 15
    data[at] = ord("1") if data[at] == ord("0") else ord("0")
    sig.write_bytes(bytes(data))


def damage_unsign(bundle: Path) -> None:
    bundle.with_name(bundle.name + ".sig").unlink()


@pytest.mark.parametrize(
    ("damage", "pub", "says"),
    [
        (damage_start, "room", "was altered since it was signed: its contents differ"),
        (damage_middle, "room", "was altered since it was signed: its contents differ"),
        (damage_end, "room", "was altered since it was signed: its contents differ"),
        (damage_truncate, "room", "was altered since it was signed: it is"),
        (damage_sig, "room", "was altered or damaged"),
        (damage_unsign, "room", "is not signed: there is no"),
        (None, "other", "was signed by another key"),
    ],
    ids=["start", "middle", "end", "truncated", "sig", "unsigned", "other-key"],
)
def test_an_unsigned_or_altered_bundle_is_refused_before_anything_is_written(
    settings: Settings,
    data_dir: Path,
    tmp_path: Path,
    keys: Path,
    signed_bundle: Path,
    import_calls: list[Path],
    capsys: pytest.CaptureFixture[str],
    damage: Any,
    pub: str,
    says: str,
) -> None:
    if damage is not None:
        damage(signed_bundle)
    existing = tmp_path / "existing"  # a models folder with another model: left as it is
    make_models_dir(existing, "manifests/registry.ollama.ai/library/other/latest", big=1)
    for dest in (tmp_path / "fresh", existing):
        before = snapshot(dest)
        code, out, err = import_signed(capsys, data_dir, signed_bundle, dest, keys / f"{pub}.pub")
        line = one_clean_line(err)
        assert not out.strip() or "Imported" not in out
        assert code == 2 and says in line and "nothing was imported" in line, line
        assert snapshot(dest) == before
    assert not (tmp_path / "fresh").exists()
    assert import_calls == []  # refused before the importer (which writes) was called


def test_a_bundle_swapped_after_its_signature_was_checked_is_not_placed(
    tmp_path: Path, signed_bundle: Path
) -> None:
    """The importer hashes the bytes it imports and compares them with the checked signature."""
    sig = json.loads(signed_bundle.with_name("tiny.tar.sig").read_text())
    dest = tmp_path / "dest"
    with pytest.raises(BundleError, match="changed while it was imported"):
        bundle_import.import_bundle(signed_bundle, dest, expect=("0" * 64, sig["size"]))
    assert not dest.exists()
    result = bundle_import.import_bundle(signed_bundle, dest, expect=(sig["sha256"], sig["size"]))
    assert result.name == NAME and (dest / MANIFEST).is_file()


# -- --version -----------------------------------------------------------------------------------
def pyproject_version() -> str:
    return str(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"])


def test_version_names_the_app_qt_ollama_and_python(capsys: pytest.CaptureFixture[str]) -> None:
    from PySide6 import QtCore

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0 and err == ""
    assert out.splitlines() == [
        f"safeguard-desktop {pyproject_version()}",
        f"Qt {QtCore.qVersion()} (PySide6 {QtCore.__version__})",
        f"ollama (Python client) {metadata.version('ollama')}",
        f"Python {platform.python_version()} ({platform.python_implementation()})",
    ]


def test_version_without_a_working_qt_still_answers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "safeguard_desktop.qt", None)  # import fails
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert re.match(r"Qt unavailable \(\w*Error: .+\)$", out.splitlines()[1])
    assert out.splitlines()[0] == f"safeguard-desktop {pyproject_version()}"


def test_the_version_lives_only_in_pyproject(tmp_path: Path) -> None:
    version = pyproject_version()
    assert safeguard_desktop.__version__ == version, "stale install: pip install -e ."
    assigned = re.compile(r"""^\s*(__version__|VERSION|version)\s*[:=].*["']\d+\.\d+""", re.M)
    for path in (REPO / "safeguard_desktop").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert not assigned.search(text), f"{path} assigns a version"
        assert f'"{version}"' not in text and f"'{version}'" not in text, path


def test_version_from_a_source_checkout_without_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    safeguard_desktop.app_version.cache_clear()
    try:
        assert safeguard_desktop.app_version() == pyproject_version()  # the file beside it
    finally:
        safeguard_desktop.app_version.cache_clear()
    read = safeguard_desktop._source_version
    assert read(tmp_path / "missing.toml") == "0+unknown"
    (tmp_path / "other.toml").write_text('[project]\nname = "other"\nversion = "9"\n')
    assert read(tmp_path / "other.toml") == "0+unknown"
    (tmp_path / "bad.toml").write_text("[project\n")
    assert read(tmp_path / "bad.toml") == "0+unknown"
    (tmp_path / "ok.toml").write_text('[project]\nname = "safeguard-desktop"\nversion = "2.3"\n')
    assert read(tmp_path / "ok.toml") == "2.3"


def test_the_cli_starts_without_qt_or_cryptography(tmp_path: Path) -> None:
    """Qt is loaded for --version only, cryptography for sign/verify/keys only."""
    env = {**os.environ, "SAFEGUARD_DATA_DIR": str(tmp_path / "data")}
    probe = (
        "import sys; from safeguard_desktop.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('PySide6', 'cryptography') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "safeguard_desktop", "--version"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == f"safeguard-desktop {pyproject_version()}"
    assert len(done.stdout.splitlines()) == 4
