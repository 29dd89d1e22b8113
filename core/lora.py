"""LoRAs on loaded models: a job's ``loras`` made the active adapters of its U-Net and text encoders.

Loading is diffusers' own LoRA loader (``load_lora_weights`` of a pipeline built around our modules, no weights
copied), which reads the layouts LoRAs come in: diffusers' and peft's (``save_lora_weights``), kohya-ss / A1111
(``lora_unet_...``), and converts them to peft adapters injected into the networks. Each file becomes one adapter,
named by its hash, and stays loaded in the worker's model cache; a job turns on the ones it names at its scales
(``set_adapters``) and turns the rest off, so a LoRA is re-scaled or removed without reloading the base model.

The adapters stay unfused: peft's layers add ``scale · B(A(x))`` to each wrapped layer's output, so the CPU fast
path (bfloat16 copies of every parameter, LoRA ones included, ``fast.bf16_call``) needs nothing more, and a CUDA
graph captured with other adapters is dropped when they change.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .errors import BadParameter, PickleRefused
from .schema import split_scaled

FIELD = "loras"
WEIGHTS = "pytorch_lora_weights.safetensors"  # what diffusers' save_lora_weights writes into a folder
PICKLES = (".ckpt", ".pt", ".pth", ".bin")


def locate(name: str, bundle) -> Path:
    """A LoRA file: a path (a ``.safetensors`` file, or a folder holding diffusers' ``pytorch_lora_weights``),
    else a name in the bundle's ``loras/`` folder."""
    from .bundle import loras_dir

    folder = loras_dir(bundle)
    for candidate in (Path(name), folder / name, folder / f"{name}.safetensors"):
        if candidate.is_dir() and (candidate / WEIGHTS).is_file():
            return candidate / WEIGHTS
        if candidate.is_file():
            if candidate.suffix.lower() in PICKLES:
                raise PickleRefused(candidate, can_allow=False)
            if candidate.suffix.lower() != ".safetensors":
                raise BadParameter(FIELD, name, "a .safetensors LoRA file or a folder holding one")
            return candidate
    held = sorted(p.stem for p in folder.glob("*.safetensors")) if folder.is_dir() else []
    raise BadParameter(FIELD, name, "an existing .safetensors file or folder, or a LoRA of bundle "
                       f"{bundle.name}: {', '.join(held) or f'it has none ({folder} is empty)'}")


_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> hash: a job's LoRAs are hashed once


def file_hash(path: Path) -> str:
    """The file's sha256 (12 hex digits), computed again only when its size or modification time changed."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = _sha256(path)
    return _HASHES[key]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def pipeline(models):
    """A diffusers pipeline around ``models``' own modules (kept in ``models.extras``): its LoRA loader works on
    them in place."""
    pipe = models.extras.get("lora_pipeline")
    if pipe is None:
        from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

        scheduler = DDIMScheduler.from_config(models.scheduler_config)  # unused: the pipeline needs one
        if models.is_sdxl:
            pipe = StableDiffusionXLPipeline(vae=models.vae, text_encoder=models.text_encoders[0],
                                             text_encoder_2=models.text_encoders[1], tokenizer=models.tokenizers[0],
                                             tokenizer_2=models.tokenizers[1], unet=models.unet, scheduler=scheduler)
        else:
            pipe = StableDiffusionPipeline(vae=models.vae, text_encoder=models.text_encoders[0],
                                           tokenizer=models.tokenizers[0], unet=models.unet, scheduler=scheduler,
                                           safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        models.extras["lora_pipeline"] = pipe
    return pipe


def _load(models, path: Path, adapter: str, entry: str) -> None:
    """``path`` loaded as adapter ``adapter``; a damaged file, a LoRA for other networks, or one of no known layout
    is refused with what did not fit."""
    from .errors import BundleCorrupt
    from .safetensors_check import read_header

    try:
        read_header(path)  # a truncated or damaged file, said before diffusers reads it
    except BundleCorrupt as exc:
        raise BadParameter(FIELD, entry, f"a readable .safetensors file ({exc.problem})") from None
    try:
        pipeline(models).load_lora_weights(str(path), adapter_name=adapter)
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        text = " ".join(str(exc).split())
        if "size mismatch" in text or "shape" in text:
            raise BadParameter(FIELD, entry, f"a LoRA for this bundle's networks ({models.bundle.name}): "
                               f"{text[:300]}") from None
        raise BadParameter(FIELD, entry, "a LoRA in diffusers', peft's or kohya-ss's layout (lora_A/lora_B, "
                           f"lora_down/lora_up or lora_unet_ keys): {text[:300]}") from None
    loaded = models.extras.setdefault("lora_loaded", {})
    loaded[adapter] = str(path)
    if not _injected(models, adapter):
        pipeline(models).delete_adapters(adapter)
        loaded.pop(adapter, None)
        raise BadParameter(FIELD, entry, "a LoRA whose keys name this bundle's layers (none matched: kohya-ss, "
                           "diffusers or peft keys of an SD 1.x/2.x or SDXL U-Net or text encoder)")


def _injected(models, adapter: str) -> bool:
    networks = [models.unet, *models.text_encoders]
    return any(adapter in getattr(m, "peft_config", {}) for m in networks)


def apply(models, entries: tuple[str, ...]) -> list[dict[str, Any]]:
    """Make ``entries`` (``"file_or_name[:scale]"``) the active LoRAs of ``models``, loading what is new; returns
    their provenance (name, hash, scale). An empty list turns every LoRA off."""
    wanted = []
    for entry in entries:
        name, scale = split_scaled(entry)
        path = locate(name, models.bundle)
        digest = file_hash(path)
        adapter = f"lora_{digest}"
        if adapter not in models.extras.get("lora_loaded", {}):
            _load(models, path, adapter, entry)
        wanted.append((adapter, 1.0 if scale is None else scale, path.name if path.name != WEIGHTS
                       else path.parent.name, digest))
    key = tuple((a, s) for a, s, _, _ in wanted)
    if key != models.extras.get("lora_active", ()):
        pipe = pipeline(models)
        if wanted:
            pipe.enable_lora()
            pipe.set_adapters([a for a, *_ in wanted], adapter_weights=[s for _, s, *_ in wanted])
        elif models.extras.get("lora_loaded"):
            pipe.disable_lora()
        models.extras.pop("graphs", None)  # calls captured with other adapters
        models.extras["lora_active"] = key
    provenance = [{"name": n, "hash": h, "scale": s} for _, s, n, h in wanted]
    models.extras["lora_provenance"] = provenance
    return provenance
