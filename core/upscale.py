"""Upscaling for presentation boards: tiled image-to-image with the job's own bundle.

The main path, ``upscale``, is a short story:

1. plan, from the input's header alone (before any model loads): the result's size (at most
   ``schema.MAX_UPSCALE_SIDE`` a side) and the tiles that cover it;
2. the first pass: the input resized to the result's size, bicubic, or through a super-resolution network
   (``sr_model``, loaded with spandrel when it is installed);
3. each tile of the first pass re-run through image-to-image (``image.start_latents`` + the shared loop) at a
   low strength, with its own seed ``seed + i``, so the bundle adds detail where the resize only smoothed;
4. the tiles blended with raised-cosine weights over their overlaps (``axis_weights``): along each axis
   neighbouring weights are cos² and sin² of the same ramp, so they sum to 1 and no seam shows;
5. back-projection (Irani & Peleg 1991), weighted by ``fidelity``: the result shrunk to the input's size is
   compared with the input and the difference, enlarged, is added back, so colours and shapes stay the input's
   while the detail the tiles drew above the input's resolution stays theirs;
6. provenance: the input's kept, with an ``upscale`` record added (a file without one starts a new record).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import latents as latent_space
from . import lora, text
from .denoiser import Denoiser, make_conditioning
from .errors import BadParameter
from .schema import MAX_SEED, MAX_UPSCALE_SIDE, UpscaleRequest

NEUTRAL_PROMPT = "highly detailed, sharp focus, fine texture"  # an input without a prompt of its own
MIN_SIDE = 32  # input pixels a side: less has nothing to upscale from
SPANDREL = "pip install spandrel"


# ---- 1. the plan -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    source: tuple[int, int]  # (width, height) of the input
    size: tuple[int, int]  # (width, height) of the result
    xs: list[tuple[int, np.ndarray]]  # tile columns: (left, weights (tile_w,))
    ys: list[tuple[int, np.ndarray]]  # tile rows: (top, weights (tile_h,))

    @property
    def tiles(self) -> int:
        return len(self.xs) * len(self.ys)


def plan(req: UpscaleRequest, native: int) -> Plan:
    """The result's size and tiles from the input's header; refuses a result over ``MAX_UPSCALE_SIDE`` a side, an
    input under ``MIN_SIDE`` a side and a tile smaller than the bundle's ``native`` size, before any model loads."""
    from .image import check_image_file

    check_image_file("image", req.image)  # a bomb or a file that is not an image: refused from its header
    with Image.open(req.image) as im:  # the header only
        w, h = im.size
    W, H = w * req.scale, h * req.scale
    if max(W, H) > MAX_UPSCALE_SIDE:
        raise BadParameter("scale", req.scale, f"a result of at most {MAX_UPSCALE_SIDE} pixels a side: {w}x{h} times "
                           f"{req.scale} would be {W}x{H}, about {W * H * 3 / 2**30:.1f} GiB of pixels, more than a "
                           "board needs or Blender opens comfortably; use a smaller scale, or crop the image first")
    if min(w, h) < MIN_SIDE:
        raise BadParameter("image", req.image, f"an image at least {MIN_SIDE} pixels a side (this one is {w}x{h})")
    if req.tile < native:
        raise BadParameter("tile", req.tile, f"at least the bundle's native size, {native} px: a smaller tile sees "
                           "too little of the picture for the bundle to add detail that fits")
    return Plan((w, h), (W, H), axis_weights(W, req.tile, req.overlap), axis_weights(H, req.tile, req.overlap))


