"""Renders a :mod:`.massing` scene with the project's rasterizer: colour, depth, normals, a part mask and a caption.

Why: training the depth ControlNet of issue #19 draws thousands of (picture, depth, caption) triples; they come from
here at training time, one seed each: about 0.4 s for a 256² sample on one CPU thread (0.1 s at 128²).

One sample, top to bottom (:func:`sample`):

1. the scene from the seed (:func:`.massing.generate`) and a camera: eye level (1.6 m above the ground, looking at the
   building), aerial (30–60° above the horizon) or orbit (8–25°), framed on the main building (:func:`camera`);
2. triangles crossing the camera's near plane are clipped (the ground runs under the camera), then rasterized
   (:func:`.raster.rasterize`): face, perspective-correct barycentrics and distance per pixel;
3. each part wears its procedural material tile (:func:`..core.train.materials.render`) sampled through its UVs in
   metres at the tile's real size (a brick tile of 12 courses spans 0.9 m), from a mip stack so far walls do not
   shimmer: the level follows the pixel's footprint on the surface;
4. sun shading in linear light: Lambert from a random sun with a shadow map (the scene rasterized once more from the
   sun), a sky-blue ambient that favours faces looking up, dark glass that mirrors the sky, and a sky gradient behind;
5. depth normalised exactly as the engine's ``load_depth`` does a ``.npy`` (near = 1, far = 0.1, background 0),
   normals in camera space, the part-kind mask, and a caption (:func:`caption`) in the materials captions' words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ..core.train import materials
from .cameras import Cameras, framing_distance, look_at, orbit
from .massing import Scene, generate
from .raster import rasterize

VIEWS = ("eye", "aerial", "orbit")
TILE = 128  # side of a material tile, pixels (half that for pictures of 128² or less: they never need more)
EYE = 1.6  # eye height above the ground, metres
NEAR = 0.1  # near plane, metres

# Metres one tile spans, from the painter's labels: real unit sizes times their counts per tile.
_UNIT_METRES = {"running_bond_brick": ("courses", 0.075), "stack_bond_brick": ("courses", 0.075),
                "roof_shingles": ("courses", 0.16), "corrugated_metal": ("ribs", 0.076),
                "standing_seam_metal": ("pans", 0.45), "square_tiles": ("tiles_per_side", 0.3),
                "hex_tiles": ("hex_columns", 0.2), "wood_planks": ("planks_across", 0.15),
                "board_formed_concrete": ("boards", 0.2), "herringbone_parquet": ("units", 0.07),
                "gravel": ("stones_per_side", 0.03)}
_PLAIN_METRES = {"grass": 0.6, "stucco": 2.0, "polished_concrete": 2.5, "marble": 2.0, "slate": 1.5}


@dataclass
class Sample:
    image: np.ndarray  # (H, W, 3) uint8, sRGB
    depth: np.ndarray  # (H, W) float32 in [0, 1]: near = 1, farthest = 0.1, background = 0
    normals: np.ndarray  # (H, W, 3) float32 unit, camera space (x right, y up, z towards the camera); 0 outside
    mask: np.ndarray  # (H, W) uint8 index into massing.KINDS; 0 = background
    distance: np.ndarray  # (H, W) float32 metres along the view axis; inf = background
    caption: str
    view: str  # one of VIEWS


# ----------------------------------------------------------------------------- cameras


def camera(scene: Scene, view: str, rng: np.random.Generator) -> Cameras:
    """One camera looking at the main building: ``view`` one of VIEWS."""
    b = scene.main
    fov = float(rng.uniform(40, 65))
    if view == "eye":  # standing in front of it more often than behind, at 1.3–2.8 times its reach
        az = math.atan2(b.door[0] - b.center[0], b.door[2] - b.center[2]) if b.door is not None else 0.0
        az += float(rng.normal(0, 0.9))
        dist = min(b.reach * rng.uniform(1.3, 2.8) + 4.0, scene.extent * 0.92)
        eye = np.array([b.center[0] + dist * math.sin(az), EYE, b.center[2] + dist * math.cos(az)])
        target = np.array([b.center[0], rng.uniform(EYE, max(EYE, min(b.height * 0.45, 12.0))), b.center[2]])
        m = look_at(torch.tensor(eye, dtype=torch.float32)[None], torch.tensor(target, dtype=torch.float32)[None],
                    torch.tensor([0.0, 1.0, 0.0]))
        return Cameras(m, fov, (math.degrees(az),), (0.0,), near=NEAR)
    if view not in ("aerial", "orbit"):
        raise ValueError(f"view={view!r} is not allowed: one of {VIEWS}")
    el = rng.uniform(30, 60) if view == "aerial" else rng.uniform(8, 25)
    dist = framing_distance(b.radius * rng.uniform(0.65, 1.05), fov)
    center = torch.tensor(b.center, dtype=torch.float32)
    cams = orbit(center, dist, [float(rng.uniform(0, 360))], [float(el)], fov)
    cams.near = NEAR
    return cams


# ----------------------------------------------------------------------------- geometry per view


def _merge(scene: Scene, eye: np.ndarray) -> dict[str, np.ndarray]:
    """Every part's triangles in one soup (corners (F, 3, 3), normals, UVs, part index per face); trees and benches
    within reach of the camera are left out (a camera inside a crown sees nothing)."""
    keep = []
    for i, p in enumerate(scene.parts):
        if p.kind in ("tree", "bench"):
            lo, hi = p.vertices.min(0) - 1.0, p.vertices.max(0) + 1.0
            if np.all(eye >= lo) and np.all(eye <= hi):
                continue
        keep.append(i)
    parts = [scene.parts[i] for i in keep]
    return {"corners": np.concatenate([p.vertices[p.faces] for p in parts]),
            "normals": np.concatenate([p.normals[p.faces] for p in parts]),
            "uv": np.concatenate([p.uv for p in parts]),
            "part": np.concatenate([np.full(len(p.faces), i) for i, p in zip(keep, parts)])}


def _clip_near(soup: dict[str, np.ndarray], world_to_cam: np.ndarray, near: float) -> dict[str, np.ndarray]:
    """Triangles cut by the plane ``near`` metres in front of the camera: the part in front is kept (as one or two
    triangles), every corner attribute interpolated linearly along the cut edges (Sutherland–Hodgman)."""
    c = soup["corners"]
    w = -(c @ world_to_cam[2, :3] + world_to_cam[2, 3])  # (F, 3) distance in front of the camera
    front = w > near
    whole, cut = front.all(1), front.any(1) & ~front.all(1)
    out = {k: [v[whole]] for k, v in soup.items()}
    attrs = np.concatenate([soup["corners"], soup["normals"], soup["uv"]], -1)  # (F, 3, 8)
    for f in np.nonzero(cut)[0]:
        poly = []
        for i in range(3):
            j = (i + 1) % 3
            if front[f, i]:
                poly.append(attrs[f, i])
            if front[f, i] != front[f, j]:
                t = (w[f, i] - near) / (w[f, i] - w[f, j])
                poly.append(attrs[f, i] + t * (attrs[f, j] - attrs[f, i]))
        for k in range(1, len(poly) - 1):
            tri = np.stack([poly[0], poly[k], poly[k + 1]])
            out["corners"].append(tri[None, :, :3])
            out["normals"].append(tri[None, :, 3:6])
            out["uv"].append(tri[None, :, 6:8])
            out["part"].append(soup["part"][f:f + 1])
    return {k: np.concatenate(v).astype(soup[k].dtype) for k, v in out.items()}


def _raster(corners: np.ndarray, cams: Cameras, size: int):
    f = len(corners)
    verts = torch.from_numpy(np.ascontiguousarray(corners.reshape(-1, 3), dtype=np.float32))
    faces = torch.arange(3 * f, dtype=torch.long).view(f, 3)
    frag = rasterize(cams, verts, faces, size, size)
    return frag.face[0], frag.bary[0], frag.depth[0]


# ----------------------------------------------------------------------------- materials


def tile_metres(labels: dict) -> float:
    """The real side of a material tile, from the counts its painter reports (bricks: courses × 75 mm)."""
    family = labels["family"]
    if family in _UNIT_METRES:
        key, unit = _UNIT_METRES[family]
        return float(labels[key]) * unit
    return _PLAIN_METRES.get(family, 1.5)


@lru_cache(maxsize=256)
def _mip_stack(seed: int, family: str, colour: str, tile: int = TILE) -> tuple[torch.Tensor, float]:
    """A material tile as a stack of ever blurrier copies at full size, linear light, wrapped by one texel for
    seamless bilinear lookups: (1, 3, L, T + 2, T + 2), and the metres it spans."""
    img, labels = materials.render(seed, tile, family, colour)
    t = torch.from_numpy(img).permute(2, 0, 1).float().div(255).pow(2.2)[None]  # (1, 3, T, T)
    levels, k = [], 1
    while k <= tile:
        small = F.avg_pool2d(t, k) if k > 1 else t
        pad = F.pad(small, (1, 1, 1, 1), mode="circular")
        up = F.interpolate(pad, scale_factor=k, mode="bilinear", align_corners=False) if k > 1 else pad
        levels.append(up[..., k - 1: k - 1 + tile + 2, k - 1: k - 1 + tile + 2] if k > 1 else up)
        k *= 2
    return torch.stack(levels, 2).contiguous(), tile_metres(labels)


def _texture(stack: torch.Tensor, uv: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Trilinear lookup of P points: ``uv`` (P, 2) in tiles (wrapping), ``level`` (P,) mip level -> (P, 3)."""
    n_levels, side = stack.shape[2], stack.shape[-1]
    frac = torch.remainder(uv, 1.0)
    g = 2 * (frac * (side - 2) + 1) / side - 1  # into the wrapped-by-one texel grid (align_corners=False)
    gz = 2 * (level.clamp(0, n_levels - 1) + 0.5) / n_levels - 1
    grid = torch.cat([g, gz[:, None]], -1).view(1, 1, 1, -1, 3)
    return F.grid_sample(stack, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0, 0].T


