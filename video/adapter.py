"""AnimateDiff motion-adapter weights into a ``MotionStack``: two key layouts, safetensors only.

Both layouts hold the same tensors under different names. With ``M = down_blocks.0.motion_modules.0``:

* diffusers ``MotionAdapter`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``), our layout:
  ``M.norm``, ``M.proj_in``, ``M.proj_out``, ``M.transformer_blocks.0.attn1.to_q.weight``,
  ``….norm1`` / ``norm2`` / ``norm3``, ``….ff.net.0.proj`` / ``ff.net.2``, ``….pos_embed.pe`` (1, L, C);
* original AnimateDiff checkpoint (``mm_sd_v15_v2`` …, converted to safetensors), one file:
  ``M.temporal_transformer.norm``, …, ``M.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q.weight``,
  ``….norms.0`` / ``norms.1`` / ``ff_norm``, ``….ff.net.0.proj`` / ``ff.net.2``,
  ``….attention_blocks.{0,1}.pos_encoder.pe``: a table per attention.

The original keeps a positional table per attention; both are the same fixed sinusoid, so they
become the block's one ``pos_embed.pe`` (we check that they are equal). The table is not learned:
where a file lacks it, the sinusoid of the configured length is used.

Versions, told apart by keys and by the positional table's length L (diffusers' single-file loader
uses the same signature):

* **v1** (``mm_sd_v14``, ``mm_sd_v15``): no mid-block module, L = 24.
* **v2** (``mm_sd_v15_v2``): a mid-block module (``mid_block.motion_modules.0…``), L = 32.
* **v3** (``v3_sd15_mm``): no mid-block module, L = 32. Nothing else in the file marks v3 — its
  modules have v1's shape with v2's table length; what v3 adds (a domain-adapter LoRA, SparseCtrl)
  ships in other files. A v2 file with its mid-block module removed would read as v3.
* **sdxl_beta** (``mm_sdxl_v10_beta``): v3's signature on a three-level (SDXL) U-Net.
* **custom**: any other combination; it loads all the same — the label only informs.

What the files do not record is assumed: the original layout stores neither the number of heads
(``to_q`` is C×C whatever the split) nor the GroupNorm's groups, so they come from arguments whose
defaults, 8 heads and 32 groups, are those of every released AnimateDiff module.

Every check happens on the safetensors headers before a tensor is read: missing, unexpected and
mis-shaped keys are ``BundleCorrupt`` errors that name them; an adapter made for another U-Net is a
``BadParameter`` from ``motion.check_fits``, raised before the tensors are read.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch

from ..core.bundle import component_weights
from ..core.errors import BadParameter, BundleCorrupt, PickleRefused
from ..core.safetensors_check import is_pickle, load_state_dict, read_header
from .motion import MotionConfig, MotionStack, MotionUNet, check_fits, inflate

Layout = Literal["diffusers", "original"]
Version = Literal["v1", "v2", "v3", "sdxl_beta", "custom"]
T = TypeVar("T")

WEIGHTS = "diffusion_pytorch_model.safetensors"
PE = "pos_embed.pe"  # the positional table's key suffix in our (diffusers') layout
_ORIGINAL_RENAMES = ((".temporal_transformer.", "."), (".attention_blocks.0.", ".attn1."),
                     (".attention_blocks.1.", ".attn2."), (".norms.0.", ".norm1."), (".norms.1.", ".norm2."),
                     (".ff_norm.", ".norm3."))
_ORIGINAL_PE = re.compile(r"\.attn[12]\.pos_encoder\.pe$")  # after the renames above


@dataclass(frozen=True)
class AdapterInfo:
    """What a motion-adapter file is, read from its keys and shapes."""

    layout: Layout
    version: Version
    max_frames: int  # L, the positional table's length
    mid_block: bool  # has a mid-block module


@dataclass
class MotionWeights:
    """A motion adapter read from disk, in our (diffusers') key layout, not yet tied to a U-Net."""

    config: MotionConfig
    state: dict[str, torch.Tensor]
    info: AdapterInfo
    path: Path


# --- key layouts ---

def layout_of(keys: Sequence[str], where: Any = "motion adapter") -> Layout:
    """``original`` if the keys use AnimateDiff's ``temporal_transformer`` level, else ``diffusers``."""
    if any(".temporal_transformer." in k for k in keys):
        return "original"
    if any(".motion_modules." in k for k in keys):
        return "diffusers"
    raise BundleCorrupt(where, f"none of its {len(keys)} tensors belongs to a motion adapter (e.g. "
                        f"{next(iter(keys), 'none')!r}; expected down_blocks.0.motion_modules.0.…)",
                        hint="wrong file? a motion adapter holds only the frame-attention modules")


def original_to_diffusers(state: Mapping[str, T]) -> dict[str, T]:
    """Rename original AnimateDiff keys to ours; the two per-attention tables become one ``pos_embed.pe``.

    Works on tensors or on shapes. Two tables of one block that differ are an error: we keep one.
    """
    out: dict[str, T] = {}
    for key, value in state.items():
        new = key
        for old, repl in _ORIGINAL_RENAMES:
            new = new.replace(old, repl)
        if _ORIGINAL_PE.search(new):
            new = _ORIGINAL_PE.sub("." + PE, new)
            if new in out and not _same(out[new], value):
                raise BundleCorrupt(key, "its two attentions carry different positional tables; Sfumato's "
                                    "frame attention shares one per block, as diffusers does")
        out[new] = value
    return out


def diffusers_to_original(state: Mapping[str, T]) -> dict[str, T]:
    """Our keys to AnimateDiff's original layout (each block's table written for both attentions)."""
    out: dict[str, T] = {}
    for key, value in state.items():
        head, _, tail = key.partition(".motion_modules.")
        index, _, rest = tail.partition(".")
        rest = "." + rest + "."
        for old, repl in reversed(_ORIGINAL_RENAMES[1:]):
            rest = rest.replace(repl, old)
        base = f"{head}.motion_modules.{index}.temporal_transformer{rest[:-1]}"
        if base.endswith("." + PE):  # a copy for the second attention: safetensors refuses shared storage
            second = value.clone() if isinstance(value, torch.Tensor) else value
            for k, table in enumerate((value, second)):
                out[base[: -len(PE)] + f"attention_blocks.{k}.pos_encoder.pe"] = table
        else:
            out[base] = value
    return out


def _same(a: Any, b: Any) -> bool:
    return torch.equal(a, b) if isinstance(a, torch.Tensor) else tuple(a) == tuple(b)


# --- versions and configs ---

def _levels(keys: Sequence[str], part: str) -> dict[int, set[int]]:
    """{level: {module indices}} for ``part`` = down_blocks / up_blocks."""
    found: dict[int, set[int]] = {}
    for m in re.finditer(rf"^{part}\.(\d+)\.motion_modules\.(\d+)\.", "\n".join(keys), re.MULTILINE):
        found.setdefault(int(m[1]), set()).add(int(m[2]))
    return found


def detect(shapes: Mapping[str, Sequence[int]], *, max_frames: int | None = None) -> AdapterInfo:
    """Layout and version of a motion adapter from its tensor names and shapes (either layout).

    ``max_frames`` is used when the file has no positional table (a diffusers folder's config has it).
    """
    layout = layout_of(list(shapes))
    ours = original_to_diffusers(shapes) if layout == "original" else dict(shapes)
    mid = any(k.startswith("mid_block.motion_modules.") for k in ours)
    tables = [tuple(v) for k, v in ours.items() if k.endswith(PE)]
    if tables:
        max_frames = tables[0][1]
    if max_frames is None:
        raise BundleCorrupt("motion adapter", f"no positional table ({PE} / pos_encoder.pe) and no config to "
                            "say its length", hint="pass max_frames")
    levels = len(_levels(list(ours), "down_blocks"))
    if mid:
        version: Version = "v2" if max_frames == 32 else "custom"
    elif max_frames == 24:
        version = "v1"
    elif max_frames == 32:
        version = "sdxl_beta" if levels == 3 else "v3"
    else:
        version = "custom"
    return AdapterInfo(layout=layout, version=version, max_frames=max_frames, mid_block=mid)


def config_from_keys(shapes: Mapping[str, Sequence[int]], info: AdapterInfo, *,
                     num_attention_heads: int | Sequence[int] = 8, norm_num_groups: int = 32) -> MotionConfig:
    """The stack's shape read off our-layout keys; heads and groups are not in the file (see the top)."""
    keys = list(shapes)
    down = _levels(keys, "down_blocks")
    if not down or sorted(down) != list(range(len(down))):
        raise BundleCorrupt("motion adapter", f"down-block levels {sorted(down)} are not 0..n-1")
    norms = [f"down_blocks.{i}.motion_modules.0.norm.weight" for i in range(len(down))]
    if any(k not in shapes for k in norms):
        raise BundleCorrupt("motion adapter", f"missing {next(k for k in norms if k not in shapes)}: cannot tell "
                            "the level's width")
    channels = tuple(shapes[k][0] for k in norms)

    def blocks(prefix: str) -> int:
        pattern = rf"^{re.escape(prefix)}\.transformer_blocks\.(\d+)\."
        return len({m[1] for m in re.finditer(pattern, "\n".join(keys), re.MULTILINE)})

    mid_layers = len({k.split(".")[2] for k in keys if k.startswith("mid_block.motion_modules.")})
    return MotionConfig(block_out_channels=channels,
                        layers_per_block=tuple(len(down[i]) for i in range(len(down))),
                        num_attention_heads=_per_level(num_attention_heads, len(down), "num_attention_heads"),
                        transformer_layers=tuple(blocks(f"down_blocks.{i}.motion_modules.0") for i in range(len(down))),
                        max_frames=info.max_frames, norm_num_groups=norm_num_groups, mid_block=info.mid_block,
                        mid_layers=max(mid_layers, 1),
                        mid_transformer_layers=blocks("mid_block.motion_modules.0") if info.mid_block else 1)


def _per_level(value: Any, levels: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * levels
    if isinstance(value, (list, tuple)) and len(value) == levels and all(isinstance(v, int) for v in value):
        return tuple(value)
    raise BadParameter(f"motion_adapter config {name}", value, f"an integer or {levels} integers, one per level")


def config_from_diffusers(cfg: Mapping[str, Any]) -> MotionConfig:
    """Our ``MotionConfig`` from a diffusers ``MotionAdapter`` ``config.json`` (its defaults where absent).

    ``motion_norm_num_groups`` is honoured here; diffusers' ``UNetMotionModel`` instead builds the
    frame GroupNorm with the *U-Net's* ``norm_num_groups``. Both are 32 for every released adapter.
    """
    if cfg.get("conv_in_channels"):
        raise BadParameter("motion_adapter config conv_in_channels", cfg["conv_in_channels"],
                           "null: adapters with their own conv_in (PIA) are not supported")
    channels = tuple(cfg.get("block_out_channels", (320, 640, 1280, 1280)))
    n = len(channels)
    mid_blocks = cfg.get("motion_transformer_layers_per_mid_block", 1)
    mid_layers = cfg.get("motion_mid_block_layers_per_block", 1)
    mid_blocks = _per_level(mid_blocks, mid_layers, "motion_transformer_layers_per_mid_block")
    if len(set(mid_blocks)) != 1:
        raise BadParameter("motion_adapter config motion_transformer_layers_per_mid_block", mid_blocks,
                           "the same number for every mid-block module")
    def level(name: str, default: int) -> tuple[int, ...]:
        return _per_level(cfg.get(name, default), n, name)

    return MotionConfig(block_out_channels=channels, layers_per_block=level("motion_layers_per_block", 2),
                        num_attention_heads=level("motion_num_attention_heads", 8),
                        transformer_layers=level("motion_transformer_layers_per_block", 1),
                        max_frames=cfg.get("motion_max_seq_length", 32),
                        norm_num_groups=cfg.get("motion_norm_num_groups", 32),
                        mid_block=cfg.get("use_motion_mid_block", True), mid_layers=mid_layers,
                        mid_transformer_layers=mid_blocks[0])


def diffusers_config(config: MotionConfig) -> dict[str, Any]:
    """A diffusers ``MotionAdapter`` ``config.json`` for ``config`` (what ``save_motion_adapter`` writes)."""
    return {"_class_name": "MotionAdapter", "block_out_channels": list(config.block_out_channels),
            "motion_layers_per_block": list(config.layers_per_block),
            "motion_transformer_layers_per_block": list(config.transformer_layers),
            "motion_mid_block_layers_per_block": config.mid_layers,
            "motion_transformer_layers_per_mid_block": config.mid_transformer_layers,
            "motion_num_attention_heads": list(config.num_attention_heads),
            "motion_norm_num_groups": config.norm_num_groups, "motion_max_seq_length": config.max_frames,
            "use_motion_mid_block": config.mid_block, "conv_in_channels": None}


# --- strict checks, reading, writing ---

def expected_shapes(config: MotionConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a stack of ``config`` holds, with its shape (built on the meta device: no memory)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in MotionStack(config).state_dict().items()}


def check_keys(found: Mapping[str, Sequence[int]], config: MotionConfig, where: Any) -> None:
    """Raise ``BundleCorrupt`` naming missing, unexpected and mis-shaped tensors (tables may be absent)."""
    expected = expected_shapes(config)
    missing = [k for k in expected if k not in found and not k.endswith(PE)]
    unexpected = [k for k in found if k not in expected]
    misshaped = [f"{k} is {list(found[k])}, expected {list(v)}" for k, v in expected.items()
                 if k in found and tuple(found[k]) != v]
    problems = [f"{len(items)} {what}: {', '.join(items[:4])}" + (f" and {len(items) - 4} more" * (len(items) > 4))
                for what, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
                if items]
    if problems:
        raise BundleCorrupt(where, "motion adapter does not match its config: " + "; ".join(problems),
                            hint="wrong or partial file, or a config.json from another adapter")


def _weight_files(path: Path) -> tuple[list[Path], dict[str, Any] | None]:
    """(safetensors files, diffusers config or None) for a folder or a single file."""
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise BundleCorrupt(path, "a motion-adapter folder needs config.json (diffusers MotionAdapter layout)")
        try:
            cfg = json.loads(cfg_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BundleCorrupt(cfg_file, f"unreadable: {exc}") from None
        return component_weights(path), cfg
    return [path], None


def read_motion_adapter(path: Path | str, *, unet: Any = None, num_attention_heads: int | Sequence[int] = 8,
                        norm_num_groups: int = 32) -> MotionWeights:
    """Read a diffusers ``MotionAdapter`` folder or an original-layout ``.safetensors`` file.

    1. find the files (pickles are refused: ``PickleRefused``); 2. read headers, rename original keys;
    3. detect the version and build the config (config.json, else from the keys); 4. strict key
    check on shapes; 5. with ``unet`` given, check that the adapter fits it; 6. only then load the
    tensors. ``num_attention_heads``/``norm_num_groups`` only apply when there is no config.json
    (see the top of this file).
    """
    path = Path(path)
    files, cfg = _weight_files(path)
    for f in files:
        if is_pickle(f):
            raise PickleRefused(f, can_allow=False)  # jobs have no --allow-pickle
        if f.suffix != ".safetensors":
            raise BundleCorrupt(f, f"unknown weight format {f.suffix!r}; allowed: .safetensors")
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        shapes.update({k: v.shape for k, v in read_header(f).items()})
    layout = layout_of(list(shapes), path)
    ours = original_to_diffusers(shapes) if layout == "original" else shapes
    if cfg is not None:
        config = config_from_diffusers(cfg)
        info = detect(shapes, max_frames=config.max_frames)
    else:
        info = detect(shapes)
        config = config_from_keys(ours, info, num_attention_heads=num_attention_heads, norm_num_groups=norm_num_groups)
    check_keys(ours, config, path)
    if unet is not None:
        check_fits(config, unet)
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_state_dict(f))
    if layout == "original":
        state = original_to_diffusers(state)
    return MotionWeights(config=config, state=state, info=info, path=path)


def build_stack(weights: MotionWeights) -> MotionStack:
    """A ``MotionStack`` holding ``weights``; absent positional tables keep their sinusoid."""
    stack = MotionStack(weights.config)
    result = stack.load_state_dict(weights.state, strict=False)
    assert not result.unexpected_keys and all(k.endswith(PE) for k in result.missing_keys), result  # checked above
    return stack


def load_motion_adapter(path: Path | str, unet: Any, **kwargs: Any) -> MotionUNet:
    """Read an adapter (see ``read_motion_adapter``) and hook it into ``unet``; ``BadParameter`` if it does not fit."""
    weights = read_motion_adapter(path, unet=unet, **kwargs)
    return inflate(unet, weights.config, motion=build_stack(weights))


def save_motion_adapter(motion: MotionStack, folder: Path | str) -> Path:
    """Write ``motion`` as a diffusers ``MotionAdapter`` folder (config.json + safetensors)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(diffusers_config(motion.config), indent=2))
    save_file({k: v.detach().contiguous().cpu() for k, v in motion.state_dict().items()}, str(folder / WEIGHTS))
    return folder
