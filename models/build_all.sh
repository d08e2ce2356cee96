#!/usr/bin/env bash
# Builds every shipped model from simulator renders (torch on the CPU, OpenVINO IR, NNCF INT8),
# with the settings on each model card. About 4 hours on the shared 2-core box, most of it the
# surveillance detector (a 7,500 s training budget); run under nice on a shared machine.
#   .venv/bin/pip install -e '.[models]' && models/build_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" models/build_inspection.py
"$PY" models/build_severity.py
"$PY" models/build_checkout.py
"$PY" models/build_surveillance.py --only classifier --cls-budget 3300
"$PY" models/build_surveillance.py --only detector --threads 2
