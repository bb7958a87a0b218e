"""Task-specific checks for light_bulb_in, stack_cups, place_shape_in_shape_sorter, sweep_to_dustpan_of_size
and place_cups: RLBench's variation mappings, and success conditions that hold for the right configuration
and not for near misses (objects are placed by hand, then physics settles them)."""

from __future__ import annotations

import math

import numpy as np
import pybullet as p
import pytest
from scipy.spatial.transform import Rotation

from sim_bridge.tasks import colors, make_task
from sim_bridge.tasks import place_cups as mugs
from sim_bridge.tasks import place_shape_in_shape_sorter as sorter
from sim_bridge.tasks import stack_cups as cups
from sim_bridge.tasks import sweep_to_dustpan_of_size as sweep
from sim_bridge.tasks.base import TABLE_HEIGHT
from sim_bridge.tasks.light_bulb_in import BASE_HEIGHT, SOCKET_FLOOR


def _place(env, body: int, position, yaw: float = 0.0) -> None:
    p.resetBasePositionAndOrientation(
        body, list(position), Rotation.from_euler("z", yaw).as_quat().tolist(), physicsClientId=env.client
    )
    p.resetBaseVelocity(body, [0, 0, 0], [0, 0, 0], physicsClientId=env.client)


def _settle(env, seconds: float = 0.5) -> None:
    for _ in range(int(240 * seconds)):
        p.stepSimulation(physicsClientId=env.client)


def _rgb(env, body: int) -> tuple[float, ...]:
    return tuple(round(c, 3) for c in p.getVisualShapeData(body, physicsClientId=env.client)[0][7][:3])


@pytest.mark.parametrize(
    ("task", "count", "variation", "instruction"),
    [
        ("light_bulb_in", 20, 4, "screw in the blue light bulb"),
        ("stack_cups", 20, 18, "stack the other cups on top of the black cup"),
        ("place_shape_in_shape_sorter", 5, 2, "put the triangular prism in the shape sorter"),
        ("place_shape_in_shape_sorter", 5, 4, "put the moon in the shape sorter"),
        ("sweep_to_dustpan_of_size", 2, 0, "sweep dirt to the tall dustpan"),
        ("sweep_to_dustpan_of_size", 2, 1, "sweep dirt to the short dustpan"),
        ("place_cups", 3, 0, "place 1 cup on the cup holder"),
        ("place_cups", 3, 2, "place 3 cups on the cup holder"),
    ],
)
def test_variation_mapping_follows_rlbench(task, count, variation, instruction):
    t = make_task(task)
    assert t.variation_count() == count
    descriptions = t.descriptions(variation)
    assert descriptions[0] == instruction
    assert len(set(descriptions)) == len(descriptions) >= 2


def test_light_bulb_target_is_the_named_holder_and_must_be_released_in_the_socket(bullet_env):
    env = bullet_env
    for variation in (6, 7):
        env.reset("light_bulb_in", variation, seed=variation)
        task = env.task
        assert task.target_index == variation % 2
        assert _rgb(env, task.holders[task.target_index]) == colors.COLORS[variation][1]
        assert _rgb(env, task.holders[1 - task.target_index]) != colors.COLORS[variation][1]
    assert not env.success()
    seat = (*task.socket_xy, TABLE_HEIGHT + SOCKET_FLOOR + BASE_HEIGHT / 2 + 0.003)
    other = task.bulbs[1 - task.target_index]
    _place(env, other, seat)
    _settle(env)
    assert task.seated(other) and not env.success()  # the wrong bulb
    _place(env, other, (0.0, 0.3, TABLE_HEIGHT + 0.05))
    _place(env, task.target, seat)
    _settle(env)
    assert env.success()
    env.robot.attach(task.target)  # still held: not done
    try:
        assert not env.success()
    finally:
        env.robot.release()


