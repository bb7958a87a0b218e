#!/usr/bin/env bash
# The test command: sets up .venv, lints, then runs the whole pytest suite (slow end-to-end tests included).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh"
cd "$root"
# ROS 2 traffic stays on this machine; a per-run domain keeps concurrent runs apart.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( (RANDOM % 100) + 100 ))}"
# OpenMP threads that busy-wait make torch 2-5x slower when the two cores are shared with simulators.
export OMP_WAIT_POLICY=PASSIVE
.venv/bin/ruff check .
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests: treating as failure" >&2
  exit 1
fi
exit "$rc"
