"""turn_tap: a tap with a lever handle on each side of its spout; turn the named one a quarter turn (RLBench,
2 variations)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pybullet as p
from scipy.spatial.transform import Rotation

from sim_bridge.bullet import shapes
from sim_bridge.tasks import furniture
from sim_bridge.tasks.base import TABLE_HEIGHT, Task, TaskScene, Waypoint, register, top_down_quaternion

OPTIONS = ("left", "right")  # RLBench's variation order
TURNED_AT = 1.57  # rad away from the start angle (RLBench's JointCondition)
TURN = 1.75  # rad the demo turns the gripper, a little past the threshold
_BASE_HALF = (0.05, 0.19, 0.02)
# Lateral offset of each handle's axis from the spout: the hand, 21 cm long across the lever, must clear the
# spout at any turn.
_HANDLE_Y = 0.14
_STEM_RADIUS, _STEM_HEIGHT = 0.006, 0.03
_LEVER_HALF = (0.008, 0.045, 0.01)  # lever along local y at rest; the fingers pinch its 16 mm width
_METAL = (0.7, 0.72, 0.75, 1.0)
_HANDLE_RGBA = (0.25, 0.35, 0.6, 1.0)


def _handle_link(side: float) -> shapes.LinkSpec:
    lever_z = _STEM_HEIGHT + _LEVER_HALF[2]
    return shapes.LinkSpec(
        shapes=(
            shapes.cylinder(_STEM_RADIUS, _STEM_HEIGHT, _METAL, offset=(0.0, 0.0, _STEM_HEIGHT / 2)),
            shapes.box(_LEVER_HALF, _HANDLE_RGBA, offset=(0.0, 0.0, lever_z)),
        ),
        joint="revolute",
        position=(0.0, side * _HANDLE_Y, _BASE_HALF[2]),
        axis=(0.0, 0.0, 1.0),
        limits=(-np.pi, np.pi),
        mass=0.05,
    )


@register
class TurnTap(Task):
    name = "turn_tap"

    def variation_count(self) -> int:
        return 2

    def descriptions(self, variation: int) -> list[str]:
        option = OPTIONS[variation]
        return [f"turn {option} tap", f"rotate the {option} tap", f"grasp the {option} tap and turn it"]

    def build(self, scene: TaskScene, variation: int) -> None:
        rng = scene.rng
        xy = np.array([rng.uniform(0.15, 0.3), rng.uniform(-0.15, 0.15)])
        self.yaw = furniture.facing_yaw(xy) + rng.uniform(-0.3, 0.3)
        spout = (
            shapes.box(_BASE_HALF, _METAL),
            shapes.cylinder(0.015, 0.14, _METAL, offset=(0.0, 0.0, _BASE_HALF[2] + 0.07)),
            shapes.box((0.05, 0.012, 0.012), _METAL, offset=(-0.035, 0.0, _BASE_HALF[2] + 0.128)),
        )
        # Local +y is the robot's left when the tap faces it; link 0 is the left handle, link 1 the right.
        built = shapes.create_articulated(
            scene.client,
            spout,
            (xy[0], xy[1], TABLE_HEIGHT + _BASE_HALF[2]),
            Rotation.from_euler("z", self.yaw).as_quat(),
            [_handle_link(+1.0), _handle_link(-1.0)],
        )
        self.tap = scene.track(built.body)
        for j in built.joints:  # a little friction so that a brushed handle does not keep spinning
            p.setJointMotorControl2(self.tap, j, p.VELOCITY_CONTROL, targetVelocity=0.0, force=0.05,
                                    physicsClientId=scene.client)  # fmt: skip
        self.joint = variation
        self.start_angle = scene.joint_position(self.tap, self.joint)

    def turned(self) -> float:
        """How far the named handle has turned from where it started (rad, either direction)."""
        assert self.scene is not None
        return abs(self.scene.joint_position(self.tap, self.joint) - self.start_angle)

    def success(self) -> bool:
        return self.turned() > TURNED_AT

    def lever_centre(self) -> np.ndarray:
        assert self.scene is not None
        state = p.getLinkState(
            self.tap, self.joint, computeForwardKinematics=True, physicsClientId=self.scene.client
        )
        return np.asarray(state[4]) + np.array([0.0, 0.0, _STEM_HEIGHT + _LEVER_HALF[2]])

    def demo(self) -> Iterator[Waypoint]:
        assert self.scene is not None
        lever_yaw = self.yaw + np.pi / 2 + self.scene.joint_position(self.tap, self.joint)
        # Fingers across the lever (tool x along it), centred on the handle's axis, so that turning the
        # wrist about the vertical through the tool centre carries the lever round with it.
        grasp = self.lever_centre() + np.array([0.0, 0.0, 0.004])
        yield Waypoint(grasp + [0, 0, 0.08], top_down_quaternion(lever_yaw), True, name="above handle")
        yield Waypoint(grasp, top_down_quaternion(lever_yaw), False, linear=True, name="grasp handle")
        direction = self._turn_direction()
        yield Waypoint(grasp, top_down_quaternion(lever_yaw + direction * TURN), False,
                       ignore_collisions=True, linear=True, name="turn")  # fmt: skip

    def _turn_direction(self) -> float:
        """+1 (counter-clockwise seen from above) or -1: whichever leaves the wrist joint more range."""
        assert self.scene is not None
        robot = self.scene.robot
        wrist = robot.joint_positions()[6]
        # Turning the tool counter-clockwise about world z decreases joint 7 when the tool points down
        # (joint 7's axis is the tool axis, world -z).
        return 1.0 if wrist - TURN - robot.lower[6] >= robot.upper[6] - (wrist + TURN) else -1.0
