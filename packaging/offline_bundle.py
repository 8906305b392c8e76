#!/usr/bin/env python3
"""Build the offline install bundle: one .tar.gz that installs Safeguard Desktop without network.

    python3 packaging/offline_bundle.py --out dist/
    python3 packaging/offline_bundle.py --out dist/ --python-version 3.12 \
        --platform manylinux_2_34_x86_64
    python3 packaging/offline_bundle.py --out dist/ --include-model-bundle gpt-oss.tar \
        --sign-key publisher.key

Writes DIR/safeguard-desktop-offline-<version>-<target>.tar.gz (and a .sha256 beside it; a
.sig too with --sign-key), holding one folder of the same name with: wheels/ (the project's
wheel from `pip wheel . --no-deps` and every dependency's wheel for the target, downloaded
with the hashes of packaging/locks/<target>.lock), requirements.lock (that lock plus the
project's wheel and its hash), install.sh, install.ps1, README.txt, README.md, licenses/
(each wheel's licence files), desktop/ (Linux menu entry, metainfo, icons), models/ (with
--include-model-bundle) and SHA256SUMS (sha256 of every other file; SHA256SUMS.sig when
signed). The version is pyproject.toml's. Building needs the package index (or pip's cache);
installing needs nothing but Python.
"""

from __future__ import annotations

import argparse
import email.parser
import gzip
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    APP_ID,
    PACKAGING,
    PYPROJECT,
    ROOT,
    Pin,
    Target,
    WheelName,
    dependencies_digest,
    format_pin,
    make_target,
    read_lock,
    sha256_file,
    version,
)

LICENSE_FILE = re.compile(r"(LICEN[CS]E|COPYING|NOTICE|AUTHORS)", re.IGNORECASE)
TEMPLATES = PACKAGING / "bundle"
LINUX = PACKAGING / "linux"
# SPDX ids -> licence texts kept in packaging/licenses/ (for wheels that ship none).
KNOWN_TEXTS = {
    "Apache-2.0": "Apache-2.0.txt",
    "LGPL-3.0": "LGPL-3.0.txt",
    "GPL-3.0": "GPL-3.0.txt",
    "GPL-2.0": "GPL-2.0.txt",
}


class BuildError(Exception):
    pass


_T0 = time.monotonic()


def log(text: str) -> None:
    print(f"offline_bundle: [{time.monotonic() - _T0:5.1f} s] {text}", flush=True)


def run(cmd: list[str], **kw: object) -> None:
    print("+", " ".join(cmd), flush=True)
    result = subprocess.run(cmd, **kw)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise BuildError(f"command failed ({result.returncode}): {' '.join(cmd[:6])} ...")


def pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def check_lock(target: Target) -> list[Pin]:
    if not target.lock.exists():
        raise BuildError(
            f"no lock for {target.key}: make it with "
            f"`python3 packaging/lock.py --python-version {target.python}"
            + (f" --platform {target.label}`" if target.explicit_platform else "`")
            + " (on the target's OS for Windows and macOS)"
        )
    header, pins = read_lock(target.lock)
    if header.get("dependencies-digest") != dependencies_digest():
        raise BuildError(
            f"{target.lock} is stale: pyproject.toml's dependencies changed since it was made; "
            f"regenerate it: {header.get('regenerate', 'python3 packaging/lock.py')}"
        )
    return pins


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "safeguard-desktop" / "packaging"


def download_wheels(target: Target, wheels: Path, cache: Path | None) -> None:
    """Every locked wheel for the target, each checked against the lock's sha256.

    With a cache, the wheels come from it offline when it has them all (pip still checks
    every hash); otherwise from the index, and the cache keeps them for the next build.
    """
    args = ["--no-deps", "--require-hashes", "-r", str(target.lock), "--dest", str(wheels)]
    if cache is not None:
        store = cache / "wheels"
        if store.is_dir():
            offline = pip("download", "--no-index", "--find-links", str(store), *args,
                          *target.pip_args())  # fmt: skip
            if subprocess.run(offline, capture_output=True).returncode == 0:
                log(f"all wheels came from the cache {store}")
                return
            for partial in wheels.iterdir():
                partial.unlink()
    run(pip("download", *args, *target.pip_args()))
    if cache is not None:
        store = cache / "wheels"
        store.mkdir(parents=True, exist_ok=True)
        for wheel in wheels.iterdir():
            if not (store / wheel.name).exists():
                shutil.copy2(wheel, store / wheel.name)


