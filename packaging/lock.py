#!/usr/bin/env python3
"""Regenerate packaging/locks/<target>.lock: every runtime dependency, pinned and hashed.

    python3 packaging/lock.py                                   # this machine's Python/platform
    python3 packaging/lock.py --python-version 3.12 --platform manylinux_2_34_x86_64
    python3 packaging/lock.py --check                           # exit 1 if a lock is stale

How: `pip download --only-binary=:all:` resolves pyproject's [project] dependencies (plus pip,
which install.sh bootstraps) for the target into a scratch folder, then each downloaded
wheel is hashed. Plain pip, not pip-tools or uv: pip is on every machine that builds or
installs, it reads the same index configuration as the rest of the build, and the hashes are
those of the very files that go into the bundle. The price: pip evaluates environment
markers for the machine it runs on, so the lock for Windows or macOS must be made there
(this script refuses to do it from another OS rather than write a wrong lock).
A universal, multi-OS lock would need `uv pip compile --universal --generate-hashes`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BOOTSTRAP,
    LOCKS,
    Pin,
    Target,
    WheelName,
    dependencies,
    dependencies_digest,
    format_pin,
    make_target,
    os_family,
    read_lock,
    sha256_file,
)


def running_os() -> str:
    return {"win32": "windows", "darwin": "macos"}.get(sys.platform, "linux")


def resolve(target: Target, scratch: Path) -> list[Pin]:
    cmd = [
        sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
        "--dest", str(scratch), *target.pip_args(), *dependencies(), *BOOTSTRAP,
    ]  # fmt: skip
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    pins: dict[str, Pin] = {}
    for path in sorted(scratch.iterdir()):
        wheel = WheelName.parse(path.name)
        if wheel.name in pins:
            raise SystemExit(f"two files for {wheel.name}: resolve by hand")
        pins[wheel.name] = Pin(wheel.name, wheel.version, (sha256_file(path),))
    return [pins[name] for name in sorted(pins)]


def write_lock(target: Target, pins: list[Pin]) -> Path:
    header = [
        f"# Hash-pinned runtime dependencies of safeguard-desktop for {target.key}.",
        "# Made by packaging/lock.py (pip download, then sha256 of each wheel); do not edit.",
        f"# regenerate: python3 packaging/lock.py{_cli_args(target)}",
        f"# target: {target.key}",
        f"# python: {target.python}",
        f"# platform: {target.label}",
        f"# pip-platforms: {' '.join(target.platforms) or '(the machine that made this lock)'}",
        f"# dependencies-digest: {dependencies_digest()}",
        f"# dependencies: {'; '.join(dependencies())}",
        f"# bootstrap: {' '.join(BOOTSTRAP)} (install.sh installs it first, from this lock)",
        "",
    ]
    body = "".join(format_pin(pin) for pin in pins)
    LOCKS.mkdir(parents=True, exist_ok=True)
    target.lock.write_text("\n".join(header) + "\n" + body, encoding="utf-8")
    return target.lock


def _cli_args(target: Target) -> str:
    if target.native:
        return ""
    args = f" --python-version {target.python}"
    return args + (f" --platform {target.label}" if target.explicit_platform else "")


def stale_locks() -> list[str]:
    problems = []
    digest = dependencies_digest()
    for lock in sorted(LOCKS.glob("*.lock")):
        header, _ = read_lock(lock)
        if header.get("dependencies-digest") != digest:
            problems.append(
                f"{lock}: made for other dependencies than pyproject.toml has now; "
                f"regenerate it: {header.get('regenerate', 'python3 packaging/lock.py')}"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--platform", help="a wheel platform tag (default: this machine)")
    parser.add_argument("--python-version", help="X.Y (default: the Python running this)")
    parser.add_argument("--check", action="store_true", help="only report stale locks")
    parser.add_argument(
        "--force", action="store_true", help="lock for another OS anyway (markers will be wrong)"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = stale_locks()
        for problem in problems:
            print(problem, file=sys.stderr)
        if not problems:
            print(f"{len(list(LOCKS.glob('*.lock')))} lock(s) match pyproject.toml")
        return 1 if problems else 0
    target = make_target(args.platform, args.python_version)
    if os_family(target.label) != running_os() and not args.force:
        raise SystemExit(
            f"{target.label} is a {os_family(target.label)} platform and this is {running_os()}: "
            "pip would evaluate dependency markers for this OS and write a wrong lock. "
            "Run packaging/lock.py on that OS (or pass --force knowingly)."
        )
    with tempfile.TemporaryDirectory(prefix="sgd-lock-") as tmp:
        pins = resolve(target, Path(tmp))
    path = write_lock(target, pins)
    print(f"wrote {path} ({len(pins)} wheels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
