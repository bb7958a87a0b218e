"""Furniture tasks (open_drawer, put_item_in_drawer, put_money_in_safe, turn_tap): RLBench's variation
schemes, success only for the named drawer/shelf/handle (and, for the safe, with nothing held), the drawer and
safe geometry, and the scripted demos succeeding."""

from __future__ import annotations

import numpy as np
import pybullet as p
import pytest
from scipy.spatial.transform import Rotation

from sim_bridge.bullet.env import BulletBackend, BulletConfig
from sim_bridge.errors import UnknownVariationError
from sim_bridge.tasks import furniture
from sim_bridge.tasks.base import TABLE_HEIGHT, make_task
from sim_bridge.tasks.open_drawer import OPENED_AT
from sim_bridge.tasks.put_item_in_drawer import ITEM_HALF
from sim_bridge.tasks.put_money_in_safe import MONEY_HALF
from sim_bridge.tasks.turn_tap import OPTIONS, TURNED_AT

TASKS = ("open_drawer", "put_item_in_drawer", "put_money_in_safe")


@pytest.fixture(scope="module")
def env():
    backend = BulletBackend(BulletConfig(cameras=()))  # no rendering: these tests check physics only
    yield backend
    backend.close()


def _run_demo(env) -> None:
    for waypoint in env.task.demo():
        env.follow(waypoint)


def _set_opening(env, level: int, opening: float) -> None:
    p.resetJointState(env.task.cabinet.body, level, opening, physicsClientId=env.client)


def _teleport(env, body: int, position) -> None:
    p.resetBasePositionAndOrientation(body, list(position), [0, 0, 0, 1], physicsClientId=env.client)


def test_variation_schemes_follow_rlbench():
    assert furniture.LEVELS == ("bottom", "middle", "top")
    for name in TASKS:
        task = make_task(name)
        assert task.variation_count() == 3
        with pytest.raises(UnknownVariationError):
            task.setup(None, 3)  # type: ignore[arg-type]
    assert make_task("open_drawer").descriptions(0)[0] == "open the bottom drawer"
    assert make_task("open_drawer").descriptions(2)[1] == "grip the top handle and pull the top drawer open"
    assert make_task("put_item_in_drawer").descriptions(1)[0] == "put the item in the middle drawer"
    assert (
        make_task("put_money_in_safe").descriptions(2)[0] == "put the money away in the safe on the top shelf"
    )
    assert OPTIONS == ("left", "right")
    assert make_task("turn_tap").variation_count() == 2
    assert make_task("turn_tap").descriptions(1)[0] == "turn right tap"


def test_pitched_quaternion_points_the_tool_axis_and_keeps_fingers_horizontal():
    for azimuth, pitch in [(0.0, np.pi / 2), (0.4, np.radians(60)), (-1.2, np.radians(45))]:
        m = Rotation.from_quat(furniture.pitched_quaternion(azimuth, pitch)).as_matrix()
        np.testing.assert_allclose(m[:, 2], furniture.tool_axis(azimuth, pitch), atol=1e-9)
        assert abs(m[2, 1]) < 1e-9  # fingers close along a horizontal line
    # Straight down with zero azimuth is the base module's top-down grasp.
    from sim_bridge.tasks.base import top_down_quaternion

    q = furniture.pitched_quaternion(0.0, np.pi / 2)
    assert abs(abs(np.dot(q, top_down_quaternion(0.0))) - 1.0) < 1e-9


def test_build_safe_rejects_a_bad_door_side(env):
    env.reset("put_money_in_safe", 0, 0)
    with pytest.raises(ValueError, match="door_side"):
        furniture.build_safe(env.client, furniture.Frame((0.4, 0.0), 0.0), door_side=0)


