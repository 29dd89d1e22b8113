"""Frame attention ("motion modules") hooked into the shared image U-Net: the temporal half of AnimateDiff.

A video of F frames is denoised as a batch of B·F images, frames as the inner index: the image U-Net
sees ``(B·F, C, h, w)`` and does not know. After chosen blocks a motion module lets every spatial
position attend to itself in the other frames of its clip::

    x (b f) c h w ─► GroupNorm over (c/g, f, h, w) ─► (b h w) f c ─► proj_in
        ─► [ z ← z + Attn_k(LN_k(z) + P[:F]) ]  for k = 1, 2        (self-attention over f only)
        ─► z ← z + FF(LN_3(z))                                        (GEGLU feed-forward)
        ─► proj_out ─► (b f) c h w ─► x + that

``P`` is the sinusoidal table of Vaswani et al. 2017, §3.5: P[f, 2i] = sin(f·ω_i), P[f, 2i+1] =
cos(f·ω_i), ω_i = 10000^(−2i/C). It is added to each attention's *normalised* input, the way
AnimateDiff and diffusers do, and its length L bounds the frames one call may hold (AnimateDiff v1:
24, v2/v3: 32). Longer videos are the caller's business (overlapping windows, ``video/turntable``).
The GroupNorm's statistics span the whole clip (all F frames), again as in AnimateDiff.

``proj_out`` starts at zero, so a fresh module adds exactly 0 and an inflated U-Net equals the image
U-Net frame by frame; training (or loading AnimateDiff weights) then moves it away from identity.

Where the modules go — the points of diffusers' ``UNetMotionModel``, so that an AnimateDiff
``MotionAdapter``'s weights map one to one:

* down level i, layer j: after resnet j, or after cross-attention j when the level has one;
* mid block, layer j: after cross-attention j, before resnet j + 1;
* up level i, layer j (``layers_per_block + 1`` of them): as in the down levels.

They are attached with forward hooks on those resnets/attentions, so the image U-Net is shared, not
copied: its weights, its ``state_dict`` and every image job stay as they are. The hooks read a
``VideoContext`` from the ``MotionUNet`` handle; with none set (image mode) every hook is a
pass-through, so image and video run the same code. ControlNet residuals are added by the U-Net
itself after the down blocks and after the mid block, which is also where ``UNetMotionModel`` adds
them, so they need nothing here.

The stack of modules (``MotionStack``) has the key layout of diffusers' ``MotionAdapter``
(``down_blocks.{i}.motion_modules.{j}.transformer_blocks.{k}.attn1.to_q.weight`` …); ``adapter.py``
reads that layout and AnimateDiff's original one into it.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..core.errors import BadParameter

# The image U-Net blocks we know how to hook, by the names in the U-Net's config.
DOWN_BLOCKS = ("CrossAttnDownBlock2D", "DownBlock2D")
UP_BLOCKS = ("CrossAttnUpBlock2D", "UpBlock2D")
MID_BLOCK = "UNetMidBlock2DCrossAttn"
# U-Nets that carry hooks now, so that a second ``inflate`` cannot stack a second set on top.
_INFLATED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class MotionConfig:
    """Shape of a motion stack for a U-Net with ``len(block_out_channels)`` levels.

    The fields mirror diffusers' ``MotionAdapter`` config (``adapter.py`` converts both ways); tuples
    run over the U-Net's levels from shallow to deep, as ``block_out_channels`` does.
    """

    block_out_channels: tuple[int, ...]  # channel width C of each level; must equal the U-Net's
    layers_per_block: tuple[int, ...]  # modules per down level (= the U-Net's layers_per_block); up levels get one more
    num_attention_heads: tuple[int, ...]  # heads of the frame attention per level (C must divide by it)
    transformer_layers: tuple[int, ...]  # frame-transformer blocks inside each module, per level
    max_frames: int = 32  # L: length of the positional table, the most frames one call may hold
    norm_num_groups: int = 32  # groups of each module's GroupNorm
    mid_block: bool = True  # a module in the mid block too (AnimateDiff v2 has one, v1 and v3 do not)
    mid_layers: int = 1  # modules in the mid block (= its cross-attentions)
    mid_transformer_layers: int = 1  # frame-transformer blocks inside each mid-block module

    def __post_init__(self) -> None:
        levels = len(self.block_out_channels)
        for name in ("layers_per_block", "num_attention_heads", "transformer_layers"):
            if len(getattr(self, name)) != levels:
                raise BadParameter(f"motion.{name}", getattr(self, name),
                                   f"one entry per U-Net level ({levels}, as block_out_channels)")
        for c, heads in zip(self.block_out_channels, self.num_attention_heads):
            if heads < 1 or c % heads or c % self.norm_num_groups or c % 2:
                raise BadParameter("motion.block_out_channels", self.block_out_channels,
                                   f"even widths divisible by the heads {self.num_attention_heads} and by "
                                   f"norm_num_groups={self.norm_num_groups}")
        if self.max_frames < 1:
            raise BadParameter("motion.max_frames", self.max_frames, "at least 1")
        if min(self.layers_per_block + self.transformer_layers) < 1 or min(self.mid_layers,
                                                                            self.mid_transformer_layers) < 1:
            raise BadParameter("motion", self, "at least one module and one transformer block everywhere")

    @classmethod
    def for_unet(cls, unet_config: Mapping[str, Any], *, num_attention_heads: int = 8, max_frames: int = 32,
                 transformer_layers: int = 1, mid_block: bool = True) -> MotionConfig:
        """A fresh stack shaped for ``unet_config`` (a ``UNet2DConditionModel.config``), AnimateDiff-v2-like."""
        channels = tuple(unet_config["block_out_channels"])
        layers = unet_config["layers_per_block"]
        layers = (layers,) * len(channels) if isinstance(layers, int) else tuple(layers)
        return cls(block_out_channels=channels, layers_per_block=layers,
                   num_attention_heads=(num_attention_heads,) * len(channels),
                   transformer_layers=(transformer_layers,) * len(channels), max_frames=max_frames,
                   norm_num_groups=unet_config["norm_num_groups"], mid_block=mid_block)


@dataclass(frozen=True)
class VideoContext:
    """What every motion hook needs to know about the current U-Net call.

    Windows and looping are decided by the caller, which calls the U-Net once per window; inside
    one call only the frame count matters.
    """

    num_frames: int  # F: the U-Net input is (B·F, C, h, w), frame index inner


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """P (1, length, dim): P[f, 2i] = sin(f·ω_i), P[f, 2i+1] = cos(f·ω_i), ω_i = 10000^(−2i/dim)."""
    f = torch.arange(length, dtype=torch.float32)[:, None]
    omega = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, length, dim)
    table[0, :, 0::2] = torch.sin(f * omega)
    table[0, :, 1::2] = torch.cos(f * omega)
    return table


class FramePositions(nn.Module):
    """Adds P[:F] to (N, F, C) tokens; ``pe`` is a buffer so checkpoints carry it (both layouts do)."""

    def __init__(self, dim: int, max_frames: int):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(max_frames, dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        frames, length = z.shape[1], self.pe.shape[1]
        if frames > length:
            raise BadParameter("num_frames", frames, f"at most {length} per U-Net call: the motion module's "
                               f"positional table has {length} entries",
                               hint="generate longer videos in overlapping windows of at most this length")
        return z + self.pe[:, :frames].to(z.dtype)


class FrameAttention(nn.Module):
    """Multi-head self-attention along the frame axis of (N, F, C) tokens, N = b·h·w positions."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])  # a list: both layouts name it to_out.0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        q, k, v = (rearrange(p(z), "n f (m d) -> n m f d", m=self.heads) for p in (self.to_q, self.to_k, self.to_v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q kᵀ / √d) v, each position over its F frames
        return self.to_out[0](rearrange(out, "n m f d -> n f (m d)"))


