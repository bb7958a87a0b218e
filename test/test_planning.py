"""Joint-space planning on synthetic obstacles: validity guarantees, determinism, failures, resampling."""

from __future__ import annotations

import time

import numpy as np
import pytest

from sim_bridge import planning
from sim_bridge.errors import BackendUnavailableError, PlanningError
from sim_bridge.planning import (
    RRTConnectConfig,
    interpolate_path,
    ompl_available,
    path_is_valid,
    plan_joint_path,
    straight_line_is_valid,
    time_parameterize,
)

RESOLUTION = 0.03
MARGIN = 0.02  # > RESOLUTION / 2: planning against the inflated wall keeps every in-between state valid
PLANNERS = [
    "numpy",
    pytest.param("ompl", marks=pytest.mark.skipif(not ompl_available(), reason="ompl not installed")),
]


def wall_with_gap(dim: int, margin: float = 0.0, half_thickness: float = 0.1, gap: bool = True):
    """A wall |q0| < half_thickness across joint space, open only where q1 (and q2 if dim > 2) is in a window.

    ``margin`` inflates the wall by that much in every joint (infinity norm).
    """

    def is_valid(q: np.ndarray) -> bool:
        if abs(q[0]) >= half_thickness + margin:
            return True
        if not gap:
            return False
        in_window = 0.4 + margin < q[1] < 0.9 - margin
        if dim > 2:
            in_window = in_window and -0.9 + margin < q[2] < -0.4 - margin
        return bool(in_window)

    return is_valid


def wall_problem(dim: int):
    start, goal = np.zeros(dim), np.zeros(dim)
    start[0], goal[0] = -1.0, 1.0
    return start, goal, -np.pi * np.ones(dim), np.pi * np.ones(dim)


def path_length(path: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())


# --- planning around a wall ---


@pytest.mark.parametrize("planner", PLANNERS)
@pytest.mark.parametrize("dim", [2, 7])
def test_path_goes_through_the_gap_and_every_state_on_it_is_valid(planner: str, dim: int) -> None:
    start, goal, lower, upper = wall_problem(dim)
    inflated, true_wall = wall_with_gap(dim, margin=MARGIN), wall_with_gap(dim)
    assert not straight_line_is_valid(start, goal, true_wall, RESOLUTION)  # planning is needed

    path = plan_joint_path(
        start, goal, inflated, lower, upper, time_limit=5.0, resolution=RESOLUTION, seed=3, planner=planner
    )

    assert path.ndim == 2 and path.shape[1] == dim and len(path) >= 3
    np.testing.assert_array_equal(path[0], start)
    np.testing.assert_array_equal(path[-1], goal)
    assert np.all(path >= lower) and np.all(path <= upper)
    assert path_is_valid(path, inflated, RESOLUTION)
    dense = interpolate_path(path, 0.002)  # 15x finer than planning: states the planner never looked at
    assert all(true_wall(q) for q in dense)
    crossing = dense[np.abs(dense[:, 0]) < 0.1]
    assert len(crossing) > 0 and np.all((crossing[:, 1] > 0.4) & (crossing[:, 1] < 0.9))


@pytest.mark.parametrize("planner", PLANNERS)
def test_thin_wall_just_thicker_than_the_resolution_is_never_crossed(planner: str) -> None:
    dim = 7
    start, goal, lower, upper = wall_problem(dim)
    thin = wall_with_gap(dim, half_thickness=0.016)  # 0.032 thick, resolution 0.03
    path = plan_joint_path(
        start, goal, thin, lower, upper, time_limit=5.0, resolution=RESOLUTION, seed=1, planner=planner
    )
    dense = interpolate_path(path, 0.001)
    crossing = dense[np.abs(dense[:, 0]) < 0.016]
    assert len(crossing) > 0  # the path does cross the wall's plane...
    assert all(thin(q) for q in crossing)  # ...only through the gap


