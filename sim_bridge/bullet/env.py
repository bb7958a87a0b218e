"""The embedded PyBullet simulator behind the :class:`sim_bridge.backend.SimBackend` interface.

An episode: ``reset`` builds a task's randomized scene; ``step`` takes an RLBench keyframe action, reaches
it (a straight Cartesian path when one is free, else an RRT-Connect plan in joint space), executes the path
under position control at 20 Hz (one observation per control tick goes to ``on_frame``), then actuates the
gripper. ``demo`` drives the task's scripted waypoints through the same machinery.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import pybullet as p
from scipy.spatial.transform import Rotation, Slerp

from sim_bridge.actions import KeyframeAction
from sim_bridge.backend import EpisodeInfo, FrameCallback, StepResult
from sim_bridge.bullet import shapes
from sim_bridge.bullet.camera_rig import CameraRig
from sim_bridge.bullet.robot import HOME, TIP_LINK, PandaArm
from sim_bridge.cameras import CAMERA_NAMES, IMAGE_SIZE
from sim_bridge.errors import InvalidActionError, PlanningError, SimError
from sim_bridge.observation import Observation
from sim_bridge.planning import JOINT_LIMIT_DRIFT, plan_joint_path, straight_line_is_valid, time_parameterize
from sim_bridge.tasks.base import TABLE_HEIGHT, TASKS, Task, TaskScene, Waypoint, make_task

log = logging.getLogger(__name__)

WORKSPACE_TOLERANCE = 1e-5  # m
# How much deeper than at the goal the gripper may press into what it is meant to touch on its way there.
INTENDED_CONTACT_SLACK = 0.005  # m
# The deepest a target may put the gripper side into what it is meant to touch (a 5-degree orientation error
# of a drawer grasp puts the wrist ~5 mm into the drawer front).
MAX_INTENDED_PENETRATION = 0.01  # m


@dataclass
class BulletConfig:
    """Simulator settings. Defaults follow research/sim.md's measured recommendations."""

    image_size: int = IMAGE_SIZE
    cameras: tuple[str, ...] = CAMERA_NAMES
    control_hz: float = 20.0
    physics_hz: float = 240.0
    max_joint_velocity: float = 1.0  # rad/s while following a path
    planner: str = "auto"  # "auto" (OMPL if importable), "ompl" or "numpy"
    planning_time: float = 5.0
    planning_resolution: float = 0.03  # rad between collision checks along an edge
    collision_margin: float = 0.01  # m of clearance required by planned (not linear) motions
    linear_step: float = 0.01  # m between IK solutions on a straight Cartesian path
    attach_on_grasp: bool = True  # RLBench-style magic grasp
    settle_ticks: int = 20  # max control ticks to wait for the arm to stop at a keyframe
    gripper_ticks: int = 8
    # Targets outside these bounds are refused (PerAct's scene bounds; z from the table top up 1 m).
    workspace_low: tuple[float, float, float] = (-0.3, -0.5, TABLE_HEIGHT)
    workspace_high: tuple[float, float, float] = (0.7, 0.5, TABLE_HEIGHT + 1.0)


