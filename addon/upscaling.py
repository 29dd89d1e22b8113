"""Upscale mode, shared by the operator and the scripting API: an image out, one 2 or 4 times larger back.

1. the source: an image datablock (the one the Image Editor shows, else the latest Sfumato result) or a file;
   a datablock without a file on disk (packed, generated, edited) is written out beside the results first;
2. the settings (``request.UpscaleSettings``: scale, strength, tile, overlap; the prompt left empty takes the
   image's own from its provenance) become the engine's params (``request.params``) and an output path;
3. the caller runs the job (interactive: queue + timer; background: blocking); the engine re-details the image
   tile by tile with the bundle (core/upscale.py);
4. ``finish``: the result becomes an image datablock "<source> x<scale>" with its provenance (the source's, with
   the upscale record the engine added), shown in the Image Editor.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy
from bpy.props import EnumProperty, FloatProperty, IntProperty, StringProperty

from . import engine, ops, prefs, request, runtime, scene_io
from .imaging import Prepared, output_folder

U = request.U  # the engine's UpscaleRequest
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".exr", ".bmp")
_SCALE = request.schema.spec_of(next(f for f in dataclasses.fields(U) if f.name == "scale"))
SCALES = [(str(v), f"{v}x", f"{v} times larger on each side")
          for v in range(int(_SCALE.lo), int(_SCALE.hi) + 1, _SCALE.multiple)]


@dataclass
class Upscaled:
    """What one finished upscale made."""

    image: Any  # bpy.types.Image
    file: str
    metadata: dict[str, Any] = field(default_factory=dict)


# ---- 1. the source ----------------------------------------------------------------------------------------
def source_image(context, image=None):
    """The image to upscale: ``image`` (a datablock or its name), else the Image Editor's, else the latest result
    in the panel's history; raises ``SceneProblem`` when there is none."""
    if isinstance(image, str):
        found = bpy.data.images.get(image)
        if found is None:
            raise scene_io.SceneProblem(f"no image named {image!r} in this file")
        return found
    if image is not None:
        return image
    space = getattr(context, "space_data", None)
    if getattr(space, "type", "") == 'IMAGE_EDITOR' and space.image is not None:
        return space.image
    scene = getattr(context, "scene", None)
    for item in reversed(list(getattr(scene, "sfumato_history", []))):
        found = scene_io.history_image(item)
        if found is not None:
            return found
    raise scene_io.SceneProblem("open an image in the Image Editor (or make one with Generate) to upscale")


def source_file(image, folder: Path) -> str:
    """A file holding ``image``'s pixels: its own file when it is on disk and unchanged, else a PNG written into
    ``folder``."""
    path = Path(bpy.path.abspath(image.filepath_raw)) if image.filepath_raw else None
    if path is not None and path.is_file() and not image.is_dirty and image.packed_file is None:
        return str(path)
    target = request.output_stem(folder, image.name).with_suffix(".source.png")
    copy = image.copy()  # saving the copy leaves the datablock's own path and format as they are
    try:
        copy.filepath_raw, copy.file_format = str(target), 'PNG'
        copy.save()
    finally:
        bpy.data.images.remove(copy)
    return str(target)


# ---- 2. the job -----------------------------------------------------------------------------------------------
def prepare(context, s: request.UpscaleSettings, source, *, seed: int | None = None,
            folder: Path | None = None) -> Prepared:
    """Steps 1-2: ``source`` is an image datablock, its name, or the path of an image file."""
    request.first_problem(s)
    folder, pack = (Path(folder), False) if folder is not None else output_folder(context)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(source, (str, Path)) and Path(bpy.path.abspath(str(source))).is_file():
        path, name, image = str(Path(bpy.path.abspath(str(source)))), Path(str(source)).stem, None
    else:
        image = source_image(context, source)
        path, name = source_file(image, folder), image.name
        if Path(name).suffix.lower() in IMAGE_SUFFIXES:  # a datablock named after its file: "brick.png"
            name = Path(name).stem
    seed = request.pick_seed(s) if seed is None else seed
    params = request.params(s, seed=seed, default_bundle=prefs.get(context).default_bundle, inputs={"image": path})
    stem = request.output_stem(folder, f"{name} x{s.scale}")
    job_context = {"settings": dataclasses.asdict(s), "source": name, "source_file": path, "pack": pack,
                   "scene": context.scene.name if getattr(context, "scene", None) else ""}
    return Prepared(params, f"{stem}.png", job_context)


def run(config: engine.EngineConfig, job: Prepared, *, on_event=None) -> Upscaled:
    """Blocking (background mode, scripts): run the job and load the result. Raises ``engine.EngineError`` when the
    job fails."""
    return finish(runtime.run_job(config, "upscale", job, job.context["source"][:40], on_event=on_event))


def start(config: engine.EngineConfig, job: Prepared) -> engine.JobState:
    """Interactive: start the job; ``runtime`` calls ``finish`` when its result arrives."""
    return runtime.start_job(config, "upscale", job, job.context["source"][:40], on_final=runtime.applying(
        finish, "upscale", lambda done: f"upscaled to {done.image.name}"))


