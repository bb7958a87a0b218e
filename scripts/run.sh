#!/usr/bin/env bash
# The main command. Sets up .venv, then runs the main job on the embedded simulator.
# Today that job is demonstration generation end to end: one scripted, replay-verified episode of every
# embedded RLBench task, written in RLBench/PerAct layout under data/demos and read back.
# Extra arguments go to generate_demos (e.g. --episodes-per-variation 5 --variations all).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh"
cd "$root"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
.venv/bin/generate_demos --out data/demos --variations 0 --episodes-per-variation 1 --processes 2 "$@"
.venv/bin/python -m sim_bridge.scripts.inspect_dataset data/demos