@pytest.mark.parametrize("planner", PLANNERS)
def test_simplification_shortens_the_path(planner: str) -> None:
    start, goal, lower, upper = wall_problem(7)
    checker = wall_with_gap(7, margin=MARGIN)
    kwargs = {"time_limit": 5.0, "resolution": RESOLUTION, "seed": 4, "planner": planner}
    raw = plan_joint_path(start, goal, checker, lower, upper, simplify=False, **kwargs)
    simplified = plan_joint_path(start, goal, checker, lower, upper, simplify=True, **kwargs)
    assert path_is_valid(raw, checker, RESOLUTION)
    assert path_length(simplified) < path_length(raw)
    assert len(simplified) <= len(raw)


def test_free_straight_line_is_returned_directly() -> None:
    start, goal, lower, upper = wall_problem(7)
    start[0] = 0.2  # both on the same side of the wall
    path = plan_joint_path(start, goal, wall_with_gap(7), lower, upper, planner="numpy")
    np.testing.assert_array_equal(path, np.stack([start, goal]))


# --- determinism ---


@pytest.mark.parametrize("planner", PLANNERS)
@pytest.mark.parametrize("simplify", [False, True])
def test_same_seed_gives_identical_path(planner: str, simplify: bool) -> None:
    start, goal, lower, upper = wall_problem(7)
    checker = wall_with_gap(7, margin=MARGIN)

    def plan(seed: int) -> np.ndarray:
        return plan_joint_path(
            start,
            goal,
            checker,
            lower,
            upper,
            time_limit=5.0,
            resolution=RESOLUTION,
            seed=seed,
            simplify=simplify,
            planner=planner,
        )

    first = plan(11)
    other = plan(12)  # random draws in between must not leak into the next plan
    again = plan(11)
    np.testing.assert_array_equal(first, again)
    assert first.shape != other.shape or not np.array_equal(first, other)


# --- failures ---


@pytest.mark.parametrize("planner", PLANNERS)
@pytest.mark.parametrize("which", ["start", "goal"])
def test_invalid_endpoint_is_reported_by_name(planner: str, which: str) -> None:
    start, goal, lower, upper = wall_problem(2)
    bad = {"start": start, "goal": goal}[which]
    bad[0] = 0.0  # inside the wall, outside the gap
    with pytest.raises(PlanningError, match=rf"^{which} configuration .* in collision"):
        plan_joint_path(start, goal, wall_with_gap(2), lower, upper, time_limit=0.5, planner=planner)


@pytest.mark.parametrize("which", ["start", "goal"])
def test_endpoint_outside_bounds_is_reported_by_name(which: str) -> None:
    start, goal, lower, upper = wall_problem(2)
    {"start": start, "goal": goal}[which][1] = 4.0
    with pytest.raises(PlanningError, match=rf"^{which} configuration .* outside the joint bounds"):
        plan_joint_path(start, goal, wall_with_gap(2), lower, upper, time_limit=0.5)


@pytest.mark.parametrize("planner", PLANNERS)
def test_start_drifted_slightly_past_a_limit_is_accepted(planner: str) -> None:
    start, goal, lower, upper = wall_problem(2)
    start[1] = lower[1] - 5e-4  # a simulator's joint a little past its limit
    checker = wall_with_gap(2, margin=MARGIN)
    path = plan_joint_path(start, goal, checker, lower, upper, time_limit=5.0, seed=2, planner=planner)
    np.testing.assert_array_equal(path[0], start)
    assert np.all(path[1:] >= lower - 5e-4) and np.all(path <= upper)
    assert path_is_valid(path, checker, RESOLUTION)


@pytest.mark.parametrize("planner", PLANNERS)
@pytest.mark.parametrize("dim", [2, 7])
def test_fully_blocked_problem_fails_within_the_time_limit(planner: str, dim: int) -> None:
    start, goal, lower, upper = wall_problem(dim)
    time_limit = 0.3
    began = time.perf_counter()
    with pytest.raises(PlanningError, match="no collision-free path within"):
        plan_joint_path(
            start, goal, wall_with_gap(dim, gap=False), lower, upper, time_limit=time_limit, planner=planner
        )
    elapsed = time.perf_counter() - began
    assert time_limit * 0.9 <= elapsed < time_limit + 1.0


