"""Shared helpers of packaging/lock.py and packaging/offline_bundle.py (standard library only).

A *target* is one Python version on one platform, e.g. cp311 on this machine's linux_x86_64,
or cp312 on manylinux_2_34_x86_64 for another Linux. Each target has its own lock file,
packaging/locks/<target>.lock, because pip resolves environment markers (sys_platform,
platform_machine) against the interpreter running it, not against `--platform`: a lock made
on Linux for Windows would carry Linux-only dependencies (SecretStorage, jeepney) and miss the
Windows ones (pywin32-ctypes). So a lock for another OS is made on that OS.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import sysconfig
import tomllib
from dataclasses import dataclass
from pathlib import Path

PACKAGING = Path(__file__).resolve().parent
ROOT = PACKAGING.parent
LOCKS = PACKAGING / "locks"
PYPROJECT = ROOT / "pyproject.toml"
APP_ID = "io.github.safeguard_desktop.SafeguardDesktop"
# Not a runtime dependency of the app, but pinned with the rest: install.sh creates the
# virtual environment without pip (Debian's python3 may lack ensurepip) and bootstraps this
# pip from its wheel, so the pip doing the hash checks is itself a checked file.
BOOTSTRAP = ("pip",)


def project() -> dict[str, object]:
    with PYPROJECT.open("rb") as fh:
        return dict(tomllib.load(fh)["project"])


def version() -> str:
    return str(project()["version"])


def dependencies() -> list[str]:
    return [str(d) for d in project().get("dependencies", [])]  # type: ignore[attr-defined]


def dependencies_digest() -> str:
    """Changes whenever pyproject's runtime dependencies change (a lock then is stale)."""
    text = json.dumps(sorted(dependencies()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class WheelName:
    name: str  # canonical (lower case, hyphens)
    version: str
    tags: str  # python-abi-platform

    @classmethod
    def parse(cls, filename: str) -> WheelName:
        if not filename.endswith(".whl"):
            raise ValueError(f"not a wheel: {filename}")
        parts = filename[:-4].split("-")
        if len(parts) not in (5, 6):
            raise ValueError(f"not a wheel file name: {filename}")
        return cls(canonical(parts[0]), parts[1], "-".join(parts[-3:]))


@dataclass(frozen=True)
class Target:
    """pip's view of where the wheels will run. `platforms` empty means this machine."""

    python: str  # "3.11"
    platforms: tuple[str, ...]
    label: str  # platform part of file names: linux_x86_64, manylinux_2_34_x86_64, win_amd64
    explicit_platform: bool = False  # given with --platform (not this machine's)

    @property
    def cp(self) -> str:
        return "cp" + self.python.replace(".", "")

    @property
    def key(self) -> str:
        return f"{self.cp}-{self.label}"

    @property
    def native(self) -> bool:
        return not self.platforms and self.python == _running_python()

    @property
    def lock(self) -> Path:
        return LOCKS / f"{self.key}.lock"

    @property
    def os_family(self) -> str:
        return os_family(self.label)

    def pip_args(self) -> list[str]:
        """Arguments that make `pip download` pick wheels for this target."""
        args = ["--only-binary=:all:"]
        for plat in self.platforms:
            args += ["--platform", plat]
        if not self.native:
            args += ["--python-version", self.python, "--implementation", "cp"]
        return args


def _running_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def os_family(platform_tag: str) -> str:
    if platform_tag.startswith(("win", "Windows")):
        return "windows"
    if platform_tag.startswith("macosx"):
        return "macos"
    return "linux"


def expand_platform(tag: str) -> tuple[str, ...]:
    """All the tags a target with this platform accepts, newest first.

    pip takes `--platform manylinux_2_34_x86_64` literally: only wheels tagged exactly so
    match, not the older manylinux_2_28 or manylinux2014 wheels a glibc 2.34 system also runs.
    So a manylinux_2_N tag is expanded to every 2_M (M <= N, down to 2_17) plus the legacy
    aliases, as pip does for the machine it runs on.
    """
    m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", tag)
    legacy = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
    m2 = re.fullmatch(r"(manylinux2014|manylinux2010|manylinux1)_(\w+)", tag)
    if m2:
        m = re.fullmatch(r"manylinux_2_(\d+)_(\w+)", f"manylinux_2_{legacy[m2[1]]}_{m2[2]}")
    if not m:
        return (tag,)
    glibc, arch = int(m[1]), m[2]
    tags = [f"manylinux_2_{minor}_{arch}" for minor in range(glibc, 4, -1)]
    for alias, minor in legacy.items():
        if minor <= glibc:
            tags.append(f"{alias}_{arch}")
    return tuple(tags)


def make_target(platform: str | None, python: str | None) -> Target:
    python = python or _running_python()
    if not re.fullmatch(r"3\.\d+", python):
        raise SystemExit(f"--python-version must look like 3.11, not {python!r}")
    if platform:
        return Target(python, expand_platform(platform), platform, explicit_platform=True)
    label = sysconfig.get_platform().replace("-", "_").replace(".", "_")
    if python != _running_python():
        # Another Python on this machine's platform: name the platform the way wheels do.
        platforms = tuple(_native_platform_tags())
        return Target(python, platforms, label)
    return Target(python, (), label)


def _native_platform_tags() -> list[str]:
    """Platform tags this machine accepts (pip's own list, from its vendored `packaging`)."""
    from pip._vendor.packaging import tags  # pip is there: we drive it anyway

    seen: list[str] = []
    for tag in tags.sys_tags():
        if tag.platform not in seen and tag.platform != "any":
            seen.append(tag.platform)
    return seen


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: tuple[str, ...]


def read_lock(path: Path) -> tuple[dict[str, str], list[Pin]]:
    """(header fields, pins) of a lock written by lock.py."""
    header: dict[str, str] = {}
    pins: list[Pin] = []
    text = path.read_text(encoding="utf-8").replace("\\\n", " ")
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#"):
            m = re.match(r"#\s*([a-z-]+):\s*(.*)", line)
            if m and not pins:
                header[m[1]] = m[2].strip()
            continue
        if not line:
            continue
        m = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)\s+(.*)", line)
        if not m:
            raise SystemExit(f"{path}: cannot read the line {raw!r}")
        hashes = tuple(re.findall(r"--hash=sha256:([0-9a-f]{64})", m[3]))
        if not hashes:
            raise SystemExit(f"{path}: {m[1]} has no --hash=sha256")
        pins.append(Pin(canonical(m[1]), m[2], hashes))
    return header, pins


def format_pin(pin: Pin, comment: str = "") -> str:
    lines = [f"{pin.name}=={pin.version}"]
    lines += [f"    --hash=sha256:{h}" for h in pin.hashes]
    text = " \\\n".join(lines)
    return f"# {comment}\n{text}\n" if comment else f"{text}\n"
