"""Orthographic virtual views of a point cloud in pure PyTorch (RVT / ARP style, no pytorch3d, no CUDA).

Frames
------
A :class:`CubeFrame` maps world points into the normalised cube ``q = (p - center) / half_size`` in
[-1, 1]^3. Stage 1 uses the scene bounds (centre (0.2, 0, 1.1), half size 0.5 m for PerAct's bounds);
the zoomed stage 2 uses a cube ``zoom_factor`` times smaller centred on the coarse point. One projection
(:func:`cube_to_view`) serves the renderer, the heatmap labels and the 3D lifting, so they always agree.

Views (each a right-handed camera frame: image column axis x image row axis = viewing direction)
------------------------------------------------------------------------------------------------
=====  ==================  ==============  ==============  ==================
view   looks along         column (u)      row (v)         depth
=====  ==================  ==============  ==============  ==================
top    -z (from z = +1)    +y              +x              1 - z
front  -x (from x = +1)    +y              -z (z up)       1 - x
side   -y (from y = +1)    -x              -z (z up)       1 - y
=====  ==================  ==============  ==============  ==================

For a view with resolution R the plane coordinates (col_c, row_c) in [-1, 1] map to continuous pixel
coordinates ``u = (col_c + 1) R / 2 - 0.5`` (pixel centres at integers, pixel size 2/R cube units), the
pixel index is ``clamp(floor((col_c + 1) R / 2), 0, R - 1)``; depth is the distance from the camera face
in cube units, in [0, 2]. Lifting inverts this exactly (:func:`view_to_cube`).

Rasterisation
-------------
1. Points outside the cube (or masked out, e.g. outside the scene bounds) are dropped ("culled").
2. Z-buffer: per pixel the minimum depth via ``scatter_reduce('amin')``; among the points at that depth
   the largest flat index wins (``scatter_reduce('amax')``), making ties deterministic.
3. Screen-space splat: a pixel also takes a neighbour's winning point if the pixel centre lies within
   ``splat_radius`` of that point's exact sub-pixel projection and the point is nearer than what the pixel
   holds. Only the per-pixel z-buffer winners are splatted (a point hidden in its own pixel cannot splat
   into neighbours), a close approximation of RVT's per-point splat kernel.
4. Channels (10, as RVT / ARP): cube xyz of the visible point (3), RGB in [0, 1] (3), depth mean-subtracted
   over the view's valid pixels with -1 on empty pixels (1), pixel location = (view id in linspace(-1, 1, 3),
   row in linspace(-1, 1, R), column in linspace(-1, 1, R)) (3). Empty pixels hold 0 in xyz and RGB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

VIEW_NAMES: tuple[str, ...] = ("top", "front", "side")
NUM_VIEWS = len(VIEW_NAMES)
NUM_VIEW_CHANNELS = 10

# Rows: (column, row, depth-direction) axes of each view expressed in cube coordinates.
# plane = VIEW_ROTATIONS[v] @ q gives (col_c, row_c, d_c); depth = 1 + d_c.
_VIEW_ROTATIONS = torch.tensor(
    [
        [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]],  # top
        [[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]],  # front
        [[-1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, -1.0, 0.0]],  # side
    ]
)


# Every view rotation is a signed axis permutation: component i of view v is
# _VIEW_SIGNS[v, i] * q[_VIEW_AXES[v, i]]. Projecting by indexing instead of a matrix product is exact in any
# dtype and untouched by autocast (a bf16 matmul would round pixel coordinates and depths).
_VIEW_AXES = _VIEW_ROTATIONS.abs().argmax(dim=-1)  # (V, 3)
_VIEW_SIGNS = _VIEW_ROTATIONS.gather(-1, _VIEW_AXES[..., None])[..., 0]  # (V, 3)


def view_rotations(device: torch.device | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """(3, 3, 3) rotations mapping cube coordinates to (column, row, depth direction) of each view."""
    return _VIEW_ROTATIONS.to(device=device, dtype=dtype)


def view_components(points_cube: Tensor, dim: int = -1) -> Tensor:
    """(col_c, row_c, d_c) of every view: the coordinate axis ``dim`` (size 3) becomes two axes (V, 3).

    ``dim`` lets the renderer keep points last ((B, 3, N) -> (B, V, 3, N)) so its per-point math runs on
    contiguous rows.
    """
    dim = dim % points_cube.dim()
    local = points_cube.index_select(dim, _VIEW_AXES.flatten().to(points_cube.device))
    shape = (*local.shape[:dim], NUM_VIEWS, 3, *local.shape[dim + 1 :])
    signs = _VIEW_SIGNS.to(device=points_cube.device, dtype=points_cube.dtype)
    return local.view(shape) * signs.view(NUM_VIEWS, 3, *([1] * (points_cube.dim() - dim - 1)))


# --------------------------------------------------------------------------- frames
@dataclass
class CubeFrame:
    """Per-sample normalisation ``q = (p - center) / half_size``: world metres <-> cube [-1, 1]^3."""

    center: Tensor  # (B, 3) world metres
    half_size: Tensor  # (B, 3) metres per cube unit along each axis

    @classmethod
    def from_bounds(
        cls, bounds: tuple[float, ...], batch: int, device: torch.device | None = None
    ) -> CubeFrame:
        b = torch.tensor(bounds, dtype=torch.float32, device=device)
        center = ((b[:3] + b[3:]) / 2).expand(batch, 3).clone()
        half = ((b[3:] - b[:3]) / 2).expand(batch, 3).clone()
        return cls(center, half)

    def zoom(self, center_world: Tensor, factor: float) -> CubeFrame:
        """A cube ``factor`` times smaller than this one, centred on ``center_world`` (B, 3)."""
        return CubeFrame(center_world, self.half_size / factor)

    def to_cube(self, points_world: Tensor) -> Tensor:
        """(B, N, 3) or (B, 3) world points -> cube coordinates."""
        if points_world.dim() == 2:
            return (points_world - self.center) / self.half_size
        return (points_world - self.center[:, None]) / self.half_size[:, None]

    def to_world(self, points_cube: Tensor) -> Tensor:
        """(B, N, 3) or (B, 3) cube coordinates -> world points."""
        if points_cube.dim() == 2:
            return points_cube * self.half_size + self.center
        return points_cube * self.half_size[:, None] + self.center[:, None]


def in_bounds_mask(points_world: Tensor, bounds: tuple[float, ...]) -> Tensor:
    """(B, N) bool: finite points inside the axis-aligned ``bounds`` (min xyz, max xyz), inclusive."""
    b = torch.tensor(bounds, dtype=points_world.dtype, device=points_world.device)
    inside = (points_world >= b[:3]) & (points_world <= b[3:])
    return inside.all(-1) & torch.isfinite(points_world).all(-1)


# --------------------------------------------------------------------------- projection / lifting
def cube_to_view(points_cube: Tensor) -> tuple[Tensor, Tensor]:
    """Project cube points into every view.

    Args:
        points_cube: (..., 3) cube coordinates.
    Returns:
        plane: (..., V, 2) plane coordinates (col_c, row_c) in [-1, 1] for points inside the cube.
        depth: (..., V) distance from each view's camera face, cube units, in [0, 2] inside the cube.
    """
    local = view_components(points_cube)
    return local[..., :2], 1.0 + local[..., 2]


def plane_to_pixel(plane: Tensor, resolution: int) -> Tensor:
    """Plane coordinates in [-1, 1] -> continuous pixel coordinates (u, v), pixel centres at integers."""
    return (plane + 1.0) * (resolution / 2.0) - 0.5


def pixel_to_plane(pixel: Tensor, resolution: int) -> Tensor:
    """Inverse of :func:`plane_to_pixel`."""
    return (pixel + 0.5) * (2.0 / resolution) - 1.0


def pixel_index(plane: Tensor, resolution: int) -> Tensor:
    """Integer pixel (column, row) that a (non-NaN) plane coordinate falls in, clamped to the image.

    Clamped before the conversion to int64: integer clamping was the renderer's slowest per-point op.
    """
    return torch.floor((plane + 1.0) * (resolution / 2.0)).clamp_(0, resolution - 1).long()


def project(points_cube: Tensor, resolution: int) -> tuple[Tensor, Tensor]:
    """(..., 3) cube points -> ((..., V, 2) continuous pixel (u, v) per view, (..., V) depth)."""
    plane, depth = cube_to_view(points_cube)
    return plane_to_pixel(plane, resolution), depth


def view_to_cube(view: int, pixel: Tensor, depth: Tensor, resolution: int) -> Tensor:
    """Lift continuous pixel coordinates (..., 2) = (u, v) and depth (...) of view ``view`` to cube points."""
    plane = pixel_to_plane(pixel, resolution)
    local = torch.cat([plane, (depth - 1.0).unsqueeze(-1)], dim=-1)
    # q[axis_i] = sign_i * local_i (the inverse of a signed permutation), exact like view_components
    inverse = _VIEW_AXES[view].argsort().to(pixel.device)
    signs = _VIEW_SIGNS[view].to(device=pixel.device, dtype=local.dtype)
    return (local * signs)[..., inverse]


def view_sum_grid(maps: Tensor) -> Tensor:
    """(V, R, R) per-view maps -> (R, R, R) grid over the cube's pixel-centred anchors, indexed [x, y, z], of
    the sum over views of each anchor's pixel value (orthographic, axis-aligned views: a broadcast sum)."""
    views, res, _ = maps.shape
    if views != NUM_VIEWS:
        raise ValueError(f"expected {NUM_VIEWS} views, got {views}")
    rot = view_rotations(dtype=torch.float32)
    score = maps.new_zeros((res, res, res))
    for v in range(views):
        col_axis = int(rot[v, 0].abs().argmax())
        row_axis = int(rot[v, 1].abs().argmax())
        depth_axis = 3 - col_axis - row_axis
        h = maps[v]
        if rot[v, 1, row_axis] < 0:
            h = h.flip(0)
        if rot[v, 0, col_axis] < 0:
            h = h.flip(1)
        if row_axis > col_axis:
            h = h.transpose(0, 1)
        score = score + h.unsqueeze(depth_axis)
    return score


