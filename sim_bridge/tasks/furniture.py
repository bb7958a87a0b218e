"""Furniture shared by the drawer and safe tasks: a cabinet with three prismatic drawers (bottom, middle,
top) carrying vertical bar handles, and an open safe with three shelves.

Every piece of furniture has a local frame on the table top at the centre of its footprint, with local +x
pointing *into* it (from the open front towards the back), so a task places it with one yaw that turns its
front towards the robot.

The Panda cannot point its tool horizontally at low targets within reach (joint 6 tops out first), so the
scripted demos grasp handles and objects with the tool tilted down by a fixed pitch
(:func:`pitched_quaternion`). A vertical handle bar, or an object pinched across its width, is grasped the
same way at any pitch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pybullet as p
from scipy.spatial.transform import Rotation

from sim_bridge.bullet import shapes
from sim_bridge.tasks.base import TABLE_HEIGHT, TOP_DOWN

LEVELS = ("bottom", "middle", "top")  # RLBench's variation order for drawers and shelves
ROBOT_BASE_XY = np.array([-0.3, 0.0])

_CARCASS_RGBA = (0.55, 0.42, 0.3, 1.0)
_DRAWER_RGBA = (0.75, 0.62, 0.45, 1.0)
_HANDLE_RGBA = (0.2, 0.2, 0.22, 1.0)
_SAFE_RGBA = (0.35, 0.37, 0.4, 1.0)
_SHELF_RGBA = (0.55, 0.57, 0.6, 1.0)


# -- gripper orientations ------------------------------------------------------------------------------------
def pitched_quaternion(azimuth: float, pitch: float) -> np.ndarray:
    """xyzw quaternion of a gripper whose tool axis points along world yaw ``azimuth``, tilted ``pitch`` rad
    below the horizontal (pi/2 = straight down); the fingers close horizontally, across the azimuth."""
    rot = Rotation.from_euler("z", azimuth) * Rotation.from_euler("y", pitch - math.pi / 2) * TOP_DOWN
    return rot.as_quat()


def tool_axis(azimuth: float, pitch: float) -> np.ndarray:
    """Unit vector of the tool (approach) axis of :func:`pitched_quaternion`."""
    return np.array(
        [math.cos(pitch) * math.cos(azimuth), math.cos(pitch) * math.sin(azimuth), -math.sin(pitch)]
    )


def facing_yaw(xy: np.ndarray) -> float:
    """Yaw of a piece of furniture at ``xy`` whose front faces the robot base (local +x away from it)."""
    d = np.asarray(xy, dtype=float) - ROBOT_BASE_XY
    return float(math.atan2(d[1], d[0]))


@dataclass(frozen=True)
class Frame:
    """A rigid placement on the table: world xy of the footprint centre and yaw of the local +x axis."""

    xy: tuple[float, float]
    yaw: float

    @property
    def rotation(self) -> Rotation:
        return Rotation.from_euler("z", self.yaw)

    @property
    def inward(self) -> np.ndarray:
        """World direction of local +x (into the furniture)."""
        return np.array([math.cos(self.yaw), math.sin(self.yaw), 0.0])

    def to_world(self, local: np.ndarray) -> np.ndarray:
        return np.array([*self.xy, TABLE_HEIGHT]) + self.rotation.apply(np.asarray(local, dtype=float))

    def to_local(self, world: np.ndarray) -> np.ndarray:
        return self.rotation.inv().apply(np.asarray(world, dtype=float) - np.array([*self.xy, TABLE_HEIGHT]))


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in some local frame (used as RLBench's proximity-sensor volumes)."""

    low: tuple[float, float, float]
    high: tuple[float, float, float]

    def contains(self, point: np.ndarray) -> bool:
        return bool(np.all(np.asarray(point) >= self.low) and np.all(np.asarray(point) <= self.high))


def _slab(low: tuple[float, float, float], high: tuple[float, float, float], rgba) -> shapes.Shape:
    """A box primitive given by its corners (easier to read than centre + half extents)."""
    lo, hi = np.asarray(low), np.asarray(high)
    return shapes.box(tuple((hi - lo) / 2), rgba, offset=tuple((hi + lo) / 2))


# -- cabinet ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CabinetSpec:
    """Cabinet dimensions (m). Drawers are stacked from the plinth up; handles stand off the fronts."""

    width: float = 0.32
    depth: float = 0.26
    drawer_height: float = 0.09
    plinth: float = 0.02
    wall: float = 0.01
    front_thickness: float = 0.015
    drawer_wall_height: float = 0.055
    travel: float = 0.22
    handle_standoff: float = 0.035  # drawer front to handle bar centre
    handle_length: float = 0.07
    handle_thickness: float = 0.012
    drawer_mass: float = 0.3

    @property
    def height(self) -> float:
        return self.plinth + 3 * self.drawer_height + self.wall

    def drawer_bottom(self, level: int) -> float:
        return self.plinth + level * self.drawer_height


