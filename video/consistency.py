"""Temporal consistency of a turntable against exact ground truth: the orbit's own geometry.

Every pixel of frame k that sees the mesh sees one surface point; projecting that point into frame
k+1 (mod N) gives where the same surface appears there: the true optical flow, with no estimation.
Where the point is visible in both frames (its depth in frame k+1 matches what that frame's
rasteriser saw, and it is not on a silhouette edge), a perfectly consistent video shows the same
colour. The **warping error** of a pair is the mean absolute colour difference over those pixels
(0..255 units), and the **loop-seam ratio** is the error of the pair (N−1 → 0) over the median of
the others: 1 means the loop's seam is as smooth as any other cut.

Lighting that moves with the camera (the img2img turntable's headlight) changes a surface's colour
between frames by itself; measure frames without it (``relight=False``) to see the texture alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..threed.cameras import Cameras
from ..threed.mesh import Mesh
from ..threed.raster import projection, rasterize


@dataclass
class OrbitFlow:
    grid: torch.Tensor  # (N, H, W, 2) where each pixel of frame k lands in frame k+1, grid_sample coordinates
    valid: torch.Tensor  # (N, H, W) bool: visible in both frames, away from silhouette edges

    @property
    def coverage(self) -> float:
        return float(self.valid.float().mean())


def orbit_flow(mesh: Mesh, cameras: Cameras, resolution: int, *, depth_tolerance: float = 0.01) -> OrbitFlow:
    """True flow from every frame to the next around the orbit (frame N−1 to frame 0 last)."""
    frags = rasterize(cameras, mesh.vertices, mesh.faces, resolution)
    n = len(cameras)
    points = frags.interpolate(mesh.vertices, mesh.faces)  # (N, H, W, 3) world positions
    mask = frags.mask
    # away from silhouettes: all 4-neighbours also see the mesh (edge pixels mix surface and background)
    m = mask.float()[:, None]
    interior = (-F.max_pool2d(-m, 3, stride=1, padding=1))[:, 0] > 0.5
    grids, valids = [], []
    for k in range(n):
        nxt = (k + 1) % n
        xy, w = projection(cameras[nxt], points[k].reshape(-1, 3), resolution, resolution)
        xy, w = xy[0].reshape(resolution, resolution, 2), w[0].reshape(resolution, resolution)
        grid = (xy + 0.5) / resolution * 2 - 1  # pixel centres → align_corners=False coordinates
        seen = F.grid_sample(frags.depth[nxt][None, None].nan_to_num(posinf=1e6), grid[None], mode="nearest",
                             align_corners=False)[0, 0]
        inside = F.grid_sample(interior[nxt][None, None].float(), grid[None], mode="nearest",
                               align_corners=False)[0, 0] > 0.5
        in_frame = (grid.abs() <= 1).all(-1)
        valid = interior[k] & inside & in_frame & ((seen - w).abs() <= depth_tolerance * w.clamp_min(1e-6))
        grids.append(grid)
        valids.append(valid)
    return OrbitFlow(torch.stack(grids), torch.stack(valids))


def to_tensor(frames) -> torch.Tensor:
    """PIL images or arrays → (N, 3, H, W) float in 0..255."""
    arrays = [np.asarray(f.convert("RGB") if hasattr(f, "convert") else f, dtype=np.float32) for f in frames]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


def warping_errors(frames, flow: OrbitFlow) -> np.ndarray:
    """Per pair (k → k+1 mod N), the mean absolute colour difference over valid pixels (0..255)."""
    x = to_tensor(frames)
    n = x.shape[0]
    if n != flow.grid.shape[0]:
        raise ValueError(f"{n} frames for a flow of {flow.grid.shape[0]}")
    out = []
    for k in range(n):
        warped = F.grid_sample(x[(k + 1) % n][None], flow.grid[k][None], mode="bilinear", align_corners=False)[0]
        diff = (warped - x[k]).abs().mean(0)
        v = flow.valid[k]
        out.append(float(diff[v].mean()) if bool(v.any()) else float("nan"))
    return np.array(out)


def seam_ratio(errors: np.ndarray) -> float:
    """Error of the loop's seam (last → first) over the median error of the other pairs."""
    return float(errors[-1] / max(np.median(errors[:-1]), 1e-9))



def detail(frames, flow: OrbitFlow) -> float:
    """Mean colour gradient magnitude over the measured pixels (0..255 per pixel): a lower warping error
    bought by blurrier frames shows up here as less detail."""
    x = to_tensor(frames).mean(1)  # (N, H, W) grey
    gx = (x[:, :, 1:] - x[:, :, :-1]).abs()[:, :-1, :]
    gy = (x[:, 1:, :] - x[:, :-1, :]).abs()[:, :, :-1]
    v = flow.valid[:, :-1, :-1]
    return float((gx + gy)[v].mean())