def axis_weights(length: int, tile: int, overlap: int) -> list[tuple[int, np.ndarray]]:
    """Tiles along one axis of ``length`` pixels: (start, weights) per tile, the tile side ``min(tile, length)``
    rounded down to a multiple of 8 (the VAE's), spread evenly so that neighbours share at least ``overlap``.

    Where a tile and its right neighbour share s pixels, a ramp of m = min(s, side - s) pixels sits in the middle
    of the shared span; over its pixels j = 0..m-1 the tile's weight falls as cos²(π/2 · (j + ½)/m) while the
    neighbour's rises as sin²(...), so the two sum to 1 and change smoothly (at most π/2m a pixel). Keeping m at most
    side - s keeps a tile's two ramps apart, so along the axis the weights sum to exactly 1."""
    side = min(tile, length) // 8 * 8
    count = 1 if side >= length else math.ceil((length - overlap) / max(side - overlap, 1))
    starts = [round(i * (length - side) / max(count - 1, 1)) for i in range(count)]
    weights = [np.ones(side, np.float64) for _ in starts]
    for i in range(count - 1):  # the boundary between tile i and tile i + 1
        shared = starts[i] + side - starts[i + 1]
        if shared <= 0:  # overlap 0: the tiles abut, nothing to blend
            continue
        m = max(1, min(shared, side - shared))
        ramp = np.sin(np.pi / 2 * (np.arange(m) + 0.5) / m) ** 2  # rising, (m,)
        r0 = starts[i + 1] + (shared - m) // 2  # where the ramp begins, in the axis' pixels
        left, right = r0 - starts[i], r0 - starts[i + 1]  # ... in each tile's own pixels
        weights[i][left:left + m] *= 1 - ramp
        weights[i][left + m:] = 0
        weights[i + 1][right:right + m] *= ramp
        weights[i + 1][:right] = 0
    return list(zip(starts, weights))


# ---- 2. the first pass -----------------------------------------------------------------------------------
def load_sr(path: str, device: torch.device) -> Any:
    """The super-resolution network at ``path`` through spandrel (an ``ImageModelDescriptor``); a
    ``BadParameter`` on ``sr_model`` when spandrel is not installed (saying how to install it) or cannot place the
    file. Called before the bundle loads, so a bad file costs nothing."""
    try:
        import spandrel
    except ImportError:
        raise BadParameter("sr_model", path, f"a super-resolution network needs spandrel, which is not installed: "
                           f"{SPANDREL} (or leave sr_model out for a bicubic first pass)") from None
    try:
        model = spandrel.ModelLoader(device=device).load_from_file(path)
    except Exception as exc:  # spandrel raises its own kinds for a file it cannot place; each is a bad file here
        raise BadParameter("sr_model", path, f"a super-resolution network spandrel can load ({exc})") from None
    if not isinstance(model, spandrel.ImageModelDescriptor):
        raise BadParameter("sr_model", path, "a super-resolution network (this file is an inpainting or "
                           "restoration model)")
    return model.eval()


def first_pass(image: Image.Image, size: tuple[int, int], sr: Any = None) -> Image.Image:
    """``image`` (RGB) at ``size``: bicubic, or the network ``sr`` (``load_sr``) with its output resized to exactly
    ``size`` (a 4x network asked for 2x is brought down with Lanczos)."""
    if sr is None:
        return image.resize(size, Image.BICUBIC)
    x = latent_space.pil_to_tensor(image, *image.size).to(sr.device)  # (1, 3, h, w) in [0, 1]
    with torch.no_grad():
        out = latent_space.tensor_to_pil(sr(x))[0]
    return out if out.size == size else out.resize(size, Image.LANCZOS)


# ---- 3-4. tiles, blended ---------------------------------------------------------------------------------
TileEvent = Callable[[int, int], None]  # (tile index, tiles)


