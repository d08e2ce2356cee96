#!/usr/bin/env bash
# Builds every shipped model from simulator renders (torch on the CPU, OpenVINO IR, NNCF INT8),
# with each script's default settings. Takes about 1.5-2 hours on 2 idle cores.
#   .venv/bin/pip install -e '.[models]' && models/build_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" models/build_inspection.py
"$PY" models/build_severity.py
"$PY" models/build_checkout.py
"$PY" models/build_surveillance.py