@dataclass
class Cabinet:
    """A built cabinet: body id, its placement, and geometry queries for one drawer (0 bottom .. 2 top)."""

    client: int
    body: int
    frame: Frame
    spec: CabinetSpec

    def drawer_joint(self, level: int) -> int:
        return level

    def opening(self, level: int) -> float:
        """How far the drawer is pulled out (m)."""
        return float(p.getJointState(self.body, level, physicsClientId=self.client)[0])

    def handle_position(self, level: int) -> np.ndarray:
        """World position of the middle of the drawer's handle bar, at its current opening."""
        s = self.spec
        x = -s.depth / 2 - s.handle_standoff - self.opening(level)
        return self.frame.to_world(np.array([x, 0.0, s.drawer_bottom(level) + s.drawer_height / 2]))

    def drawer_interior(self, level: int) -> Box:
        """The drawer's inside (floor to just above its walls), in the drawer link frame."""
        s = self.spec
        inner_y = s.width / 2 - s.wall - 0.004 - s.wall
        x0 = -s.depth / 2 + s.front_thickness
        x1 = s.depth / 2 - s.wall - 0.005 - s.wall
        floor = 0.004 + s.wall
        return Box((x0, -inner_y, floor), (x1, inner_y, s.drawer_height))

    def drawer_pose(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        state = p.getLinkState(self.body, level, computeForwardKinematics=True, physicsClientId=self.client)
        return np.asarray(state[4]), np.asarray(state[5])

    def in_drawer(self, level: int, point: np.ndarray) -> bool:
        """Whether a world point is inside the drawer (RLBench's per-drawer success proximity sensor)."""
        pos, quat = self.drawer_pose(level)
        local = Rotation.from_quat(quat).inv().apply(np.asarray(point, dtype=float) - pos)
        return self.drawer_interior(level).contains(local)

    def exposed_drawer_centre(self, level: int) -> np.ndarray:
        """World point on the drawer floor, midway along the part that is pulled out of the carcass."""
        s = self.spec
        opening = self.opening(level)
        x = -s.depth / 2 + s.front_thickness - opening + (opening - s.front_thickness) / 2
        floor = s.drawer_bottom(level) + 0.004 + s.wall
        return self.frame.to_world(np.array([x, 0.0, floor]))

    def top_surface(self) -> float:
        return TABLE_HEIGHT + self.spec.height


def _drawer_link(spec: CabinetSpec, level: int) -> shapes.LinkSpec:
    s = spec
    w_in = s.width / 2 - s.wall - 0.004  # clearance to the carcass side walls
    front = -s.depth / 2
    back = s.depth / 2 - s.wall - 0.005
    floor_top = 0.004 + s.wall
    walls = floor_top + s.drawer_wall_height
    h = s.drawer_height
    bar_x = front - s.handle_standoff
    t = s.handle_thickness / 2
    bar_top, bar_bottom = h / 2 + s.handle_length / 2, h / 2 - s.handle_length / 2
    parts = (
        _slab((front, -w_in, 0.003), (front + s.front_thickness, w_in, h - 0.003), _DRAWER_RGBA),
        _slab((front + s.front_thickness, -w_in, 0.004), (back, w_in, floor_top), _DRAWER_RGBA),
        _slab((front + s.front_thickness, -w_in, floor_top), (back, -w_in + s.wall, walls), _DRAWER_RGBA),
        _slab((front + s.front_thickness, w_in - s.wall, floor_top), (back, w_in, walls), _DRAWER_RGBA),
        _slab((back - s.wall, -w_in + s.wall, floor_top), (back, w_in - s.wall, walls), _DRAWER_RGBA),
        _slab((bar_x - t, -t, bar_bottom), (bar_x + t, t, bar_top), _HANDLE_RGBA),
        _slab((bar_x + t, -t, bar_top - 2 * t), (front, t, bar_top), _HANDLE_RGBA),
        _slab((bar_x + t, -t, bar_bottom), (front, t, bar_bottom + 2 * t), _HANDLE_RGBA),
    )
    return shapes.LinkSpec(
        shapes=parts,
        joint="prismatic",
        position=(0.0, 0.0, s.drawer_bottom(level)),
        axis=(-1.0, 0.0, 0.0),
        limits=(0.0, s.travel),
        mass=s.drawer_mass,
    )


def build_cabinet(client: int, frame: Frame, spec: CabinetSpec | None = None) -> Cabinet:
    """A static carcass with three drawers that slide out towards local -x (joint i = level i)."""
    s = spec or CabinetSpec()
    d, w, top = s.depth / 2, s.width / 2, s.plinth + 3 * s.drawer_height
    carcass = [
        _slab((-d, -w, 0.0), (d, w, s.plinth), _CARCASS_RGBA),
        _slab((-d, -w, top), (d, w, top + s.wall), _CARCASS_RGBA),
        _slab((-d, -w, s.plinth), (d, -w + s.wall, top), _CARCASS_RGBA),
        _slab((-d, w - s.wall, s.plinth), (d, w, top), _CARCASS_RGBA),
        _slab((d - s.wall, -w + s.wall, s.plinth), (d, w - s.wall, top), _CARCASS_RGBA),
    ]
    for k in (1, 2):  # dividers behind the drawer fronts
        z = s.drawer_bottom(k)
        low, high = (-d + s.front_thickness, -w + s.wall, z - 0.002), (d - s.wall, w - s.wall, z + 0.002)
        carcass.append(_slab(low, high, _CARCASS_RGBA))
    quat = Rotation.from_euler("z", frame.yaw).as_quat()
    built = shapes.create_articulated(
        client, carcass, (*frame.xy, TABLE_HEIGHT), quat, [_drawer_link(s, k) for k in range(3)]
    )
    for j in built.joints:
        p.changeDynamics(built.body, j, lateralFriction=1.0, physicsClientId=client)
    return Cabinet(client, built.body, frame, s)


# -- safe ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SafeSpec:
    """Safe dimensions (m): three shelves of equal clear height behind an open front; the door stands open."""

    width: float = 0.3
    depth: float = 0.2
    wall: float = 0.01
    base: float = 0.04
    shelf_gap: float = 0.12  # clear height of each shelf
    shelf_thickness: float = 0.01
    door_angle: float = math.radians(150.0)  # how far the door is swung open

    def shelf_surface(self, level: int) -> float:
        return self.base + level * (self.shelf_gap + self.shelf_thickness)

    @property
    def height(self) -> float:
        return self.shelf_surface(3) - self.shelf_thickness + self.wall


@dataclass
class Safe:
    """A built safe: static body, placement, and per-shelf geometry (level 0 bottom .. 2 top)."""

    body: int
    frame: Frame
    spec: SafeSpec

    def shelf_interior(self, level: int) -> Box:
        """Inside of one shelf, in the safe frame (RLBench's per-shelf success sensor)."""
        s = self.spec
        z0 = s.shelf_surface(level)
        return Box(
            (-s.depth / 2, -s.width / 2 + s.wall, z0),
            (s.depth / 2 - s.wall, s.width / 2 - s.wall, z0 + s.shelf_gap),
        )

    def on_shelf(self, level: int, point: np.ndarray) -> bool:
        return self.shelf_interior(level).contains(self.frame.to_local(point))

    def shelf_entry(self, level: int, depth: float, height: float) -> np.ndarray:
        """World point ``depth`` m inside the opening (< 0: in front of it), ``height`` above the shelf."""
        s = self.spec
        return self.frame.to_world(np.array([-s.depth / 2 + depth, 0.0, s.shelf_surface(level) + height]))


def build_safe(client: int, frame: Frame, door_side: int, spec: SafeSpec | None = None) -> Safe:
    """A static safe open towards local -x; ``door_side`` (+1 = local +y, -1 = local -y) is the hinge side."""
    if door_side not in (-1, 1):
        raise ValueError(f"door_side must be +1 or -1, got {door_side}")
    s = spec or SafeSpec()
    d, w, top = s.depth / 2, s.width / 2, s.height
    parts = [
        _slab((-d, -w, 0.0), (d, w, s.base), _SAFE_RGBA),
        _slab((-d, -w, top - s.wall), (d, w, top), _SAFE_RGBA),
        _slab((-d, -w, s.base), (d, -w + s.wall, top - s.wall), _SAFE_RGBA),
        _slab((-d, w - s.wall, s.base), (d, w, top - s.wall), _SAFE_RGBA),
        _slab((d - s.wall, -w + s.wall, s.base), (d, w - s.wall, top - s.wall), _SAFE_RGBA),
    ]
    for k in (1, 2):
        z = s.shelf_surface(k)
        parts.append(
            _slab((-d, -w + s.wall, z - s.shelf_thickness), (d - s.wall, w - s.wall, z), _SHELF_RGBA)
        )
    # The door hangs on the front edge of one side wall, swung open towards the robot and outwards.
    door_t = 0.015
    hinge = np.array([-d - door_t / 2, door_side * w])
    closed_dir = np.array([0.0, -door_side])
    c, sn = math.cos(-door_side * s.door_angle), math.sin(-door_side * s.door_angle)
    open_dir = np.array([c * closed_dir[0] - sn * closed_dir[1], sn * closed_dir[0] + c * closed_dir[1]])
    centre = hinge + open_dir * w
    door_yaw = math.atan2(open_dir[1], open_dir[0]) - math.pi / 2
    parts.append(
        shapes.box(
            (door_t / 2, w, top / 2),
            _SAFE_RGBA,
            offset=(centre[0], centre[1], top / 2),
            orientation=tuple(Rotation.from_euler("z", door_yaw).as_quat()),
        )
    )
    quat = Rotation.from_euler("z", frame.yaw).as_quat()
    body = shapes.create_body(client, parts, (*frame.xy, TABLE_HEIGHT), quat)
    return Safe(body, frame, s)
