"""put_item_in_drawer: open the named drawer and put the block lying on the cabinet into it (RLBench, 3
variations)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pybullet as p

from sim_bridge.bullet import shapes
from sim_bridge.tasks import furniture
from sim_bridge.tasks.base import Task, TaskScene, Waypoint, register
from sim_bridge.tasks.open_drawer import GRASP_PITCH, place_cabinet, pull_drawer

ITEM_HALF = 0.02
ITEM_PITCH = np.radians(45.0)  # flatter than the handle grasp: the item lies far, on the cabinet
_ITEM_RGBA = (0.85, 0.15, 0.15, 1.0)


@register
class PutItemInDrawer(Task):
    name = "put_item_in_drawer"

    def variation_count(self) -> int:
        return 3

    def descriptions(self, variation: int) -> list[str]:
        option = furniture.LEVELS[variation]
        return [
            f"put the item in the {option} drawer",
            f"put the block away in the {option} drawer",
            f"open the {option} drawer and place the block inside of it",
            f"leave the block in the {option} drawer",
        ]

    def build(self, scene: TaskScene, variation: int) -> None:
        spec = furniture.CabinetSpec()
        self.cabinet = place_cabinet(scene, spec, front_distance=(0.74, 0.79))
        # Like RLBench, the item waits on top of the cabinet (here near its front edge, within reach).
        local = np.array(
            [
                -spec.depth / 2 + scene.rng.uniform(0.025, 0.05),
                scene.rng.uniform(-0.08, 0.08),
                spec.height + ITEM_HALF,
            ]
        )
        yaw = self.cabinet.frame.yaw + scene.rng.uniform(-np.pi / 4, np.pi / 4)
        self.item = scene.track(
            shapes.create_body(
                scene.client,
                [shapes.box((ITEM_HALF,) * 3, _ITEM_RGBA)],
                self.cabinet.frame.to_world(local),
                p.getQuaternionFromEuler([0.0, 0.0, yaw]),
                mass=0.05,
            )
        )

    def graspable(self) -> list[int]:
        return [self.item]

    def success(self) -> bool:
        assert self.scene is not None
        return self.cabinet.in_drawer(self.variation, self.scene.pose(self.item)[0])

    def demo(self) -> Iterator[Waypoint]:
        assert self.scene is not None
        level = self.variation
        yield from pull_drawer(self.cabinet, level, release=True)
        # The bar leaves between the fingertips when the open hand backs away from the drawer; dipping a
        # little on the way keeps the folded arm clear of the shoulder singularity (j2 near 0) that rising
        # meets.
        backed = self.cabinet.handle_position(level) - 0.05 * self.cabinet.frame.inward - [0.0, 0.0, 0.03]
        quat = furniture.pitched_quaternion(self.cabinet.frame.yaw, GRASP_PITCH)
        yield Waypoint(backed, quat, True, linear=True, name="back off the handle")

        item, item_quat = self.scene.pose(self.item)
        azimuth = self._grasp_azimuth(item_quat)
        quat = furniture.pitched_quaternion(azimuth, ITEM_PITCH)
        axis = furniture.tool_axis(azimuth, ITEM_PITCH)
        grasp = item + np.array([0.0, 0.0, 0.005])
        yield Waypoint(grasp - 0.08 * axis, quat, True, name="pre-grasp item")
        yield Waypoint(grasp, quat, False, linear=True, name="grasp item")
        yield Waypoint(grasp - 0.08 * axis, quat, False, linear=True, name="lift item")

        # The drawer's pulled-out part is open from above: lower the item into it pointing straight down, the
        # long side of the hand parallel to the cabinet front (clear of the other drawers' handles).
        down = furniture.pitched_quaternion(self.cabinet.frame.yaw, np.pi / 2)
        release = self.cabinet.exposed_drawer_centre(level) + np.array([0.0, 0.0, ITEM_HALF + 0.025])
        yield Waypoint(release + [0, 0, 0.12], down, False, name="above drawer")
        yield Waypoint(release, down, True, ignore_collisions=True, linear=True, name="place in drawer")
        yield Waypoint(release + [0, 0, 0.1], down, True, linear=True, name="retreat")

    def _grasp_azimuth(self, item_quat: np.ndarray) -> float:
        """The tool azimuth square to the block's faces that is closest to facing into the cabinet."""
        item_yaw = p.getEulerFromQuaternion(item_quat)[2]
        front = self.cabinet.frame.yaw
        return item_yaw + np.pi / 2 * np.round((front - item_yaw) / (np.pi / 2))
