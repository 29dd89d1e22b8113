"""Load a bundle's components onto a device, offline, safetensors first, with errors that name files.

Before diffusers or transformers sees a weight file we check it ourselves (header, truncation,
tensor shapes against a model built on the ``meta`` device from the component's config), so a
broken bundle is reported as "this file, this tensor, this problem" rather than a deep traceback.
Loading itself goes through ``from_pretrained(local_files_only=True)``: the same code path any
diffusers folder takes.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"  # never a hub: a bundle is a folder, and a broken one is reported as such
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DIFFUSERS_NO_ADVISORY_WARNINGS", "1")

import torch  # noqa: E402

from .bundle import COMPONENT_CLASSES, Bundle, check_config, component_weights  # noqa: E402
from .errors import BundleCorrupt, ComponentMissing  # noqa: E402
from .safetensors_check import explain_load_failure, read_header  # noqa: E402

log = logging.getLogger("sfumato")


@dataclass
class Models:
    """Everything one job needs from a bundle, on one device and dtype."""

    bundle: Bundle
    device: torch.device
    dtype: torch.dtype
    unet: Any
    vae: Any
    text_encoders: list[Any]  # one (SD 1.x/2.x) or two (SDXL)
    tokenizers: list[Any]
    scheduler_config: dict[str, Any]
    controlnet: Any | None = None  # the depth ControlNet (controlnet_depth)
    controlnets: dict[str, Any] = field(default_factory=dict)  # every attached ControlNet by kind, depth included
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. the fitted latent->RGB preview map

    @property
    def is_sdxl(self) -> bool:
        return len(self.text_encoders) == 2

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def _model_class(component: str):
    library, name = COMPONENT_CLASSES[component]
    module = __import__(library)
    return getattr(module, name)


def _expected_shapes(component: str, folder: Path) -> dict[str, tuple[int, ...]]:
    cls = _model_class(component)
    config = check_config(folder / "config.json")  # bounded before anything is built from it
    with torch.device("meta"):
        if COMPONENT_CLASSES[component][0] == "diffusers":
            model = cls.from_config(config)
        else:
            import transformers

            model = cls(transformers.CLIPTextConfig.from_pretrained(str(folder), local_files_only=True))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _canonical(name: str) -> str:
    """transformers 5 drops CLIP's ``text_model.`` level that files saved by older versions carry."""
    return name[len("text_model."):] if name.startswith("text_model.") else name


def check_shapes(component: str, folder: Path, files: list[Path]) -> None:
    """Compare the tensors in ``files`` with what the component's config builds."""
    found: dict[str, tuple[tuple[int, ...], Path]] = {}
    for f in files:
        for name, info in read_header(f).items():
            found[_canonical(name)] = (info.shape, f)
    expected = {_canonical(k): v for k, v in _expected_shapes(component, folder).items()}
    if not set(found) & set(expected):
        raise BundleCorrupt(files[0], f"none of its {len(found)} tensors belongs to a "
                            f"{COMPONENT_CLASSES[component][1]} (e.g. {next(iter(found), 'none')!r})",
                            hint="wrong file in this folder?")
    mismatched = [f"{k}: file has {list(found[k][0])}, config {folder.name}/config.json needs {list(v)}"
                  for k, v in expected.items() if k in found and found[k][0] != v]
    if mismatched:
        raise BundleCorrupt(found[next(k for k in expected if k in found and found[k][0] != expected[k])][1],
                            "wrong tensor shapes: " + "; ".join(mismatched[:4])
                            + (f"; and {len(mismatched) - 4} more" if len(mismatched) > 4 else ""),
                            hint="the weights do not belong to this config (mixed-up bundle?)")
    missing = [k for k in expected if k not in found and not k.endswith("position_ids")]
    legacy = any(k.endswith((".query.weight", ".proj_attn.weight")) for k in found)  # diffusers renames these
    if missing and not legacy:
        raise BundleCorrupt(files[0], f"{len(missing)} tensors are missing, e.g. {', '.join(missing[:3])}",
                            hint="the file is partial; copy it again")


def load_component(bundle: Bundle, component: str, device: torch.device, dtype: torch.dtype, *,
                   allow_pickle: bool = False) -> Any:
    folder = bundle.component_dir(component)
    if component.startswith("tokenizer"):
        from transformers import CLIPTokenizer

        try:
            return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # transformers raises assorted types for a broken tokenizer folder
            raise BundleCorrupt(folder, f"tokenizer failed to load: {exc}") from None
    files = component_weights(folder, allow_pickle=allow_pickle)
    safe = all(f.suffix == ".safetensors" for f in files)
    if safe:
        check_shapes(component, folder, files)
    stem_parts = files[0].name.split(".")
    variant = stem_parts[1] if safe and len(stem_parts) == 3 else None  # the only file is a variant
    cls = _model_class(component)
    dtype_kw = "torch_dtype" if COMPONENT_CLASSES[component][0] == "diffusers" else "dtype"
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=safe,
                                    variant=variant, **{dtype_kw: dtype})
    except Exception as exc:  # diffusers and transformers raise assorted types for a broken folder
        from .device import is_out_of_memory

        if isinstance(exc, MemoryError) or is_out_of_memory(exc):
            raise  # the job's out_of_memory_as_error says this one
        raise explain_load_failure(folder, exc, f"{COMPONENT_CLASSES[component][1]} failed to load") from None
    return model.to(device).eval().requires_grad_(False)


