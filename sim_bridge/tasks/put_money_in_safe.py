"""put_money_in_safe: pick up a stack of bank notes and leave it on the named shelf of an open safe (RLBench,
3 variations)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pybullet as p

from sim_bridge.bullet import shapes
from sim_bridge.tasks import furniture
from sim_bridge.tasks.base import Task, TaskScene, Waypoint, register

MONEY_HALF = (0.055, 0.0275, 0.0125)  # long axis, width (pinched by the fingers), thickness
_MONEY_RGBA = (0.35, 0.6, 0.35, 1.0)
# The notes are pinched near their back end and stay level, so that they slide into a shelf ahead of the
# fingers while the hand stays outside the safe.
GRASP_PITCH = np.radians(60.0)
GRASP_BEHIND_CENTRE = 0.04
GRASP_BELOW_TOP = 0.005
INSERT_DEPTH = 0.01  # tool centre inside the opening at release; deeper, the hand meets the shelf above
LIFT_OFF_SHELF = 0.01


@register
class PutMoneyInSafe(Task):
    name = "put_money_in_safe"

    def variation_count(self) -> int:
        return 3

    def descriptions(self, variation: int) -> list[str]:
        option = furniture.LEVELS[variation]
        return [
            f"put the money away in the safe on the {option} shelf",
            f"leave the money on the {option} shelf on the safe",
            f"place the stack of bank notes on the {option} shelf of the safe",
        ]

    def build(self, scene: TaskScene, variation: int) -> None:
        rng = scene.rng
        spec = furniture.SafeSpec()
        side = 1 if rng.random() < 0.5 else -1
        bearing = side * rng.uniform(0.05, 0.2)  # wider, the front camera loses the safe
        distance = rng.uniform(0.78, 0.84) + spec.depth / 2
        xy = furniture.ROBOT_BASE_XY + distance * np.array([np.cos(bearing), np.sin(bearing)])
        yaw = furniture.facing_yaw(xy) + rng.uniform(-0.2, 0.2)
        frame = furniture.Frame((float(xy[0]), float(xy[1])), yaw)
        self.safe = furniture.build_safe(scene.client, frame, door_side=side, spec=spec)
        scene.track(self.safe.body)

        # The notes lie on the table in front of the safe, their long side roughly pointing into it. Keeping
        # them there makes the carry a straight move that stays clear of the safe's walls.
        local = np.array([-spec.depth / 2 - rng.uniform(0.12, 0.16), rng.uniform(-0.12, 0.12), MONEY_HALF[2]])
        money_yaw = yaw + rng.uniform(-0.5, 0.5) + (np.pi if rng.random() < 0.5 else 0.0)
        self.money = scene.track(
            shapes.create_body(
                scene.client,
                [shapes.box(MONEY_HALF, _MONEY_RGBA)],
                frame.to_world(local),
                p.getQuaternionFromEuler([0.0, 0.0, money_yaw]),
                mass=0.05,
            )
        )

    def graspable(self) -> list[int]:
        return [self.money]

    def success(self) -> bool:
        assert self.scene is not None
        on_shelf = self.safe.on_shelf(self.variation, self.scene.pose(self.money)[0])
        return on_shelf and self.scene.held_body() is None

    def demo(self) -> Iterator[Waypoint]:
        assert self.scene is not None
        centre, quat = self.scene.pose(self.money)
        azimuth = self._grasp_azimuth(quat)
        along = np.array([np.cos(azimuth), np.sin(azimuth), 0.0])
        grasp = centre - GRASP_BEHIND_CENTRE * along + [0, 0, MONEY_HALF[2] - GRASP_BELOW_TOP]
        grip = furniture.pitched_quaternion(azimuth, GRASP_PITCH)
        yield Waypoint(grasp - 0.08 * furniture.tool_axis(azimuth, GRASP_PITCH), grip, True, name="pre-grasp")
        yield Waypoint(grasp, grip, False, linear=True, name="grasp")
        yield Waypoint(grasp + [0, 0, 0.08], grip, False, linear=True, name="lift")

        # Tool centre height above the shelf that leaves the notes' underside LIFT_OFF_SHELF above it.
        height = 2 * MONEY_HALF[2] - GRASP_BELOW_TOP + LIFT_OFF_SHELF
        insert = furniture.pitched_quaternion(self.safe.frame.yaw, GRASP_PITCH)
        outside = self.safe.shelf_entry(self.variation, -0.16, height)
        inside = self.safe.shelf_entry(self.variation, INSERT_DEPTH, height)
        yield Waypoint(outside, insert, False, name="in front of the shelf")
        yield Waypoint(inside, insert, True, ignore_collisions=True, linear=True, name="slide in and release")
        yield Waypoint(outside, insert, True, linear=True, name="retreat")

    def _grasp_azimuth(self, money_quat: np.ndarray) -> float:
        """Direction of the notes' long axis, of the two, that points into the safe."""
        yaw = p.getEulerFromQuaternion(money_quat)[2]
        return yaw if np.cos(yaw - self.safe.frame.yaw) >= 0 else yaw + np.pi
