"""Pick-and-place tasks (meat_off_grill, put_groceries_in_cupboard, place_wine_at_rack_location,
reach_and_drag): RLBench's variation schemes, success only for the named target and with nothing held, and
the scripted demos succeeding."""

from __future__ import annotations

import numpy as np
import pybullet as p
import pytest

from sim_bridge.errors import UnknownVariationError
from sim_bridge.tasks import colors
from sim_bridge.tasks.base import TABLE_HEIGHT, make_task
from sim_bridge.tasks.meat_off_grill import MEAT, SIDE_CENTRE
from sim_bridge.tasks.place_wine_at_rack_location import CRADLED_AXIS, LOCATIONS, SLOT_Y
from sim_bridge.tasks.put_groceries_in_cupboard import GROCERIES, GROCERY_NAMES
from sim_bridge.tasks.reach_and_drag import CUBE_HALF

TASKS = ("meat_off_grill", "put_groceries_in_cupboard", "place_wine_at_rack_location", "reach_and_drag")


def _teleport(env, body: int, position, quaternion=(0.0, 0.0, 0.0, 1.0)) -> None:
    p.resetBasePositionAndOrientation(body, list(position), list(quaternion), physicsClientId=env.client)


def _run_demo(env) -> None:
    for waypoint in env.task.demo():
        env.follow(waypoint)  # no frame callback: nothing is rendered


def test_variation_schemes_follow_rlbench():
    assert MEAT == ("chicken", "steak")
    assert GROCERY_NAMES == (
        "crackers", "chocolate jello", "strawberry jello", "soup", "tuna", "spam",
        "coffee", "mustard", "sugar",
    )  # fmt: skip
    assert LOCATIONS == ("middle", "left", "right")
    counts = {name: make_task(name).variation_count() for name in TASKS}
    assert counts == {
        "meat_off_grill": 2,
        "put_groceries_in_cupboard": 9,
        "place_wine_at_rack_location": 3,
        "reach_and_drag": 20,
    }
    assert make_task("meat_off_grill").descriptions(1)[0] == "take the steak off the grill"
    assert (
        make_task("put_groceries_in_cupboard").descriptions(1)[0] == "put the chocolate jello in the cupboard"
    )
    assert (
        make_task("place_wine_at_rack_location").descriptions(2)[0]
        == "stack the wine bottle to the right of the rack"
    )
    assert (
        make_task("reach_and_drag").descriptions(15)[0]
        == "use the stick to drag the cube onto the azure target"
    )
    for name in TASKS:
        task = make_task(name)
        for v in range(task.variation_count()):
            texts = task.descriptions(v)
            assert len(texts) >= 3 and len(set(texts)) == len(texts)


def test_groceries_fit_the_open_gripper():
    for g in GROCERIES:
        width = 2 * g.size[1] if g.kind == "box" else 2 * g.size[0]
        assert width <= 0.06, g.name  # the open fingers are 7.2 cm apart


@pytest.mark.parametrize("name", TASKS)
def test_bad_variation_is_refused(bullet_env, name):
    count = make_task(name).variation_count()
    with pytest.raises(UnknownVariationError):
        bullet_env.reset(name, count, seed=0)


@pytest.mark.parametrize(("name", "variation", "seed"), [
    ("meat_off_grill", 1, 5), ("put_groceries_in_cupboard", 4, 7),
    ("place_wine_at_rack_location", 2, 3), ("reach_and_drag", 13, 11),
])  # fmt: skip
def test_demo_turns_failure_into_success(bullet_env, name, variation, seed):
    bullet_env.reset(name, variation, seed)
    assert not bullet_env.success()
    _run_demo(bullet_env)
    assert bullet_env.success()
    # RLBench requires an empty hand except in reach_and_drag, whose demo ends holding the stick.
    assert (bullet_env.scene.held_body() is None) == (name != "reach_and_drag")


def test_meat_success_needs_the_named_meat_beside_the_grill_and_released(bullet_env):
    env = bullet_env
    env.reset("meat_off_grill", 0, seed=2)  # chicken
    task = env.task
    side = task._grill_to_world(np.asarray(SIDE_CENTRE))
    on_table = (*side, TABLE_HEIGHT + 0.03)
    _teleport(env, task.meats["steak"], on_table)
    assert task.in_side_region(task.meats["steak"]) and not env.success()  # the wrong meat
    _teleport(env, task.meats["chicken"], (*side, TABLE_HEIGHT + 0.2))
    assert not env.success()  # above the spot, not on the table
    _teleport(env, task.meats["chicken"], on_table)
    assert env.success()
    env.robot.attach(task.meats["chicken"])
    try:
        assert not env.success()  # RLBench's NothingGrasped
    finally:
        env.robot.release()


def test_groceries_success_needs_the_named_item_inside(bullet_env):
    env = bullet_env
    env.reset("put_groceries_in_cupboard", 6, seed=4)  # coffee
    task = env.task
    inside = task.from_cupboard(np.array([0.08, 0.0, 0.06]))
    other = task.items[0]
    _teleport(env, other, inside)
    assert task.in_cupboard(other) and not env.success()
    _teleport(env, other, task.from_cupboard(np.array([0.08, 0.0, -0.3])))  # below the cupboard
    _teleport(env, task.target, task.from_cupboard(np.array([-0.1, 0.0, 0.06])))  # in front of it
    assert not env.success()
    _teleport(env, task.target, inside)
    assert env.success()


def test_wine_success_needs_the_named_cradle(bullet_env):
    env = bullet_env
    env.reset("place_wine_at_rack_location", 1, seed=6)  # left
    task = env.task
    along = p.getQuaternionFromEuler([0.0, 0.0, task.rack_yaw])
    for where in LOCATIONS:
        _teleport(env, task.bottle, task.from_rack(np.array([0.0, SLOT_Y[where], CRADLED_AXIS])), along)
        assert task.cradled_in() == where
        assert env.success() == (where == "left")
    across = p.getQuaternionFromEuler([0.0, 0.0, task.rack_yaw + np.pi / 2])
    _teleport(env, task.bottle, task.from_rack(np.array([0.0, SLOT_Y["left"], CRADLED_AXIS])), across)
    assert not env.success()  # lying across the rails is not in the cradle


def test_drag_success_needs_the_target_colour(bullet_env):
    env = bullet_env
    env.reset("reach_and_drag", 3, seed=9)
    task = env.task
    rgba = p.getVisualShapeData(task.target, physicsClientId=env.client)[0][7]
    assert np.allclose(rgba[:3], colors.COLORS[3][1])
    distractor_rgbs = [
        p.getVisualShapeData(d, physicsClientId=env.client)[0][7][:3] for d in task.distractors
    ]
    assert [tuple(np.round(c, 3)) for c in distractor_rgbs] == [colors.COLORS[i][1] for i in (8, 9, 10)]
    for patch in task.distractors:
        centre, _ = task.scene.pose(patch)
        _teleport(env, task.cube, (*centre[:2], TABLE_HEIGHT + CUBE_HALF))
        assert task.cube_on(patch) and not env.success()
    _teleport(env, task.cube, (*task.target_xy, TABLE_HEIGHT + CUBE_HALF))
    assert env.success()
