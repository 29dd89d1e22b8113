"""Asset mode, shared by the operator and the scripting API: a prompt out, a GLB asset back at the 3D cursor.

1. validate the settings (a prompt, iterations, render size, guidance);
2. build the engine's params (``request.params``) and the output path (``.glb``), and note where
   the 3D cursor is: the asset lands there, even when the cursor moves while the job runs;
3. the caller runs the job (interactive: queue + timer; background: blocking); the engine optimises a
   radiance field by score distillation and extracts a mesh from it;
4. ``finish``: Blender's glTF importer brings the GLB in (glTF's +Y up becomes Blender's +Z up; the
   engine puts the asset's base at the origin), its root objects move by the cursor's location and
   become the selection, with the provenance on each root.
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
class Asset:
    """What one finished asset job made."""

    objects: list[Any]  # bpy.types.Object: everything imported, roots first
    glb: str
    preview: str  # a PNG of the field as the last iteration saw it ("" when the engine made none)
    sidecar: str
    metadata: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def roots(self) -> list[Any]:
        return [o for o in self.objects if o.parent is None]


# ---- 1-2. the job ---------------------------------------------------------------------------------------
def prepare(context, s: request.AssetSettings, *, seed: int | None = None, folder: Path | None = None) -> Prepared:
    """Steps 1-2."""
    request.first_problem(s)
    folder = Path(folder) if folder is not None else output_folder(context)[0]
    folder.mkdir(parents=True, exist_ok=True)
    stem = request.output_stem(folder, s.prompt)
    seed = request.pick_seed(s) if seed is None else seed
    params = request.params(s, seed=seed, default_bundle=prefs.get(context).default_bundle)
    job_context = {"settings": dataclasses.asdict(s), "cursor": list(context.scene.cursor.location),
                   "scene": context.scene.name}
    return Prepared(params, f"{stem}_s{seed}.glb", job_context)


def run(config: engine.EngineConfig, job: Prepared, *, on_event=None) -> Asset:
    """Blocking (background mode, scripts): run the job and import the asset. Raises ``engine.EngineError``
    when the job fails, ``scene_io.SceneProblem`` when the GLB cannot be imported."""
    return finish(runtime.run_job(config, "asset", job, job.context["settings"]["prompt"][:40], on_event=on_event))


def start(config: engine.EngineConfig, job: Prepared) -> engine.JobState:
    """Interactive: start the job; ``runtime`` calls ``finish`` when its result arrives."""
    return runtime.start_job(config, "asset", job, job.context["settings"]["prompt"][:40], on_final=runtime.applying(
        finish, "asset", lambda done: f"{', '.join(o.name for o in done.roots)} at the 3D cursor"))


# ---- 4. the result in the scene -----------------------------------------------------------------------------
def finish(state: engine.JobState) -> Asset:
    """Step 4, on the main thread: import the GLB into the current view layer at the noted cursor."""
    assert state.result is not None
    jc, result = state.context, state.result
    s = request.AssetSettings(**jc["settings"])
    glb = str(result.get("glb") or "")
    if not Path(glb).is_file():
        raise scene_io.SceneProblem(f"the engine reported the asset at {glb!r} but there is no such file")
    objects = import_glb(glb)
    if not objects:
        raise scene_io.SceneProblem(f"the glTF importer found nothing to import in {glb}")
    roots = [o for o in objects if o.parent is None]
    for root in roots:  # unparented: its location is in world space
        root.location = [a + b for a, b in zip(root.location, jc["cursor"])]
    bpy.context.view_layer.update()  # world matrices follow now, for scripts that read them next
    meta, metrics = dict(result.get("metadata") or {}), dict(result.get("metrics") or {})
    seed = jc.get("params", {}).get("seed", meta.get("seed", s.seed))
    provenance = request.id_properties({"prompt": s.prompt, "seed": seed, **meta},
                                       {"file": glb, "preview": result.get("preview"),
                                        "sidecar": result.get("sidecar"), "metrics": metrics or None})
    if len(roots) == 1:
        roots[0].name = request.result_name(s.prompt, int(seed))
    for root in roots:
        root["sfumato"] = provenance
    select(objects, roots[0])
    return Asset(roots + [o for o in objects if o.parent is not None], glb, str(result.get("preview") or ""),
                 str(result.get("sidecar") or ""), meta, metrics)


def import_glb(path: str) -> list[bpy.types.Object]:
    """Import ``path`` with Blender's glTF importer; the objects it made."""
    texturing.leave_edit_mode()  # the importer links objects, which Edit Mode would keep half-done
    before = set(bpy.data.objects.keys())
    try:
        bpy.ops.import_scene.gltf(filepath=path)
    except RuntimeError as exc:
        raise scene_io.SceneProblem(f"Blender's glTF importer could not read {path}: {exc}") from None
    return [bpy.data.objects[name] for name in sorted(set(bpy.data.objects.keys()) - before)]


def select(objects: list[bpy.types.Object], active: bpy.types.Object) -> None:
    """Make ``objects`` the selection of the current view layer and ``active`` its active object."""
    view_layer = bpy.context.view_layer
    for obj in view_layer.objects:
        obj.select_set(obj in objects)
    view_layer.objects.active = active
