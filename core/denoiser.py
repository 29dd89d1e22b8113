"""One denoiser contract: ``denoiser(x, t, cond) -> model output`` with classifier-free guidance.

Every head calls the network through this one function. ``x`` is the *scaled* model input
(``scheduler.scale_model_input`` already applied by the loop), ``t`` the scheduler's timestep.
The output is what the U-Net predicts — eps, or v for v-prediction bundles (``prediction_type``
says which; the scheduler converts).

Classifier-free guidance (Ho & Salimans 2022), done here and nowhere else:

    eps_hat = eps(x, ∅) + w · (eps(x, c) − eps(x, ∅))

The unconditional and conditional halves run as one batch of 2B through the U-Net (and through the
ControlNets, whose residuals are summed, each times its scale, and added to the U-Net's skip connections, as
diffusers' multi-ControlNet does; a ControlNet acts only on its share of the steps, ``ControlImage.start``/``end``).
With w ≤ 1 only the conditional half runs. An inpainting U-Net (9 input channels) gets its mask and masked-image latents
concatenated to x before every call (``inpaint.py``); the ControlNet still sees the latents alone.

``Denoiser.unet_call`` is the single place the U-Net is invoked, so a captured CUDA graph or a
compiled module can replace it without touching the loop (the speed issue).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from .inpaint import Inpaint, unet_input
from .loading import Models
from .text import TextEmbeddings


@dataclass(frozen=True)
class ControlImage:
    """One of a request's ControlNets: the bundle's ``controlnet_<kind>`` (depth included), its condition image
    (B, 3, H, W) in [0, 1], residual scale, and the fractions of the steps it acts on (diffusers'
    ``control_guidance_start``/``_end``: step i of n runs it when start <= i/n and (i + 1)/n <= end)."""

    kind: str
    image: torch.Tensor
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0

    def acts(self, step: tuple[int, int] | None) -> bool:
        """Whether it runs at step (i, n); None (outside a loop): always."""
        if step is None:
            return True
        i, n = step
        return not (i / n < self.start or (i + 1) / n > self.end)


@dataclass
class Conditioning:
    """What the denoiser is conditioned on, already batched for B images."""

    positive: torch.Tensor  # (B, 77, D) prompt embeddings
    negative: torch.Tensor  # (B, 77, D) negative-prompt embeddings
    guidance: float  # w above; ≤ 1 disables CFG
    added_positive: dict[str, torch.Tensor] = field(default_factory=dict)  # SDXL: text_embeds (B, P), time_ids (B, 6)
    added_negative: dict[str, torch.Tensor] = field(default_factory=dict)
    control: torch.Tensor | None = None  # depth (B, 3, H, W), near = bright, at every step (texture, video heads)
    control_scale: float = 1.0
    controls: tuple[ControlImage, ...] = ()  # ControlNets with their scales and step ranges (image jobs)
    step: tuple[int, int] | None = None  # (i, n): the loop's step, for the ranges; None = every control acts
    inpaint: Inpaint | None = None  # an inpainting U-Net's mask and masked-image latents; None: paint everywhere

    def at_step(self, i: int, n: int) -> "Conditioning":
        """This conditioning at step ``i`` of ``n`` (only ControlNets with step ranges care)."""
        return replace(self, step=(i, n)) if self.controls else self

    def active(self) -> tuple[tuple[str, torch.Tensor, float], ...]:
        """The ControlNets of ``controls`` that act at this step: (kind, image, scale)."""
        return tuple((c.kind, c.image, c.scale) for c in self.controls if c.acts(self.step))

    @property
    def do_cfg(self) -> bool:
        return self.guidance > 1.0


def make_conditioning(models: Models, positive: TextEmbeddings, negative: TextEmbeddings, batch: int,
                      guidance: float, *, width: int, height: int, control: torch.Tensor | None = None,
                      control_scale: float = 1.0, controls: tuple[ControlImage, ...] = (),
                      inpaint: Inpaint | None = None) -> Conditioning:
    """Repeat the embeddings (and control images) for a batch of ``batch`` images and add SDXL's size
    conditioning; ``inpaint`` (for ``batch`` images, or one) is kept as it is."""
    rep = lambda e: e.repeat(batch, *([1] * (e.ndim - 1))).to(models.device)  # noqa: E731
    cond = Conditioning(rep(positive.tokens), rep(negative.tokens), guidance, control_scale=control_scale,
                        inpaint=inpaint,
                        controls=tuple(replace(c, image=rep(c.image.to(models.dtype))) for c in controls))
    if models.is_sdxl:
        # (original size, crop top-left, target size), as SDXL was trained: (h, w, 0, 0, h, w)
        time_ids = torch.tensor([[height, width, 0, 0, height, width]], dtype=models.dtype)
        assert positive.pooled is not None and negative.pooled is not None
        cond.added_positive = {"text_embeds": rep(positive.pooled), "time_ids": rep(time_ids)}
        cond.added_negative = {"text_embeds": rep(negative.pooled), "time_ids": rep(time_ids)}
    if control is not None:
        cond.control = rep(control.to(models.dtype))
    return cond


class Denoiser:
    """The U-Net (plus an optional ControlNet) behind one call with guidance.

    ``fast`` ("auto" | "on" | "compile" | "off"): on CUDA, each network call shape is recorded once as a
    CUDA graph and replayed; on a CPU with native bfloat16 the network runs under bfloat16 autocast
    (``fast.py``); "off" always runs eagerly in the models' precision."""

    def __init__(self, models: Models, fast: str = "off"):
        from . import fast as fastpath

        self.models = models
        self.prediction_type: str = models.scheduler_config.get("prediction_type", "epsilon")
        self.fast = fastpath.enabled(fast, models.device)
        # on the CPU the fast path is the network in bfloat16 (float32 models, big enough U-Nets: fast.py)
        self.cpu_bf16 = self.fast and fastpath.cpu_bf16_for(models)
        if self.fast and (models.device.type == "cuda" or self.cpu_bf16):
            fastpath.prepare(models, compile=fast == "compile")

    def provenance(self) -> dict[str, str]:
        """What an output records of how its networks ran: the active LoRAs (name, hash, scale), and the U-Net's
        precision where that is not the models' dtype."""
        out: dict[str, Any] = {"unet_dtype": "bfloat16 (autocast)"} if self.cpu_bf16 else {}
        if self.models.extras.get("lora_provenance"):
            out["loras"] = self.models.extras["lora_provenance"]
        return out

    def network(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, added: dict[str, torch.Tensor],
                control: torch.Tensor | None, control_scale: float,
                more: tuple[tuple[str, torch.Tensor, float], ...] = ()) -> torch.Tensor:
        """``unet_call``, through a captured graph when the fast path is on (CUDA), or under bfloat16
        autocast (a CPU that does bfloat16 natively)."""
        if self.cpu_bf16:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = self.unet_call(x.contiguous(memory_format=torch.channels_last), t, text, added, control,
                                     control_scale, more, bf16=True)
            return out.to(x.dtype)
        if not self.fast or self.models.device.type != "cuda":
            return self.unet_call(x, t, text, added, control, control_scale, more)
        from . import fast as fastpath

        m = self.models
        t = (t if torch.is_tensor(t) else torch.tensor(t)).to(x.device).reshape(())
        x = x.contiguous(memory_format=torch.channels_last)
        keys = sorted(added)
        images = ([control] if control is not None else []) + [image for _, image, _ in more]
        args = [x, t, text, *(added[k] for k in keys), *images]

        def call(x, t, text, *rest):
            given = list(rest[len(keys):])
            depth = given.pop(0) if control is not None else None
            return self.unet_call(x, t, text, dict(zip(keys, rest[:len(keys)])), depth, control_scale,
                                  tuple((kind, image, scale) for (kind, _, scale), image in zip(more, given)))

        key = ("unet", fastpath.signature(args), tuple(keys), control is not None, float(control_scale),
               tuple((kind, float(scale)) for kind, _, scale in more), fastpath.seamless_mode(m.unet), id(m.unet),
               id(m.controlnet), tuple(id(m.controlnets.get(kind)) for kind, _, _ in more))
        return fastpath.GraphCache.of(m).call(key, call, args, tolerance=fastpath.tolerance(m.dtype))

    def unet_call(self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, added: dict[str, torch.Tensor],
                  control: torch.Tensor | None, control_scale: float,
                  more: tuple[tuple[str, torch.Tensor, float], ...] = (), bf16: bool = False) -> torch.Tensor:
        """One network evaluation on an already-batched input (B', C_in, h, w) -> (B', C, h, w) (C_in = C, or
        C + 1 + C for an inpainting U-Net: the ControlNets take the first C). ``control`` goes through the depth
        ControlNet, each of ``more`` (kind, image, scale) through the bundle's ControlNet of that kind, and their
        residuals are summed; ``bf16``: with the networks' bfloat16 weight copies (``fast.bf16_call``, the CPU's
        fast path)."""
        from .fast import bf16_call

        m = self.models
        run = bf16_call if bf16 else (lambda module, *a, **k: module(*a, **k))
        extra: dict[str, Any] = {}
        if added:
            extra["added_cond_kwargs"] = added
        nets = ([(m.controlnet, control, control_scale)] if control is not None else []) \
            + [(m.controlnets.get(kind), image, scale) for kind, image, scale in more]
        down: list[torch.Tensor] | None = None
        mid: torch.Tensor | None = None
        for net, image, scale in nets:
            assert net is not None, "a control image needs the bundle's ControlNet of its kind loaded"
            latents = x[:, :net.config.in_channels]  # an inpainting U-Net's extra channels are its own
            d, md = run(net, latents, t, encoder_hidden_states=text, controlnet_cond=image,
                        conditioning_scale=scale, return_dict=False, **extra)
            down = list(d) if down is None else [a + b for a, b in zip(down, d)]
            mid = md if mid is None else mid + md
        if down is not None:
            extra["down_block_additional_residuals"] = down
            extra["mid_block_additional_residual"] = mid
        return run(m.unet, x, t, encoder_hidden_states=text, return_dict=False, **extra)[0]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        control, more = cond.control, cond.active()
        if not cond.do_cfg:
            x_in = unet_input(self.models, x, cond.inpaint)
            return self.network(x_in, t, cond.positive, cond.added_positive, control, cond.control_scale, more)
        x2 = unet_input(self.models, torch.cat([x, x]), cond.inpaint)
        text = torch.cat([cond.negative, cond.positive])
        added = {k: torch.cat([cond.added_negative[k], v]) for k, v in cond.added_positive.items()}
        control = torch.cat([control, control]) if control is not None else None
        more = tuple((kind, torch.cat([image, image]), scale) for kind, image, scale in more)
        out = self.network(x2, t, text, added, control, cond.control_scale, more)
        eps_uncond, eps_cond = out.chunk(2)
        return eps_uncond + cond.guidance * (eps_cond - eps_uncond)
