"""The inpainting U-Net's extra input: where to paint, and what the image looks like around it.

An inpainting U-Net (SD 1.5 inpainting: 9 input channels) reads, besides the noisy latents x (B, C, h, w),

    U-Net input = cat([x, m, z_masked], dim=1)          (B, C + 1 + C, h, w)

as diffusers' ``StableDiffusionInpaintPipeline`` builds it: m (B, 1, h, w) is the pixel mask (1 = paint,
binarised at ½) brought to latent size by nearest-neighbour interpolation, z_masked = scaling_factor · E(x_img ·
(m_px < ½)) the VAE latents of the image with the pixels to paint set to 0 in [-1, 1] (mid grey), drawn from the
posterior with the image's generator. x is the scheduler-scaled input; m and z_masked are not scaled.

A U-Net of that kind asked for plain generation (text-to-image, turntables, material tiles) gets what diffusers
gives it for a blank init: m = 1 everywhere and the latents of an all-masked (all-grey) image, here the posterior's
mean, computed once per size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import latents as latent_space
from .loading import Models


@dataclass
class Inpaint:
    """An inpainting U-Net's condition for B images."""

    mask: torch.Tensor  # (B, 1, h, w) 1 = paint, 0 = keep, at latent size
    masked_latents: torch.Tensor  # (B, C, h, w) latents of the image with the pixels to paint blanked


def extra_channels(models: Models) -> int:
    """Input channels the U-Net takes beyond the latents: 0 for a plain U-Net, C + 1 for an inpainting one."""
    return int(models.unet.config.in_channels) - latent_space.latent_channels(models)


def condition(models: Models, image: torch.Tensor, paint: torch.Tensor,
              generators: list[torch.Generator] | None) -> Inpaint:
    """``image`` (B, 3, H, W) in [0, 1] and ``paint`` (B, 1, H, W), 1 where pixels are to be painted -> the
    condition; the masked image is encoded with one generator per image (diffusers' convention)."""
    f = models.vae_scale_factor
    paint = (paint.float() >= 0.5).float()  # binarised, as diffusers' mask processor does
    masked = torch.where(paint.bool(), torch.full_like(image, 0.5), image)  # 0.5 -> 0 in [-1, 1]
    z = latent_space.encode(models, masked, generators)
    mask = F.interpolate(paint, size=(image.shape[-2] // f, image.shape[-1] // f))  # nearest, as diffusers
    return Inpaint(mask.to(models.device, models.dtype), z)


@torch.no_grad()
def blank(models: Models, height: int, width: int) -> Inpaint:
    """Paint everywhere, over an all-grey image: the condition for plain generation at latent size h × w
    (batch 1, cached per size and seamless mode)."""
    from .fast import seamless_mode

    key = ("blank_inpaint", height, width, seamless_mode(models.vae.encoder), models.dtype)
    if key not in models.extras:
        f, vae = models.vae_scale_factor, models.vae
        grey = torch.zeros(1, 3, height * f, width * f, device=models.device, dtype=vae.dtype)
        z = vae.encode(grey).latent_dist.mean.to(models.dtype) * vae.config.scaling_factor
        mask = torch.ones(1, 1, height, width, device=models.device, dtype=models.dtype)
        models.extras[key] = Inpaint(mask, z)
    return models.extras[key]


def unet_input(models: Models, x: torch.Tensor, inpaint: Inpaint | None) -> torch.Tensor:
    """x (B', C, h, w) -> what the U-Net takes: x itself for a plain U-Net; cat([x, m, z_masked]) for an
    inpainting one. ``inpaint`` (B, ...) with B dividing B' is tiled along the batch (the CFG halves and
    regional prompts repeat the images in that order); none: ``blank``."""
    if extra_channels(models) == 0:
        return x
    inpaint = inpaint if inpaint is not None else blank(models, x.shape[-2], x.shape[-1])
    reps = x.shape[0] // inpaint.mask.shape[0]
    assert reps * inpaint.mask.shape[0] == x.shape[0], "the inpaint condition's batch must divide the input's"
    tile = lambda t: t.to(x.device, x.dtype).repeat(reps, 1, 1, 1)  # noqa: E731
    return torch.cat([x, tile(inpaint.mask), tile(inpaint.masked_latents)], dim=1)
