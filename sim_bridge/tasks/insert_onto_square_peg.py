"""insert_onto_square_peg: put the square ring on the spoke of the named colour (RLBench, 20 variations).

Variation ``v`` colours a randomly chosen one of three square spokes with ``COLORS[v]`` and the other two with
two different random colours. The ring is a square frame of four bars; the demo grips one bar.
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

SPOKES = 3
SPOKE_HALF, SPOKE_HEIGHT = 0.012, 0.08  # square section, height above the base plate
SPOKE_SPACING = 0.13
BASE_HALF = (0.05, 0.2, 0.005)  # the spokes stand in a row along the base's y axis
HOLE_HALF, BAR_WIDTH, RING_HEIGHT = 0.03, 0.014, 0.02
RING_RGBA = (0.85, 0.55, 0.15, 1.0)
BASE_RGBA = (0.45, 0.3, 0.2, 1.0)
_RING_CENTRE_TO_BAR = HOLE_HALF + BAR_WIDTH / 2
_GRIP_BELOW_TOP = 0.006  # tool centre this far below the ring's top face
# The finger inside the ring's hole cannot pass the spoke's top, so the ring is let go just above the spoke
# (centred on it) and drops down around it.
_RELEASE_ABOVE_SPOKE = 0.005


def _yaw_of(m: np.ndarray) -> float:
    """World yaw of a frame's x axis (for a top-down tool: the yaw given to :func:`top_down_quaternion`)."""
    return float(np.arctan2(m[1, 0], m[0, 0]))


def _fold(yaw: float, period: float) -> float:
    """``yaw`` folded into [-period/2, period/2)."""
    return float((yaw + period / 2) % period - period / 2)


def _ring_shapes() -> list[shapes.Shape]:
    a = _RING_CENTRE_TO_BAR
    long_half = HOLE_HALF + BAR_WIDTH
    h = RING_HEIGHT / 2
    return [
        shapes.box((long_half, BAR_WIDTH / 2, h), RING_RGBA, offset=(0, a, 0)),
        shapes.box((long_half, BAR_WIDTH / 2, h), RING_RGBA, offset=(0, -a, 0)),
        shapes.box((BAR_WIDTH / 2, HOLE_HALF, h), RING_RGBA, offset=(a, 0, 0)),
        shapes.box((BAR_WIDTH / 2, HOLE_HALF, h), RING_RGBA, offset=(-a, 0, 0)),
    ]


