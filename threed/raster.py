"""A batched triangle rasterizer in plain PyTorch (no CUDA extension): face id, perspective-correct
barycentrics and depth per pixel, for perspective cameras or for a mesh laid out in UV space.

How it works, per view: project the vertices; list every (triangle, pixel) pair inside each
triangle's screen bounding box (small triangles give few pairs, so this scales with the covered area,
not faces × pixels); keep the pairs whose pixel centre passes the three edge tests; a z-buffer
(``scatter_reduce`` amin over the pixel index) picks the nearest, ties going to the lower face id.
Pairs are processed in chunks of bounded size, so memory stays flat on large meshes.

Barycentrics are perspective-correct (interpolated as b_i/w_i, then renormalised), so anything
interpolated with them (UVs, positions, normals) is right at any angle. Nothing here carries gradients
into the geometry; sampling a texture through ``Fragments.uv`` is differentiable in the texture (the
SDS head relies on that).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .cameras import Cameras

CHUNK = 1 << 22  # (triangle, pixel) candidate pairs per chunk


@dataclass
class Fragments:
    face: torch.Tensor  # (N, H, W) int64, −1 = background
    bary: torch.Tensor  # (N, H, W, 3) perspective-correct barycentrics (0 on background)
    depth: torch.Tensor  # (N, H, W) camera-space distance along the view axis (inf on background)

    @property
    def mask(self) -> torch.Tensor:
        return self.face >= 0

    def interpolate(self, values: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Per-vertex ``values`` (V, C) at every pixel: (N, H, W, C), zero on the background."""
        f = self.face.clamp_min(0)
        corners = values[faces[f]]  # (N, H, W, 3, C)
        out = (corners * self.bary[..., None]).sum(-2)
        return out * self.mask[..., None]


