#!/usr/bin/env bash
# The demo: sets up what it needs, then runs the simulated inspection line, or with --use-case checkout
# the self-checkout (edge-agent demo --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/edge-agent demo "$@"
