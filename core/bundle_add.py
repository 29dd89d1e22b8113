"""Adding to and removing from a user bundle: ControlNets and LoRAs in their usual files, and what a bundle holds.

``sfumato bundle add BUNDLE FILE --as KIND`` runs one story for every kind:

1. **The bundle may be written**: a user bundle, never the embedded one (``writable``).
2. **The file is read and checked** before anything is written: no pickle; it fits the bundle's family (a
   ControlNet's cross-attention width, channels and SDXL additions against the bundle's U-Net config); an original
   single-file ControlNet (``control_model.input_blocks…``, ``zero_convs``, ``input_hint_block``) is renamed by
   diffusers' own converter (``single_file_utils.convert_controlnet_checkpoint``) into a config derived from the
   bundle's U-Net (``ControlNetModel.from_unet``, on the meta device), plus SDXL's text/time embedding, which that
   converter leaves out (``label_emb`` -> ``add_embedding``), and every converted tensor must match that model by
   name and shape; a LoRA must load onto the bundle's networks (``core/lora.py``).
3. **It is written into a staging folder inside the bundle** (``.sfumato-add-*``), then moved into place by
   renames and the manifest replaced in one ``os.replace``, with each weight file's sha256: a failure at any point
   leaves the bundle as it was.

Components: ``controlnet_depth`` (the one depth-guided jobs use), ``controlnet_normal``, ``controlnet_lineart``,
``controlnet_canny``; ``motion_adapter`` (its reader lives with the video head: ``video/motion_add.py``, which hands
``add_component`` a writer); LoRAs go to ``loras/NAME.safetensors``, listed in the manifest too.

The manifest is updated entry by entry rather than rebuilt with ``write_manifest``: that one hashes every file of
the bundle again and keeps only the standard component folders, while an edit touches one component.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Callable

from .bundle import (MANIFEST, MANIFEST_FORMAT, REQUIRED, Bundle, check_config, component_weights, embedded_dir,
                     is_embedded, loras_dir, resolve, user_dir)
from .errors import BadParameter, BundleCorrupt, PickleRefused
from .safetensors_check import is_pickle, read_header, sha256

# --as KIND -> the component it becomes ("loras" for LoRAs, which are files in loras/, not a component)
KINDS = {"controlnet-depth": "controlnet_depth", "controlnet-normal": "controlnet_normal",
         "controlnet-lineart": "controlnet_lineart", "controlnet-canny": "controlnet_canny",
         "motion": "motion_adapter", "lora": "loras"}
BASE = (*REQUIRED, "text_encoder_2", "tokenizer_2")  # what makes images at all: never removed
FAMILY_NAMES = {"sd15": "SD 1.5", "sd21": "SD 2.1", "sdxl": "SDXL", "mini": "mini (the embedded family)"}
LORAS = "loras"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
Writer = Callable[[Path], None]  # writes a component's files into the (empty) folder it is given


# ---- 1. the bundle may be written --------------------------------------------------------------------------------
def writable(name_or_path: str | os.PathLike | Bundle) -> Bundle:
    """The bundle to edit; the embedded bundle is refused (the project ships it; copy it to change it)."""
    b = name_or_path if isinstance(name_or_path, Bundle) else resolve(name_or_path)
    if b.path.resolve().is_relative_to(embedded_dir().resolve()):
        raise BadParameter("bundle", b.name, "a user bundle: the embedded bundle is part of the engine and is never "
                           "changed by `sfumato bundle add` or `remove`",
                           hint=f"copy it first (cp -r {b.path} {user_dir() / ('my-' + b.name)}) and add to the "
                           "copy, or use another user bundle")
    return b


def source_path(source: str | os.PathLike) -> Path:
    """The file or folder offered: it exists and is not a pickle (like every loader of the engine)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise BadParameter("file", str(source), "an existing .safetensors file or diffusers folder")
    if path.is_file() and is_pickle(path):
        raise PickleRefused(path, can_allow=False)
    if path.is_dir() and not any(path.glob("*.safetensors")) and any(is_pickle(f) for f in path.iterdir()):
        raise PickleRefused(next(f for f in sorted(path.iterdir()) if is_pickle(f)), can_allow=False)
    if path.is_file() and path.suffix.lower() != ".safetensors":
        raise BadParameter("file", str(source), "a .safetensors file or a diffusers folder (config.json and "
                           ".safetensors weights)")
    return path


