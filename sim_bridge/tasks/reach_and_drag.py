"""reach_and_drag: pick up a stick and rake the cube with it onto the target of the named colour
(RLBench, 20 variations).

Variation ``v``: the target's colour is ``COLORS[v]``; as in PerAct's RLBench fork, three distractor squares
take colours ``v + 5``, ``v + 6`` and ``v + 7`` (mod 20). The cube starts beyond the target, seen from the
robot, so that it has to be pulled back towards the robot.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pybullet as p
from scipy.spatial.transform import Rotation

from sim_bridge.bullet import shapes
from sim_bridge.errors import SimError
from sim_bridge.tasks import colors
from sim_bridge.tasks.base import TABLE_HEIGHT, Task, TaskScene, Waypoint, register, top_down_quaternion

DISTRACTOR_OFFSETS = (5, 6, 7)
TARGET_HALF = 0.05  # the coloured squares' half side
SUCCESS_HALF = 0.045  # the cube's centre must be this close (per axis) to the target's centre
CUBE_HALF = 0.025
_CUBE_RGBA = (0.25, 0.3, 0.35, 1.0)  # dark slate: none of the 20 target colours
_STICK_HALF = (0.16, 0.01, 0.01)
_STICK_GRIP = 0.12  # grip this far from the stick's centre, near the end closer to the robot
_ABOVE = 0.1
_LIFT = 0.12
_BEHIND_GAP = 0.012  # clearance between the lowered stick and the cube's far face
_STICK_ABOVE_TABLE = 0.004  # the raked stick skims the table
_SLIDE = 0.01  # the struck cube slides on by about this much after the stick stops


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _wrap_half_turn(yaw: float) -> float:
    """The equivalent gripper yaw in [-pi/2, pi/2): a parallel gripper is symmetric under a half turn."""
    return (yaw + math.pi / 2) % math.pi - math.pi / 2


def _planar(angle: float) -> np.ndarray:
    return np.array([math.cos(angle), math.sin(angle)])


def _segment_distance(point: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip((point - a) @ ab / max(ab @ ab, 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(point - (a + t * ab)))


def _patch(client: int, xy: np.ndarray, yaw: float, rgba: tuple[float, float, float, float]) -> int:
    """A flat coloured square lying on the table; it takes no part in collisions, so nothing snags on it."""
    quat = p.getQuaternionFromEuler([0.0, 0.0, yaw])
    body = shapes.create_body(
        client, [shapes.box((TARGET_HALF, TARGET_HALF, 0.0005), rgba)], (*xy, TABLE_HEIGHT + 0.0006), quat
    )
    p.setCollisionFilterGroupMask(body, -1, 0, 0, physicsClientId=client)
    return body


@register
class ReachAndDrag(Task):
    name = "reach_and_drag"

    def variation_count(self) -> int:
        return len(colors.COLORS)

    def descriptions(self, variation: int) -> list[str]:
        color = colors.name(variation)
        # RLBench's own wording, typo included.
        return [
            f"use the stick to drag the cube onto the {color} target",
            f"pick up the stick and use it to push or pull the cube onto the {color} target",
            f"drag the block towards the {color} square on the table top",
            f"grasping the stick by one end, pick it up and use the its other end to move the block onto the "
            f"{color} target",
        ]

    # -- scene ---------------------------------------------------------------------------------------------
    def build(self, scene: TaskScene, variation: int) -> None:
        rng = scene.rng
        for _ in range(100):
            layout = self._sample_layout(rng)
            if layout is not None:
                break
        else:
            raise SimError("could not lay out the reach_and_drag scene")
        self.target_xy, self.cube_start, stick_xy, stick_yaw, distractors = layout
        self.drag_dir = (self.target_xy - self.cube_start) / np.linalg.norm(self.target_xy - self.cube_start)
        patch_yaw = math.atan2(self.drag_dir[1], self.drag_dir[0])
        self.target = scene.track(_patch(scene.client, self.target_xy, patch_yaw, colors.rgba(variation)))
        self.distractors = [
            scene.track(
                _patch(scene.client, xy, patch_yaw, colors.rgba((variation + k) % len(colors.COLORS)))
            )
            for xy, k in zip(distractors, DISTRACTOR_OFFSETS, strict=True)
        ]
        cube_quat = p.getQuaternionFromEuler([0.0, 0.0, patch_yaw + float(rng.uniform(-0.2, 0.2))])
        self.cube = scene.track(
            shapes.create_body(
                scene.client,
                [shapes.box((CUBE_HALF,) * 3, _CUBE_RGBA)],
                (*self.cube_start, TABLE_HEIGHT + CUBE_HALF),
                cube_quat,
                mass=0.1,
            )
        )
        stick_quat = p.getQuaternionFromEuler([0.0, 0.0, stick_yaw])
        self.stick = scene.track(
            shapes.create_body(
                scene.client,
                [shapes.box(_STICK_HALF, (0.45, 0.3, 0.15, 1.0))],
                (*stick_xy, TABLE_HEIGHT + _STICK_HALF[2]),
                stick_quat,
                mass=0.1,
            )
        )

    @staticmethod
    def _sample_layout(rng: np.random.Generator):
        """Target near the robot, the cube 15-20 cm beyond it, the stick off to one side and three distractor
        squares clear of all of them; None when the draw does not fit."""
        target = np.array([rng.uniform(0.0, 0.15), rng.uniform(-0.15, 0.15)])
        away = float(rng.uniform(-0.35, 0.35))  # direction from the target to the cube (0 = straight ahead)
        cube = target + rng.uniform(0.15, 0.2) * _planar(away)
        side = 1.0 if rng.random() < 0.5 else -1.0
        stick_xy = np.array([rng.uniform(0.12, 0.3), side * rng.uniform(0.2, 0.26)])
        stick_yaw = float(rng.uniform(-0.5, 0.5))
        half = _STICK_HALF[0] * _planar(stick_yaw)
        stick_ends = (stick_xy - half, stick_xy + half)
        if max(abs(stick_ends[0][1]), abs(stick_ends[1][1])) > 0.36:
            return None
        if min(_segment_distance(q, *stick_ends) for q in (target, cube)) < 0.1:
            return None
        distractors: list[np.ndarray] = []
        for _ in range(3):
            for _ in range(300):
                xy = rng.uniform((-0.05, -0.3), (0.4, 0.3))
                if (
                    _segment_distance(xy, target, cube) > 0.11
                    and _segment_distance(xy, *stick_ends) > 0.08
                    and all(np.linalg.norm(xy - q) > 0.12 for q in distractors)
                ):
                    distractors.append(xy)
                    break
            else:
                return None
        return target, cube, stick_xy, stick_yaw, distractors

    # -- success -------------------------------------------------------------------------------------------
    def cube_on(self, patch: int) -> bool:
        """RLBench's success sensor: the cube rests on the table with its centre over the square's middle."""
        assert self.scene is not None
        cube, _ = self.scene.pose(self.cube)
        centre, quat = self.scene.pose(patch)
        local = Rotation.from_quat(quat).inv().apply(cube - centre)
        return bool(
            abs(local[0]) < SUCCESS_HALF and abs(local[1]) < SUCCESS_HALF and local[2] < CUBE_HALF + 0.01
        )

    def graspable(self) -> list[int]:
        return [self.stick]

    def success(self) -> bool:
        return self.cube_on(self.target)

    # -- demo ----------------------------------------------------------------------------------------------
    def demo(self) -> Iterator[Waypoint]:
        assert self.scene is not None
        scene = self.scene
        stick_pos, stick_quat = scene.pose(self.stick)
        axis = Rotation.from_quat(stick_quat).apply([1.0, 0.0, 0.0])
        # Grip the end nearer the robot, fingers across the stick.
        end_sign = -1.0 if axis[0] > 0 else 1.0
        grip = stick_pos + end_sign * _STICK_GRIP * axis + [0.0, 0.0, 0.002]
        grip_yaw = _wrap_half_turn(math.atan2(axis[1], axis[0]))
        grip_q = top_down_quaternion(grip_yaw)
        yield Waypoint(grip + [0, 0, _ABOVE], grip_q, True, name="above the stick")
        yield Waypoint(grip, grip_q, False, ignore_collisions=True, linear=True, name="grasp the stick")
        yield Waypoint(grip + [0, 0, _LIFT], grip_q, False, ignore_collisions=True, linear=True, name="lift")

        # Lay the stick across the drag direction, just beyond the cube, its middle behind the cube. Of the
        # two ways to point the stick sideways, take the one nearer the wrist's middle (|tool yaw| <= 90 deg).
        held = scene.robot.grasp
        tip_from_stick = held.tip_from_object if held is not None else np.eye(4)
        offset = tip_from_stick[:3, 3]  # the stick centre in the tool frame
        centre_yaw0 = math.atan2(*Rotation.from_quat(top_down_quaternion(0.0)).apply(offset)[1::-1])
        drag_yaw = math.atan2(self.drag_dir[1], self.drag_dir[0])
        cube, _ = scene.pose(self.cube)
        tool_yaw = min((_wrap(drag_yaw + s * math.pi / 2 - centre_yaw0) for s in (1.0, -1.0)), key=abs)
        tool_q = top_down_quaternion(tool_yaw)
        behind = cube[:2] - self.drag_dir * (CUBE_HALF + _STICK_HALF[1] + _BEHIND_GAP)
        stick_z = TABLE_HEIGHT + _STICK_HALF[2] + _STICK_ABOVE_TABLE
        start = np.array([*behind, stick_z]) - Rotation.from_quat(tool_q).apply(offset)
        yield Waypoint(start + [0, 0, _ABOVE], tool_q, False, name="above the far side of the cube")
        yield Waypoint(start, tool_q, False, ignore_collisions=True, linear=True, name="lower the stick")
        # Pull until the cube's centre, pushed by the stick, is over the target's centre.
        pull = (self.target_xy - cube[:2]) @ self.drag_dir + _BEHIND_GAP - _SLIDE
        end = start + np.array([*(pull * self.drag_dir), 0.0])
        yield Waypoint(end, tool_q, False, ignore_collisions=True, linear=True, name="drag the cube")