def render_tiles(req: UpscaleRequest, models: Any, base: Image.Image, layout: Plan, prompt: str, negative: str, *,
                 on_tile: TileEvent | None = None, on_step: Callable[[Any], None] | None = None) -> Image.Image:
    """Steps 3-4: every tile of ``base`` (the first pass, at the result's size) through image-to-image, blended."""
    from .image import start_latents
    from .sampling import sample, timesteps_for
    from .schedulers import make_scheduler, takes_generator

    lora.apply(models, req.loras)
    positive, negative_emb = text.encode_pair(models, prompt, negative)
    denoiser = Denoiser(models, fast=req.fast)
    pixels = np.asarray(base.convert("RGB"), np.float32) / 255.0  # (H, W, 3)
    total = np.zeros_like(pixels)
    weight = np.zeros(pixels.shape[:2], np.float32)
    f = models.vae_scale_factor
    index = 0
    for y0, wy in layout.ys:
        for x0, wx in layout.xs:
            if on_tile is not None:
                on_tile(index, layout.tiles)
            th, tw = len(wy), len(wx)
            crop = torch.from_numpy(pixels[y0:y0 + th, x0:x0 + tw]).permute(2, 0, 1)[None]  # (1, 3, th, tw)
            generators = [torch.Generator("cpu").manual_seed((req.seed + index) % (MAX_SEED + 1))]
            scheduler = make_scheduler(req.scheduler, models.scheduler_config)
            timesteps, _ = timesteps_for(scheduler, req.steps, models.device, strength=req.strength)
            cond = make_conditioning(models, positive, negative_emb, 1, req.guidance, width=tw, height=th)
            shape = (1, latent_space.latent_channels(models), th // f, tw // f)
            x = start_latents(models, scheduler, timesteps, shape, generators, crop)
            x = sample(denoiser, scheduler, x, cond, timesteps,
                       generator=generators if takes_generator(scheduler) else None, on_step=on_step)
            out = latent_space.decode(models, x, fast=denoiser.fast)[0].permute(1, 2, 0).cpu().numpy()  # (th, tw, 3)
            w2 = np.outer(wy, wx).astype(np.float32)  # (th, tw)
            total[y0:y0 + th, x0:x0 + tw] += out * w2[..., None]
            weight[y0:y0 + th, x0:x0 + tw] += w2
            index += 1
    blended = total / np.maximum(weight, 1e-6)[..., None]  # the weights sum to 1 (``axis_weights``)
    return Image.fromarray((blended.clip(0, 1) * 255).round().astype(np.uint8))


# ---- 5. back-projection -----------------------------------------------------------------------------------
def back_project(result: Image.Image, source: Image.Image, fidelity: float, rounds: int = 3) -> Image.Image:
    """``result`` (s times ``source``'s size) corrected toward ``source``: x ← x + up(y − down(x)), ``rounds``
    times, with down the mean over s × s blocks and up bicubic; then ``fidelity`` of the correction is kept
    (1: down(x) = y up to rounding, 0: ``result`` as it is)."""
    if fidelity <= 0:
        return result
    s = result.size[0] // source.size[0]
    y = np.asarray(source.convert("RGB"), np.float32)  # (h, w, 3)
    x0 = np.asarray(result.convert("RGB"), np.float32)  # (h s, w s, 3)
    x = x0.copy()
    for _ in range(rounds):
        down = x.reshape(y.shape[0], s, y.shape[1], s, 3).mean(axis=(1, 3))  # (h, w, 3)
        x += np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(c), "F").resize(result.size, Image.BICUBIC))
                       for c in (y - down).transpose(2, 0, 1)], -1)
    out = x0 + fidelity * (x - x0)
    return Image.fromarray(out.clip(0, 255).round().astype(np.uint8))


# ---- 6. provenance ---------------------------------------------------------------------------------------
def input_provenance(path: str) -> dict[str, Any]:
    """The ``sfumato`` record of a PNG made here; for a PNG of another tool, its prompt from the ``parameters``
    text (the first line); {} for anything else."""
    with Image.open(path) as im:
        chunks = dict(getattr(im, "text", {}) or {})
    try:
        meta = json.loads(chunks.get("sfumato") or "{}")
    except ValueError:
        meta = {}
    if isinstance(meta, dict) and meta:
        return meta
    first = str(chunks.get("parameters") or "").split("\n", 1)[0].strip()
    return {"prompt": first} if first else {}


