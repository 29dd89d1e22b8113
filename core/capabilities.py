"""What a bundle can do, read from its folder without loading a model: for the worker's ``info`` and the
add-on's engine check, which show it beside each bundle's name.

Every bundle makes images from text and from an image (restyle, image-to-image turntables and projection
textures fall back to it). The rest depends on the components its manifest (or model index) lists:

- ``controlnet_depth``: depth-guided images, and depth-conditioned turntables and projection textures;
- ``motion_adapter``: frame attention for videos and turntables (without it every frame is made on its own);
- a ``loras/`` folder: the LoRAs a job may name (``loras``) by their file names.

The native size is the side jobs use when they name none (``core/image.py`` ``native_size``): the manifest's
``default_size``, else what the U-Net was built for, its latent ``sample_size`` times the VAE's factor
2^(levels - 1). Plain data only (a dict of str, int, bool and lists), so it crosses the JSON-lines protocol
as it is.
"""

from __future__ import annotations

import json
from typing import Any

from .bundle import Bundle, loras_dir
from .errors import BundleCorrupt

CONTROLNET_PREFIX = "controlnet_"  # components named controlnet_<kind>; the engine uses controlnet_depth


def _config(bundle: Bundle, component: str) -> dict[str, Any]:
    path = bundle.component_dir(component) / "config.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleCorrupt(path, f"unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise BundleCorrupt(path, "is not a JSON object")
    return data


def native_size(bundle: Bundle) -> int:
    """The image side (pixels) a job uses when it names none, as ``core/image.py`` works it out once loaded."""
    if bundle.manifest.get("default_size"):
        return int(bundle.manifest["default_size"])
    latent = _config(bundle, "unet").get("sample_size")
    levels = len(_config(bundle, "vae").get("block_out_channels") or [0])
    if isinstance(latent, (list, tuple)):  # some configs give (height, width)
        latent = latent[0]
    if not isinstance(latent, int):
        raise BundleCorrupt(bundle.component_dir("unet") / "config.json", f"sample_size={latent!r}; an integer")
    return latent * 2 ** (levels - 1)


def capabilities(bundle: Bundle) -> dict[str, Any]:
    """What ``bundle`` can do, as plain data::

        {"name": "materials", "family": "mini", "native_size": 256, "default_steps": 16, "text": True,
         "image_to_image": True, "depth": False, "motion_module": True, "motion_frames": 8, "controlnets": [],
         "loras": [],
         "can": ["text to image", "image to image", "video with its motion module (8 frames)"],
         "cannot": ["depth guidance (depth ControlNet)"]}

    ``can`` and ``cannot`` say the same in words, for a user interface to print as they are."""
    components = set(bundle.components)
    controlnets = sorted(c[len(CONTROLNET_PREFIX):] for c in components if c.startswith(CONTROLNET_PREFIX))
    depth = "controlnet_depth" in components
    motion = "motion_adapter" in components
    frames = _config(bundle, "motion_adapter").get("motion_max_seq_length") if motion else None
    loras = sorted(p.stem for p in loras_dir(bundle).glob("*.safetensors"))
    can, cannot = ["text to image", "image to image"], []
    (can if depth else cannot).append("depth guidance (depth ControlNet)")
    words = {"normal": "normal-map guidance", "lineart": "line-art guidance", "canny": "edge (canny) guidance"}
    for kind in controlnets:
        if kind != "depth":
            can.append(f"{words.get(kind, kind + ' guidance')} ({kind} ControlNet)")
    if len(controlnets) > 1:
        can.append("several ControlNets at once (" + ", ".join(controlnets) + ")")
    can.append(f"video with its motion module ({frames} frames)" if motion else "video frame by frame")
    if not motion:
        cannot.append("frame attention (motion module)")
    if loras:
        can.append("LoRAs " + ", ".join(loras))
    return {"name": bundle.name, "family": bundle.family, "native_size": native_size(bundle),
            "default_steps": bundle.default_steps, "text": True, "image_to_image": True, "depth": depth,
            "motion_module": motion, "motion_frames": frames, "controlnets": controlnets, "loras": loras, "can": can,
            "cannot": cannot}


def describe(bundles: list[Bundle]) -> list[dict[str, Any]]:
    """``capabilities`` of each bundle; one whose configs cannot be read says why instead (``error``), so one
    broken bundle never hides the others."""
    out = []
    for b in bundles:
        try:
            out.append(capabilities(b))
        except BundleCorrupt as exc:
            out.append({"name": b.name, "family": b.family, "error": str(exc)})
    return out
