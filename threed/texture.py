"""Texture a mesh from a prompt, baked into its UV map.

Three modes (``TextureRequest.mode``):

**projection** — views around the object are generated and their colours baked into the UV texture.

* ``variant="sequential"`` (default): views are generated in turn. Each view is conditioned on its
  depth (the bundle's ControlNet when it has one; otherwise image-to-image from the view's shading and
  the partial texture rendered into it). What earlier views already painted is split by how head-on
  they saw it into *keep* (preserved exactly, by blending the known latents back after every step),
  *refine* (preserved for the first part of the schedule, then free) and *generate* (free). An inpainting U-Net
  (9 input channels) is also shown each view's *keep* pixels and told to paint the rest (``repaint.view_inpaint``).
* ``variant="sync"``: all views are denoised together and share one texture in UV space: after every
  step, each texel takes the latent of the view that sees it most head-on, and every view's pixels are
  re-read from that shared latent texture. Views agree by construction, at the cost of the
  view-by-view refinement.

Baking (both variants): every texel inside the UV layout knows its 3-D point and normal (the mesh is
rasterized in UV space); a view colours the texels it sees (depth test against the view's z-buffer)
with weight cos⁴ of the viewing angle, so head-on views dominate and grazing ones fade out.
Texels no view saw are filled in UV space (push-pull), and the fill runs past the UV islands' borders
so mip levels never mix in the background.

**sds** — no view is generated: the texture itself is optimised by score distillation through the
rasterizer (``sds_texture.py``); for bundles without a depth ControlNet, and resumable.

**material** — a seamless tile from the prompt (``seamless="xy"``), mapped by box projection at real
scale: each triangle takes the UV plane of its dominant axis, in metres / ``tile_size``. With the
embedded materials bundle this is the mode that looks right.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ..core import latents as latent_space
from ..core import lora, text
from ..core.checks import ensure_checked
from ..core.denoiser import Conditioning, Denoiser, make_conditioning
from ..core.errors import BadParameter
from ..core.inpaint import Inpaint
from ..core.image import generate, native_size
from ..core.loading import Models
from ..core.provenance import version
from ..core.sampling import StepInfo, sample, timesteps_for
from ..core.schedulers import make_scheduler, takes_generator
from ..core.schema import ImageRequest, TextureRequest
from .cameras import Cameras, rig, sphere, view_prompt
from .mesh import Mesh, check, ensure_uv, load_mesh
from . import repaint as repainting
from .slots import file_label
from .raster import Fragments, projection, rasterize, rasterize_uv, sample_texture

@dataclass
class TextureResult:
    texture: Image.Image  # projection: the UV texture; material: the tile
    mesh: Mesh  # with the UVs the texture belongs to (material: box-projected, in tiles)
    metadata: dict[str, Any]
    views: list[Image.Image] = field(default_factory=list)  # generated views (projection)
    metrics: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    painted: torch.Tensor | None = None  # (T, T) texels a generation view coloured (projection)
    slots: list = field(default_factory=list)  # material: a ``slots.SlotTile`` per slot generated
    all_slots: list = field(default_factory=list)  # material: every ``slots.Slot`` of the mesh, generated or not


@dataclass
class ViewInfo:
    """Progress within a texture job: view ``view`` of ``views`` (0-based), and its step."""

    view: int
    views: int
    step: StepInfo
    slot: str = ""  # material mode: the slot this tile is for


OnView = Callable[[ViewInfo], None]


# --------------------------------------------------------------------------------- geometry per job
@dataclass
class Scene:
    """Everything geometric a projection job needs, computed once."""

    mesh: Mesh  # normalised (centre 0, radius 1), with UVs
    cameras: Cameras
    frags: Fragments  # views at the generation resolution
    cos: torch.Tensor  # (N, R, R) |cos| between the surface normal and the view ray, 0 off the mesh
    depth_control: torch.Tensor  # (N, 3, R, R) near = bright, one near/far for all views
    shading: torch.Tensor  # (N, 3, R, R) grey Lambert shading with a headlight, background mid grey
    uv_pix: torch.Tensor  # (N, R, R, 2) UV per pixel
    texels: Fragments  # the UV layout at the texture size
    texel_mask: torch.Tensor  # (T, T) inside a UV triangle
    texel_vis: torch.Tensor  # (N, T, T) cos weight of each view on each texel (0 = not seen)
    texel_xy: torch.Tensor  # (N, T, T, 2) where each texel lands in each view, grid_sample coordinates
    near_far: tuple[float, float] = (0.0, 1.0)  # the depth range the control images are normalised with


def texel_visibility(mesh: Mesh, cameras: Cameras, frags: Fragments, texels: Fragments,
                     erode: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T, T) |cos| of every view on every texel it sees (0 where hidden), and where the texel lands
    in each view as grid_sample coordinates (N, T, T, 2)."""
    n_views, res = frags.face.shape[0], frags.face.shape[1]
    size = texels.face.shape[-1]
    mask = texels.mask[0]
    points = texels.interpolate(mesh.vertices, mesh.faces)[0]  # (T, T, 3)
    normals = mesh.face_normals()[texels.face[0].clamp_min(0)]
    flat = points.reshape(-1, 3)
    xy, w = projection(cameras, flat, res, res)  # (N, T*T, 2), (N, T*T)
    grid = torch.stack([(xy[..., 0] + 0.5) / res * 2 - 1, (xy[..., 1] + 0.5) / res * 2 - 1], -1)
    px, py = xy[..., 0].round().long(), xy[..., 1].round().long()
    inside = (px >= 0) & (px < res) & (py >= 0) & (py < res)
    pxc, pyc = px.clamp(0, res - 1), py.clamp(0, res - 1)
    view_mask = frags.mask
    if erode:  # pixels at a silhouette mix object and background: do not bake from them
        view_mask = -F.max_pool2d(-view_mask.float()[:, None], 2 * erode + 1, 1, erode)[:, 0] > 0.5
    vis = torch.zeros(n_views, size * size)
    tol = 0.01  # the mesh is normalised to radius 1
    texel_face = texels.face[0].reshape(-1)
    for i in range(n_views):
        z = frags.depth[i][pyc[i], pxc[i]]
        f = frags.face[i][pyc[i], pxc[i]]
        seen = inside[i] & mask.reshape(-1) & view_mask[i][pyc[i], pxc[i]] & \
            (((w[i] - z).abs() < tol) | (f == texel_face))
        ray = F.normalize(cameras.positions[i][None] - flat, dim=-1)
        cos = (normals.reshape(-1, 3) * ray).sum(-1).abs()
        vis[i] = torch.where(seen & (cos > 0.05), cos, torch.zeros_like(cos))
    return vis.view(n_views, size, size), grid.view(n_views, size, size, 2)