def test_stack_cups_success_needs_both_other_cups_nested_in_the_named_one(bullet_env):
    env = bullet_env
    env.reset("stack_cups", 11, seed=2)
    task = env.task
    assert _rgb(env, task.base) == colors.COLORS[11][1]
    assert all(_rgb(env, c) != colors.COLORS[11][1] for c in task.others)
    assert not env.success()
    base_pos, base_quat = env.scene.pose(task.base)
    yaw = Rotation.from_quat(base_quat).as_euler("xyz")[2]
    first, second = task.others
    _place(env, first, base_pos + [0, 0, cups.NEST_RISE + 0.004], yaw)
    _settle(env)
    assert task.nested(first) and not env.success()  # one cup is not enough
    # Nesting the last cup in the other (non-base) cup is not the asked-for stack.
    other_pos, _ = env.scene.pose(second)
    _place(
        env,
        first,
        other_pos + [0, 0, cups.NEST_RISE + 0.004],
        Rotation.from_quat(env.scene.pose(second)[1]).as_euler("xyz")[2],
    )
    _settle(env)
    assert not env.success()
    _place(env, first, base_pos + [0, 0, cups.NEST_RISE + 0.004], yaw)
    _place(env, second, base_pos + [0, 0, 2 * cups.NEST_RISE + 0.008], yaw)
    _settle(env, 1.0)
    assert env.success()
    # The stack rests where the geometry says (the demo releases cups just above this height).
    assert env.scene.pose(first)[0][2] - base_pos[2] == pytest.approx(cups.NEST_RISE, abs=0.004)


def test_shape_sorter_holes_match_their_shapes():
    rects = np.array(sorter.lid_rectangles())

    def blocked(shape, hole, yaw) -> bool:
        grid = np.linspace(-0.035, 0.035, 71)
        pts = np.stack(np.meshgrid(grid, grid), -1).reshape(-1, 2)
        pts = pts[shape.distance(pts) <= 0.0]
        c, s = math.cos(yaw), math.sin(yaw)
        pts = pts @ np.array([[c, s], [-s, c]]) + np.asarray(hole.hole)
        x, y = pts[:, :1], pts[:, 1:]
        return bool(np.any((x > rects[:, 0]) & (x < rects[:, 1]) & (y > rects[:, 2]) & (y < rects[:, 3])))

    yaws = np.linspace(0.0, 2 * math.pi, 72, endpoint=False)
    for shape in sorter.SHAPES:
        assert not blocked(shape, shape, 0.0), f"{shape.name} does not fit its own hole"
    for name in ("star", "moon", "cube"):
        shape = sorter.SHAPES[sorter.SHAPE_NAMES.index(name)]
        for hole in sorter.SHAPES:
            if hole is not shape:
                assert all(blocked(shape, hole, yaw) for yaw in yaws), f"{name} fits the {hole.name} hole"


def test_shape_falls_into_the_sorter_through_its_own_hole_only(bullet_env):
    env = bullet_env
    star = sorter.SHAPE_NAMES.index("star")
    env.reset("place_shape_in_shape_sorter", star, seed=5)
    task = env.task
    assert not env.success()
    top = TABLE_HEIGHT + sorter.SORTER_HEIGHT + sorter.SHAPE_HEIGHT / 2 + 0.005
    moon_hole = task._to_world(sorter.SHAPES[sorter.SHAPE_NAMES.index("moon")].hole)
    _place(env, task.target, (*moon_hole, top), task.sorter_yaw)
    _settle(env)
    assert not env.success()  # resting on the lid
    _place(env, task.target, (*task._to_world(sorter.SHAPES[star].hole), top), task.sorter_yaw)
    _settle(env)
    assert env.success()


