"""Provenance: every output says how it was made, inside the file.

PNGs carry two text chunks: ``sfumato`` (JSON: prompt, negative, seed, bundle name and hash,
scheduler, steps, guidance, size, mode, sfumato version, ...) and ``parameters``, the line format
other Stable Diffusion tools read and write, so a seed reproduces across tools. Files are written
under a temporary name and renamed, so a killed process never leaves a half-written result.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

import sfumato


def version() -> str:
    return sfumato.__version__


def parameters_line(meta: dict[str, Any]) -> str:
    lines = [meta.get("prompt", "")]
    if meta.get("negative"):
        lines.append(f"Negative prompt: {meta['negative']}")
    fields = [("Steps", meta.get("steps")), ("Sampler", meta.get("scheduler")), ("CFG scale", meta.get("guidance")),
              ("Seed", meta.get("seed")), ("Size", f"{meta['width']}x{meta['height']}" if meta.get("width") and meta.get("height") else None),
              ("Model hash", meta.get("bundle_hash")), ("Model", meta.get("bundle")),
              ("Denoising strength", meta.get("strength") if meta.get("mode") == "img2img" else None),
              ("Tiling", meta.get("seamless") if meta.get("seamless") not in (None, "none") else None),
              ("Version", f"sfumato {meta.get('sfumato_version')}")]
    lines.append(", ".join(f"{k}: {v}" for k, v in fields if v is not None))
    return "\n".join(lines)


def atomic_write(path: Path, write, *, keep_suffix: bool = False) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``; a crash leaves no partial ``path``.
    ``keep_suffix``: the temporary name ends in ``path``'s suffix too, for writers that choose their
    format by extension (ffmpeg)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part" + (path.suffix if keep_suffix else ""))
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_png(image: Image.Image, path: Path, meta: dict[str, Any]) -> Path:
    info = PngInfo()
    info.add_text("sfumato", json.dumps(meta, sort_keys=True))
    info.add_text("parameters", parameters_line(meta))
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def read_png_metadata(path: Path) -> dict[str, Any]:
    with Image.open(path) as image:
        text = image.text.get("sfumato")  # type: ignore[attr-defined]
    return json.loads(text) if text else {}