class BulletBackend:
    """Embedded RLBench-style simulator (PyBullet, DIRECT mode, CPU rendering)."""

    def __init__(self, config: BulletConfig | None = None) -> None:
        self.config = config or BulletConfig()
        self.client = p.connect(p.DIRECT)
        self._substeps = round(self.config.physics_hz / self.config.control_hz)
        self._build_world()
        self.rig = CameraRig(self.client, self.config.cameras, self.config.image_size)
        self.task: Task | None = None
        self.scene: TaskScene | None = None
        self.info: EpisodeInfo | None = None
        self._ignore_collisions = 0.0
        self._rng = np.random.default_rng(0)
        self._last_obs: Observation | None = None
        self._excluded: set[int] = set()
        self._joint_velocities = np.zeros(7)  # measured over the last control tick
        # Index, in the last demo's frames, of the frame that ends each scripted waypoint.
        self.demo_waypoint_frames: list[int] = []
        self.demo_steps: list[StepResult] = []  # per-waypoint results (timings) of the last demo

    # -- SimBackend ----------------------------------------------------------------------------------------
    def task_names(self) -> list[str]:
        import sim_bridge.tasks  # noqa: F401  (registers the tasks)

        return sorted(TASKS)

    def variation_count(self, task: str) -> int:
        return make_task(task).variation_count()

    def reset(self, task: str, variation: int, seed: int) -> tuple[EpisodeInfo, Observation]:
        new_task = make_task(task)  # unknown names fail before anything is torn down
        if not 0 <= variation < new_task.variation_count():
            new_task.setup(
                TaskScene(self.client, self.robot, self.table, np.random.default_rng(seed)), variation
            )  # raises
        self._clear_scene()
        self._rng = np.random.default_rng(seed)
        self.robot.reset(HOME)
        self.scene = TaskScene(self.client, self.robot, self.table, np.random.default_rng(seed))
        self.task = new_task
        new_task.setup(self.scene, variation)
        for _ in range(self._substeps * 5):  # let objects settle on the table
            p.stepSimulation(physicsClientId=self.client)
        self._ignore_collisions = 0.0
        self._joint_velocities = np.zeros(7)
        self.info = EpisodeInfo(task, variation, new_task.descriptions(variation), seed)
        return self.info, self.observation()

    def step(self, action: KeyframeAction, on_frame: FrameCallback | None = None) -> StepResult:
        return self._reach(action, linear_only=False, on_frame=on_frame)

    def observation(self) -> Observation:
        task = self._require_task()
        tip = self.robot.tip_pose()
        fingers = self.robot.finger_positions()
        return Observation(
            cameras=self.rig.render(tip),
            joint_positions=self.robot.joint_positions(),
            joint_velocities=self._joint_velocities.copy(),
            joint_forces=self.robot.joint_forces(),
            gripper_open=1.0 if self.robot.gripper_open else 0.0,
            gripper_pose=np.concatenate([tip[:3, 3], Rotation.from_matrix(tip[:3, :3]).as_quat()]),
            gripper_joint_positions=fingers,
            gripper_touch_forces=self.robot.finger_forces(),
            task_low_dim_state=task.low_dim_state(),
            ignore_collisions=self._ignore_collisions,
        )

    def success(self) -> bool:
        return self._require_task().success()

    def demo(self, on_frame: FrameCallback | None = None) -> list[Observation]:
        task = self._require_task()
        frames = [self.observation()]

        def record(obs: Observation) -> None:
            frames.append(obs)
            if on_frame is not None:
                on_frame(obs)

        if on_frame is not None:
            on_frame(frames[0])
        self.demo_waypoint_frames = []
        self.demo_steps = []
        for waypoint in task.demo():
            self.demo_steps.append(self.follow(waypoint, record))
            self.demo_waypoint_frames.append(len(frames) - 1)
        return frames

    def close(self) -> None:
        if self.client >= 0 and p.isConnected(self.client):
            p.disconnect(self.client)
        self.client = -1

    # -- motion --------------------------------------------------------------------------------------------
    def follow(self, waypoint: Waypoint, on_frame: FrameCallback | None = None) -> StepResult:
        """Execute one scripted waypoint (straight line when the waypoint asks for it)."""
        try:
            return self._reach(waypoint.action(), linear_only=waypoint.linear, on_frame=on_frame)
        except PlanningError as err:
            raise PlanningError(f"waypoint {waypoint.name or '?'}: {err}") from err

    def _reach(self, action: KeyframeAction, linear_only: bool, on_frame: FrameCallback | None) -> StepResult:
        self._require_task()
        self._last_obs = None
        action = KeyframeAction.from_vector(action.to_vector())  # re-validates actions built by hand
        self._check_workspace(action.position)
        started = time.perf_counter()
        path = self._path_to(action, linear_only)
        planned = time.perf_counter()
        self._ignore_collisions = float(action.ignore_collisions)
        ticks = self._execute(path, on_frame)
        if action.gripper_open != self.robot.gripper_open:
            self._actuate_gripper(action.gripper_open)
            ticks += 1
            self._emit(on_frame)
        obs = self._last_obs or self.observation()
        return StepResult(obs, self.success(), ticks, planned - started, time.perf_counter() - planned)

    def _check_workspace(self, position: np.ndarray) -> None:
        # The tolerance admits float32 policy outputs clipped to the same bounds (-0.3 -> -0.30000001).
        low = np.asarray(self.config.workspace_low) - WORKSPACE_TOLERANCE
        high = np.asarray(self.config.workspace_high) + WORKSPACE_TOLERANCE
        if np.any(position < low) or np.any(position > high):
            raise InvalidActionError(
                f"target {np.round(position, 3).tolist()} is outside the workspace "
                f"{list(self.config.workspace_low)}..{list(self.config.workspace_high)}"
            )

    def _path_to(self, action: KeyframeAction, linear_only: bool) -> np.ndarray:
        start = self.robot.joint_positions()
        state = p.saveState(physicsClientId=self.client)
        try:
            # Like RLBench, bodies already touching the arm (a pressed button, a grasped handle) do not block
            # the motion away from them.
            touching = {
                b
                for b, _ in self.robot.collisions(start, self._obstacles(False), self.config.collision_margin)
            }
            self._excluded = touching
            linear = self._linear_path(start, action)
            if linear is not None or linear_only:
                if linear is None:
                    raise PlanningError("no collision-free straight-line path to the target")
                return linear
            goal = self.robot.inverse_kinematics(
                action.position, action.quaternion, seeds=[start, HOME], rng=self._rng
            )
            margin = self.config.collision_margin
            may_touch = self._intended_contacts(goal, action.ignore_collisions)
            checker = self._validity(action.ignore_collisions, margin, may_touch)
            if not checker(goal):
                hits = self._collision_names(goal, margin, may_touch)
                raise PlanningError(f"target configuration collides with {hits}")
            # Contact can push a joint past its limit (~0.07 rad seen); like a real arm's controller, move
            # back inside first, then plan from there.
            inside = np.clip(start, self.robot.lower, self.robot.upper)
            path = plan_joint_path(
                inside, goal, checker, self.robot.lower, self.robot.upper,
                time_limit=self.config.planning_time, resolution=self.config.planning_resolution,
                seed=int(self._rng.integers(2**31)), planner=self.config.planner,
            )  # fmt: skip
            return path if np.array_equal(inside, start) else np.vstack([start, path])
        finally:
            self._excluded = set()
            p.restoreState(state, physicsClientId=self.client)
            p.removeState(state, physicsClientId=self.client)
            self.robot.hold(self.robot.joint_positions())

    def _linear_path(self, start: np.ndarray, action: KeyframeAction) -> np.ndarray | None:
        """Joint path along the straight Cartesian line to the target (RLBench's ``get_linear_path``), or None
        when IK fails along it, the joints jump, or (unless collisions are ignored) it collides."""
        tip = self.robot.forward_kinematics(start)
        p0, p1 = tip[:3, 3], action.position
        r0 = Rotation.from_matrix(tip[:3, :3])
        r1 = Rotation.from_quat(action.quaternion)
        angle = (r0.inv() * r1).magnitude()
        n = max(2, int(math.ceil(max(np.linalg.norm(p1 - p0) / self.config.linear_step, angle / 0.05))) + 1)
        slerp = Slerp([0.0, 1.0], Rotation.concatenate([r0, r1]))
        checker = self._validity(action.ignore_collisions, margin=0.0)
        q, path = start, [start]
        for t in np.linspace(0.0, 1.0, n)[1:]:
            try:
                q_next = self.robot.inverse_kinematics(
                    p0 + t * (p1 - p0), slerp([t]).as_quat()[0], seeds=[q], rng=self._rng, restarts=0
                )
            except PlanningError:
                return None
            if np.max(np.abs(q_next - q)) > 0.35:  # IK flipped to another branch: not a straight motion
                return None
            if not straight_line_is_valid(q, q_next, checker, self.config.planning_resolution):
                return None
            path.append(q_next)
            q = q_next
        return np.asarray(path)

    def _obstacles(self, ignore_collisions: bool) -> list[int]:
        if ignore_collisions:
            return []
        return [b for b in [self.table, *self._require_scene().bodies] if b not in self._excluded]

    def _intended_contacts(self, goal: np.ndarray, ignore_collisions: bool) -> dict[tuple[int, int], float]:
        """What the gripper side is meant to touch at ``goal``: every (body, link) it comes within the
        collision margin of there, with the smallest distance tolerated on the way (as close as at the goal,
        less ``INTENDED_CONTACT_SLACK``). The expert grasps handles and presses buttons this way, so the
        margin that keeps planned motions clear of obstacles must not refuse the grasp itself. A target more
        than ``MAX_INTENDED_PENETRATION`` inside an object stays a collision, and the gripper may come close
        to the table but never into it."""
        proximity = self.robot.gripper_proximity(
            goal, self._obstacles(ignore_collisions), self.config.collision_margin
        )
        deepest = {self.table: 0.0}
        return {
            (body, link): min(0.0, distance) - INTENDED_CONTACT_SLACK
            for (body, link), distance in proximity.items()
            if distance >= -deepest.get(body, MAX_INTENDED_PENETRATION)
        }

    def _validity(
        self, ignore_collisions: bool, margin: float, may_touch: dict[tuple[int, int], float] | None = None
    ):
        """State-validity function for the planner; teleports the arm, so call inside a saved state."""
        obstacles = self._obstacles(ignore_collisions)

        def valid(q: np.ndarray) -> bool:
            # As tolerant of joints a hair past their limits as plan_joint_path is of its start and goal:
            # under load the physics leaves a joint up to ~1e-3 rad outside, and the next plan starts there.
            return self.robot.within_limits(q, tol=JOINT_LIMIT_DRIFT) and not self.robot.collisions(
                q, obstacles, margin, may_touch
            )

        return valid

    def _collision_names(
        self, q: np.ndarray, margin: float, may_touch: dict[tuple[int, int], float] | None = None
    ) -> list[str]:
        hits = self.robot.collisions(q, self._obstacles(False), margin, may_touch)
        names = {self.table: "table", self.robot.body: "robot (self-collision)"}
        return sorted({names.get(b, f"object {b}") for b, _ in hits})

    def _execute(self, path: np.ndarray, on_frame: FrameCallback | None) -> int:
        dt = 1.0 / self.config.control_hz
        targets = time_parameterize(path, self.config.max_joint_velocity, dt)
        ticks = 0
        for q in targets[1:]:
            self.robot.hold(q)
            self._tick()
            self._emit(on_frame)
            ticks += 1
        goal = path[-1]
        for _ in range(self.config.settle_ticks):
            self.robot.hold(goal)
            self._tick()
            self._emit(on_frame)
            ticks += 1
            if (
                np.max(np.abs(self.robot.joint_positions() - goal)) < 2e-3
                and np.max(np.abs(self._joint_velocities)) < 0.05
            ):
                break
        return ticks

    def _actuate_gripper(self, open_: bool) -> None:
        if open_:
            self.robot.release()
        self.robot.command_gripper(open_)
        for _ in range(self.config.gripper_ticks):
            self._tick()
        if not open_ and self.config.attach_on_grasp:
            body = self._grasp_candidate()
            if body is not None:
                self.robot.attach(body)

    def _grasp_candidate(self) -> int | None:
        """A graspable body touched by both fingers, else one touched by a finger within 3 cm of the tool
        centre (RLBench attaches whatever its gripper proximity sensor detects)."""
        near_one: int | None = None
        for body in self._require_task().graspable():
            touches = [
                bool(p.getContactPoints(self.robot.body, body, link, physicsClientId=self.client))
                for link in (9, 10)
            ]
            if all(touches):
                return body
            near_tip = p.getClosestPoints(self.robot.body, body, 0.03, TIP_LINK, physicsClientId=self.client)
            if any(touches) and near_one is None and near_tip:
                near_one = body
        return near_one

    def _tick(self) -> None:
        before = self.robot.joint_positions()
        for _ in range(self._substeps):
            p.stepSimulation(physicsClientId=self.client)
        self._joint_velocities = (self.robot.joint_positions() - before) * self.config.control_hz
        self._require_task().on_tick()

    def _emit(self, on_frame: FrameCallback | None) -> None:
        if on_frame is not None:
            self._last_obs = self.observation()
            on_frame(self._last_obs)

    # -- helpers -------------------------------------------------------------------------------------------
    def _build_world(self) -> None:
        """An empty physics world with floor, table and arm.

        Every reset starts from here (``resetSimulation``), not from the last episode minus its bodies:
        body ids, contact caches and solver warm starts would otherwise carry over, and a seeded episode's
        outcome would depend on the episodes run before it in the same process (measured: the scripted
        sweep demo of one seed succeeded alone and failed after another episode).
        """
        p.resetSimulation(physicsClientId=self.client)
        p.setGravity(0, 0, -9.81, physicsClientId=self.client)
        p.setTimeStep(1.0 / self.config.physics_hz, physicsClientId=self.client)
        self.floor = shapes.create_body(
            self.client, [shapes.box((3.0, 3.0, 0.01), (0.55, 0.55, 0.55, 1))], (0, 0, -0.01)
        )
        self.table = shapes.create_body(
            self.client,
            [shapes.box((0.75, 0.75, 0.02), (0.72, 0.6, 0.45, 1))],
            (0.15, 0.0, TABLE_HEIGHT - 0.02),
        )
        self.robot = PandaArm(self.client, base_position=(-0.3, 0.0, TABLE_HEIGHT))

    def _clear_scene(self) -> None:
        self._build_world()
        self.task = self.scene = self.info = None

    def _require_task(self) -> Task:
        if self.task is None:
            raise SimError("no episode: call reset(task, variation, seed) first")
        return self.task

    def _require_scene(self) -> TaskScene:
        if self.scene is None:
            raise SimError("no episode: call reset(task, variation, seed) first")
        return self.scene
