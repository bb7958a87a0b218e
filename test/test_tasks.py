"""Every registered task: RLBench instructions for all variations, reproducible layouts, and a scripted demo
that succeeds and whose PerAct keyframes are exactly its waypoints."""

from __future__ import annotations

import numpy as np
import pytest

from sim_bridge.dataset import discover_keyframes
from sim_bridge.tasks import TASKS, make_task

TASK_NAMES = sorted(TASKS)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_instructions_cover_every_variation(name):
    task = make_task(name)
    canonical = []
    for v in range(task.variation_count()):
        descriptions = task.descriptions(v)
        assert descriptions and all(isinstance(d, str) and d.strip() for d in descriptions)
        canonical.append(descriptions[0])
    # Variations differ in what they ask for (RLBench's push_buttons repeats "push the maroon button" across
    # its single-button variations, so distinctness is not required of every pair).
    assert task.variation_count() == 1 or len(set(canonical)) > 1


@pytest.mark.slow  # ~2 minutes for the 18 tasks
@pytest.mark.parametrize("name", TASK_NAMES)
def test_demo_succeeds_and_keyframes_match_waypoints(bullet_env, name):
    seed = 100 + TASK_NAMES.index(name)
    variation = seed % bullet_env.variation_count(name)
    _, first = bullet_env.reset(name, variation, seed)
    assert not bullet_env.success(), "task is solved before anything happened"
    frames = bullet_env.demo()
    assert bullet_env.success()
    assert discover_keyframes(frames) == bullet_env.demo_waypoint_frames
    # Same seed, same layout (to 0.1 mm: objects settle under physics whose solver state the demo changed).
    _, again = bullet_env.reset(name, variation, seed)
    assert np.allclose(first.task_low_dim_state, again.task_low_dim_state, atol=1e-4)