# ---- 4. the result --------------------------------------------------------------------------------------------
def finish(state: engine.JobState) -> Upscaled:
    """Step 4, on the main thread: the result file becomes an image datablock with its provenance."""
    assert state.result is not None
    jc = state.context
    path = state.result["files"][0]
    meta = dict(state.result.get("metadata") or {})
    scale = jc["settings"]["scale"]
    name = request.result_name(f"{jc['source']} x{scale}", int(meta.get("upscale", [{}])[-1].get("seed", 0)))
    image = scene_io.load_result(path, name, request.id_properties(meta, {"file": path,
                                                                         "source_file": jc["source_file"]}),
                                 pack=jc["pack"])
    scene_io.show_in_image_editors(image)
    return Upscaled(image, path, meta)


def upscale(image=None, scale: int = U.scale, *, prompt: str | None = None, seed: int | None = None, scene=None,
            folder: str | Path | None = None, on_event=None, **changes: Any) -> Upscaled:
    """``sfumato_api.upscale``: ``image`` (a datablock, its name, or an image file's path; default: the Image
    Editor's image, else the latest result) made ``scale`` times larger, waited for, loaded as an image datablock.
    ``changes``: ``strength``, ``tile``, ``overlap``, ``steps``, ``negative``, ``bundle`` (``request.UpscaleSettings``
    fields); ``prompt`` None = the image's own prompt from its provenance."""
    from types import SimpleNamespace

    ctx = SimpleNamespace(scene=scene or bpy.context.scene, preferences=bpy.context.preferences,
                          space_data=getattr(bpy.context, "space_data", None))
    s = settings(ctx.scene, scale=scale, **changes, **({"prompt": prompt} if prompt is not None else {}))
    if seed is not None:
        s = s.replace(seed=int(seed), random_seed=False)
    job = prepare(ctx, s, image, folder=Path(folder) if folder is not None else None)
    return run(prefs.engine_config(ctx), job, on_event=on_event)


def settings(scene, **changes: Any) -> request.UpscaleSettings:
    """The panel's bundle, negative and seed with ``changes``; the prompt stays empty (the image's own)."""
    p = scene.sfumato
    base = request.UpscaleSettings(bundle=p.bundle, seed=p.seed, random_seed=p.random_seed)
    return base.replace(**changes)


# ---- the operator --------------------------------------------------------------------------------------------
class SFUMATO_OT_upscale(bpy.types.Operator):
    """Make the image in the Image Editor (or the latest Sfumato result) 2 or 4 times larger, given detail tile by
    tile by the bundle; the result keeps the image's provenance"""

    bl_idname = "sfumato.upscale"
    bl_label = "Upscale"
    bl_options = {'REGISTER'}

    image: StringProperty(name="Image", description="The image datablock to upscale; unset = the Image Editor's, "
                          "else the latest result", options={'SKIP_SAVE'})
    scale: EnumProperty(name="Scale", items=SCALES, default=str(U.scale), options={'SKIP_SAVE'})
    prompt: StringProperty(name="Prompt", description="What the picture shows; unset = the image's own prompt",
                           options={'SKIP_SAVE'})
    strength: FloatProperty(name="Strength", **request.property_args(U, "strength", hard=False),
                            options={'SKIP_SAVE'})
    tile: IntProperty(name="Tile", **request.property_args(U, "tile", hard=False), options={'SKIP_SAVE'})
    overlap: IntProperty(name="Overlap", **request.property_args(U, "overlap", hard=False), options={'SKIP_SAVE'})
    steps: IntProperty(name="Steps", **request.property_args(U, "steps", unset=0), options={'SKIP_SAVE'})
    seed: IntProperty(name="Seed", **request.property_args(U, "seed", unset=0, description="Unset = the panel's "
                      "seed"), options={'SKIP_SAVE'})
    blocking: EnumProperty(name="Wait", items=ops.BLOCKING, default="AUTO", options={'SKIP_SAVE'})

    @classmethod
    def poll(cls, context):
        if context.scene is None:
            return False
        if runtime.busy():
            cls.poll_message_set("a job is running: cancel it or wait for it")
            return False
        return True

    def invoke(self, context, event):
        return self.execute(context)

    def execute(self, context):
        changes = {name: getattr(self, name) for name in ("prompt", "strength", "tile", "overlap", "steps", "seed")
                   if self.properties.is_property_set(name)}
        if "seed" in changes:
            changes["random_seed"] = False
        try:
            s = settings(context.scene, scale=int(self.scale), **changes)
            config = prefs.engine_config(context)
            engine.find_engine_python(config.python)
            job = prepare(context, s, self.image or None)
        except (request.BadSetting, scene_io.SceneProblem, engine.EngineUnavailable, OSError) as exc:
            runtime.LAST_MESSAGE = (str(exc), True)
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        if not ops._blocking(self.blocking):
            start(config, job)
            return {'FINISHED'}
        runtime.LAST_MESSAGE = None
        try:
            done = run(config, job)
        except engine.EngineError as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        self.report({'INFO'}, f"Sfumato: {done.image.name} ({done.image.size[0]}x{done.image.size[1]})")
        return {'FINISHED'}


def _menu(self, context) -> None:
    self.layout.separator()
    self.layout.operator(SFUMATO_OT_upscale.bl_idname, text="Upscale (Sfumato)")


classes = (SFUMATO_OT_upscale,)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.IMAGE_MT_image.append(_menu)


def unregister() -> None:
    bpy.types.IMAGE_MT_image.remove(_menu)
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