def load_models(bundle: Bundle, device: torch.device, dtype: torch.dtype, *, need_controlnet: bool = False,
                controls: tuple[str, ...] = (), allow_pickle: bool = False) -> Models:
    """Load what generation needs. The VAE stays in fp32 when the bundle asks (``force_upcast``)."""
    load = lambda c, dt=dtype: load_component(bundle, c, device, dt, allow_pickle=allow_pickle)  # noqa: E731
    encoders, tokenizers = [load("text_encoder")], [load("tokenizer")]
    if "text_encoder_2" in bundle.components:
        encoders.append(load("text_encoder_2"))
        tokenizers.append(load("tokenizer_2"))
    scheduler_dir = bundle.component_dir("scheduler")
    try:
        scheduler_config = json.loads((scheduler_dir / "scheduler_config.json").read_text())
    except (OSError, ValueError) as exc:
        raise BundleCorrupt(scheduler_dir / "scheduler_config.json", f"unreadable: {exc}") from None
    if not isinstance(scheduler_config, dict):
        raise BundleCorrupt(scheduler_dir / "scheduler_config.json", "is not a JSON object")
    vae_config = check_config(bundle.component_dir("vae") / "config.json")
    vae_dtype = torch.float32 if dtype == torch.float16 and vae_config.get("force_upcast", True) else dtype
    models = Models(bundle=bundle, device=device, dtype=dtype, unet=load("unet"), vae=load("vae", vae_dtype),
                    text_encoders=encoders, tokenizers=tokenizers, scheduler_config=scheduler_config)
    if need_controlnet:
        attach_controlnet(models, allow_pickle=allow_pickle)
    attach_controls(models, controls, allow_pickle=allow_pickle)
    return models


def attach_controlnet(models: Models, *, allow_pickle: bool = False) -> None:
    if models.controlnet is not None:
        return
    if "controlnet_depth" not in models.bundle.components:
        raise ComponentMissing(
            f"bundle {models.bundle.name!r} has no depth ControlNet (component controlnet_depth), so "
            "depth-guided generation is not available with it",
            hint="add a depth ControlNet made for its family with `sfumato bundle add-controlnet NAME FOLDER` (a "
            "bundle with sfumato.json uses only the components and weights listed there), or generate without "
            "--depth (image-to-image from a render with --init works with every bundle)")
    models.controlnet = load_component(models.bundle, "controlnet_depth", models.device, models.dtype,
                                       allow_pickle=allow_pickle)
    models.controlnets["depth"] = models.controlnet


def attach_controls(models: Models, kinds: tuple[str, ...], *, allow_pickle: bool = False) -> None:
    """Load the bundle's ControlNets of these kinds (``controlnet_<kind>``) that are not loaded yet; a kind the
    bundle lacks is refused with the kinds it has."""
    from .capabilities import CONTROLNET_PREFIX

    for kind in kinds:
        if kind == "depth":
            attach_controlnet(models, allow_pickle=allow_pickle)
            continue
        if kind in models.controlnets:
            continue
        if f"{CONTROLNET_PREFIX}{kind}" not in models.bundle.components:
            held = sorted(c[len(CONTROLNET_PREFIX):] for c in models.bundle.components
                          if c.startswith(CONTROLNET_PREFIX))
            raise ComponentMissing(
                f"bundle {models.bundle.name!r} has no {kind} ControlNet (component {CONTROLNET_PREFIX}{kind}); its "
                f"ControlNets: {', '.join(held) or 'none'}",
                hint=f"add one made for its family with `sfumato bundle add {models.bundle.name} FILE --as "
                f"controlnet-{kind}`, or leave the {kind} control out")
        models.controlnets[kind] = load_component(models.bundle, f"{CONTROLNET_PREFIX}{kind}", models.device,
                                                  models.dtype, allow_pickle=allow_pickle)


class ModelCache:
    """Keeps the most recently used bundle loaded; a different bundle/device/dtype replaces it."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._models: Models | None = None

    def get(self, bundle: Bundle, device: torch.device, dtype: torch.dtype, *, need_controlnet: bool = False,
            controls: tuple[str, ...] = (), allow_pickle: bool = False) -> Models:
        key = (str(bundle.path), bundle.identity(), str(device), str(dtype))
        if key != self._key:
            self.release()
            log.info("loading bundle %s on %s (%s)", bundle.name, device, dtype)
            self._models = load_models(bundle, device, dtype, allow_pickle=allow_pickle)
            self._key = key
        assert self._models is not None
        if need_controlnet:
            attach_controlnet(self._models, allow_pickle=allow_pickle)
        attach_controls(self._models, controls, allow_pickle=allow_pickle)
        return self._models

    def release(self) -> None:
        from .device import empty_cache

        self._models, self._key = None, None
        empty_cache()

    @property
    def loaded(self) -> str | None:
        return self._models.bundle.name if self._models else None