# ----------------------------------------------------------------------------- light


@dataclass
class _Light:
    sun: np.ndarray  # (3,) unit, towards the sun
    sun_rgb: np.ndarray  # (3,) linear
    sky_zenith: np.ndarray
    sky_horizon: np.ndarray
    ambient: float


def _light(rng: np.random.Generator) -> _Light:
    el, az = math.radians(rng.uniform(18, 68)), rng.uniform(0, 2 * np.pi)
    sun = np.array([math.cos(el) * math.sin(az), math.sin(el), math.cos(el) * math.cos(az)])
    warm = rng.uniform(0.0, 0.12)
    haze = rng.uniform(0.0, 0.5)
    zenith = np.array([0.16, 0.32, 0.75]) * (1 - haze) + np.array([0.55, 0.6, 0.68]) * haze
    horizon = np.array([0.72, 0.8, 0.9]) * (1 - haze * 0.3) + np.array([0.85, 0.85, 0.85]) * haze * 0.3
    return _Light(sun, np.array([1.0, 0.95 - warm * 0.5, 0.88 - warm]) * rng.uniform(2.4, 3.2), zenith, horizon,
                  float(rng.uniform(0.35, 0.6)))


def _sky(light: _Light, directions: torch.Tensor) -> torch.Tensor:
    """Sky colour (…, 3) along world ``directions`` (…, 3): horizon to zenith, hazier below the horizon."""
    up = directions[..., 1:2]
    t = up.clamp(0, 1).pow(0.6)
    zen, hor = torch.tensor(light.sky_zenith, dtype=torch.float32), torch.tensor(light.sky_horizon, dtype=torch.float32)
    sky = hor * (1 - t) + zen * t
    below = hor * 0.8 + torch.tensor([0.05, 0.05, 0.02])
    return torch.where(up < 0, below.expand_as(sky), sky)


