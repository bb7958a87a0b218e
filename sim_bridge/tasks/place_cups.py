"""place_cups: three mugs stand on the table next to a mug tree with three spokes; hang the given number of
mugs on the tree by their handles (RLBench, 3 variations: 1, 2 or 3 mugs).

A mug is a hollow cylinder of box staves with a closed rectangular handle loop; a mug is on a spoke when
the spoke's axis passes through the loop. The demo pinches the rim opposite the handle, brings the mug
beside a spoke with the loop in line with it, slides the loop onto the spoke and lets go; the mug then
swings down and hangs from its handle.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pybullet as p
from scipy.spatial.transform import Rotation

from sim_bridge.bullet import shapes
from sim_bridge.bullet.robot import pose_matrix
from sim_bridge.tasks.base import TABLE_HEIGHT, Task, TaskScene, Waypoint, register, top_down_quaternion

MUG_COUNT = 3
# Mug frame: origin at the centre of the mug (half-way up its axis), handle along +x.
MUG_RADIUS, MUG_HEIGHT, MUG_WALL = 0.04, 0.09, 0.004
MUG_MASS = 0.2  # heavy enough for the contact solver to keep the pinching fingers out of the thin wall
_MUG_STAVES = 12  # + bottom + 3 handle bars = 16 shapes, pybullet's limit for one compound body
HOLE_WIDTH, HOLE_HEIGHT = 0.028, 0.045  # the loop's opening, radially and vertically
HOLE_Z = 0.0  # the opening's centre height in the mug frame
_BAR = 0.008
_HANDLE_DEPTH = 0.014
_MUG_RGBA = ((0.85, 0.85, 0.8, 1.0), (0.3, 0.55, 0.75, 1.0), (0.75, 0.35, 0.3, 1.0))
# The mug tree: a trunk with three spokes, each rising slightly from the trunk towards its tip.
# In the tree frame, hung in this order: the two side spokes, then the one facing the robot (a mug hanging
# there would be in the way of the others).
SPOKE_AZIMUTHS = (math.radians(90.0), math.radians(-90.0), math.pi)
SPOKE_HEIGHT = 0.2  # spoke root above the table
SPOKE_LENGTH = 0.16
SPOKE_RADIUS = 0.006
SPOKE_ELEVATION = math.radians(8.0)
_TRUNK_RADIUS, _TRUNK_HEIGHT = 0.012, 0.25
_TREE_RGBA = (0.45, 0.3, 0.2, 1.0)
_HANG_AT = 0.1  # along the spoke, from the trunk's axis, where the loop is released
_PRE_THREAD = 0.035  # the loop starts this far beyond the spoke's tip
_ABOVE = 0.1
_CLEARANCE = 0.06  # a carried mug's bottom stays this far above the spokes' tips
_RIM_GRIP = 0.006  # tool centre below the rim while pinching it


def mug_shapes(rgba) -> list[shapes.Shape]:
    """Staves, bottom and a closed handle loop (top bar, outer bar, bottom bar) on the +x side."""
    half_width = MUG_RADIUS * math.tan(math.pi / _MUG_STAVES) + 0.0005
    r = MUG_RADIUS - MUG_WALL / 2
    parts = [
        shapes.cylinder(MUG_RADIUS - 0.001, MUG_WALL, rgba, offset=(0.0, 0.0, -MUG_HEIGHT / 2 + MUG_WALL / 2))
    ]
    for k in range(_MUG_STAVES):
        a = 2 * math.pi * k / _MUG_STAVES
        parts.append(
            shapes.box(
                (MUG_WALL / 2, half_width, MUG_HEIGHT / 2),
                rgba,
                offset=(r * math.cos(a), r * math.sin(a), 0.0),
                orientation=tuple(Rotation.from_euler("z", a).as_quat()),
            )
        )
    inner = MUG_RADIUS - 0.002  # the bars reach into the wall
    outer = MUG_RADIUS + HOLE_WIDTH + _BAR
    bar_half = ((outer - inner) / 2, _HANDLE_DEPTH / 2, _BAR / 2)
    for z in (HOLE_Z + HOLE_HEIGHT / 2 + _BAR / 2, HOLE_Z - HOLE_HEIGHT / 2 - _BAR / 2):
        parts.append(shapes.box(bar_half, rgba, offset=((inner + outer) / 2, 0.0, z)))
    parts.append(
        shapes.box(
            (_BAR / 2, _HANDLE_DEPTH / 2, HOLE_HEIGHT / 2 + _BAR),
            rgba,
            offset=(outer - _BAR / 2, 0.0, HOLE_Z),
        )
    )
    return parts


def _spoke_direction(azimuth: float) -> np.ndarray:
    return np.array(
        [
            math.cos(SPOKE_ELEVATION) * math.cos(azimuth),
            math.cos(SPOKE_ELEVATION) * math.sin(azimuth),
            math.sin(SPOKE_ELEVATION),
        ]
    )


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def wrist_strain(tool_yaw: float, xy: np.ndarray) -> float:
    """How far a top-down tool yaw at ``xy`` is from the middle of the Panda's last joint's range (+-2.9 rad):
    with the tool pointing down, that joint sits at about 0.785 + (base yaw towards xy) - tool yaw."""
    towards = math.atan2(xy[1], xy[0] + 0.3)  # the robot base is at x = -0.3
    return abs(_wrap(tool_yaw - towards - 0.785))


def _quaternion(pose: np.ndarray) -> np.ndarray:
    return Rotation.from_matrix(pose[:3, :3]).as_quat()


def _yaw(quat: np.ndarray) -> float:
    m = Rotation.from_quat(quat).as_matrix()
    return float(math.atan2(m[1, 0], m[0, 0]))


@register
class PlaceCups(Task):
    name = "place_cups"

    def variation_count(self) -> int:
        return MUG_COUNT

    def descriptions(self, variation: int) -> list[str]:
        n = variation + 1
        if n == 1:
            return [
                "place 1 cup on the cup holder",
                "pick up one cup and put it on the mug tree",
                "move 1 mug from the table to the cup holder",
                "pick up one cup and slide its handle onto a spoke on the mug holder",
            ]
        return [
            f"place {n} cups on the cup holder",
            f"pick up {n} cups and place them on the holder",
            f"move {n} cups from the table to the mug tree",
            f"pick up {n} mugs and slide their handles onto the cup holder spokes",
        ]

    # -- scene ---------------------------------------------------------------------------------------------
    def build(self, scene: TaskScene, variation: int) -> None:
        rng = scene.rng
        self.count = variation + 1
        self.tree_xy = np.array([rng.uniform(0.29, 0.33), rng.uniform(-0.05, 0.05)])
        self.tree_yaw = float(rng.uniform(-0.2, 0.2))
        self.tree = scene.track(self._make_tree(scene.client))
        xys = self._mug_positions(rng)
        self.mugs: list[int] = []
        for k, xy in enumerate(xys):
            # Each mug's handle roughly faces the way it will hang on its spoke (the wrist cannot turn a mug
            # half a turn while holding it).
            yaw = self._hang_yaw(k) + float(rng.uniform(-math.pi / 3, math.pi / 3))
            body = shapes.create_body(
                scene.client,
                mug_shapes(_MUG_RGBA[k]),
                (xy[0], xy[1], TABLE_HEIGHT + MUG_HEIGHT / 2),
                Rotation.from_euler("z", yaw).as_quat(),
                mass=MUG_MASS,
            )
            # Damped, so that a mug let go on a spoke settles instead of swinging on.
            p.changeDynamics(body, -1, angularDamping=0.95, physicsClientId=scene.client)
            self.mugs.append(scene.track(body))

    def _make_tree(self, client: int) -> int:
        parts = [
            shapes.cylinder(0.07, 0.012, _TREE_RGBA, offset=(0.0, 0.0, 0.006)),
            shapes.cylinder(_TRUNK_RADIUS, _TRUNK_HEIGHT, _TREE_RGBA, offset=(0.0, 0.0, _TRUNK_HEIGHT / 2)),
        ]
        for azimuth in SPOKE_AZIMUTHS:
            d = _spoke_direction(azimuth)
            # A cylinder's axis is its local z: tilt it onto the spoke direction.
            rot = Rotation.from_euler("z", azimuth) * Rotation.from_euler("y", math.pi / 2 - SPOKE_ELEVATION)
            centre = np.array([0.0, 0.0, SPOKE_HEIGHT]) + d * SPOKE_LENGTH / 2
            parts.append(
                shapes.cylinder(
                    SPOKE_RADIUS,
                    SPOKE_LENGTH,
                    _TREE_RGBA,
                    offset=tuple(centre),
                    orientation=tuple(rot.as_quat()),
                )
            )
        quat = Rotation.from_euler("z", self.tree_yaw).as_quat()
        return shapes.create_body(client, parts, (*self.tree_xy, TABLE_HEIGHT), quat)

    def _mug_positions(self, rng: np.random.Generator) -> list[np.ndarray]:
        """Mugs in front of the tree, far enough apart for the open fingers; restarts when crowded out."""
        for _ in range(200):
            placed: list[np.ndarray] = []
            for _ in range(100):
                xy = rng.uniform((0.0, -0.32), (0.17, 0.32))
                if np.linalg.norm(xy - self.tree_xy) > 0.2 and all(
                    np.linalg.norm(xy - q) > 0.19 for q in placed
                ):
                    placed.append(xy)
                    if len(placed) == MUG_COUNT:
                        return placed
        raise ValueError("could not place the mugs")

    def spoke(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """World position of spoke ``k``'s root on the trunk axis and its unit direction."""
        azimuth = self.tree_yaw + SPOKE_AZIMUTHS[k]
        root = np.array([*self.tree_xy, TABLE_HEIGHT + SPOKE_HEIGHT])
        return root, _spoke_direction(azimuth)

    def _side(self, k: int) -> np.ndarray:
        """Horizontal unit vector from spoke ``k`` to the centre of a mug threaded on it: towards the robot
        for the side spokes; for the front spoke, the side facing the robot's base along y."""
        _, d = self.spoke(k)
        flat = np.array([d[0], d[1], 0.0]) / math.hypot(d[0], d[1])
        side = np.array([-flat[1], flat[0], 0.0])
        to_robot = np.array([-0.3, 0.0, 0.0]) - np.array([*self.tree_xy, 0.0])
        if k == 2:
            return side if side[1] * np.sign(self.tree_xy[1] + 1e-9) < 0 else -side
        return side if np.dot(side, to_robot) > 0 else -side

    def _hang_yaw(self, k: int) -> float:
        """Yaw of a mug threaded on spoke ``k``: its handle (+x) points from the mug to the spoke."""
        if k >= len(SPOKE_AZIMUTHS):
            return 0.0
        side = self._side(k)
        return math.atan2(-side[1], -side[0])

    def threaded_pose(self, k: int, along: float) -> np.ndarray:
        """World pose (4x4) of an upright mug whose loop is centred on spoke ``k``'s axis, ``along`` metres
        from the trunk's axis, with the spoke running through the loop."""
        root, d = self.spoke(k)
        # The loop's centre lies HOLE_WIDTH / 2 beyond the wall along the handle, i.e. against ``side``.
        centre = (
            root + along * d + self._side(k) * (MUG_RADIUS + HOLE_WIDTH / 2) - np.array([0.0, 0.0, HOLE_Z])
        )
        return pose_matrix(centre, Rotation.from_euler("z", self._hang_yaw(k)).as_quat())

    def graspable(self) -> list[int]:
        return list(self.mugs)

    # -- success -------------------------------------------------------------------------------------------
    def threaded(self, mug: int, k: int) -> bool:
        """Whether spoke ``k``'s axis passes through the mug's handle loop (the loop lies in the mug's
        x-z plane, so the axis must cross that plane inside the opening, within the spoke's length)."""
        assert self.scene is not None
        world_from_mug = pose_matrix(*self.scene.pose(mug))
        mug_from_world = np.linalg.inv(world_from_mug)
        root, d = self.spoke(k)
        o = mug_from_world[:3, :3] @ root + mug_from_world[:3, 3]
        v = mug_from_world[:3, :3] @ d
        if abs(v[1]) < 0.3:  # the spoke runs (nearly) along the loop's plane: it cannot pass through it
            return False
        t = -o[1] / v[1]
        x, z = o[0] + t * v[0], o[2] + t * v[2]
        return bool(
            0.0 <= t <= SPOKE_LENGTH
            and MUG_RADIUS <= x <= MUG_RADIUS + HOLE_WIDTH
            and abs(z - HOLE_Z) <= HOLE_HEIGHT / 2
        )

    def mugs_on_tree(self) -> int:
        """Number of spokes carrying a mug."""
        return sum(any(self.threaded(m, k) for m in self.mugs) for k in range(len(SPOKE_AZIMUTHS)))

    def success(self) -> bool:
        assert self.scene is not None
        return self.mugs_on_tree() >= self.count and self.scene.held_body() is None

    # -- demo ----------------------------------------------------------------------------------------------
    def _pinch(self, mug: int) -> tuple[np.ndarray, float]:
        """Tool position and yaw pinching the rim opposite the handle, fingers closing across the wall."""
        assert self.scene is not None
        pos, quat = self.scene.pose(mug)
        yaw = _yaw(quat)
        away = np.array([math.cos(yaw), math.sin(yaw), 0.0])
        rim = pos - away * (MUG_RADIUS - MUG_WALL / 2) + [0.0, 0.0, MUG_HEIGHT / 2 - _RIM_GRIP]
        # Tool y (the closing direction) along the handle's axis; fold to the middle of the wrist's range.
        return rim, (yaw + math.pi / 2 + math.pi / 2) % math.pi - math.pi / 2

    def demo(self) -> Iterator[Waypoint]:
        assert self.scene is not None
        scene = self.scene
        up = np.array([0.0, 0.0, _ABOVE])
        for k in range(self.count):
            mug = self.mugs[k]
            rim, grasp_yaw = self._pinch(mug)
            # Of the two equivalent finger yaws, keep the wrist nearest its middle both at the mug and at the
            # spoke (where the mug will have turned).
            turn = _wrap(self._hang_yaw(k) - _yaw(scene.pose(mug)[1]))
            spoke_xy = (self.spoke(k)[0] + _HANG_AT * self.spoke(k)[1])[:2]
            flipped = grasp_yaw - math.copysign(math.pi, grasp_yaw)
            grasp_yaw = min(
                (grasp_yaw, flipped),
                key=lambda y: max(wrist_strain(y, rim[:2]), wrist_strain(y + turn, spoke_xy)),
            )
            grasp_q = top_down_quaternion(grasp_yaw)
            yield Waypoint(rim + up, grasp_q, True, name=f"above mug {k}")
            yield Waypoint(rim, grasp_q, False, ignore_collisions=True, linear=True, name=f"grasp mug {k}")
            # Lift the mug clear of the spokes, so that it can be carried over them.
            carry = SPOKE_HEIGHT + SPOKE_LENGTH * math.sin(SPOKE_ELEVATION) + _CLEARANCE
            lifted = rim + [0.0, 0.0, carry]
            yield Waypoint(lifted, grasp_q, False, ignore_collisions=True, linear=True, name=f"lift mug {k}")
            # Tool poses that put the mug (as it sits in the hand) beyond the spoke's tip, then on the spoke.
            tip_from_mug = np.linalg.inv(scene.robot.tip_pose()) @ pose_matrix(*scene.pose(mug))
            mug_from_tip = np.linalg.inv(tip_from_mug)
            mug_pre = self.threaded_pose(k, SPOKE_LENGTH + _PRE_THREAD)
            pre = mug_pre @ mug_from_tip
            hang = self.threaded_pose(k, _HANG_AT) @ mug_from_tip
            # Come down beside the spoke's tip from above the spokes, then slide the loop along the spoke.
            over = max(carry + MUG_HEIGHT / 2 + TABLE_HEIGHT - mug_pre[2, 3], 0.0)
            yield Waypoint(pre[:3, 3] + [0, 0, over], _quaternion(pre), False, name=f"above spoke {k}")
            yield Waypoint(pre[:3, 3], _quaternion(pre), False, linear=True, name=f"beyond spoke {k}")
            yield Waypoint(
                hang[:3, 3],
                _quaternion(hang),
                True,
                ignore_collisions=True,
                linear=True,
                name=f"slide onto spoke {k}",
            )
            if k < self.count - 1:
                yield Waypoint(
                    hang[:3, 3] + up,
                    _quaternion(hang),
                    True,
                    ignore_collisions=True,
                    linear=True,
                    name=f"retreat {k}",
                )
