"""meat_off_grill: a chicken drumstick and a steak lie on a grill; take the named one off and set it down
on the table beside the grill (RLBench, 2 variations)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pybullet as p
from scipy.spatial.transform import Rotation

from sim_bridge.bullet import shapes
from sim_bridge.tasks.base import TABLE_HEIGHT, Task, TaskScene, Waypoint, register, top_down_quaternion

MEAT = ("chicken", "steak")
_GRILL_HALF = (0.09, 0.14, 0.04)  # the grill's body; the grate of bars sits on top of it
_BAR_HALF = (0.085, 0.004, 0.004)
_BAR_COUNT = 7
GRATE_TOP = 2 * _GRILL_HALF[2] + 2 * _BAR_HALF[2]  # above the table
# The side region (RLBench's "success" proximity sensor): on the table next to the grill's -y side,
# expressed in the grill frame, with its half extents.
SIDE_CENTRE = (0.0, -0.26)
SIDE_HALF = (0.1, 0.09)
SIDE_MAX_HEIGHT = 0.06  # the meat's centre must be below this height above the table (i.e. resting on it)
_STEAK_HALF = (0.05, 0.028, 0.013)
_CHICKEN_RADIUS, _CHICKEN_LENGTH = 0.022, 0.075
_BONE_RADIUS, _BONE_LENGTH = 0.008, 0.04
_MEAT_HALF_HEIGHT = {"chicken": _CHICKEN_RADIUS, "steak": _STEAK_HALF[2]}
_ABOVE = 0.08  # pre-grasp and pre-release height above the grasp/release point
_LIFT = 0.12


def _wrap_half_turn(yaw: float) -> float:
    """The equivalent gripper yaw in [-pi/2, pi/2): a parallel gripper is symmetric under a half turn."""
    return (yaw + math.pi / 2) % math.pi - math.pi / 2


@register
class MeatOffGrill(Task):
    name = "meat_off_grill"

    def variation_count(self) -> int:
        return len(MEAT)

    def descriptions(self, variation: int) -> list[str]:
        meat = MEAT[variation]
        return [
            f"take the {meat} off the grill",
            f"pick up the {meat} and place it next to the grill",
            f"remove the {meat} from the grill and set it down to the side",
        ]

    def build(self, scene: TaskScene, variation: int) -> None:
        rng = scene.rng
        self.grill_xy = np.array([rng.uniform(0.1, 0.25), rng.uniform(0.06, 0.2)])
        self.grill_yaw = float(rng.uniform(-np.pi / 8, np.pi / 8))
        grill_quat = p.getQuaternionFromEuler([0.0, 0.0, self.grill_yaw])
        bar_ys = np.linspace(-_GRILL_HALF[1] + 0.015, _GRILL_HALF[1] - 0.015, _BAR_COUNT)
        grill_parts = [shapes.box(_GRILL_HALF, (0.15, 0.15, 0.15, 1.0))] + [
            shapes.box(_BAR_HALF, (0.6, 0.6, 0.6, 1.0), offset=(0.0, float(y), _GRILL_HALF[2] + _BAR_HALF[2]))
            for y in bar_ys
        ]
        self.grill = scene.track(
            shapes.create_body(
                scene.client,
                grill_parts,
                (*self.grill_xy, TABLE_HEIGHT + _GRILL_HALF[2]),
                grill_quat,
            )
        )
        # Chicken and steak lie side by side across the grate, in random order, slightly jittered.
        slots = [-0.06, 0.06] if rng.random() < 0.5 else [0.06, -0.06]
        self.meats: dict[str, int] = {}
        for meat, slot_y in zip(MEAT, slots, strict=True):
            local = np.array([rng.uniform(-0.02, 0.02), slot_y + rng.uniform(-0.01, 0.01)])
            xy = self._grill_to_world(local)
            yaw = self.grill_yaw + float(rng.uniform(-0.3, 0.3))
            z = TABLE_HEIGHT + GRATE_TOP + _MEAT_HALF_HEIGHT[meat] + 0.002
            self.meats[meat] = scene.track(self._make_meat(scene.client, meat, (*xy, z), yaw))
        self.target = self.meats[MEAT[variation]]
        self.target_name = MEAT[variation]

    @staticmethod
    def _make_meat(client: int, meat: str, position: tuple[float, float, float], yaw: float) -> int:
        quat = p.getQuaternionFromEuler([0.0, 0.0, yaw])
        if meat == "steak":
            parts = [shapes.box(_STEAK_HALF, (0.45, 0.12, 0.08, 1.0))]
            return shapes.create_body(client, parts, position, quat, mass=0.1)
        # A drumstick: a thick cylinder of meat with a thin bone sticking out, lying along its local x axis.
        along_x = tuple(Rotation.from_euler("y", np.pi / 2).as_quat())
        meat_part = shapes.cylinder(
            _CHICKEN_RADIUS, _CHICKEN_LENGTH, (0.8, 0.55, 0.25, 1.0), orientation=along_x
        )
        bone = shapes.cylinder(
            _BONE_RADIUS,
            _BONE_LENGTH,
            (0.95, 0.92, 0.85, 1.0),
            offset=((_CHICKEN_LENGTH + _BONE_LENGTH) / 2, 0.0, -_CHICKEN_RADIUS + _BONE_RADIUS),
            orientation=along_x,
        )
        return shapes.create_body(client, [meat_part, bone], position, quat, mass=0.1)

    def _grill_to_world(self, local: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.grill_yaw), math.sin(self.grill_yaw)
        return self.grill_xy + np.array([c * local[0] - s * local[1], s * local[0] + c * local[1]])

    def _world_to_grill(self, xy: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.grill_yaw), math.sin(self.grill_yaw)
        d = np.asarray(xy) - self.grill_xy
        return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]])

    def graspable(self) -> list[int]:
        return list(self.meats.values())

    def in_side_region(self, body: int) -> bool:
        """RLBench's side sensor: the body's centre is on the table inside the box beside the grill."""
        assert self.scene is not None
        pos, _ = self.scene.pose(body)
        local = self._world_to_grill(pos[:2]) - np.asarray(SIDE_CENTRE)
        return bool(
            abs(local[0]) <= SIDE_HALF[0]
            and abs(local[1]) <= SIDE_HALF[1]
            and pos[2] <= TABLE_HEIGHT + SIDE_MAX_HEIGHT
        )

    def success(self) -> bool:
        assert self.scene is not None
        return self.scene.held_body() is None and self.in_side_region(self.target)

    def demo(self) -> Iterator[Waypoint]:
        assert self.scene is not None
        pos, quat = self.scene.pose(self.target)
        meat_yaw = Rotation.from_quat(quat).as_euler("xyz")[2]
        grasp_q = top_down_quaternion(_wrap_half_turn(meat_yaw))
        # The fingertips reach ~1.6 cm below the tool centre: grip the upper part so they stay off the bars.
        half_height = _MEAT_HALF_HEIGHT[self.target_name]
        grasp = pos + [0.0, 0.0, half_height - 0.012]
        yield Waypoint(grasp + [0, 0, _ABOVE], grasp_q, True, name="above meat")
        yield Waypoint(grasp, grasp_q, False, ignore_collisions=True, linear=True, name="grasp meat")
        yield Waypoint(
            grasp + [0, 0, _LIFT], grasp_q, False, ignore_collisions=True, linear=True, name="lift"
        )
        side = self._grill_to_world(np.asarray(SIDE_CENTRE))
        # Let go 1 cm above the table.
        release = np.array([*side, TABLE_HEIGHT + half_height + 0.01 + (grasp[2] - pos[2])])
        release_q = top_down_quaternion(_wrap_half_turn(self.grill_yaw))
        yield Waypoint(release + [0, 0, _ABOVE], release_q, False, name="above side of grill")
        yield Waypoint(release, release_q, True, ignore_collisions=True, linear=True, name="set meat down")
