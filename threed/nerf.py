"""A small radiance field in plain PyTorch (no CUDA extension), built to be optimised by score distillation.

The field, over the box [−b, b]³ (b = ``bound``):

    features(x) = concat_l trilinear(G_l, x)        G_l: a dense grid of F features at resolution R_l,
                                                     R_l growing geometrically (a multi-resolution grid)
    (s, a)      = MLP(features(x))
    σ(x)        = softplus(s + blob(x))              blob(x) = k · (1 − ‖x‖ / r): an initial density ball,
                                                     so the first renders show an object, not empty space
    albedo(x)   = sigmoid(a)

Volume rendering along a ray o + t·d between its entry and exit of the box, at stratified samples t_i
(one uniform jitter inside each of n equal bins):

    α_i = 1 − exp(−σ_i δ_i)      T_i = Π_{j<i} (1 − α_j)      w_i = α_i T_i
    C   = Σ_i w_i c_i + (1 − Σ_i w_i) · background(d)

Shading augmentation (DreamFusion §3.1): c_i is the albedo, or the albedo lit by a point light near the
camera (lambertian: c = a · (k_a + (1 − k_a) · max(0, n·l))), or the same light on a white surface
(textureless), which forces the geometry, not the colour, to explain what the model wants to see.
Normals are n = −∇σ / ‖∇σ‖, by forward finite differences of the pre-activation density.

Regularisers: orientation (Ref-NeRF eq. 10: Σ_i w_i · max(0, n_i · d)², no visible normal faces away
from the camera) and opacity entropy per ray (pushes each pixel to fully empty or fully covered, so the
density has a surface to extract).

Conventions are those of ``cameras.py`` (+Y up, cameras look down −Z) and the rasterizer's pixel grid
(pixel centres, row 0 on top), so a field and a mesh seen by the same ``Cameras`` line up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..core.schema import AssetRequest
from .cameras import Cameras, framing_distance, orbit

Shading = Literal["albedo", "lambertian", "textureless"]


@dataclass
class FieldConfig:
    levels: int = 4  # grid resolutions, from base_resolution to max_resolution (geometric)
    base_resolution: int = 16
    max_resolution: int = 64
    features: int = 4  # per level
    hidden: int = 32  # MLP width
    bound: float = 1.0  # the field lives in [−bound, bound]³
    blob_density: float = 5.0  # k: pre-activation density added at the centre
    blob_radius: float = 0.5  # r: where the blob's contribution falls to zero
    background: Literal["mlp", "constant"] = "mlp"  # mlp: colour from the ray direction
    background_colour: tuple[float, float, float] = (1.0, 1.0, 1.0)  # the constant background
    samples: int = AssetRequest.samples  # stratified samples per ray
    ambient: float = 0.2  # k_a of the lambertian and textureless shading


class RadianceField(nn.Module):
    def __init__(self, cfg: FieldConfig | None = None, *, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg = cfg or FieldConfig()
        growth = (cfg.max_resolution / cfg.base_resolution) ** (1 / max(cfg.levels - 1, 1))
        self.resolutions = [int(round(cfg.base_resolution * growth ** i)) for i in range(cfg.levels)]
        # small random grids: features start near zero, so the MLP's bias and the blob decide the first renders
        self.grids = nn.ParameterList(
            nn.Parameter(1e-2 * torch.randn(1, cfg.features, r, r, r, generator=generator)) for r in self.resolutions)
        self.mlp = nn.Sequential(nn.Linear(cfg.levels * cfg.features, cfg.hidden), nn.ReLU(),
                                 nn.Linear(cfg.hidden, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, 4))
        self.background_mlp = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, 3))
        with torch.no_grad():  # deterministic init of the small layers too
            for layer in [*self.mlp, *self.background_mlp]:
                if isinstance(layer, nn.Linear):
                    bound_ = 1 / math.sqrt(layer.in_features)
                    layer.weight.uniform_(-bound_, bound_, generator=generator)
                    layer.bias.zero_()
        self.register_buffer("background_colour", torch.tensor(cfg.background_colour, dtype=torch.float32))
        self.active_levels = cfg.levels  # coarse-to-fine: finer levels are zeroed until switched on

    # ------------------------------------------------------------------------------------ queries
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x (P, 3) in world units → (P, levels · F)."""
        grid = (x / self.cfg.bound).view(1, 1, 1, -1, 3)  # grid_sample reads (x, y, z) as (W, H, D)
        out = []
        for level, g in enumerate(self.grids):
            f = F.grid_sample(g, grid, mode="bilinear", padding_mode="border", align_corners=True)
            f = f.view(g.shape[1], -1).t()
            out.append(f if level < self.active_levels else torch.zeros_like(f))
        return torch.cat(out, dim=1)

    def blob(self, x: torch.Tensor) -> torch.Tensor:
        return self.cfg.blob_density * (1 - x.norm(dim=-1) / self.cfg.blob_radius)

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-activation density (P,) (blob included) and albedo logits (P, 3)."""
        h = self.mlp(self.features(x))
        return h[:, 0] + self.blob(x), h[:, 1:]

    def query(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """σ (P,) and albedo (P, 3) in [0, 1] at points x (P, 3)."""
        s, a = self.raw(x)
        return F.softplus(s), torch.sigmoid(a)

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(self.raw(x)[0])

    def normals(self, x: torch.Tensor, s: torch.Tensor, h: float | None = None) -> torch.Tensor:
        """n = −∇s/‖∇s‖ at x (P, 3), s the pre-activation density there; forward differences, step h
        (default: half a cell of the finest grid)."""
        h = h or self.cfg.bound / self.resolutions[-1]
        offsets = torch.eye(3, dtype=x.dtype, device=x.device) * h
        shifted = self.raw((x[:, None] + offsets[None]).reshape(-1, 3))[0].view(-1, 3)
        grad = (shifted - s[:, None]) / h
        return -F.normalize(grad, dim=-1, eps=1e-12)

    def background(self, d: torch.Tensor) -> torch.Tensor:
        """Colour (R, 3) seen along directions d (R, 3) where nothing is hit."""
        if self.cfg.background == "constant":
            return self.background_colour.to(d).expand(d.shape[0], 3)
        return torch.sigmoid(self.background_mlp(d))


# ---------------------------------------------------------------------------------------- rays
def rays(cameras: Cameras, height: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Origins and unit directions (N, H, W, 3) through every pixel centre, matching ``raster.projection``."""
    width = width or height
    px = (torch.arange(width, dtype=torch.float32) + 0.5) * 2 / width - 1
    py = 1 - (torch.arange(height, dtype=torch.float32) + 0.5) * 2 / height
    y, x = torch.meshgrid(py, px, indexing="ij")
    f = cameras.focal
    d_cam = torch.stack([x * (width / height) / f, y / f, -torch.ones_like(x)], dim=-1)  # (H, W, 3)
    rot = cameras.world_to_cam[:, :3, :3]  # world→camera; its transpose takes camera directions to world
    d = torch.einsum("nji,hwj->nhwi", rot, d_cam)
    o = cameras.positions[:, None, None, :].expand_as(d)
    return o, F.normalize(d, dim=-1)