def build_scene(mesh: Mesh, cameras: Cameras, resolution: int, texture_size: int, *,
                near_far: tuple[float, float] | None = None, texels: Fragments | None = None,
                inside_mask: torch.Tensor | None = None) -> Scene:
    """Per-view geometry of a normalised mesh with UVs; depth is normalised with ``near_far`` when
    given (extra views share the first views' range), else with this set's own."""
    frags = rasterize(cameras, mesh.vertices, mesh.faces, resolution)
    mask = frags.mask
    normals = mesh.face_normals()[frags.face.clamp_min(0)]  # (N, R, R, 3)
    points = frags.interpolate(mesh.vertices, mesh.faces)
    rays = F.normalize(cameras.positions[:, None, None] - points, dim=-1)
    cos = (normals * rays).sum(-1).abs() * mask
    if near_far is None:
        d = frags.depth[mask]
        near_far = (float(d.min()), float(d.max())) if d.numel() else (0.0, 1.0)
    near, far = near_far
    control = torch.where(mask, (1.0 - (frags.depth - near) / max(far - near, 1e-6) * 0.9).clamp(0.05, 1.0),
                          torch.zeros(()))
    shading = torch.where(mask, 0.25 + 0.6 * cos, torch.full((), 0.5))
    if texels is None:
        inside = rasterize_uv(mesh.uv, mesh.faces, texture_size)
        texels, texel_mask = gutter(inside, mesh.uv, mesh.faces), inside.mask[0]
    else:
        texel_mask = inside_mask if inside_mask is not None else texels.mask[0]
    vis, grid = texel_visibility(mesh, cameras, frags, texels)
    return Scene(mesh, cameras, frags, cos, control[:, None].repeat(1, 3, 1, 1), shading[:, None].repeat(1, 3, 1, 1),
                 frags.interpolate(mesh.uv, mesh.faces), texels, texel_mask, vis, grid, near_far)


def fill_cameras(scene: Scene, painted: torch.Tensor, count: int, *, candidates: int = 96,
                 target: float = 0.995, size: int = 128) -> Cameras | None:
    """Up to ``count`` extra viewpoints, chosen greedily from ``candidates`` spread over the upper
    sphere, each the one that sees the most still-unpainted surface (weighted by cos²); stops once
    ``target`` of the reasonably visible texels are painted. None when nothing is worth a view."""
    if count <= 0:
        return None
    mesh = scene.mesh
    cams = sphere(torch.zeros(3), 1.0, candidates, fov_y=scene.cameras.fov_y)
    texels = rasterize_uv(mesh.uv, mesh.faces, size)
    vis = torch.cat([texel_visibility(mesh, cams[list(range(i, min(i + 8, candidates)))],
                                      rasterize(cams[list(range(i, min(i + 8, candidates)))], mesh.vertices,
                                                mesh.faces, 128), texels)[0] for i in range(0, candidates, 8)])
    done = F.interpolate(painted[None, None].float(), size=(size, size), mode="nearest")[0, 0] > 0
    visible = (vis > 0).any(0)
    chosen: list[int] = []
    while len(chosen) < count:
        todo = visible & ~done
        if float(todo.sum()) <= (1 - target) * float(visible.sum()):
            break
        score = ((vis ** 2) * todo).sum((1, 2))
        best = int(score.argmax())
        if float(score[best]) <= 0:
            break
        chosen.append(best)
        done |= vis[best] > 0.2  # seen well enough by the new view
    return cams[chosen] if chosen else None


