"""Measures of a baked texture: coverage, seams, and renders of the textured mesh."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .cameras import Cameras, sphere
from .mesh import Mesh
from .raster import rasterize, rasterize_uv, sample_texture
from .texture import texel_visibility


def visible_texels(mesh: Mesh, size: int, cameras: Cameras | None = None, resolution: int = 256) -> torch.Tensor:
    """(T, T) texels seen from any of ``cameras`` (default: 48 viewpoints spread over the sphere above
    −10° elevation, the "reasonable viewpoints" of an object or building). ``mesh`` normalised."""
    cameras = cameras if cameras is not None else sphere(torch.zeros(3), 1.0, 48)
    texels = rasterize_uv(mesh.uv, mesh.faces, size)
    seen = torch.zeros(size, size, dtype=torch.bool)
    for i in range(0, len(cameras), 8):
        cams = cameras[list(range(i, min(i + 8, len(cameras))))]
        vis, _ = texel_visibility(mesh, cams, rasterize(cams, mesh.vertices, mesh.faces, resolution), texels)
        seen |= (vis > 0).any(0)
    return seen


def coverage(mesh: Mesh, painted: torch.Tensor) -> float:
    """Share of the reasonably visible texels that a generation view painted (``painted`` (T, T))."""
    visible = visible_texels(mesh, painted.shape[-1])
    return float((painted & visible).sum() / visible.sum().clamp_min(1))


def seam_ratio(mesh: Mesh, texture: torch.Tensor, inset_texels: float = 1.5,
               max_angle: float = 20.0) -> dict[str, float]:
    """Colour jump across UV-island borders vs across ordinary edges inside islands.

    For every edge shared by two triangles, the texture is sampled just inside each triangle next to
    the edge's midpoint; the mean absolute difference (0-255 scale) over seam edges (whose two sides
    have different UVs) is compared with the same over interior edges. Only smooth edges count (the
    two faces' normals within ``max_angle`` degrees): across a crease, like a building's corner, the
    two sides are different surfaces and may rightly differ. A ratio near 1 means seams are invisible."""
    size = texture.shape[-1]
    key = torch.round(mesh.vertices * 1e5).long()
    _, weld = torch.unique(key, dim=0, return_inverse=True)
    faces = mesh.faces
    f_idx = torch.arange(len(faces)).repeat_interleave(3)
    a = faces[:, [0, 1, 2]].reshape(-1)
    b = faces[:, [1, 2, 0]].reshape(-1)
    wa, wb = weld[a], weld[b]
    lo, hi = torch.minimum(wa, wb), torch.maximum(wa, wb)
    edge_key = lo * (int(weld.max()) + 1) + hi
    order = torch.argsort(edge_key)
    k = edge_key[order]
    pair = torch.nonzero(k[1:] == k[:-1])[:, 0]
    e1, e2 = order[pair], order[pair + 1]

    def inside_uv(e):
        ua, ub = mesh.uv[a[e]], mesh.uv[b[e]]
        centroid = mesh.uv[faces[f_idx[e]]].mean(1)
        mid = (ua + ub) / 2
        d = centroid - mid
        return mid + F.normalize(d, dim=-1) * torch.minimum(d.norm(dim=-1, keepdim=True),
                                                            torch.full((1,), inset_texels / size))

    def colour(uv):
        return sample_texture(texture, uv[None, None])[0, :, 0].T * 255

    uv1, uv2 = inside_uv(e1), inside_uv(e2)
    # the same edge, seen from both sides: its endpoints' UVs differ on a seam
    ends1 = torch.stack([mesh.uv[a[e1]], mesh.uv[b[e1]]], 1)
    ends2 = torch.stack([mesh.uv[a[e2]], mesh.uv[b[e2]]], 1)
    same = torch.minimum((ends1 - ends2).abs().amax((1, 2)), (ends1 - ends2.flip(1)).abs().amax((1, 2))) < 1e-6
    diff = (colour(uv1) - colour(uv2)).abs().mean(-1)
    normals = mesh.face_normals()
    smooth = (normals[f_idx[e1]] * normals[f_idx[e2]]).sum(-1).abs() >= math.cos(math.radians(max_angle))
    diff, same = diff[smooth], same[smooth]
    seam = diff[~same].mean().item() if bool((~same).any()) else float("nan")
    inner = diff[same].mean().item() if bool(same.any()) else float("nan")
    return {"seam_edges": int((~same).sum()), "interior_edges": int(same.sum()), "seam_jump": round(seam, 2),
            "interior_jump": round(inner, 2), "ratio": round(seam / inner, 2) if inner > 0 else float("nan")}


def render(mesh: Mesh, texture: torch.Tensor, cameras: Cameras, resolution: int = 256,
           background: float = 1.0) -> torch.Tensor:
    """The textured mesh (normalised) from ``cameras``: (N, 3, R, R) in [0, 1], with a little shading."""
    frags = rasterize(cameras, mesh.vertices, mesh.faces, resolution)
    uv = frags.interpolate(mesh.uv, mesh.faces)
    colour = sample_texture(texture, uv, frags.mask)
    return torch.where(frags.mask[:, None], colour, torch.full((), background))