# ---- 2. ControlNets: the bundle's U-Net says what fits ------------------------------------------------------------
def meta_unet(b: Bundle) -> Any:
    """The bundle's U-Net built on the meta device from its (bounded) config: shapes and config, no memory."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel.from_config(check_config(b.component_dir("unet") / "config.json"))


INPAINT_IN = 9  # an inpainting U-Net's input: latents, mask and masked-image latents (4 + 1 + 4)


def latent_in(config: Any) -> int:
    """The latent channels a network takes: an inpainting U-Net's 9 inputs are 4 latent channels widened (its
    ControlNets, like the base model's, see the 4 latent channels)."""
    channels = int(config["in_channels"])
    return (channels - 1) // 2 if channels == INPAINT_IN else channels


def _signature(config: Any) -> dict[str, Any]:
    """What tells families apart: cross-attention width, input and first-level channels, SDXL's text/time input."""
    return {"cross_attention_dim": config["cross_attention_dim"], "in_channels": latent_in(config),
            "channels": config["block_out_channels"][0], "sdxl": config.get("addition_embed_type") == "text_time"}


def _family_of(sig: dict[str, Any]) -> str | None:
    if sig["sdxl"]:
        return "sdxl"
    return {768: "sd15", 1024: "sd21"}.get(sig["cross_attention_dim"])


def _words(sig: dict[str, Any]) -> str:
    return (f"cross-attention width {sig['cross_attention_dim']}, {sig['in_channels']} latent channels, "
            f"{sig['channels']} first-level channels, " + ("with" if sig["sdxl"] else "without")
            + " SDXL's text and time embeddings")


def check_family(b: Bundle, path: Path, theirs: dict[str, Any], unet: Any = None) -> None:
    """Refuse a ControlNet made for another family, in one sentence naming both."""
    what = "ControlNet"
    ours = _signature((unet or meta_unet(b)).config)
    if theirs == ours:
        return
    family, ours_name = _family_of(theirs), FAMILY_NAMES.get(b.family, b.family)
    this = f"an {FAMILY_NAMES[family]} {what}" if family and family != b.family else f"a {what} for another U-Net"
    raise BadParameter("file", str(path), f"a {what} for {ours_name}, the family of bundle {b.name} ({_words(ours)}); "
                       f"this is {this} ({_words(theirs)})",
                       hint=f"use a {what} made for {ours_name}, or add this one to a bundle of "
                       f"{FAMILY_NAMES[family] if family else 'the family it was made for'}")


# what the U-Net's inputs and the ControlNet's residuals share (a lighter ControlNet, fewer transformer layers as in
# diffusers' SDXL "small" and "mid" ones, still fits)
_FITS = ("in_channels", "block_out_channels", "layers_per_block", "cross_attention_dim", "addition_embed_type",
         "projection_class_embeddings_input_dim")


def _normal(value: Any, levels: int) -> Any:
    """Per-level settings written as one number or as a list, compared as a tuple."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * levels
    return tuple(value) if isinstance(value, (list, tuple)) else value


def check_fits(b: Bundle, path: Path, config: dict[str, Any]) -> None:
    """A diffusers ControlNet config against the bundle's U-Net: the family first, then every sizing field."""
    import torch
    from diffusers import ControlNetModel

    with torch.device("meta"):
        net = ControlNetModel.from_config(config)
    unet = meta_unet(b)
    check_family(b, path, _signature(net.config), unet)
    levels = len(unet.config["block_out_channels"])
    for key in _FITS:
        theirs, ours = _normal(net.config.get(key), levels), _normal(unet.config.get(key), levels)
        if key == "in_channels":
            theirs, ours = latent_in(net.config), latent_in(unet.config)
        if theirs != ours:
            raise BadParameter("file", str(path), f"a ControlNet for bundle {b.name}'s U-Net ({key} {ours}); this "
                               f"one has {key} {theirs}", hint="a ControlNet must be made from the same architecture "
                               "as the bundle's U-Net")