def _best_anchor(score: Tensor) -> Tensor:
    """Cube coordinates (3,) of the best anchor of an (R, R, R) grid (anchors at -1 + (2i + 1) / R)."""
    res = score.shape[0]
    flat = int(score.reshape(-1).argmax())
    idx = torch.tensor([flat // (res * res), (flat // res) % res, flat % res], dtype=torch.float32)
    return -1.0 + (2.0 * idx + 1.0) / res


def lift_heatmaps(probabilities: Tensor) -> Tensor:
    """The cube point whose projections score best: argmax over pixel-centred anchors of the view average.

    With axis-aligned orthographic views the score factorises, score(x, y, z) = 1/3 sum_v P_v(row_v, col_v),
    so it is a broadcast sum over an R^3 grid (:func:`view_sum_grid`, no 3D sampling needed).

    Args:
        probabilities: (B, V, R, R) per-view probability (or score) maps indexed [row, column].
    Returns:
        (B, 3) cube coordinates of the best anchor (anchors at -1 + (2i + 1) / R).
    """
    # one R^3 grid at a time bounds memory (R = 224: 45 MB)
    out = [_best_anchor(view_sum_grid(maps)) for maps in probabilities]
    return torch.stack(out).to(probabilities.device)


def lift_with_coarse_prior(
    fine: Tensor, coarse: Tensor, fine_frame: CubeFrame, coarse_frame: CubeFrame, weight: float
) -> Tensor:
    """The fine-cube anchor that maximises ``fine score x coarse score ** weight``: a product of the two
    stages' opinions. Where the fine views show nothing that fixes the target (a point in the air far from
    any object), the fine score is flat and the coarse stage's point wins; where they do, the sharper fine
    score wins. ``weight`` 0 is :func:`lift_heatmaps` of ``fine``.

    Both cubes are axis-aligned and seen by the same views, so each fine-view pixel's ray stays within one
    coarse pixel of that view: the coarse maps are resampled onto the fine views' pixels, and both scores
    are broadcast sums over the fine anchors as in :func:`lift_heatmaps`.

    Args:
        fine, coarse: (B, V, R, R) per-view probability maps of the fine and the coarse stage.
        fine_frame, coarse_frame: their cubes (the fine one inside the coarse one).
    Returns:
        (B, 3) fine-cube coordinates of the best anchor.
    """
    batch, views, res, _ = fine.shape
    centres = torch.arange(res, dtype=torch.float32, device=fine.device)
    pixel = torch.stack(torch.meshgrid(centres, centres, indexing="xy"), dim=-1)  # [row, col] -> (u, v)
    middle = torch.ones_like(pixel[..., 0])  # each pixel's ray at mid-depth
    rays = [view_to_cube(v, pixel, middle, res).view(1, -1, 3) for v in range(views)]
    out = []
    for b in range(batch):
        fine_b = CubeFrame(fine_frame.center[b : b + 1], fine_frame.half_size[b : b + 1])
        coarse_b = CubeFrame(coarse_frame.center[b : b + 1], coarse_frame.half_size[b : b + 1])
        resampled = []
        for v in range(views):
            plane, _ = cube_to_view(coarse_b.to_cube(fine_b.to_world(rays[v]))[0])
            index = pixel_index(plane[:, v], res)
            resampled.append(coarse[b, v, index[:, 1], index[:, 0]].view(res, res))
        score = view_sum_grid(fine[b].float()).clamp_min(1e-12).log()
        prior = view_sum_grid(torch.stack(resampled).float()).clamp_min(1e-12).log()
        out.append(_best_anchor(score + weight * prior))
    return torch.stack(out).to(fine.device)


def gaussian_heatmaps(pixel: Tensor, resolution: int, sigma: float) -> Tensor:
    """Soft targets: (B, V, 2) continuous pixel (u, v) -> (B, V, R, R) normalised Gaussians.

    Values below exp(-4.5) (beyond 3 sigma) are cut to 0 as in ARP; points outside the image are clamped
    onto its border so every target stays a distribution.
    """
    pixel = pixel.clamp(0.0, resolution - 1.0)
    grid = torch.arange(resolution, device=pixel.device, dtype=pixel.dtype)
    du = (grid.view(1, 1, 1, -1) - pixel[..., 0, None, None]) ** 2
    dv = (grid.view(1, 1, -1, 1) - pixel[..., 1, None, None]) ** 2
    g = torch.exp(-(du + dv) / (2.0 * sigma**2))
    g = torch.where(g < math.exp(-4.5), torch.zeros_like(g), g)
    return g / g.sum(dim=(-1, -2), keepdim=True)


# --------------------------------------------------------------------------- rasterisation
@dataclass
class RenderedViews:
    """Output of :class:`VirtualViewRenderer`."""

    images: Tensor  # (B, V, 10, R, R) model input channels (see module docstring)
    depth: Tensor  # (B, V, R, R) depth of the visible point in cube units, -1 where empty
    point_index: Tensor  # (B, V, R, R) long index of the visible point in its cloud, -1 where empty

    @property
    def valid(self) -> Tensor:
        return self.point_index >= 0


class VirtualViewRenderer:
    """Z-buffered, splatted orthographic rendering of (B, N) point clouds into the 3 views."""

    def __init__(self, resolution: int, splat_radius: float) -> None:
        if resolution <= 0:
            raise ValueError("resolution must be positive")
        if splat_radius < 0:
            raise ValueError("splat_radius must be >= 0")
        self.resolution = resolution
        self.splat_radius = splat_radius
        # Splat radius in pixels; a neighbour at integer offset d can reach a pixel if |d| <= r + sqrt(2)/2.
        self.radius_px = splat_radius * resolution / 2.0
        reach = self.radius_px + math.sqrt(0.5)
        span = int(math.floor(reach))
        self._offsets = [
            (dy, dx)
            for dy in range(-span, span + 1)
            for dx in range(-span, span + 1)
            if (dy, dx) != (0, 0) and math.hypot(dy, dx) <= reach
        ]

    @torch.no_grad()
    def render(self, points_cube: Tensor, rgb: Tensor, valid: Tensor | None = None) -> RenderedViews:
        """Render cube-frame points.

        Args:
            points_cube: (B, N, 3) points in the cube frame of this stage.
            rgb: (B, N, 3) colours in [0, 1].
            valid: optional (B, N) bool; False points are never drawn (e.g. outside the scene bounds).
        """
        if points_cube.dim() != 3 or points_cube.shape[-1] != 3 or rgb.shape != points_cube.shape:
            raise ValueError(
                f"points (B, N, 3) and rgb of the same shape expected, got {tuple(points_cube.shape)} "
                f"and {tuple(rgb.shape)}"
            )
        B, N, _ = points_cube.shape
        V, R, dev = NUM_VIEWS, self.resolution, points_cube.device
        points_cube = points_cube.float()
        # Points last, (B, 3, N): every per-point tensor below is a set of contiguous rows (a (..., N, 2)
        # layout made the elementwise ops several times slower). Only indexing and elementwise ops follow,
        # so a caller's bf16 autocast region leaves this float32 math alone.
        points_t = points_cube.transpose(1, 2).contiguous()
        keep = points_t.abs().amax(dim=1) <= 1.0  # inside the cube; False for NaN and inf too
        if valid is not None:
            keep = keep & valid
        local = view_components(torch.where(keep[:, None], points_t, 0.0), dim=1)  # (B, V, 3, N)
        plane, depth = local[:, :, :2], 1.0 + local[:, :, 2]  # (B, V, 2, N) = (col_c, row_c), (B, V, N)
        pix = pixel_index(plane, R)
        n_pix = B * V * R * R
        lin = ((torch.arange(B, device=dev).view(B, 1, 1) * V + torch.arange(V, device=dev).view(1, V, 1)) * R
               + pix[:, :, 1]) * R + pix[:, :, 0]  # fmt: skip
        # Culled points go to an extra "dump" pixel instead of being compacted out (no nonzero / index).
        lin = torch.where(keep[:, None, :], lin, n_pix).reshape(-1)
        depth_flat = depth.reshape(-1)
        flat_id = torch.arange(B * V * N, device=dev)

        zbuf = torch.full((n_pix + 1,), math.inf, device=dev)
        zbuf.scatter_reduce_(0, lin, depth_flat, reduce="amin", include_self=True)
        nearest_id = torch.where(depth_flat == zbuf[lin], flat_id, -1)
        winner = torch.full((n_pix + 1,), -1, dtype=torch.long, device=dev)
        winner.scatter_reduce_(0, lin, nearest_id, reduce="amax", include_self=True)
        winner = winner[:n_pix].view(B * V, R, R)
        zbuf = zbuf[:n_pix]

        pixel = plane_to_pixel(plane, R)
        winner = self._splat(
            winner, zbuf.view(B * V, R, R), pixel[:, :, 0].reshape(-1), pixel[:, :, 1].reshape(-1)
        )
        return self._assemble(winner.view(B, V, R, R), points_cube, rgb.float(), depth_flat, N)

    def _splat(self, winner: Tensor, zbuf: Tensor, u_flat: Tensor, v_flat: Tensor) -> Tensor:
        """Give each pixel the nearest neighbouring z-buffer winner whose splat disc covers its centre.

        ``u_flat`` / ``v_flat``: continuous pixel coordinates of every (sample, view, point), flat.
        """
        if not self._offsets:
            return winner
        R = self.resolution
        pad = max(max(abs(dy), abs(dx)) for dy, dx in self._offsets)
        has = winner >= 0
        safe = winner.clamp(min=0)
        pu = torch.where(has, u_flat[safe], 0.0)
        pv = torch.where(has, v_flat[safe], 0.0)
        z_pad = F.pad(zbuf, (pad, pad, pad, pad), value=math.inf)
        w_pad = F.pad(winner, (pad, pad, pad, pad), value=-1)
        u_pad = F.pad(pu, (pad, pad, pad, pad))
        v_pad = F.pad(pv, (pad, pad, pad, pad))
        grid = torch.arange(R, device=zbuf.device, dtype=zbuf.dtype)
        col, row = grid.view(1, 1, R), grid.view(1, R, 1)
        best_z, best_w = zbuf.clone(), winner.clone()
        r2 = self.radius_px**2
        for dy, dx in self._offsets:
            ys, xs = slice(pad + dy, pad + dy + R), slice(pad + dx, pad + dx + R)
            nz, nw = z_pad[:, ys, xs], w_pad[:, ys, xs]
            dist2 = (u_pad[:, ys, xs] - col) ** 2 + (v_pad[:, ys, xs] - row) ** 2
            better = (nw >= 0) & (dist2 <= r2) & (nz < best_z)
            best_z = torch.where(better, nz, best_z)
            best_w = torch.where(better, nw, best_w)
        return best_w

    def _assemble(
        self, winner: Tensor, points: Tensor, rgb: Tensor, depth_flat: Tensor, n: int
    ) -> RenderedViews:
        B, V, R, _ = winner.shape
        valid = winner >= 0
        safe = winner.clamp(min=0)
        batch_idx = safe // (V * n)
        point_idx = safe % n
        gather_idx = batch_idx * n + point_idx
        xyz = points.reshape(-1, 3)[gather_idx]  # (B, V, R, R, 3)
        col = rgb.reshape(-1, 3)[gather_idx]
        depth = depth_flat[safe]
        vmask = valid.unsqueeze(-1)
        xyz = torch.where(vmask, xyz, torch.zeros_like(xyz))
        col = torch.where(vmask, col, torch.zeros_like(col))
        depth = torch.where(valid, depth, torch.full_like(depth, -1.0))

        count = valid.sum(dim=(-1, -2), keepdim=True).clamp(min=1)
        mean = (depth * valid).sum(dim=(-1, -2), keepdim=True) / count
        depth_channel = torch.where(valid, depth - mean, torch.full_like(depth, -1.0))

        lin_v = torch.linspace(-1, 1, V, device=winner.device)
        lin_r = torch.linspace(-1, 1, R, device=winner.device)
        loc = torch.stack(
            [
                lin_v.view(1, V, 1, 1).expand(B, V, R, R),
                lin_r.view(1, 1, R, 1).expand(B, V, R, R),
                lin_r.view(1, 1, 1, R).expand(B, V, R, R),
            ],
            dim=2,
        )
        images = torch.cat(
            [xyz.permute(0, 1, 4, 2, 3), col.permute(0, 1, 4, 2, 3), depth_channel.unsqueeze(2), loc], dim=2
        )
        return RenderedViews(images=images, depth=depth, point_index=torch.where(valid, point_idx, -1))
