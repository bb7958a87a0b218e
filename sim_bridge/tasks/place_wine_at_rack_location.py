"""place_wine_at_rack_location: lay the wine bottle in the named cradle (middle, left or right) of a wine
rack (RLBench, 3 variations).

The rack holds bottles on their side in three cradles, each a pair of rails along the rack's x axis.
Unlike RLBench, whose bottle stands upright and is turned over in the hand, our bottle starts lying on the
table: a level side grasp of an upright bottle is out of the Panda's comfortable reach near the table, and
the task stays the same choice of location.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pybullet as p
from scipy.spatial.transform import Rotation

from sim_bridge.bullet import shapes
from sim_bridge.tasks.base import TABLE_HEIGHT, Task, TaskScene, Waypoint, register, top_down_quaternion

LOCATIONS = ("middle", "left", "right")
# Cradle centres along the rack's y axis; "left" is the robot's left (+y) when the rack faces it unturned.
SLOT_Y = {"middle": 0.0, "left": 0.1, "right": -0.1}
_BASE_HALF = (0.11, 0.16, 0.005)
_RAIL_HALF = (0.1, 0.006, 0.015)
_RAIL_GAP = 0.024  # rail centres at slot_y +- this
_BOTTLE_RADIUS, _BODY_LENGTH = 0.03, 0.17
_SHOULDER_RADIUS, _SHOULDER_LENGTH = 0.02, 0.03
_NECK_RADIUS, _NECK_LENGTH = 0.011, 0.07
RAIL_TOP = 2 * _BASE_HALF[2] + 2 * _RAIL_HALF[2]
# Height of a cradled bottle's axis above the table: the body rests on the two rails' inner top edges.
CRADLED_AXIS = RAIL_TOP + math.sqrt(_BOTTLE_RADIUS**2 - (_RAIL_GAP - _RAIL_HALF[1]) ** 2)
_ABOVE = 0.1
_LIFT = 0.12
_RELEASE_GAP = 0.01


def _wrap_half_turn(yaw: float) -> float:
    """The equivalent gripper yaw in [-pi/2, pi/2): a parallel gripper is symmetric under a half turn."""
    return (yaw + math.pi / 2) % math.pi - math.pi / 2


@register
class PlaceWineAtRackLocation(Task):
    name = "place_wine_at_rack_location"

    def variation_count(self) -> int:
        return len(LOCATIONS)

    def descriptions(self, variation: int) -> list[str]:
        where = LOCATIONS[variation]
        return [
            f"stack the wine bottle to the {where} of the rack",
            f"slide the bottle onto the {where} part of the rack",
            f"put the wine on the {where}",
            f"leave the wine on the {where} section of the shelf",
            f"grasp the bottle and put it away on the {where}",
        ]

    # -- scene ---------------------------------------------------------------------------------------------
    def build(self, scene: TaskScene, variation: int) -> None:
        rng = scene.rng
        self.location = LOCATIONS[variation]
        # Rack and bottle on opposite sides of the workspace, either way round.
        side = 1.0 if rng.random() < 0.5 else -1.0
        self.rack_xy = np.array([rng.uniform(0.2, 0.33), side * rng.uniform(0.12, 0.2)])
        self.rack_yaw = float(rng.uniform(-np.pi / 8, np.pi / 8))
        self.rack = scene.track(self._make_rack(scene.client))
        bottle_xy = np.array([rng.uniform(0.1, 0.3), -side * rng.uniform(0.15, 0.25)])
        bottle_yaw = float(rng.uniform(-np.pi / 4, np.pi / 4)) + (np.pi if rng.random() < 0.5 else 0.0)
        self.bottle = scene.track(
            self._make_bottle(scene.client, (*bottle_xy, TABLE_HEIGHT + _BOTTLE_RADIUS + 0.001), bottle_yaw)
        )

    def _make_rack(self, client: int) -> int:
        wood, rail = (0.55, 0.36, 0.2, 1.0), (0.42, 0.26, 0.14, 1.0)
        parts = [shapes.box(_BASE_HALF, wood)]
        for slot_y in SLOT_Y.values():
            for s in (-1.0, 1.0):
                offset = (0.0, slot_y + s * _RAIL_GAP, 2 * _BASE_HALF[2] + _RAIL_HALF[2] - _BASE_HALF[2])
                parts.append(shapes.box(_RAIL_HALF, rail, offset=offset))
        quat = p.getQuaternionFromEuler([0.0, 0.0, self.rack_yaw])
        return shapes.create_body(client, parts, (*self.rack_xy, TABLE_HEIGHT + _BASE_HALF[2]), quat)

    @staticmethod
    def _make_bottle(client: int, position: tuple[float, float, float], yaw: float) -> int:
        """A bottle lying along its local +x (neck forward), origin at the centre of the body."""
        along_x = tuple(Rotation.from_euler("y", np.pi / 2).as_quat())
        glass, label = (0.1, 0.3, 0.12, 1.0), (0.2, 0.12, 0.1, 1.0)
        shoulder_x = _BODY_LENGTH / 2 + _SHOULDER_LENGTH / 2
        neck_x = _BODY_LENGTH / 2 + _SHOULDER_LENGTH + _NECK_LENGTH / 2
        parts = [
            shapes.cylinder(_BOTTLE_RADIUS, _BODY_LENGTH, glass, orientation=along_x),
            shapes.cylinder(
                _SHOULDER_RADIUS, _SHOULDER_LENGTH, glass, offset=(shoulder_x, 0, 0), orientation=along_x
            ),
            shapes.cylinder(_NECK_RADIUS, _NECK_LENGTH, label, offset=(neck_x, 0, 0), orientation=along_x),
        ]
        quat = p.getQuaternionFromEuler([0.0, 0.0, yaw])
        body = shapes.create_body(client, parts, position, quat, mass=0.3)
        # A real bottle on its side stays put; a frictionless bullet cylinder would roll away for ever.
        p.changeDynamics(body, -1, rollingFriction=0.01, angularDamping=0.5, physicsClientId=client)
        return body

    # -- geometry ------------------------------------------------------------------------------------------
    def to_rack(self, position: np.ndarray) -> np.ndarray:
        """A world point in the rack frame (origin at the base centre on the table, x along the cradles)."""
        c, s = math.cos(self.rack_yaw), math.sin(self.rack_yaw)
        d = np.asarray(position, dtype=float) - np.array([*self.rack_xy, TABLE_HEIGHT])
        return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1], d[2]])

    def from_rack(self, local: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.rack_yaw), math.sin(self.rack_yaw)
        x, y, z = local
        return np.array([*self.rack_xy, TABLE_HEIGHT]) + [c * x - s * y, s * x + c * y, z]

    def cradled_in(self) -> str | None:
        """The location whose cradle holds the bottle (RLBench's slot sensors), if any: body centre between
        that cradle's rails, resting at cradle height, and the bottle lying along the rails."""
        assert self.scene is not None
        pos, quat = self.scene.pose(self.bottle)
        local = self.to_rack(pos)
        axis = Rotation.from_quat(quat).apply([1.0, 0.0, 0.0])
        along = abs(axis @ np.array([math.cos(self.rack_yaw), math.sin(self.rack_yaw), 0.0]))
        if along < 0.95 or abs(local[0]) > 0.05 or abs(local[2] - CRADLED_AXIS) > 0.02:
            return None
        for where, slot_y in SLOT_Y.items():
            if abs(local[1] - slot_y) < _RAIL_GAP:
                return where
        return None

    def graspable(self) -> list[int]:
        return [self.bottle]

    def success(self) -> bool:
        assert self.scene is not None
        return self.scene.held_body() is None and self.cradled_in() == self.location

    # -- demo ----------------------------------------------------------------------------------------------
    def demo(self) -> Iterator[Waypoint]:
        assert self.scene is not None
        scene = self.scene
        pos, quat = scene.pose(self.bottle)
        bottle_yaw = float(Rotation.from_quat(quat).as_euler("xyz")[2])
        grasp_yaw = _wrap_half_turn(bottle_yaw)
        grasp_q = top_down_quaternion(grasp_yaw)
        grasp = pos + [0.0, 0.0, 0.004]
        yield Waypoint(grasp + [0, 0, _ABOVE], grasp_q, True, name="above the bottle")
        yield Waypoint(grasp, grasp_q, False, ignore_collisions=True, linear=True, name="grasp the bottle")
        yield Waypoint(
            grasp + [0, 0, _LIFT], grasp_q, False, ignore_collisions=True, linear=True, name="lift"
        )
        # Lay the held bottle along the chosen cradle: turn the tool by the smallest angle (a multiple of
        # a half turn away from the rack's yaw), then place the tool where the bottle's centre lands on the
        # rails.
        place_yaw = grasp_yaw + _wrap_half_turn(self.rack_yaw - grasp_yaw)
        place_q = top_down_quaternion(place_yaw)
        held = scene.robot.grasp
        tip_from_bottle = held.tip_from_object if held is not None else np.eye(4)
        centre = self.from_rack(np.array([0.0, SLOT_Y[self.location], CRADLED_AXIS + _RELEASE_GAP]))
        place = centre - Rotation.from_quat(place_q).apply(tip_from_bottle[:3, 3])
        yield Waypoint(place + [0, 0, _ABOVE], place_q, False, name=f"above the {self.location} cradle")
        yield Waypoint(place, place_q, True, ignore_collisions=True, linear=True, name="lay the bottle down")
