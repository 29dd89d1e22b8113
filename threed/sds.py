"""Score distillation (SDS, Poole et al. 2022): optimise any differentiable image generator — a
texture seen through the rasterizer, a radiance field — so that its renders look like samples of a
diffusion model, with the same denoiser every other head uses.

For a render encoded to latents ``z`` (or rendered directly in latent space), one step:

    t ~ U[t_min, t_max]          ε ~ N(0, I)          z_t = √ᾱ_t · z + √(1 − ᾱ_t) · ε
    ε̂ = denoiser(z_t, t, cond)   (classifier-free guidance inside, usually with a large scale)
    g  = w(t) · (ε̂ − ε)

``g`` is the SDS gradient with respect to ``z``: the U-Net's Jacobian is left out on purpose (that is
what makes SDS cheap and stable). To push ``g`` through autograd into whatever produced ``z``, the loss
is written as

    L = ½ · ‖z − sg(z − g)‖²        (sg = stop-gradient)    ⇒    ∂L/∂z = g

exactly, so ``L.backward()`` delivers ``g`` to ``z`` and from there the chain rule carries it back
through the VAE encoder and the renderer to the parameters. The value of L (½‖g‖²) is not an
objective that must go down; it is reported because it tracks how far the renders are from what the
model expects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from ..core.errors import BadParameter
from ..core.schema import AssetRequest

Weighting = Literal["sds", "uniform", "snr"]


@dataclass
class SDSConfig:
    guidance: float = AssetRequest.guidance  # classifier-free guidance scale; SDS needs a large one (DreamFusion: 100)
    t_min: float = 0.02  # timestep range, as fractions of the training schedule
    t_max: float = 0.98
    t_max_end: float | None = None  # anneal t_max linearly to this over the run (None: no annealing)
    weighting: Weighting = "sds"  # w(t): sds = 1 − ᾱ_t (DreamFusion), uniform = 1, snr = √ᾱ_t·√(1 − ᾱ_t)
    grad_clip: float | None = None  # clamp each element of g to ±grad_clip

    def validate(self) -> "SDSConfig":
        if not 0 <= self.guidance:  # the job's schema bounds it from above, per kind
            raise BadParameter("guidance", self.guidance, "a number ≥ 0")
        if not 0 <= self.t_min < self.t_max <= 1:
            raise BadParameter("t_range", (self.t_min, self.t_max), "0 ≤ t_min < t_max ≤ 1")
        if self.t_max_end is not None and not self.t_min <= self.t_max_end <= self.t_max:
            raise BadParameter("t_max_end", self.t_max_end, f"a value in [t_min, t_max] = [{self.t_min}, {self.t_max}]")
        if self.weighting not in ("sds", "uniform", "snr"):
            raise BadParameter("weighting", self.weighting, "sds, uniform or snr")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise BadParameter("grad_clip", self.grad_clip, "a positive number, or none")
        return self

    def t_range(self, progress: float) -> tuple[float, float]:
        """(t_min, t_max) at ``progress`` ∈ [0, 1] of the run."""
        hi = self.t_max if self.t_max_end is None else self.t_max + (self.t_max_end - self.t_max) * progress
        return self.t_min, max(hi, self.t_min + 1e-3)


Eps = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z_t, t) -> ε̂, guidance already applied


@dataclass
class SDSStep:
    loss: torch.Tensor  # ½‖g‖² per sample, summed over elements, averaged over the batch (has grad)
    grad: torch.Tensor  # g, detached
    t: torch.Tensor  # integer timesteps used


def weight(alphas_cumprod: torch.Tensor, t: torch.Tensor, kind: Weighting) -> torch.Tensor:
    ab = alphas_cumprod[t]
    if kind == "sds":
        return 1 - ab
    if kind == "snr":
        return ab.sqrt() * (1 - ab).sqrt()
    return torch.ones_like(ab)


def sds_step(eps: Eps, z: torch.Tensor, alphas_cumprod: torch.Tensor, cfg: SDSConfig, *, progress: float = 0.0,
             generator: torch.Generator | None = None, t: torch.Tensor | None = None,
             noise: torch.Tensor | None = None) -> SDSStep:
    """One SDS evaluation at latents ``z`` (B, C, h, w) with gradients attached; see the module doc."""
    n = alphas_cumprod.shape[0]
    if t is None:
        lo, hi = cfg.t_range(progress)
        t = torch.randint(int(lo * (n - 1)), int(hi * (n - 1)) + 1, (z.shape[0],), generator=generator)
    if noise is None:
        noise = torch.randn(z.shape, generator=generator, dtype=torch.float32).to(z)
    ab = alphas_cumprod.to(z.device)[t].to(z.dtype).view(-1, 1, 1, 1)
    with torch.no_grad():
        z_t = ab.sqrt() * z.detach() + (1 - ab).sqrt() * noise
        eps_hat = eps(z_t, t.to(z.device))
        g = weight(alphas_cumprod.to(z.device), t.to(z.device), cfg.weighting).to(z.dtype).view(-1, 1, 1, 1) * \
            (eps_hat - noise)
        g = torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0)
        if cfg.grad_clip is not None:
            g = g.clamp(-cfg.grad_clip, cfg.grad_clip)
    # the gradient trick: ∂/∂z of ½‖z − sg(z − g)‖² is g
    target = (z - g).detach()
    loss = 0.5 * ((z - target) ** 2).sum() / z.shape[0]
    return SDSStep(loss, g, t)


def guided_eps(models, prompt: str, negative: str, guidance: float, negative_weight: float = 0.0) -> Eps:
    """ε̂(z_t, t) of a loaded bundle with classifier-free guidance at ``guidance``, through the shared
    ``Denoiser`` (the same call every head makes). Prompts are encoded once.

    By default the negative prompt stands in for the unconditional prediction (as in image generation).
    With ``negative_weight`` w > 0 it gets a weight of its own instead:
    ε̂ = ε_∅ + s·(ε_p − ε_∅) − w·(ε_n − ε_∅), three predictions per call."""
    from ..core import text
    from ..core.denoiser import Denoiser, make_conditioning

    if negative_weight > 0 and negative.strip():
        return _weighted_negative(models, prompt, negative, guidance, negative_weight)

    positive, neg = text.encode_pair(models, prompt, negative)
    denoiser = Denoiser(models)
    cache: dict[int, object] = {}

    def eps(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = z_t.shape[0]
        if b not in cache:
            size = z_t.shape[-1] * models.vae_scale_factor
            cache[b] = make_conditioning(models, positive, neg, b, guidance, width=size, height=size)
        out = torch.stack([denoiser(z_t[i:i + 1].to(models.dtype), t[i], _one(cache[b], i))[0]
                           for i in range(b)]) if t.numel() > 1 and not bool((t == t[0]).all()) else \
            denoiser(z_t.to(models.dtype), t[0], cache[b])
        return out.to(z_t.dtype)

    return eps


def _weighted_negative(models, prompt: str, negative: str, guidance: float, weight: float) -> Eps:
    from ..core import text
    from ..core.denoiser import Denoiser, make_conditioning
    from ..core.text import TextEmbeddings

    positive, empty = text.encode_pair(models, prompt, "")  # (SDXL zeroes the empty prompt's embeddings)
    neg = text.encode_pair(models, negative, "")[0]
    parts = (positive, empty, neg)
    three = TextEmbeddings(torch.cat([p.tokens for p in parts]),
                           None if positive.pooled is None else torch.cat([p.pooled for p in parts]))
    denoiser = Denoiser(models)
    cache: dict[int, object] = {}

    def eps(z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = []
        for i in range(z_t.shape[0]):  # guidance 1: each of the three embeddings' own prediction
            if 1 not in cache:
                size = z_t.shape[-1] * models.vae_scale_factor
                cache[1] = make_conditioning(models, three, three, 1, 1.0, width=size, height=size)
            p, e, n = denoiser(z_t[i:i + 1].to(models.dtype).repeat(3, 1, 1, 1), t[i] if t.numel() > 1 else t[0],
                               cache[1]).float()
            out.append(e + guidance * (p - e) - weight * (n - e))
        return torch.stack(out).to(z_t.dtype)

    return eps


def _one(cond, i: int):
    """The conditioning of sample ``i`` of a batch (batches with different timesteps run one by one)."""
    from dataclasses import replace

    return replace(cond, positive=cond.positive[i:i + 1], negative=cond.negative[i:i + 1],
                   added_positive={k: v[i:i + 1] for k, v in cond.added_positive.items()},
                   added_negative={k: v[i:i + 1] for k, v in cond.added_negative.items()},
                   control=None if cond.control is None else cond.control[i:i + 1])


def alphas_cumprod(models) -> torch.Tensor:
    """ᾱ_t of the bundle's training schedule (from its scheduler config)."""
    from diffusers import DDPMScheduler

    cfg = models.scheduler_config
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
    return DDPMScheduler(**{k: cfg[k] for k in keys if cfg.get(k) is not None}).alphas_cumprod.float()


def encode_with_grad(models, images: torch.Tensor) -> torch.Tensor:
    """Renders (B, 3, H, W) in [0, 1] → latents, with gradients through the VAE encoder (posterior mean)."""
    vae = models.vae
    z = vae.encode((images * 2 - 1).to(vae.dtype)).latent_dist.mean
    return z * vae.config.scaling_factor

