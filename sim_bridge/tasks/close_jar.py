"""close_jar: put the lid on the jar of the named colour (RLBench, 20 variations).

Variation ``v`` colours jar ``v % 2`` with ``COLORS[v]`` and the other jar with a random other colour. RLBench
screws the lid on; here closing is placing the lid squarely on the jar's mouth and letting go.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.spatial.transform import Rotation

from sim_bridge.bullet import shapes
from sim_bridge.tasks import colors
from sim_bridge.tasks.base import TABLE_HEIGHT, Task, TaskScene, Waypoint, register, top_down_quaternion
from sim_bridge.tasks.layout import sample_positions

JAR_RADIUS, JAR_HEIGHT = 0.035, 0.08
LID_RADIUS, LID_HEIGHT = 0.031, 0.025
LID_RGBA = (0.6, 0.6, 0.6, 1.0)
GLASS_RGBA = (0.85, 0.9, 0.95, 1.0)
ON_JAR_XY = 0.015  # lid axis at most this far from the jar axis
ON_JAR_Z = 0.01  # lid bottom at most this far from the jar's mouth
MAX_TILT = np.radians(15.0)
_GRIP_BELOW_TOP = 0.008  # tool centre this far below the lid top (fingertips stay clear of the table)
_DROP_GAP = 0.003  # lid released this far above the mouth


@register
class CloseJar(Task):
    name = "close_jar"

    def variation_count(self) -> int:
        return len(colors.COLORS)

    def descriptions(self, variation: int) -> list[str]:
        c = colors.name(variation)
        return [
            f"close the {c} jar",
            f"screw on the {c} jar lid",
            f"grasping the lid, lift it from the table and use it to seal the {c} jar",
            f"pick up the lid from the table and put it on the {c} jar",
        ]

    def build(self, scene: TaskScene, variation: int) -> None:
        others = [i for i in range(len(colors.COLORS)) if i != variation]
        self.distractor_color = int(scene.rng.choice(others))
        jar_colors = [self.distractor_color] * 2
        jar_colors[variation % 2] = variation
        jars_xy = sample_positions(scene.rng, 2, low=(0.0, -0.25), high=(0.32, 0.25), min_distance=0.13)
        (lid_xy,) = sample_positions(
            scene.rng, 1, low=(0.0, -0.25), high=(0.32, 0.25), min_distance=0.13, avoid=jars_xy
        )
        self.jars = []
        for xy, color in zip(jars_xy, jar_colors, strict=True):
            # A clear glass body with a coloured band, so the colour reads from every camera.
            glass = shapes.cylinder(JAR_RADIUS, 0.6 * JAR_HEIGHT, GLASS_RGBA, (0, 0, -0.2 * JAR_HEIGHT))
            band = shapes.cylinder(JAR_RADIUS, 0.4 * JAR_HEIGHT, colors.rgba(color), (0, 0, 0.3 * JAR_HEIGHT))
            body = shapes.create_body(
                scene.client, [glass, band], (xy[0], xy[1], TABLE_HEIGHT + JAR_HEIGHT / 2)
            )
            self.jars.append(scene.track(body))
        self.target = self.jars[variation % 2]
        self.lid = scene.track(
            shapes.create_body(
                scene.client, [shapes.cylinder(LID_RADIUS, LID_HEIGHT, LID_RGBA)],
                (lid_xy[0], lid_xy[1], TABLE_HEIGHT + LID_HEIGHT / 2), mass=0.05,
            )
        )  # fmt: skip

    def graspable(self) -> list[int]:
        return [self.lid]

    def lid_on(self, jar: int) -> bool:
        """Whether the lid sits upright on the jar's mouth (RLBench's proximity sensor above the jar)."""
        assert self.scene is not None
        lid, quat = self.scene.pose(self.lid)
        jar_pos, _ = self.scene.pose(jar)
        mouth = jar_pos[2] + JAR_HEIGHT / 2
        tilt = np.arccos(np.clip(Rotation.from_quat(quat).apply([0, 0, 1])[2], -1.0, 1.0))
        return bool(
            np.linalg.norm(lid[:2] - jar_pos[:2]) <= ON_JAR_XY
            and abs(lid[2] - LID_HEIGHT / 2 - mouth) <= ON_JAR_Z
            and tilt <= MAX_TILT
        )

    def success(self) -> bool:
        assert self.scene is not None
        return self.lid_on(self.target) and self.scene.held_body() is None

    def demo(self) -> Iterator[Waypoint]:
        assert self.scene is not None
        scene = self.scene
        down = top_down_quaternion()
        lid, _ = scene.pose(self.lid)
        grasp = lid + [0.0, 0.0, LID_HEIGHT / 2 - _GRIP_BELOW_TOP]
        up = np.array([0.0, 0.0, 0.1])
        yield Waypoint(grasp + up, down, True, name="above lid")
        yield Waypoint(grasp, down, False, linear=True, name="grasp lid")
        yield Waypoint(grasp + up, down, False, linear=True, name="lift lid")
        # The tool keeps its orientation, so the lid keeps its offset from the tool centre.
        lid_now, _ = scene.pose(self.lid)
        lid_to_tip = scene.robot.tip_pose()[:3, 3] - lid_now
        jar, _ = scene.pose(self.target)
        seated = np.array([jar[0], jar[1], jar[2] + JAR_HEIGHT / 2 + LID_HEIGHT / 2 + _DROP_GAP])
        yield Waypoint(seated + lid_to_tip + [0, 0, 0.06], down, False, name="above jar")
        yield Waypoint(seated + lid_to_tip, down, True, linear=True, name="lid on jar")
        yield Waypoint(seated + lid_to_tip + up, down, True, linear=True, name="retreat")
