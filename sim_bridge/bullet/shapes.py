"""Primitive bodies for task scenes: compound rigid bodies and articulated bodies with prismatic or revolute
joints, built from boxes, cylinders and spheres (RLBench's objects rebuilt from primitives)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pybullet as p

Vec3 = tuple[float, float, float]
Quat = tuple[float, float, float, float]
IDENTITY: Quat = (0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Shape:
    """One primitive. ``size``: box half extents (3), cylinder (radius, height), sphere (radius,)."""

    kind: str
    size: tuple[float, ...]
    rgba: tuple[float, float, float, float] = (0.7, 0.7, 0.7, 1.0)
    offset: Vec3 = (0.0, 0.0, 0.0)
    orientation: Quat = IDENTITY


MAX_SHAPES_PER_LINK = 16  # PyBullet's limit for createCollisionShapeArray / createVisualShapeArray


def box(
    half_extents: Vec3, rgba=(0.7, 0.7, 0.7, 1.0), offset: Vec3 = (0, 0, 0), orientation=IDENTITY
) -> Shape:
    return Shape("box", tuple(half_extents), tuple(rgba), tuple(offset), tuple(orientation))


def cylinder(
    radius: float, height: float, rgba=(0.7, 0.7, 0.7, 1.0), offset: Vec3 = (0, 0, 0), orientation=IDENTITY
) -> Shape:
    return Shape("cylinder", (radius, height), tuple(rgba), tuple(offset), tuple(orientation))


def sphere(radius: float, rgba=(0.7, 0.7, 0.7, 1.0), offset: Vec3 = (0, 0, 0)) -> Shape:
    return Shape("sphere", (radius,), tuple(rgba), tuple(offset))


def _shape_arrays(client: int, shapes: Sequence[Shape]) -> tuple[int, int]:
    if not 0 < len(shapes) <= MAX_SHAPES_PER_LINK:
        # PyBullet silently keeps only the first 16 shapes of an array; a missing wall is worse than an error.
        raise ValueError(
            f"a body or link takes 1..{MAX_SHAPES_PER_LINK} primitive shapes, got {len(shapes)}; "
            "split it into several links or bodies"
        )
    kinds = {"box": p.GEOM_BOX, "cylinder": p.GEOM_CYLINDER, "sphere": p.GEOM_SPHERE}
    for s in shapes:
        if s.kind not in kinds:
            raise ValueError(f"unknown shape kind {s.kind!r}; expected one of {sorted(kinds)}")
    geom = [kinds[s.kind] for s in shapes]
    half = [list(s.size) if s.kind == "box" else [0, 0, 0] for s in shapes]
    radius = [s.size[0] if s.kind != "box" else 0.0 for s in shapes]
    length = [s.size[1] if s.kind == "cylinder" else 0.0 for s in shapes]
    offsets = [list(s.offset) for s in shapes]
    orients = [list(s.orientation) for s in shapes]
    col = p.createCollisionShapeArray(
        shapeTypes=geom,
        halfExtents=half,
        radii=radius,
        lengths=length,
        collisionFramePositions=offsets,
        collisionFrameOrientations=orients,
        physicsClientId=client,
    )
    vis = p.createVisualShapeArray(
        shapeTypes=geom,
        halfExtents=half,
        radii=radius,
        lengths=length,
        rgbaColors=[list(s.rgba) for s in shapes],
        visualFramePositions=offsets,
        visualFrameOrientations=orients,
        physicsClientId=client,
    )
    return col, vis


def create_body(
    client: int,
    shapes: Sequence[Shape],
    position: Sequence[float],
    orientation: Sequence[float] = IDENTITY,
    mass: float = 0.0,
    friction: float = 1.0,
) -> int:
    """A rigid (possibly compound) body; ``mass=0`` makes it static."""
    col, vis = _shape_arrays(client, shapes)
    body = p.createMultiBody(
        baseMass=mass,
        baseCollisionShapeIndex=col,
        baseVisualShapeIndex=vis,
        basePosition=list(position),
        baseOrientation=list(orientation),
        physicsClientId=client,
    )
    p.changeDynamics(body, -1, lateralFriction=friction, physicsClientId=client)
    return body


@dataclass(frozen=True)
class LinkSpec:
    """A child link of an articulated body, attached by one joint to ``parent`` (-1 = the base)."""

    shapes: tuple[Shape, ...]
    joint: str  # "prismatic", "revolute" or "fixed"
    position: Vec3  # joint frame origin, in the parent link frame
    axis: Vec3 = (0.0, 0.0, 1.0)
    parent: int = -1
    mass: float = 0.2
    limits: tuple[float, float] = (0.0, 0.0)
    orientation: Quat = IDENTITY


@dataclass
class Articulated:
    """An articulated body and the pybullet joint index of each of its links (same order as the specs)."""

    body: int
    joints: list[int] = field(default_factory=list)


def create_articulated(
    client: int,
    base_shapes: Sequence[Shape],
    position: Sequence[float],
    orientation: Sequence[float],
    links: Sequence[LinkSpec],
    base_mass: float = 0.0,
) -> Articulated:
    """Build a multi-body (cabinet with drawers, button panel, safe...). Joint limits are set on the joints,
    and the default velocity motors are switched off so that links move freely unless a task drives them."""
    joint_types = {"prismatic": p.JOINT_PRISMATIC, "revolute": p.JOINT_REVOLUTE, "fixed": p.JOINT_FIXED}
    base_col, base_vis = _shape_arrays(client, base_shapes)
    cols, viss = (
        zip(*(_shape_arrays(client, link.shapes) for link in links), strict=True) if links else ((), ())
    )
    body = p.createMultiBody(
        baseMass=base_mass,
        baseCollisionShapeIndex=base_col,
        baseVisualShapeIndex=base_vis,
        basePosition=list(position),
        baseOrientation=list(orientation),
        linkMasses=[link.mass for link in links],
        linkCollisionShapeIndices=list(cols),
        linkVisualShapeIndices=list(viss),
        linkPositions=[list(link.position) for link in links],
        linkOrientations=[list(link.orientation) for link in links],
        linkInertialFramePositions=[[0, 0, 0]] * len(links),
        linkInertialFrameOrientations=[[0, 0, 0, 1]] * len(links),
        linkParentIndices=[link.parent + 1 for link in links],
        linkJointTypes=[joint_types[link.joint] for link in links],
        linkJointAxis=[list(link.axis) for link in links],
        physicsClientId=client,
    )
    for j, link in enumerate(links):
        if link.joint != "fixed":
            lo, hi = link.limits
            p.changeDynamics(
                body, j, jointLowerLimit=lo, jointUpperLimit=hi, jointDamping=0.5, physicsClientId=client
            )
            p.setJointMotorControl2(body, j, p.VELOCITY_CONTROL, force=0.0, physicsClientId=client)
    return Articulated(body, list(range(len(links))))
