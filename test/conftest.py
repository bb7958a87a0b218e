"""Shared fixtures: one simulator per test module (building the scene costs ~0.3 s), torch on one thread."""

from __future__ import annotations

import os

import pytest

# ROS 2 traffic stays on loopback in every test process (DDS multicasts off the machine otherwise).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# Set before torch loads OpenMP: busy-waiting threads slow torch 2-5x on two shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test: with two cores shared with other jobs, OpenMP spin-waiting across
    threads is far slower than one thread."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def bullet_env():
    from sim_bridge.bullet.env import BulletBackend

    env = BulletBackend()
    yield env
    env.close()
