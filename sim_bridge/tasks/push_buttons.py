"""push_buttons: three spring-loaded buttons; push the named ones in order (RLBench, 50 variations)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pybullet as p

from sim_bridge.bullet import shapes
from sim_bridge.tasks import colors
from sim_bridge.tasks.base import TABLE_HEIGHT, Task, TaskScene, Waypoint, register, top_down_quaternion
from sim_bridge.tasks.layout import sample_positions

# RLBench uses every colour except red and lime, and only the first 17 of its colour permutations:
# all 50 variations therefore start with maroon.
_BUTTON_COLORS = [i for i, (n, _) in enumerate(colors.COLORS) if n not in ("red", "lime")]
_PERMUTATIONS = list(itertools.islice(itertools.permutations(_BUTTON_COLORS, 3), 17))
_BASE_HALF = (0.04, 0.04, 0.01)
_PLUNGER_RADIUS, _PLUNGER_HEIGHT = 0.025, 0.02
_TRAVEL = 0.015
PRESSED_AT = 0.004  # m of plunger travel that counts as a press


@register
class PushButtons(Task):
    name = "push_buttons"

    def variation_count(self) -> int:
        return 50

    def _plan(self, variation: int) -> tuple[tuple[int, ...], int]:
        return _PERMUTATIONS[variation // 3], 1 + variation % 3

    def descriptions(self, variation: int) -> list[str]:
        perm, count = self._plan(variation)
        names = [colors.name(c) for c in perm[:count]]
        push = f"push the {names[0]} button"
        press = f"press the {names[0]} button"
        base = f"push down the button with the {names[0]} base"
        for n in names[1:]:
            push += f", then push the {n} button"
            press += f", then press the {n} button"
            base += f", then the {n} one"
        return [push, press, base]

    def build(self, scene: TaskScene, variation: int) -> None:
        perm, self.count = self._plan(variation)
        self.colors = list(perm)
        positions = sample_positions(scene.rng, 3, low=(0.0, -0.3), high=(0.3, 0.3), min_distance=0.14)
        self.buttons: list[int] = []
        for color, xy in zip(self.colors, positions, strict=True):
            plunger = shapes.LinkSpec(
                shapes=(shapes.cylinder(_PLUNGER_RADIUS, _PLUNGER_HEIGHT, colors.rgba(color)),),
                joint="prismatic",
                position=(0.0, 0.0, _BASE_HALF[2] + _PLUNGER_HEIGHT / 2),
                axis=(0.0, 0.0, -1.0),
                limits=(0.0, _TRAVEL),
                mass=0.05,
            )
            body = shapes.create_articulated(
                scene.client,
                [shapes.box(_BASE_HALF, (0.3, 0.3, 0.3, 1.0))],
                (xy[0], xy[1], TABLE_HEIGHT + _BASE_HALF[2]),
                shapes.IDENTITY,
                [plunger],
            ).body
            # A weak position motor acts as the spring that pushes the plunger back up.
            p.setJointMotorControl2(body, 0, p.POSITION_CONTROL, targetPosition=0.0, force=4.0,
                                    physicsClientId=scene.client)  # fmt: skip
            self.buttons.append(scene.track(body))
        self.pressed: list[int] = []

    def on_tick(self) -> None:
        assert self.scene is not None
        for i, body in enumerate(self.buttons):
            if i not in self.pressed and self.scene.joint_position(body, 0) > PRESSED_AT:
                self.pressed.append(i)

    def success(self) -> bool:
        self.on_tick()
        return self.pressed[: self.count] == list(range(self.count))

    def top_of(self, i: int) -> np.ndarray:
        assert self.scene is not None
        pos, _ = self.scene.pose(self.buttons[i])
        return pos + np.array([0.0, 0.0, _BASE_HALF[2] + _PLUNGER_HEIGHT])

    def demo(self) -> Iterator[Waypoint]:
        down = top_down_quaternion()
        for i in range(self.count):
            top = self.top_of(i)
            yield Waypoint(top + [0, 0, 0.083], down, gripper_open=False, name=f"above button {i}")
            yield Waypoint(
                top - [0, 0, 0.01], down, False, ignore_collisions=True, linear=True, name=f"press {i}"
            )
