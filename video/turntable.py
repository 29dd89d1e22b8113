"""Turntable building blocks: an orbit around a mesh with its per-frame depth, frame windows laid on a
circle, and initial noise that is consistent around the loop.

A turntable is a loop: frame N−1 must flow into frame 0 as smoothly as frame 0 into frame 1. Frame
attention only sees the frames of one call, at most the motion module's positional length, so a
longer orbit is denoised in overlapping windows of consecutive frames taken *modulo N*: a window may
start near the end and wrap to the start. Each step shifts where the windows start, so no frame sits
on a window border twice in a row, and every frame's prediction is the weighted mean of the windows
holding it (weights peak mid-window). Together this makes the seam between N−1 and 0 like any other
pair of neighbours.

The orbit's conditioning comes in two forms: depth for bundles with a depth ControlNet, and a grey
Lambert shading with a headlight for those without (image-to-image: every frame starts from its own
shading, noised).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..core.errors import BadParameter
from ..core.schema import MAX_FRAMES, VideoRequest
from ..threed.cameras import Cameras, framing_distance, orbit
from ..threed.mesh import Mesh
from ..threed.raster import rasterize


def orbit_cameras(mesh: Mesh, frames: int, *, elevation: float = VideoRequest.elevation, clockwise: bool = False,
                  fov_y: float = 40.0) -> Cameras:
    """``frames`` cameras evenly around the (normalised) mesh's vertical axis, auto-framed from its
    bounding sphere; frame k sits at azimuth ±360°·k/N, so frame N would be frame 0 again."""
    if not isinstance(frames, int) or not 2 <= frames <= MAX_FRAMES:
        raise BadParameter("frames", frames, f"an integer 2..{MAX_FRAMES}")
    sign = -1.0 if clockwise else 1.0
    az = [sign * 360.0 * k / frames for k in range(frames)]
    return orbit(mesh.center, framing_distance(mesh.radius, fov_y), az, [elevation] * frames, fov_y)


def orbit_views(mesh: Mesh, cameras: Cameras, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(depth, shading), each (N, 3, R, R) in [0, 1], from one rasterisation of the orbit.

    Depth: near = bright, normalised with one near/far for the whole orbit (per-frame normalisation
    would make the brightness of a wall flicker as the view turns). Shading: 0.25 + 0.6·|cos| of the
    face normal against the ray to the camera, mid grey behind the mesh."""
    if resolution % 8:
        raise BadParameter("resolution", resolution, "a multiple of 8")
    frags = rasterize(cameras, mesh.vertices, mesh.faces, resolution)
    mask = frags.mask
    if not bool(mask.any()):
        raise BadParameter("mesh", mesh.source, "a mesh the orbit sees; it covers no pixel of any frame")
    d = frags.depth[mask]
    near, far = float(d.min()), float(d.max())
    depth = torch.where(mask, (1.0 - (frags.depth - near) / max(far - near, 1e-6) * 0.9), torch.zeros(()))
    normals = mesh.face_normals()[frags.face.clamp_min(0)]
    rays = torch.nn.functional.normalize(cameras.positions[:, None, None] - frags.interpolate(mesh.vertices, mesh.faces),
                                         dim=-1)
    shading = torch.where(mask, 0.25 + 0.6 * (normals * rays).sum(-1).abs(), torch.full((), 0.5))
    return depth[:, None].repeat(1, 3, 1, 1), shading[:, None].repeat(1, 3, 1, 1)


def orbit_depth(mesh: Mesh, cameras: Cameras, resolution: int) -> torch.Tensor:
    """The depth half of ``orbit_views``."""
    return orbit_views(mesh, cameras, resolution)[0]


