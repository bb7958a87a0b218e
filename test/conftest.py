"""Shared fixtures: one simulator per test module (building the scene costs ~0.3 s), torch on one thread, and
the golden-output files of test/golden/ with the scripts that make them."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# ROS 2 traffic stays on loopback in every test process (DDS multicasts off the machine otherwise).
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
# Set before torch loads OpenMP: busy-waiting threads slow torch 2-5x on two shared cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Nodes and bringups started by the tests die with this process (node_runtime.follow_parent):
# a killed test run leaves no bridge publishing in the background.
os.environ["MIRROR_PARENT_PID"] = str(os.getpid())


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


GOLDEN_SCRIPT = Path(__file__).resolve().parent / "golden" / "make_golden.py"


@pytest.fixture(scope="session")
def golden_script():
    """test/golden/make_golden.py as a module (its seeded models and inputs), loaded from its file as the
    regeneration command runs it."""
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def golden(golden_script):
    """``golden(name)`` -> (stored, current): the outputs in the golden file of ``name`` (viclip, arp) and the
    same outputs computed now."""
    from safetensors.torch import load_file

    def stored_and_current(name: str) -> tuple[dict, dict]:
        path, compute = golden_script.GOLDEN[name]
        return load_file(str(path)), compute()

    return stored_and_current


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` need CUDA: without it they are skipped with that reason (listed by ``-ra``), so a
    machine without a GPU, CI included, shows them as skipped, never as passed."""
    gpu_tests = [item for item in items if "gpu" in item.keywords]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (no GPU on this machine)")
    for item in gpu_tests:
        item.add_marker(skip)
