"""Scripting Sfumato from Python, blocking (for ``blender -b file.blend --python script.py``).

Once the add-on is enabled this module is also importable as ``sfumato_api``::

    import sfumato_api

    out = sfumato_api.variations(prompts=["red brick wall", "weathered concrete"], seeds=range(4),
                                 mode="image", image_mode="depth", steps=20)
    out.images       # image datablocks, prompt by prompt, seed by seed
    out.files        # their PNG files (with provenance inside)
    out.sheet_file   # a contact sheet: one row per prompt, one column per seed

    obj = bpy.data.objects["Suzanne"]
    done = sfumato_api.texture(obj, "weathered bronze", mode="projection", views=8)
    done.material, done.image, done.glb   # the object now wears done.material

    video = sfumato_api.turntable(obj, "bronze statue", frames=24, fps=12, format="mp4")
    video.clip, video.video, video.frames  # a Movie Clip "Sfumato turntable Suzanne" and its file

    made = sfumato_api.asset("a wooden chair", iters=600)
    made.roots, made.glb                 # the imported objects, placed at the 3D cursor

    big = sfumato_api.upscale(bpy.data.images["render"], scale=2)   # or a file path; tile=, strength=, ...
    big.image, big.file                  # "render x2 s<seed>", its provenance the source's plus the upscale

Settings not given come from the scene's panel (``scene.sfumato``); the engine comes from the
add-on's preferences (``sfumato_api.preferences()``), and ``sfumato_api.capabilities("materials")`` says what
a bundle can do (depth, a motion module, its native size). A fresh headless process first needs the add-on
enabled: docs/examples/headless.py shows the steps (read the saved preferences, install or enable, set the
engine). Errors are exceptions with the reason: ``request.BadSetting`` (a ValueError)
for a bad value, ``scene_io.SceneProblem`` for a scene that cannot give what the mode needs (no
camera, a mesh without faces), ``engine.EngineUnavailable`` when the engine cannot start, and
``engine.EngineError`` (its base) when a job fails or is cancelled.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import bpy

from . import asset as asset_mode
from . import batch as batch_runner
from . import batch_results, engine, imaging, prefs, props, request, runtime, scene_io, texturing
from . import turntable as turntable_mode
from . import upscaling
from .asset import Asset  # noqa: F401
from .engine import EngineError, EngineUnavailable  # noqa: F401  (re-exported for scripts)
from .request import AssetSettings, BadSetting, ImageSettings, TextureSettings, TurntableSettings  # noqa: F401
from .scene_io import SceneProblem  # noqa: F401
from .texturing import Textured  # noqa: F401
from .turntable import Turntable  # noqa: F401

HEADS = ("image",)  # the heads ``variations`` runs; texture, turntable and asset have their own functions

OnEvent = Callable[[engine.JobState, dict[str, Any]], None]


@dataclass
class Batch:
    folder: str
    jobs: list[dict[str, Any]]  # every row: kind, status, files, metadata (provenance), error
    failed: list[tuple[str, str]]  # (output, error); the batch went on without them
    sheets: list[str]  # a contact sheet per prompt of the images
    images: list[Any] = field(default_factory=list)  # bpy.types.Image, kept in the .blend
    clips: list[Any] = field(default_factory=list)  # bpy.types.MovieClip
    objects: list[Any] = field(default_factory=list)  # meshes imported from textures and assets
    collection: Any = None  # "Sfumato batch <folder>", holding ``objects``


@dataclass
class Variations:
    images: list[Any] = field(default_factory=list)  # bpy.types.Image, in prompt-then-seed order
    files: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    sheet: Any = None  # the contact sheet's image datablock
    sheet_file: str | None = None


def _context(scene):
    return SimpleNamespace(scene=scene or bpy.context.scene, preferences=bpy.context.preferences)


def preferences(context=None) -> prefs.SfumatoPreferences:
    """The add-on's preferences, where a script sets the engine: ``engine_python`` (the python of the environment
    where sfumato is installed; "" = auto-detect), ``device``, ``threads``, ``bundle_folder``, ``default_bundle``,
    ``output_folder``, ``pack_results``. Blender in background mode never saves preferences by itself:
    ``bpy.ops.wm.save_userpref()`` keeps them (and the add-on enabled) for the next run."""
    return prefs.get(context)


def engine_info(context=None) -> dict[str, Any]:
    """What "Check engine" shows, waited for (the engine starts if it is not running): version, device, dtype,
    ``bundles`` and, per bundle, ``capabilities`` (``native_size``, ``text``, ``image_to_image``, ``depth``,
    ``motion_module``, ``controlnets``, and the same in words as ``can`` and ``cannot``)."""
    info = runtime.SESSION.info(prefs.engine_config(context or bpy.context))
    runtime.CHECK.clear()
    runtime.CHECK["info"] = info  # the preferences show it too
    return info


def capabilities(bundle: str | None = None, context=None) -> dict[str, Any]:
    """What ``bundle`` (a name; default: the preferences' default bundle) can do, from ``engine_info``; a
    ``BadSetting`` naming the engine's bundles when it has none of that name."""
    name = bundle or prefs.get(context).default_bundle
    found = engine_info(context).get("capabilities", [])
    for caps in found:
        if caps.get("name") == name:
            return caps
    raise BadSetting("bundle", name, "a bundle the engine has: " + (", ".join(c["name"] for c in found) or "none"))


def settings(scene=None, **changes: Any) -> request.ImageSettings:
    """The scene panel's settings with ``changes`` (field names of ``request.ImageSettings``)."""
    scene = scene or bpy.context.scene
    return props.settings_from(scene.sfumato).replace(**changes)


def variations(prompts: Iterable[str], seeds: Iterable[int] = range(4), *, mode: str = "image",
               image_mode: str | None = None, scene=None, contact_sheet: bool = True,
               set_background: bool = False, folder: str | Path | None = None, on_event: OnEvent | None = None,
               workers: int = 1, **changes: Any) -> Variations:
    """Every prompt with every seed, waited for; images, files and a contact sheet.

    ``mode`` is the head ("image"); ``image_mode`` is text, depth or restyle (default: the panel's).
    Depth and restyle render the camera once and reuse it for every variation. The images are one batch
    (``batch``): the same call again after a crash or Ctrl-C makes only what is missing. ``folder``: where the
    files go (default: a folder named by the call's settings in the add-on's output folder). ``on_event(state,
    event)`` sees every batch event (a job finished, ...)."""
    if mode not in HEADS:
        raise BadSetting("mode", mode, ", ".join(HEADS))
    prompts, seeds = list(prompts), [int(s) for s in seeds]
    if not prompts:
        raise BadSetting("prompts", prompts, "a list of at least one prompt")
    if not seeds or len(set(seeds)) != len(seeds):
        raise BadSetting("seeds", seeds, "at least one seed, no repeats")
    ctx = _context(scene)
    base = settings(ctx.scene, **changes, **({"mode": image_mode} if image_mode else {})).replace(random_seed=False)
    for prompt in prompts:
        imaging.check(ctx, base.replace(prompt=prompt, seed=seeds[0]))
    default_bundle = prefs.get(ctx).default_bundle
    stand_ins = {name: base.stand_in(name) for name in base.inputs()}  # the camera renders come later
    plan = [request.params(base.replace(prompt=p), seed=seed, default_bundle=default_bundle, inputs=stand_ins)
            for p in prompts for seed in seeds]
    root, pack = imaging.output_folder(ctx)
    folder = Path(folder) if folder is not None else root / f"variations-{batch_runner.content_name(plan)}"
    inputs = {}
    if base.inputs():  # the camera rendered once, for every variation
        (folder / "inputs").mkdir(parents=True, exist_ok=True)
        inputs = imaging.render_inputs(ctx, base, folder / "inputs" / "camera", ctx.scene.sfumato.restyle_source)
    files = {name: inputs[name] for name in base.inputs()}
    rows = [{**params, **files} for params in plan]  # output names come from each row's content
    result = _run_batch(ctx, rows, folder, workers, on_event)
    out = Variations()
    for row, job in zip(rows, result.jobs):
        if job.get("status") != "done":
            continue
        state = engine.JobState(tag="image", context={
            "settings": dataclasses.asdict(base.replace(prompt=row["prompt"], seed=row["seed"])),
            "scene": ctx.scene.name, "camera": ctx.scene.camera.name, "set_background": set_background,
            "pack": pack, "inputs": inputs})
        metadata = job.get("metadata") or [{"prompt": row["prompt"], "seed": row["seed"]}]
        state.result = {"files": job["files"], "metadata": metadata}
        out.images += imaging.finish(state, ctx)
        out.files += job["files"]
        out.metadata += metadata
    if contact_sheet and out.images:
        path = request.output_stem(folder, "contact sheet").with_suffix(".png")
        out.sheet = scene_io.contact_sheet(out.images, path, "sfumato contact sheet", columns=len(seeds))
        out.sheet_file = str(path)
    if result.failed:
        raise EngineError(f"{len(result.failed)} of {len(rows)} variations failed (the others are loaded; the "
                          f"same call again retries them): " + "; ".join(f"{n}: {e}" for n, e in result.failed[:3]))
    return out


def _run_batch(ctx, rows_or_spec, folder: Path, workers: int, on_event: OnEvent | None) -> batch_runner.BatchResult:
    """Run a batch, blocking; each event goes to ``on_event(state, event)`` with a state the panel can show."""
    config = prefs.engine_config(ctx)
    spec = batch_runner.write_rows(rows_or_spec, folder) if isinstance(rows_or_spec, list) else Path(rows_or_spec)
    state = engine.JobState(tag="batch", title=f"batch {folder.name}", status="running", unit="job")
    if not runtime.busy():
        runtime.CURRENT = state

    def forward(event: dict[str, Any]) -> None:
        if event.get("event") == "job":
            state.image, state.images = event["finished"], event["total"]
        if on_event is not None:
            on_event(state, event)

    try:
        result = batch_runner.run(config, spec, folder, workers=workers, on_event=forward)
    except EngineError as exc:
        state.status, state.message = "error", str(exc)
        raise
    state.status = "done"
    return result


def batch_target(ctx, spec: str | Path | list[dict[str, Any]], folder: str | Path | None
                 ) -> tuple[Path | list[dict[str, Any]], Path, bool]:
    """(the spec file or rows, the output folder, whether results are packed) of a batch; the folder defaults to
    one named after the spec file (or after the rows' content) in the add-on's output folder."""
    if isinstance(spec, list):
        if not spec or not all(isinstance(r, dict) for r in spec):
            raise BadSetting("spec", spec, "a spec file, or a list of at least one row (a dict of field: value)")
        default = prefs.get(ctx).default_bundle  # rows that name no bundle take the preference's, like the panel
        spec = [{"bundle": default, **row} if default else row for row in spec]
        name = f"batch-{batch_runner.content_name(spec)}"
    else:
        spec = Path(bpy.path.abspath(str(spec)))
        if not spec.is_file() or spec.suffix.lower() not in (".csv", ".jsonl", ".json"):
            raise BadSetting("spec", str(spec), "an existing .csv, .jsonl or .json file")
        name = spec.stem
    root, pack = imaging.output_folder(ctx)
    return spec, (Path(bpy.path.abspath(str(folder))) if folder is not None else root / name), pack


def batch(spec: str | Path | list[dict[str, Any]], *, folder: str | Path | None = None, workers: int = 1,
          scene=None, on_event: OnEvent | None = None) -> Batch:
    """Run a batch spec (a .csv / .jsonl / .json file, or rows as dicts with the jobs' field names plus ``kind``
    and ``name``), waited for, with the engine's batch runner; every finished job is loaded into Blender.

    Resumable: the same spec (or rows) and folder again make only what is missing. ``folder``: where the files
    go (default: named after the spec file, or after the rows' content, in the add-on's output folder)."""
    ctx = _context(scene)
    spec, folder, pack = batch_target(ctx, spec, folder)
    result = _run_batch(ctx, spec, folder, workers, on_event)
    loaded = batch_results.load(result, pack=pack)
    out = Batch(result.folder, result.jobs, result.failed, result.sheets, loaded.images, loaded.clips,
                loaded.objects, loaded.collection)
    return out


def generate(prompt: str | None = None, *, seed: int | None = None, image_mode: str | None = None, scene=None,
             set_background: bool = False, folder: str | Path | None = None, on_event: OnEvent | None = None,
             **changes: Any) -> Variations:
    """One image with the panel's settings (and ``changes``); a random seed if the panel says so."""
    ctx = _context(scene)
    s = settings(ctx.scene, **changes, **({"mode": image_mode} if image_mode else {}),
                 **({"prompt": prompt} if prompt is not None else {}))
    seed = request.pick_seed(s) if seed is None else seed
    return variations([s.prompt], [seed], image_mode=s.mode, scene=ctx.scene, contact_sheet=False,
                      set_background=set_background, folder=folder, on_event=on_event,
                      **{k: v for k, v in changes.items() if k not in ("prompt", "mode", "seed", "random_seed")})


def texture_settings(scene=None, **changes: Any) -> request.TextureSettings:
    """The scene panel's texture settings with ``changes`` (field names of ``request.TextureSettings``)."""
    scene = scene or bpy.context.scene
    return props.texture_settings_from(scene.sfumato).replace(**changes)


def _mesh_job(mode, settings: Callable[..., Any], obj, prompt: str | None, seed: int | None, scene,
              folder: str | Path | None, on_event: OnEvent | None, changes: dict[str, Any]):
    """One job on one mesh object, waited for: ``mode`` is the add-on module with ``check``, ``prepare`` and
    ``run`` (``texturing`` or ``turntable``), ``settings`` the panel's settings with changes."""
    ctx = _context(scene)
    obj = bpy.data.objects.get(obj) if isinstance(obj, str) else obj
    if obj is None:
        obj = bpy.context.view_layer.objects.active
    s = settings(ctx.scene, **changes, **({"prompt": prompt} if prompt is not None else {}))
    if seed is not None:
        s = s.replace(seed=int(seed), random_seed=False)
    texturing.leave_edit_mode()
    mode.check(obj, s)
    config = prefs.engine_config(ctx)
    job = mode.prepare(ctx, obj, s, folder=Path(folder) if folder is not None else None)
    return mode.run(config, job, on_event=on_event)


def texture(obj=None, prompt: str | None = None, *, seed: int | None = None, scene=None,
            folder: str | Path | None = None, on_event: OnEvent | None = None, **changes: Any) -> texturing.Textured:
    """Texture one mesh object (or its name; default: the active object), waited for; the object gets the
    material "Sfumato texture <name>". ``changes``: ``mode`` ("projection" | "material" | "sds"), ``variant``
    ("sequential" | "sync"), ``views``, ``fill_views``, ``iters`` (sds), ``resolution``, ``texture_size``,
    ``tile_size``, ``steps``, ... (``request.TextureSettings`` fields). Projection and sds modes add a UV map
    (Smart UV Project) to an object that has none. Material mode textures each material slot on its own:
    ``slots={"Brick facade": "weathered red brick"}`` (else the object's slot table, prefilled from the slots'
    names) and ``only=["Roof"]`` to regenerate some slots and leave the others as they are."""
    if "slots" in changes:
        changes.update(slot_changes(changes.pop("slots"), changes.pop("slot_tiles", ())))
    if isinstance(changes.get("only"), (str, list)):
        changes["only"] = (changes["only"],) if isinstance(changes["only"], str) else tuple(changes["only"])
    return _mesh_job(texturing, texture_settings, obj, prompt, seed, scene, folder, on_event, changes)


def repaint(obj=None, prompt: str | None = None, *, faces: Iterable[int] | None = None, seed: int | None = None,
            scene=None, folder: str | Path | None = None, on_event: OnEvent | None = None,
            **changes: Any) -> texturing.Textured:
    """Paint some faces of a mesh object (or its name; default: the active object) again with ``prompt``, keeping
    the rest of the projection texture it wears, waited for. ``faces``: polygon indices (default: the faces
    selected in Edit Mode). The object gets a new "Sfumato texture <name>" material; the old texture stays."""
    ctx = _context(scene)
    obj = bpy.data.objects.get(obj) if isinstance(obj, str) else obj
    obj = obj if obj is not None else bpy.context.view_layer.objects.active
    if obj is None or obj.type != 'MESH':
        raise BadSetting("obj", getattr(obj, "name", obj), "a mesh object (or its name)")
    texturing.leave_edit_mode()
    if faces is not None:
        wanted = set(int(i) for i in faces)
        if wanted and not wanted <= set(range(len(obj.data.polygons))):
            raise BadSetting("faces", sorted(wanted - set(range(len(obj.data.polygons))))[:5],
                             f"face indices of {obj.name!r}: 0..{len(obj.data.polygons) - 1}")
        obj.data.polygons.foreach_set("select", [i in wanted for i in range(len(obj.data.polygons))])
    s = texture_settings(ctx.scene, **changes, **({"prompt": prompt} if prompt is not None else {}))
    if seed is not None:
        s = s.replace(seed=int(seed), random_seed=False)
    job = texturing.prepare(ctx, obj, s, folder=Path(folder) if folder is not None else None, repaint=True)
    return texturing.run(prefs.engine_config(ctx), job, on_event=on_event)


def slot_changes(slots: Any, tiles: Any = ()) -> dict[str, tuple[str, ...]]:
    """``texture(slots={"Brick facade": "red brick", "Lawn": {"prompt": "grass", "tile_size": 2.0}})`` as the
    settings' ``slots`` and ``slot_tiles`` entries (NAME=PROMPT, NAME=METRES)."""
    if not isinstance(slots, dict):
        raise BadSetting("slots", slots, "a dict {slot name: prompt or {\"prompt\": ..., \"tile_size\": metres}}")
    prompts, sizes = [], list(tiles)
    for name, entry in slots.items():
        entry = {"prompt": entry} if isinstance(entry, str) else entry
        if not isinstance(name, str) or not isinstance(entry, dict) or set(entry) - {"prompt", "tile_size"}:
            raise BadSetting("slots", {name: entry}, "a slot name with a prompt or {\"prompt\": ..., \"tile_size\": "
                             "metres}")
        if entry.get("prompt"):
            prompts.append(f"{name}={entry['prompt']}")
        if entry.get("tile_size") is not None:
            sizes.append(f"{name}={entry['tile_size']}")
    return {"slots": tuple(prompts), "slot_tiles": tuple(sizes)}


def revert(obj=None) -> bool:
    """Put back the materials a textured object (or its name; default: the active object) had before Sfumato
    textured it; False when it has nothing to revert. The textures stay in the file."""
    obj = bpy.data.objects.get(obj) if isinstance(obj, str) else (obj or bpy.context.active_object)
    if obj is None or obj.type != 'MESH':
        raise BadSetting("obj", getattr(obj, "name", obj), "a mesh object (or its name)")
    return texturing.revert(obj)


def turntable_settings(scene=None, **changes: Any) -> request.TurntableSettings:
    """The scene panel's turntable settings with ``changes`` (field names of ``request.TurntableSettings``)."""
    scene = scene or bpy.context.scene
    return props.turntable_settings_from(scene.sfumato).replace(**changes)


def turntable(obj=None, prompt: str | None = None, *, seed: int | None = None, scene=None,
              folder: str | Path | None = None, on_event: OnEvent | None = None,
              **changes: Any) -> turntable_mode.Turntable:
    """A looping video orbiting one mesh object (or its name; default: the active object), waited for; it is
    loaded as the Movie Clip "Sfumato turntable <name>". ``changes``: ``frames``, ``fps``, ``resolution``,
    ``elevation``, ``temporal`` ("auto" | "on" | "off"), ``conditioning``, ``format`` ("mp4" | "gif"),
    ``steps``, ... (``request.TurntableSettings`` fields)."""
    return _mesh_job(turntable_mode, turntable_settings, obj, prompt, seed, scene, folder, on_event, changes)


def asset_settings(scene=None, **changes: Any) -> request.AssetSettings:
    """The scene panel's asset settings with ``changes`` (field names of ``request.AssetSettings``)."""
    scene = scene or bpy.context.scene
    return props.asset_settings_from(scene.sfumato).replace(**changes)


def asset(prompt: str | None = None, *, seed: int | None = None, scene=None, folder: str | Path | None = None,
          on_event: OnEvent | None = None, **changes: Any) -> asset_mode.Asset:
    """A 3D asset from the prompt, waited for, imported at the 3D cursor and selected. ``changes``:
    ``iters``, ``resolution``, ``guidance``, ``size`` (metres, its largest side), ``render`` ("rgb" | "latent"),
    ``negative``, ``bundle`` (``request.AssetSettings`` fields)."""
    ctx = _context(scene)
    s = asset_settings(ctx.scene, **changes, **({"prompt": prompt} if prompt is not None else {}))
    if seed is not None:
        s = s.replace(seed=int(seed), random_seed=False)
    config = prefs.engine_config(ctx)
    job = asset_mode.prepare(ctx, s, folder=Path(folder) if folder is not None else None)
    return asset_mode.run(config, job, on_event=on_event)


def upscale(image=None, scale: int = upscaling.U.scale, **kw: Any) -> upscaling.Upscaled:
    """``image`` (a datablock, its name or a file; default: the Image Editor's, else the latest result) made
    ``scale`` (2 or 4) times larger, waited for; ``upscaling.upscale`` says the rest."""
    return upscaling.upscale(image, scale, **kw)
