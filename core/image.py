"""Image generation: text-to-image, image-to-image, depth-guided, seamless, N variations.

The main path, ``generate``, is a short story:

1. check the request (once: a job's door already did) and fill in its step count and seed;
2. encode the prompt and the negative prompt;
3. prepare the starting latents: seeded noise, or the encoded init image noised to the start step;
4. denoise with the shared loop;
5. decode, and hand back images with their provenance.

Seeds follow diffusers' convention (CPU ``torch.Generator(seed)``, one per image, drawn in the same
order as ``StableDiffusionPipeline``), so image i of a batch equals a single run with ``seed + i``,
and the same settings reproduce the same image in diffusers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from . import latents as latent_space
from . import lora, text
from .checks import ensure_checked
from .denoiser import ControlImage, Denoiser, make_conditioning
from .errors import BadParameter
from .loading import Models
from .provenance import version
from .sampling import OnStep, sample, timesteps_for
from .schedulers import make_scheduler, takes_generator
from .schema import ImageRequest, control_uses
from .seamless import seamless

log = logging.getLogger("sfumato")


@dataclass
class GeneratedImage:
    image: Image.Image
    seed: int
    metadata: dict[str, Any] = field(default_factory=dict)


def open_image(field_name: str, path: str) -> Image.Image:
    """The image file at ``path``, read whole; a file that is not an image, or one whose size (read from its
    header, before any pixel is decoded) exceeds PIL's decompression-bomb limit, is a ``BadParameter``."""
    image = _open_header(field_name, path)
    try:
        image.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadParameter(field_name, path, f"a readable image file: PNG, JPEG, TIFF, WebP ({exc})") from None
    return image


def check_image_file(field_name: str, path: str) -> None:
    """Refuse, from its header alone, an image a job would read: a decompression bomb (a few hundred bytes
    claiming 30000² pixels) or a file that is not an image is a ``BadParameter`` before any pixel is decoded or
    any model loaded. A ``.npy`` depth array is checked from its header too."""
    if not path.lower().endswith(".npy"):
        _open_header(field_name, path).close()
        return
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            shape = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(fh)[0]
    except (OSError, ValueError) as exc:
        raise BadParameter(field_name, path, f"a readable 2-D .npy array of distances ({exc})") from None
    if int(np.prod(shape, dtype=np.int64)) > Image.MAX_IMAGE_PIXELS:
        raise BadParameter(field_name, path, f"{_at_most()}, not shape {list(shape)}; scale it down first")


def _at_most() -> str:
    limit = Image.MAX_IMAGE_PIXELS
    return f"an image of at most {limit} pixels, about {int(limit ** 0.5)}²"


