"""Virtual-view renderer of the ARP policy: projection, lifting, z-buffer, splat, cropping, zoom."""

from __future__ import annotations

import math

import pytest
import torch

from mirror_policy.arp.configuration import PERACT_SCENE_BOUNDS
from mirror_policy.arp.renderer import (
    NUM_VIEW_CHANNELS,
    CubeFrame,
    VirtualViewRenderer,
    gaussian_heatmaps,
    in_bounds_mask,
    lift_heatmaps,
    lift_with_coarse_prior,
    pixel_index,
    project,
    view_to_cube,
)

R = 64
ZOOM = 4.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_points_in_bounds(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    b = torch.tensor(PERACT_SCENE_BOUNDS)
    return b[:3] + torch.rand(n, 3, generator=g) * (b[3:] - b[:3])


def stage_frames(points: torch.Tensor, seed: int) -> dict[str, CubeFrame]:
    """Coarse frame = scene bounds; zoomed frame = 4x smaller cube around a point near each target."""
    coarse = CubeFrame.from_bounds(PERACT_SCENE_BOUNDS, points.shape[0])
    g = torch.Generator().manual_seed(seed)
    centre = points + (torch.rand(points.shape, generator=g) * 2 - 1) * 0.05
    return {"coarse": coarse, "zoomed": coarse.zoom(centre, ZOOM)}


@pytest.mark.parametrize("stage", ["coarse", "zoomed"])
def test_rendered_point_lifts_back_within_one_pixel(stage: str) -> None:
    points = random_points_in_bounds(32, seed=0)  # one point per batch element: no occlusion
    frame = stage_frames(points, seed=1)[stage]
    renderer = VirtualViewRenderer(R, splat_radius=0.03)
    cube = frame.to_cube(points[:, None])
    out = renderer.render(cube, torch.rand(32, 1, 3))
    pixel_size_m = (frame.half_size * 2.0 / R)[:, 0]  # metres per pixel (cube is isotropic here)

    for v in range(3):
        pixel, _ = project(cube[:, 0], R)
        col_row = pixel_index((pixel[:, v] + 0.5) * 2.0 / R - 1.0, R)
        b = torch.arange(32)
        # the point's own pixel shows it, with its depth
        assert bool((out.point_index[b, v, col_row[:, 1], col_row[:, 0]] == 0).all())
        depth = out.depth[b, v, col_row[:, 1], col_row[:, 0]]
        lifted = frame.to_world(view_to_cube(v, col_row.float(), depth, R))
        err = (lifted - points).norm(dim=-1)
        assert bool((err <= pixel_size_m).all()), f"view {v}: max error {err.max():.4f} m"
        # xyz channels hold the cube coordinates of the visible point
        xyz = out.images[b, v, :3, col_row[:, 1], col_row[:, 0]]
        torch.testing.assert_close(xyz, cube[:, 0], atol=1e-5, rtol=0)

    # lifting the three heatmaps drawn at the projections recovers the point to within a pixel per axis
    pixel, _ = project(cube[:, 0], R)
    cube_back = lift_heatmaps(gaussian_heatmaps(pixel, R, 1.5))
    err_axis = (frame.to_world(cube_back) - points).abs()
    assert bool((err_axis <= pixel_size_m[:, None]).all()), f"max axis error {err_axis.max():.4f} m"


def test_coarse_then_zoomed_lift_reaches_fine_resolution() -> None:
    points = random_points_in_bounds(16, seed=3)
    coarse = CubeFrame.from_bounds(PERACT_SCENE_BOUNDS, 16)
    p1, _ = project(coarse.to_cube(points), R)
    first = coarse.to_world(lift_heatmaps(gaussian_heatmaps(p1, R, 1.5)))
    fine = coarse.zoom(first, ZOOM)
    p2, _ = project(fine.to_cube(points), R)
    second = fine.to_world(lift_heatmaps(gaussian_heatmaps(p2, R, 1.5)))
    fine_pixel = 1.0 / R / ZOOM  # 1 m scene, 4x zoom
    assert float((second - points).abs().max()) <= fine_pixel
    assert float((second - points).abs().max()) < float((first - points).abs().max())


def test_lift_heatmaps_matches_brute_force_projection_of_anchors() -> None:
    res = 8
    g = torch.Generator().manual_seed(4)
    maps = torch.rand(2, 3, res, res, generator=g)
    centres = -1.0 + (2.0 * torch.arange(res) + 1.0) / res
    anchors = torch.stack(torch.meshgrid(centres, centres, centres, indexing="ij"), dim=-1).reshape(-1, 3)
    pixel, _ = project(anchors, res)
    idx = pixel.round().long()  # anchors project onto pixel centres exactly
    for b in range(2):
        score = sum(maps[b, v, idx[:, v, 1], idx[:, v, 0]] for v in range(3))
        expected = anchors[score.argmax()]
        torch.testing.assert_close(lift_heatmaps(maps[b : b + 1])[0], expected)


def test_the_coarse_prior_decides_only_where_the_fine_stage_is_unsure() -> None:
    points = random_points_in_bounds(4, seed=5)
    coarse = CubeFrame.from_bounds(PERACT_SCENE_BOUNDS, 4)
    p1, _ = project(coarse.to_cube(points), R)
    coarse_maps = gaussian_heatmaps(p1, R, 1.5)
    # the fine cube is centred 3 cm off each point, as after a coarse miss
    fine = coarse.zoom(points + 0.03, ZOOM)
    g = torch.Generator().manual_seed(6)
    fine_maps = torch.rand(4, 3, R, R, generator=g)
    # weight 0: the fine maps' own argmax
    torch.testing.assert_close(lift_with_coarse_prior(fine_maps, coarse_maps, fine, coarse, 0.0),
                               lift_heatmaps(fine_maps))  # fmt: skip
    # flat fine maps: the coarse stage's point, to within a coarse pixel
    flat = torch.full((4, 3, R, R), 1.0 / R**2)
    lifted = fine.to_world(lift_with_coarse_prior(flat, coarse_maps, fine, coarse, 1.0))
    assert float((lifted - points).abs().max()) <= 1.0 / R
    # a sharp fine peak 2.8 cm from the coarse point wins, pulled towards it by at most two fine pixels
    target = points + torch.tensor([0.02, -0.02, 0.0])
    p2, _ = project(fine.to_cube(target), R)
    sharp = gaussian_heatmaps(p2, R, 1.5)
    lifted = fine.to_world(lift_with_coarse_prior(sharp, coarse_maps, fine, coarse, 1.0))
    assert float((lifted - target).abs().max()) <= 2.0 / R / ZOOM


def test_zbuffer_keeps_the_nearest_point_whatever_the_order() -> None:
    # A above B on the same vertical line: the top view (looking down -z) must show A.
    # C in front of D along x: the front view (looking along -x from x = +1) must show C.
    a, b = [0.2, 0.0, 1.3], [0.2, 0.0, 0.9]
    c, d = [0.5, 0.2, 1.0], [0.0, 0.2, 1.0]
    red, blue = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]
    frame = CubeFrame.from_bounds(PERACT_SCENE_BOUNDS, 1)
    renderer = VirtualViewRenderer(R, splat_radius=0.0)
    for order in ([0, 1, 2, 3], [1, 0, 3, 2]):
        pts = torch.tensor([a, b, c, d])[order][None]
        rgb = torch.tensor([red, blue, red, blue])[order][None]
        out = renderer.render(frame.to_cube(pts), rgb)
        pix, _ = project(frame.to_cube(pts)[0], R)
        top_px = pix[order.index(0), 0].round().long()
        front_px = pix[order.index(2), 1].round().long()
        torch.testing.assert_close(out.images[0, 0, 3:6, top_px[1], top_px[0]], torch.tensor(red))
        torch.testing.assert_close(out.images[0, 1, 3:6, front_px[1], front_px[0]], torch.tensor(red))
        # and each view's depth is the distance of the nearer point from its camera face
        assert math.isclose(
            float(out.depth[0, 0, top_px[1], top_px[0]]),
            1 - frame.to_cube(pts)[0, order.index(0), 2].item(),
            abs_tol=1e-6,
        )