def test_cabinet_faces_the_robot_and_handles_move_with_their_drawer(env):
    env.reset("open_drawer", 1, 3)
    cabinet = env.task.cabinet
    handles = [cabinet.handle_position(k) for k in range(3)]
    base = np.array([*furniture.ROBOT_BASE_XY, TABLE_HEIGHT])
    centre = cabinet.frame.to_world(np.zeros(3))
    for h in handles:  # handles stand in front of the cabinet, on the robot's side
        assert np.linalg.norm((h - base)[:2]) < np.linalg.norm((centre - base)[:2])
    assert handles[0][2] < handles[1][2] < handles[2][2]
    _set_opening(env, 1, 0.12)
    moved = cabinet.handle_position(1)
    np.testing.assert_allclose(moved, handles[1] - 0.12 * cabinet.frame.inward, atol=1e-6)
    # The link really moved as much as the joint says.
    pos, _ = cabinet.drawer_pose(1)
    assert abs(np.dot(pos - cabinet.frame.to_world(np.array([0, 0, cabinet.spec.drawer_bottom(1)])),
                      -cabinet.frame.inward) - 0.12) < 1e-6  # fmt: skip


def test_open_drawer_success_needs_the_named_drawer(env):
    env.reset("open_drawer", 2, 5)
    assert not env.success()
    _set_opening(env, 0, 0.2)
    _set_opening(env, 1, 0.2)
    assert not env.success()  # the wrong drawers
    _set_opening(env, 2, OPENED_AT - 0.02)
    assert not env.success()  # not far enough
    _set_opening(env, 2, OPENED_AT + 0.02)
    assert env.success()


def test_put_item_success_needs_the_item_inside_the_named_drawer(env):
    env.reset("put_item_in_drawer", 0, 7)
    task = env.task
    assert not env.success()
    for level in range(3):
        _set_opening(env, level, 0.2)
    inside = [task.cabinet.exposed_drawer_centre(k) + [0, 0, ITEM_HALF + 0.002] for k in range(3)]
    _teleport(env, task.item, inside[1])
    assert not env.success()  # the middle drawer, not the bottom one
    _teleport(env, task.item, inside[0] + [0, 0, 0.1])
    assert not env.success()  # above the drawer, not in it
    _teleport(env, task.item, inside[0])
    assert env.success()


def test_put_money_success_needs_the_named_shelf_and_an_open_gripper(env):
    env.reset("put_money_in_safe", 1, 4)
    task = env.task
    assert not env.success()
    on = [task.safe.shelf_entry(k, 0.1, MONEY_HALF[2] + 0.002) for k in range(3)]
    _teleport(env, task.money, on[0])
    assert not env.success()  # the bottom shelf
    _teleport(env, task.money, task.safe.shelf_entry(1, -0.1, MONEY_HALF[2] + 0.002))
    assert not env.success()  # in front of the safe
    _teleport(env, task.money, on[1])
    assert env.success()
    env.robot.attach(task.money)
    try:
        assert not env.success()  # still held
    finally:
        env.robot.release()


def test_turn_tap_success_needs_the_named_handle_turned_a_quarter(env):
    env.reset("turn_tap", 0, 9)
    task = env.task
    assert not env.success()
    assert p.getNumJoints(task.tap, physicsClientId=env.client) == 2
    # The left handle (link 0) sits on the robot's left (+y of the tap's frame facing the robot).
    left, right = (np.asarray(p.getLinkState(task.tap, j, physicsClientId=env.client)[4]) for j in (0, 1))
    forward = furniture.tool_axis(task.yaw, 0.0)
    assert np.cross(forward, left - right)[2] > 0
    p.resetJointState(task.tap, 1, 2.0, physicsClientId=env.client)
    assert not env.success()  # the right handle
    p.resetJointState(task.tap, 0, TURNED_AT - 0.1, physicsClientId=env.client)
    assert not env.success()  # not far enough
    p.resetJointState(task.tap, 0, -(TURNED_AT + 0.05), physicsClientId=env.client)
    assert env.success()  # either direction counts


@pytest.mark.parametrize(("name", "variation", "seed"), [
    ("open_drawer", 0, 11), ("put_item_in_drawer", 1, 12), ("put_money_in_safe", 2, 13), ("turn_tap", 1, 14),
])  # fmt: skip
def test_scripted_demo_succeeds_and_touches_only_the_target(env, name, variation, seed):
    env.reset(name, variation, seed)
    assert not env.success()
    _run_demo(env)
    assert env.success()
    if name == "turn_tap":
        other = env.scene.joint_position(env.task.tap, 1 - variation)
        assert abs(other) < 0.05
    elif name != "put_money_in_safe":
        openings = [env.task.cabinet.opening(k) for k in range(3)]
        assert openings[variation] > OPENED_AT
        assert all(o < 0.02 for k, o in enumerate(openings) if k != variation)