@register
class InsertOntoSquarePeg(Task):
    name = "insert_onto_square_peg"

    def variation_count(self) -> int:
        return len(colors.COLORS)

    def descriptions(self, variation: int) -> list[str]:
        c = colors.name(variation)
        return [
            f"put the ring on the {c} spoke",
            f"slide the ring onto the {c} colored spoke",
            f"place the ring onto the {c} spoke",
        ]

    def build(self, scene: TaskScene, variation: int) -> None:
        self.chosen = int(scene.rng.integers(SPOKES))
        others = [i for i in range(len(colors.COLORS)) if i != variation]
        spoke_colors = [int(c) for c in scene.rng.choice(others, size=SPOKES - 1, replace=False)]
        spoke_colors.insert(self.chosen, variation)
        self.spoke_colors = spoke_colors
        base_xy = scene.rng.uniform((0.25, -0.08), (0.33, 0.08))
        self.base_yaw = float(scene.rng.uniform(-np.pi / 6, np.pi / 6))
        spokes = [
            shapes.box(
                (SPOKE_HALF, SPOKE_HALF, SPOKE_HEIGHT / 2), colors.rgba(c),
                offset=(0.0, (k - 1) * SPOKE_SPACING, BASE_HALF[2] + SPOKE_HEIGHT / 2),
            )
            for k, c in enumerate(spoke_colors)
        ]  # fmt: skip
        self.base = scene.track(
            shapes.create_body(
                scene.client, [shapes.box(BASE_HALF, BASE_RGBA), *spokes],
                (base_xy[0], base_xy[1], TABLE_HEIGHT + BASE_HALF[2]),
                Rotation.from_euler("z", self.base_yaw).as_quat(),
            )
        )  # fmt: skip
        ring_xy = self._ring_spawn(scene.rng, base_xy)
        ring_yaw = scene.rng.uniform(-np.pi / 4, np.pi / 4)
        self.ring = scene.track(
            shapes.create_body(
                scene.client, _ring_shapes(), (ring_xy[0], ring_xy[1], TABLE_HEIGHT + RING_HEIGHT / 2),
                Rotation.from_euler("z", ring_yaw).as_quat(), mass=0.05,
            )
        )  # fmt: skip

    def _ring_spawn(self, rng: np.random.Generator, base_xy: np.ndarray) -> np.ndarray:
        """A ring position in front of the robot, clear of the (turned) base plate by a ring's width."""
        clear = 2 * (HOLE_HALF + BAR_WIDTH)
        to_base = Rotation.from_euler("z", -self.base_yaw)
        for _ in range(1000):
            xy = rng.uniform((0.02, -0.22), (0.14, 0.22))
            local = to_base.apply([*(xy - base_xy), 0.0])
            if abs(local[0]) > BASE_HALF[0] + clear or abs(local[1]) > BASE_HALF[1] + clear:
                return xy
        raise ValueError("no room for the ring beside the spoke base")

    def graspable(self) -> list[int]:
        return [self.ring]

    def spoke_position(self, k: int) -> np.ndarray:
        """World position of spoke ``k``'s foot (on the base plate's top face), on its axis."""
        assert self.scene is not None
        pos, quat = self.scene.pose(self.base)
        local = np.array([0.0, (k - 1) * SPOKE_SPACING, BASE_HALF[2]])
        return pos + Rotation.from_quat(quat).apply(local)

    def ring_around(self, k: int) -> bool:
        """Whether the ring encircles spoke ``k`` below its top (RLBench's four sensors round the spoke)."""
        assert self.scene is not None
        ring, ring_q = self.scene.pose(self.ring)
        foot = self.spoke_position(k)
        axis_in_ring = Rotation.from_quat(ring_q).inv().apply(foot - ring)
        within = bool(np.all(np.abs(axis_in_ring[:2]) < HOLE_HALF))  # spoke axis passes through the hole
        below_top = ring[2] - RING_HEIGHT / 2 < foot[2] + SPOKE_HEIGHT - 0.01
        return bool(within and below_top and ring[2] > foot[2])

    def success(self) -> bool:
        return self.ring_around(self.chosen)

    def demo(self) -> Iterator[Waypoint]:
        assert self.scene is not None
        scene = self.scene
        ring, ring_q = scene.pose(self.ring)
        ring_rot = Rotation.from_quat(ring_q)
        ring_yaw = _yaw_of(ring_rot.as_matrix())
        # Grip the bar nearest the robot among those whose gripper yaw stays small: fingers close across it.
        sides = [ring_yaw + k * np.pi / 2 for k in range(4)]
        side = min(
            sides,
            key=lambda s: (round(abs(_fold(s - np.pi / 2, np.pi)), 3), ring[0] + np.cos(s)),
        )
        bar = ring + _RING_CENTRE_TO_BAR * np.array([np.cos(side), np.sin(side), 0.0])
        grip = bar + [0.0, 0.0, RING_HEIGHT / 2 - _GRIP_BELOW_TOP]
        q = top_down_quaternion(_fold(side - np.pi / 2, np.pi))
        up = np.array([0.0, 0.0, 0.1])
        yield Waypoint(grip + up, q, True, name="above ring")
        yield Waypoint(grip, q, False, linear=True, name="grasp ring")
        yield Waypoint(grip + up, q, False, linear=True, name="lift ring")
        # Centre the ring on the spoke, squared to it with the least wrist turn.
        held = scene.robot.grasp
        if held is None or held.body != self.ring:
            raise SimError("insert_onto_square_peg demo: the gripper did not pick up the ring")
        tip_from_ring = held.tip_from_object
        ring_now = pose_matrix(*scene.pose(self.ring))
        turn = _fold(self.base_yaw - _yaw_of(ring_now[:3, :3]), np.pi / 2)
        foot = self.spoke_position(self.chosen)
        z = foot[2] + SPOKE_HEIGHT + _RELEASE_ABOVE_SPOKE + RING_HEIGHT / 2
        squared = Rotation.from_euler("z", turn) * Rotation.from_matrix(ring_now[:3, :3])
        ring_goal = pose_matrix((foot[0], foot[1], z), squared.as_quat())
        tip_goal = ring_goal @ np.linalg.inv(tip_from_ring)
        goal_q = Rotation.from_matrix(tip_goal[:3, :3]).as_quat()
        above = tip_goal[:3, 3] + [0.0, 0.0, 0.05]
        yield Waypoint(above, goal_q, False, name="above spoke")
        yield Waypoint(tip_goal[:3, 3], goal_q, True, linear=True, name="release above spoke")