def projection(cameras: Cameras, vertices: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Vertices in pixel coordinates (N, V, 2; pixel centres at integers, row 0 on top) and their
    camera-space depth w (N, V; positive in front of the camera)."""
    v = torch.cat([vertices, torch.ones_like(vertices[:, :1])], dim=1)
    cam = torch.einsum("nij,vj->nvi", cameras.world_to_cam.to(vertices), v)[..., :3]
    w = -cam[..., 2]
    f = cameras.focal
    x_ndc = f * (height / width) * cam[..., 0] / w.clamp_min(1e-12)
    y_ndc = f * cam[..., 1] / w.clamp_min(1e-12)
    xy = torch.stack([(x_ndc + 1) * width / 2 - 0.5, (1 - y_ndc) * height / 2 - 0.5], dim=-1)
    return xy, w


def rasterize(cameras: Cameras, vertices: torch.Tensor, faces: torch.Tensor, height: int, width: int | None = None) -> Fragments:
    """Rasterize one mesh from every camera; triangles crossing the near plane are skipped (rigs
    frame the whole object, so none do)."""
    width = width or height
    xy, w = projection(cameras, vertices, height, width)
    outs = [_raster_screen(xy[i], w[i], faces, height, width, near=cameras.near) for i in range(len(cameras))]
    return Fragments(*(torch.stack(t) for t in zip(*outs)))


def rasterize_uv(uv: torch.Tensor, faces: torch.Tensor, size: int) -> Fragments:
    """The mesh laid flat in its UV layout at ``size``²: which triangle and where, per texel (N = 1)."""
    xy = torch.stack([uv[:, 0] * size - 0.5, (1 - uv[:, 1]) * size - 0.5], dim=-1)
    w = torch.ones(len(uv), dtype=uv.dtype, device=uv.device)
    face, bary, depth = _raster_screen(xy, w, faces, size, size, near=0.0)
    return Fragments(face[None], bary[None], depth[None])


def _raster_screen(xy: torch.Tensor, w: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                   near: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    device = xy.device
    tri = xy[faces]  # (F, 3, 2)
    tw = w[faces]  # (F, 3)
    keep = (tw > near).all(1)
    lo = tri.amin(1).ceil().clamp_min(0)
    hi = torch.minimum(tri.amax(1).floor(), torch.tensor([width - 1, height - 1], device=device, dtype=xy.dtype))
    keep &= (hi >= lo).all(1)
    ids = torch.nonzero(keep)[:, 0]
    lo, hi = lo[ids].long(), hi[ids].long()
    bw = hi[:, 0] - lo[:, 0] + 1
    counts = bw * (hi[:, 1] - lo[:, 1] + 1)
    pixels = height * width
    zbuf = torch.full((pixels,), float("inf"), device=device, dtype=xy.dtype)
    chunks = _chunks(counts)
    # pass 1: nearest depth per pixel
    for a, b in chunks:
        f, pix, bary, depth = _pairs(ids[a:b], lo[a:b], bw[a:b], counts[a:b], tri, tw, width)
        zbuf.scatter_reduce_(0, pix, depth, "amin")
    # pass 2: the winning face per pixel (lowest id among equal depths), then its barycentrics
    fbuf = torch.full((pixels,), faces.shape[0], device=device, dtype=torch.long)
    for a, b in chunks:
        f, pix, bary, depth = _pairs(ids[a:b], lo[a:b], bw[a:b], counts[a:b], tri, tw, width)
        win = depth <= zbuf[pix]
        fbuf.scatter_reduce_(0, pix[win], f[win], "amin")
    bbuf = torch.zeros((pixels, 3), device=device, dtype=xy.dtype)
    for a, b in chunks:
        f, pix, bary, depth = _pairs(ids[a:b], lo[a:b], bw[a:b], counts[a:b], tri, tw, width)
        win = (depth <= zbuf[pix]) & (f == fbuf[pix])
        bbuf[pix[win]] = bary[win]
    fbuf = torch.where(fbuf == faces.shape[0], -1, fbuf)
    return fbuf.view(height, width), bbuf.view(height, width, 3), zbuf.view(height, width)


def _chunks(counts: torch.Tensor) -> list[tuple[int, int]]:
    """Split triangles into runs of at most ``CHUNK`` candidate pairs (a huge triangle runs alone)."""
    if counts.numel() == 0:
        return []
    ends = torch.cumsum(counts, 0)
    out, start, done = [], 0, 0
    n = counts.numel()
    while start < n:
        stop = int(torch.searchsorted(ends, done + CHUNK, right=True))
        stop = max(stop, start + 1)
        out.append((start, stop))
        done = int(ends[stop - 1])
        start = stop
    return out


def _pairs(ids, lo, bw, counts, tri, tw, width):
    """Candidate (face, pixel) pairs of a chunk that lie inside their triangle."""
    device = tri.device
    total = int(counts.sum())
    f = torch.repeat_interleave(ids, counts, output_size=total)
    k = torch.repeat_interleave(torch.arange(len(ids), device=device), counts, output_size=total)
    start = torch.cumsum(counts, 0) - counts
    off = torch.arange(total, device=device) - start[k]
    px = lo[k, 0] + off % bw[k]
    py = lo[k, 1] + off // bw[k]
    p = torch.stack([px, py], -1).to(tri.dtype)
    a, b, c = tri[f, 0], tri[f, 1], tri[f, 2]
    area = _edge(a, b, c)
    l0, l1, l2 = _edge(b, c, p) / area, _edge(c, a, p) / area, _edge(a, b, p) / area
    eps = -1e-6
    inside = (l0 >= eps) & (l1 >= eps) & (l2 >= eps) & (area.abs() > 1e-12)
    lam = torch.stack([l0, l1, l2], -1)[inside]
    f, pix = f[inside], (py * width + px)[inside]
    inv_w = 1.0 / tw[f]
    persp = lam * inv_w
    denom = persp.sum(-1, keepdim=True)
    bary = persp / denom
    depth = 1.0 / denom[:, 0]
    return f, pix, bary, depth


def _edge(a: torch.Tensor, b: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return (b[..., 0] - a[..., 0]) * (p[..., 1] - a[..., 1]) - (b[..., 1] - a[..., 1]) * (p[..., 0] - a[..., 0])


def sample_texture(texture: torch.Tensor, uv: torch.Tensor, mask: torch.Tensor | None = None,
                   mode: str = "bilinear") -> torch.Tensor:
    """Look up a texture (C, T, T) at per-pixel UVs (N, H, W, 2); returns (N, C, H, W). Differentiable
    in ``texture``. UVs wrap (repeat), as glTF's default sampler does."""
    grid = torch.stack([uv[..., 0] * 2 - 1, 1 - 2 * uv[..., 1]], -1)
    grid = torch.remainder(grid + 1, 2) - 1
    tex = texture[None].expand(uv.shape[0], *texture.shape)
    out = torch.nn.functional.grid_sample(tex, grid.to(texture.dtype), mode=mode, padding_mode="border",
                                          align_corners=False)
    if mask is not None:
        out = out * mask[:, None]
    return out