def test_unusable_candidates_fall_back_then_raise() -> None:
    start, goal, _, _ = wall_problem(2)
    checker = wall_with_gap(2)
    through_wall = np.stack([start, goal])
    through_gap = np.array([start, [-0.2, 0.65], [0.2, 0.65], goal])
    wrong_end = np.array([start, [-0.2, 0.65], [0.2, 0.65], [1.0, 0.5]])
    chosen = planning._first_valid_path(
        [("simplified", through_wall), ("other", wrong_end), ("unsimplified", through_gap)],
        start,
        goal,
        checker,
        RESOLUTION,
    )
    np.testing.assert_array_equal(chosen, through_gap)
    with pytest.raises(PlanningError, match="re-validation"):
        planning._first_valid_path([("simplified", through_wall)], start, goal, checker, RESOLUTION)


def test_malformed_arguments_raise_value_error() -> None:
    start, goal, lower, upper = wall_problem(2)
    checker = wall_with_gap(2)
    with pytest.raises(ValueError, match="same length"):
        plan_joint_path(start, np.zeros(3), checker, lower, upper)
    with pytest.raises(ValueError, match="planner"):
        plan_joint_path(start, goal, checker, lower, upper, planner="prm")
    with pytest.raises(ValueError, match="resolution"):
        plan_joint_path(start, goal, checker, lower, upper, resolution=0.0)
    with pytest.raises(ValueError, match="finite"):
        plan_joint_path([np.nan, 0.0], goal, checker, lower, upper)
    with pytest.raises(ValueError, match="lower bound"):
        plan_joint_path(start, goal, checker, upper, lower)
    with pytest.raises(ValueError, match="step"):
        RRTConnectConfig(step=-1.0)


def test_without_ompl_auto_uses_numpy_and_forced_ompl_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    start, goal, lower, upper = wall_problem(2)
    checker = wall_with_gap(2, margin=MARGIN)
    expected = plan_joint_path(start, goal, checker, lower, upper, seed=5, planner="numpy")
    monkeypatch.setattr(planning, "_load_ompl", lambda: None)
    np.testing.assert_array_equal(plan_joint_path(start, goal, checker, lower, upper, seed=5), expected)
    with pytest.raises(BackendUnavailableError, match="ompl"):
        plan_joint_path(start, goal, checker, lower, upper, planner="ompl")


# --- edge checking and resampling ---


def test_edge_check_catches_any_slab_thicker_than_the_resolution() -> None:
    rng = np.random.default_rng(0)
    slab = 0.031  # a wall this thick along joint 0, in 7-D

    def outside_slab(q: np.ndarray) -> bool:
        return not 0.0 <= q[0] < slab

    crossings = []
    for _ in range(300):
        a, b = rng.uniform(-2, 2, 7), rng.uniform(-2, 2, 7)
        a[0], b[0] = -rng.uniform(0.01, 2), slab + rng.uniform(0.01, 2)
        crossings.append((a, b))
    assert not any(straight_line_is_valid(a, b, outside_slab, 0.03) for a, b in crossings)
    # the guarantee is the resolution's: at 0.1 rad per joint many crossings go unseen
    assert sum(straight_line_is_valid(a, b, outside_slab, 0.1) for a, b in crossings) > 30


def test_edge_check_skips_start_only_when_asked() -> None:
    checked = []

    def record(q: np.ndarray) -> bool:
        checked.append(q.copy())
        return True

    a, b = np.zeros(3), np.array([0.1, -0.05, 0.0])
    assert straight_line_is_valid(a, b, record, 0.03)
    assert len(checked) == 5 and np.array_equal(checked[0], a) and np.array_equal(checked[-1], b)
    checked.clear()
    assert straight_line_is_valid(a, b, record, 0.03, check_start=False)
    assert len(checked) == 4 and not any(np.array_equal(q, a) for q in checked)


