"""put_groceries_in_cupboard: nine groceries stand on the table below an open-front wall cupboard; put the
named one in the cupboard (RLBench, 9 variations).

The YCB items are rebuilt as boxes and cylinders of roughly their real sizes, shrunk where needed to fit the
Panda's 8 cm gripper. The demo grasps the item from the robot's side with the tool pitched down (a level
tool would put the hand into the table for short items), lifts it, and slides it into the cupboard.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pybullet as p
from scipy.spatial.transform import Rotation

from sim_bridge.bullet import shapes
from sim_bridge.errors import SimError
from sim_bridge.tasks.base import TABLE_HEIGHT, TOP_DOWN, Task, TaskScene, Waypoint, register


@dataclass(frozen=True)
class Grocery:
    """A grocery item. Boxes: ``size`` = half extents (depth along x, width along y, height); cylinders:
    (radius, height). The width across the fingers stays below 6 cm so the open gripper clears it."""

    name: str
    kind: str  # "box" or "cylinder"
    size: tuple[float, ...]
    rgba: tuple[float, float, float, float]

    @property
    def height(self) -> float:
        return 2 * self.size[2] if self.kind == "box" else self.size[1]

    @property
    def half_depth(self) -> float:
        return self.size[0]

    @property
    def footprint_radius(self) -> float:
        return math.hypot(self.size[0], self.size[1]) if self.kind == "box" else self.size[0]

    def shape(self) -> shapes.Shape:
        if self.kind == "box":
            return shapes.box(self.size, self.rgba)
        return shapes.cylinder(self.size[0], self.size[1], self.rgba)


GROCERIES = (
    Grocery("crackers", "box", (0.055, 0.022, 0.07), (0.85, 0.15, 0.1, 1.0)),
    Grocery("chocolate jello", "box", (0.04, 0.015, 0.033), (0.4, 0.22, 0.1, 1.0)),
    Grocery("strawberry jello", "box", (0.035, 0.013, 0.03), (0.95, 0.45, 0.6, 1.0)),
    Grocery("soup", "cylinder", (0.026, 0.075), (0.85, 0.45, 0.2, 1.0)),
    Grocery("tuna", "cylinder", (0.03, 0.04), (0.35, 0.55, 0.85, 1.0)),
    Grocery("spam", "box", (0.045, 0.024, 0.04), (0.15, 0.3, 0.65, 1.0)),
    Grocery("coffee", "cylinder", (0.03, 0.1), (0.1, 0.12, 0.3, 1.0)),
    Grocery("mustard", "box", (0.04, 0.024, 0.065), (0.95, 0.8, 0.1, 1.0)),
    Grocery("sugar", "box", (0.04, 0.018, 0.06), (0.95, 0.95, 0.92, 1.0)),
)
GROCERY_NAMES = tuple(g.name for g in GROCERIES)

# The cupboard: an open box facing the robot (-x of its own frame), hanging above the tallest grocery.
CUPBOARD_FLOOR = 0.17  # height of the floor's top surface above the table
_WALL = 0.012
INTERIOR_DEPTH, INTERIOR_WIDTH, INTERIOR_HEIGHT = 0.2, 0.38, 0.36
# The tool points this far below the horizontal while grasping and inserting: a level Panda tool cannot
# reach low near its base (joint 6 limit), so the items are gripped by their upper part from above-behind.
_PITCH = 1.0
_APPROACH = 0.08  # pre-grasp height above the grasp point
_LIFT = 0.1  # straight up after the grasp
_PRE_INSERT = 0.1  # pre-insert distance in front of the final pose, along the cupboard axis
_PLACE_DEPTH = 0.08  # item centre inside the cupboard front: deeper would put the wrist into its top


def side_grasp_quaternion(yaw: float, pitch: float = _PITCH) -> np.ndarray:
    """Tool axis pointing along world yaw ``yaw``, tilted ``pitch`` below the horizontal; fingers close
    horizontally. The hand keeps the wrist roll of the top-down pose, which keeps joint 7 mid-range."""
    return (Rotation.from_euler("z", yaw) * Rotation.from_euler("y", pitch - np.pi / 2) * TOP_DOWN).as_quat()


def _planar(yaw: float) -> np.ndarray:
    return np.array([math.cos(yaw), math.sin(yaw), 0.0])


@register
class PutGroceriesInCupboard(Task):
    name = "put_groceries_in_cupboard"

    def variation_count(self) -> int:
        return len(GROCERIES)

    def descriptions(self, variation: int) -> list[str]:
        item = GROCERY_NAMES[variation]
        return [
            f"put the {item} in the cupboard",
            f"pick up the {item} and place it in the cupboard",
            f"move the {item} to the bottom shelf",
            f"put away the {item} in the cupboard",
        ]

    # -- scene ---------------------------------------------------------------------------------------------
    def build(self, scene: TaskScene, variation: int) -> None:
        rng = scene.rng
        # Everything is laid out around the robot base: the side grasp and the insertion are comfortable
        # for the Panda only along its radial direction and between ~0.55 and ~0.8 m from the base.
        self.base_xy = scene.pose(scene.robot.body)[0][:2]
        bearing = float(rng.uniform(-0.25, 0.25))
        self.cupboard_front = self.base_xy + rng.uniform(0.7, 0.74) * _planar(bearing)[:2]
        self.cupboard_yaw = bearing + float(rng.uniform(-0.1, 0.1))
        self.cupboard = scene.track(self._make_cupboard(scene.client))
        self.item_index = variation
        placements = self._place_items(rng, variation)
        self.items: list[int] = []
        for grocery, (xy, yaw) in zip(GROCERIES, placements, strict=True):
            quat = p.getQuaternionFromEuler([0.0, 0.0, yaw])
            body = shapes.create_body(
                scene.client, [grocery.shape()], (*xy, TABLE_HEIGHT + grocery.height / 2), quat, mass=0.15
            )
            self.items.append(scene.track(body))
        self.target = self.items[variation]

    def _make_cupboard(self, client: int) -> int:
        depth, half_w = INTERIOR_DEPTH + _WALL, INTERIOR_WIDTH / 2 + _WALL
        height = INTERIOR_HEIGHT + 2 * _WALL
        white = (0.92, 0.92, 0.9, 1.0)
        # Local frame: origin at the front edge of the floor's top surface, centred; +x into the cupboard.
        floor = shapes.box((depth / 2, half_w, _WALL / 2), white, offset=(depth / 2, 0.0, -_WALL / 2))
        top = shapes.box(
            (depth / 2, half_w, _WALL / 2), white, offset=(depth / 2, 0.0, INTERIOR_HEIGHT + _WALL / 2)
        )
        back = shapes.box(
            (_WALL / 2, half_w, height / 2), white, offset=(depth - _WALL / 2, 0.0, height / 2 - _WALL)
        )
        sides = [
            shapes.box((depth / 2, _WALL / 2, height / 2), white, offset=(depth / 2, s * (half_w - _WALL / 2),
                                                                          height / 2 - _WALL))
            for s in (-1.0, 1.0)
        ]  # fmt: skip
        quat = p.getQuaternionFromEuler([0.0, 0.0, self.cupboard_yaw])
        return shapes.create_body(
            client, [floor, top, back, *sides], (*self.cupboard_front, TABLE_HEIGHT + CUPBOARD_FLOOR), quat
        )

    def _place_items(self, rng: np.random.Generator, target: int) -> list[tuple[np.ndarray, float]]:
        """Random (xy, yaw) per grocery, retried until all fit (RLBench samples them 10 cm apart)."""
        for _ in range(100):
            layout = self._try_layout(rng, target)
            if layout is not None:
                return layout
        raise SimError("could not lay out the groceries on the table")

    def _try_layout(self, rng: np.random.Generator, target: int) -> list[tuple[np.ndarray, float]] | None:
        """The target goes where the radial side grasp is comfortable, its yaw near the radial direction;
        the others keep out of the corridor the hand and forearm sweep between it and the robot, and out
        from under the cupboard."""
        bearing = float(rng.uniform(-0.45, 0.45))
        target_xy = self.base_xy + rng.uniform(0.57, 0.64) * _planar(bearing)[:2]
        target_yaw = bearing + float(rng.uniform(-0.15, 0.15))
        out: list[tuple[np.ndarray, float]] = []
        placed = [(target_xy, GROCERIES[target].footprint_radius)]
        along, across = _planar(target_yaw)[:2], _planar(target_yaw + np.pi / 2)[:2]
        for i, grocery in enumerate(GROCERIES):
            if i == target:
                out.append((target_xy, target_yaw))
                continue
            r = grocery.footprint_radius
            for _ in range(300):
                xy = rng.uniform((-0.1, -0.33), (0.45, 0.33))
                d = xy - target_xy
                in_corridor = -0.45 < d @ along < 0.06 + r and abs(d @ across) < 0.13 + r
                local = self.to_cupboard(np.array([*xy, TABLE_HEIGHT + CUPBOARD_FLOOR]))
                under_cupboard = local[0] > -r - 0.02 and abs(local[1]) < INTERIOR_WIDTH / 2 + r + 0.03
                near_base = np.linalg.norm(xy - self.base_xy) < 0.3
                if not (in_corridor or under_cupboard or near_base) and all(
                    np.linalg.norm(xy - q) > r + rq + 0.015 for q, rq in placed
                ):
                    break
            else:
                return None
            placed.append((xy, r))
            out.append((xy, float(rng.uniform(-np.pi, np.pi))))
        return out

    # -- geometry ------------------------------------------------------------------------------------------
    def to_cupboard(self, position: np.ndarray) -> np.ndarray:
        """A world point in the cupboard frame (origin at the floor's front edge, +x inwards)."""
        c, s = math.cos(self.cupboard_yaw), math.sin(self.cupboard_yaw)
        d = np.asarray(position, dtype=float) - np.array(
            [*self.cupboard_front, TABLE_HEIGHT + CUPBOARD_FLOOR]
        )
        return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2]])

    def from_cupboard(self, local: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.cupboard_yaw), math.sin(self.cupboard_yaw)
        x, y, z = local
        return np.array([*self.cupboard_front, TABLE_HEIGHT + CUPBOARD_FLOOR]) + [
            c * x - s * y,
            s * x + c * y,
            z,
        ]

    def in_cupboard(self, body: int) -> bool:
        """RLBench's cupboard sensor: the item's centre is inside the cupboard's interior."""
        assert self.scene is not None
        local = self.to_cupboard(self.scene.pose(body)[0])
        return bool(
            0.0 < local[0] < INTERIOR_DEPTH
            and abs(local[1]) < INTERIOR_WIDTH / 2
            and 0.0 < local[2] < INTERIOR_HEIGHT
        )

    def graspable(self) -> list[int]:
        return list(self.items)

    def success(self) -> bool:
        assert self.scene is not None
        return self.scene.held_body() is None and self.in_cupboard(self.target)

    # -- demo ----------------------------------------------------------------------------------------------
    def demo(self) -> Iterator[Waypoint]:
        assert self.scene is not None
        grocery = GROCERIES[self.item_index]
        pos, quat = self.scene.pose(self.target)
        # Approach along the robot's radial direction: a box is turned to face it, a can is round anyway.
        bearing = math.atan2(pos[1] - self.base_xy[1], pos[0] - self.base_xy[0])
        yaw = float(Rotation.from_quat(quat).as_euler("xyz")[2]) if grocery.kind == "box" else bearing
        grasp_q = side_grasp_quaternion(yaw)
        # Grip the upper part, from above-behind; deep boxes a little behind their centre so that the
        # hand's lower front edge stays out of them.
        top = pos[2] + grocery.height / 2
        grasp = pos - _planar(yaw) * max(grocery.half_depth - 0.04, 0.0)
        grasp[2] = max(top - 0.012, TABLE_HEIGHT + 0.025)
        yield Waypoint(grasp + [0.0, 0.0, _APPROACH], grasp_q, True, name="above the item")
        yield Waypoint(grasp, grasp_q, False, ignore_collisions=True, linear=True, name="grasp")
        lift = grasp + [0.0, 0.0, _LIFT]
        yield Waypoint(lift, grasp_q, False, linear=True, name="lift")
        # Put the held item's centre 8 cm inside the cupboard, centred, just above the floor.
        robot = self.scene.robot
        tip_from_item = robot.grasp.tip_from_object if robot.grasp is not None else np.eye(4)
        insert_q = side_grasp_quaternion(self.cupboard_yaw)
        goal = self.from_cupboard(np.array([_PLACE_DEPTH, 0.0, grocery.height / 2 + 0.012]))
        insert = goal - Rotation.from_quat(insert_q).apply(tip_from_item[:3, 3])
        inwards = _planar(self.cupboard_yaw)
        yield Waypoint(insert - _PRE_INSERT * inwards, insert_q, False, name="in front of the cupboard")
        yield Waypoint(insert, insert_q, True, linear=True, name="into the cupboard")
