"""place_shape_in_shape_sorter: five shapes (cube, cylinder, triangular prism, star, moon) lie on the table
next to a shape sorter box with one matching hole per shape; put the named shape in (RLBench, 5 variations).

Every shape is a prism of convex polygon pieces (the star and the moon are unions of convex pieces, built
as one multi-body with fixed links). The sorter's lid is the plate minus each hole, the hole being the
shape's outline widened by a clearance; it is rasterized into a few dozen boxes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pybullet as p
from scipy.spatial.transform import Rotation

from sim_bridge.bullet import shapes
from sim_bridge.bullet.robot import pose_matrix
from sim_bridge.tasks.base import TABLE_HEIGHT, Task, TaskScene, Waypoint, register, top_down_quaternion

SHAPE_HEIGHT = 0.04
HOLE_CLEARANCE = 0.005  # the hole is the shape's outline widened by this much
_CELL = 0.004  # lid raster resolution


def _regular_polygon(radius: float, sides: int, phase: float = 0.0) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(sides) / sides
    return np.stack([radius * np.cos(a), radius * np.sin(a)], axis=1)


def _star_pieces(outer: float, inner: float, points: int = 5) -> list[np.ndarray]:
    """A pentagon core plus one triangular spike per point (the star is not convex)."""
    core = _regular_polygon(inner, points, np.pi / points)
    tips = _regular_polygon(outer, points)
    return [core] + [np.stack([core[i - 1], tips[i], core[i]]) for i in range(points)]


def _moon_pieces(outer: float, inner: float, offset: float, segments: int = 6) -> list[np.ndarray]:
    """A crescent: the disc of radius ``outer`` minus a disc of radius ``inner`` shifted by ``offset`` along
    +x, cut into convex quads between the two arcs; recentred on the thickest part of the band."""
    horn_x = (outer**2 - inner**2 + offset**2) / (2 * offset)
    horn_y = math.sqrt(outer**2 - horn_x**2)
    a0 = math.atan2(horn_y, horn_x)
    b0 = math.atan2(horn_y, horn_x - offset)
    outer_pts = [
        outer * np.array([math.cos(a), math.sin(a)]) for a in np.linspace(a0, 2 * np.pi - a0, segments + 1)
    ]
    inner_pts = [
        np.array([offset, 0.0]) + inner * np.array([math.cos(b), math.sin(b)])
        for b in np.linspace(b0, 2 * np.pi - b0, segments + 1)
    ]
    centre = np.array([(-outer + offset - inner) / 2, 0.0])
    pieces = []
    for i in range(segments):
        quad = np.stack([outer_pts[i], outer_pts[i + 1], inner_pts[i + 1], inner_pts[i]]) - centre
        pieces.append(quad)
    return pieces


@dataclass(frozen=True)
class SortShape:
    """A shape: convex polygon pieces (or a circle of ``radius``), its rotational symmetry order, the yaw in
    its own frame along which the fingers close, and where its hole is in the sorter's frame."""

    name: str
    pieces: tuple[np.ndarray, ...]
    symmetry: int
    grip_yaw: float
    hole: tuple[float, float]
    rgba: tuple[float, float, float, float]
    radius: float = 0.0

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Distance from 2-D points (shape frame) to the shape's footprint (0 inside)."""
        if self.radius:
            return np.maximum(np.linalg.norm(points, axis=1) - self.radius, 0.0)
        return np.min([_polygon_distance(points, poly) for poly in self.pieces], axis=0)