def circular_windows(frames: int, length: int, stride: int | None = None, shift: int = 0) -> list[torch.Tensor]:
    """Windows of ``length`` consecutive frame indices modulo ``frames``, starting at ``shift`` and every
    ``stride`` frames (default: half a window), covering every frame. An orbit no longer than a window
    is one window holding each frame once."""
    if length < 1:
        raise BadParameter("window", length, "at least 1 frame")
    if frames <= length:
        return [torch.arange(frames)]
    stride = stride or max(1, length // 2)
    if not 1 <= stride <= length:
        raise BadParameter("stride", stride, f"1..{length} (the window length)")
    count = math.ceil(frames / stride)
    return [(shift + k * stride + torch.arange(length)) % frames for k in range(count)]


def window_weights(length: int) -> torch.Tensor:
    """Blending weights along a window: a triangle peaking mid-window, never zero at the ends."""
    x = (torch.arange(length, dtype=torch.float32) + 0.5) / length
    return 1.0 - (2 * x - 1).abs() * 0.9


def windowed(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
             windows: list[torch.Tensor]) -> torch.Tensor:
    """Apply ``fn(x[window], window)`` (frames first) on every window and blend per frame."""
    out = torch.zeros_like(x, dtype=torch.float32)
    total = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
    for w in windows:
        w = w.to(x.device)
        weights = window_weights(len(w)).to(x.device)
        y = fn(x[w], w).float()
        out.index_add_(0, w, y * weights.view(-1, *([1] * (x.ndim - 1))))
        total.index_add_(0, w, weights)
    return (out / total.view(-1, *([1] * (x.ndim - 1)))).to(x.dtype)


def loop_noise(frames: int, shape: tuple[int, ...], generator: torch.Generator, *, shared: float = 0.5) -> torch.Tensor:
    """Initial noise (N, *shape), unit variance per frame, consistent around the loop:

        ε_k = √shared · (cos θ_k · A + sin θ_k · B) + √(1 − shared) · E_k,   θ_k = 2πk/N

    A, B, E_k independent standard normal. Neighbouring frames share most of the A/B part, the
    correlation falls with distance along the circle, and frame N−1 is as close to frame 0 as frame 1
    is: the loop has no seam in its noise either."""
    if not 0.0 <= shared <= 1.0:
        raise BadParameter("shared_noise", shared, "a number 0..1")
    a = torch.randn(shape, generator=generator)
    b = torch.randn(shape, generator=generator)
    e = torch.randn((frames, *shape), generator=generator)
    theta = 2 * math.pi * torch.arange(frames, dtype=torch.float32) / frames
    view = (-1,) + (1,) * len(shape)
    circle = torch.cos(theta).view(view) * a + torch.sin(theta).view(view) * b
    return math.sqrt(shared) * circle + math.sqrt(1 - shared) * e


def surface_cells(mesh: Mesh, cameras: Cameras, size: int) -> torch.Tensor:
    """(N, size, size) int64: for every pixel, the cube of space its surface point lies in (−1 off the mesh).

    Space is cut into cubes about one pixel wide at the orbit's distance; a cube is named by a hash of
    its integer coordinates. Pixels of different frames with the same cell see the same bit of surface."""
    frags = rasterize(cameras, mesh.vertices, mesh.faces, size)
    points = frags.interpolate(mesh.vertices, mesh.faces)
    distance = float((cameras.positions - mesh.center).norm(dim=-1).mean())
    cell = 2.0 * distance / cameras.focal / size  # world width of one pixel at the mesh's centre
    ijk = torch.floor(points / cell).long()
    key = ((ijk[..., 0] * 73856093) ^ (ijk[..., 1] * 19349663) ^ (ijk[..., 2] * 83492791)).remainder(1 << 40)
    return torch.where(frags.mask, key, torch.full((), -1, dtype=torch.long))


def surface_noise(cells: torch.Tensor, channels: int, generator: torch.Generator, *,
                  table: int = 1 << 18) -> torch.Tensor:
    """Initial noise attached to the mesh's surface, (N, channels, h, w), for ``surface_cells``.

    Every cell holds one standard-normal vector (from a table drawn from ``generator``, looked up by the
    cell's hash), and a pixel takes its cell's vector. So a point of the wall starts from the same noise
    in every frame that sees it, wherever it appears on screen. Off the mesh: zeros (mix in other noise
    there)."""
    values = torch.randn((table, channels), generator=generator)
    noise = values[cells.clamp_min(0).remainder(table)].permute(0, 3, 1, 2)
    return (noise * (cells >= 0)[:, None]).contiguous()


@dataclass(frozen=True)
class SurfaceGroups:
    """Which latent pixels see the same surface cell, worked out once per video for ``surface_sync``."""

    mask: torch.Tensor  # (N, h, w) bool: pixels on the mesh
    inverse: torch.Tensor  # (M,) each masked pixel's group
    count: torch.Tensor  # (G,) pixels per group, float


def surface_groups(cells: torch.Tensor) -> SurfaceGroups:
    mask = cells >= 0
    _, inverse = torch.unique(cells[mask], return_inverse=True)
    count = torch.zeros(int(inverse.max()) + 1 if inverse.numel() else 0, device=cells.device)
    return SurfaceGroups(mask, inverse, count.index_add_(0, inverse, torch.ones_like(inverse, dtype=torch.float32)))


def surface_sync(x: torch.Tensor, groups: SurfaceGroups, amount: float) -> torch.Tensor:
    """Pull the latents of every surface cell toward their mean over all the frames that see it.

    ``x`` (N, C, h, w), ``groups`` from ``surface_groups(surface_cells(...))`` at the latents' size;
    ``amount`` 0 keeps ``x``, 1 gives every pixel its cell's mean (the frames then agree wherever they see
    the same surface)."""
    if amount <= 0 or not groups.inverse.numel():
        return x
    flat = x.permute(0, 2, 3, 1)[groups.mask].float()  # (M, C)
    mean = torch.zeros(len(groups.count), x.shape[1], device=x.device).index_add_(0, groups.inverse, flat)
    mean /= groups.count[:, None]
    out = x.permute(0, 2, 3, 1).clone()
    out[groups.mask] = ((1 - amount) * flat + amount * mean[groups.inverse]).to(x.dtype)
    return out.permute(0, 3, 1, 2).contiguous()
