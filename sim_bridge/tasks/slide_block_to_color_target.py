"""slide_block_to_color_target: push a block onto one of four coloured squares (RLBench, 4 variations).

RLBench's code names the targets green, blue, pink and yellow (the paper says red instead of pink). The four
squares surround the block, one per side, and the whole layout is placed and turned at random. The squares are
flat, collision-free patches so that the block slides over them without catching an edge.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pybullet as p
from scipy.spatial.transform import Rotation

from sim_bridge.bullet import shapes
from sim_bridge.tasks import colors
from sim_bridge.tasks.base import TABLE_HEIGHT, Task, TaskScene, Waypoint, register, top_down_quaternion

# Pink is not one of RLBench's 20 named colours (its target colour lives in the scene file); light pink.
PINK = (1.0, 0.75, 0.8)
_NAMED = dict(colors.COLORS)
TARGETS: list[tuple[str, tuple[float, float, float]]] = [
    ("green", _NAMED["green"]),
    ("blue", _NAMED["blue"]),
    ("pink", PINK),
    ("yellow", _NAMED["yellow"]),
]
# Direction of each target from the block, in the layout frame (angle about z).
_TARGET_ANGLES = (0.0, np.pi / 2, np.pi, -np.pi / 2)
TARGET_DISTANCE = 0.14  # block centre to square centre
TARGET_HALF = 0.05  # squares are 10 cm wide; the block must end with its centre on the square
BLOCK_HALF = (0.025, 0.025, 0.025)
_FINGER_HALF_DEPTH = 0.0145  # closed fingertips' half thickness along the tool x axis (the push face)
_PUSH_HEIGHT = 0.02  # tool centre above the table while pushing (fingertips ~9 mm above it)
_RUN_UP = 0.03  # gap between the fingers and the block before the push starts
_FIRST_STROKE_SHORT = 0.05  # the first stroke stops this far short of the square's centre
_STOP_SHORT = 0.02  # pushes kick the block ~2 cm beyond the fingers: stop that much early


@register
class SlideBlockToColorTarget(Task):
    name = "slide_block_to_color_target"

    def variation_count(self) -> int:
        return len(TARGETS)

    def descriptions(self, variation: int) -> list[str]:
        c = TARGETS[variation][0]
        return [
            f"slide the block to {c} target",
            f"slide the block onto the {c} square",
            f"push the block until it is sitting on top of the {c} target",
            f"slide the block towards the {c} plane",
            f"cover the {c} target with the block by pushing the block in its direction",
        ]

    def build(self, scene: TaskScene, variation: int) -> None:
        centre = scene.rng.uniform((0.1, -0.08), (0.22, 0.08))
        self.layout_yaw = float(scene.rng.uniform(-np.pi / 4, np.pi / 4))
        block_yaw = self.layout_yaw + scene.rng.uniform(-0.05, 0.05)
        self.block = scene.track(
            shapes.create_body(
                scene.client, [shapes.box(BLOCK_HALF, (0.55, 0.35, 0.2, 1.0))],
                (centre[0], centre[1], TABLE_HEIGHT + BLOCK_HALF[2]),
                Rotation.from_euler("z", block_yaw).as_quat(), mass=0.1, friction=0.5,
            )
        )  # fmt: skip
        # Torsional friction with the table keeps the block from spinning away when the fingers kick it.
        p.changeDynamics(self.block, -1, spinningFriction=0.05, physicsClientId=scene.client)
        self.squares: list[int] = []
        for (_, rgb), angle in zip(TARGETS, _TARGET_ANGLES, strict=True):
            a = self.layout_yaw + angle
            xy = centre + TARGET_DISTANCE * np.array([np.cos(a), np.sin(a)])
            square = shapes.create_body(
                scene.client, [shapes.box((TARGET_HALF, TARGET_HALF, 0.0005), (*rgb, 1.0))],
                (xy[0], xy[1], TABLE_HEIGHT + 0.0005), Rotation.from_euler("z", self.layout_yaw).as_quat(),
            )  # fmt: skip
            p.setCollisionFilterGroupMask(square, -1, 0, 0, physicsClientId=scene.client)
            self.squares.append(scene.track(square))

    def block_on(self, square: int) -> bool:
        """Whether the block's centre lies over the square (RLBench's proximity sensor on the target)."""
        assert self.scene is not None
        block, _ = self.scene.pose(self.block)
        pos, quat = self.scene.pose(square)
        local = Rotation.from_quat(quat).inv().apply(block - pos)
        return bool(np.all(np.abs(local[:2]) <= TARGET_HALF) and abs(block[2] - pos[2]) < 0.05)

    def success(self) -> bool:
        return self.block_on(self.squares[self.variation])

    def _push_pose(self, block: np.ndarray, goal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit push direction from ``block`` towards ``goal`` and the tool orientation that pushes along it.

        The tool's x axis points along the push so that the two closed fingers form one wide pushing face; the
        hand is symmetric under a half turn, so the wrist yaw is kept within +-90 degrees.
        """
        direction = (goal - block)[:2] / np.linalg.norm((goal - block)[:2])
        yaw = float(np.arctan2(direction[1], direction[0]))
        return direction, top_down_quaternion((yaw + np.pi / 2) % np.pi - np.pi / 2)

    def demo(self) -> Iterator[Waypoint]:
        """Two strokes: a long push that stops short of the square, then, from wherever the block went (pushes
        kick and turn it a little), a short corrective push onto the square's centre."""
        assert self.scene is not None
        contact = BLOCK_HALF[0] + _FINGER_HALF_DEPTH
        z = TABLE_HEIGHT + _PUSH_HEIGHT
        block, _ = self.scene.pose(self.block)
        target, _ = self.scene.pose(self.squares[self.variation])
        direction, q = self._push_pose(block, target)
        start = np.array([*(block[:2] - direction * (contact + _RUN_UP)), z])
        end = np.array([*(target[:2] - direction * (contact + _FIRST_STROKE_SHORT)), z])
        yield Waypoint(start + [0, 0, 0.1], q, False, name="above push start")
        yield Waypoint(start, q, False, linear=True, name="lower behind block")
        yield Waypoint(end, q, False, ignore_collisions=True, linear=True, name="push")
        block, _ = self.scene.pose(self.block)
        if float(np.dot((target - block)[:2], direction)) < _STOP_SHORT:
            return  # already at (or past) the centre: a corrective stroke would come from the wrong side
        direction, q = self._push_pose(block, target)
        start = np.array([*(block[:2] - direction * (contact + _RUN_UP)), z])
        end = np.array([*(target[:2] - direction * (contact + _STOP_SHORT)), z])
        yield Waypoint(start, q, False, ignore_collisions=True, linear=True, name="realign behind block")
        yield Waypoint(end, q, False, ignore_collisions=True, linear=True, name="corrective push")