def _hint_channels(path: Path, shapes: dict[str, tuple[int, ...]], conv_in: str,
                   block: str) -> tuple[tuple[int, ...], int]:
    """(conditioning_embedding_out_channels, conditioning_channels) from the hint encoder's convolutions."""
    if conv_in not in shapes:
        raise BundleCorrupt(path, f"tensor {conv_in} is missing: cannot tell the condition encoder's size")
    blocks = sorted(int(m[1]) for k in shapes if (m := re.fullmatch(re.escape(block) + r"\.(\d+)\.weight", k)))
    if block == "input_hint_block":  # the original counts conv_in (0) and conv_out (the last) among its layers
        blocks = blocks[1:-1]
    return (shapes[conv_in][0], *(shapes[f"{block}.{i}.weight"][0] for i in blocks[1::2])), shapes[conv_in][1]


def _file_signature(path: Path, shapes: dict[str, tuple[int, ...]], conv_in: str, sdxl: str) -> dict[str, Any]:
    """The family signature of a single-file ControlNet from its header alone: ``conv_in`` names the first
    convolution (out, in, 3, 3), ``sdxl`` the prefix of SDXL's text/time embedding."""
    cross = next((v[1] for k, v in shapes.items() if k.endswith("attn2.to_k.weight")), None)
    first = shapes.get(conv_in)
    if cross is None or first is None:
        raise BundleCorrupt(path, f"a ControlNet file needs {conv_in} and cross-attention layers "
                            "(…attn2.to_k.weight)",
                            hint="the file is partial, or not a ControlNet")
    return {"cross_attention_dim": cross, "in_channels": first[1], "channels": first[0],
            "sdxl": any(k.startswith(sdxl) for k in shapes)}


def controlnet_writer(b: Bundle, source: str | os.PathLike) -> Writer:
    """Read, check and convert a ControlNet now; return what writes it into the staged component folder.

    A diffusers folder is copied as it is (config.json, weights); a single file in diffusers' names gets a config
    derived from the bundle's U-Net; an original single file is renamed by diffusers' converter into that config."""
    path = source_path(source)
    if path.is_dir():
        if not (path / "config.json").is_file() or not any(path.glob("*.safetensors")):
            raise BadParameter("file", str(source), "a diffusers ControlNet folder (config.json and .safetensors "
                               "weights, as save_pretrained writes them) or a single .safetensors ControlNet file")
        config = check_config(path / "config.json")
        check_fits(b, path, config)
        weights = component_weights(path)
        index = [f for f in path.glob("*.safetensors.index.json")]

        def copy(folder: Path) -> None:
            for f in [path / "config.json", *index, *weights]:
                shutil.copyfile(f, folder / f.name)
        return copy
    shapes = {k: tuple(v.shape) for k, v in read_header(path).items()}
    if any(k.startswith("controlnet_cond_embedding.") for k in shapes):  # diffusers' names in one file
        check_family(b, path, _file_signature(path, shapes, "conv_in.weight", "add_embedding."))
        channels, cond = _hint_channels(path, shapes, "controlnet_cond_embedding.conv_in.weight",
                                        "controlnet_cond_embedding.blocks")
        state = _load(path)
    else:  # the original layout, with or without the control_model. prefix
        plain = {k.removeprefix("control_model."): v for k, v in shapes.items()}
        if "input_hint_block.0.weight" not in plain:
            raise BundleCorrupt(path, f"none of its {len(shapes)} tensors belongs to a ControlNet (e.g. "
                                f"{next(iter(shapes), 'none')!r}; expected control_model.input_hint_block… or "
                                "controlnet_cond_embedding…)", hint="wrong file? --as controlnet-* takes ControlNets")
        check_family(b, path, _file_signature(path, plain, "input_blocks.0.0.weight", "label_emb."))
        channels, cond = _hint_channels(path, plain, "input_hint_block.0.weight", "input_hint_block")
        state = None
    config = _config_from_unet(b, channels, cond)
    if state is None:
        state = _convert_original(path, config)
    _check_state(path, config, state)

    def write(folder: Path) -> None:
        from safetensors.torch import save_file

        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "diffusion_pytorch_model.safetensors"),
                  metadata={"format": "pt"})
    return write


def _load(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path), device="cpu")


def _config_from_unet(b: Bundle, channels: tuple[int, ...], cond: int) -> dict[str, Any]:
    """A ControlNet config for the bundle's U-Net, as diffusers' ``ControlNetModel.from_unet`` derives it."""
    import torch
    from diffusers import ControlNetModel

    unet = meta_unet(b)
    with torch.device("meta"):
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=channels,
                                        load_weights_from_unet=False, conditioning_channels=cond)
    config = json.loads(net.to_json_string())
    config["in_channels"] = latent_in(unet.config)  # an inpainting U-Net's ControlNet takes the 4 latent channels
    return config


