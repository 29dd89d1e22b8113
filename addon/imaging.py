"""Image mode, shared by the operator and the scripting API: prepare a job from the scene, apply its result.

1. validate the settings and the scene (active camera);
2. render what the mode needs from the camera: Blender's depth (depth) or the picture (restyle);
3. build the engine's params (``request.params``) and the output path;
4. the caller runs the job (interactive: queue + timer; background: blocking);
5. ``finish``: each result file becomes an image datablock named after prompt and seed, with its
   provenance, a history entry, the Image Editor and optionally the camera background.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from . import passes, prefs, request, scene_io
from .engine import JobState


@dataclass
class Prepared:
    params: dict[str, Any]
    output: str
    context: dict[str, Any] = field(default_factory=dict)  # what ``finish`` needs; plain data only


def output_folder(context) -> tuple[Path, bool]:
    """(folder, pack results): the preference, else //sfumato next to the saved .blend, else a
    temporary folder whose results are packed into the .blend."""
    p = prefs.get(context)
    if p.output_folder:
        return Path(bpy.path.abspath(p.output_folder)), False
    if bpy.data.filepath:
        return Path(bpy.path.abspath("//sfumato")), False
    return Path(bpy.app.tempdir or "/tmp") / "sfumato", True


def check(context, s: request.ImageSettings) -> None:
    """Raise ``request.BadSetting`` / ``scene_io.SceneProblem`` with the reason a job cannot run."""
    request.first_problem(s)
    scene_io.active_camera(context.scene)


def render_inputs(context, s: request.ImageSettings, stem: Path, restyle_source: str = "RENDER") -> dict[str, Any]:
    """Step 2: the files the mode needs, rendered from the active camera at the generation size."""
    scene = context.scene
    if s.mode == "depth":  # depth, and the normals / line art the settings add, from one render of the camera
        files, summary = passes.render_conditions(scene, s.width, s.height, stem, ("depth", *s.conditions))
        controls = {"controls": tuple(f"{k}={files[k]}" for k in s.conditions)} if s.conditions else {}
        return {"depth_image": files["depth"], **controls, "depth": summary}
    if s.mode == "restyle":
        path = stem.with_name(stem.name + ".render.png")
        return {"init_image": str(scene_io.render_image(scene, s.width, s.height, path, restyle_source))}
    return {}


def prepare(context, s: request.ImageSettings, *, seed: int | None = None, n: int = 1,
            inputs: dict[str, Any] | None = None, set_background: bool = False,
            restyle_source: str = "RENDER", folder: Path | None = None) -> Prepared:
    """Steps 1-3. ``inputs`` reuses files rendered for an earlier job of the same camera and size;
    ``folder`` overrides where files go (default: ``output_folder``)."""
    check(context, s)
    folder, pack = (Path(folder), False) if folder is not None else output_folder(context)
    folder.mkdir(parents=True, exist_ok=True)
    stem = request.output_stem(folder, s.prompt or s.mode)
    if inputs is None:
        inputs = render_inputs(context, s, stem, restyle_source)
    seed = request.pick_seed(s) if seed is None else seed
    files = {name: inputs[name] for name in ("depth_image", "init_image", "controls") if inputs.get(name)}
    params = request.params(s, seed=seed, default_bundle=prefs.get(context).default_bundle, inputs=files, n=n)
    output = f"{stem}_s{seed}.png" if n == 1 else f"{stem}.png"
    job_context = {"settings": dataclasses.asdict(s), "scene": context.scene.name,
                   "camera": context.scene.camera.name, "set_background": set_background, "pack": pack,
                   "inputs": inputs}
    return Prepared(params, output, job_context)


def warnings_note(state: JobState) -> str | None:
    """What the engine warned about the inputs (a condition map resized, a depth map with no shape), for the
    panel's last message."""
    warnings = (state.result or {}).get("warnings") or []
    return "; ".join(warnings) or None


def finish(state: JobState, context=None) -> list[bpy.types.Image]:
    """Step 5, on the main thread: the result's files become image datablocks."""
    context = context or bpy.context
    assert state.result is not None
    jc = state.context
    s = request.ImageSettings(**jc["settings"])
    scene = bpy.data.scenes.get(jc["scene"]) or context.scene
    images = []
    for path, meta in zip(state.result.get("files", []), state.result.get("metadata", [])):
        extra = {"image_mode": s.mode, "file": path, "camera": jc["camera"], "frame": scene.frame_current}
        if "depth" in jc["inputs"]:
            extra.update({f"depth_{k}": v for k, v in jc["inputs"]["depth"].items()})
        image = scene_io.load_result(path, request.result_name(meta.get("prompt", s.prompt), meta["seed"]),
                                     request.id_properties(meta, extra), pack=jc["pack"])
        record = request.history_record(s, meta, image.name, path)
        scene_io.add_history(scene, record, request.HISTORY_LIMIT)
        images.append(image)
    if images:
        scene_io.show_in_image_editors(images[-1])
        camera = bpy.data.objects.get(jc["camera"])
        if jc["set_background"] and camera is not None and camera.type == 'CAMERA':
            scene_io.set_camera_background(camera, images[-1])
    return images
