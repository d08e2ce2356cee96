#!/usr/bin/env bash
# The test command: sets up what it needs, then runs pytest (arguments are passed on).
# The slow soak/fault tests are skipped by default; run them with: scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
