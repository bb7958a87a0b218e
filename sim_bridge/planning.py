"""Collision-free joint-space motion planning, independent of the simulator.

The simulator supplies only ``is_valid(q) -> bool``; everything here is pure geometry on joint vectors, so the
same code serves PyBullet, MuJoCo or a unit test with a synthetic obstacle.

Resolution convention: every ``resolution`` / ``max_step`` in this module is an **infinity-norm** bound, i.e.
the largest change of any single joint (radians) between two consecutive checked states. With that norm an
obstacle that is thicker than ``resolution`` along any one joint can never slip between two checks, whatever
the number of joints.

Planners: OMPL's RRTConnect when the ``ompl`` wheel imports (``planner="auto"``), otherwise an in-repo numpy
RRT-Connect with randomized shortcutting. Both check edges with :func:`straight_line_is_valid` (OMPL through a
Python ``MotionValidator``), and the final path is re-checked densely before it is returned.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import numbers
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from sim_bridge.errors import BackendUnavailableError, PlanningError

logger = logging.getLogger(__name__)

ValidityFn = Callable[[np.ndarray], bool]
PLANNERS = ("auto", "ompl", "numpy")
# How far past a joint limit a start or goal may lie (a simulator's joints drift that far under load).
JOINT_LIMIT_DRIFT = 1e-3


@dataclass(frozen=True)
class RRTConnectConfig:
    """Tuning of RRT-Connect. ``step`` applies to both planners (OMPL's "range"), the rest to numpy only.

    A 0.5 rad step needed fewer validity checks than 0.2 rad (numpy) or OMPL's default range of 20 % of the
    space's extent on a 7-D wall-with-gap problem (bench/bench_planning.py); checks dominate the cost once
    they are physics-engine queries.
    """

    step: float = 0.5  # max Euclidean length (rad) of one tree extension
    shortcut_iterations: int = 100  # randomized shortcut attempts after a path is found (numpy)
    initial_capacity: int = 1024  # node-array size per tree; doubles when full (numpy)

    def __post_init__(self) -> None:
        _check_positive("step", self.step)
        if self.shortcut_iterations < 0 or self.initial_capacity < 1:
            raise ValueError("shortcut_iterations must be >= 0 and initial_capacity >= 1")


# ----------------------------------------------------------------------------------------------------
# Geometry shared by both planners: one discretization of a straight segment, for checking and resampling.


def _segment_states(a: np.ndarray, b: np.ndarray, max_step: float) -> np.ndarray:
    """States from ``a`` to ``b`` inclusive, evenly spaced, no joint moving more than ``max_step`` a step."""
    span = float(np.max(np.abs(b - a))) if a.size else 0.0
    count = max(1, math.ceil(span / max_step))
    fractions = np.linspace(0.0, 1.0, count + 1)[:, None]
    states = a[None, :] + fractions * (b - a)[None, :]
    states[-1] = b  # exact endpoint, free of rounding
    return states


def straight_line_is_valid(
    a: np.ndarray, b: np.ndarray, is_valid: ValidityFn, resolution: float, *, check_start: bool = True
) -> bool:
    """Whether every state on the segment a→b, sampled every ``resolution`` (infinity norm), is valid.

    ``check_start=False`` skips ``a`` when the caller already knows it is valid (tree nodes), saving one check
    per edge; ``b`` and all interior states are always checked.
    """
    _check_positive("resolution", resolution)
    states = _segment_states(np.asarray(a, dtype=float), np.asarray(b, dtype=float), resolution)
    first = 0 if check_start else 1
    return all(is_valid(q) for q in states[first:])


def path_is_valid(path: np.ndarray, is_valid: ValidityFn, resolution: float) -> bool:
    """Whether every waypoint and every edge of ``path`` (N, D) is valid at ``resolution``."""
    path = np.asarray(path, dtype=float)
    if len(path) == 0 or not is_valid(path[0]):
        return False
    return all(
        straight_line_is_valid(path[i], path[i + 1], is_valid, resolution, check_start=False)
        for i in range(len(path) - 1)
    )


def interpolate_path(path: np.ndarray, max_step: float) -> np.ndarray:
    """Resample a waypoint path so consecutive rows differ by at most ``max_step`` in every joint.

    Every original waypoint is kept and new rows lie on the original segments, so the geometry (and therefore
    validity) is unchanged.
    """
    _check_positive("max_step", max_step)
    path = _as_path(path)
    if len(path) == 1:
        return path.copy()
    pieces = [path[:1]]
    for i in range(len(path) - 1):
        pieces.append(_segment_states(path[i], path[i + 1], max_step)[1:])
    return np.concatenate(pieces, axis=0)


def time_parameterize(
    path: np.ndarray, max_velocity: float | Sequence[float] | np.ndarray, dt: float
) -> np.ndarray:
    """Rows of joint targets at a fixed control period ``dt``, every joint's speed at most ``max_velocity``.

    Each segment gets a whole number of periods (rounded up), so every waypoint is itself a row and each pair
    of consecutive rows lies on one validated segment: sending the rows as position targets never cuts a
    corner. Speed is constant along a segment; the position controller smooths the joins.
    """
    _check_positive("dt", dt)
    path = _as_path(path)
    limits = np.broadcast_to(np.asarray(max_velocity, dtype=float), (path.shape[1],))
    if not np.all(np.isfinite(limits)) or np.any(limits <= 0):
        raise ValueError(f"max_velocity must be positive and finite, got {max_velocity!r}")
    rows = [path[:1]]
    for i in range(len(path) - 1):
        duration = float(np.max(np.abs(path[i + 1] - path[i]) / limits))
        periods = math.ceil(duration / dt - 1e-9)
        if periods == 0:
            continue  # repeated waypoint
        fractions = np.arange(1, periods + 1, dtype=float)[:, None] / periods
        segment = path[i][None, :] + fractions * (path[i + 1] - path[i])[None, :]
        segment[-1] = path[i + 1]
        rows.append(segment)
    return np.concatenate(rows, axis=0)


def shortcut_path(
    path: np.ndarray,
    is_valid: ValidityFn,
    resolution: float,
    rng: np.random.Generator,
    iterations: int,
    deadline: float = math.inf,
) -> np.ndarray:
    """Randomized shortcutting: join two random points on the path by a straight line when it is valid.

    The points are drawn along the path's length (not only at waypoints), which removes the detours RRT leaves
    inside a segment. Each accepted shortcut strictly shortens the path; the start and goal never move.
    """
    points = [np.asarray(q, dtype=float) for q in _as_path(path)]
    points = _remove_redundant_vertices(points, is_valid, resolution)
    for _ in range(iterations):
        if len(points) < 3 or time.perf_counter() > deadline:
            break
        lengths = np.linalg.norm(np.diff(np.stack(points), axis=0), axis=1)
        cumulative = np.concatenate(([0.0], np.cumsum(lengths)))
        t_low, t_high = np.sort(rng.uniform(0.0, cumulative[-1], size=2))
        i = min(int(np.searchsorted(cumulative, t_low, side="right")) - 1, len(lengths) - 1)
        j = min(int(np.searchsorted(cumulative, t_high, side="right")) - 1, len(lengths) - 1)
        if i == j:
            continue  # both points on one segment: nothing to gain
        p = _point_on_segment(points[i], points[i + 1], t_low - cumulative[i], lengths[i])
        q = _point_on_segment(points[j], points[j + 1], t_high - cumulative[j], lengths[j])
        # p and q lie on valid segments but were not necessarily sampled, and the cut segments are sampled
        # differently from the originals, so all three new edges are checked, as the final re-check will.
        new_edges = ((p, q), (points[i], p), (q, points[j + 1]))  # the shortcut, most likely to fail, first
        if all(straight_line_is_valid(u, v, is_valid, resolution, check_start=False) for u, v in new_edges):
            points = points[: i + 1] + [p, q] + points[j + 1 :]
    points = _remove_redundant_vertices(points, is_valid, resolution)
    return _drop_repeated_rows(np.stack(points))


def _remove_redundant_vertices(
    points: list[np.ndarray], is_valid: ValidityFn, resolution: float
) -> list[np.ndarray]:
    """Drop every waypoint whose neighbours see each other (one pass, one edge check per waypoint).

    RRT leaves chains of short collinear steps and shortcutting adds two waypoints per success; this keeps the
    path to the few waypoints that actually bend around obstacles.
    """
    if len(points) < 3:
        return list(points)
    kept = [points[0]]
    for index in range(1, len(points) - 1):
        if not straight_line_is_valid(kept[-1], points[index + 1], is_valid, resolution, check_start=False):
            kept.append(points[index])
    kept.append(points[-1])
    return kept


def _point_on_segment(a: np.ndarray, b: np.ndarray, offset: float, length: float) -> np.ndarray:
    return a.copy() if length <= 0.0 else a + (min(offset, length) / length) * (b - a)


def _drop_repeated_rows(path: np.ndarray, tolerance: float = 1e-12) -> np.ndarray:
    """Remove zero-length edges, keeping the exact first and last rows."""
    kept = [path[0]]
    for row in path[1:-1]:
        if np.max(np.abs(row - kept[-1])) > tolerance:
            kept.append(row)
    if len(path) > 1:
        if len(kept) > 1 and np.max(np.abs(path[-1] - kept[-1])) <= tolerance:
            kept[-1] = path[-1]
        else:
            kept.append(path[-1])
    return np.stack(kept)


# ----------------------------------------------------------------------------------------------------
# Numpy RRT-Connect (fallback planner).


class _Tree:
    """Growable array of nodes with parent indices; nearest-neighbour search is a vectorized scan."""

    def __init__(self, root: np.ndarray, capacity: int) -> None:
        self.nodes = np.empty((max(capacity, 1), root.size))
        self.parents = np.empty(max(capacity, 1), dtype=np.int64)
        self.nodes[0], self.parents[0], self.size = root, -1, 1

    def nearest(self, q: np.ndarray) -> int:
        return int(np.argmin(np.sum((self.nodes[: self.size] - q) ** 2, axis=1)))

    def add(self, q: np.ndarray, parent: int) -> int:
        if self.size == len(self.nodes):
            self.nodes = np.concatenate([self.nodes, np.empty_like(self.nodes)])
            self.parents = np.concatenate([self.parents, np.empty_like(self.parents)])
        self.nodes[self.size], self.parents[self.size] = q, parent
        self.size += 1
        return self.size - 1

    def branch(self, index: int) -> np.ndarray:
        """States from the root to node ``index``."""
        chain = []
        while index >= 0:
            chain.append(self.nodes[index])
            index = int(self.parents[index])
        return np.stack(chain[::-1])


def _rrt_connect(
    start: np.ndarray,
    goal: np.ndarray,
    is_valid: ValidityFn,
    lower: np.ndarray,
    upper: np.ndarray,
    resolution: float,
    rng: np.random.Generator,
    config: RRTConnectConfig,
    deadline: float,
) -> np.ndarray | None:
    """Bidirectional RRT with greedy CONNECT (Kuffner & LaValle 2000); None when the deadline passes."""
    start_tree = _Tree(start, config.initial_capacity)
    trees = [start_tree, _Tree(goal, config.initial_capacity)]  # swapped after every iteration

    def steer(tree: _Tree, target: np.ndarray) -> tuple[int, bool]:
        """Add one step from the nearest node toward ``target``; returns (new node or -1, reached target)."""
        near = tree.nearest(target)
        origin = tree.nodes[near]
        delta = target - origin
        distance = float(np.linalg.norm(delta))
        reached = distance <= config.step
        new = target.copy() if reached else origin + delta * (config.step / distance)
        if not straight_line_is_valid(origin, new, is_valid, resolution, check_start=False):
            return -1, False
        return tree.add(new, near), reached

    while time.perf_counter() < deadline:
        grow, other = trees
        added, _ = steer(grow, rng.uniform(lower, upper))
        if added >= 0:
            target = grow.nodes[added].copy()
            while time.perf_counter() < deadline:
                reached_index, reached = steer(other, target)
                if reached_index < 0:
                    break
                if reached:
                    ends = [grow.branch(added), other.branch(reached_index)]  # both end at the meeting state
                    forward, backward = ends if grow is start_tree else ends[::-1]
                    return np.concatenate([forward, backward[-2::-1]], axis=0)
        trees.reverse()
    return None


def _plan_numpy(
    start: np.ndarray,
    goal: np.ndarray,
    is_valid: ValidityFn,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    time_limit: float,
    resolution: float,
    seed: int,
    simplify: bool,
    config: RRTConnectConfig,
) -> list[tuple[str, np.ndarray]]:
    """Candidate paths, preferred first (see :func:`_first_valid_path`)."""
    rng = np.random.default_rng(seed)
    began = time.perf_counter()
    path = _rrt_connect(start, goal, is_valid, lower, upper, resolution, rng, config, began + time_limit)
    if path is None:
        raise PlanningError(f"numpy RRT-Connect found no collision-free path within {time_limit:.2f} s")
    if not simplify:
        return [("unsimplified", path)]
    deadline = time.perf_counter() + time_limit
    shortened = shortcut_path(path, is_valid, resolution, rng, config.shortcut_iterations, deadline)
    return [("shortcut", shortened), ("unsimplified", path)]


# ----------------------------------------------------------------------------------------------------
# OMPL RRTConnect, edges checked by the same straight_line_is_valid through a Python MotionValidator.


def _load_ompl() -> tuple[ModuleType, ModuleType, ModuleType] | None:
    try:
        return (
            importlib.import_module("ompl.base"),
            importlib.import_module("ompl.geometric"),
            importlib.import_module("ompl.util"),
        )
    except ImportError:
        return None


def _require_ompl() -> tuple[ModuleType, ModuleType, ModuleType]:
    modules = _load_ompl()
    if modules is None:
        raise BackendUnavailableError("planner='ompl' needs the ompl Python package (pip install ompl)")
    return modules


def ompl_available() -> bool:
    """Whether the OMPL Python bindings import (``planner="auto"`` then uses them)."""
    return _load_ompl() is not None


def _ompl_state_array(state: object, dim: int) -> np.ndarray:
    return np.fromiter((state[i] for i in range(dim)), dtype=float, count=dim)


@functools.cache
def _dense_motion_validator_class(ob: ModuleType) -> type:
    """An OMPL MotionValidator whose edge check is :func:`straight_line_is_valid` (built once per process).

    OMPL's own validator samples edges in L2 steps; routing it through our function makes the planner, the
    simplifier and the final re-check test exactly the same states.
    """

    class DenseMotionValidator(ob.MotionValidator):
        def __init__(self, info: object, is_valid: ValidityFn, resolution: float) -> None:
            super().__init__(info)
            self.dim = info.getStateDimension()
            self.is_valid, self.resolution = is_valid, resolution

        def checkMotion(self, s1: object, s2: object) -> bool:  # noqa: N802 (OMPL's method name)
            a, b = _ompl_state_array(s1, self.dim), _ompl_state_array(s2, self.dim)
            return straight_line_is_valid(a, b, self.is_valid, self.resolution, check_start=False)

    return DenseMotionValidator


def _seed_ompl(ou: ModuleType, seed: int) -> None:
    """Reset OMPL's global seed generator so every planner/sampler built afterwards draws the same numbers.

    OMPL logs an error when the seed changes after sampling began, yet it does reseed (our tests check the
    resulting paths are identical), so the message is silenced. Seed 0 means "random" to OMPL, hence the +1.
    """
    ou.setLogLevel(ou.LogLevel.LOG_NONE)
    ou.RNG.setSeed(int(seed) % (2**31 - 1) + 1)
    ou.setLogLevel(ou.LogLevel.LOG_WARN)


def _plan_ompl(
    start: np.ndarray,
    goal: np.ndarray,
    is_valid: ValidityFn,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    time_limit: float,
    resolution: float,
    seed: int,
    simplify: bool,
    config: RRTConnectConfig,
) -> list[tuple[str, np.ndarray]]:
    """Candidate paths, preferred first: OMPL's simplified path, then its raw one."""
    ob, og, ou = _require_ompl()
    dim = start.size
    _seed_ompl(ou, seed)

    space = ob.RealVectorStateSpace(dim)
    bounds = ob.RealVectorBounds(dim)
    for i in range(dim):
        bounds.setLow(i, float(lower[i]))
        bounds.setHigh(i, float(upper[i]))
    space.setBounds(bounds)
    setup = og.SimpleSetup(space)
    info = setup.getSpaceInformation()

    setup.setStateValidityChecker(lambda state: bool(is_valid(_ompl_state_array(state, dim))))
    validator = _dense_motion_validator_class(ob)(info, is_valid, resolution)  # referenced until we return
    info.setMotionValidator(validator)
    # OMPL still derives interpolation counts from this fraction of the space's extent (an L2 bound, which is
    # at least as dense as our infinity-norm one).
    info.setStateValidityCheckingResolution(min(1.0, resolution / space.getMaximumExtent()))

    start_state, goal_state = space.allocState(), space.allocState()
    for i in range(dim):
        start_state[i], goal_state[i] = float(start[i]), float(goal[i])
    setup.setStartAndGoalStates(start_state, goal_state)
    planner = og.RRTConnect(info)
    planner.setRange(config.step)
    setup.setPlanner(planner)

    setup.solve(float(time_limit))
    if not setup.haveExactSolutionPath():
        raise PlanningError(f"OMPL RRTConnect found no collision-free path within {time_limit:.2f} s")

    def solution() -> np.ndarray:
        path = setup.getSolutionPath()
        return np.stack([_ompl_state_array(path.getState(k), dim) for k in range(path.getStateCount())])

    raw = solution()
    if not simplify:
        return [("unsimplified", raw)]
    setup.simplifySolution(float(time_limit))
    return [("simplified", solution()), ("unsimplified", raw)]


def _first_valid_path(
    candidates: Sequence[tuple[str, np.ndarray]],
    start: np.ndarray,
    goal: np.ndarray,
    is_valid: ValidityFn,
    resolution: float,
) -> np.ndarray:
    """The first candidate that runs exactly from start to goal and passes dense re-checking.

    A planner's output is never trusted as is: a simplifier can leave an edge that the dense check rejects,
    in which case the unsimplified path is the fallback.
    """
    for name, path in candidates:
        path = np.array(path, dtype=float)
        joins_ends = path.ndim == 2 and len(path) >= 2 and np.allclose(path[[0, -1]], [start, goal])
        if not joins_ends:
            logger.warning("%s path does not run from start to goal; discarded", name)
            continue
        path[0], path[-1] = start, goal  # exact endpoints (OMPL copies them through its own state type)
        if path_is_valid(path, is_valid, resolution):
            return path
        logger.warning("%s path failed dense re-validation at resolution %g", name, resolution)
    raise PlanningError(
        "no planned path passed dense re-validation; is_valid may be non-deterministic "
        f"(tried: {', '.join(name for name, _ in candidates)})"
    )


# ----------------------------------------------------------------------------------------------------
# Public entry point.


def plan_joint_path(
    start: Sequence[float] | np.ndarray,
    goal: Sequence[float] | np.ndarray,
    is_valid: ValidityFn,
    lower: Sequence[float] | np.ndarray,
    upper: Sequence[float] | np.ndarray,
    *,
    time_limit: float = 5.0,
    resolution: float = 0.03,
    seed: int = 0,
    simplify: bool = True,
    planner: str = "auto",
    rrt_config: RRTConnectConfig | None = None,
    bounds_tolerance: float = JOINT_LIMIT_DRIFT,
) -> np.ndarray:
    """A collision-free joint path from ``start`` to ``goal`` (both rows included), shape (N, D).

    ``is_valid(q)`` must be a pure function of ``q``. Every edge of the result is valid when sampled every
    ``resolution`` radians per joint (infinity norm); resample it with :func:`interpolate_path` or
    :func:`time_parameterize` before execution. ``time_limit`` bounds the search; simplification gets at most
    as long again but usually converges much sooner. The same ``seed`` gives the same path for the numpy
    planner and for OMPL (unless a time limit cuts the search or simplification short).

    A start or goal up to ``bounds_tolerance`` outside the bounds (a simulator's joints drift past their
    limits) is accepted and the search bounds are widened to include it.

    Raises :class:`PlanningError` when start or goal is out of bounds or invalid, or no path is found in time;
    :class:`ValueError` for malformed arguments; :class:`BackendUnavailableError` for ``planner="ompl"``
    without OMPL installed.
    """
    start_q, goal_q, lower_q, upper_q = _validated_problem(start, goal, lower, upper)
    _check_positive("time_limit", time_limit)
    _check_positive("resolution", resolution)
    if planner not in PLANNERS:
        raise ValueError(f"planner must be one of {PLANNERS}, got {planner!r}")
    if planner == "ompl":
        _require_ompl()  # fail before any work
    chosen = "ompl" if planner != "numpy" and ompl_available() else "numpy"
    if not (isinstance(bounds_tolerance, numbers.Real) and bounds_tolerance >= 0):
        raise ValueError(f"bounds_tolerance must be >= 0, got {bounds_tolerance!r}")
    for name, q in (("start", start_q), ("goal", goal_q)):
        if np.any(q < lower_q - bounds_tolerance) or np.any(q > upper_q + bounds_tolerance):
            raise PlanningError(f"{name} configuration {np.round(q, 4).tolist()} is outside the joint bounds")
        if not is_valid(q.copy()):
            raise PlanningError(f"{name} configuration {np.round(q, 4).tolist()} is in collision (invalid)")

    if straight_line_is_valid(start_q, goal_q, is_valid, resolution, check_start=False):
        return np.stack([start_q, goal_q])  # no search needed; also the shortest possible path

    began = time.perf_counter()
    lower_q = np.minimum(lower_q, np.minimum(start_q, goal_q))  # tolerated drift past a limit
    upper_q = np.maximum(upper_q, np.maximum(start_q, goal_q))
    problem = (start_q, goal_q, is_valid, lower_q, upper_q)
    options = {"time_limit": time_limit, "resolution": resolution, "seed": seed, "simplify": simplify}
    config = rrt_config or RRTConnectConfig()
    plan = _plan_ompl if chosen == "ompl" else _plan_numpy
    candidates = plan(*problem, **options, config=config)
    path = _first_valid_path(candidates, start_q, goal_q, is_valid, resolution)
    elapsed = time.perf_counter() - began
    logger.debug("planned %d waypoints with %s in %.3f s", len(path), chosen, elapsed)
    return path


def _validated_problem(
    start: Sequence[float] | np.ndarray,
    goal: Sequence[float] | np.ndarray,
    lower: Sequence[float] | np.ndarray,
    upper: Sequence[float] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    arrays = {}
    for name, value in (("start", start), ("goal", goal), ("lower", lower), ("upper", upper)):
        array = np.asarray(value, dtype=float)
        if array.ndim != 1 or array.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D joint vector, got shape {array.shape}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name} must be finite, got {array.tolist()}")
        arrays[name] = array.copy()
    sizes = {name: array.size for name, array in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"start, goal and bounds must have the same length, got {sizes}")
    if np.any(arrays["lower"] >= arrays["upper"]):
        raise ValueError("every lower bound must be below its upper bound")
    return arrays["start"], arrays["goal"], arrays["lower"], arrays["upper"]


def _as_path(path: np.ndarray) -> np.ndarray:
    array = np.asarray(path, dtype=float)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"path must be a non-empty (N, D) array, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("path must be finite")
    return array


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
