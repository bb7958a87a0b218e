"""The Franka Panda in PyBullet: kinematics (FK/IK), collision checking for the planner, joint-space control,
and the gripper with RLBench-style "magic grasp" (the grasped object is attached by a fixed constraint)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pybullet as p
from scipy.spatial.transform import Rotation

from sim_bridge.bullet.assets import low_poly_panda_urdf
from sim_bridge.errors import IKError

ARM_JOINTS = (0, 1, 2, 3, 4, 5, 6)
FINGER_JOINTS = (9, 10)
HAND_LINK = 8
TIP_LINK = 11  # panda_grasptarget: the tool centre point, 10.5 cm in front of the hand
WRIST_LINKS = (6, 7)  # panda_link7 and the flange, the hand's mount
# The links that may touch what the gripper is meant to touch (see PandaArm.collisions): the hand and the
# fingers, and the wrist right behind them, which a grasp pitched towards a drawer front brings within
# millimetres of it (a 5-degree error in the grasp's orientation moves the wrist ~1.3 cm).
GRIPPER_LINKS = frozenset({*WRIST_LINKS, HAND_LINK, *FINGER_JOINTS, TIP_LINK})
FINGER_OPEN = 0.04
# RLBench's Panda start configuration: tip ~0.3 m above the table, pointing down.
HOME = np.array([0.0, 0.175, 0.0, -0.873, 0.0, 1.222, 0.785])
# Link pairs that touch in every configuration (link7/hand/fingers around the massless flange).
_ALWAYS_TOUCHING = {(6, 8), (6, 9), (6, 10), (8, 9), (8, 10), (9, 10), (6, 7), (7, 8), (7, 9), (7, 10)}
# Self-collision pairs worth checking for keyframe motions: the hand and fingers against the upper arm.
_SELF_PAIRS = [(a, b) for a in (8, 9, 10) for b in (0, 1, 2, 3)] + [(6, 0), (6, 1), (6, 2), (5, 0), (5, 1)]


@dataclass
class Grasp:
    """An object held by the gripper: its body id, constraint id and pose in the tip frame."""

    body: int
    constraint: int
    tip_from_object: np.ndarray  # (4, 4)


def pose_matrix(position: Iterable[float], quaternion: Iterable[float]) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = Rotation.from_quat(list(quaternion)).as_matrix()
    m[:3, 3] = list(position)
    return m


def _matrix_to_pose(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return m[:3, 3].copy(), Rotation.from_matrix(m[:3, :3]).as_quat()


class PandaArm:
    """Kinematics, control and collision checks for one Panda in a PyBullet client."""

    def __init__(self, client: int, base_position=(-0.3, 0.0, 0.752)) -> None:
        self.client = client
        self.body = p.loadURDF(
            str(low_poly_panda_urdf()),
            basePosition=list(base_position),
            useFixedBase=True,
            physicsClientId=client,
        )
        info = [p.getJointInfo(self.body, j, physicsClientId=client) for j in ARM_JOINTS]
        self.lower = np.array([i[8] for i in info])
        self.upper = np.array([i[9] for i in info])
        self.max_force = np.array([i[10] for i in info])
        for j in FINGER_JOINTS:
            p.changeDynamics(self.body, j, lateralFriction=1.5, physicsClientId=client)
        self.grasp: Grasp | None = None
        self.gripper_open = True
        self.reset(HOME)

    # -- state ---------------------------------------------------------------------------------------------
    def joint_positions(self) -> np.ndarray:
        return np.array([s[0] for s in p.getJointStates(self.body, ARM_JOINTS, physicsClientId=self.client)])

    def joint_forces(self) -> np.ndarray:
        return np.array([s[3] for s in p.getJointStates(self.body, ARM_JOINTS, physicsClientId=self.client)])

    def finger_positions(self) -> np.ndarray:
        return np.array(
            [s[0] for s in p.getJointStates(self.body, FINGER_JOINTS, physicsClientId=self.client)]
        )

    def finger_forces(self) -> np.ndarray:
        """(6,) contact force sums per finger (normal force along the contact normals)."""
        out = np.zeros(6)
        for k, link in enumerate(FINGER_JOINTS):
            for c in p.getContactPoints(bodyA=self.body, linkIndexA=link, physicsClientId=self.client):
                out[3 * k : 3 * k + 3] += np.asarray(c[7]) * c[9]
        return out

    def tip_pose(self) -> np.ndarray:
        """4x4 world pose of the tool centre point."""
        s = p.getLinkState(self.body, TIP_LINK, computeForwardKinematics=True, physicsClientId=self.client)
        return pose_matrix(s[4], s[5])

    def reset(self, q: np.ndarray, gripper_open: bool = True) -> None:
        """Teleport the arm (used at episode start and inside kinematic queries)."""
        self._set_arm(q)
        for j in FINGER_JOINTS:
            p.resetJointState(self.body, j, FINGER_OPEN if gripper_open else 0.0, physicsClientId=self.client)
        self.gripper_open = gripper_open
        self.hold(q)
        self.command_gripper(gripper_open)

    def _set_arm(self, q: np.ndarray) -> None:
        for j, v in zip(ARM_JOINTS, q, strict=True):
            p.resetJointState(self.body, j, float(v), physicsClientId=self.client)
        if self.grasp is not None:
            obj = self.tip_pose() @ self.grasp.tip_from_object
            pos, quat = _matrix_to_pose(obj)
            p.resetBasePositionAndOrientation(self.grasp.body, pos, quat, physicsClientId=self.client)

    # -- control -------------------------------------------------------------------------------------------
    def hold(self, q: np.ndarray, gain: float = 0.5) -> None:
        """Position-control targets for the arm; a high gain keeps tracking error small (research/sim.md).

        PyBullet's position motors move joints through position correction, so the joint velocities
        that ``getJointState`` reports stay near zero; the simulator measures velocities by differencing
        positions over a control tick instead.
        """
        p.setJointMotorControlArray(
            self.body, ARM_JOINTS, p.POSITION_CONTROL, targetPositions=list(q),
            forces=list(self.max_force * 2.0), positionGains=[gain] * 7, physicsClientId=self.client,
        )  # fmt: skip

    def command_gripper(self, open_: bool) -> None:
        target = FINGER_OPEN if open_ else 0.0
        p.setJointMotorControlArray(
            self.body, FINGER_JOINTS, p.POSITION_CONTROL, targetPositions=[target, target],
            forces=[40.0, 40.0], positionGains=[0.3, 0.3], physicsClientId=self.client,
        )  # fmt: skip
        self.gripper_open = open_

    def attach(self, body: int) -> None:
        """Rigidly attach ``body`` to the hand where it currently is (RLBench's magic grasp)."""
        tip = self.tip_pose()
        pos, quat = p.getBasePositionAndOrientation(body, physicsClientId=self.client)
        tip_from_object = np.linalg.inv(tip) @ pose_matrix(pos, quat)
        hand = p.getLinkState(self.body, HAND_LINK, physicsClientId=self.client)
        hand_from_object = np.linalg.inv(pose_matrix(hand[4], hand[5])) @ pose_matrix(pos, quat)
        # The constraint frame lives at the link's centre of mass: express the object pose there.
        com_from_hand = np.linalg.inv(pose_matrix(hand[2], hand[3]))
        child_in_com = com_from_hand @ hand_from_object
        cpos, cquat = _matrix_to_pose(child_in_com)
        cid = p.createConstraint(
            self.body, HAND_LINK, body, -1, p.JOINT_FIXED, [0, 0, 0],
            parentFramePosition=cpos, childFramePosition=[0, 0, 0], parentFrameOrientation=cquat,
            physicsClientId=self.client,
        )  # fmt: skip
        p.changeConstraint(cid, maxForce=2000.0, physicsClientId=self.client)
        self.grasp = Grasp(body, cid, tip_from_object)

    def release(self) -> int | None:
        """Detach the held object, if any; returns its body id."""
        if self.grasp is None:
            return None
        p.removeConstraint(self.grasp.constraint, physicsClientId=self.client)
        body, self.grasp = self.grasp.body, None
        return body

    # -- kinematics ----------------------------------------------------------------------------------------
    def within_limits(self, q: np.ndarray, tol: float = 1e-6) -> bool:
        return bool(np.all(q >= self.lower - tol) and np.all(q <= self.upper + tol))

    def inverse_kinematics(
        self, position: np.ndarray, quaternion: np.ndarray, seeds: Iterable[np.ndarray],
        rng: np.random.Generator, restarts: int = 4, pos_tol: float = 1e-3, rot_tol: float = 1e-2,
    ) -> np.ndarray:  # fmt: skip
        """Joint configuration within the joint limits that puts the tip at the pose, or IKError.

        From each seed, then from random configurations (RLBench's planner also samples several IK
        solutions): pybullet's damped-least-squares IK without null-space terms (those bias the solution by
        ~1 mm); when its solution leaves the joint limits, a damped-least-squares solve that clamps every
        iterate to the limits takes over from the same seed. The caller's arm state is restored.
        """
        target = pose_matrix(position, quaternion)
        with self.preserved_arm():
            candidates = [np.asarray(s, dtype=float) for s in seeds]
            candidates += [rng.uniform(self.lower, self.upper) for _ in range(restarts)]
            best_err = np.inf
            outside_limits = 0
            for seed in candidates:
                q = self._solve_from(seed, position, quaternion)
                if q is not None and not self.within_limits(q):
                    outside_limits += 1
                    q = self._solve_within_limits(seed, target)
                if q is None:
                    continue
                err_p, err_r = self._pose_error(target)
                if err_p < pos_tol and err_r < rot_tol and self.within_limits(q):
                    return q
                best_err = min(best_err, err_p)
            limits = f"; {outside_limits} of {len(candidates)} unconstrained solutions broke the joint limits"
            raise IKError(
                f"no IK solution for position {np.round(position, 3).tolist()} "
                f"quaternion {np.round(quaternion, 3).tolist()} "
                f"(best position error {best_err * 1000:.1f} mm{limits if outside_limits else ''})"
            )

    def _solve_from(self, seed: np.ndarray, position, quaternion, iterations: int = 8) -> np.ndarray | None:
        self._set_arm(np.clip(seed, self.lower, self.upper))
        q = seed
        for _ in range(iterations):
            sol = p.calculateInverseKinematics(
                self.body, TIP_LINK, list(position), list(quaternion), solver=p.IK_DLS,
                maxNumIterations=100, residualThreshold=1e-5, physicsClientId=self.client,
            )  # fmt: skip
            q = np.array(sol[:7])
            if not np.all(np.isfinite(q)):
                return None
            self._set_arm(q)
        return q

    def _solve_within_limits(
        self, seed: np.ndarray, target: np.ndarray, iterations: int = 150, damping: float = 0.05
    ) -> np.ndarray:
        """Damped least squares on the tip's 6-D pose error, each step clamped to the joint limits.

        Slower than pybullet's solver (a Jacobian per iteration in Python), so it only runs where that one
        left the limits. Ends at the limit-respecting configuration closest to the target it reached.
        """
        q = np.clip(np.asarray(seed, dtype=float), self.lower, self.upper)
        fingers = list(self.finger_positions())
        zeros = [0.0] * (len(ARM_JOINTS) + len(FINGER_JOINTS))
        for _ in range(iterations):
            self._set_arm(q)
            tip = self.tip_pose()
            error = np.concatenate([
                target[:3, 3] - tip[:3, 3],
                Rotation.from_matrix(target[:3, :3] @ tip[:3, :3].T).as_rotvec(),
            ])  # fmt: skip
            if np.linalg.norm(error[:3]) < 1e-4 and np.linalg.norm(error[3:]) < 1e-3:
                break
            linear, angular = p.calculateJacobian(
                self.body, TIP_LINK, [0.0, 0.0, 0.0], list(q) + fingers, zeros, zeros,
                physicsClientId=self.client,
            )  # fmt: skip
            jacobian = np.vstack([np.asarray(linear)[:, :7], np.asarray(angular)[:, :7]])
            step = jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + damping**2 * np.eye(6), error)
            q = np.clip(q + np.clip(step, -0.2, 0.2), self.lower, self.upper)
        self._set_arm(q)
        return q

    def _pose_error(self, target: np.ndarray) -> tuple[float, float]:
        tip = self.tip_pose()
        err_p = float(np.linalg.norm(tip[:3, 3] - target[:3, 3]))
        err_r = float(Rotation.from_matrix(tip[:3, :3].T @ target[:3, :3]).magnitude())
        return err_p, err_r

    def forward_kinematics(self, q: np.ndarray) -> np.ndarray:
        """4x4 tip pose at configuration q (arm state restored afterwards)."""
        with self.preserved_arm():
            self._set_arm(q)
            return self.tip_pose()

    @contextmanager
    def preserved_arm(self) -> Iterator[None]:
        """Restore the arm's joint positions and velocities on exit, and keep a held object where it is
        meanwhile. Much cheaper than ``saveState`` (which copies the whole world) for kinematic probes."""
        states = p.getJointStates(self.body, ARM_JOINTS, physicsClientId=self.client)
        held, self.grasp = self.grasp, None
        try:
            yield
        finally:
            for j, (q, v, *_rest) in zip(ARM_JOINTS, states, strict=True):
                p.resetJointState(self.body, j, q, v, physicsClientId=self.client)
            self.grasp = held

    # -- collision checking --------------------------------------------------------------------------------
    def collisions(
        self, q: np.ndarray, obstacles: Iterable[int], margin: float = 0.0,
        gripper_may_touch: Mapping[tuple[int, int], float] | None = None,
    ) -> list[tuple[int, int]]:  # fmt: skip
        """(body, link) pairs the arm (or the held object) touches at q, closer than ``margin``.

        ``gripper_may_touch`` maps (body, link) pairs that the gripper side (hand, fingers, held object) is
        meant to touch at the end of this motion (a handle to grasp, a button to press, the surface to put
        the held object on) to the smallest distance tolerated there (negative: penetration depth); closer
        contacts with those pairs still count. Teleports the arm: call inside a saved state.
        """
        may_touch = gripper_may_touch or {}
        hits: list[tuple[int, int]] = []
        for body, link, by_gripper, distance in self._proximity(q, obstacles, margin):
            if by_gripper and distance >= may_touch.get((body, link), np.inf):
                continue
            if not hits or hits[-1] != (body, link):
                hits.append((body, link))
        for a, b in _SELF_PAIRS:
            if p.getClosestPoints(self.body, self.body, 0.0, a, b, physicsClientId=self.client):
                hits.append((self.body, b))
        return hits

    def gripper_proximity(
        self, q: np.ndarray, obstacles: Iterable[int], margin: float
    ) -> dict[tuple[int, int], float]:
        """Smallest distance from the gripper side (hand, fingers, held object) to each (body, link) it comes
        within ``margin`` of at q (negative: penetration). Teleports the arm, like :meth:`collisions`."""
        closest: dict[tuple[int, int], float] = {}
        for body, link, by_gripper, distance in self._proximity(q, obstacles, margin):
            if by_gripper:
                closest[(body, link)] = min(distance, closest.get((body, link), np.inf))
        return closest

    def _proximity(
        self, q: np.ndarray, obstacles: Iterable[int], margin: float
    ) -> Iterator[tuple[int, int, bool, float]]:
        """(obstacle body, obstacle link, made by the gripper side, distance) of every point pair closer than
        ``margin`` between the arm or its held object at q and the obstacles."""
        self._set_arm(q)
        p.performCollisionDetection(physicsClientId=self.client)
        held = self.grasp.body if self.grasp is not None else None
        movers = [self.body] + ([held] if held is not None else [])
        for body in obstacles:
            if body == held:
                continue
            for mover in movers:
                for c in p.getClosestPoints(mover, body, margin, physicsClientId=self.client):
                    if mover == self.body and c[3] <= 0:  # robot base resting on the table
                        continue
                    yield body, c[4], mover == held or c[3] in GRIPPER_LINKS, c[8]
