"""Shared fixtures: one simulator per test module (building the scene costs ~0.3 s)."""

from __future__ import annotations

import os

import pytest

# ROS 2 traffic stays on loopback in every test process (DDS multicasts off the machine otherwise).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# Set before torch loads OpenMP: busy-waiting threads slow torch 2-5x on two shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="module")
def bullet_env():
    from sim_bridge.bullet.env import BulletBackend

    env = BulletBackend()
    yield env
    env.close()