def _shadow(scene: Scene, soup: dict[str, np.ndarray], light: _Light, points: torch.Tensor,
            normals: torch.Tensor, res: int = 384) -> torch.Tensor:
    """How much sun reaches each of ``points`` (P, 3): 1 lit, 0 in shadow, from a shadow map (the scene rasterized
    from a far, narrow camera at the sun), filtered over 2 × 2 texels for soft edges."""
    b = scene.main
    radius = max(b.radius * 1.6, 12.0)
    dist = radius * 40.0
    center = torch.tensor(b.center, dtype=torch.float32)
    fov = math.degrees(2 * math.asin(radius / dist))
    eye = center + torch.tensor(light.sun, dtype=torch.float32) * dist
    m = look_at(eye[None], center[None], torch.tensor([0.0, 1.0, 0.0]))
    cams = Cameras(m, fov, near=dist - 4 * radius)
    flat = np.array([p.kind in ("ground", "path") for p in scene.parts])[soup["part"]]  # under everything: no shade
    inside = _near_sun(soup["corners"], light.sun, b.center, radius * 1.5) & ~flat
    face, _, zmap = _raster(soup["corners"][inside], cams, res)
    z = torch.where(face >= 0, zmap, torch.full_like(zmap, float("inf")))
    # the points in the sun camera's pixels (as raster.projection does)
    p = torch.cat([points, torch.ones_like(points[:, :1])], 1) @ m[0].T
    w = -p[:, 2]
    f = cams.focal
    x = (f * p[:, 0] / w + 1) * res / 2 - 0.5
    y = (1 - f * p[:, 1] / w) * res / 2 - 0.5
    texel = 2 * radius / res
    cos = (normals @ torch.tensor(light.sun, dtype=torch.float32)).clamp(0.05, 1)
    bias = texel * (1.0 + 1.5 * torch.sqrt(1 - cos**2) / cos).clamp(max=6.0)
    x0, y0 = x.floor(), y.floor()
    lit = torch.zeros_like(x)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = (x0 + dx).long(), (y0 + dy).long()
            ok = (xi >= 0) & (xi < res) & (yi >= 0) & (yi < res)
            occ = z[yi.clamp(0, res - 1), xi.clamp(0, res - 1)]
            wgt = (1 - (x - x0 - dx).abs()) * (1 - (y - y0 - dy).abs())
            lit += wgt * torch.where(ok, (w - bias <= occ).float(), torch.ones_like(x))
    return lit