def build_requires() -> list[str]:
    with PYPROJECT.open("rb") as fh:
        return list(tomllib.load(fh)["build-system"]["requires"])


def build_env(cache: Path) -> Path:
    """A virtual environment with pyproject's build requirements, kept in the cache.

    pip's default build isolation makes and fills a fresh one at every build (half a minute
    here); this one is reused while [build-system] requires stays the same.
    """
    env = cache / "build-env"
    stamp = env / "build-requires.txt"
    wanted = "\n".join(build_requires())
    python = env / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        shutil.rmtree(env, ignore_errors=True)
        run([sys.executable, "-m", "venv", str(env)])
        run([str(python), "-m", "pip", "--disable-pip-version-check", "install", "-q",
             *build_requires()])  # fmt: skip
        stamp.write_text(wanted)
    return python


def source_copy(dest: Path) -> Path:
    """The files the wheel is built from, copied: the build leaves nothing in the checkout
    (setuptools writes build/ and *.egg-info beside pyproject.toml) and two builds at once
    do not meet there."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    dest.mkdir()
    for name in ("pyproject.toml", "README.md", "setup.py", "setup.cfg", "MANIFEST.in"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, dest / name)
    for path in ROOT.glob("LICEN[CS]E*"):
        shutil.copy2(path, dest / path.name)
    with PYPROJECT.open("rb") as fh:
        setuptools = tomllib.load(fh).get("tool", {}).get("setuptools", {})
    folders = {p.split(".")[0] for p in setuptools.get("packages", [])}
    folders |= {d.split("/")[0] for d in setuptools.get("package-dir", {}).values()}
    for folder in sorted(folders):
        shutil.copytree(ROOT / folder, dest / folder, ignore=ignore)
    return dest


def build_project_wheel(wheels: Path, cache: Path | None) -> Path:
    with tempfile.TemporaryDirectory(prefix="sgd-wheel-") as tmp:
        src = source_copy(Path(tmp) / "src")
        out = str(Path(tmp) / "out")
        if cache is None:
            run(pip("wheel", "-q", "--no-deps", "--wheel-dir", out, str(src)))
        else:
            python = build_env(cache)
            run([str(python), "-m", "pip", "--disable-pip-version-check", "wheel", "-q",
                 "--no-deps", "--no-build-isolation", "--wheel-dir", out, str(src)])  # fmt: skip
        built = list(Path(out).glob("*.whl"))
        if len(built) != 1:
            raise BuildError(f"pip wheel made {len(built)} wheels, expected one")
        dest = wheels / built[0].name
        shutil.copy2(built[0], dest)
    name = WheelName.parse(dest.name)
    if name.version != version():
        raise BuildError(f"built {dest.name}, but pyproject.toml says version {version()}")
    return dest


def write_bundle_lock(pins: list[Pin], project_wheel: Path, dest: Path) -> None:
    wheel = WheelName.parse(project_wheel.name)
    own = Pin(wheel.name, wheel.version, (sha256_file(project_wheel),))
    text = (
        f"# Safeguard Desktop {wheel.version}: everything install.sh installs, each file pinned\n"
        "# by sha256 (pip --require-hashes). Dependencies from packaging/locks/, plus the app.\n\n"
        + format_pin(own, "the app itself (built for this bundle)")
        + "".join(format_pin(pin) for pin in pins)
    )
    dest.write_text(text, encoding="utf-8")


def check_closure(target: Target, folder: Path) -> None:
    """Offline, as install.sh will: the lock covers every dependency of every wheel."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    wheels = str(folder / "wheels")
    # --dest is wheels/ itself: pip finds each file already there (and checks its hash), so
    # nothing is copied; a dependency missing from the lock fails the hash-checking mode.
    run(
        pip("download", "--isolated", "--no-index", "--find-links", wheels, "--require-hashes",
            "-r", str(folder / "requirements.lock"), "--dest", wheels, *target.pip_args()),
        env=env, stdout=subprocess.DEVNULL,
    )  # fmt: skip