def test_sweep_success_needs_all_dirt_in_the_named_dustpan(bullet_env):
    env = bullet_env
    env.reset("sweep_to_dustpan_of_size", 1, seed=3)
    task = env.task
    assert task.size == sweep.SIZES[1] == "short"
    assert not env.success()

    def fill(size: str, count: int) -> None:
        for i, dirt in enumerate(task.dirt[:count]):
            xy = task._to_world(size, (-0.06 + 0.03 * i, 0.06))
            _place(env, dirt, (*xy, TABLE_HEIGHT + 0.01))
        _settle(env, 0.3)

    fill("tall", len(task.dirt))
    assert all(task.in_pan(d, "tall") for d in task.dirt) and not env.success()
    fill("short", len(task.dirt) - 1)
    assert not env.success()  # one bit left behind
    fill("short", len(task.dirt))
    assert env.success()


def test_broom_never_spawns_inside_a_dustpan(bullet_env):
    """This scene's first broom draw reached into the short pan, and physics pushed it through the table."""
    env = bullet_env
    env.reset("sweep_to_dustpan_of_size", 0, seed=5 * 2**30 + 8)
    task = env.task
    standing = TABLE_HEIGHT + sweep._HEAD_HALF[2]
    assert task.scene.pose(task.broom)[0][2] == pytest.approx(standing, abs=1e-3)
    for pan in task.pans.values():
        assert not p.getClosestPoints(task.broom, pan, sweep._BROOM_CLEARANCE, physicsClientId=env.client)


def test_held_broom_head_passes_the_table_like_bristles(bullet_env):
    env = bullet_env
    env.reset("sweep_to_dustpan_of_size", 0, seed=3)
    task = env.task
    pos, quat = task.scene.pose(task.broom)

    def table_contacts_with_head_pressed_in() -> int:
        p.resetBasePositionAndOrientation(task.broom, pos - [0, 0, 0.005], quat, physicsClientId=env.client)
        p.performCollisionDetection(physicsClientId=env.client)
        return len(p.getContactPoints(task.broom, env.table, physicsClientId=env.client))

    assert table_contacts_with_head_pressed_in() > 0  # standing on the table, it rests on it
    env.robot.attach(task.broom)
    task.on_tick()
    assert table_contacts_with_head_pressed_in() == 0
    env.robot.release()
    task.on_tick()
    assert table_contacts_with_head_pressed_in() > 0


def test_place_cups_counts_mugs_threaded_on_spokes(bullet_env):
    env = bullet_env
    env.reset("place_cups", 1, seed=4)  # two mugs asked for
    task = env.task
    assert task.mugs_on_tree() == 0 and not env.success()
    # A mug right next to a spoke, loop beside it rather than around it, is not on the tree.
    beside = task.threaded_pose(0, 0.1)
    beside[:3, 3] += [0.0, 0.0, mugs.HOLE_HEIGHT]
    p.resetBasePositionAndOrientation(
        task.mugs[0],
        beside[:3, 3].tolist(),
        Rotation.from_matrix(beside[:3, :3]).as_quat().tolist(),
        physicsClientId=env.client,
    )
    assert not task.threaded(task.mugs[0], 0)
    for k in (0, 1):
        pose = task.threaded_pose(k, 0.1)
        p.resetBasePositionAndOrientation(
            task.mugs[k],
            pose[:3, 3].tolist(),
            Rotation.from_matrix(pose[:3, :3]).as_quat().tolist(),
            physicsClientId=env.client,
        )
        _settle(env, 1.0)  # let go: it swings down and hangs from its handle
        assert task.threaded(task.mugs[k], k)
        assert task.mugs_on_tree() == k + 1
        assert env.success() == (k == 1)


def test_screwing_in_the_wrong_bulb_is_not_a_success(bullet_env):
    env = bullet_env
    env.reset("light_bulb_in", 3, seed=1)
    task = env.task
    wanted = task.target
    task.target = task.bulbs[1 - task.target_index]  # the demo fetches the other bulb
    try:
        for waypoint in task.demo():
            env.follow(waypoint)
    finally:
        task.target = wanted
    assert task.seated(task.bulbs[1 - task.target_index])
    assert not env.success()