def _polygon_distance(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Distance from points to a convex polygon (vertices in either winding), 0 inside."""
    centroid = poly.mean(axis=0)
    inside = np.ones(len(points), dtype=bool)
    dist = np.full(len(points), np.inf)
    for a, b in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        edge = b - a
        normal = np.array([edge[1], -edge[0]])
        if np.dot(centroid - a, normal) > 0:
            normal = -normal
        inside &= (points - a) @ normal <= 0
        t = np.clip(((points - a) @ edge) / np.dot(edge, edge), 0.0, 1.0)
        dist = np.minimum(dist, np.linalg.norm(points - (a + t[:, None] * edge), axis=1))
    return np.where(inside, 0.0, dist)


_CUBE = (_regular_polygon(0.02 * math.sqrt(2), 4, np.pi / 4),)
_TRIANGLE = (_regular_polygon(0.026, 3),)
# RLBench's order; holes in two rows on the sorter's lid (sorter frame, x towards its back).
SHAPES = (
    SortShape("cube", _CUBE, 4, 0.0, (0.0375, 0.0), (0.9, 0.1, 0.1, 1.0)),
    SortShape("cylinder", (), 36, 0.0, (-0.0375, 0.0375), (0.1, 0.3, 0.9, 1.0), radius=0.02),
    SortShape("triangular prism", _TRIANGLE, 3, 0.0, (-0.0375, -0.0375), (0.1, 0.7, 0.2, 1.0)),
    SortShape("star", tuple(_star_pieces(0.027, 0.012)), 5, 0.0, (0.0375, 0.075), (0.95, 0.8, 0.1, 1.0)),
    SortShape(
        "moon", tuple(_moon_pieces(0.025, 0.021, 0.012)), 1, 0.0, (0.0375, -0.075), (0.6, 0.2, 0.8, 1.0)
    ),
)
SHAPE_NAMES = tuple(s.name for s in SHAPES)

# The sorter: a closed box (local frame at the centre of its footprint on the table), lid on top.
SORTER_HALF = (0.08, 0.12)  # outer half extents along its x and y
SORTER_HEIGHT = 0.1  # top of the lid above the table
_LID = 0.008
_WALL = 0.008
_SORTER_RGBA = (0.85, 0.65, 0.35, 1.0)
_ABOVE = 0.1
_INSERT_DEPTH = 0.012  # the shape's bottom goes this far below the lid's top before the gripper lets go
_GRIP_BELOW_TOP = 0.012
_KEEP_OUT = 0.1  # shapes spawn this far from the sorter: the open fingers reach 6.5 cm past the tool centre


def _prism_mesh(poly: np.ndarray, height: float) -> tuple[list, list, list]:
    """Vertices, triangle indices and normals of a convex polygon extruded to ``height`` (centred on z=0),
    with per-face vertices so that flat faces shade flat."""
    e1, e2 = poly[1] - poly[0], poly[2] - poly[1]
    if e1[0] * e2[1] - e1[1] * e2[0] < 0:  # clockwise: make it counter-clockwise
        poly = poly[::-1]
    h = height / 2
    verts: list = []
    idx: list = []
    normals: list = []
    n = len(poly)
    for z, sign in ((h, 1.0), (-h, -1.0)):
        base = len(verts)
        verts += [[float(x), float(y), z] for x, y in poly]
        normals += [[0.0, 0.0, sign]] * n
        for i in range(1, n - 1):
            idx += [base, base + i, base + i + 1] if sign > 0 else [base, base + i + 1, base + i]
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        e = b - a
        normal = [float(e[1]), float(-e[0]), 0.0]
        norm = math.hypot(normal[0], normal[1])
        base = len(verts)
        verts += [[*map(float, a), -h], [*map(float, b), -h], [*map(float, b), h], [*map(float, a), h]]
        normals += [[normal[0] / norm, normal[1] / norm, 0.0]] * 4
        idx += [base, base + 1, base + 2, base, base + 2, base + 3]
    return verts, idx, normals


def _make_shape(client: int, shape: SortShape, position, yaw: float, mass: float = 0.15) -> int:
    quat = Rotation.from_euler("z", yaw).as_quat()
    if shape.radius:
        return shapes.create_body(
            client, [shapes.cylinder(shape.radius, SHAPE_HEIGHT, shape.rgba)], position, quat, mass=mass
        )
    cols, viss = [], []
    for poly in shape.pieces:
        verts, idx, normals = _prism_mesh(poly, SHAPE_HEIGHT)
        cols.append(p.createCollisionShape(p.GEOM_MESH, vertices=verts, physicsClientId=client))
        viss.append(
            p.createVisualShape(
                p.GEOM_MESH,
                vertices=verts,
                indices=idx,
                normals=normals,
                rgbaColor=list(shape.rgba),
                physicsClientId=client,
            )
        )
    # The magic grasp holds the base link: most of the mass goes there (a light base lets it wobble).
    links = len(cols) - 1
    piece_mass = 0.1 * mass / max(links, 1)
    body = p.createMultiBody(
        baseMass=mass - piece_mass * links,
        baseCollisionShapeIndex=cols[0],
        baseVisualShapeIndex=viss[0],
        basePosition=list(position),
        baseOrientation=list(quat),
        linkMasses=[piece_mass] * links,
        linkCollisionShapeIndices=cols[1:],
        linkVisualShapeIndices=viss[1:],
        linkPositions=[[0, 0, 0]] * links,
        linkOrientations=[[0, 0, 0, 1]] * links,
        linkInertialFramePositions=[[0, 0, 0]] * links,
        linkInertialFrameOrientations=[[0, 0, 0, 1]] * links,
        linkParentIndices=[0] * links,
        linkJointTypes=[p.JOINT_FIXED] * links,
        linkJointAxis=[[0, 0, 1]] * links,
        physicsClientId=client,
    )
    for link in range(-1, links):
        p.changeDynamics(body, link, lateralFriction=1.0, physicsClientId=client)
    return body


def lid_rectangles(cell: float = _CELL) -> list[tuple[float, float, float, float]]:
    """(x0, x1, y0, y1) boxes, in the sorter frame, that make up the lid: the plate minus every hole.
    Raster cells are solid unless their centre lies within the clearance of a shape placed at its hole;
    runs of solid cells along y are merged, then identical runs in consecutive rows."""
    hx, hy = SORTER_HALF
    nx, ny = round(2 * hx / cell), round(2 * hy / cell)
    xs = -hx + cell * (np.arange(nx) + 0.5)
    ys = -hy + cell * (np.arange(ny) + 0.5)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    centres = np.stack([gx.ravel(), gy.ravel()], axis=1)
    solid = np.ones(len(centres), dtype=bool)
    for shape in SHAPES:
        solid &= shape.distance(centres - np.asarray(shape.hole)) > HOLE_CLEARANCE
    solid = solid.reshape(nx, ny)
    open_rects: dict[tuple[int, int], int] = {}  # run (j0, j1) -> first row
    rects = []

    def runs(row: np.ndarray) -> set[tuple[int, int]]:
        out, j = set(), 0
        while j < ny:
            if row[j]:
                k = j
                while k < ny and row[k]:
                    k += 1
                out.add((j, k))
                j = k
            else:
                j += 1
        return out

    for i in range(nx + 1):
        current = runs(solid[i]) if i < nx else set()
        for run in list(open_rects):
            if run not in current:
                i0 = open_rects.pop(run)
                rects.append((-hx + cell * i0, -hx + cell * i, -hy + cell * run[0], -hy + cell * run[1]))
        for run in current:
            open_rects.setdefault(run, i)
    return rects


def _make_sorter(client: int, xy, yaw: float) -> int:
    """A static multi-body: the walls as the base, the lid's boxes spread over fixed links (a pybullet
    compound shape holds at most 16 primitives)."""
    hx, hy = SORTER_HALF
    wall_h = SORTER_HEIGHT - _LID
    rgba = _SORTER_RGBA
    walls = [
        shapes.box((_WALL / 2, hy, wall_h / 2), rgba, offset=(s * (hx - _WALL / 2), 0.0, wall_h / 2))
        for s in (-1.0, 1.0)
    ] + [
        shapes.box((hx - _WALL, _WALL / 2, wall_h / 2), rgba, offset=(0.0, s * (hy - _WALL / 2), wall_h / 2))
        for s in (-1.0, 1.0)
    ]
    lid = [
        shapes.box(
            ((x1 - x0) / 2, (y1 - y0) / 2, _LID / 2),
            rgba,
            offset=((x0 + x1) / 2, (y0 + y1) / 2, SORTER_HEIGHT - _LID / 2),
        )
        for x0, x1, y0, y1 in lid_rectangles()
    ]
    links = [
        shapes.LinkSpec(tuple(lid[k : k + 16]), "fixed", (0.0, 0.0, 0.0), mass=0.0)
        for k in range(0, len(lid), 16)
    ]
    quat = Rotation.from_euler("z", yaw).as_quat()
    return shapes.create_articulated(client, walls, (xy[0], xy[1], TABLE_HEIGHT), quat, links).body


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _yaw(quat: np.ndarray) -> float:
    m = Rotation.from_quat(quat).as_matrix()
    return float(math.atan2(m[1, 0], m[0, 0]))


@register
class PlaceShapeInShapeSorter(Task):
    name = "place_shape_in_shape_sorter"

    def variation_count(self) -> int:
        return len(SHAPES)

    def descriptions(self, variation: int) -> list[str]:
        s = SHAPE_NAMES[variation]
        return [
            f"put the {s} in the shape sorter",
            f"pick up the {s} and put it in the sorter",
            f"place the {s} into its slot in the shape sorter",
            f"slot the {s} into the shape sorter",
        ]

    def build(self, scene: TaskScene, variation: int) -> None:
        rng = scene.rng
        self.sorter_xy = np.array([rng.uniform(0.28, 0.32), rng.uniform(-0.1, 0.1)])
        self.sorter_yaw = float(rng.uniform(-0.25, 0.25))
        self.sorter = scene.track(_make_sorter(scene.client, self.sorter_xy, self.sorter_yaw))
        self.shape_index = variation
        self.bodies: list[int] = []
        for shape, xy in zip(SHAPES, self._spawn_positions(rng), strict=True):
            # Turned at most a quarter turn from the way its hole faces (the moon has no symmetry to spare).
            yaw = self.sorter_yaw + float(rng.uniform(-math.pi / 2, math.pi / 2))
            body = _make_shape(
                scene.client, shape, (xy[0], xy[1], TABLE_HEIGHT + SHAPE_HEIGHT / 2 + 0.001), yaw
            )
            self.bodies.append(scene.track(body))
        self.target = self.bodies[variation]

    def _spawn_positions(self, rng: np.random.Generator) -> list[np.ndarray]:
        placed: list[np.ndarray] = []
        for _ in range(5000):
            if len(placed) == len(SHAPES):
                break
            xy = rng.uniform((0.0, -0.32), (0.42, 0.32))
            local = self._to_sorter(xy)
            if abs(local[0]) < SORTER_HALF[0] + _KEEP_OUT and abs(local[1]) < SORTER_HALF[1] + _KEEP_OUT:
                continue
            if all(np.linalg.norm(xy - q) >= 0.1 for q in placed):
                placed.append(xy)
        if len(placed) < len(SHAPES):
            raise ValueError("could not place the shapes around the sorter")
        return placed

    def _to_sorter(self, xy: np.ndarray) -> np.ndarray:
        c, s = math.cos(self.sorter_yaw), math.sin(self.sorter_yaw)
        d = np.asarray(xy) - self.sorter_xy
        return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]])

    def _to_world(self, local) -> np.ndarray:
        c, s = math.cos(self.sorter_yaw), math.sin(self.sorter_yaw)
        return self.sorter_xy + np.array([c * local[0] - s * local[1], s * local[0] + c * local[1]])

    def graspable(self) -> list[int]:
        return list(self.bodies)

    def inside_sorter(self, body: int) -> bool:
        """RLBench's sensor inside the sorter: the shape's centre is within the box, below the lid."""
        assert self.scene is not None
        pos, _ = self.scene.pose(body)
        local = self._to_sorter(pos[:2])
        return bool(
            abs(local[0]) < SORTER_HALF[0] - _WALL
            and abs(local[1]) < SORTER_HALF[1] - _WALL
            and pos[2] < TABLE_HEIGHT + SORTER_HEIGHT - _LID
        )

    def success(self) -> bool:
        return self.inside_sorter(self.target)

    def _turn_to_hole(self, shape: SortShape, yaw: float) -> float:
        """The smallest yaw change that lines a shape at ``yaw`` up with its hole (up to its symmetry)."""
        step = 2 * math.pi / shape.symmetry
        return _wrap(step * round(_wrap(yaw - self.sorter_yaw) / step) + self.sorter_yaw - yaw)

    def demo(self) -> Iterator[Waypoint]:
        assert self.scene is not None
        scene = self.scene
        shape = SHAPES[self.shape_index]
        pos, quat = scene.pose(self.target)
        # Of the two equivalent finger yaws, take the one that keeps the wrist nearest its middle both when
        # grasping and after turning the shape to its hole.
        turn = self._turn_to_hole(shape, _yaw(quat))
        grasp_yaw = (_yaw(quat) + shape.grip_yaw + math.pi / 2) % math.pi - math.pi / 2
        flipped = grasp_yaw - math.copysign(math.pi, grasp_yaw)
        grasp_yaw = min((grasp_yaw, flipped), key=lambda y: max(abs(y), abs(y + turn)))
        grasp = pos + [0.0, 0.0, SHAPE_HEIGHT / 2 - _GRIP_BELOW_TOP]
        grasp_q = top_down_quaternion(grasp_yaw)
        up = np.array([0.0, 0.0, _ABOVE])
        yield Waypoint(grasp + up, grasp_q, True, name="above shape")
        yield Waypoint(grasp, grasp_q, False, ignore_collisions=True, linear=True, name="grasp shape")
        yield Waypoint(grasp + [0, 0, 0.16], grasp_q, False, ignore_collisions=True, linear=True, name="lift")
        # The tool pose that puts the shape (as it sits in the hand) over its hole, partly through the lid.
        shape_pose = pose_matrix(*scene.pose(self.target))
        tip_from_shape = np.linalg.inv(scene.robot.tip_pose()) @ shape_pose
        held_yaw = _yaw(Rotation.from_matrix(shape_pose[:3, :3]).as_quat())
        target = np.eye(4)  # upright, whatever tilt the grasp gave it
        target[:3, :3] = Rotation.from_euler("z", held_yaw + self._turn_to_hole(shape, held_yaw)).as_matrix()
        hole_xy = self._to_world(shape.hole)
        target[:3, 3] = (
            hole_xy[0],
            hole_xy[1],
            TABLE_HEIGHT + SORTER_HEIGHT - _INSERT_DEPTH + SHAPE_HEIGHT / 2,
        )
        tip = target @ np.linalg.inv(tip_from_shape)
        tip_pos, tip_q = tip[:3, 3], Rotation.from_matrix(tip[:3, :3]).as_quat()
        yield Waypoint(tip_pos + [0, 0, 0.06], tip_q, False, name="above hole")
        yield Waypoint(tip_pos, tip_q, True, ignore_collisions=True, linear=True, name="insert and drop")