def _convert_original(path: Path, config: dict[str, Any]) -> dict[str, Any]:
    """diffusers' own renaming of an original single-file ControlNet (``convert_controlnet_checkpoint``)."""
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint

    checkpoint = _load(path)
    try:
        converted = convert_controlnet_checkpoint(checkpoint, config)
    except (KeyError, IndexError, AttributeError, TypeError, RuntimeError) as exc:
        raise BundleCorrupt(path, f"the ControlNet could not be converted: {exc}",
                            hint="the file is partial, or not a ControlNet in the original layout") from None
    converted.update(_sdxl_embedding(checkpoint))
    return {k: v for k, v in converted.items() if v is not None}  # None: absent from the file


# what diffusers' ControlNet converter lacks (its SDXL ControlNets are diffusers-named single files only): SDXL's
# text/time embedding, ``label_emb.0.0`` and ``label_emb.0.2`` of the original layout (its Linear, SiLU, Linear)
_SDXL_EMBEDDING = {"label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2"}


def _sdxl_embedding(checkpoint: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in checkpoint.items():
        plain = key.removeprefix("control_model.")
        layer, _, kind = plain.rpartition(".")
        if layer in _SDXL_EMBEDDING:
            out[f"{_SDXL_EMBEDDING[layer]}.{kind}"] = value
    return out


def _check_state(path: Path, config: dict[str, Any], state: dict[str, Any]) -> None:
    """Every tensor of the ControlNet ``config`` builds is in ``state`` with its shape, and nothing else is."""
    import torch
    from diffusers import ControlNetModel

    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in ControlNetModel.from_config(config).state_dict().items()}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k}: file {list(state[k].shape)}, needs {list(v)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != v]
    for items, what in ((missing, "missing"), (wrong, "of the wrong shape"), (unexpected, "not of this ControlNet")):
        if items:
            raise BundleCorrupt(path, f"{len(items)} tensor(s) {what} for a ControlNet of the bundle's U-Net, e.g. "
                                + "; ".join(items[:3]), hint="the file is partial, or made for another U-Net")


# ---- 2. LoRAs: they must load onto the bundle's networks -----------------------------------------------------------
def lora_source(source: str | os.PathLike) -> Path:
    """The LoRA's weight file: a .safetensors file, or a folder holding diffusers' ``pytorch_lora_weights``."""
    from .lora import WEIGHTS

    path = source_path(source)
    if path.is_dir():
        if not (path / WEIGHTS).is_file():
            raise BadParameter("file", str(source), f"a .safetensors LoRA file or a folder holding {WEIGHTS}")
        return path / WEIGHTS
    return path


def check_lora(b: Bundle, path: Path, entry: str) -> None:
    """``path`` loads as a LoRA onto the bundle's U-Net and text encoders (diffusers', peft's or kohya's layout)."""
    import torch

    from .loading import load_models
    from .lora import _load

    models = load_models(b, torch.device("cpu"), torch.float16)  # half the memory: nothing is computed
    try:
        _load(models, path, "candidate", entry)
    except BadParameter as exc:
        raise BadParameter("file", entry, exc.allowed, hint=exc.hint) from None


def add_lora(bundle: str | os.PathLike | Bundle, source: str | os.PathLike, name: str | None = None, *,
             replace: bool = False, replace_flag: str = "--replace") -> Path:
    """Copy a LoRA into ``loras/NAME.safetensors`` after checking that it loads; returns its path. The embedded
    bundle is never changed: its LoRAs go to the user's folder for it (``bundle.loras_dir``), written atomically."""
    b = bundle if isinstance(bundle, Bundle) else resolve(bundle)
    if not is_embedded(b.path):
        b = writable(b)
    path = lora_source(source)
    name = (name or (Path(source).expanduser().name if Path(source).expanduser().is_dir() else path.stem))
    name = name.removesuffix(".safetensors")
    if not NAME.fullmatch(name):
        raise BadParameter("name", name, "letters, digits, '_', '.' and '-', starting with a letter or digit (a "
                           "LoRA is named in jobs as NAME[:SCALE])")
    rel = f"{LORAS}/{name}.safetensors"
    target = loras_dir(b) / f"{name}.safetensors"
    if target.exists() and not replace:
        raise BadParameter("name", name, f"a LoRA name bundle {b.name} does not hold yet ({target.name} exists in "
                           f"{target.parent})", hint=f"choose another --name, or pass {replace_flag} to replace it")
    check_lora(b, path, str(source))
    if is_embedded(b.path):  # no manifest to update: the file itself, moved into place in one rename
        from .provenance import atomic_write

        target.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(target, lambda tmp: shutil.copyfile(path, tmp))
    staging = _staging(b)
    try:
        staged = staging / f"{name}.safetensors"
        shutil.copyfile(path, staged)
        manifest = _manifest(b)
        manifest["files"][rel] = {"sha256": sha256(staged), "bytes": staged.stat().st_size}
        _commit(b, manifest, moves=[(staged, rel)], aside=[rel])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return b.path / rel