def test_points_outside_bounds_or_invalid_are_dropped() -> None:
    inside = random_points_in_bounds(50, seed=5)
    outside = torch.tensor([[0.8, 0.0, 1.0], [0.2, -0.6, 1.0], [0.2, 0.0, 0.5], [0.2, 0.0, 1.7]])
    nan = torch.tensor([[float("nan"), 0.0, 1.0]])
    pts = torch.cat([inside, outside, nan])[None]
    keep = in_bounds_mask(pts, PERACT_SCENE_BOUNDS)
    assert keep[0, :50].all() and not keep[0, 50:].any()

    frame = CubeFrame.from_bounds(PERACT_SCENE_BOUNDS, 1)
    out = VirtualViewRenderer(R, 0.03).render(frame.to_cube(pts), torch.rand(1, 55, 3), keep)
    shown = set(out.point_index[out.valid].tolist())
    assert shown and shown <= set(range(50))

    # Without the mask the cube itself culls the out-of-bounds points (stage-1 cube = scene bounds) ...
    alone = VirtualViewRenderer(R, 0.03).render(frame.to_cube(pts[:, 50:]), torch.rand(1, 5, 3))
    assert not alone.valid.any()
    assert bool((alone.images[:, :, 6] == -1).all()) and bool((alone.images[:, :, :6] == 0).all())
    # ... and in a zoomed cube an in-bounds point outside the smaller cube is culled too.
    zoomed = frame.zoom(torch.tensor([[0.2, 0.0, 1.1]]), ZOOM)
    far = torch.tensor([[[0.2, 0.0, 1.4]]])
    assert not VirtualViewRenderer(R, 0.03).render(zoomed.to_cube(far), torch.rand(1, 1, 3)).valid.any()