def _near_sun(corners: np.ndarray, sun: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    """Triangles that can cast a shadow into the framed area: those within ``radius`` of the sun's axis through
    ``center``."""
    c = corners.mean(1) - center
    off = c - np.outer(c @ sun, sun)
    return np.linalg.norm(off, axis=1) < radius + np.linalg.norm(corners[:, 0] - corners.mean(1), axis=1) + 1.0


# ----------------------------------------------------------------------------- one picture


def render(scene: Scene, cams: Cameras, size: int, rng: np.random.Generator) -> Sample:
    """Colour, depth, normals and mask of ``scene`` seen by ``cams`` (one camera), ``size``² pixels."""
    w2c = cams.world_to_cam[0].numpy().astype(np.float64)
    eye = cams.positions[0].numpy()
    soup = _clip_near(_merge(scene, eye), w2c, NEAR * 1.5)
    face, bary, dist = _raster(soup["corners"], cams, size)
    hit = face >= 0
    fid = face[hit]
    b = bary[hit][..., None]  # (P, 3, 1)

    def interp(name: str) -> torch.Tensor:
        return (torch.from_numpy(soup[name][fid.numpy()]).float() * b).sum(1)

    pos, nrm, uv = interp("corners"), F.normalize(interp("normals"), dim=-1), interp("uv")
    part = torch.from_numpy(soup["part"])[fid]
    to_cam = F.normalize(torch.from_numpy(eye).float() - pos, dim=-1)
    smooth = torch.tensor([p.smooth for p in scene.parts])[part]
    facing = (nrm * to_cam).sum(-1, keepdim=True)
    nrm = torch.where((facing < 0) & ~smooth[:, None], -nrm, nrm)  # two-sided sheets face the camera

    # 3. materials: albedo per pixel, mip level from the pixel's footprint on the surface
    light = _light(rng)
    focal = cams.focal
    footprint = dist[hit] * 2 / (focal * size) / (nrm * to_cam).sum(-1).abs().clamp_min(0.25)
    albedo = torch.zeros(len(fid), 3)
    tile = TILE if size > 128 else TILE // 2
    glass = torch.zeros(len(fid), dtype=torch.bool)
    for i in part.unique().tolist():
        p, sel = scene.parts[i], part == i
        if p.family is None:
            glass |= sel
            continue
        stack, metres = _mip_stack(p.tile_seed, p.family, p.colour, tile)
        metres *= 2.5 if p.kind == "tree" else 1.0
        level = torch.log2(footprint[sel] * tile / metres).clamp_min(0)
        albedo[sel] = _texture(stack, uv[sel] / metres, level)

    # 4. light: sun (Lambert, shadowed) + sky ambient favouring faces that look up; glass mirrors the sky
    sun = torch.tensor(light.sun, dtype=torch.float32)
    lambert = (nrm @ sun).clamp_min(0) * _shadow(scene, soup, light, pos, nrm, res=min(384, max(256, 2 * size)))
    sky_amb = torch.tensor((light.sky_horizon + light.sky_zenith) / 2, dtype=torch.float32)
    # the sky is brighter round the sun and the ground bounces some back: shaded walls facing different ways differ
    toward_sun = (nrm[:, [0, 2]] @ sun[[0, 2]])[:, None] / max(float(sun[[0, 2]].norm()), 1e-6)
    ambient = light.ambient * (0.55 + 0.45 * nrm[:, 1:2]) * (0.85 + 0.15 * toward_sun) * sky_amb / sky_amb.mean()
    rgb = albedo * (lambert[:, None] * torch.tensor(light.sun_rgb, dtype=torch.float32) * 0.5 + ambient)
    if bool(glass.any()):
        view = -to_cam[glass]
        refl = view - 2 * (view * nrm[glass]).sum(-1, keepdim=True) * nrm[glass]
        cos = (nrm[glass] * to_cam[glass]).sum(-1, keepdim=True).clamp(0, 1)
        fresnel = 0.04 + 0.5 * (1 - cos) ** 4  # Schlick-like: dark seen square on, a mirror at grazing angles
        tint = torch.tensor([0.012, 0.016, 0.02]) * float(rng.uniform(0.5, 2.0))
        rgb[glass] = tint * (0.5 + lambert[glass, None]) + fresnel * _sky(light, refl)
    rgb = 1 - torch.exp(-1.25 * rgb)  # a soft shoulder: white walls in full sun keep their texture
    haze = 1 - torch.exp(-dist[hit] / 1500.0)[:, None]
    rgb = rgb * (1 - haze) + torch.tensor(light.sky_horizon, dtype=torch.float32) * haze

    # the background: the sky along each pixel's ray
    image = _sky(light, _rays(cams, size)).reshape(size * size, 3).clone()
    image[hit.reshape(-1)] = rgb
    image = image.clamp(0, 1).pow(1 / 2.2).reshape(size, size, 3)

    # 5. depth as core.image.load_depth normalises distances, camera-space normals, the mask
    d = dist.clone()
    depth = torch.zeros_like(d)
    if bool(hit.any()):
        near, far = d[hit].min(), d[hit].max()
        depth[hit] = 1.0 - (d[hit] - near) / max(float(far - near), 1e-6) * 0.9
    normals = torch.zeros(size, size, 3)
    normals[hit] = nrm @ cams.world_to_cam[0, :3, :3].T
    labels = torch.tensor([p.label for p in scene.parts], dtype=torch.uint8)
    mask = torch.zeros(size, size, dtype=torch.uint8)
    mask[hit] = labels[part]
    distance = torch.where(hit, dist, torch.full_like(dist, float("inf")))
    return Sample((image.numpy() * 255 + 0.5).astype(np.uint8), depth.numpy(), normals.numpy(), mask.numpy(),
                  distance.numpy(), "", "")


def _rays(cams: Cameras, size: int) -> torch.Tensor:
    """World direction of every pixel's ray (size, size, 3)."""
    f = cams.focal
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(-c, c, indexing="ij")
    d = torch.stack([x / f, y / f, -torch.ones_like(x)], -1)
    return F.normalize(d @ cams.world_to_cam[0, :3, :3], dim=-1)


# ----------------------------------------------------------------------------- captions

_NUMBERS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
            "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty")
