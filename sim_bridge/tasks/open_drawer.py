"""open_drawer: a cabinet with three drawers; pull the named one open (RLBench, 3 variations)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from sim_bridge.tasks import furniture
from sim_bridge.tasks.base import Task, TaskScene, Waypoint, register

OPENED_AT = 0.15  # m of drawer travel that counts as open (RLBench's JointCondition)
GRASP_PITCH = np.radians(60.0)
PULL = 0.2


def place_cabinet(
    scene: TaskScene, spec: furniture.CabinetSpec, front_distance: tuple[float, float] = (0.74, 0.82)
) -> furniture.Cabinet:
    """A cabinet whose front is ``front_distance`` m from the robot base, off to either side, turned to the
    robot (RLBench spins the cabinet by up to 45 degrees; here the yaw jitter keeps the handles reachable)."""
    distance = scene.rng.uniform(*front_distance) + spec.depth / 2
    bearing = scene.rng.uniform(-0.2, 0.2)  # wider, the front camera loses the cabinet
    xy = furniture.ROBOT_BASE_XY + distance * np.array([np.cos(bearing), np.sin(bearing)])
    yaw = furniture.facing_yaw(xy) + scene.rng.uniform(-0.25, 0.25)
    cabinet = furniture.build_cabinet(scene.client, furniture.Frame((float(xy[0]), float(xy[1])), yaw), spec)
    scene.track(cabinet.body)
    return cabinet


def pull_drawer(
    cabinet: furniture.Cabinet, level: int, release: bool, pull: float = PULL
) -> Iterator[Waypoint]:
    """Pre-grasp behind the handle along the tool axis, grasp, pull straight out (then let go if asked)."""
    azimuth = cabinet.frame.yaw
    quat = furniture.pitched_quaternion(azimuth, GRASP_PITCH)
    axis = furniture.tool_axis(azimuth, GRASP_PITCH)
    handle = cabinet.handle_position(level)
    yield Waypoint(handle - 0.08 * axis, quat, gripper_open=True, name="pre-grasp handle")
    yield Waypoint(handle, quat, gripper_open=False, linear=True, name="grasp handle")
    pulled = handle - pull * cabinet.frame.inward
    yield Waypoint(pulled, quat, gripper_open=release, ignore_collisions=True, linear=True, name="pull")


@register
class OpenDrawer(Task):
    name = "open_drawer"

    def variation_count(self) -> int:
        return 3

    def descriptions(self, variation: int) -> list[str]:
        option = furniture.LEVELS[variation]
        return [
            f"open the {option} drawer",
            f"grip the {option} handle and pull the {option} drawer open",
            f"slide the {option} drawer open",
        ]

    def build(self, scene: TaskScene, variation: int) -> None:
        self.cabinet = place_cabinet(scene, furniture.CabinetSpec())

    def success(self) -> bool:
        return self.cabinet.opening(self.variation) > OPENED_AT

    def demo(self) -> Iterator[Waypoint]:
        yield from pull_drawer(self.cabinet, self.variation, release=False)