def provenance(req: UpscaleRequest, models: Any, layout: Plan, found: dict[str, Any], prompt: str, negative: str,
               first: str) -> dict[str, Any]:
    """The input's provenance ``found`` with this upscale added to its ``upscale`` list; a new record for an input
    without one."""
    from .provenance import version

    record = {"scale": req.scale, "tile": req.tile, "overlap": req.overlap, "strength": req.strength,
              "fidelity": req.fidelity,
              "seed": req.seed, "steps": req.steps, "scheduler": req.scheduler, "guidance": req.guidance,
              "prompt": prompt, "negative": negative, "bundle": models.bundle.name,
              "bundle_hash": models.bundle.identity(), "source": Path(req.image).name,
              "source_size": list(layout.source), "width": layout.size[0], "height": layout.size[1],
              "tiles": layout.tiles, "first_pass": first, "device": str(models.device),
              "dtype": str(models.dtype).replace("torch.", ""), "sfumato_version": version()}
    if req.loras:
        record["loras"] = list(req.loras)
    if found.get("bundle") or found.get("seed") is not None:  # an image with a history: kept as it is, extended
        earlier = found.get("upscale")
        earlier = earlier if isinstance(earlier, list) else [earlier] if isinstance(earlier, dict) else []
        return {**found, "upscale": [*earlier, record]}
    new = {k: record[k] for k in ("prompt", "negative", "seed", "steps", "scheduler", "guidance", "bundle",
                                  "bundle_hash", "width", "height", "device", "dtype", "sfumato_version")}
    return {**new, "mode": "upscale", "strength": req.strength, "upscale": [record]}


def upscale(req: UpscaleRequest, models: Any, layout: Plan, *, sr: Any = None, on_tile: TileEvent | None = None,
            on_step: Callable[[Any], None] | None = None) -> tuple[Image.Image, dict[str, Any]]:
    """Steps 2-6 on loaded models (``sr``: the super-resolution network ``load_sr`` loaded for ``req.sr_model``):
    (the result, its provenance)."""
    from .image import open_image

    found = input_provenance(req.image)
    prompt = req.prompt or str(found.get("prompt") or "") or NEUTRAL_PROMPT
    negative = req.negative or (str(found.get("negative") or "") if not req.prompt else "")
    source = open_image("image", req.image).convert("RGB")
    if req.sr_model and sr is None:  # a Python caller that did not load it first
        sr = load_sr(req.sr_model, models.device)
    base = first_pass(source, layout.size, sr)
    image = render_tiles(req, models, base, layout, prompt, negative, on_tile=on_tile, on_step=on_step)
    image = back_project(image, source, req.fidelity)
    first = Path(req.sr_model).name if req.sr_model else "bicubic"
    return image, provenance(req, models, layout, found, prompt, negative, first)


# ---- the job ---------------------------------------------------------------------------------------------
def upscale_job(job: Any, output: Path, ctx: Any) -> dict[str, Any]:
    """Upscale ``job.request`` (an ``UpscaleRequest``) into the PNG ``output``; every refusal comes before any model
    loads, and a cancel leaves no file."""
    from .capabilities import native_size
    from .device import out_of_memory_as_error
    from .jobs import check_writable, load_models
    from .provenance import save_png

    req = job.request
    check_writable(output)
    layout = plan(req, native_size(job.bundle))
    sr = load_sr(req.sr_model, job.device) if req.sr_model else None
    steps = max(1, int(req.steps * req.strength))  # what timesteps_for runs per tile
    ctx.emit("progress", id=ctx.job_id, stage="loading", step=0, total=steps, image=0, images=layout.tiles,
             tile=0, tiles=layout.tiles, preview=None)
    models = load_models(job, ctx, need_controlnet=False)
    tile = [0]

    def on_tile(i: int, n: int) -> None:
        ctx.check_cancel()
        tile[0] = i

    def on_step(info: Any) -> None:
        ctx.check_cancel()
        ctx.emit("progress", id=ctx.job_id, stage="upscaling", step=info.step, total=info.total, image=tile[0],
                 images=layout.tiles, tile=tile[0], tiles=layout.tiles, preview=None)

    with out_of_memory_as_error(f"upscaling to {layout.size[0]}x{layout.size[1]} in tiles of {req.tile}"):
        image, meta = upscale(req, models, layout, sr=sr, on_tile=on_tile, on_step=on_step)
    ctx.check_cancel()
    ctx.keep(save_png(image, output, meta))
    return {"files": list(ctx.saved), "metadata": meta, "tiles": layout.tiles, "size": list(layout.size)}