class GEGLU(nn.Module):
    """Shazeer 2020's gated unit: (z W + b) ⊙ GELU(z V + c), W and V stacked in one ``proj``."""

    def __init__(self, dim: int, inner: int):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * inner)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(z).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """GEGLU to 4·C and back; ``net.1`` is the (inactive) dropout slot, kept so keys read net.0 / net.2."""

    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, mult * dim), nn.Identity(), nn.Linear(mult * dim, dim)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            z = layer(z)
        return z


class FrameTransformerBlock(nn.Module):
    """Two pre-norm self-attentions over frames, each fed LN(z) + P, then a GEGLU feed-forward."""

    def __init__(self, dim: int, heads: int, max_frames: int):
        super().__init__()
        self.pos_embed = FramePositions(dim, max_frames)  # one table for both attentions, as in diffusers
        self.norm1, self.attn1 = nn.LayerNorm(dim), FrameAttention(dim, heads)
        self.norm2, self.attn2 = nn.LayerNorm(dim), FrameAttention(dim, heads)
        self.norm3, self.ff = nn.LayerNorm(dim), FeedForward(dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (N, F, C) -> (N, F, C)
        z = z + self.attn1(self.pos_embed(self.norm1(z)))
        z = z + self.attn2(self.pos_embed(self.norm2(z)))
        return z + self.ff(self.norm3(z))


class MotionModule(nn.Module):
    """One insertion point: (B·F, C, h, w) -> (B·F, C, h, w), the identity while ``proj_out`` is zero."""

    def __init__(self, channels: int, heads: int, layers: int, groups: int, max_frames: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [FrameTransformerBlock(channels, heads, max_frames) for _ in range(layers)])
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        if x.shape[0] % num_frames:
            raise BadParameter("num_frames", num_frames, f"a divisor of the U-Net batch {x.shape[0]}: the input "
                               "must be (B·F, C, h, w) with the frame index inner")
        h, w = x.shape[-2:]
        z = self.norm(rearrange(x, "(b f) c h w -> b c f h w", f=num_frames))  # statistics over the clip
        z = self.proj_in(rearrange(z, "b c f h w -> (b h w) f c"))
        for block in self.transformer_blocks:
            z = block(z)
        z = self.proj_out(z)
        return x + rearrange(z, "(b h w) f c -> (b f) c h w", h=h, w=w)


class _Level(nn.Module):
    """The modules of one U-Net level; the attribute name gives keys ``….motion_modules.{j}``."""

    def __init__(self, modules: list[MotionModule]):
        super().__init__()
        self.motion_modules = nn.ModuleList(modules)


class MotionStack(nn.Module):
    """All motion modules of one U-Net, in diffusers' ``MotionAdapter`` key layout."""

    def __init__(self, config: MotionConfig):
        super().__init__()
        self.config = config
        c = config

        def level(i: int, count: int) -> _Level:
            return _Level([MotionModule(c.block_out_channels[i], c.num_attention_heads[i], c.transformer_layers[i],
                                        c.norm_num_groups, c.max_frames) for _ in range(count)])

        levels = range(len(c.block_out_channels))
        self.down_blocks = nn.ModuleList([level(i, c.layers_per_block[i]) for i in levels])
        self.mid_block = _Level([MotionModule(c.block_out_channels[-1], c.num_attention_heads[-1],
                                              c.mid_transformer_layers, c.norm_num_groups, c.max_frames)
                                 for _ in range(c.mid_layers)]) if c.mid_block else None
        self.up_blocks = nn.ModuleList([level(i, c.layers_per_block[i] + 1) for i in reversed(levels)])


@dataclass
class MotionUNet:
    """The shared image U-Net with a ``MotionStack`` hooked in.

    Call it exactly like the U-Net (``unet`` itself works too: the hooks live on it) inside
    ``with motion_unet.video(F):``; outside, it is the image U-Net. Inputs are folded
    ``(B·F, C, h, w)``; per-frame conditioning must be folded the same way, i.e. text embeddings
    ``(B, 77, D)`` repeated per frame with ``repeat_interleave(F, dim=0)`` (diffusers'
    ``AnimateDiffPipeline`` convention), ControlNet inputs and SDXL ``added_cond_kwargs`` likewise.
    """

    unet: Any  # diffusers UNet2DConditionModel, shared with image jobs
    motion: MotionStack
    context: VideoContext | None = None
    _handles: list[Any] = field(default_factory=list, repr=False)

    @property
    def config(self) -> MotionConfig:
        return self.motion.config

    def set_video(self, num_frames: int | None) -> None:
        """Make the next U-Net calls videos of ``num_frames`` frames (1 ≤ F ≤ max_frames); None: images."""
        if num_frames is None:
            self.context = None
            return
        if not isinstance(num_frames, int) or not 1 <= num_frames <= self.config.max_frames:
            raise BadParameter("num_frames", num_frames, f"an integer from 1 to {self.config.max_frames}, the "
                               "length of the motion module's positional table",
                               hint="generate longer videos in overlapping windows of at most this length")
        self.context = VideoContext(num_frames)

    @contextmanager
    def video(self, num_frames: int) -> Iterator[VideoContext]:
        """``set_video(num_frames)`` for the calls inside the ``with`` block, then back to what it was."""
        previous = self.context
        self.set_video(num_frames)
        try:
            yield self.context
        finally:
            self.context = previous

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.unet(*args, **kwargs)

    def remove(self) -> None:
        """Detach the hooks: the U-Net is the plain image U-Net again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if _INFLATED.get(self.unet) is self:
            del _INFLATED[self.unet]

    def _hook(self, module: MotionModule, returns_tuple: bool):
        """A forward hook that runs ``module`` on a block's output while a video context is set."""

        def after(_block: nn.Module, _args: Any, out: Any) -> Any:
            if self.context is None:
                return None  # image mode: keep the output
            if returns_tuple:  # Transformer2DModel(return_dict=False) returns (hidden_states,)
                return (module(out[0], self.context.num_frames), *out[1:])
            return module(out, self.context.num_frames)

        return after


def check_fits(config: MotionConfig, unet: Any) -> None:
    """Raise ``BadParameter`` naming the first way a stack of ``config`` does not fit ``unet``."""
    u = unet.config
    layers = u["layers_per_block"]
    layers = (layers,) * len(u["block_out_channels"]) if isinstance(layers, int) else tuple(layers)
    wants = {"block_out_channels": tuple(u["block_out_channels"]), "layers_per_block": layers}
    for name, value in wants.items():
        if getattr(config, name) != value:
            raise BadParameter(f"motion_adapter.{name}", getattr(config, name),
                               f"the U-Net's {name} {value}: this motion adapter was made for another U-Net")
    for name, allowed in (("down_block_types", DOWN_BLOCKS), ("up_block_types", UP_BLOCKS)):
        unknown = [t for t in u[name] if t not in allowed]
        if unknown:
            raise BadParameter(f"unet.{name}", tuple(u[name]), f"blocks from {allowed}; frame attention "
                               f"cannot be placed in {unknown[0]}")
    if config.mid_block:
        mid_type = u.get("mid_block_type") or MID_BLOCK
        if mid_type != MID_BLOCK or unet.mid_block is None:
            raise BadParameter("unet.mid_block_type", mid_type, f"{MID_BLOCK} for an adapter with a mid-block module")
        if len(unet.mid_block.attentions) != config.mid_layers:
            raise BadParameter("motion_adapter.mid_layers", config.mid_layers,
                               f"the U-Net mid block's {len(unet.mid_block.attentions)} attention layer(s)")


def _targets(unet: Any, motion: MotionStack) -> Iterator[tuple[nn.Module, MotionModule, bool]]:
    """(block part to hook, its motion module, whether that part returns a tuple), in placement order."""
    u = unet.config
    for types, blocks, levels in ((u["down_block_types"], unet.down_blocks, motion.down_blocks),
                                  (u["up_block_types"], unet.up_blocks, motion.up_blocks)):
        for block, block_type, level in zip(blocks, types, levels, strict=True):
            attends = block_type.startswith("CrossAttn")
            parts = block.attentions if attends else block.resnets
            for part, module in zip(parts, level.motion_modules, strict=True):
                yield part, module, attends
    if motion.mid_block is not None:
        for part, module in zip(unet.mid_block.attentions, motion.mid_block.motion_modules, strict=True):
            yield part, module, True


def inflate(unet: Any, config: MotionConfig, *, motion: MotionStack | None = None) -> MotionUNet:
    """Hook a motion stack into ``unet`` (shared, not copied) and return the handle.

    ``motion`` defaults to a fresh stack (``proj_out`` zero: the result still equals the image
    U-Net); pass a loaded one to use trained weights (``adapter.load_motion_adapter`` does). The
    stack is moved to the U-Net's device and dtype and put in the U-Net's train/eval mode.
    """
    if unet in _INFLATED:
        raise BadParameter("unet", type(unet).__name__, "a U-Net without motion modules; this one already has "
                           "a stack hooked in", hint="call remove() on the MotionUNet that holds it first")
    check_fits(config, unet)
    if motion is None:
        motion = MotionStack(config)
    elif motion.config != config:
        raise BadParameter("motion", motion.config, f"a stack built from {config}")
    motion = motion.to(device=unet.device, dtype=unet.dtype).train(unet.training)
    handle = MotionUNet(unet=unet, motion=motion)
    for part, module, returns_tuple in _targets(unet, motion):
        handle._handles.append(part.register_forward_hook(handle._hook(module, returns_tuple)))
    _INFLATED[unet] = handle
    return handle
