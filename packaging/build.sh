#!/bin/sh
# Build the standalone Safeguard Desktop (no Python needed on the target) with PyInstaller.
#
# Usage: sh packaging/build.sh [OUT]          (default OUT: build/pyinstaller in the checkout)
# Environment: PYTHON=python3.11 picks the Python to build with (the one the app will carry).
#
# 1. OUT/venv: a virtual environment of its own (PyInstaller never becomes a dependency of
#    the project), with the runtime dependencies from packaging/locks/<target>.lock
#    (hash-checked), the app itself (a normal install, so its data files are collected) and
#    PyInstaller 6.
# 2. OUT/dist/safeguard-desktop/: the one-folder app from packaging/safeguard-desktop.spec.
# 3. A smoke test: the binary prints --version with Qt offscreen.
# 4. OUT/safeguard-desktop-<version>-<platform>-standalone.tar.gz and its .sha256.
# Needs the package index (or pip's cache) for step 1. Run it on each OS you ship for.
set -eu

ROOT=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
OUT=${1:-$ROOT/build/pyinstaller}
PY=${PYTHON:-python3}
PYINSTALLER='pyinstaller>=6.10,<7'
START=$(date +%s)

say() { printf 'build.sh: %s\n' "$*"; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

LOCK=$("$PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import _common as c
t = c.make_target(None, None); print(t.lock)' "$ROOT/packaging")
[ -f "$LOCK" ] || die "no lock $LOCK for this Python/platform: run $PY packaging/lock.py"
"$PY" "$ROOT/packaging/lock.py" --check >/dev/null || die "a lock is stale: $PY packaging/lock.py --check"

mkdir -p "$OUT"
OUT=$(CDPATH='' cd -- "$OUT" && pwd)
VENV=$OUT/venv
STAMP=$VENV/.locked-with
WANT=$(cat "$LOCK" "$ROOT/packaging/build.sh" | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  say "creating $VENV"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --require-hashes -r "$LOCK"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$PYINSTALLER"
  echo "$WANT" > "$STAMP"
fi
# The app itself, every time (its code changes more often than the lock).
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall "$ROOT"
VERSION=$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("safeguard-desktop"))')
say "PyInstaller $("$VENV/bin/pyinstaller" --version), safeguard-desktop $VERSION"

rm -rf "$OUT/dist/safeguard-desktop"
"$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
  --distpath "$OUT/dist" --workpath "$OUT/work" "$ROOT/packaging/safeguard-desktop.spec"

APP=$OUT/dist/safeguard-desktop/safeguard-desktop
[ -x "$APP" ] || die "PyInstaller finished but $APP is missing"
QT_QPA_PLATFORM=offscreen "$APP" --version || die "the built app does not start"

PLATFORM=$("$PY" -c 'import sysconfig; print(sysconfig.get_platform())')
ARCHIVE=$OUT/safeguard-desktop-$VERSION-$PLATFORM-standalone.tar.gz
tar -C "$OUT/dist" -czf "$ARCHIVE" safeguard-desktop
( cd "$OUT" && sha256sum "$(basename "$ARCHIVE")" > "$(basename "$ARCHIVE").sha256" )

say "built $OUT/dist/safeguard-desktop ($(du -sh "$OUT/dist/safeguard-desktop" | cut -f1)) in $(( $(date +%s) - START )) s"
say "archive $ARCHIVE ($(du -h "$ARCHIVE" | cut -f1))"
say "run it: $APP   (sign it: safeguard-desktop sign $ARCHIVE --key KEY)"
