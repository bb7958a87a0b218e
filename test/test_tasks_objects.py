"""Task-specific checks for stack_blocks, slide_block_to_color_target, close_jar and insert_onto_square_peg:
RLBench's variation mapping, scene contents, and success conditions that reject the wrong outcome (teleported
objects) and accept the scripted demo's outcome."""

from __future__ import annotations

import numpy as np
import pybullet as p
import pytest

from sim_bridge.bullet.env import BulletBackend
from sim_bridge.tasks import colors, make_task
from sim_bridge.tasks.close_jar import JAR_HEIGHT, LID_HEIGHT
from sim_bridge.tasks.insert_onto_square_peg import RING_HEIGHT, SPOKES
from sim_bridge.tasks.slide_block_to_color_target import BLOCK_HALF
from sim_bridge.tasks.stack_blocks import CUBE_HALF, PLANE_HALF


@pytest.fixture(scope="module")
def env():
    backend = BulletBackend()
    yield backend
    backend.close()


def _rgb(env: BulletBackend, body: int) -> tuple[float, ...]:
    return tuple(round(c, 3) for c in p.getVisualShapeData(body, physicsClientId=env.client)[0][7][:3])


def _place(env: BulletBackend, body: int, position) -> None:
    p.resetBasePositionAndOrientation(body, list(position), [0, 0, 0, 1], physicsClientId=env.client)
    p.resetBaseVelocity(body, [0, 0, 0], [0, 0, 0], physicsClientId=env.client)


def _settle(env: BulletBackend, steps: int = 120) -> None:
    for _ in range(steps):
        p.stepSimulation(physicsClientId=env.client)


def _run_demo(env: BulletBackend) -> None:
    """The scripted waypoints without camera rendering (fast)."""
    for waypoint in env.task.demo():
        env.follow(waypoint)


# -- variation mappings (RLBench's) ------------------------------------------------------------------------
def test_stack_blocks_variations_follow_rlbench():
    task = make_task("stack_blocks")
    assert task.variation_count() == 60
    assert task.descriptions(0)[0] == "stack 2 red blocks"
    assert task.descriptions(4)[0] == "stack 3 maroon blocks"
    assert task.descriptions(59)[0] == "stack 4 white blocks"
    assert all(len(task.descriptions(v)) == 6 for v in range(60))


def test_slide_block_variations_follow_rlbench():
    task = make_task("slide_block_to_color_target")
    assert task.variation_count() == 4
    firsts = [task.descriptions(v)[0] for v in range(4)]
    assert firsts == [f"slide the block to {c} target" for c in ("green", "blue", "pink", "yellow")]


def test_close_jar_variations_follow_rlbench():
    task = make_task("close_jar")
    assert task.variation_count() == 20
    assert [task.descriptions(v)[0] for v in (0, 19)] == ["close the red jar", "close the white jar"]


def test_insert_onto_square_peg_variations_follow_rlbench():
    task = make_task("insert_onto_square_peg")
    assert task.variation_count() == 20
    assert task.descriptions(3)[0] == "put the ring on the green spoke"


# -- scenes --------------------------------------------------------------------------------------------------
def test_stack_blocks_scene_has_one_distractor_colour(env):
    env.reset("stack_blocks", 14, seed=3)  # blue, 4 blocks
    task = env.task
    assert {_rgb(env, b) for b in task.targets} == {colors.COLORS[4][1]}
    distractor_rgbs = {_rgb(env, b) for b in task.distractors}
    assert len(distractor_rgbs) == 1 and distractor_rgbs != {colors.COLORS[4][1]}
    assert len(task.targets) == len(task.distractors) == 4
    assert not env.success()


def test_close_jar_colours_the_rlbench_jar(env):
    for variation in (6, 7):
        env.reset("close_jar", variation, seed=variation)
        task = env.task
        assert task.target == task.jars[variation % 2]
        band = p.getVisualShapeData(task.target, physicsClientId=env.client)[1][7][:3]
        assert tuple(round(c, 3) for c in band) == colors.COLORS[variation][1]
        assert not env.success()