def _open_header(field_name: str, path: str) -> Image.Image:
    """``Image.open``: PIL reads the header only, and its claimed size is checked against PIL's limit."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # above the limit: refused, not warned
            return Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadParameter(field_name, path, f"{_at_most()} (PIL: {exc}); scale it down first") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadParameter(field_name, path, f"a readable image file: PNG, JPEG, TIFF, WebP ({exc})") from None


def load_control(path: str, width: int, height: int) -> torch.Tensor:
    """A condition image for a normal, line-art or canny ControlNet: (1, 3, H, W) in [0, 1], RGB, resized to the
    request's size as diffusers' ControlNet pipelines do (their image processor, without normalisation)."""
    image = open_image("controls", path).convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]


def load_depth(path: str, width: int, height: int, field_name: str = "depth_image") -> torch.Tensor:
    """A depth map as a ControlNet image (1, 3, H, W) in [0, 1], near = bright.

    PNG/TIFF (8 or 16 bit) are taken as already normalised (near bright, as Blender's add-on writes
    them); ``.npy`` holds distances, normalised here with one near/far (inf or ≤ 0 = background = 0).
    """
    if path.lower().endswith(".npy"):
        try:
            d = np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as exc:
            raise BadParameter(field_name, path, f"a readable 2-D .npy array of distances ({exc})") from None
        if d.ndim == 3 and d.shape[-1] == 1:
            d = d[..., 0]
        if d.ndim != 2:
            raise BadParameter(field_name, path, f"a 2-D array of distances, not shape {list(d.shape)}")
        valid = np.isfinite(d) & (d > 0)
        if not valid.any():
            raise BadParameter(field_name, path, "a depth array with at least one finite positive distance")
        near, far = d[valid].min(), d[valid].max()
        a = np.where(valid, 1.0 - (d - near) / max(far - near, 1e-6) * 0.9, 0.0).astype(np.float32)
    else:
        image = open_image(field_name, path)
        if image.mode in ("I;16", "I;16B", "I"):
            a = np.asarray(image, dtype=np.float32) / 65535.0
        else:
            a = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    t = torch.from_numpy(a)[None, None]
    t = torch.nn.functional.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return t.clamp(0, 1).repeat(1, 3, 1, 1)


def condition_notes(req: ImageRequest, width: int, height: int) -> list[str]:
    """What a job tells about its input images without refusing them: one of another size than the request is
    resized (said, with its aspect ratio when that changes), and a depth map with one value everywhere gives the
    ControlNet no shape to follow (warned). Headers only, except the depth maps, which are read whole."""
    notes = []
    inputs = [("init_image", req.init_image)] if req.init_image else []
    inputs += [("depth_image" if u.kind == "depth" and req.depth_image else "controls", u.image)
               for u in control_uses(req)]
    for name, path in inputs:
        if path.lower().endswith(".npy"):
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            size = (int(shape[1]), int(shape[0]))
        else:
            with _open_header(name, path) as image:
                size = image.size
        if size != (width, height):
            stretched = abs(size[0] / size[1] - width / height) > 0.01
            notes.append(f"{name} {Path(path).name} is {size[0]}x{size[1]}; resized to the request's {width}x{height}"
                         + (f" (aspect {size[0] / size[1]:.2f} stretched to {width / height:.2f}; give a map of the "
                            "same proportions to keep shapes true)" if stretched else ""))
    for use in control_uses(req):
        if use.kind != "depth":
            continue
        depth = load_depth(use.image, width, height, "depth_image" if req.depth_image else "controls")
        low, high = float(depth.min()), float(depth.max())
        if high - low < 1 / 255:
            notes.append(f"depth map {Path(use.image).name} has one value everywhere ({low:.2f}): the depth ControlNet "
                         "has no shape to follow, so the result follows the prompt alone; render depth from a camera "
                         "that sees the model")
    return notes


def native_size(models: Models) -> int:
    """The bundle's default size: its manifest's ``default_size``, else what the U-Net was built for."""
    default = models.bundle.manifest.get("default_size")
    return int(default) if default else int(models.unet.config.sample_size) * models.vae_scale_factor


def generate(request: ImageRequest, models: Models, *, on_step: OnStep | None = None,
             on_images: Callable[[list[GeneratedImage]], None] | None = None) -> list[GeneratedImage]:
    """Run one request on loaded models; images come back in seed order.

    ``on_images`` receives each batch as soon as it is decoded, so a caller can save finished work
    before a later batch is cancelled or fails."""
    # 1. the request checked, with its step count and seed (a job's door already did it)
    req = ensure_checked(request, models.bundle)
    lora.apply(models, req.loras)
    seed = req.seed
    width, height = req.width or native_size(models), req.height or native_size(models)
    controls = tuple(ControlImage(u.kind, load_depth(u.image, width, height, "depth_image" if req.depth_image else
                                                     "controls") if u.kind == "depth" else
                                  load_control(u.image, width, height), u.scale, u.start, u.end)
                     for u in control_uses(req))
    init = latent_space.pil_to_tensor(open_image("init_image", req.init_image), width, height) \
        if req.init_image else None
    # 2. encode the prompts once for the whole job
    positive, negative = text.encode_pair(models, req.prompt, req.negative)
    denoiser = Denoiser(models, fast=req.fast)
    base = {**metadata(req, models, width, height), **denoiser.provenance()}
    results = []
    with seamless([models.unet, models.vae, *models.controlnets.values()], req.seamless):
        for first in range(0, req.n, req.batch_size):
            seeds = list(range(seed + first, seed + min(first + req.batch_size, req.n)))
            generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
            scheduler = make_scheduler(req.scheduler, models.scheduler_config)  # fresh state per batch
            cond = make_conditioning(models, positive, negative, len(seeds), req.guidance, width=width,
                                     height=height, controls=controls)
            # 3. starting latents: noise for text-to-image; the noised init image for image-to-image
            timesteps, _ = timesteps_for(scheduler, req.steps, models.device,
                                         strength=req.strength if init is not None else 1.0)
            shape = (len(seeds), latent_space.latent_channels(models), height // models.vae_scale_factor,
                     width // models.vae_scale_factor)
            x = start_latents(models, scheduler, timesteps, shape, generators,
                              None if init is None else init.repeat(len(seeds), 1, 1, 1))
            # 4. denoise
            x = sample(denoiser, scheduler, x, cond, timesteps,
                       generator=generators if takes_generator(scheduler) else None, on_step=on_step)
            # 5. decode
            batch = [GeneratedImage(image, s, {**base, "seed": s})
                     for s, image in zip(seeds, latent_space.tensor_to_pil(latent_space.decode(models, x, fast=denoiser.fast)))]
            results += batch
            if on_images is not None:
                on_images(batch)
    return results


def start_latents(models: Models, scheduler: Any, timesteps: torch.Tensor, shape: tuple[int, ...],
                  generators: list[torch.Generator], init: torch.Tensor | None = None) -> torch.Tensor:
    """Step 3, the starting latents x (B, C, h, w): seeded noise scaled to the scheduler's first sigma
    (text-to-image), or ``init`` (B, 3, H, W) in [0, 1] encoded and noised to the first of ``timesteps``
    (image-to-image: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps)."""
    if init is None:
        return randn_tensor(shape, generator=generators, device=models.device, dtype=models.dtype) \
            * scheduler.init_noise_sigma
    x0 = latent_space.encode(models, init, generators)  # drawn before the noise, as diffusers does
    noise = randn_tensor(shape, generator=generators, device=models.device, dtype=models.dtype)
    return scheduler.add_noise(x0, noise, timesteps[:1].repeat(shape[0]))


def metadata(req: ImageRequest, models: Models, width: int, height: int) -> dict[str, Any]:
    """Provenance shared by every image of a job (each adds its own ``seed``)."""
    meta = {
        "prompt": req.prompt, "negative": req.negative, "bundle": models.bundle.name,
        "bundle_hash": models.bundle.identity(), "scheduler": req.scheduler, "steps": req.steps,
        "guidance": req.guidance, "width": width, "height": height, "mode": req.mode, "seamless": req.seamless,
        "device": str(models.device), "dtype": str(models.dtype).replace("torch.", ""), "fast": req.fast,
        "sfumato_version": version(),
    }
    if req.init_image:
        meta.update(init_image=Path(req.init_image).name, strength=req.strength)
    if req.depth_image:
        meta.update(depth_image=Path(req.depth_image).name, control_scale=req.control_scale)
    if req.controls or req.control_weights:
        meta["controls"] = [{"kind": u.kind, "image": Path(u.image).name, "scale": u.scale, "start": u.start,
                             "end": u.end} for u in control_uses(req)]
    return meta


def generate_safely(request: ImageRequest, models: Models, *, on_step: OnStep | None = None,
                    on_images: Callable[[list[GeneratedImage]], None] | None = None) -> list[GeneratedImage]:
    """``generate`` with out-of-memory turned into a clear error; the caller's process survives."""
    from .device import out_of_memory_as_error

    size = f"{request.width or native_size(models)}x{request.height or native_size(models)}"
    with out_of_memory_as_error(f"on {models.device} at {size}, batch {min(request.n, request.batch_size)}"):
        return generate(request, models, on_step=on_step, on_images=on_images)
    raise AssertionError("unreachable")  # pragma: no cover


def output_paths(output: Path, seeds: list[int]) -> list[Path]:
    """``out.png`` for one image; ``out_s<seed>.png`` for each of several."""
    output = Path(output)
    if output.suffix.lower() != ".png":
        raise BadParameter("output", str(output), "a path ending in .png")
    if len(seeds) == 1:
        return [output]
    return [output.with_name(f"{output.stem}_s{s}{output.suffix}") for s in seeds]

