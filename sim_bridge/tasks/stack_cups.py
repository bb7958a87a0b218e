"""stack_cups: three tapered cups stand on the table; stack the other two inside the named one (RLBench,
20 variations).

Variation ``v``: the base cup has colour ``COLORS[v]``; the other two cups get two random other colours. The
cups are hollow truncated cones built from tilted box staves around a bottom disc, so they nest. The demo
closes the gripper around a cup just below its rim and lowers it into the stack.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from scipy.spatial.transform import Rotation

from sim_bridge.bullet import shapes
from sim_bridge.bullet.robot import pose_matrix
from sim_bridge.tasks import colors
from sim_bridge.tasks.base import (
    TABLE_HEIGHT,
    Task,
    TaskScene,
    Waypoint,
    register,
    top_down_quaternion,
    wrap_angle,
    yaw_of,
)
from sim_bridge.tasks.layout import sample_positions

CUP_HEIGHT = 0.07
CUP_BOTTOM_RADIUS = 0.022  # outer radius at the bottom
CUP_TOP_RADIUS = 0.034  # outer radius at the rim: the open gripper (8 cm) closes around it
CUP_WALL = 0.004
CUP_MASS = 0.2
CUP_STAVES = 14  # an even count puts a flat stave under each finger; pybullet allows 16 shapes per body
_TAPER = (CUP_TOP_RADIUS - CUP_BOTTOM_RADIUS) / CUP_HEIGHT
_STAVE_HALF_WIDTH = CUP_TOP_RADIUS * math.tan(math.pi / CUP_STAVES) + 0.0005  # closes the polygon at the rim


def _foot_radius() -> float:
    """The bottom disc sticks out past the staves' lowest corners (which, being as wide as the rim's polygon
    sides, poke out of the bottom polygon): nested cups then rest on the disc's round edge, which centres
    them, instead of rocking on corners."""
    step = 2 * math.pi / CUP_STAVES
    corner = CUP_BOTTOM_RADIUS * math.cos(step) + _STAVE_HALF_WIDTH * math.sin(step)
    return max(CUP_BOTTOM_RADIUS, corner) + 0.001


def _nest_rise() -> float:
    """How far a cup sits above an identical one it is nested in: where its foot's edge meets the outer
    cup's inner wall."""
    return (_foot_radius() - CUP_BOTTOM_RADIUS + CUP_WALL * math.hypot(1.0, _TAPER)) / _TAPER


NEST_RISE = _nest_rise()
NESTED_XY_TOLERANCE = 0.015
_GRIP_DEPTH = 0.008  # the tool centre sits this far below the rim when closing around the cup
_ABOVE = 0.1
_RELEASE_GAP = 0.006


def tapered_cup_shapes(
    bottom_radius: float,
    top_radius: float,
    height: float,
    wall: float,
    foot_radius: float,
    rgba,
    staves: int = CUP_STAVES,
) -> list[shapes.Shape]:
    """A hollow truncated cone (open at the top) with its frame at the centre of its bottom face: tilted box
    staves whose outer faces have apothem ``bottom_radius`` .. ``top_radius``, on a disc."""
    slant = math.atan2(top_radius - bottom_radius, height)
    length = height / math.cos(slant)
    half_width = top_radius * math.tan(math.pi / staves) + 0.0005
    mid_radius = (bottom_radius + top_radius) / 2 - wall / (2 * math.cos(slant))
    parts = [shapes.cylinder(foot_radius, wall, rgba, offset=(0.0, 0.0, wall / 2))]
    for k in range(staves):
        a = 2 * math.pi * k / staves
        # Stave frame: x radial (thickness), y tangential, z along the slanted wall.
        rot = Rotation.from_euler("z", a) * Rotation.from_euler("y", slant)
        parts.append(
            shapes.box(
                (wall / 2, half_width, length / 2),
                rgba,
                offset=(mid_radius * math.cos(a), mid_radius * math.sin(a), height / 2),
                orientation=tuple(rot.as_quat()),
            )
        )
    return parts


