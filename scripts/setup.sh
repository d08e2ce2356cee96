#!/usr/bin/env bash
# Sets up a checkout on Debian/Ubuntu: mosquitto, ffmpeg and systemd-analyze (apt), a venv in .venv, and the
# Python packages.
# Idempotent: a second run only checks. Usage: scripts/setup.sh [EXTRA ...], e.g. scripts/setup.sh models
# (the pyproject extras to install besides test; models = torch + NNCF, for building models only).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)  # serves the camera streams in the tests
command -v socat >/dev/null 2>&1 || need_apt+=(socat)  # the Modbus RTU test runs over a socat pty pair
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)  # checks the service unit (tests, CI)
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; assert (3, 10) <= sys.version_info[:2] <= (3, 12)' 2>/dev/null; then
  echo "setup: edge-agent needs Python 3.10 to 3.12 ($PYTHON is $("$PYTHON" --version 2>&1 || echo missing))." >&2
  echo "       Set PYTHON=/path/to/python3.11 or install one: sudo apt-get install -y python3 python3-venv" >&2
  exit 1
fi
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)

if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO="none"; fi
  if [ "$SUDO" = none ]; then
    echo "setup: missing Debian packages: ${need_apt[*]}. As root run: apt-get update && apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${need_apt[*]} with apt-get"
  $SUDO apt-get update -qq || { echo "setup: apt-get update failed; run: sudo apt-get update && sudo apt-get install -y ${need_apt[*]}" >&2; exit 1; }
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null \
    || { echo "setup: could not install ${need_apt[*]}; run: sudo apt-get install -y ${need_apt[*]}" >&2; exit 1; }
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed          # the pyproject.toml that was installed
stamp_extras=.venv/.extras      # and the extras installed with it, one a line
extras=test
for extra in "$@"; do extras="$extras,$extra"; done
missing=""
for extra in ${extras//,/ }; do grep -qx "$extra" "$stamp_extras" 2>/dev/null || missing="$missing $extra"; done
if [ ! -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp" || [ -n "$missing" ]; then
  # Keep the extras installed before (a plain test run must not drop torch from a model-building venv).
  [ -f "$stamp_extras" ] && extras="$extras,$(paste -sd, "$stamp_extras")"
  extras=$(tr ',' '\n' <<<"$extras" | sed '/^$/d' | sort -u | paste -sd,)
  echo "setup: installing Python packages into .venv (extras: $extras)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[$extras]" \
    || { echo "setup: pip install failed (see above); retry: .venv/bin/python -m pip install -e '.[$extras]'" >&2; exit 1; }
  cp pyproject.toml "$stamp"
  tr ',' '\n' <<<"$extras" > "$stamp_extras"
fi
