"""What a task is: RLBench's name, instruction templates and variation scheme, a randomized scene built
from primitives, a success condition, and a scripted keyframe demonstration."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pybullet as p
from scipy.spatial.transform import Rotation

from sim_bridge.actions import KeyframeAction
from sim_bridge.bullet.robot import PandaArm
from sim_bridge.errors import UnknownTaskError, UnknownVariationError

TABLE_HEIGHT = 0.752
# Tool pointing straight down (tip z = world -z), fingers closing along world y.
TOP_DOWN = Rotation.from_euler("xyz", [np.pi, 0.0, 0.0])


def yaw_of(quat: np.ndarray) -> float:
    """Heading (rotation about world z) of an orientation, from its rotated x axis."""
    m = Rotation.from_quat(quat).as_matrix()
    return float(np.arctan2(m[1, 0], m[0, 0]))


def wrap_angle(angle: float) -> float:
    """``angle`` in [-pi, pi)."""
    return (angle + np.pi) % (2 * np.pi) - np.pi


def top_down_quaternion(yaw: float = 0.0) -> np.ndarray:
    """xyzw quaternion of a downward-pointing gripper rotated by ``yaw`` about the world z axis."""
    return (Rotation.from_euler("z", yaw) * TOP_DOWN).as_quat()


@dataclass(frozen=True)
class Waypoint:
    """One keyframe of a scripted demonstration.

    ``linear`` asks for a straight Cartesian motion (approach, press, pull, retreat); otherwise the planner
    chooses. ``gripper_open`` is the gripper state after the arm arrives (a change actuates the gripper).
    """

    position: np.ndarray
    quaternion: np.ndarray
    gripper_open: bool
    ignore_collisions: bool = False
    linear: bool = False
    name: str = ""

    def action(self) -> KeyframeAction:
        q = np.asarray(self.quaternion, dtype=float)
        return KeyframeAction(
            np.asarray(self.position, dtype=float),
            q / np.linalg.norm(q),
            self.gripper_open,
            self.ignore_collisions,
        )


@dataclass
class TaskScene:
    """What a task builds with: the physics client, the robot, the table and the episode's random numbers."""

    client: int
    robot: PandaArm
    table: int
    rng: np.random.Generator
    bodies: list[int] = field(default_factory=list)

    def track(self, body: int) -> int:
        """Register a body as part of the task (removed at the next reset, reported in low-dim state)."""
        self.bodies.append(body)
        return body

    def pose(self, body: int) -> tuple[np.ndarray, np.ndarray]:
        pos, quat = p.getBasePositionAndOrientation(body, physicsClientId=self.client)
        return np.asarray(pos), np.asarray(quat)

    def joint_position(self, body: int, joint: int) -> float:
        return float(p.getJointState(body, joint, physicsClientId=self.client)[0])

    def touching(self, a: int, b: int, link_a: int = -2, link_b: int = -2) -> bool:
        """Whether bodies (optionally links) are in contact after the last physics step (-2 = any link)."""
        kwargs: dict = {"bodyA": a, "bodyB": b, "physicsClientId": self.client}
        if link_a != -2:
            kwargs["linkIndexA"] = link_a
        if link_b != -2:
            kwargs["linkIndexB"] = link_b
        return len(p.getContactPoints(**kwargs)) > 0

    def held_body(self) -> int | None:
        return self.robot.grasp.body if self.robot.grasp is not None else None


class Task(ABC):
    """Base class of embedded RLBench tasks. Subclasses set ``name`` and register with :func:`register`."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self.scene: TaskScene | None = None
        self.variation = 0

    @abstractmethod
    def variation_count(self) -> int: ...

    @abstractmethod
    def descriptions(self, variation: int) -> list[str]:
        """Instruction paraphrases for a variation; element 0 is the canonical one."""

    @abstractmethod
    def build(self, scene: TaskScene, variation: int) -> None:
        """Create and randomly place the task's bodies (``scene.rng``); called on every reset."""

    @abstractmethod
    def demo(self) -> Iterator[Waypoint]:
        """Scripted keyframes from the current state (a generator: later ones may look at the state)."""

    @abstractmethod
    def success(self) -> bool: ...

    def graspable(self) -> list[int]:
        """Bodies that the gripper may attach when it closes on them (RLBench's registered graspables)."""
        return []

    def on_tick(self) -> None:  # noqa: B027  (optional hook, most tasks need none)
        """Called every control tick while the arm moves (e.g. to latch a pressed button)."""

    def low_dim_state(self) -> np.ndarray:
        """RLBench's default task state: each task body's 7-D pose, then its movable joint positions."""
        assert self.scene is not None
        parts: list[np.ndarray] = []
        for body in self.scene.bodies:
            pos, quat = self.scene.pose(body)
            parts += [pos, quat]
            for j in range(p.getNumJoints(body, physicsClientId=self.scene.client)):
                if p.getJointInfo(body, j, physicsClientId=self.scene.client)[2] != p.JOINT_FIXED:
                    parts.append(np.array([self.scene.joint_position(body, j)]))
        return np.concatenate(parts) if parts else np.zeros(0)

    def setup(self, scene: TaskScene, variation: int) -> None:
        if not 0 <= variation < self.variation_count():
            raise UnknownVariationError(
                f"task {self.name!r} has variations 0..{self.variation_count() - 1}, got {variation}"
            )
        self.scene, self.variation = scene, variation
        self.build(scene, variation)


TASKS: dict[str, type[Task]] = {}


def register(cls: type[Task]) -> type[Task]:
    """Class decorator adding a task to the registry under its RLBench name."""
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} registered twice")
    TASKS[cls.name] = cls
    return cls


def make_task(name: str) -> Task:
    """Instantiate a registered task by RLBench name, with a clear error listing the known ones."""
    import sim_bridge.tasks  # noqa: F401  (importing the package registers every task module)

    if name not in TASKS:
        raise UnknownTaskError(f"unknown task {name!r}; available: {', '.join(sorted(TASKS))}")
    return TASKS[name]()