def test_insert_onto_square_peg_colours_three_distinct_spokes(env):
    env.reset("insert_onto_square_peg", 11, seed=4)
    task = env.task
    assert task.spoke_colors[task.chosen] == 11
    assert len(set(task.spoke_colors)) == SPOKES
    visuals = p.getVisualShapeData(task.base, physicsClientId=env.client)[1:]  # [0] is the base plate
    spoke_rgbs = [tuple(round(c, 3) for c in v[7][:3]) for v in visuals]
    assert spoke_rgbs == [colors.COLORS[c][1] for c in task.spoke_colors]
    assert not env.success()


# -- success conditions --------------------------------------------------------------------------------------
def test_stack_blocks_counts_only_target_blocks_on_the_plane(env):
    env.reset("stack_blocks", 1, seed=5)  # red, 3 blocks
    task = env.task
    plane, _ = task.scene.pose(task.plane)
    base = plane[2] + PLANE_HALF[2] + CUBE_HALF
    for k, body in enumerate(task.distractors[:3]):
        _place(env, body, (plane[0], plane[1], base + 2 * CUBE_HALF * k))
    _settle(env)
    assert not env.success()  # a tower of distractors
    for k, body in enumerate(task.targets[:2] + task.distractors[:1]):
        _place(env, body, (plane[0], plane[1], base + 2 * CUBE_HALF * k))
    for k, body in enumerate(task.distractors[1:3]):
        _place(env, body, (0.6, -0.2 + 0.1 * k, base))  # off the table's spawn area
    _settle(env)
    assert not env.success()  # only two of the three target blocks
    _place(env, task.distractors[0], (0.6, 0.2, base))
    _place(env, task.targets[2], (plane[0], plane[1], base + 4 * CUBE_HALF))
    _settle(env)
    assert env.success()


def test_slide_block_needs_the_named_square(env):
    env.reset("slide_block_to_color_target", 2, seed=1)
    task = env.task
    assert not env.success()
    for k, square in enumerate(task.squares):
        pos, _ = task.scene.pose(square)
        _place(env, task.block, (pos[0], pos[1], pos[2] + BLOCK_HALF[2] + 0.002))
        _settle(env, 24)
        assert env.success() == (k == 2)


def test_close_jar_rejects_the_other_jar_and_a_held_lid(env):
    env.reset("close_jar", 3, seed=2)
    task = env.task
    other = next(j for j in task.jars if j != task.target)
    for jar, expected in ((other, False), (task.target, True)):
        pos, _ = task.scene.pose(jar)
        _place(env, task.lid, (pos[0], pos[1], pos[2] + JAR_HEIGHT / 2 + LID_HEIGHT / 2 + 0.001))
        _settle(env)
        assert env.success() == expected
    env.robot.attach(task.lid)  # still in the hand: not closed yet
    assert not env.success()
    env.robot.release()


def test_insert_onto_square_peg_needs_the_named_spoke(env):
    env.reset("insert_onto_square_peg", 0, seed=6)
    task = env.task
    for k in range(SPOKES):
        foot = task.spoke_position(k)
        _place(env, task.ring, (foot[0], foot[1], foot[2] + RING_HEIGHT / 2 + 0.001))
        _settle(env)
        assert env.success() == (k == task.chosen)
    _place(env, task.ring, (0.05, 0.0, 0.752 + RING_HEIGHT / 2))  # back on the table
    _settle(env)
    assert not env.success()


# -- scripted demos ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("task", "variation", "seed"),
    [
        ("stack_blocks", 28, 11),
        ("slide_block_to_color_target", 3, 4),
        ("close_jar", 12, 8),
        ("insert_onto_square_peg", 17, 9),
    ],
)
def test_demo_succeeds_and_result_is_stable(env, task, variation, seed):
    env.reset(task, variation, seed)
    assert not env.success()
    _run_demo(env)
    assert env.success()
    assert env.task.scene.held_body() is None
    _settle(env, 240)  # one more second: the result must not topple or slide off
    assert env.success()


def test_stack_blocks_demo_stacks_exactly_n_targets(env):
    env.reset("stack_blocks", 6, seed=2)  # lime, 2 blocks
    _run_demo(env)
    assert len(env.task.stacked()) == 2
    heights = sorted(env.task.scene.pose(b)[0][2] for b in env.task.stacked())
    assert np.isclose(heights[1] - heights[0], 2 * CUBE_HALF, atol=0.004)