@register
class StackCups(Task):
    name = "stack_cups"

    def variation_count(self) -> int:
        return len(colors.COLORS)

    def descriptions(self, variation: int) -> list[str]:
        c = colors.name(variation)
        return [
            f"stack the other cups on top of the {c} cup",
            "place two of the cups onto the odd cup out",
            f"put the remaining two cups on top of the {c} cup",
            f"pick up and set the cups down into the {c} cup",
            f"create a stack of cups with the {c} cup as its base",
            f"keeping the {c} cup on the table, stack the other two onto it",
        ]

    def build(self, scene: TaskScene, variation: int) -> None:
        rng = scene.rng
        others = [
            int(c) for c in rng.choice([i for i in range(len(colors.COLORS)) if i != variation], 2, False)
        ]
        xys = sample_positions(rng, 3, low=(0.0, -0.3), high=(0.36, 0.3), min_distance=0.16)
        self.cups: list[int] = []
        for color, xy in zip([variation, *others], xys, strict=True):
            body = shapes.create_body(
                scene.client,
                tapered_cup_shapes(
                    CUP_BOTTOM_RADIUS,
                    CUP_TOP_RADIUS,
                    CUP_HEIGHT,
                    CUP_WALL,
                    _foot_radius(),
                    colors.rgba(color),
                ),
                (xy[0], xy[1], TABLE_HEIGHT),
                Rotation.from_euler("z", rng.uniform(-math.pi, math.pi)).as_quat(),
                mass=CUP_MASS,
            )
            self.cups.append(scene.track(body))
        self.base, self.others = self.cups[0], self.cups[1:]

    def graspable(self) -> list[int]:
        return list(self.cups)

    def nested(self, cup: int) -> bool:
        """RLBench's sensor inside the base cup: the cup stands in the column above the base cup's floor, no
        higher than the top of a full stack."""
        assert self.scene is not None
        base, _ = self.scene.pose(self.base)
        pos, _ = self.scene.pose(cup)
        return bool(
            np.linalg.norm(pos[:2] - base[:2]) <= NESTED_XY_TOLERANCE
            and base[2] < pos[2] < base[2] + len(self.others) * NEST_RISE + 0.02
        )

    def success(self) -> bool:
        assert self.scene is not None
        return all(self.nested(c) for c in self.others) and self.scene.held_body() is None

    def _grasp(self, cup: int) -> tuple[np.ndarray, np.ndarray]:
        """Tool pose closing the fingers around the cup just below its rim, each finger on a stave's face;
        of the stave pairs, the one needing the least wrist turn."""
        assert self.scene is not None
        pos, quat = self.scene.pose(cup)
        step = 2 * math.pi / CUP_STAVES
        # Fingers close along the tool's y axis; a half turn of the tool gives the same grasp.
        yaws = [(yaw_of(quat) + k * step + math.pi) % math.pi - math.pi / 2 for k in range(CUP_STAVES // 2)]
        tool_yaw = min(yaws, key=abs)
        up = Rotation.from_quat(quat).as_matrix()[:, 2]
        return pos + up * (CUP_HEIGHT - _GRIP_DEPTH), top_down_quaternion(tool_yaw)

    def demo(self) -> Iterator[Waypoint]:
        assert self.scene is not None
        scene = self.scene
        up = np.array([0.0, 0.0, _ABOVE])
        for k, cup in enumerate(self.others):
            grasp_pos, grasp_q = self._grasp(cup)
            yield Waypoint(grasp_pos + up, grasp_q, True, name=f"above cup {k}")
            yield Waypoint(
                grasp_pos, grasp_q, False, ignore_collisions=True, linear=True, name=f"grasp cup {k}"
            )
            yield Waypoint(
                grasp_pos + up, grasp_q, False, ignore_collisions=True, linear=True, name=f"lift {k}"
            )
            # Nest the held cup square (stave to stave) in the stack, turning the tool as little as possible.
            cup_pose = pose_matrix(*scene.pose(cup))
            tip_from_cup = np.linalg.inv(scene.robot.tip_pose()) @ cup_pose
            base_pos, base_quat = scene.pose(self.base)
            step = 2 * math.pi / CUP_STAVES
            base_yaw = yaw_of(base_quat)
            yaw = base_yaw + step * round(wrap_angle(yaw_of(scene.pose(cup)[1]) - base_yaw) / step)
            target = pose_matrix(
                base_pos + [0.0, 0.0, (k + 1) * NEST_RISE + _RELEASE_GAP],
                Rotation.from_euler("z", yaw).as_quat(),
            )
            tip = target @ np.linalg.inv(tip_from_cup)
            tip_pos, tip_q = tip[:3, 3], Rotation.from_matrix(tip[:3, :3]).as_quat()
            yield Waypoint(tip_pos + up, tip_q, False, name=f"above base cup {k}")
            yield Waypoint(tip_pos, tip_q, True, ignore_collisions=True, linear=True, name=f"release cup {k}")
            if k < len(self.others) - 1:
                yield Waypoint(
                    tip_pos + up, tip_q, True, ignore_collisions=True, linear=True, name=f"retreat {k}"
                )
