"""Turntable mode, shared by the operator and the scripting API: a mesh out as GLB, a looping video back.

1. find the mesh to orbit (the active object, or the only selected mesh) and validate the settings;
2. export it alone as GLB, modifiers applied (``texturing.export_glb``, the texture head's export);
3. build the engine's params (``request.params``) and the output path (``.mp4`` or ``.gif``);
4. the caller runs the job (interactive: queue + timer; background: blocking);
5. ``finish``: the video becomes a Movie Clip "Sfumato turntable <object>" with the provenance on it,
   shown in any open Movie Clip Editor.

The engine orbits the mesh as the GLB has it: glTF is +Y up, so the orbit turns about Blender's Z axis,
with ``elevation`` degrees above the mesh's equator. Blender cannot pack movie files into a .blend:
for an unsaved file (results in a temporary folder) ``finish`` warns where the video is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from . import engine, prefs, request, runtime, scene_io, texturing
from .imaging import Prepared, output_folder


@dataclass
class Turntable:
    """What one finished turntable job made."""

    object: str  # the orbited object's name (it may be gone by now; the clip does not need it)
    clip: Any  # bpy.types.MovieClip
    video: str
    sidecar: str
    frames: int
    fps: int
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# ---- 1. what can be orbited ---------------------------------------------------------------------------
def target(context) -> bpy.types.Object | None:
    """The mesh to orbit: the active object when it is a selected mesh, else the only selected mesh."""
    active = getattr(context, "active_object", None)
    selected = [o for o in getattr(context, "selected_objects", None) or [] if o.type == 'MESH']
    if active is not None and active in selected:
        return active
    return selected[0] if len(selected) == 1 else None


def why_no_target(context) -> str:
    """Why ``target`` found nothing, for the panel and the operator ("" = it found a mesh)."""
    if target(context) is not None:
        return ""
    meshes = [o for o in getattr(context, "selected_objects", None) or [] if o.type == 'MESH']
    if len(meshes) > 1:
        return f"{len(meshes)} meshes are selected: make the one to orbit the active object"
    return "select a mesh object to orbit"


def check(obj: bpy.types.Object, s: request.TurntableSettings) -> None:
    """Raise ``request.BadSetting`` / ``scene_io.SceneProblem`` with the reason ``obj`` cannot be orbited."""
    request.first_problem(s)
    if obj is None or obj.type != 'MESH':
        what = "nothing" if obj is None else f"{obj.name!r}, a {obj.type.lower()}"
        raise scene_io.SceneProblem(f"a turntable needs a mesh object, got {what}")
    if texturing.face_count(obj) == 0:
        raise scene_io.SceneProblem(f"the mesh {obj.name!r} has no faces: there is nothing to show")


# ---- 2-3. the job ---------------------------------------------------------------------------------------
def prepare(context, obj: bpy.types.Object, s: request.TurntableSettings, *, seed: int | None = None,
            folder: Path | None = None) -> Prepared:
    """Steps 1-3 for one object."""
    check(obj, s)
    folder, pack = (Path(folder), False) if folder is not None else output_folder(context)
    folder.mkdir(parents=True, exist_ok=True)
    if s.motion:
        s = s.replace(motion=bpy.path.abspath(s.motion))  # "//adapter" is next to the .blend
    stem = request.output_stem(folder, f"{obj.name} {s.prompt}")
    mesh = stem.with_name(stem.name + ".mesh.glb")
    texturing.export_glb(obj, mesh)
    seed = request.pick_seed(s) if seed is None else seed
    params = request.params(s, seed=seed, default_bundle=prefs.get(context).default_bundle,
                            inputs={"mesh": str(mesh)})
    job_context = {"settings": dataclasses.asdict(s), "object": obj.name, "mesh": str(mesh), "temporary": pack,
                   "scene": context.scene.name}
    return Prepared(params, f"{stem}_s{seed}.{s.format}", job_context)


def run(config: engine.EngineConfig, job: Prepared, *, on_event=None) -> Turntable:
    """Blocking (background mode, scripts): run the job and load the video. Raises ``engine.EngineError``
    when the job fails."""
    return finish(runtime.run_job(config, "turntable", job, job.context["object"], on_event=on_event))


def start(config: engine.EngineConfig, job: Prepared) -> engine.JobState:
    """Interactive: start the job; ``runtime`` calls ``finish`` when its result arrives."""
    return runtime.start_job(config, "turntable", job, job.context["object"], on_final=runtime.applying(
        finish, "turntable", lambda done: "; ".join([f"{done.object} -> movie clip {done.clip.name!r}", *done.warnings])))


# ---- 5. the result as a movie clip ------------------------------------------------------------------------
def finish(state: engine.JobState) -> Turntable:
    """Step 5, on the main thread: load the video as a movie clip with the provenance."""
    assert state.result is not None
    jc, result = state.context, state.result
    s = request.TurntableSettings(**jc["settings"])
    video = str(result.get("video") or "")
    if not Path(video).is_file():
        raise scene_io.SceneProblem(f"the engine reported the video at {video!r} but there is no such file")
    try:
        clip = bpy.data.movieclips.load(video)
    except RuntimeError as exc:
        raise scene_io.SceneProblem(f"Blender could not open the video {video}: {exc}") from None
    clip.name = request.clip_name(jc["object"])
    scene_io.keep(clip)  # no user: the saved .blend would drop it
    meta = dict(result.get("metadata") or {})
    frames, fps = int(result.get("frames") or 0), int(result.get("fps") or s.fps)
    extra = {"object": jc["object"], "file": video, "sidecar": result.get("sidecar"), "mesh_file": jc["mesh"],
             "frames": frames, "fps": fps, "format": Path(video).suffix.lstrip(".")}
    clip["sfumato"] = request.id_properties({"prompt": s.prompt, "seed": jc.get("params", {}).get("seed"), **meta},
                                            extra)
    warnings = []
    if frames and clip.frame_duration != frames:
        warnings.append(f"the engine wrote {frames} frames but Blender reads {clip.frame_duration} from {video}")
    if jc["temporary"]:
        warnings.append(f"the video is in a temporary folder ({video}) and Blender cannot pack videos: save the "
                        ".blend or set an output folder in the add-on's preferences to keep it")
    show_in_clip_editors(clip)
    return Turntable(jc["object"], clip, video, str(result.get("sidecar") or ""), frames, fps, meta, warnings)


def show_in_clip_editors(clip: bpy.types.MovieClip) -> None:
    """Show ``clip`` in every open Movie Clip Editor (there are none headless)."""
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == 'CLIP_EDITOR':
                area.spaces.active.clip = clip
