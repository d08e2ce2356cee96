#!/usr/bin/env bash
# Offline checks of a service unit (CI and tests/test_systemd_unit.py):
#   1. `systemd-analyze verify`, in a scratch root that holds this system's units and a stub for
#      every Exec*= program (they are installed only on a device); any warning fails the check;
#   2. `systemd-analyze security --offline=true --threshold=N`: fails above the exposure N.
#      The table shows exposure as 0.0-10.0; --threshold counts in tenths (0-100).
# Usage: systemd/check-unit.sh [UNIT] [EXPOSURE]   (defaults: systemd/edge-agent.service, 3.5)
# Needs systemd-analyze (package systemd); PID 1 need not be systemd.
set -euo pipefail
cd "$(dirname "$0")/.."
unit=${1:-systemd/edge-agent.service}
exposure=${2:-3.5}
threshold=$(awk -v e="$exposure" 'BEGIN { printf "%d", e * 10 + 0.5 }')
name=$(basename "$unit")

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "check-unit: systemd-analyze is missing; install it: sudo apt-get install -y systemd" >&2
  exit 1
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/etc/systemd/system" "$root/usr/lib/systemd"
for dir in /usr/lib/systemd/system /lib/systemd/system; do
  if [ -d "$dir" ]; then cp -a "$dir" "$root/usr/lib/systemd/"; break; fi
done
cp "$unit" "$root/etc/systemd/system/$name"
# Exec*=[-@:+!]/path args...: a stub executable at each path.
sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\(\/[^ ]*\).*/\1/p' "$unit" | while read -r program; do
  mkdir -p "$root$(dirname "$program")"
  printf '#!/bin/sh\n' > "$root$program"
  chmod 755 "$root$program"
done

out=$(systemd-analyze verify --root="$root" "$name" 2>&1) && status=0 || status=$?
if [ "$status" -ne 0 ] || [ -n "$out" ]; then
  echo "check-unit: systemd-analyze verify $unit failed:" >&2
  printf '%s\n' "$out" >&2
  exit 1
fi
echo "check-unit: verify $unit: OK"

if ! report=$(systemd-analyze security --offline=true --threshold="$threshold" "$unit" 2>&1); then
  printf '%s\n' "$report" >&2
  echo "check-unit: $unit is more exposed than $exposure (see the table above)" >&2
  exit 1
fi
printf '%s\n' "$report" | tail -n 1 | sed "s/^/check-unit: /"
