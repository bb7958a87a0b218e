"""sweep_to_dustpan_of_size: a broom stands on the table next to five bits of dirt that lie between a tall
and a short dustpan; sweep the dirt into the named one (RLBench, 2 variations).

The broom is a handle on a wide brush head and stands on its head; the demo grasps the top of the handle,
lowers the head just above the table behind the dirt and pushes it straight over the pan's thin floor.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pybullet as p
from scipy.spatial.transform import Rotation

from sim_bridge.bullet import shapes
from sim_bridge.bullet.robot import pose_matrix
from sim_bridge.errors import SimError
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

SIZES = ("tall", "short")
DIRT_COUNT = 5
DIRT_HALF = 0.007
_HEAD_HALF = (0.07, 0.015, 0.015)  # brush head: long axis along the broom's x
_HANDLE_RADIUS, _HANDLE_LENGTH = 0.011, 0.22
_GRIP_BELOW_TOP = 0.025
# Dustpan frame: origin on the table at the middle of its open front edge, +y into the pan.
PAN_WIDTH, PAN_DEPTH = 0.18, 0.12
_PAN_FLOOR = 0.002
_PAN_WALL = 0.005
_PAN_SIDE_HEIGHT = 0.04
_BACK_HEIGHT = {"tall": 0.12, "short": 0.04}
_PAN_RGBA = {"tall": (0.2, 0.45, 0.8, 1.0), "short": (0.85, 0.35, 0.2, 1.0)}
_PAN_GAP = 0.11  # from the middle of the dirt to each pan's front edge
_START_BEHIND = 0.012  # m from the head's front face to the rearmost dirt when the sweep starts
_SWEEP_CLEARANCE = 0.0035  # brush head bottom above the table while sweeping
_ABOVE = 0.08
_BROOM_CLEARANCE = 0.01  # m between the standing broom and either pan


@register
class SweepToDustpanOfSize(Task):
    name = "sweep_to_dustpan_of_size"

    def variation_count(self) -> int:
        return len(SIZES)

    def descriptions(self, variation: int) -> list[str]:
        size = SIZES[variation]
        return [
            f"sweep dirt to the {size} dustpan",
            f"sweep the dirt up into the {size} dustpan",
            f"use the broom to brush the dirt into the {size} dustpan",
            f"clean up the dirt with the {size} pan",
        ]

    # -- scene ---------------------------------------------------------------------------------------------
    def build(self, scene: TaskScene, variation: int) -> None:
        rng = scene.rng
        self.size = SIZES[variation]
        self._head_passes_table = False
        centre = np.array([rng.uniform(0.15, 0.25), rng.uniform(-0.04, 0.04)])
        tall_side = 1.0 if rng.random() < 0.5 else -1.0
        self.pans: dict[str, int] = {}
        self.pan_frames: dict[str, tuple[np.ndarray, float]] = {}
        for size, side in (("tall", tall_side), ("short", -tall_side)):
            front = centre + np.array([rng.uniform(-0.01, 0.01), side * _PAN_GAP])
            yaw = (0.0 if side > 0 else math.pi) + float(rng.uniform(-0.12, 0.12))
            self.pan_frames[size] = (front, yaw)
            self.pans[size] = scene.track(self._make_pan(scene.client, size, front, yaw))
        self.dirt: list[int] = []
        for _ in range(DIRT_COUNT):
            for _try in range(1000):
                xy = centre + rng.uniform((-0.035, -0.03), (0.035, 0.03))
                if all(np.linalg.norm(xy - scene.pose(d)[0][:2]) > 3 * DIRT_HALF for d in self.dirt):
                    break
            body = shapes.create_body(
                scene.client,
                [shapes.box((DIRT_HALF,) * 3, (0.3, 0.22, 0.12, 1.0))],
                (xy[0], xy[1], TABLE_HEIGHT + DIRT_HALF),
                Rotation.from_euler("z", rng.uniform(-math.pi, math.pi)).as_quat(),
                mass=0.02,
            )
            self.dirt.append(scene.track(body))
        handle_rgba, head_rgba = (0.55, 0.35, 0.15, 1.0), (0.9, 0.8, 0.3, 1.0)
        self.broom = scene.track(
            shapes.create_body(
                scene.client,
                [
                    shapes.box(_HEAD_HALF, head_rgba),
                    shapes.cylinder(
                        _HANDLE_RADIUS,
                        _HANDLE_LENGTH,
                        handle_rgba,
                        offset=(0.0, 0.0, _HEAD_HALF[2] + _HANDLE_LENGTH / 2),
                    ),
                ],
                *self._broom_pose(rng),
                mass=0.3,
            )
        )
        # The broom's box may reach into a pan (about 1 scene in 200): the physics then pushes it through the
        # table and the demo fails. Redraw its pose until it stands clear of both pans.
        for _try in range(100):
            p.performCollisionDetection(physicsClientId=scene.client)
            if not any(
                p.getClosestPoints(self.broom, pan, _BROOM_CLEARANCE, physicsClientId=scene.client)
                for pan in self.pans.values()
            ):
                return
            p.resetBasePositionAndOrientation(
                self.broom, *self._broom_pose(rng), physicsClientId=scene.client
            )
        raise SimError("could not place the broom clear of the dustpans")

    @staticmethod
    def _broom_pose(rng: np.random.Generator) -> tuple[tuple[float, float, float], np.ndarray]:
        xy = np.array([rng.uniform(0.0, 0.04), rng.uniform(-0.12, 0.12)])
        yaw = float(rng.uniform(-0.5, 0.5))
        return (xy[0], xy[1], TABLE_HEIGHT + _HEAD_HALF[2]), Rotation.from_euler("z", yaw).as_quat()

    @staticmethod
    def _make_pan(client: int, size: str, front: np.ndarray, yaw: float) -> int:
        rgba = _PAN_RGBA[size]
        hw, d = PAN_WIDTH / 2, PAN_DEPTH
        back_h = _BACK_HEIGHT[size]
        parts = [
            shapes.box((hw, d / 2, _PAN_FLOOR / 2), rgba, offset=(0.0, d / 2, _PAN_FLOOR / 2)),
            shapes.box((hw, _PAN_WALL / 2, back_h / 2), rgba, offset=(0.0, d + _PAN_WALL / 2, back_h / 2)),
        ] + [
            shapes.box(
                (_PAN_WALL / 2, d / 2, _PAN_SIDE_HEIGHT / 2),
                rgba,
                offset=(s * (hw - _PAN_WALL / 2), d / 2, _PAN_SIDE_HEIGHT / 2),
            )
            for s in (-1.0, 1.0)
        ]
        grey = (0.25, 0.25, 0.27, 1.0)
        if size == "tall":  # an upright handle behind the back wall
            parts.append(shapes.cylinder(0.01, 0.2, grey, offset=(0.0, d + 0.03, back_h + 0.1 - 0.02)))
            parts.append(shapes.box((0.01, 0.015, 0.01), grey, offset=(0.0, d + 0.015, back_h - 0.02)))
        else:  # a short handle sticking out of the back
            along_y = tuple(Rotation.from_euler("x", math.pi / 2).as_quat())
            parts.append(shapes.cylinder(0.01, 0.1, grey, offset=(0.0, d + 0.05, 0.02), orientation=along_y))
        quat = Rotation.from_euler("z", yaw).as_quat()
        return shapes.create_body(client, parts, (front[0], front[1], TABLE_HEIGHT), quat)

    def _to_pan(self, size: str, xy: np.ndarray) -> np.ndarray:
        front, yaw = self.pan_frames[size]
        c, s = math.cos(yaw), math.sin(yaw)
        d = np.asarray(xy) - front
        return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]])

    def _to_world(self, size: str, local) -> np.ndarray:
        front, yaw = self.pan_frames[size]
        c, s = math.cos(yaw), math.sin(yaw)
        return front + np.array([c * local[0] - s * local[1], s * local[0] + c * local[1]])

    def graspable(self) -> list[int]:
        return [self.broom]

    def on_tick(self) -> None:
        """A held broom's bristles give where the head meets the table, as a real brush's do.

        The head is a rigid box: without this, a head tilted a few degrees digs one end into the table,
        the contact lifts the whole broom and the other end sweeps over the dirt (measured with
        ``keyframe_noise``: 6 of 20 scripted sweeps survived 5 degrees of keyframe noise, 11 of 20 with
        it). The standing broom keeps its contact, so it still rests on the table.
        """
        assert self.scene is not None
        held = self.scene.held_body() == self.broom
        if held != self._head_passes_table:
            p.setCollisionFilterPair(
                self.broom, self.scene.table, -1, -1, int(not held), physicsClientId=self.scene.client
            )
            self._head_passes_table = held

    def in_pan(self, body: int, size: str) -> bool:
        """RLBench's sensor over the pan: the body lies on the pan's floor, between its walls."""
        assert self.scene is not None
        pos, _ = self.scene.pose(body)
        local = self._to_pan(size, pos[:2])
        return bool(
            abs(local[0]) < PAN_WIDTH / 2 - _PAN_WALL
            and 0.0 < local[1] < PAN_DEPTH
            and pos[2] < TABLE_HEIGHT + _PAN_SIDE_HEIGHT
        )

    def success(self) -> bool:
        return all(self.in_pan(d, self.size) for d in self.dirt)

    # -- demo ----------------------------------------------------------------------------------------------
    def demo(self) -> Iterator[Waypoint]:
        assert self.scene is not None
        scene = self.scene
        front, pan_yaw = self.pan_frames[self.size]
        broom_pos, broom_quat = scene.pose(self.broom)
        broom_yaw = yaw_of(broom_quat)
        # Fingers close along the brush head's long axis (tool y along broom x), so that while sweeping the
        # long hand lies across the sweep and clears the pan's back. The wrist yaw is a continuous function of
        # the scene, so that a policy can learn it: the grasp is the broom's yaw plus a quarter turn (the
        # broom spawns within +-0.5 rad, so this never wraps), and the broom, which looks the same after a
        # half turn, turns the least way onto the pan's axis (a wrist yaw near a quarter turn throughout).
        grasp_yaw = broom_yaw + math.pi / 2
        turn = min((wrap_angle(pan_yaw + k * math.pi - broom_yaw) for k in (0, 1)), key=abs)
        top = broom_pos + [0.0, 0.0, _HEAD_HALF[2] + _HANDLE_LENGTH - _GRIP_BELOW_TOP]
        grasp_q = top_down_quaternion(grasp_yaw)
        yield Waypoint(top + [0, 0, _ABOVE], grasp_q, True, name="above broom")
        yield Waypoint(top, grasp_q, False, ignore_collisions=True, linear=True, name="grasp broom")
        yield Waypoint(
            top + [0, 0, 0.1], grasp_q, False, ignore_collisions=True, linear=True, name="lift broom"
        )
        broom_pose = pose_matrix(*scene.pose(self.broom))
        tip_from_broom = np.linalg.inv(scene.robot.tip_pose()) @ broom_pose
        # Sweep along the pan's +y: start behind the dirt furthest from the pan, end deep inside the pan.
        behind = min(self._to_pan(self.size, scene.pose(d)[0][:2])[1] for d in self.dirt)
        start_y = behind - DIRT_HALF * math.sqrt(2) - _HEAD_HALF[1] - _START_BEHIND
        end_y = PAN_DEPTH - 2 * DIRT_HALF * math.sqrt(2) - _HEAD_HALF[1] - 0.012
        rotation = Rotation.from_euler("z", turn).as_matrix() @ broom_pose[:3, :3]
        head_z = TABLE_HEIGHT + _PAN_FLOOR + _SWEEP_CLEARANCE + _HEAD_HALF[2]

        def tool_at(local_y: float, lift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
            target = np.eye(4)
            target[:3, :3] = rotation
            target[:3, 3] = (*self._to_world(self.size, (0.0, local_y)), head_z + lift)
            tip = target @ np.linalg.inv(tip_from_broom)
            return tip[:3, 3], Rotation.from_matrix(tip[:3, :3]).as_quat()

        pos, quat = tool_at(start_y, lift=0.06)
        yield Waypoint(pos, quat, False, name="above sweep start")
        pos, quat = tool_at(start_y)
        yield Waypoint(pos, quat, False, ignore_collisions=True, linear=True, name="brush down")
        pos, quat = tool_at(end_y)
        yield Waypoint(pos, quat, False, ignore_collisions=True, linear=True, name="sweep into pan")