def collect_licenses(wheels: Path, dest: Path) -> None:
    index = ["# Licences of everything in wheels/ (from each wheel's METADATA and files)\n"]
    for wheel_path in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel_path) as zf:
            names = zf.namelist()
            dist_info = next(
                (n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")), None
            )
            if dist_info is None:
                raise BuildError(f"{wheel_path.name} has no .dist-info")
            meta = email.parser.Parser().parsestr(zf.read(f"{dist_info}/METADATA").decode())
            name, ver = meta["Name"], meta["Version"]
            folder = dest / f"{name}-{ver}"
            folder.mkdir(parents=True, exist_ok=True)
            found = []
            for member in names:
                head, _, rest = member.partition("/")
                if head != dist_info or member.endswith("/"):
                    continue
                if rest.startswith("licenses/") or LICENSE_FILE.match(rest.rsplit("/", 1)[-1]):
                    rel = rest.removeprefix("licenses/")
                    out = folder / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(zf.read(member))
                    found.append(rel)
        licence = meta.get("License-Expression") or meta.get("License") or ""
        classifiers = [
            c.split(" :: ")[-1] for c in meta.get_all("Classifier", []) if c.startswith("License")
        ]
        licence = licence.strip() or "; ".join(classifiers) or "not stated"
        if not found:
            # No licence file in the wheel (PySide6, shiboken6, this project): the metadata
            # and the standard texts of the licences it names, kept in packaging/licenses/.
            note = folder / "LICENSE-FROM-METADATA.txt"
            texts = [
                text for spdx, text in KNOWN_TEXTS.items() if re.search(rf"\b{spdx}\b", licence)
            ]
            note.write_text(
                f"{name} {ver} ships no licence file in its wheel. Its metadata says:\n"
                f"  License: {licence}\n"
                + "".join(f"  Classifier: {c}\n" for c in classifiers)
                + (f"The standard text(s) follow in this folder: {', '.join(texts)}\n"
                   if texts else "")
                + (f"Project page: {meta.get('Home-page') or meta.get('Project-URL', '')}\n"),
                encoding="utf-8",
            )  # fmt: skip
            found.append(note.name)
            for text in texts:
                shutil.copy2(PACKAGING / "licenses" / text, folder / text)
                found.append(text)
        index.append(f"{name} {ver}: {licence}\n    " + ", ".join(sorted(found)) + "\n")
    (dest / "INDEX.txt").write_text("".join(index), encoding="utf-8")


def copy_desktop_files(dest: Path) -> bool:
    desktop = LINUX / f"{APP_ID}.desktop"
    metainfo = LINUX / f"{APP_ID}.metainfo.xml"
    icons = LINUX / "icons"
    if not (desktop.exists() and metainfo.exists() and icons.is_dir()):
        log("packaging/linux has no desktop entry or icons yet: bundle without desktop/")
        return False
    dest.mkdir()
    shutil.copy2(desktop, dest)
    shutil.copy2(metainfo, dest)
    shutil.copytree(icons, dest / "icons")
    return True


def fill(template: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    if leftover := re.findall(r"@[A-Z_]+@", template):
        raise BuildError(f"unfilled placeholders {leftover}")
    return template


def write_sums(folder: Path) -> int:
    lines = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel in ("SHA256SUMS", "SHA256SUMS.sig"):
            continue
        lines.append(f"{sha256_file(path)}  {rel}\n")
    (folder / "SHA256SUMS").write_text("".join(lines), encoding="utf-8")
    return len(lines)


def sign(path: Path, key: Path) -> Path:
    """`safeguard-desktop sign FILE --key KEY` writes FILE.sig (the app's Ed25519 signer)."""
    sig = path.with_name(path.name + ".sig")
    sig.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "safeguard_desktop", "sign", str(path), "--key", str(key)]
    print("+", " ".join(cmd), flush=True)
    # From the checkout: the project's own signer, installed or not.
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0 or not sig.exists():
        raise BuildError(
            f"signing {path.name} failed ({result.returncode}): "
            f"{(result.stderr or result.stdout).strip()[-400:]}"
            " (does this safeguard-desktop have the `sign` command?)"
        )
    return sig


def make_tar(folder: Path, archive: Path, mtime: int) -> None:
    """A gzip'd tar with sorted entries, root-owned, normalised modes and one mtime."""

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = mtime
        executable = info.isdir() or info.name.endswith(".sh")
        info.mode = 0o755 if executable else 0o644
        return info

    with (
        archive.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=mtime, compresslevel=1) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in [folder, *sorted(folder.rglob("*"))]:
            arcname = path.relative_to(folder.parent).as_posix()
            tar.add(path, arcname=arcname, recursive=False, filter=normalise)


def build(
    out: Path,
    target: Target,
    model_bundle: Path | None = None,
    sign_key: Path | None = None,
    cache: Path | None = None,
) -> Path:
    started = time.monotonic()
    ver = version()
    pins = check_lock(target)
    stem = f"safeguard-desktop-offline-{ver}-{target.key}"
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{stem}.tar.gz"
    with tempfile.TemporaryDirectory(prefix="sgd-bundle-", dir=out) as tmp:
        folder = Path(tmp) / stem
        wheels = folder / "wheels"
        wheels.mkdir(parents=True)
        log(f"{stem}: downloading {len(pins)} locked wheels for {target.key}")
        download_wheels(target, wheels, cache)
        log("building the project's wheel")
        project_wheel = build_project_wheel(wheels, cache)
        write_bundle_lock(pins, project_wheel, folder / "requirements.lock")
        expected = {f"{p.name}=={p.version}" for p in pins} | {
            f"{WheelName.parse(project_wheel.name).name}=={ver}"
        }
        got = {f"{w.name}=={w.version}" for w in map(WheelName.parse, _names(wheels))}
        if got != expected:
            raise BuildError(f"wheels/ differs from the lock: {sorted(got ^ expected)}")
        if target.os_family == _running_os():
            log("checking offline that the lock covers every dependency")
            check_closure(target, folder)
        else:
            # pip would evaluate the dependencies' markers for this OS, not the target's.
            log(f"no offline closure check for a {target.os_family} bundle built on this OS")
        values = {
            "VERSION": ver,
            "PYTHON": target.python,
            "PLATFORM": target.key,
            "APP_ID": APP_ID,
            "ARCHIVE": archive.name,
            "FOLDER": stem,
        }
        for name in ("install.sh", "install.ps1", "README.txt"):
            text = fill((TEMPLATES / name).read_text(encoding="utf-8"), values)
            (folder / name).write_text(text, encoding="utf-8", newline="\n")
        (folder / "install.sh").chmod(0o755)
        shutil.copy2(ROOT / "README.md", folder / "README.md")
        log("collecting licences, desktop files; writing SHA256SUMS")
        collect_licenses(wheels, folder / "licenses")
        copy_desktop_files(folder / "desktop")
        if model_bundle is not None:
            models = folder / "models"
            models.mkdir()
            shutil.copy2(model_bundle, models / model_bundle.name)
            sig = model_bundle.with_name(model_bundle.name + ".sig")
            if sig.exists():
                shutil.copy2(sig, models / sig.name)
        count = write_sums(folder)
        if sign_key is not None:
            sign(folder / "SHA256SUMS", sign_key)
        mtime = int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))
        log(f"writing {archive.name}")
        partial = archive.with_name(archive.name + ".part")
        make_tar(folder, partial, mtime)
        partial.replace(archive)
    digest = sha256_file(archive)
    archive.with_name(archive.name + ".sha256").write_text(f"{digest}  {archive.name}\n")
    if sign_key is not None:
        sign(archive, sign_key)
    size = archive.stat().st_size
    log(
        f"wrote {archive} ({size / 1e6:.1f} MB, {count} files, sha256 {digest}) "
        f"in {time.monotonic() - started:.0f} s"
    )
    return archive