def concat_scenes(a: Scene, b: Scene) -> Scene:
    cams = Cameras(torch.cat([a.cameras.world_to_cam, b.cameras.world_to_cam]), a.cameras.fov_y,
                   a.cameras.azimuth + b.cameras.azimuth, a.cameras.elevation + b.cameras.elevation, a.cameras.near)
    frags = Fragments(*(torch.cat([x, y]) for x, y in ((a.frags.face, b.frags.face), (a.frags.bary, b.frags.bary),
                                                       (a.frags.depth, b.frags.depth))))
    cat = torch.cat
    return Scene(a.mesh, cams, frags, cat([a.cos, b.cos]), cat([a.depth_control, b.depth_control]),
                 cat([a.shading, b.shading]), cat([a.uv_pix, b.uv_pix]), a.texels, a.texel_mask,
                 cat([a.texel_vis, b.texel_vis]), cat([a.texel_xy, b.texel_xy]), a.near_far)


# ------------------------------------------------------------------------------ baking and filling
class Bake:
    """A UV texture being painted: weighted colour sum, weight, and the best cos seen per texel."""

    def __init__(self, size: int):
        self.colour = torch.zeros(3, size, size)
        self.weight = torch.zeros(size, size)
        self.best = torch.zeros(size, size)

    def add(self, image: torch.Tensor, vis: torch.Tensor, grid: torch.Tensor, only: torch.Tensor | None = None) -> None:
        """Bake ``image`` (3, R, R) through ``grid`` onto the texels with cos ``vis`` > 0."""
        colour = F.grid_sample(image[None].float(), grid[None], mode="bilinear", padding_mode="border",
                               align_corners=False)[0]
        w = vis ** 4
        if only is not None:
            w = w * only
        self.colour += colour * w
        self.weight += w
        self.best = torch.maximum(self.best, vis * (w > 0))

    @property
    def seen(self) -> torch.Tensor:
        return self.weight > 0

    def current(self, background: float = 0.5) -> torch.Tensor:
        return torch.where(self.seen, self.colour / self.weight.clamp_min(1e-12), torch.full((), background))


def gutter(texels: Fragments, uv: torch.Tensor, faces: torch.Tensor, rings: int = 2) -> Fragments:
    """The UV layout grown by ``rings`` texels around every island: each outside texel next to an island
    takes a neighbouring texel's triangle and its (extrapolated) barycentrics there, so it is baked from
    the views like its neighbours. Bilinear sampling and mip levels near island borders then read the
    surface's own colours, not a fill."""
    face, bary = texels.face[0].clone(), texels.bary[0].clone()
    size = face.shape[-1]
    ys, xs = torch.meshgrid(torch.arange(size, dtype=uv.dtype), torch.arange(size, dtype=uv.dtype), indexing="ij")
    centre = torch.stack([(xs + 0.5) / size, 1 - (ys + 0.5) / size], -1)  # texel centres in UV
    for _ in range(rings):
        taken = face >= 0
        # any neighbour's triangle: max over the 3x3 window of face ids (−1 where none)
        near = F.max_pool2d(face[None, None].float(), 3, 1, 1)[0, 0].long()
        grow = ~taken & (near >= 0)
        if not bool(grow.any()):
            break
        f = near[grow]
        a, b, c = uv[faces[f, 0]], uv[faces[f, 1]], uv[faces[f, 2]]
        p = centre[grow]
        v0, v1, v2 = b - a, c - a, p - a
        den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
        ok = den.abs() > 1e-12
        l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / torch.where(ok, den, torch.ones_like(den))
        l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / torch.where(ok, den, torch.ones_like(den))
        lam = torch.stack([1 - l1 - l2, l1, l2], -1)
        idx = torch.nonzero(grow)
        idx, f, lam = idx[ok], f[ok], lam[ok]
        face[idx[:, 0], idx[:, 1]] = f
        bary[idx[:, 0], idx[:, 1]] = lam
    return Fragments(face[None], bary[None], texels.depth)