def test_splat_covers_exactly_the_pixels_within_the_radius() -> None:
    radius = 0.06  # cube units = 1.92 px at R = 64
    renderer = VirtualViewRenderer(R, radius)
    point = torch.tensor([[[0.123, -0.377, 0.051]]])
    out = renderer.render(point, torch.rand(1, 1, 3))
    pixel, _ = project(point[0, 0], R)
    grid = torch.arange(R, dtype=torch.float32)
    for v in range(3):
        u, w = pixel[v]
        dist = ((grid.view(1, R) - u) ** 2 + (grid.view(R, 1) - w) ** 2).sqrt()
        expected = dist <= radius * R / 2
        own = pixel_index((pixel[v] + 0.5) * 2.0 / R - 1.0, R)
        expected[own[1], own[0]] = True
        assert torch.equal(out.valid[0, v], expected), f"view {v}"


def test_channels_depth_normalisation_and_batch_independence() -> None:
    frame = CubeFrame.from_bounds(PERACT_SCENE_BOUNDS, 2)
    pts = torch.stack([random_points_in_bounds(300, seed=6), random_points_in_bounds(300, seed=7)])
    rgb = torch.rand(2, 300, 3, generator=torch.Generator().manual_seed(8))
    renderer = VirtualViewRenderer(R, 0.03)
    both = renderer.render(frame.to_cube(pts), rgb)
    assert both.images.shape == (2, 3, NUM_VIEW_CHANNELS, R, R)
    for b in range(2):
        one = CubeFrame.from_bounds(PERACT_SCENE_BOUNDS, 1)
        single = renderer.render(one.to_cube(pts[b : b + 1]), rgb[b : b + 1])
        torch.testing.assert_close(single.images[0], both.images[b])
    valid = both.valid
    depth_channel = both.images[:, :, 6]
    # mean-subtracted over each view's valid pixels; -1 on empty pixels
    mean = (depth_channel * valid).sum((-1, -2)) / valid.sum((-1, -2))
    torch.testing.assert_close(mean, torch.zeros_like(mean), atol=1e-5, rtol=0)
    assert bool((depth_channel[~valid] == -1).all())
    # pixel-location channels: view id, row and column in linspace(-1, 1)
    torch.testing.assert_close(both.images[0, :, 7, 0, 0], torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(both.images[0, 0, 8, :, 0], torch.linspace(-1, 1, R))
    torch.testing.assert_close(both.images[0, 0, 9, 0, :], torch.linspace(-1, 1, R))


def test_bad_renderer_input_is_refused() -> None:
    with pytest.raises(ValueError):
        VirtualViewRenderer(0, 0.01)
    with pytest.raises(ValueError):
        VirtualViewRenderer(R, -0.1)
    with pytest.raises(ValueError):
        VirtualViewRenderer(R, 0.01).render(torch.zeros(1, 5, 2), torch.zeros(1, 5, 2))
    with pytest.raises(ValueError):
        lift_heatmaps(torch.rand(1, 2, R, R))