# ---- 3. staging, the manifest, and the commit -------------------------------------------------------------------
def add_component(bundle: str | os.PathLike | Bundle, component: str, write: Writer, *, replace: bool = False,
                  replace_flag: str = "--replace") -> Path:
    """Write ``component`` with ``write`` into a staging folder, check it, then move it into the bundle and list
    its weights in the manifest; an existing one is replaced only with ``replace``. Returns the component folder."""
    from .loading import check_shapes

    b = writable(bundle)
    if component in b.components and not replace:
        raise BadParameter("as", component, f"a component bundle {b.name} does not hold yet; it holds "
                           f"{b.components[component]}/ already", hint=f"pass {replace_flag} to replace it")
    staging = _staging(b)
    try:
        folder = staging / component
        folder.mkdir()
        write(folder)
        check_config(folder / "config.json")
        weights = component_weights(folder)
        check_shapes(component, folder, weights)  # what the loader will check, before the bundle changes
        manifest = _manifest(b)
        old = manifest["components"].get(component)
        manifest["files"] = {k: v for k, v in manifest["files"].items() if not (old and k.startswith(old + "/"))}
        for f in sorted(folder.glob("*.safetensors")):
            manifest["files"][f"{component}/{f.name}"] = {"sha256": sha256(f), "bytes": f.stat().st_size}
        manifest["components"][component] = component
        _commit(b, manifest, moves=[(folder, component)], aside=[component, *([old] if old else [])])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return b.path / component


def remove(bundle: str | os.PathLike | Bundle, name: str) -> str:
    """Remove a component (``controlnet_depth`` or ``controlnet-depth``, ``motion_adapter`` or ``motion``, ...) or a
    LoRA by name; the base components are refused. Returns what was removed, relative to the bundle."""
    b = bundle if isinstance(bundle, Bundle) else resolve(bundle)
    stem = name.removesuffix(".safetensors")
    if is_embedded(b.path) and NAME.fullmatch(stem) and (loras_dir(b) / f"{stem}.safetensors").is_file():
        (loras_dir(b) / f"{stem}.safetensors").unlink()  # a user's LoRA for the embedded bundle
        return str(loras_dir(b) / f"{stem}.safetensors")
    b = writable(b)
    component = KINDS.get(name, name)
    if component in BASE:
        raise BadParameter("name", name, f"a component that can be removed: {component} is part of every bundle "
                           f"({', '.join(BASE)} make the images)", hint="remove ControlNets, the motion module or "
                           "LoRAs; to drop the whole bundle, delete its folder")
    manifest = _manifest(b)
    if component in b.components:
        sub = b.components[component]
        manifest["components"].pop(component)
        manifest["files"] = {k: v for k, v in manifest["files"].items() if not k.startswith(sub + "/")}
        _commit(b, manifest, moves=[], aside=[sub])
        return sub
    stem = name.removesuffix(".safetensors")
    rel = f"{LORAS}/{stem}.safetensors"
    if NAME.fullmatch(stem) and (b.path / rel).is_file():  # a plain name: nothing outside loras/ is touched
        manifest["files"].pop(rel, None)
        _commit(b, manifest, moves=[], aside=[rel])
        return rel
    held = holdings(b)
    removable = [c for c in held["components"] if c not in BASE] + [f"{n} (LoRA)" for n in held["loras"]]
    raise BadParameter("name", name, f"a component or LoRA of bundle {b.name}: "
                       f"{', '.join(removable) or 'it holds none that can be removed'}")


