"""packaging/: the offline bundle installs with the network cut and refuses a changed byte;
the desktop files validate; the standalone build runs (opt-in: SAFEGUARD_BUILD_TESTS=1).

The bundle tests build one real bundle per session (wheels from pip's cache or the package
index, through ~/.cache/safeguard-desktop/packaging) and are marked slow.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import textwrap
import tomllib
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"
LINUX = PACKAGING / "linux"
APP_ID = "io.github.safeguard_desktop.SafeguardDesktop"
DESKTOP = LINUX / f"{APP_ID}.desktop"
METAINFO = LINUX / f"{APP_ID}.metainfo.xml"
FLATPAK = PACKAGING / "flatpak" / f"{APP_ID}.yml"
ICON_SIZES = (16, 22, 24, 32, 48, 64, 128, 256, 512)
BUILD_TIMEOUT = 900  # hang bounds only: a cold bundle build downloads ~110 MB
INSTALL_TIMEOUT = 600


def pyproject_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def run(cmd: list[str], timeout: float, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload, no-any-return]


# --- desktop integration (fast) --------------------------------------------------------


def test_desktop_file_validates() -> None:
    tool = shutil.which("desktop-file-validate")
    if tool is None:
        pytest.skip("desktop-file-validate is not installed (Debian: desktop-file-utils)")
    result = run([tool, str(DESKTOP)], 60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout  # not even hints


def test_metainfo_validates() -> None:
    tool = shutil.which("appstreamcli")
    if tool is None:
        pytest.skip("appstreamcli is not installed (Debian: appstream)")
    result = run([tool, "validate", "--no-net", str(METAINFO)], 60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_metainfo_agrees_with_the_project() -> None:
    root = ET.parse(METAINFO).getroot()
    assert root.findtext("id") == APP_ID
    assert root.findtext("project_license") == "Apache-2.0"
    assert root.findtext("metadata_license") == "CC0-1.0"
    assert root.find("content_rating").get("type", "").startswith("oars-")  # type: ignore[union-attr]
    launchable = root.find("launchable")
    assert launchable is not None and launchable.text == DESKTOP.name
    releases = [r.get("version") for r in root.iter("release")]
    assert releases and releases[0] == pyproject_version(), (
        f"the newest <release> in {METAINFO.name} is {releases[:1]}, pyproject.toml says "
        f"{pyproject_version()}: add a <release> for it"
    )
    images = [i.text or "" for i in root.iter("image")]
    assert images
    for url in images:
        assert url.startswith("https://"), url
        rel = url[url.index("docs/screenshots/") :]
        assert (ROOT / rel).is_file(), f"{url} names {rel}, which the repository lacks"


def test_desktop_file_and_icons_agree() -> None:
    text = DESKTOP.read_text(encoding="utf-8")
    assert f"\nIcon={APP_ID}\n" in text
    assert "\nExec=safeguard-desktop" in text
    for size in ICON_SIZES:
        png = LINUX / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n", png
        width, height = struct.unpack(">II", data[16:24])
        assert (width, height) == (size, size), png
    svg = LINUX / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg"
    stale = "the icons are stale: QT_QPA_PLATFORM=offscreen python3 packaging/linux/make_icons.py"
    assert svg.read_bytes() == (ROOT / "resources" / "icon.svg").read_bytes(), stale
    for size in (16, 24, 32, 48, 64, 128, 256):  # the window icon (ui/theme.app_icon)
        window = ROOT / "resources" / f"icon-{size}.png"
        hicolor = LINUX / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png"
        assert window.read_bytes() == hicolor.read_bytes(), stale


def test_the_window_icon_comes_in_every_size(qapp) -> None:
    from safeguard_desktop.ui.theme import WINDOW_ICON_SIZES, app_icon

    sizes = {(s.width(), s.height()) for s in app_icon().availableSizes()}
    assert sizes == {(n, n) for n in WINDOW_ICON_SIZES}


def test_flatpak_manifest_names_this_version_and_id() -> None:
    text = FLATPAK.read_text(encoding="utf-8")
    assert re.search(rf"^id: {re.escape(APP_ID)}$", text, re.M)
    archives = re.findall(r"safeguard-desktop-offline-([^-]+)-", text)
    assert archives and set(archives) == {pyproject_version()}, archives


def test_locks_match_pyproject() -> None:
    result = run([sys.executable, str(PACKAGING / "lock.py"), "--check"], 60)
    assert result.returncode == 0, result.stderr


def test_install_scripts_are_plain_sh() -> None:
    for shell in ("sh", "dash", "bash"):
        if shutil.which(shell):
            for script in (PACKAGING / "bundle" / "install.sh", PACKAGING / "build.sh"):
                result = run([shell, "-n", str(script)], 30)
                assert result.returncode == 0, f"{shell} -n {script}: {result.stderr}"


# --- the offline bundle (slow) ----------------------------------------------------------


def netns_prefix() -> list[str] | None:
    """`unshare -n` (root) or `unshare -rn` (user namespaces), whichever works here."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "-n"], ["unshare", "-rn"]):
        try:
            if run([*prefix, "true"], 30).returncode == 0:
                return prefix
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def signing_available() -> bool:
    """The app's `sign`/`verify`/`keys` commands (issue 13 item 3) are there."""
    result = run([sys.executable, "-m", "safeguard_desktop", "keys", "--help"], 120, cwd=ROOT)
    return result.returncode == 0


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path] | None:
    if not signing_available():
        return None
    folder = tmp_path_factory.mktemp("keys")
    made = run(
        [sys.executable, "-m", "safeguard_desktop", "keys", "new", "publisher",
         "--dir", str(folder)],
        120, cwd=ROOT,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return folder / "publisher.key", folder / "publisher.pub"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path] | None) -> Path:
    """One bundle for the module, signed when the app can sign."""
    out = tmp_path_factory.mktemp("bundle")
    sign = ["--sign-key", str(keys[0])] if keys else []
    result = run(
        [sys.executable, str(PACKAGING / "offline_bundle.py"), "--out", str(out), *sign],
        BUILD_TIMEOUT,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    archives = list(out.glob("safeguard-desktop-offline-*.tar.gz"))
    assert len(archives) == 1, list(out.iterdir())
    return archives[0]


def extract(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    (folder,) = dest.iterdir()
    return folder


@pytest.mark.slow
def test_bundle_holds_what_it_promises(bundle: Path, tmp_path: Path) -> None:
    version = pyproject_version()
    assert bundle.name.startswith(f"safeguard-desktop-offline-{version}-")
    folder = extract(bundle, tmp_path)
    for name in ("install.sh", "install.ps1", "README.txt", "README.md", "requirements.lock",
                 "SHA256SUMS", "licenses/INDEX.txt"):  # fmt: skip
        assert (folder / name).is_file(), name
    wheels = sorted(p.name for p in (folder / "wheels").glob("*.whl"))
    assert any(w.startswith(f"safeguard_desktop-{version}-") for w in wheels)
    lock = (folder / "requirements.lock").read_text()
    pins = re.findall(r"^([a-z0-9-]+)==", lock, re.M)
    assert len(pins) == len(wheels) and all("--hash=sha256:" in b for b in lock.split("==")[1:])
    licensed = {p.name.rsplit("-", 1)[0].lower() for p in (folder / "licenses").iterdir()}
    assert {"pyside6_essentials", "safeguard-desktop", "qasync", "ollama"} <= licensed
    listed = {line.split("  ", 1)[1] for line in (folder / "SHA256SUMS").read_text().splitlines()}
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {
        "SHA256SUMS",
        "SHA256SUMS.sig",
    }
    assert listed == on_disk
    assert (folder / "desktop" / f"{APP_ID}.desktop").is_file()


NETNS_DRIVER = textwrap.dedent(
    """
    # Runs inside `unshare -n`: no interface but loopback. Installs the bundle, starts the
    # fake Ollama on loopback, runs the installed CLI; prints one JSON line of results.
    import json, os, socket, subprocess, sys, time

    folder, target, root, port, data, options = sys.argv[1:7]
    # /proc/net is this process's network namespace (/sys/class/net would show the host's).
    with open("/proc/net/dev") as fh:
        out = {"interfaces": sorted(l.split(":")[0].strip() for l in fh.readlines()[2:])}
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    install = subprocess.run(["sh", os.path.join(folder, "install.sh"), *json.loads(options),
                              target],
                             capture_output=True, text=True, timeout=600)
    out["install"] = [install.returncode, install.stdout, install.stderr]
    app = os.path.join(target, "bin", "safeguard-desktop")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen",
               PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring")
    env.pop("OLLAMA_HOST", None)

    def cli(*args):
        r = subprocess.run([app, "--data-dir", data, *args], capture_output=True, text=True,
                           timeout=300, env=env, cwd=data)
        return [r.returncode, r.stdout[-4000:], r.stderr[-4000:]]

    if install.returncode == 0:
        out["version"] = cli("--version")
        out["policies"] = cli("policies", "list")
        fake = subprocess.Popen([sys.executable, "-m", "tests.fake_ollama", "serve"], cwd=root,
                                env=dict(env, OLLAMA_HOST=f"127.0.0.1:{port}"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.2)
            out["classify"] = cli("classify", "--host", f"http://127.0.0.1:{port}",
                                  "--policy", "spam-scams", "--text", "buy now", "--json")
        finally:
            fake.kill()
            fake.wait(30)
    print(json.dumps(out))
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_bundle_installs_and_runs_without_network(
    bundle: Path, keys: tuple[Path, Path] | None, tmp_path: Path
) -> None:
    prefix = netns_prefix()
    if prefix is None:
        pytest.skip("cannot make a network namespace here (unshare -n / unshare -rn)")
    if shutil.which("ip") is None:
        pytest.skip("no `ip` to bring up loopback inside the namespace (Debian: iproute2)")
    folder = extract(bundle, tmp_path / "carried")
    target = tmp_path / "venv"
    data = tmp_path / "data"
    data.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(NETNS_DRIVER)
    # Signed: install.sh checks SHA256SUMS.sig first, with the checkout's app as the verifier.
    options = ["--key", str(keys[1])] if keys else []
    env = dict(os.environ, SAFEGUARD_VERIFIER=str(verifier_script(tmp_path)))
    result = run(
        [*prefix, sys.executable, str(driver), str(folder), str(target), str(ROOT),
         str(free_port()), str(data), json.dumps(options)],
        INSTALL_TIMEOUT + 400, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["interfaces"] == ["lo"], out["interfaces"]  # the network really was cut
    code, stdout, stderr = out["install"]
    assert code == 0, stdout + stderr
    assert "files match SHA256SUMS" in stdout
    assert "Looking in indexes" not in stdout + stderr  # --no-index, no configured index
    assert f"{target}/bin/safeguard-desktop" in stdout
    code, stdout, stderr = out["version"]
    assert code == 0 and f"safeguard-desktop {pyproject_version()}" in stdout, stdout + stderr
    code, stdout, stderr = out["policies"]
    assert code == 0 and "spam-scams" in stdout, stdout + stderr
    code, stdout, stderr = out["classify"]
    assert code == 0, stdout + stderr
    verdict = json.loads(stdout)["verdict"]
    assert verdict["violation"] is True and verdict["rule_ids"] == ["SC2"]
    # The installed app is the bundle's, not the checkout's.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    site = run([str(target / "bin" / "python"), "-c",
                "import safeguard_desktop; print(safeguard_desktop.__file__)"],
               60, cwd=tmp_path, env=env)  # fmt: skip
    assert site.stdout.startswith(str(target)), site.stdout


@pytest.fixture
def carried(bundle: Path, tmp_path: Path) -> Iterator[Path]:
    yield extract(bundle, tmp_path / "carried")


def install(folder: Path, target: Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SAFEGUARD_VERIFIER=str(verifier_script(folder.parent)))
    return run(["sh", str(folder / "install.sh"), *options, str(target)], INSTALL_TIMEOUT, env=env)


def verifier_script(where: Path) -> Path:
    """The checkout's safeguard-desktop, standing in for one already trusted in the room."""
    script = where / "trusted-safeguard-desktop"
    script.write_text(
        f"#!/bin/sh\ncd '{ROOT}' && exec '{sys.executable}' -m safeguard_desktop \"$@\"\n"
    )
    script.chmod(0o755)
    return script


def resum(folder: Path) -> None:
    """What a careful attacker does after changing a file: rewrite SHA256SUMS to match."""
    lines = []
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        name = line.split("  ", 1)[1]
        lines.append(f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n")
    (folder / "SHA256SUMS").write_text("".join(lines))


def needs_signature(keys: tuple[Path, Path] | None) -> tuple[Path, Path]:
    if keys is None:
        pytest.skip("this safeguard-desktop has no `keys`/`sign`/`verify` commands yet")
    return keys


@pytest.mark.slow
def test_one_changed_byte_is_refused_before_anything_is_written(
    carried: Path, tmp_path: Path
) -> None:
    wheel = next((carried / "wheels").glob("qasync-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x01
    wheel.write_bytes(bytes(data))
    target = tmp_path / "venv"
    result = install(carried, target)
    assert result.returncode != 0
    assert f"ALTERED: wheels/{wheel.name}" in result.stderr
    assert "REFUSED" in result.stderr and "nothing was installed" in result.stderr
    assert not target.exists()


@pytest.mark.slow
def test_an_added_wheel_is_refused(carried: Path, tmp_path: Path) -> None:
    extra = carried / "wheels" / "evil-1.0-py3-none-any.whl"
    extra.write_bytes(b"PK\x05\x06" + bytes(18))
    result = install(carried, tmp_path / "venv")
    assert result.returncode != 0
    assert "not in SHA256SUMS (added?): wheels/evil-1.0-py3-none-any.whl" in result.stderr
    assert not (tmp_path / "venv").exists()


@pytest.mark.slow
def test_a_changed_byte_in_the_archive_is_caught(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / bundle.name
    data = bytearray(bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    sidecar = bundle.with_name(bundle.name + ".sha256").read_text().split()[0]
    assert hashlib.sha256(bytes(data)).hexdigest() != sidecar
    if shutil.which("tar") and shutil.which("gzip"):
        # `tar xzf` as the README says: gzip's CRC fails at the end of the stream.
        (tmp_path / "tar").mkdir()
        unpacked = run(["tar", "-xzf", str(copy), "-C", str(tmp_path / "tar")], 300)
        assert unpacked.returncode != 0
    # A lenient unpacker (Python's tarfile does not read gzip's trailer): the changed byte
    # lands in a file, and install.sh refuses it.
    try:
        folder = extract(copy, tmp_path / "lenient")
    except (tarfile.TarError, OSError, EOFError, zlib.error):
        return  # refused while unpacking
    result = install(folder, tmp_path / "venv")
    assert result.returncode != 0 and "REFUSED" in result.stderr, result.stderr
    assert not (tmp_path / "venv").exists()


@pytest.mark.slow
def test_signed_archive_verifies_and_a_changed_byte_does_not(
    bundle: Path, keys: tuple[Path, Path] | None, tmp_path: Path
) -> None:
    _, pub = needs_signature(keys)
    verify = [sys.executable, "-m", "safeguard_desktop", "verify"]
    good = run([*verify, str(bundle), "--key", str(pub)], 300, cwd=ROOT)
    assert good.returncode == 0, good.stdout + good.stderr
    copy = tmp_path / bundle.name
    data = bytearray(bundle.read_bytes())
    data[-100] ^= 0x01
    copy.write_bytes(bytes(data))
    bad = run([*verify, str(copy), "--key", str(pub), "--sig", f"{bundle}.sig"], 300, cwd=ROOT)
    assert bad.returncode == 1, bad.stdout + bad.stderr


@pytest.mark.slow
def test_install_with_key_refuses_a_change_that_sha256sums_was_rewritten_for(
    carried: Path, keys: tuple[Path, Path] | None, tmp_path: Path
) -> None:
    _, pub = needs_signature(keys)
    assert (carried / "SHA256SUMS.sig").is_file()
    wheel = next((carried / "wheels").glob("qasync-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 0x01
    wheel.write_bytes(bytes(data))
    resum(carried)
    result = install(carried, tmp_path / "venv", "--key", str(pub))
    assert result.returncode != 0
    assert "REFUSED: SHA256SUMS is not signed by" in result.stderr, result.stderr
    assert not (tmp_path / "venv").exists()


@pytest.mark.slow
def test_install_with_key_refuses_an_unsigned_bundle(
    carried: Path, keys: tuple[Path, Path] | None, tmp_path: Path
) -> None:
    _, pub = needs_signature(keys)
    (carried / "SHA256SUMS.sig").unlink()
    result = install(carried, tmp_path / "venv", "--key", str(pub))
    assert result.returncode != 0 and "has no SHA256SUMS.sig" in result.stderr, result.stderr
    assert not (tmp_path / "venv").exists()


# --- the standalone build (opt-in) ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("SAFEGUARD_BUILD_TESTS") != "1",
    reason="PyInstaller build takes minutes: set SAFEGUARD_BUILD_TESTS=1 to run it",
)
def test_standalone_build_runs_offscreen(tmp_path: Path) -> None:
    out = ROOT / "build" / "pyinstaller"  # build.sh's default: its venv is reused next time
    result = run(["sh", str(PACKAGING / "build.sh"), str(out)], 1800, cwd=ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    app = out / "dist" / "safeguard-desktop" / "safeguard-desktop"
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        PYTHON_KEYRING_BACKEND="keyring.backends.null.Keyring",
    )
    env.pop("PYTHONPATH", None)
    version = run([str(app), "--version"], 120, env=env)
    assert version.returncode == 0 and pyproject_version() in version.stdout, version.stderr
    data = tmp_path / "data"
    from tests.fake_ollama import FakeOllama

    with FakeOllama(token_rate=50_000) as fake:
        result = run(
            [str(app), "--data-dir", str(data), "classify", "--host", fake.url,
             "--policy", "spam-scams", "--text", "buy now", "--json"],
            300, env=env,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["verdict"]["violation"] is True
