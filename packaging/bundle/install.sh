#!/bin/sh
# Safeguard Desktop @VERSION@ offline installer (@PLATFORM@, Python @PYTHON@).
#
# Usage: sh install.sh [--desktop] [--key PUB] [TARGET]
#   TARGET     the virtual environment to create
#              (default: ${XDG_DATA_HOME:-~/.local/share}/safeguard-desktop/venv)
#   --desktop  also add a menu entry and icons for this user (~/.local/share)
#   --key PUB  first check SHA256SUMS.sig against the publisher's public key, with a
#              Safeguard Desktop already trusted here (SAFEGUARD_VERIFIER, else on PATH)
# Environment: PYTHON=/path/to/python@PYTHON@ picks the interpreter.
#
# Nothing here touches the network. First every file of the bundle is checked against
# SHA256SUMS (an altered or damaged bundle is refused before anything is written); then a
# virtual environment is created and pip, run from the bundled pip wheel, installs with
# --no-index from ./wheels, each wheel checked against requirements.lock's sha256.
set -eu

VERSION='@VERSION@'
PYVER='@PYTHON@'
HERE=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }

DESKTOP=0
KEY=
while [ $# -gt 0 ]; do
  case $1 in
    --desktop) DESKTOP=1; shift ;;
    --key) [ $# -ge 2 ] || die "--key needs a public key file"; KEY=$2; shift 2 ;;
    --key=*) KEY=${1#--key=}; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
done
[ $# -le 1 ] || die "one TARGET at most (see --help)"
DATA_HOME=${XDG_DATA_HOME:-${HOME:?HOME is not set}/.local/share}
TARGET=${1:-$DATA_HOME/safeguard-desktop/venv}

# 1. A Python of the version the wheels were built for.
pyver() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }
PY=
if [ -n "${PYTHON:-}" ]; then
  HAVE=$(pyver "$PYTHON") || die "PYTHON=$PYTHON does not run"
  [ "$HAVE" = "$PYVER" ] || die "this bundle holds wheels for Python $PYVER, but \
PYTHON=$PYTHON is Python $HAVE (use the bundle built for Python $HAVE)"
  PY=$PYTHON
else
  TRIED=
  for candidate in "python$PYVER" python3 python; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    HAVE=$(pyver "$candidate") || HAVE="(does not run)"
    if [ "$HAVE" = "$PYVER" ]; then PY=$candidate; break; fi
    TRIED="$TRIED $candidate=$HAVE"
  done
  [ -n "$PY" ] || die "this bundle holds wheels for Python $PYVER and found none \
(tried:${TRIED:- nothing on PATH}): install Python $PYVER or set PYTHON=/path/to/python$PYVER"
fi

# 2. With --key: SHA256SUMS signed by the publisher (then every file is, through step 3).
if [ -n "$KEY" ]; then
  [ -f "$KEY" ] || die "no such public key: $KEY"
  VERIFIER=${SAFEGUARD_VERIFIER:-safeguard-desktop}
  command -v "$VERIFIER" >/dev/null 2>&1 || die "--key needs a Safeguard Desktop you \
already trust to check the signature: none on PATH (set SAFEGUARD_VERIFIER=/path/to/it, \
e.g. an earlier install or the standalone build)"
  [ -f "$HERE/SHA256SUMS.sig" ] || die "REFUSED: --key was given but the bundle has no \
SHA256SUMS.sig (it was not signed): nothing was installed"
  "$VERIFIER" verify "$HERE/SHA256SUMS" --key "$KEY" || die "REFUSED: SHA256SUMS is not \
signed by $KEY (see above): nothing was installed"
fi

# 3. Every file against SHA256SUMS, before anything is written.
say "checking every file of the bundle against SHA256SUMS"
"$PY" - "$HERE" <<'PYCHECK' || die "REFUSED: the bundle does not match its SHA256SUMS (see above). It was altered or damaged on the way: nothing was installed. Get a fresh copy and check its signature."
import hashlib, os, sys

root = sys.argv[1]
problems, listed = [], {}
try:
    with open(os.path.join(root, "SHA256SUMS"), encoding="utf-8") as fh:
        lines = fh.read().splitlines()
except (OSError, UnicodeDecodeError) as exc:
    sys.exit(f"install.sh: cannot read SHA256SUMS: {exc}")
for number, line in enumerate(lines, 1):
    digest, sep, name = line.partition("  ")
    name = name.lstrip("*")
    if not line.strip():
        continue
    if not sep or len(digest) != 64 or name.startswith("/") or ".." in name.split("/"):
        problems.append(f"SHA256SUMS line {number} is not '<sha256>  <file>': {line[:80]!r}")
        continue
    listed[name] = digest.lower()
for name, digest in sorted(listed.items()):
    sha = hashlib.sha256()
    try:
        with open(os.path.join(root, name), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                sha.update(block)
    except OSError:
        problems.append(f"missing: {name}")
        continue
    if sha.hexdigest() != digest:
        problems.append(
            f"ALTERED: {name}: its sha256 is {sha.hexdigest()}, SHA256SUMS says {digest}"
        )
for folder, _dirs, files in os.walk(os.path.join(root, "wheels")):
    for file in files:
        rel = os.path.relpath(os.path.join(folder, file), root).replace(os.sep, "/")
        if rel not in listed:
            problems.append(f"not in SHA256SUMS (added?): {rel}")
if not listed:
    problems.append("SHA256SUMS lists no file")
for problem in problems:
    print(f"install.sh: {problem}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"install.sh: {len(listed)} files match SHA256SUMS")
PYCHECK

# 4. The virtual environment (without pip: Debian's python3 may lack ensurepip).
if [ -e "$TARGET" ] && [ ! -f "$TARGET/pyvenv.cfg" ] && [ -n "$(ls -A "$TARGET" 2>/dev/null)" ]; then
  die "$TARGET exists and is not a virtual environment: give another TARGET"
fi
if [ -f "$TARGET/pyvenv.cfg" ]; then
  say "replacing the virtual environment at $TARGET (settings and history live elsewhere)"
  "$PY" -m venv --clear --without-pip "$TARGET"
else
  say "creating a virtual environment at $TARGET"
  mkdir -p "$(dirname -- "$TARGET")"
  "$PY" -m venv --without-pip "$TARGET"
fi
VPY=$TARGET/bin/python
[ -x "$VPY" ] || die "no $VPY after creating the virtual environment"

# 5. pip, from the bundled wheel, installs everything offline and hash-checked. No pip
# configuration or PIP_* variable of this machine applies (no index, find-links, constraints).
set -- "$HERE"/wheels/pip-*.whl
[ $# -eq 1 ] && [ -f "$1" ] || die "the bundle should hold exactly one pip wheel"
PIP_WHEEL=$1
for var in $(env | sed -n 's/^\(PIP_[A-Za-z0-9_]*\)=.*/\1/p'); do unset "$var"; done
PIP_CONFIG_FILE=/dev/null PYTHONNOUSERSITE=1 "$VPY" "$PIP_WHEEL/pip" install \
  --isolated --no-index --find-links "$HERE/wheels" --only-binary=:all: \
  --require-hashes --no-cache-dir --disable-pip-version-check --no-input \
  --progress-bar off -r "$HERE/requirements.lock" \
  || die "pip could not install the bundle into $TARGET (see above); nothing else was changed"

APP=$TARGET/bin/safeguard-desktop
[ -x "$APP" ] || die "pip finished but $APP is missing"
"$APP" --version >/dev/null || die "$APP was installed but does not start (see above)"

# 6. Optional: a menu entry and icons for this user.
if [ "$DESKTOP" = 1 ]; then
  ID='@APP_ID@'
  if [ -d "$HERE/desktop" ]; then
    mkdir -p "$DATA_HOME/applications"
    sed "s|^Exec=safeguard-desktop|Exec=$APP|" "$HERE/desktop/$ID.desktop" \
      > "$DATA_HOME/applications/$ID.desktop"
    for icon in "$HERE"/desktop/icons/hicolor/*/apps/*; do
      rel=${icon#"$HERE/desktop/icons/"}
      mkdir -p "$DATA_HOME/icons/$(dirname -- "$rel")"
      cp "$icon" "$DATA_HOME/icons/$rel"
    done
    mkdir -p "$DATA_HOME/metainfo"
    cp "$HERE/desktop/$ID.metainfo.xml" "$DATA_HOME/metainfo/"
    command -v update-desktop-database >/dev/null 2>&1 \
      && update-desktop-database -q "$DATA_HOME/applications" || true
    say "added the menu entry $DATA_HOME/applications/$ID.desktop"
  else
    say "this bundle has no desktop files; skipped --desktop"
  fi
fi

say "installed Safeguard Desktop $VERSION into $TARGET"
say "start it with: $APP"
say "(or put it on your PATH: ln -s '$APP' ~/.local/bin/safeguard-desktop)"
for model in "$HERE"/models/*; do
  case $model in *.sig) continue ;; esac
  [ -f "$model" ] || continue
  CHECK=
  [ -f "$model.sig" ] && CHECK=" --require-signature ${KEY:-PUBLISHER.pub}"
  say "a model bundle came along; import it with:"
  say "  $APP models import-bundle '$model'$CHECK"
done
