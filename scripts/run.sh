#!/usr/bin/env bash
# The main command. Sets up .venv, then brings the Mirror stack up on the embedded PyBullet simulator:
# sim_bridge (4 RGB-D cameras over ROS 2), perception (ViCLIP), policy (ARP) and the mirror loop, which
# plays a demonstration, recognizes it live, has the policy perform the recognized instruction in a fresh
# layout, and prints a summary. Uses the shipped checkpoint checkpoints/mirror_cpu_small.
# Extra arguments go to mirror_bringup (e.g. --episodes 10 --task open_drawer; --episodes 0 keeps the
# stack up until Ctrl-C).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh"
cd "$root"
# DDS discovery stays on this machine; a user's own ROS_DOMAIN_ID is kept.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-42}"
export OMP_WAIT_POLICY=PASSIVE
exec .venv/bin/mirror_bringup "$@"
