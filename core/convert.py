"""Import a single-file Stable Diffusion checkpoint (the original CompVis / Stability layout) as a bundle.

A single-file checkpoint keeps every model in one flat state dict, told apart by key prefixes:

* SD 1.x (``sd15``): ``model.diffusion_model.*`` (UNet, LDM names: ``input_blocks.N.M``,
  ``middle_block``, ``output_blocks``), ``first_stage_model.*`` (VAE, LDM names: ``encoder.down.N.block``,
  ``mid.attn_1.q`` stored as 1x1 convolutions) and ``cond_stage_model.transformer.*`` (OpenAI CLIP
  ViT-L/14, already in the transformers layout under ``text_model.``).
* SD 2.x (``sd21``, the 768-v models): the same UNet and VAE prefixes, and ``cond_stage_model.model.*``,
  an OpenCLIP ViT-H text tower (``transformer.resblocks.N.attn.in_proj_weight`` with q, k and v
  stacked, ``ln_final``, ``token_embedding``, ``positional_embedding``). SD 2.x reads the penultimate
  layer, so diffusers ships 23 of its 24 layers and no projection; the surplus is dropped here.
* SDXL (``sdxl``): the same UNet and VAE prefixes, ``conditioner.embedders.0.transformer.*`` (CLIP
  ViT-L, transformers layout) and ``conditioner.embedders.1.model.*`` (OpenCLIP ViT-bigG, all 32
  layers, plus ``text_projection``, which becomes a ``CLIPTextModelWithProjection``).

EMA copies (``model_ema.*``) and schedule buffers (``betas``, ``alphas_cumprod``...) are ignored.
Key renaming uses diffusers' public converters in ``diffusers.loaders.single_file_utils``; the
architectures come from the JSON files in ``families/<family>/`` (or from ``config_dir``, a
diffusers-layout folder), nothing is fetched. Every converted state dict must match its model
exactly (names and shapes) before it is written.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

import torch

from . import bundle as bundle_mod
from .bundle import COMPONENT_CLASSES, write_manifest
from .errors import BadParameter, BundleCorrupt
from .safetensors_check import load_state_dict, sha256
from .tokenizer_build import clip_merges, write_tokenizer

log = logging.getLogger("sfumato")
FAMILY_DIR = Path(__file__).parent / "families"
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
UNET, VAE = "model.diffusion_model.", "first_stage_model."
# family -> component -> key prefix of that component in the original single file
PREFIXES: dict[str, dict[str, str]] = {
    "sd15": {"unet": UNET, "vae": VAE, "text_encoder": "cond_stage_model.transformer."},
    "sd21": {"unet": UNET, "vae": VAE, "text_encoder": "cond_stage_model.model."},
    "sdxl": {"unet": UNET, "vae": VAE, "text_encoder": "conditioner.embedders.0.transformer.",
             "text_encoder_2": "conditioner.embedders.1.model."},
}
# the prefix that tells each family apart, checked in this order
MARKERS = {"sdxl": "conditioner.embedders.1.model.", "sd21": "cond_stage_model.model.",
           "sd15": "cond_stage_model.transformer."}
# progress: the fraction of the whole import at which each stage starts
STAGES = {"read": 0.0, "hash": 0.15, "unet": 0.25, "vae": 0.6, "text_encoder": 0.68,
          "text_encoder_2": 0.76, "tokenizer": 0.9, "manifest": 0.94, "done": 1.0}
Progress = Callable[[str, float], None]


# ---------------------------------------------------------------- family checks and configs

def detect_family(keys) -> str | None:
    """The family whose text-encoder prefix the keys carry (the UNet and VAE prefixes are shared)."""
    keys = list(keys)
    return next((f for f, marker in MARKERS.items() if any(k.startswith(marker) for k in keys)), None)


def check_family(path: Path, keys, family: str) -> None:
    """Raise a clear error unless the checkpoint's keys are those of ``family``'s original layout."""
    keys = list(keys)
    expected = list(PREFIXES[family].values())
    detected = detect_family(keys)
    if detected is not None and detected != family:
        raise BadParameter("family", family, f"{path.name} holds {detected} weights (it has "
                           f"{MARKERS[detected]}* keys), "
                           f"while {family} expects {', '.join(p + '*' for p in expected)}",
                           hint=f"use --family {detected}")
    absent = [p for p in expected if not any(k.startswith(p) for k in keys)]
    if absent:
        found = sorted({".".join(k.split(".")[:2]) for k in keys})
        hint = ("this looks like the SDXL refiner, which import does not support"
                if any(k.startswith("conditioner.embedders.0.model.") for k in keys) else
                "import needs a whole checkpoint in the original layout (UNet, VAE and text encoder in "
                "one file); a diffusers folder can be used as a bundle as it is")
        raise BundleCorrupt(path, f"is not a {family} checkpoint in the original layout: no keys start with "
                            f"{', '.join(absent)} (expected {', '.join(p + '*' for p in expected)}); found "
                            f"{', '.join(found[:8])}{'…' if len(found) > 8 else ''}", hint=hint)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BundleCorrupt(path, "config file is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleCorrupt(path, f"is not valid JSON: {exc}") from None


def load_configs(family: str, config_dir: Path | None = None) -> dict[str, dict[str, Any]]:
    """component -> config dict, from ``families/<family>/`` or a diffusers-layout ``config_dir``."""
    components = [*PREFIXES[family], "scheduler"]
    if config_dir is None:
        folder = FAMILY_DIR / family
        return {c: _read_json(folder / f"{c}.json") for c in components}
    folder = Path(config_dir)
    return {c: _read_json(folder / c / ("scheduler_config.json" if c == "scheduler" else "config.json"))
            for c in components}


def fit_unet_input(path: Path, configs: dict[str, dict[str, Any]], checkpoint: dict) -> None:
    """An inpainting checkpoint (SD 1.5 inpainting: the U-Net's first convolution reads 9 channels, the latents,
    the mask and the masked image's latents) keeps its family's architecture with that wider input: the U-Net
    config's ``in_channels`` is taken from the tensor ``input_blocks.0.0.weight`` (out, in, 3, 3), either way."""
    conv = checkpoint.get(UNET + "input_blocks.0.0.weight")
    if conv is None or conv.ndim != 4 or conv.shape[1] == configs["unet"].get("in_channels"):
        return  # absent or odd: the key check names it
    latents = int(configs["vae"].get("latent_channels", 4))
    if conv.shape[1] not in (latents, 2 * latents + 1):
        raise BundleCorrupt(path, f"its U-Net reads {conv.shape[1]} input channels ({UNET}input_blocks.0.0.weight "
                            f"{list(conv.shape)}); sfumato runs {latents} (a plain U-Net) or {2 * latents + 1} "
                            "(an inpainting U-Net: latents, mask, masked image)")
    if conv.shape[1] > latents:
        log.info("%s: an inpainting U-Net (%d input channels)", path.name, conv.shape[1])
    configs["unet"] = {**configs["unet"], "in_channels": int(conv.shape[1])}


# ---------------------------------------------------------------- models and key conversion

def _empty_model(component: str, config: dict[str, Any]):
    """The component's model with parameters on the meta device (no memory, no init) and real buffers."""
    import diffusers
    import transformers
    from accelerate import init_empty_weights

    library, class_name = COMPONENT_CLASSES[component]
    with init_empty_weights():
        if library == "diffusers":
            return getattr(diffusers, class_name).from_config(config)
        return getattr(transformers, class_name)(transformers.CLIPTextConfig.from_dict(config))


def _convert(component: str, prefix: str, checkpoint: dict, config: dict, model) -> dict:
    """Rename one component's tensors from the original layout to the diffusers / transformers one."""
    from diffusers.loaders import single_file_utils as sfu

    if component == "unet":
        return sfu.convert_ldm_unet_checkpoint(checkpoint, config)
    if component == "vae":
        return sfu.convert_ldm_vae_checkpoint(checkpoint, config)
    if prefix.endswith(".transformer."):  # OpenAI CLIP: transformers names behind a prefix
        converted = sfu.convert_ldm_clip_checkpoint({k: v for k, v in checkpoint.items() if k.startswith(prefix)})
    else:  # OpenCLIP: keep the layers the config has (SD 2.x drops the last) and the projection if used
        layers, projected = model.config.num_hidden_layers, hasattr(model, "text_projection")
        subset = {}
        for k, v in checkpoint.items():
            block = re.match(re.escape(prefix) + r"transformer\.resblocks\.(\d+)\.", k)
            if not k.startswith(prefix) or (block and int(block.group(1)) >= layers) or \
                    (k == prefix + "text_projection" and not projected):
                continue
            subset[k] = v
        converted = sfu.convert_open_clip_checkpoint(model, subset, prefix=prefix)
    # transformers >= 5.6 dropped the ``text_model.`` level of CLIPTextModel (not of ...WithProjection)
    wrapped, out = hasattr(model, "text_model"), {}
    for k, v in converted.items():
        if k.endswith("position_ids"):
            continue
        k = k.removeprefix("text_model.")
        out[f"text_model.{k}" if wrapped and not k.startswith("text_projection") else k] = v
    return out


def _original_name(key: str, converted: dict, origin: dict[int, str]) -> str | None:
    """Guess the original name of a missing diffusers key from a converted sibling of the same module."""
    parent, _, leaf = key.rpartition(".")
    for other, tensor in converted.items():
        source = origin.get(id(tensor))
        if source and other.rpartition(".")[0] == parent:
            return f"{source.rpartition('.')[0]}.{leaf}"
    return None


def _check_keys(path: Path, component: str, prefix: str, converted: dict, model, origin: dict[int, str]) -> None:
    """Missing, unexpected or mis-shaped tensors -> ``BundleCorrupt`` naming the file and examples."""
    expected = model.state_dict()
    name = lambda k: origin.get(id(converted.get(k))) or _original_name(k, converted, origin)  # noqa: E731
    shown = lambda k: f"{name(k)} ({component} {k})" if name(k) else f"{component} {k}"  # noqa: E731
    missing = [k for k in expected if k not in converted]
    unexpected = [k for k in converted if k not in expected]
    wrong = [k for k in converted if k in expected and tuple(converted[k].shape) != tuple(expected[k].shape)]
    hint = "the file is partial, or its model differs from this family's architecture (check --family)"
    if missing:
        raise BundleCorrupt(path, f"{len(missing)} tensor(s) of the {component} are missing (under {prefix}*), "
                            f"e.g. {'; '.join(shown(k) for k in missing[:3])}", hint=hint)
    if wrong:
        raise BundleCorrupt(path, f"{len(wrong)} tensor(s) of the {component} have the wrong shape, e.g. "
                            + "; ".join(f"{shown(k)}: file {list(converted[k].shape)}, config needs "
                                        f"{list(expected[k].shape)}" for k in wrong[:3]), hint=hint)
    if unexpected:
        raise BundleCorrupt(path, f"{len(unexpected)} tensor(s) under {prefix}* do not fit the {component}, e.g. "
                            f"{'; '.join(shown(k) for k in unexpected[:3])}", hint=hint)


def _warn_unused(path: Path, component: str, prefix: str, checkpoint: dict, converted: dict) -> None:
    """The UNet and VAE converters skip tensors they have no place for: say so (VAE loss nets aside)."""
    ids = {id(v) for v in converted.values()}
    storages = {v.untyped_storage().data_ptr() for v in converted.values()}  # the VAE's 1x1 convs are views
    left = [k for k, v in checkpoint.items() if k.startswith(prefix) and not k.startswith(VAE + "loss.")
            and id(v) not in ids and v.untyped_storage().data_ptr() not in storages]
    if left:
        log.warning("%s: ignored %d tensor(s) under %s* that the %s has no place for, e.g. %s",
                    path, len(left), prefix, component, ", ".join(left[:3]))


def _import_component(path: Path, component: str, prefix: str, checkpoint: dict, config: dict,
                      folder: Path, dtype: torch.dtype) -> None:
    model = _empty_model(component, config)
    origin = {id(v): k for k, v in checkpoint.items() if k.startswith(prefix)}
    try:
        converted = _convert(component, prefix, checkpoint, config, model)
    except KeyError as exc:
        raise BundleCorrupt(path, f"tensor {prefix}{exc.args[0]} of the {component} is missing",
                            hint="the file is partial, or not of this family (check --family)") from None
    except (AttributeError, TypeError, IndexError, RuntimeError) as exc:
        raise BundleCorrupt(path, f"the {component} tensors could not be converted: {exc}") from None
    converted = {k: v for k, v in converted.items() if v is not None}  # None: absent from the file
    _check_keys(path, component, prefix, converted, model, origin)
    if component in ("unet", "vae"):
        _warn_unused(path, component, prefix, checkpoint, converted)
    converted = {k: v.to(dtype) if v.is_floating_point() else v for k, v in converted.items()}
    model.load_state_dict(converted, strict=True, assign=True)
    bundle_mod.save_component(model, folder / component)


# ---------------------------------------------------------------- the import

def _notify(on_progress: Progress | None, stage: str) -> None:
    if on_progress is not None:
        on_progress(stage, STAGES[stage])


def import_checkpoint(path: str | os.PathLike, family: str, *, dest_root: str | os.PathLike | None = None,
                      name: str | None = None, allow_pickle: bool = False,
                      config_dir: str | os.PathLike | None = None, dtype: str = "fp16", overwrite: bool = False,
                      on_progress: Progress | None = None) -> Path:
    """Convert the single-file checkpoint ``path`` of ``family`` into the bundle ``dest_root/name``.

    ``dest_root`` defaults to the user bundle folder, ``name`` to the file's stem. ``config_dir`` is a
    diffusers-layout folder whose configs (and tokenizer folders, if any) replace the family's.
    ``dtype`` is ``fp16`` or ``fp32`` for the written weights. Nothing is written at ``dest_root/name``
    until the whole bundle is done; an existing bundle is only replaced with ``overwrite=True``.
    ``on_progress(stage, fraction)`` is called as each stage starts. Returns the bundle folder.
    """
    path = Path(path).expanduser()
    if family not in PREFIXES:
        raise BadParameter("family", family, ", ".join(PREFIXES),
                           hint="sd15 for SD 1.x, sd21 for SD 2.x (768-v), sdxl for SDXL base")
    if dtype not in DTYPES:
        raise BadParameter("dtype", dtype, ", ".join(DTYPES))
    name = name or path.stem
    if not name or os.sep in name or "/" in name or name.startswith((".", "_")):
        raise BadParameter("name", name, "a plain folder name, not starting with '.' or '_'")
    dest_root = Path(dest_root).expanduser() if dest_root is not None else bundle_mod.user_dir()
    target = dest_root / name
    if target.exists() and not overwrite:
        raise BadParameter("name", name, f"a bundle already exists at {target}",
                           hint="choose another --name, or pass --overwrite to replace it")
    if not path.is_file():
        raise BundleCorrupt(path, "file is missing")
    config_dir = Path(config_dir).expanduser() if config_dir is not None else None
    configs = load_configs(family, config_dir)

    _notify(on_progress, "read")
    checkpoint = {k: v for k, v in load_state_dict(path, allow_pickle=allow_pickle).items()
                  if isinstance(v, torch.Tensor) and not k.startswith("model_ema.")}
    check_family(path, checkpoint, family)
    fit_unet_input(path, configs, checkpoint)
    _notify(on_progress, "hash")
    digest = sha256(path)

    dest_root.mkdir(parents=True, exist_ok=True)
    tmp = dest_root / f".{name}.importing-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    old = None
    try:
        for component, prefix in PREFIXES[family].items():
            _notify(on_progress, component)
            _import_component(path, component, prefix, checkpoint, configs[component], tmp, DTYPES[dtype])
            for k in [k for k in checkpoint if k.startswith(prefix)]:
                del checkpoint[k]  # free each component's source tensors once written
        _notify(on_progress, "tokenizer")
        pads = _read_json(FAMILY_DIR / family / "tokenizers.json")
        for tokenizer, options in pads.items():
            if config_dir is not None and (config_dir / tokenizer).is_dir():
                shutil.copytree(config_dir / tokenizer, tmp / tokenizer)
            else:
                write_tokenizer(tmp / tokenizer, clip_merges(), pad_token=options["pad_token"],
                                max_length=options.get("model_max_length", 77))
        (tmp / "scheduler").mkdir()
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(configs["scheduler"], indent=2) + "\n")
        _notify(on_progress, "manifest")
        write_manifest(tmp, name=name, family=family, license="as the source checkpoint's licence (unknown)",
                       description=f"imported from {path.name}" + (
                           " (an inpainting U-Net)" if configs["unet"].get("in_channels", 4) > 4 else ""),
                       extra={"source": {"file": path.name, "sha256": digest}})
        if target.exists():
            if not overwrite:
                raise BadParameter("name", name, f"a bundle already exists at {target}",
                                   hint="choose another --name, or pass --overwrite to replace it")
            old = dest_root / f".{name}.replaced-{uuid.uuid4().hex[:8]}"
            target.rename(old)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists():
            old.rename(target)  # put the replaced bundle back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _notify(on_progress, "done")
    return target