def _running_os() -> str:
    return {"win32": "windows", "darwin": "macos"}.get(sys.platform, "linux")


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.whl"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="folder for the archive")
    parser.add_argument(
        "--platform",
        help="wheel platform tag, e.g. manylinux_2_34_x86_64 or win_amd64 (default: this machine)",
    )
    parser.add_argument("--python-version", help="X.Y (default: the Python running this)")
    parser.add_argument(
        "--include-model-bundle",
        type=Path,
        metavar="PATH",
        help="a .tar from `safeguard-desktop models export` (its .sig beside it comes along)",
    )
    parser.add_argument(
        "--sign-key",
        type=Path,
        metavar="KEY",
        help="sign SHA256SUMS and the archive with `safeguard-desktop sign --key KEY`",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=default_cache(),
        help="keep downloaded wheels and a build environment here (default: %(default)s)",
    )
    parser.add_argument("--no-cache", action="store_true", help="download and build afresh")
    args = parser.parse_args(argv)
    if args.include_model_bundle and not args.include_model_bundle.is_file():
        parser.error(f"no such model bundle: {args.include_model_bundle}")
    if args.sign_key and not args.sign_key.is_file():
        parser.error(f"no such key: {args.sign_key}")
    target = make_target(args.platform, args.python_version)
    try:
        build(
            args.out,
            target,
            args.include_model_bundle,
            args.sign_key,
            cache=None if args.no_cache else args.cache,
        )
    except BuildError as exc:
        print(f"offline_bundle: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