# A family as a material word before a part's noun ("red brick walls"); words the materials captions use.
_WORDS = {"running_bond_brick": "brick", "stack_bond_brick": "stack bond brick", "stucco": "stucco",
          "board_formed_concrete": "board-formed concrete", "polished_concrete": "concrete", "wood_planks": "timber",
          "corrugated_metal": "corrugated metal", "standing_seam_metal": "standing seam metal",
          "square_tiles": "tiled", "hex_tiles": "hexagonal tile", "roof_shingles": "shingle", "slate": "slate",
          "marble": "marble", "gravel": "gravel", "grass": "grass", "herringbone_parquet": "parquet"}
_TYPES = {"house": "house", "block": "apartment block", "tower": "tower", "pavilion": "pavilion"}
_GROUND_WORDS = {"lawn": "on a lawn", "gravel": "on gravel", "paving": "on paving"}


def phrases(scene: Scene) -> dict[str, str]:
    """One phrase per thing in the picture, keyed by what it is ("building", a part kind, "site" objects),
    in the materials captions' colour and material words: {"walls": "red brick walls", ...}."""
    b = scene.main
    m = b.materials
    out = {"building": _TYPES[b.type]}
    if b.type != "pavilion":
        out["building"] = f"{_NUMBERS[min(b.storeys, 20) - 1]}-storey {_TYPES[b.type]}"
        out["walls"] = f"{m['walls'][1]} {_WORDS[m['walls'][0]]} walls"
    if "columns" in m:
        out["columns"] = f"{m['columns'][1]} {_WORDS[m['columns'][0]]} columns"
    out["roof"] = f"{m['roof'][1]} {_WORDS[m['roof'][0]]} {b.roof} roof"
    if "frames" in m and b.type != "pavilion":
        out["frames"] = f"{m['frames'][1]} window frames"
    if b.balconies:
        out["balcony"] = "balconies"
    if "plinth" in m:
        out["plinth"] = f"{m['plinth'][1]} {_WORDS[m['plinth'][0]]} plinth"
    if scene.path is not None:
        out["path"] = f"{scene.path[1]} {_WORDS[scene.path[0]]} path"
    if scene.trees:
        out["tree"] = "trees" if scene.trees > 1 else "a tree"
    if scene.benches:
        out["bench"] = "benches" if scene.benches > 1 else "a bench"
    out["ground"] = _GROUND_WORDS[scene.ground]
    if scene.ground == "lawn" and scene.ground_material[1] != "green":
        out["ground"] = f"on a {scene.ground_material[1]} lawn"
    return out