def push_pull(colour: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Fill the texels where ``known`` is false from the known ones (C, T, T): average down a pyramid,
    then fill each level's holes from the next coarser one. Smooth, fast, and it pads UV islands."""
    c, w = colour * known, known.float()
    levels = [(c, w)]
    while min(c.shape[-2:]) > 1:
        c = F.avg_pool2d(c[None], 2, ceil_mode=True)[0] * 4
        w = F.avg_pool2d(w[None, None], 2, ceil_mode=True)[0, 0] * 4
        levels.append((c, w))
    c, w = levels[-1]
    filled = c / w.clamp_min(1e-12)
    for c, w in reversed(levels[:-1]):
        up = F.interpolate(filled[None], size=c.shape[-2:], mode="bilinear", align_corners=False)[0]
        filled = torch.where(w > 0, c / w.clamp_min(1e-12), up)
    return torch.where(known, colour, filled)


# ---------------------------------------------------------------------------------------- helpers
def use_depth(models: Models, req: TextureRequest) -> bool:
    """Whether views are conditioned by the depth ControlNet (else image-to-image from the shading)."""
    return models.controlnet is not None and req.conditioning != "img2img"


def _stack(conds: list[Conditioning]) -> Conditioning:
    """One conditioning for a batch made of single-image conditionings (per-view prompts, controls)."""
    first = conds[0]
    cat = lambda xs: torch.cat(xs) if xs[0] is not None else None  # noqa: E731
    return Conditioning(cat([c.positive for c in conds]), cat([c.negative for c in conds]), first.guidance,
                        {k: torch.cat([c.added_positive[k] for c in conds]) for k in first.added_positive},
                        {k: torch.cat([c.added_negative[k] for c in conds]) for k in first.added_negative},
                        cat([c.control for c in conds]), first.control_scale)


def _latent_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """A pixel mask (N, R, R) as a latent mask (N, 1, r, r): a latent is masked when most of its
    pixels are (area average ≥ ½)."""
    return (F.avg_pool2d(mask.float()[:, None], factor) >= 0.5).float()


def _psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    mse = (((a - b) ** 2).mean(0))[mask].mean().item() if bool(mask.any()) else float("nan")
    return float("inf") if mse == 0 else -10 * math.log10(max(mse, 1e-12))


# ------------------------------------------------------------------------------------- projection
def _conditioning(models: Models, req: TextureRequest, scene: Scene, i: int, resolution: int,
                  cache: dict[str, Any], prompt: str | None = None, inpaint: Inpaint | None = None) -> Conditioning:
    prompt = req.prompt if prompt is None else prompt
    prompt = view_prompt(prompt, scene.cameras.azimuth[i], scene.cameras.elevation[i]) if req.view_prompts else prompt
    if prompt not in cache:
        cache[prompt] = text.encode_pair(models, prompt, req.negative)
    positive, negative = cache[prompt]
    control = scene.depth_control[i:i + 1] if use_depth(models, req) else None
    return make_conditioning(models, positive, negative, 1, req.guidance, width=resolution, height=resolution,
                             control=control, control_scale=req.control_scale, inpaint=inpaint)


REGION_MIN_SHARE = 0.01  # a slot takes part in a view's regional prompt when it covers this share of the mesh there


def view_regions(models: Models, req: TextureRequest, scene: Scene, i: int, resolution: int, prompts: list[str],
                 denoiser: Denoiser, cache: dict[str, Any], inpaint: Inpaint | None = None
                 ) -> tuple[Any, Conditioning]:
    """View ``i``'s denoiser and conditioning with a prompt per material slot (``prompts`` by ``Mesh.groups``
    index): the slots it sees, each where its faces are (``core/regions.py``); the background follows them all
    equally. One slot in view: a plain denoiser with that slot's prompt."""
    from ..core.regions import RegionalDenoiser

    face = scene.frags.face[i]
    on_mesh = face >= 0
    group = torch.where(on_mesh, scene.mesh.face_group[face.clamp_min(0)], torch.full_like(face, -1))
    share = torch.bincount(group[on_mesh], minlength=len(prompts)).float() / on_mesh.sum().clamp_min(1)
    present = [k for k in range(len(prompts)) if share[k] >= REGION_MIN_SHARE] or [int(share.argmax())]
    conds = [_conditioning(models, req, scene, i, resolution, cache, prompts[k], inpaint) for k in present]
    if len(present) == 1:
        return denoiser, conds[0]
    onehot = torch.stack([(group == k) for k in present]).float()
    onehot[:, ~on_mesh] = 1.0 / len(present)
    onehot = onehot / onehot.sum(0, keepdim=True).clamp_min(1e-6)  # pixels of slots left out follow the rest
    masks = F.avg_pool2d(onehot[:, None], models.vae_scale_factor).to(models.device)
    return RegionalDenoiser(denoiser, conds, masks), conds[0]


def project_sequential(models: Models, req: TextureRequest, scene: Scene, resolution: int, seed: int,
                       on_view: OnView | None, *, bake: Bake | None = None, start: int = 0,
                       total: int | None = None, prompts: list[str] | None = None,
                       only: list[int] | None = None) -> tuple[Bake, list[torch.Tensor]]:
    """Generate views ``start``.. of ``scene`` (those in ``only``, when given) in turn into ``bake`` (a new one by
    default); with ``prompts`` (one per material slot), each slot's pixels follow its own prompt
    (``view_regions``)."""
    f = models.vae_scale_factor
    denoiser = Denoiser(models, fast=req.fast)
    bake = bake if bake is not None else Bake(req.texture_size)
    texts: dict[str, Any] = {}
    images: list[torch.Tensor] = []
    use_control = use_depth(models, req)
    for n, i in enumerate(i for i in range(start, len(scene.cameras)) if only is None or i in only):
        g = torch.Generator("cpu").manual_seed(seed + i)
        scheduler = make_scheduler(req.scheduler, models.scheduler_config)
        mask = scene.frags.mask[i]
        cur = scene.cos[i]
        # what earlier views painted, seen from here
        known_cos = F.grid_sample(bake.best[None, None], scene.uv_pix[i:i + 1] * torch.tensor([2.0, -2.0]) +
                                  torch.tensor([-1.0, 1.0]), mode="nearest", align_corners=False)[0, 0] * mask
        rendered = sample_texture(bake.current(), scene.uv_pix[i:i + 1], mask[None])[0]
        keep = mask & (known_cos > 0) & (known_cos >= req.keep_threshold * cur)
        refine = mask & (known_cos > 0) & ~keep
        painted = keep | refine
        # starting image: the partial texture where painted, the grey shading elsewhere
        base = torch.where(painted[None], rendered, scene.shading[i])
        strength = 1.0 if use_control else req.img2img_strength
        timesteps, _ = timesteps_for(scheduler, req.steps, models.device, strength=strength,
                                     field="img2img_strength")
        shape = (1, latent_space.latent_channels(models), resolution // f, resolution // f)
        noise = torch.randn(shape, generator=g).to(models.device, models.dtype)
        z_known = latent_space.encode(models, base[None].to(models.device), [g]) if (painted.any() or not use_control) \
            else None
        if strength < 1.0:
            x = scheduler.add_noise(z_known, noise, timesteps[:1])
        else:
            x = noise * scheduler.init_noise_sigma
        m_keep = _latent_mask(keep[None], f).to(models.device, models.dtype)
        m_refine = _latent_mask(refine[None], f).to(models.device, models.dtype)
        hold_refine = int(round(req.refine_until * len(timesteps)))
        inpaint = repainting.view_inpaint(models, base, keep, g)  # an inpainting U-Net: paint all but keep

        def post_step(k: int, x: torch.Tensor, z_known=z_known, m_keep=m_keep, m_refine=m_refine,
                      timesteps=timesteps, scheduler=scheduler, noise=noise, hold=hold_refine) -> torch.Tensor:
            if z_known is None:
                return x
            m = m_keep + (m_refine if k + 1 < hold else 0) * (1 - m_keep)
            if not bool(m.any()):
                return x
            target = scheduler.add_noise(z_known, noise, timesteps[k + 1:k + 2]) if k + 1 < len(timesteps) \
                else z_known
            return m * target + (1 - m) * x

        def on_step(info: StepInfo, i=i if only is None else start + n) -> None:
            if on_view is not None:
                on_view(ViewInfo(i, total or len(scene.cameras), info))

        if prompts:
            view_denoiser, cond = view_regions(models, req, scene, i, resolution, prompts, denoiser, texts, inpaint)
        else:
            view_denoiser, cond = denoiser, _conditioning(models, req, scene, i, resolution, texts, inpaint=inpaint)
        x = sample(view_denoiser, scheduler, x, cond, timesteps,
                   generator=[g] if takes_generator(scheduler) else None, on_step=on_step, post_step=post_step)
        image = latent_space.decode(models, x)[0].cpu()
        image = torch.where(keep[None], rendered, image)  # kept pixels are exactly what was there
        images.append(image)
        # bake what this view painted: everything it sees, except what it was told to keep
        texel_keep = bake.best >= req.keep_threshold * scene.texel_vis[i]
        bake.add(image, scene.texel_vis[i], scene.texel_xy[i], only=(~(texel_keep & bake.seen)).float())
    return bake, images


def project_sync(models: Models, req: TextureRequest, scene: Scene, resolution: int, seed: int,
                 on_view: OnView | None) -> tuple[Bake, list[torch.Tensor]]:
    """All views at once; latents synchronised through a shared UV latent texture after every step."""
    f = models.vae_scale_factor
    r = resolution // f
    n = len(scene.cameras)
    size = 2 * r  # latent texture
    texels = rasterize_uv(scene.mesh.uv, scene.mesh.faces, size)
    frags_l = rasterize(scene.cameras, scene.mesh.vertices, scene.mesh.faces, r)
    vis, grid = texel_visibility(scene.mesh, scene.cameras, frags_l, texels, erode=0)
    best = vis.argmax(0)  # (size, size) the view that owns each texel
    owned = vis.max(0).values > 0
    # texel -> its owner's latent pixel (nearest)
    gx = ((grid[..., 0] + 1) * r / 2 - 0.5).round().long().clamp(0, r - 1)
    gy = ((grid[..., 1] + 1) * r / 2 - 0.5).round().long().clamp(0, r - 1)
    tv = torch.nonzero(owned)
    owner = best[tv[:, 0], tv[:, 1]]
    src = owner * r * r + gy[owner, tv[:, 0], tv[:, 1]] * r + gx[owner, tv[:, 0], tv[:, 1]]
    # view pixel -> its texel (nearest), when that texel is owned
    uv_l = frags_l.interpolate(scene.mesh.uv, scene.mesh.faces)
    tx = (uv_l[..., 0] * size).floor().long().clamp(0, size - 1)
    ty = ((1 - uv_l[..., 1]) * size).floor().long().clamp(0, size - 1)
    pix_ok = frags_l.mask & owned[ty, tx]
    texel_index = torch.full((size, size), -1, dtype=torch.long)
    texel_index[tv[:, 0], tv[:, 1]] = torch.arange(len(tv))
    dst = torch.nonzero(pix_ok.reshape(-1))[:, 0]
    dst_texel = texel_index[ty.reshape(-1)[dst], tx.reshape(-1)[dst]]

    def sync(x: torch.Tensor) -> torch.Tensor:
        flat = x.permute(1, 0, 2, 3).reshape(x.shape[1], -1)  # (C, N*r*r)
        shared = flat[:, src]  # (C, texels): each texel's latent from its owner
        flat = flat.clone()
        flat[:, dst] = shared[:, dst_texel]
        return flat.reshape(x.shape[1], n, r, r).permute(1, 0, 2, 3).contiguous()

    g = torch.Generator("cpu").manual_seed(seed)
    scheduler = make_scheduler(req.scheduler, models.scheduler_config)
    timesteps, _ = timesteps_for(scheduler, req.steps, models.device)
    shape = (n, latent_space.latent_channels(models), r, r)
    x = sync(torch.randn(shape, generator=g)).to(models.device, models.dtype) * scheduler.init_noise_sigma
    texts: dict[str, Any] = {}
    use_control = use_depth(models, req)
    if not use_control:  # no depth conditioning: start every view from its shading, noised
        strength = req.img2img_strength
        timesteps, _ = timesteps_for(scheduler, req.steps, models.device, strength=strength,
                                     field="img2img_strength")
        z = latent_space.encode(models, scene.shading.to(models.device), [g] * n)
        x = sync(scheduler.add_noise(z, x / scheduler.init_noise_sigma, timesteps[:1].repeat(n)))
    cond = _stack([_conditioning(models, req, scene, i, resolution, texts) for i in range(n)])

    def on_step(info: StepInfo) -> None:
        if on_view is not None:
            on_view(ViewInfo(0, 1, info))

    x = sample(Denoiser(models, fast=req.fast), scheduler, x, cond, timesteps, generator=None, on_step=on_step,
               post_step=lambda k, x: sync(x))
    images = [im.cpu() for im in latent_space.decode(models, x)]
    bake = Bake(req.texture_size)
    for i, image in enumerate(images):
        bake.add(image, scene.texel_vis[i], scene.texel_xy[i])
    return bake, images


def texture_projection(req: TextureRequest, models: Models, mesh: Mesh, seed: int,
                       on_view: OnView | None = None) -> TextureResult:
    resolution = req.resolution or native_size(models)
    warnings = list(mesh.warnings)
    if not use_depth(models, req) and req.conditioning == "auto":
        warnings.append(f"bundle {models.bundle.name} has no depth ControlNet: views are image-to-image from the "
                        f"mesh's shading (strength {req.img2img_strength}), so they follow its geometry loosely")
    slots = slot_prompts(req, mesh, seed)
    prompts = [slot.prompt for slot in slots] if slots else None
    if prompts and req.variant == "sync":
        warnings.append("the sync variant paints one prompt over every slot; the sequential variant gives each slot "
                        "its own")
        prompts = None
    redo = repainting.load(req, mesh) if req.repaint else None
    started = time.perf_counter()
    normalised = ensure_uv(mesh, req.texture_size).normalised()
    warnings += [w for w in normalised.warnings if w not in warnings]
    cameras = rig(torch.zeros(3), 1.0, req.views, elevations=req.elevations, top=req.top)
    scene = build_scene(normalised, cameras, resolution, req.texture_size)
    only = None
    if redo is not None:
        only = repainting.views_needed(scene.texel_vis, redo)
        bake = Bake(req.texture_size)
        repainting.start(bake, redo)
    if req.variant == "sync":
        bake, images = project_sync(models, req, scene, resolution, seed, on_view)
    else:
        bake, images = project_sequential(models, req, scene, resolution, seed, on_view,
                                          bake=bake if redo is not None else None, prompts=prompts, only=only,
                                          total=(len(only) if only is not None else req.views) + req.fill_views)
    extra = fill_cameras(scene, bake.seen, req.fill_views)
    if extra is not None:  # views for what the rig missed (concave corners, under eaves), in turn
        done = len(scene.cameras)
        scene = concat_scenes(scene, build_scene(normalised, extra, resolution, req.texture_size,
                                                 near_far=scene.near_far, texels=scene.texels,
                                                 inside_mask=scene.texel_mask))
        bake, more = project_sequential(models, req, scene, resolution, seed, on_view, bake=bake,
                                        start=done, total=len(images) + len(scene.cameras) - done,
                                        prompts=prompts if req.variant != "sync" else None)
        images += more
    if not images:
        raise BadParameter("repaint", req.repaint, f"faces a camera sees; none of the {len(scene.cameras)} views "
                           "does: raise views or fill_views")
    colour = bake.current()
    if redo is not None:
        colour = repainting.finish(colour, redo)
    filled = push_pull(colour, bake.seen)
    texture = latent_space.tensor_to_pil(filled[None])[0]
    # how well the baked texture reproduces each generated view where the view saw the mesh
    rerender = sample_texture(filled, scene.uv_pix, scene.frags.mask)
    made = (only or []) + list(range(len(cameras), len(scene.cameras))) if only is not None else range(len(images))
    agree = [_psnr(rerender[i], image, scene.frags.mask[i] & (scene.cos[i] > 0.3)) for i, image in zip(made, images)]
    inside = scene.texel_mask
    metrics = {"views_coverage": float((bake.seen & inside).sum() / inside.sum().clamp_min(1)),
               "view_psnr_db": [round(a, 2) for a in agree], "seconds": round(time.perf_counter() - started, 2)}
    meta = _metadata(req, models, seed, resolution)
    if prompts:
        meta["slots"] = [{"name": slot.name, "prompt": slot.prompt, "prompt_from": slot.source} for slot in slots]
    if redo is not None:
        meta["repaint"] = {"texture_in": Path(req.texture_in).name, "faces_from": Path(req.repaint).name,
                           "texels": int(redo.redo.sum()), "views": len(only), "method": repainting.method(models)}
    # the mesh the texture belongs to, back in the file's units (xatlas's UVs when it had none)
    out_mesh = replace(scene.mesh, vertices=scene.mesh.vertices * mesh.radius + mesh.center, warnings=[])
    return TextureResult(texture, out_mesh, meta, latent_space.tensor_to_pil(torch.stack(images)), metrics,
                         warnings, painted=bake.seen)


def slot_prompts(req: TextureRequest, mesh: Mesh, seed: int) -> list | None:
    """Projection: a prompt per material slot (``slots.plan``) when the mesh has several named slots or a table was
    given; None for one prompt over everything (a mesh of one material, as before)."""
    from .slots import plan, with_groups

    mesh = with_groups(mesh)
    if len([g for g in mesh.groups if g]) < 2 and not (req.slots or req.slots_file):
        return None
    return plan(req, mesh, seed).slots


# --------------------------------------------------------------------------------------- material
def box_uv(mesh: Mesh, tile_size: float | torch.Tensor) -> Mesh:
    """Box projection at real scale: each triangle gets the UV plane of its dominant normal axis, in
    units of ``tile_size`` (one for all, or one per face); vertices are split per triangle so every face keeps its
    own plane."""
    n = mesh.face_normals().abs()
    axis = n.argmax(1)  # 0: x faces -> (z, y); 1: y faces (floors, roofs) -> (x, z); 2: z faces -> (x, y)
    corners = mesh.vertices[mesh.faces]  # (F, 3, 3)
    u_idx = torch.tensor([2, 0, 0])[axis]
    v_idx = torch.tensor([1, 2, 1])[axis]
    u = torch.gather(corners, 2, u_idx[:, None, None].expand(-1, 3, 1))[..., 0]
    v = torch.gather(corners, 2, v_idx[:, None, None].expand(-1, 3, 1))[..., 0]
    size = torch.as_tensor(tile_size, dtype=torch.float32)
    uv = torch.stack([u, v], -1) / (size[:, None, None] if size.ndim else size)
    faces = torch.arange(len(mesh.faces) * 3).view(-1, 3)
    return replace(mesh, vertices=corners.reshape(-1, 3), faces=faces, uv=uv.reshape(-1, 2).float())


def texture_material(req: TextureRequest, models: Models, mesh: Mesh, seed: int,
                     on_view: OnView | None = None) -> TextureResult:
    """A seamless tile per material slot (``slots.plan``), each box-mapped at its own real size, with its normal,
    roughness and height maps predicted from the colour (``core/maps.py``)."""
    from .slots import SlotTile, plan, with_groups

    resolution = req.resolution or native_size(models)
    mesh = with_groups(mesh)
    chosen = plan(req, mesh, seed)
    todo = chosen.todo
    started = time.perf_counter()
    tiles = []
    for i, slot in enumerate(todo):
        image_req = ImageRequest(prompt=slot.prompt, negative=req.negative, bundle=req.bundle, seed=slot.seed,
                                 steps=req.steps, guidance=req.guidance, width=resolution, height=resolution,
                                 scheduler=req.scheduler, seamless="xy", fast=req.fast, loras=req.loras)

        def on_step(info: StepInfo, i=i) -> None:
            if on_view is not None:
                on_view(ViewInfo(i, len(todo), info, slot.label))

        tile = generate(image_req, models, on_step=on_step)[0].image
        tiles.append(SlotTile(slot, tile, pbr_maps(tile) if req.maps else {}))
    extent = (mesh.vertices.max(0).values - mesh.vertices.min(0).values).max().item()
    warnings = list(mesh.warnings) + chosen.notes
    smallest = min(s.tile_size for s in todo)
    if extent / smallest > 500:
        warnings.append(f"the mesh spans {extent:.3g} units, {extent / smallest:.0f} tiles of {smallest} m: "
                        "is it in millimetres? (glTF units are metres)")
    sizes = torch.tensor([s.tile_size for s in chosen.slots])[mesh.face_group]
    meta = _metadata(req, models, seed, resolution)
    meta["slots"] = [slot_record(t.slot) for t in tiles]
    metrics = {"seconds": round(time.perf_counter() - started, 2), "tiles_across": round(extent / todo[0].tile_size, 2),
               "slots": len(todo)}
    return TextureResult(tiles[0].tile, box_uv(mesh, sizes), meta, [], metrics, warnings, slots=tiles,
                         all_slots=chosen.slots)


def slot_record(slot) -> dict[str, Any]:
    """A slot's provenance: what it was called, what it was asked for and why, at what size and seed."""
    return {"name": slot.name, "prompt": slot.prompt, "prompt_from": slot.source, "tile_size": slot.tile_size,
            "tile_size_from": slot.tile_source, "seed": slot.seed, "faces": slot.faces}


def pbr_maps(tile: Image.Image) -> dict[str, Image.Image]:
    """Normal (tangent space, OpenGL +Y), roughness and height maps of a colour tile, predicted by the map network
    shipped with the embedded bundle; they tile as the colour does."""
    import numpy as np

    from ..core.maps import predict_maps

    maps = predict_maps(np.asarray(tile.convert("RGB")))
    grey = {k: Image.fromarray((np.clip(maps[k], 0, 1) * 255 + 0.5).astype(np.uint8), "L")
            for k in ("roughness", "height")}
    return {"normal": Image.fromarray(maps["normal"], "RGB"), **grey}


# -------------------------------------------------------------------------------------------- sds
def texture_sds(req: TextureRequest, models: Models, mesh: Mesh, seed: int,
                on_view: OnView | None = None) -> TextureResult:
    """Score-distillation texturing (``sds_texture.py``); progress goes out as view 0 of 1, one "step"
    per iteration."""
    from .sds import SDSConfig
    from .sds_texture import sds_texture

    def on_iter(i: int, total: int, loss: float) -> None:
        if on_view is not None:
            on_view(ViewInfo(0, 1, StepInfo(step=i, total=total, t=loss, latents=torch.empty(0))))

    resolution = req.resolution or 128
    normalised = ensure_uv(mesh, req.texture_size)  # once: the texture belongs to these UVs
    with torch.enable_grad():  # texture() runs heads under no_grad; SDS needs the graph to the texture
        tex, stats = sds_texture(models, normalised, req.prompt, req.negative, iters=req.iters,
                                 resolution=resolution, texture_size=req.texture_size, lr=req.lr, seed=seed,
                                 cfg=SDSConfig(guidance=req.guidance), view_prompts=req.view_prompts,
                                 state_path=Path(req.state) if req.state else None, on_iter=on_iter)
    meta = _metadata(req, models, seed, resolution)
    meta.update(iters=req.iters, lr=req.lr, texture_size=req.texture_size)
    return TextureResult(latent_space.tensor_to_pil(tex[None])[0], replace(normalised, warnings=[]), meta, [],
                         stats, list(normalised.warnings))


# ------------------------------------------------------------------------------------------ entry
def _metadata(req: TextureRequest, models: Models, seed: int, resolution: int) -> dict[str, Any]:
    meta = {"prompt": req.prompt, "negative": req.negative, "seed": seed, "mode": req.mode,
            "bundle": models.bundle.name, "bundle_hash": models.bundle.identity(), "scheduler": req.scheduler,
            "steps": req.steps, "guidance": req.guidance, "resolution": resolution, "mesh": Path(req.mesh).name,
            "device": str(models.device), "dtype": str(models.dtype).replace("torch.", ""),
            "sfumato_version": version(), "head": "texture"}
    meta["fast"] = req.fast
    if req.mode != "sds":  # score distillation runs its own plain denoiser
        meta.update(Denoiser(models, fast=req.fast).provenance())
    elif models.extras.get("lora_provenance"):
        meta["loras"] = models.extras["lora_provenance"]
    if req.mode == "projection":
        meta.update(variant=req.variant, views=req.views, fill_views=req.fill_views, texture_size=req.texture_size,
                    conditioning="depth-controlnet" if use_depth(models, req) else "img2img-shading",
                    view_prompts=req.view_prompts)
    else:
        meta.update(tile_size=req.tile_size, seamless="xy", maps=req.maps)
    return meta


def texture(req: TextureRequest, models: Models, *, on_view: OnView | None = None,
            mesh: Mesh | None = None) -> TextureResult:
    """Run a request (checked once, where it starts: a job's door or here) on loaded models (load the ControlNet too
    when the bundle has one)."""
    req = ensure_checked(req, models.bundle)
    lora.apply(models, req.loras)
    seed = req.seed
    mesh = mesh if mesh is not None else load_mesh(req.mesh, max_faces=req.max_faces)
    mesh = check(mesh, req.mesh)
    run = {"material": texture_material, "sds": texture_sds}.get(req.mode, texture_projection)
    with torch.no_grad():
        return run(req, models, mesh, seed, on_view)


def save_result(result: TextureResult, output: Path) -> dict[str, Any]:
    """``out.glb`` with the texture embedded, ``out.png`` beside it (provenance in its text chunk) and
    ``out.json`` (provenance, metrics, warnings). Material mode writes each slot's tile and maps (``out_normal.png``,
    ``out_roughness.png``, ``out_height.png``; ``out.00-Brick_facade.png``, ... when the mesh has several slots) and
    a GLB whose every slot is a PBR material. Returns the paths written."""
    import json

    from ..core.provenance import atomic_write, save_png
    from .mesh import save_glb, save_slots_glb

    output = Path(output)
    paths: dict[str, Any] = {}
    if result.slots:
        several = len(result.all_slots) > 1
        records = []
        for t in result.slots:
            stem = output.stem + (f".{file_label(t.slot.name, t.slot.index)}" if several else "")
            meta = {**result.metadata, "prompt": t.slot.prompt, "seed": t.slot.seed, "tile_size": t.slot.tile_size,
                    "slot": t.slot.name}
            meta.pop("slots", None)
            files = {"texture": str(save_png(t.tile, output.with_name(stem + ".png"), meta))}
            for kind, image in t.maps.items():
                files[kind] = str(save_png(image, output.with_name(f"{stem}_{kind}.png"), {**meta, "map": kind}))
            records.append({**slot_record(t.slot), **files})
        glb = save_slots_glb(result.mesh, result.all_slots, result.slots, output, result.metadata)
        png = records[0]["texture"]
        paths["slots"] = records
    else:
        png = str(save_png(result.texture, output.with_suffix(".png"), result.metadata))
        glb = save_glb(result.mesh, result.texture, output, result.metadata)
    sidecar = {"metadata": result.metadata, "metrics": result.metrics, "warnings": result.warnings}
    if result.slots:
        sidecar["slots"] = paths["slots"]
    js = atomic_write(output.with_suffix(".json"),
                      lambda tmp: Path(tmp).write_text(json.dumps(sidecar, indent=2, default=str)))
    return {"glb": str(glb), "texture": str(png), "sidecar": str(js), **paths}