def box_interval(o: torch.Tensor, d: torch.Tensor, bound: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances (R,) of rays (R, 3) through [−bound, bound]³ (exit ≤ entry: a miss)."""
    inv = 1 / torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    t0, t1 = (-bound - o) * inv, (bound - o) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, torch.maximum(far, near)


@dataclass
class RayOutput:
    rgb: torch.Tensor  # (R, 3)
    opacity: torch.Tensor  # (R,) Σ w_i
    depth: torch.Tensor  # (R,) Σ w_i t_i (0 where empty)
    orientation: torch.Tensor  # () mean over rays of Σ_i w_i · max(0, n_i·d)²; 0 without normals


def render_rays(field: RadianceField, o: torch.Tensor, d: torch.Tensor, *, shading: Shading = "albedo",
                light: torch.Tensor | None = None, background: torch.Tensor | None = None,
                samples: int | None = None, normals: bool = False,
                generator: torch.Generator | None = None) -> RayOutput:
    """Volume-render rays o, d (R, 3). ``light``: (R, 3) point-light positions (lambertian, textureless);
    ``background``: (R, 3) colours replacing the field's background; ``generator``: stratified jitter
    (None: bin centres, deterministic); ``normals``: compute them (and the orientation term) even when
    the shading does not need them."""
    n = samples or field.cfg.samples
    near, far = box_interval(o, d, field.cfg.bound)
    u = torch.rand(o.shape[0], n, generator=generator).to(o) if generator is not None else torch.full(
        (o.shape[0], n), 0.5, dtype=o.dtype, device=o.device)
    t = near[:, None] + (far - near)[:, None] * (torch.arange(n, dtype=o.dtype, device=o.device) + u) / n  # (R, n)
    delta = torch.cat([t[:, 1:] - t[:, :-1], ((far - near) / n)[:, None]], dim=1)
    x = (o[:, None] + t[..., None] * d[:, None]).reshape(-1, 3)  # (R·n, 3)
    s, a = field.raw(x)
    sigma, albedo = F.softplus(s).view(-1, n), torch.sigmoid(a).view(-1, n, 3)
    alpha = 1 - torch.exp(-sigma * delta)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1] + 1e-10], 1), 1)
    w = alpha * trans  # (R, n)
    orientation = torch.zeros((), dtype=o.dtype, device=o.device)
    colour = albedo
    if shading != "albedo" or normals:
        nrm = field.normals(x, s).view(-1, n, 3)
        facing = (nrm * d[:, None]).sum(-1).clamp_min(0)  # > 0: the normal points away from the camera
        orientation = (w.detach() * facing ** 2).sum(1).mean()  # weights detached: only the normals move
        if shading != "albedo":
            assert light is not None, "lambertian and textureless shading need light positions"
            l_dir = F.normalize(light[:, None] - x.view(-1, n, 3), dim=-1)
            k_a = field.cfg.ambient
            lit = k_a + (1 - k_a) * (nrm * l_dir).sum(-1, keepdim=True).clamp_min(0)
            colour = lit * (albedo if shading == "lambertian" else torch.ones_like(albedo))
    opacity = w.sum(1)
    bg = field.background(d) if background is None else background
    rgb = (w[..., None] * colour).sum(1) + (1 - opacity)[:, None] * bg
    return RayOutput(rgb, opacity, (w * t).sum(1), orientation)


@dataclass
class Render:
    image: torch.Tensor  # (N, 3, H, W) in [0, 1]
    opacity: torch.Tensor  # (N, 1, H, W)
    depth: torch.Tensor  # (N, 1, H, W)
    orientation: torch.Tensor  # () orientation regulariser


def render(field: RadianceField, cameras: Cameras, size: int, *, chunk: int = 1 << 14, **kw) -> Render:
    """Render every camera at size² pixels (keywords as ``render_rays``; ``light`` is (N, 3), one per
    camera, and ``background`` (N, 3)). Rays go through in chunks of ``chunk``."""
    o, d = rays(cameras, size)
    n = len(cameras)
    per_ray = size * size
    light, background = kw.pop("light", None), kw.pop("background", None)
    expand = lambda v: None if v is None else v[:, None].expand(n, per_ray, 3).reshape(-1, 3)  # noqa: E731
    light, background = expand(light), expand(background)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    parts = []
    for a in range(0, o.shape[0], chunk):
        b = a + chunk
        parts.append(render_rays(field, o[a:b], d[a:b], light=None if light is None else light[a:b],
                                 background=None if background is None else background[a:b], **kw))
    rgb = torch.cat([p.rgb for p in parts]).view(n, size, size, 3).permute(0, 3, 1, 2)
    opacity = torch.cat([p.opacity for p in parts]).view(n, 1, size, size)
    depth = torch.cat([p.depth for p in parts]).view(n, 1, size, size)
    orientation = sum(p.orientation * (p.opacity.shape[0] / o.shape[0]) for p in parts)
    return Render(rgb, opacity, depth, orientation)


def opacity_entropy(opacity: torch.Tensor) -> torch.Tensor:
    """Mean binary entropy of per-pixel opacity: low when every pixel is clearly empty or clearly covered."""
    a = opacity.clamp(1e-5, 1 - 1e-5)
    return -(a * a.log() + (1 - a) * (1 - a).log()).mean()


# -------------------------------------------------------------------------------------- cameras
@dataclass
class CameraRange:
    elevation: tuple[float, float] = (-10.0, 60.0)  # degrees
    fov: tuple[float, float] = (35.0, 45.0)  # vertical field of view, degrees
    distance: tuple[float, float] = (0.9, 1.15)  # × the distance that frames a sphere of radius ``radius``
    radius: float = 1.0  # the object's bounding sphere
    light_jitter: float = 0.5  # the point light sits at the camera, moved by up to this (world units)


def sample_cameras(n: int, generator: torch.Generator, rng: CameraRange | None = None) -> tuple[Cameras, torch.Tensor]:
    """``n`` random cameras looking at the origin (azimuth uniform on the circle; one field of view for the
    batch) and a point light near each: (Cameras, light positions (n, 3))."""
    rng = rng or CameraRange()
    u = torch.rand(n, 3, generator=generator)
    az = u[:, 0] * 360.0
    el = rng.elevation[0] + u[:, 1] * (rng.elevation[1] - rng.elevation[0])
    fov = rng.fov[0] + float(torch.rand((), generator=generator)) * (rng.fov[1] - rng.fov[0])
    dist = framing_distance(rng.radius, fov, 1.0) * (rng.distance[0] + u[:, 2] * (rng.distance[1] - rng.distance[0]))
    cams = [orbit(torch.zeros(3), float(dist[i]), [float(az[i])], [float(el[i])], fov) for i in range(n)]
    cameras = Cameras(torch.cat([c.world_to_cam for c in cams]), fov, tuple(az.tolist()), tuple(el.tolist()),
                      near=min(c.near for c in cams))
    light = cameras.positions + rng.light_jitter * (2 * torch.rand(n, 3, generator=generator) - 1)
    return cameras, light
