"""The latent space: VAE encode/decode, and a cheap latent-to-RGB preview.

Latents are ``z = scaling_factor * E(x)`` with images x in [-1, 1]; decode inverts that. For step
previews we never run the decoder: a linear map ``rgb ≈ [z, 1] @ W`` (W: 5×3 for 4 latent channels)
is fitted once per bundle by least squares on the VAE's own encodings of smooth random colour
fields, so it works for any VAE, trained or not, with no hard-coded coefficients.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .loading import Models


def latent_channels(models: Models) -> int:
    """C, the channels of the latent space (the VAE's): the shape of noise and of every latent. Not the U-Net's
    input channels, which an inpainting U-Net widens to C + 1 + C (``inpaint.py``)."""
    return int(models.vae.config.latent_channels)


def pil_to_tensor(image: Image.Image, width: int, height: int) -> torch.Tensor:
    """PIL image -> (1, 3, H, W) in [0, 1], resized (Lanczos) to width × height when it differs."""
    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1)[None]


def tensor_to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [0, 1] -> PIL images, rounding like diffusers' image processor."""
    array = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in array]


@torch.no_grad()
def encode(models: Models, images: torch.Tensor, generator: list[torch.Generator] | None) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> latents (B, C, H/f, W/f), sampled from the posterior with each
    image's own generator (diffusers' img2img convention)."""
    vae = models.vae
    x = (images * 2 - 1).to(models.device, vae.dtype)
    latents = []
    for i in range(x.shape[0]):
        dist = vae.encode(x[i : i + 1]).latent_dist
        latents.append(dist.sample(generator[i] if generator else None))
    return torch.cat(latents).to(models.dtype) * vae.config.scaling_factor


@torch.no_grad()
def decode(models: Models, latents: torch.Tensor, fast: bool = False) -> torch.Tensor:
    """latents (B, C, h, w) -> images (B, 3, h·f, w·f) in [0, 1]; ``fast``: through a CUDA graph."""
    vae = models.vae
    z = latents.to(vae.dtype) / vae.config.scaling_factor
    if fast and z.device.type == "cuda":
        from . import fast as fastpath

        z = z.contiguous(memory_format=torch.channels_last)
        key = ("vae_decode", fastpath.signature([z]), fastpath.seamless_mode(vae.decoder), id(vae))
        x = fastpath.GraphCache.of(models).call(key, lambda z: vae.decode(z).sample, [z],
                                                tolerance=fastpath.tolerance(vae.dtype))
    else:
        x = vae.decode(z).sample
    return (x / 2 + 0.5).clamp(0, 1).float()


@torch.no_grad()
def fit_preview_map(models: Models, samples: int = 8, size: int = 64) -> torch.Tensor:
    """Least-squares W (C+1, 3) with rgb ≈ [z, 1] @ W, from the VAE's encodings of colour fields."""
    if "preview_map" in models.extras:
        return models.extras["preview_map"]
    g = torch.Generator().manual_seed(0)
    fields = F.interpolate(torch.rand(samples, 3, 4, 4, generator=g), size=(size, size), mode="bilinear",
                           align_corners=False)
    z = models.vae.encode((fields * 2 - 1).to(models.device, models.vae.dtype)).latent_dist.mean.float().cpu()
    z = z * models.vae.config.scaling_factor
    rgb = F.adaptive_avg_pool2d(fields, z.shape[-2:])
    A = torch.cat([z, torch.ones_like(z[:, :1])], 1).permute(0, 2, 3, 1).reshape(-1, z.shape[1] + 1)
    B = rgb.permute(0, 2, 3, 1).reshape(-1, 3)
    W = torch.linalg.lstsq(A.double(), B.double()).solution.float()
    models.extras["preview_map"] = W
    return W


def preview(models: Models, latents: torch.Tensor, upscale: int = 4) -> Image.Image:
    """The first latent of a batch as a small RGB preview; costs a matrix product, no decoder."""
    W = fit_preview_map(models)
    z = latents[0].detach().float().cpu()  # (C, h, w)
    A = torch.cat([z, torch.ones_like(z[:1])], 0).permute(1, 2, 0)  # (h, w, C+1)
    rgb = (A @ W).clamp(0, 1).numpy()
    image = Image.fromarray((rgb * 255).round().astype(np.uint8))
    return image.resize((image.width * upscale, image.height * upscale), Image.BILINEAR)
