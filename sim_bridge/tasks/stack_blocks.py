"""stack_blocks: stack N blocks of the named colour on the green plane (RLBench, 60 variations).

Variation ``v``: colour ``COLORS[v // 3]`` and ``N = 2 + v % 3``. Four target cubes share that colour; the
four distractor cubes all share one other, randomly drawn colour (RLBench draws two distractor colours but
only ever uses the first).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.spatial.transform import Rotation

from sim_bridge.bullet import shapes
from sim_bridge.bullet.robot import pose_matrix
from sim_bridge.errors import SimError
from sim_bridge.tasks import colors
from sim_bridge.tasks.base import TABLE_HEIGHT, Task, TaskScene, Waypoint, register, top_down_quaternion
from sim_bridge.tasks.layout import sample_positions

MAX_STACKED = 3  # N takes 3 values (2, 3, 4) per colour
TARGETS = DISTRACTORS = 4
CUBE_HALF = 0.025
PLANE_HALF = (0.05, 0.05, 0.001)
PLANE_RGBA = (0.0, 0.8, 0.0, 1.0)
STACK_XY_TOLERANCE = 0.02  # a block further than this from the plane's centre line is not on the stack
_PLACE_GAP = 0.005  # released this far above the block below
_ABOVE = 0.1  # pre-grasp / lift height above a block's grasp point


def _yaw_of(pose: np.ndarray) -> float:
    """World yaw of a frame's x axis; ``pose`` is an xyzw quaternion or a 4x4 matrix. For a top-down tool
    this is the yaw passed to :func:`top_down_quaternion`."""
    m = pose[:3, :3] if pose.shape == (4, 4) else Rotation.from_quat(pose).as_matrix()
    return float(np.arctan2(m[1, 0], m[0, 0]))


def _square_yaw(yaw: float) -> float:
    """A cube's yaw folded to [-pi/4, pi/4) (it looks the same every quarter turn)."""
    return float((yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4)


@register
class StackBlocks(Task):
    name = "stack_blocks"

    def variation_count(self) -> int:
        return len(colors.COLORS) * MAX_STACKED

    @staticmethod
    def plan(variation: int) -> tuple[int, int]:
        """(colour index, number of blocks to stack) of a variation, as RLBench maps them."""
        return variation // MAX_STACKED, 2 + variation % MAX_STACKED

    def descriptions(self, variation: int) -> list[str]:
        color, n = self.plan(variation)
        c = colors.name(color)
        return [
            f"stack {n} {c} blocks",
            f"place {n} of the {c} cubes on top of each other",
            f"pick up and set down {n} {c} blocks on top of each other",
            f"build a tall tower out of {n} {c} cubes",
            f"arrange {n} {c} blocks in a vertical stack on the table top",
            f"set {n} {c} cubes on top of each other",
        ]

    def build(self, scene: TaskScene, variation: int) -> None:
        self.color, self.count = self.plan(variation)
        others = [i for i in range(len(colors.COLORS)) if i != self.color]
        self.distractor_color = int(scene.rng.choice(others))
        plane_xy = scene.rng.uniform((0.05, -0.2), (0.3, 0.2))
        cubes_xy = sample_positions(
            scene.rng, TARGETS + DISTRACTORS, low=(0.0, -0.3), high=(0.42, 0.3), min_distance=0.12,
            avoid=[plane_xy],
        )  # fmt: skip
        self.plane = scene.track(
            shapes.create_body(
                scene.client, [shapes.box(PLANE_HALF, PLANE_RGBA)],
                (plane_xy[0], plane_xy[1], TABLE_HEIGHT + PLANE_HALF[2]),
            )
        )  # fmt: skip
        self.targets: list[int] = []
        self.distractors: list[int] = []
        for k, xy in enumerate(cubes_xy):
            color = self.color if k < TARGETS else self.distractor_color
            yaw = scene.rng.uniform(-np.pi, np.pi)
            body = shapes.create_body(
                scene.client,
                [shapes.box((CUBE_HALF,) * 3, colors.rgba(color))],
                (xy[0], xy[1], TABLE_HEIGHT + CUBE_HALF),
                Rotation.from_euler("z", yaw).as_quat(),
                mass=0.1,
            )
            (self.targets if k < TARGETS else self.distractors).append(scene.track(body))

    def graspable(self) -> list[int]:
        return self.targets + self.distractors

    def stacked(self) -> list[int]:
        """Target blocks standing in the column above the plane (RLBench's success proximity sensor)."""
        assert self.scene is not None
        centre, _ = self.scene.pose(self.plane)
        floor = centre[2] + PLANE_HALF[2]
        top = floor + 2 * CUBE_HALF * (TARGETS + DISTRACTORS) + 0.02
        out = []
        for body in self.targets:
            pos, _ = self.scene.pose(body)
            if np.linalg.norm(pos[:2] - centre[:2]) <= STACK_XY_TOLERANCE and floor < pos[2] < top:
                out.append(body)
        return out

    def success(self) -> bool:
        assert self.scene is not None
        return len(self.stacked()) >= self.count and self.scene.held_body() is None

    def _order(self) -> list[int]:
        """Target blocks nearest the plane first (shortest carries)."""
        assert self.scene is not None
        centre, _ = self.scene.pose(self.plane)
        return sorted(
            self.targets, key=lambda b: float(np.linalg.norm(self.scene.pose(b)[0][:2] - centre[:2]))
        )

    def demo(self) -> Iterator[Waypoint]:
        assert self.scene is not None
        scene = self.scene
        plane_centre, _ = scene.pose(self.plane)
        for k, block in enumerate(self._order()[: self.count]):
            pos, quat = scene.pose(block)
            grasp_q = top_down_quaternion(_square_yaw(_yaw_of(quat)))
            up = np.array([0.0, 0.0, _ABOVE])
            yield Waypoint(pos + up, grasp_q, True, name=f"above block {k}")
            yield Waypoint(pos, grasp_q, False, linear=True, name=f"grasp block {k}")
            yield Waypoint(pos + up, grasp_q, False, linear=True, name=f"lift block {k}")
            # Place the held cube square on the stack; the tool pose follows from the cube's pose in the hand.
            grasp = scene.robot.grasp
            if grasp is None or grasp.body != block:
                raise SimError(f"stack_blocks demo: the gripper did not pick up block {k}")
            tip_from_cube = grasp.tip_from_object
            cube_in_tool = _yaw_of(scene.pose(block)[1]) - _yaw_of(scene.robot.tip_pose())
            place_yaw = _square_yaw(-cube_in_tool)  # tool yaw that turns the cube to a multiple of 90 degrees
            cube_yaw = place_yaw + cube_in_tool
            z = plane_centre[2] + PLANE_HALF[2] + 2 * CUBE_HALF * k + CUBE_HALF + _PLACE_GAP
            cube_pose = pose_matrix(
                (plane_centre[0], plane_centre[1], z), Rotation.from_euler("z", cube_yaw).as_quat()
            )
            tip = cube_pose @ np.linalg.inv(tip_from_cube)
            tip_pos, tip_q = tip[:3, 3], Rotation.from_matrix(tip[:3, :3]).as_quat()
            yield Waypoint(tip_pos + [0, 0, 0.06], tip_q, False, name=f"above stack {k}")
            yield Waypoint(tip_pos, tip_q, True, linear=True, name=f"release block {k}")
            if k < self.count - 1:
                yield Waypoint(tip_pos + [0, 0, 0.06], tip_q, True, linear=True, name=f"retreat {k}")
