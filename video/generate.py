"""Looping video with the shared image denoiser: text-to-video, or a turntable of a mesh conditioned on
the exact depth of every frame of the orbit.

All N frames are one batch of latents ``x`` (N, C, h, w) that one scheduler steps together. At every
step the denoiser runs over windows of consecutive frames laid on the circle (``turntable.py``), each
window as one video call of the temporal U-Net when a motion module is attached (``temporal``) or
frame by frame otherwise, and the per-frame predictions are blended. The window starts shift by a
third of a window each step. Initial noise is consistent around the loop.

A turntable follows the mesh through the bundle's depth ControlNet when it has one (``conditioning``
"depth"); otherwise ("img2img") every frame starts from the orbit's grey shading of that frame, noised
to ``strength``, so the geometry sets the layout and the prompt the surface.

Because a turntable's geometry is known exactly, two more things tie its frames together besides frame
attention: the mesh's pixels start from noise fixed on its surface (``anchored_noise``, so a point of a
wall starts from the same noise in every frame), and ``sync`` > 0 pulls the latents of every bit of
surface toward their mean over the frames that see it, for the first ``sync_until`` of the steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image

from ..core import latents as latent_space
from ..core import lora, text
from ..core.checks import ensure_checked
from ..core.denoiser import Denoiser, make_conditioning
from ..core.errors import BadParameter
from ..core.image import native_size
from ..core.provenance import version
from ..core.sampling import StepInfo, sample, timesteps_for
from ..core.schedulers import make_scheduler, takes_generator
from ..core.schema import VideoRequest
from ..threed.mesh import Mesh
from .turntable import (circular_windows, loop_noise, orbit_cameras, orbit_views, surface_cells, surface_groups,
                        surface_noise, surface_sync, windowed)


def generate_video(models, req: VideoRequest, *, mesh: Mesh | None = None, motion=None,
                   on_step: Callable[[StepInfo], None] | None = None) -> tuple[list[Image.Image], dict[str, Any]]:
    """Frames of a looping video for ``req`` (checked once, where it starts: a job's door or here); ``mesh`` is
    ``req.mesh`` loaded (a turntable), ``motion`` a ``MotionUNet`` on ``models.unet`` (None: per-frame).
    ``req.fast``: the CPU's fast path (a bfloat16 U-Net where the CPU does bfloat16 natively, ``core/fast.py``);
    on a GPU video calls run eagerly (no CUDA graphs for video yet)."""
    req = ensure_checked(req, models.bundle)
    lora.apply(models, req.loras)
    frames, steps, seed, sync, sync_until = req.frames, req.steps, req.seed, req.sync, req.sync_until
    size = req.resolution or native_size(models)
    use_depth = mesh is not None and req.conditioning != "img2img" and models.controlnet is not None
    if mesh is not None and req.conditioning == "depth" and models.controlnet is None:
        raise BadParameter("conditioning", "depth", f"img2img or auto: bundle {models.bundle.name} has no depth "
                           "ControlNet (component controlnet_depth)")
    length = req.window or (motion.config.max_frames if motion is not None else 16)
    if motion is not None and length > motion.config.max_frames:
        raise BadParameter("window", length, f"at most the motion module's {motion.config.max_frames} frames")
    f = models.vae_scale_factor
    g = torch.Generator().manual_seed(seed)
    depth = shading = inside = cameras = None
    if mesh is not None:
        norm = mesh.normalised()
        cameras = orbit_cameras(norm, frames, elevation=req.elevation)
        depth, shading = orbit_views(norm, cameras, size)
        inside = depth[:, :1] > 0  # the mesh's silhouette per frame
        depth = depth.to(models.device) if use_depth else None
    positive, neg = text.encode_pair(models, req.prompt, req.negative)
    fast = req.fast
    if models.device.type == "cuda":
        fast = "off"  # no CUDA graphs for video yet: the calls run eagerly (and the provenance says so)
    denoiser = Denoiser(models, fast=fast)
    conds: dict[int, Any] = {}

    def cond_for(idx: torch.Tensor):
        n = len(idx)
        if n not in conds:
            conds[n] = make_conditioning(models, positive, neg, n, req.guidance, width=size, height=size,
                                         control_scale=req.control_scale)
        c = conds[n]
        return replace(c, control=depth[idx.to(depth.device)].to(models.dtype)) if depth is not None else c

    sched = make_scheduler(req.scheduler, models.scheduler_config, beta_schedule=req.beta_schedule)
    channels = latent_space.latent_channels(models)
    noise = loop_noise(frames, (channels, size // f, size // f), g)
    cells = surface_cells(norm, cameras, size // f) if mesh is not None and (req.anchored_noise or sync > 0) else None
    if req.anchored_noise and cells is not None:  # the mesh's pixels start from noise fixed on its surface
        noise = torch.where((cells >= 0)[:, None], surface_noise(cells, channels, g), noise)
    groups = surface_groups(cells.to(models.device)) if cells is not None and sync > 0 else None
    img2img = shading is not None and depth is None
    keep = encoded = None
    if img2img:  # image-to-image from each frame's shading
        timesteps, _ = timesteps_for(sched, steps, models.device, strength=req.strength)
        encoded = torch.cat([latent_space.encode(models, shading[i:i + 8], [g] * len(shading[i:i + 8]))
                             for i in range(0, frames, 8)])
        noise = noise.to(encoded)
        x = sched.add_noise(encoded, noise, timesteps[:1].repeat(frames))
        keep = (F.interpolate(inside.float(), scale_factor=1 / f, mode="area") > 0.5).to(models.device)
    else:
        timesteps, _ = timesteps_for(sched, steps, models.device)
        x = (noise * sched.init_noise_sigma).to(models.device, models.dtype)

    def post_step(i: int, x: torch.Tensor) -> torch.Tensor:
        if groups is not None and i + 1 < sync_until * len(timesteps):
            x = surface_sync(x, groups, sync)  # frames agree on the latents of the surface they share
        if keep is not None:
            # the background stays the shading's grey: after every step it is put back, noised to the
            # next step's level (inpainting's rule), so only the mesh's pixels are generated
            if i + 1 < len(timesteps):
                background = sched.add_noise(encoded, noise, timesteps[i + 1:i + 2].repeat(frames))
            else:
                background = encoded
            x = torch.where(keep, x, background.to(x.dtype))
        return x

    step_index = {"i": 0}

    def network(x_in: torch.Tensor, t: torch.Tensor, _cond) -> torch.Tensor:
        shift = (step_index["i"] * max(1, length // 3)) % frames
        windows = circular_windows(frames, length, shift=shift)
        step_index["i"] += 1

        def run(xs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            if motion is None:
                return denoiser(xs, t, cond_for(idx))
            with motion.video(len(idx)):
                return denoiser(xs, t, cond_for(idx))

        return windowed(run, x_in, windows)

    generators = [torch.Generator().manual_seed(seed + 1 + k) for k in range(frames)]
    x = sample(network, sched, x, None, timesteps, generator=generators if takes_generator(sched) else None,
               on_step=on_step, post_step=post_step)
    decoded = torch.cat([latent_space.decode(models, x[i:i + 8]).float().cpu() for i in range(0, frames, 8)])
    if img2img:  # img2img turntable: exact background, and the headlight's shading on the surface
        light = 0.4 + (shading - 0.25) / 0.6 * 0.6 if req.relight else torch.ones_like(shading)
        decoded = torch.where(inside, decoded * light, shading)
    images = latent_space.tensor_to_pil(decoded)
    meta = {"prompt": req.prompt, "negative": req.negative, "seed": seed, "frames": frames, "steps": steps,
            "guidance": req.guidance, "scheduler": req.scheduler, "beta_schedule": sched.config.beta_schedule, "resolution": size, "bundle": models.bundle.name,
            "bundle_hash": models.bundle.identity(), "temporal": motion is not None, "window": length,
            "mode": "turntable" if mesh is not None else "text-to-video", "fast": fast,
            "sfumato_version": version(), **denoiser.provenance()}
    if mesh is not None:
        meta.update(elevation=req.elevation, mesh=Path(mesh.source).name, anchored_noise=req.anchored_noise, sync=sync,
                    sync_until=sync_until, conditioning="depth-controlnet" if depth is not None else "img2img-shading",
                    **({"control_scale": req.control_scale} if depth is not None else
                       {"strength": req.strength, "relight": req.relight}))
    return images, meta


def write_video(frames: list[Image.Image], path: Path, fps: int, metadata: dict[str, Any]) -> list[Path]:
    """``path`` (.mp4 through imageio-ffmpeg, or .gif), plus ``path.json`` with the provenance."""
    import json

    import numpy as np

    from ..core.provenance import atomic_write

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        def write(tmp: Path) -> None:
            frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], loop=0,
                           duration=max(1, round(1000 / fps)))
    elif suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise BadParameter("output", str(path), "a .gif, or install imageio-ffmpeg (pip install "
                               "'sfumato[video]') for .mp4") from None
        import imageio.v2 as imageio

        def write(tmp: Path) -> None:
            with imageio.get_writer(str(tmp), format="FFMPEG", fps=fps, codec="libx264", macro_block_size=8,
                                    output_params=["-movflags", "+faststart"]) as w:
                for im in frames:
                    w.append_data(np.asarray(im.convert("RGB")))
    else:
        raise BadParameter("output", str(path), "a path ending in .mp4 or .gif")
    out = atomic_write(path, write, keep_suffix=True)  # ffmpeg picks the container by extension
    side = atomic_write(path.with_suffix(path.suffix + ".json"),
                        lambda tmp: Path(tmp).write_text(json.dumps({**metadata, "fps": fps}, indent=2)))
    return [out, side]