def _staging(b: Bundle) -> Path:
    """A folder inside the bundle (same file system: the moves are renames), named so no search lists it."""
    staging = b.path / f".sfumato-add-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    return staging


def _manifest(b: Bundle) -> dict[str, Any]:
    """A copy of the manifest to edit; a bundle without one (a plain diffusers folder) gets one, its weights hashed."""
    if b.has_manifest:
        manifest = json.loads((b.path / MANIFEST).read_text())
        manifest.setdefault("files", {})
        return manifest
    files = {}
    for sub in b.components.values():
        for f in sorted((b.path / sub).glob("*.safetensors")):
            files[f"{sub}/{f.name}"] = {"sha256": sha256(f), "bytes": f.stat().st_size}
    return {"format": MANIFEST_FORMAT, "name": b.name, "family": b.family, "license": "unknown",
            "description": "", "components": dict(b.components), "files": files}


def _commit(b: Bundle, manifest: dict[str, Any], *, moves: list[tuple[Path, str]], aside: list[str]) -> None:
    """Put what is at ``aside`` (paths in the bundle) out of the way, move the staged ``moves`` into place and
    replace the manifest; on any failure, undo the moves and put everything back."""
    trash = b.path / f".sfumato-removed-{uuid.uuid4().hex[:8]}"
    put_aside: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for rel in dict.fromkeys(aside):
            target = b.path / rel
            if target.exists() or target.is_symlink():
                trash.mkdir(exist_ok=True)
                kept = trash / str(len(put_aside))
                target.rename(kept)
                put_aside.append((kept, target))
        for staged, rel in moves:
            (b.path / rel).parent.mkdir(parents=True, exist_ok=True)
            staged.rename(b.path / rel)
            placed.append(b.path / rel)
        tmp = b.path / f".{MANIFEST}.{uuid.uuid4().hex[:8]}.part"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, b.path / MANIFEST)
    except BaseException:
        for p in placed:
            shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
        for kept, target in reversed(put_aside):
            kept.rename(target)
        shutil.rmtree(trash, ignore_errors=True)
        raise
    shutil.rmtree(trash, ignore_errors=True)


# ---- what a bundle holds -------------------------------------------------------------------------------------------
def holdings(b: Bundle) -> dict[str, Any]:
    """Components (folder, bytes, each weight file's sha256 and size as the manifest lists them, or ``null`` when it
    lists none) and LoRAs, read from the folder without hashing anything."""
    listed = b.manifest.get("files") or {}

    def entry(f: Path) -> dict[str, Any]:
        rel = str(f.relative_to(b.path)).replace(os.sep, "/")
        return {"bytes": f.stat().st_size, "sha256": (listed.get(rel) or {}).get("sha256")}

    components = {}
    for component, sub in sorted(b.components.items()):
        files = sorted(f for f in (b.path / sub).rglob("*") if f.is_file())
        components[component] = {"folder": sub, "bytes": sum(f.stat().st_size for f in files),
                                 "weights": {str(f.relative_to(b.path)): entry(f) for f in files
                                             if f.suffix == ".safetensors"}}
    loras = {f.stem: entry(f) for f in sorted(loras_dir(b).glob("*.safetensors"))}
    return {"components": components, "loras": loras}


def format_holdings(b: Bundle, held: dict[str, Any], caps: dict[str, Any]) -> str:
    """``holdings`` and capabilities as lines to read."""
    lines = [f"{b.name} ({FAMILY_NAMES.get(b.family, b.family)}) at {b.path}", "components:"]
    for component, c in held["components"].items():
        lines.append(f"  {component:18} {c['bytes'] / 1e6:9.2f} MB  {c['folder']}/")
        for rel, w in c["weights"].items():
            lines.append(f"    {rel}  {w['bytes']} bytes  sha256 {w['sha256'] or '(not in the manifest)'}")
    lines.append("loras:" + ("" if held["loras"] else " none"))
    for name, w in held["loras"].items():
        lines.append(f"  {name:18} {w['bytes'] / 1e6:9.2f} MB  sha256 {w['sha256'] or '(not in the manifest)'}")
    lines.append("can: " + "; ".join(caps["can"]))
    if caps["cannot"]:
        lines.append("cannot: " + "; ".join(caps["cannot"]))
    return "\n".join(lines)