_ALWAYS = ("building", "walls", "columns", "roof")  # what a short caption still says


def caption(scene: Scene, rng: np.random.Generator | None = None) -> str:
    """What the picture shows: 'two-storey house, red brick walls, black slate gable roof, white window frames, on a
    lawn'. With ``rng``, each phrase but the building, its walls (or columns) and roof is left out with probability
    0.4, as people write shorter prompts than a full inventory."""
    said = phrases(scene)
    return ", ".join(v for k, v in said.items() if rng is None or k in _ALWAYS or rng.random() >= 0.4)


# ----------------------------------------------------------------------------- the main path


def sample(seed: int, size: int = 256, view: str | None = None, building: str | None = None,
           roof: str | None = None) -> Sample:
    """One training sample, the same for the same arguments: scene, camera and light all drawn from ``seed``."""
    if size < 16:
        raise ValueError(f"size={size} is not allowed: 16 pixels or more")
    rng = np.random.default_rng([seed, 1])
    scene = generate(seed, building, roof)
    view = view or VIEWS[int(rng.choice(3, p=[0.35, 0.3, 0.35]))]
    cams = camera(scene, view, rng)
    out = render(scene, cams, size, rng)
    out.caption, out.view = caption(scene, rng), view
    return out


# what the docs' contact sheet shows, cell by cell: every building type and house roof, each view in turn
SHEET = (("house", "gable"), ("house", "hip"), ("house", "flat"), ("house", "shed"), ("block", None), ("tower", None),
         ("pavilion", None), ("block", "gable"), ("house", "gable"), ("pavilion", "hip"), ("house", "hip"),
         ("house", "shed"))


def contact_sheet(path, seeds=range(len(SHEET)), size: int = 160, columns: int = 4) -> list[str]:
    """A grid of colour renders, each with its depth beneath (for the docs and for a person to judge); returns
    the captions, cell by cell."""
    from PIL import Image

    seeds = list(seeds)
    rows = math.ceil(len(seeds) / columns)
    sheet = Image.new("RGB", (columns * size, rows * 2 * size), "white")
    captions = []
    for k, seed in enumerate(seeds):
        building, roof = SHEET[k % len(SHEET)]
        s = sample(seed, size, view=VIEWS[k % 3], building=building, roof=roof)
        captions.append(f"{seed} ({s.view}): {s.caption}")
        x, y = (k % columns) * size, (k // columns) * 2 * size
        sheet.paste(Image.fromarray(s.image), (x, y))
        sheet.paste(Image.fromarray((s.depth * 255).astype(np.uint8)).convert("RGB"), (x, y + size))
    sheet.save(path, optimize=True)
    return captions


if __name__ == "__main__":  # python -m sfumato.threed.building_render [out.png]
    import sys

    print("\n".join(contact_sheet(sys.argv[1] if len(sys.argv) > 1 else "docs/buildings_sheet.png")))
