"""A finished batch in Blender, on the main thread: images as kept image datablocks with their provenance, videos as
kept movie clips, meshes (textures, assets) imported into one collection, ``Sfumato batch <folder>``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from . import request, scene_io
from .batch import BatchResult


@dataclass
class Loaded:
    images: list[Any] = field(default_factory=list)  # bpy.types.Image, in spec order
    clips: list[Any] = field(default_factory=list)  # bpy.types.MovieClip
    objects: list[Any] = field(default_factory=list)  # imported from the GLBs
    collection: Any = None


def _provenance(job: dict[str, Any], index: int) -> dict[str, Any]:
    meta = job.get("metadata")
    if isinstance(meta, list):
        meta = meta[index] if index < len(meta) else {}
    return dict(meta or {})


def load(result: BatchResult, *, pack: bool = False) -> Loaded:
    """Every finished job's files of ``result`` into Blender."""
    from .asset import import_glb

    out = Loaded()
    for job in result.jobs:
        if job.get("status") != "done":
            continue
        images = [f for f in job["files"] if f.endswith(".png") and job["kind"] == "image"]
        for k, path in enumerate(images):
            meta = _provenance(job, k)
            name = request.result_name(meta.get("prompt", Path(path).stem), int(meta.get("seed", 0)))
            out.images.append(scene_io.load_result(path, name, request.id_properties(meta, {"file": path}),
                                                   pack=pack))
        for path in (f for f in job["files"] if f.endswith((".mp4", ".gif"))):
            clip = bpy.data.movieclips.load(path)
            clip["sfumato"] = request.id_properties(_provenance(job, 0), {"file": path})
            out.clips.append(scene_io.keep(clip))
        for path in (f for f in job["files"] if f.endswith(".glb")):
            out.objects += import_glb(path)
    if out.objects:
        out.collection = bpy.data.collections.new(request.batch_collection_name(Path(result.folder).name))
        bpy.context.scene.collection.children.link(out.collection)
        for obj in out.objects:
            for owner in list(obj.users_collection):
                owner.objects.unlink(obj)
            out.collection.objects.link(obj)
    return out