def random_path(rng: np.random.Generator, rows: int = 6, dim: int = 7) -> np.ndarray:
    path = np.cumsum(rng.uniform(-1.0, 1.0, (rows, dim)), axis=0)
    path[3] = path[2]  # a repeated waypoint must not break anything
    return path


def test_interpolate_path_bounds_steps_and_keeps_the_geometry() -> None:
    rng = np.random.default_rng(1)
    path = random_path(rng)
    dense = interpolate_path(path, 0.05)
    assert np.max(np.abs(np.diff(dense, axis=0))) <= 0.05 + 1e-12
    np.testing.assert_array_equal(dense[0], path[0])
    np.testing.assert_array_equal(dense[-1], path[-1])
    rows = [int(np.flatnonzero(np.all(dense == waypoint, axis=1))[0]) for waypoint in path]
    assert rows == sorted(rows)  # every waypoint kept, in order
    for (i, j), a, b in zip(zip(rows[:-1], rows[1:]), path[:-1], path[1:]):
        segment = dense[i : j + 1]
        if np.allclose(a, b):
            continue
        t = (segment - a) @ (b - a) / np.dot(b - a, b - a)
        np.testing.assert_allclose(segment, a + t[:, None] * (b - a), atol=1e-9)  # on the straight segment
    with pytest.raises(ValueError, match="max_step"):
        interpolate_path(path, 0.0)


@pytest.mark.parametrize("max_velocity", [1.0, np.array([2.0, 2.0, 2.0, 2.0, 2.6, 2.6, 2.6])])
def test_time_parameterize_respects_speed_limits_at_20_hz(max_velocity: float | np.ndarray) -> None:
    rng = np.random.default_rng(2)
    path = random_path(rng)
    dt = 0.05
    rows = time_parameterize(path, max_velocity, dt)
    speeds = np.abs(np.diff(rows, axis=0)) / dt
    assert np.all(speeds <= np.broadcast_to(max_velocity, (7,)) + 1e-9)
    np.testing.assert_array_equal(rows[0], path[0])
    np.testing.assert_array_equal(rows[-1], path[-1])
    assert all(np.any(np.all(rows == waypoint, axis=1)) for waypoint in path)  # no corner is cut
    minimum = sum(float(np.max(np.abs(b - a) / max_velocity)) for a, b in zip(path[:-1], path[1:]))
    segments = len(path) - 1
    assert minimum / dt <= len(rows) - 1 <= minimum / dt + segments  # at most one period lost per segment
    with pytest.raises(ValueError, match="max_velocity"):
        time_parameterize(path, 0.0, dt)


def test_shortcutting_keeps_paths_valid_among_obstacles_smaller_than_the_resolution() -> None:
    """Shortcut ends fall between the samples that validated a segment, so their new edges must be checked."""
    lower, upper = np.full(2, -1.5), np.full(2, 1.5)
    start, goal = np.full(2, -1.4), np.full(2, 1.4)
    shortened = 0
    for seed in range(14):
        rng = np.random.default_rng(seed)
        centers, half_sizes = rng.uniform(-1.5, 1.5, (400, 2)), rng.uniform(0.004, 0.012, (400, 1))

        def outside_specks(q: np.ndarray, centers=centers, half_sizes=half_sizes) -> bool:
            return not np.any(np.all(np.abs(centers - q) < half_sizes, axis=1))

        raw = plan_joint_path(
            start,
            goal,
            outside_specks,
            lower,
            upper,
            resolution=RESOLUTION,
            seed=seed,
            simplify=False,
            planner="numpy",
            rrt_config=RRTConnectConfig(step=0.3),
        )
        short = planning.shortcut_path(raw, outside_specks, RESOLUTION, rng, iterations=60)
        assert path_is_valid(short, outside_specks, RESOLUTION), f"seed {seed}"
        np.testing.assert_array_equal(short[[0, -1]], raw[[0, -1]])
        shortened += path_length(short) < path_length(raw) - 1e-9
    assert shortened >= 8
