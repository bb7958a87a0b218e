"""light_bulb_in: two light bulbs stand in coloured holders next to a desk lamp with an empty socket; screw
the bulb from the named holder into the lamp (RLBench, 20 variations).

Variation ``v``: the target holder (``v % 2`` of the two) gets colour ``COLORS[v]``; the other holder a random
other colour. Screwing is modelled as seating the bulb's threaded base in the socket with a quarter twist.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from scipy.spatial.transform import Rotation

from sim_bridge.bullet import shapes
from sim_bridge.bullet.robot import pose_matrix
from sim_bridge.tasks import colors
from sim_bridge.tasks.base import TABLE_HEIGHT, Task, TaskScene, Waypoint, register, top_down_quaternion
from sim_bridge.tasks.layout import sample_positions

# The bulb's frame is at the centre of its threaded base; the glass sits on top.
BASE_RADIUS, BASE_HEIGHT = 0.011, 0.02
GLASS_RADIUS = 0.022
GLASS_CENTRE = BASE_HEIGHT / 2 + GLASS_RADIUS - 0.004
_HOLDER_RADIUS, _HOLDER_HEIGHT = 0.035, 0.012
_COLLAR_HEIGHT = 0.012  # a ring around the bulb's base keeps it upright in the holder
# The lamp: a weighted base, a post, and a socket cup facing up at SOCKET_FLOOR above the table.
SOCKET_FLOOR = 0.11
SOCKET_DEPTH = 0.024
SOCKET_INNER_RADIUS = 0.016
_WALL = 0.005
_LAMP_BASE_HALF = (0.05, 0.05, 0.008)
SEATED_XY_TOLERANCE = 0.008  # the base's axis must be this close to the socket's axis
_ABOVE = 0.09  # pre-grasp and pre-insert height
_LIFT = 0.12
_SCREW_TURN = math.pi / 2


def ring(inner_radius: float, height: float, thickness: float, rgba, z: float, staves: int = 10) -> list:
    """A hollow cylinder of ``staves`` boxes around the z axis, standing with its bottom at ``z``."""
    half_width = (inner_radius + thickness) * math.tan(math.pi / staves) + 0.001
    out = []
    for k in range(staves):
        a = 2 * math.pi * k / staves
        r = inner_radius + thickness / 2
        out.append(
            shapes.box(
                (thickness / 2, half_width, height / 2),
                rgba,
                offset=(r * math.cos(a), r * math.sin(a), z + height / 2),
                orientation=tuple(Rotation.from_euler("z", a).as_quat()),
            )
        )
    return out


@register
class LightBulbIn(Task):
    name = "light_bulb_in"

    def variation_count(self) -> int:
        return len(colors.COLORS)

    def descriptions(self, variation: int) -> list[str]:
        c = colors.name(variation)
        return [
            f"screw in the {c} light bulb",
            f"screw the light bulb from the {c} holder into the lamp",
            f"pick up the light bulb from the {c} stand, lift it up to just above the lamp, then screw it "
            "down into the lamp in a clockwise fashion",
            f"put the light bulb from the {c} casing into the lamp",
        ]

    def build(self, scene: TaskScene, variation: int) -> None:
        rng = scene.rng
        self.target_index = variation % 2
        other = int(rng.choice([i for i in range(len(colors.COLORS)) if i != variation]))
        holder_colors = [other, other]
        holder_colors[self.target_index] = variation
        lamp_xy, *holder_xys = sample_positions(
            rng, 3, low=(0.05, -0.28), high=(0.32, 0.28), min_distance=0.17
        )
        self.socket_xy = np.asarray(lamp_xy)
        self.lamp = scene.track(self._make_lamp(scene.client, lamp_xy))
        self.bulbs: list[int] = []
        self.holders: list[int] = []
        for color, xy in zip(holder_colors, holder_xys, strict=True):
            holder = shapes.create_body(
                scene.client,
                [shapes.cylinder(_HOLDER_RADIUS, _HOLDER_HEIGHT, colors.rgba(color))]
                + ring(BASE_RADIUS + 0.002, _COLLAR_HEIGHT, 0.004, colors.rgba(color), _HOLDER_HEIGHT / 2),
                (xy[0], xy[1], TABLE_HEIGHT + _HOLDER_HEIGHT / 2),
            )
            self.holders.append(scene.track(holder))
            bulb = shapes.create_body(
                scene.client,
                [
                    shapes.cylinder(BASE_RADIUS, BASE_HEIGHT, (0.7, 0.7, 0.72, 1.0)),
                    shapes.sphere(GLASS_RADIUS, (0.95, 0.95, 0.85, 1.0), offset=(0.0, 0.0, GLASS_CENTRE)),
                ],
                (xy[0], xy[1], TABLE_HEIGHT + _HOLDER_HEIGHT + BASE_HEIGHT / 2 + 0.001),
                Rotation.from_euler("z", rng.uniform(-math.pi, math.pi)).as_quat(),
                mass=0.05,
            )
            self.bulbs.append(scene.track(bulb))
        self.target = self.bulbs[self.target_index]

    @staticmethod
    def _make_lamp(client: int, xy) -> int:
        dark, metal = (0.15, 0.15, 0.17, 1.0), (0.6, 0.6, 0.62, 1.0)
        post_height = SOCKET_FLOOR - 2 * _LAMP_BASE_HALF[2] - _WALL
        parts = [
            shapes.box(_LAMP_BASE_HALF, dark, offset=(0.0, 0.0, _LAMP_BASE_HALF[2])),
            shapes.cylinder(
                0.012, post_height, dark, offset=(0, 0, 2 * _LAMP_BASE_HALF[2] + post_height / 2)
            ),
            shapes.cylinder(
                SOCKET_INNER_RADIUS + _WALL, _WALL, metal, offset=(0, 0, SOCKET_FLOOR - _WALL / 2)
            ),
            *ring(SOCKET_INNER_RADIUS, SOCKET_DEPTH, _WALL, metal, SOCKET_FLOOR),
        ]
        return shapes.create_body(client, parts, (xy[0], xy[1], TABLE_HEIGHT))

    def graspable(self) -> list[int]:
        return list(self.bulbs)

    def seated(self, bulb: int) -> bool:
        """RLBench's lamp sensor: the bulb's threaded base sits inside the socket."""
        assert self.scene is not None
        pos, _ = self.scene.pose(bulb)
        floor = TABLE_HEIGHT + SOCKET_FLOOR
        return bool(
            np.linalg.norm(pos[:2] - self.socket_xy) <= SEATED_XY_TOLERANCE
            and floor < pos[2] < floor + SOCKET_DEPTH
        )

    def success(self) -> bool:
        assert self.scene is not None
        return self.seated(self.target) and self.scene.held_body() is None

    def demo(self) -> Iterator[Waypoint]:
        assert self.scene is not None
        scene = self.scene
        pos, _ = scene.pose(self.target)
        glass = pos + np.array([0.0, 0.0, GLASS_CENTRE])
        grasp_q = top_down_quaternion(0.0)
        up = np.array([0.0, 0.0, _ABOVE])
        yield Waypoint(glass + up, grasp_q, True, name="above bulb")
        yield Waypoint(glass, grasp_q, False, ignore_collisions=True, linear=True, name="grasp bulb")
        yield Waypoint(
            glass + [0, 0, _LIFT], grasp_q, False, ignore_collisions=True, linear=True, name="lift"
        )
        # Tool poses that seat the bulb (as it sits in the hand) in the socket, before and after the twist.
        bulb_now = pose_matrix(*scene.pose(self.target))
        tip_from_bulb = np.linalg.inv(scene.robot.tip_pose()) @ bulb_now
        seat = np.array([*self.socket_xy, TABLE_HEIGHT + SOCKET_FLOOR + BASE_HEIGHT / 2 + 0.002])

        def tool_for(bulb_position: np.ndarray, twist: float) -> tuple[np.ndarray, np.ndarray]:
            bulb = bulb_now.copy()
            bulb[:3, :3] = Rotation.from_euler("z", twist).as_matrix() @ bulb[:3, :3]
            bulb[:3, 3] = bulb_position
            tip = bulb @ np.linalg.inv(tip_from_bulb)
            return tip[:3, 3], Rotation.from_matrix(tip[:3, :3]).as_quat()

        # Screw clockwise seen from above (yaw decreasing) by a quarter turn, centred on the grasp yaw.
        entry_pos, entry_q = tool_for(seat + [0, 0, 0.012], _SCREW_TURN / 2)
        above_pos, _ = tool_for(seat + up, _SCREW_TURN / 2)
        yield Waypoint(above_pos, entry_q, False, name="above lamp")
        yield Waypoint(entry_pos, entry_q, False, ignore_collisions=True, linear=True, name="into socket")
        seat_pos, seat_q = tool_for(seat, -_SCREW_TURN / 2)
        yield Waypoint(
            seat_pos, seat_q, True, ignore_collisions=True, linear=True, name="screw in and release"
        )
        yield Waypoint(
            seat_pos + [0, 0, 0.08], seat_q, True, ignore_collisions=True, linear=True, name="retreat"
        )
