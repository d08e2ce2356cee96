#!/bin/sh
# Installs edge-agent from this offline bundle; no network is needed.
#
#   sudo ./install.sh --values device.yaml [--cert client.pem --ca ca.pem] [more provision flags]
#       the venv in /opt/edge-agent/venv, the models in /opt/edge-agent/models, then
#       `edge-agent provision` (user, directories, identity, config, unit) and `edge-agent doctor`
#   ./install.sh --prefix DIR --no-provision
#       only the venv and the models, into DIR (no root needed)
#
# Options: --prefix DIR (default /opt/edge-agent; provisioning needs the default, which the unit
# runs), --python PYTHON (default python3; must be the bundle's version), --no-provision.
# Every other argument goes to `edge-agent provision` (see: edge-agent provision --help).
# Running it again upgrades the venv to this bundle's version and provisions again (idempotent).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
. "$here/bundle.env"
prefix=/opt/edge-agent
python=${PYTHON:-python3}
provision=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    --no-provision) provision=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) break ;;
  esac
done

fail() { echo "install: $*" >&2; exit 1; }

(cd "$here" && sha256sum --check --quiet --strict SHA256SUMS) \
  || fail "the bundle is damaged (SHA256SUMS does not match); copy it again"
machine=$(uname -m)
[ "$machine" = "$ARCH" ] || fail "this bundle is for $ARCH, this machine is $machine"
command -v "$python" >/dev/null 2>&1 || fail "$python not found; install Python $PYTHON_VERSION or pass --python"
have=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$have" = "$PYTHON_VERSION" ] || fail "this bundle's wheels are for Python $PYTHON_VERSION, $python is $have (pass --python)"
if [ "$provision" = 1 ] && [ "$prefix" != /opt/edge-agent ]; then
  fail "provisioning needs --prefix /opt/edge-agent (the unit runs /opt/edge-agent/venv/bin/edge-agent); add --no-provision"
fi

mkdir -p "$prefix"
if [ ! -x "$prefix/venv/bin/python" ]; then
  "$python" -m venv "$prefix/venv" \
    || fail "cannot create a venv; install the venv module (Debian/Ubuntu: apt-get install python$PYTHON_VERSION-venv)"
fi
"$prefix/venv/bin/python" -m pip install --quiet --no-index --find-links "$here/wheels" \
  "edge-agent==$EDGE_AGENT_VERSION" || fail "pip install from $here/wheels failed (see above)"
mkdir -p "$prefix/models"
cp -R "$here/models/." "$prefix/models/"
echo "install: edge-agent $EDGE_AGENT_VERSION in $prefix/venv, models in $prefix/models"

[ "$provision" = 1 ] || exit 0
exec "$prefix/venv/bin/edge-agent" provision \
  --template "$here/provisioning/fleet.template.yaml" \
  --unit "$here/systemd/edge-agent.service" \
  --models-dir "$prefix/models" "$@"
