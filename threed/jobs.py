"""Job runners of the 3-D heads: ``texture`` and ``asset``, each taking a request checked and completed by the
job's door (``core/jobs.py``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..core.errors import BadParameter
from ..core.jobs import JobContext, Opened, check_writable, load_models

MAP_KINDS = ("normal", "roughness", "height")  # the maps a material-mode slot carries beside its colour tile


def texture_job(job: Opened, output: Path, ctx: JobContext) -> dict[str, Any]:
    """Texture ``job.request.mesh`` into ``output`` (.glb), with the texture PNG and a JSON sidecar beside it."""
    from ..core.device import out_of_memory_as_error
    from . import repaint, slots
    from .mesh import load_mesh
    from .texture import ViewInfo, save_result, texture

    req = job.request
    output = check_writable(output, (".glb",))
    if req.mode == "sds" and req.state is None:  # cancel saves here; the same job again resumes
        req.state = str(output.with_name(output.stem + ".sds-state.safetensors"))
    mesh = load_mesh(req.mesh, max_faces=req.max_faces)  # bad meshes fail before any model loads
    if req.mode == "material":
        slots.plan(req, mesh, req.seed)  # and slot tables naming slots the mesh lacks
    if req.repaint:
        repaint.load(req, mesh)  # and a repaint that does not fit the mesh
    views = req.views if req.mode == "projection" and req.variant == "sequential" else 1
    ctx.emit("progress", id=ctx.job_id, stage="loading", step=0, total=req.steps, view=0, views=views,
             image=0, images=1, preview=None)
    has_depth = "controlnet_depth" in job.bundle.components
    models = load_models(job, ctx, need_controlnet=req.mode == "projection" and (
        req.conditioning == "depth" or (req.conditioning == "auto" and has_depth)))

    def on_view(info: ViewInfo) -> None:
        ctx.check_cancel()
        ctx.emit("progress", id=ctx.job_id, stage="texture", step=info.step.step, total=info.step.total,
                 view=info.view, views=info.views, image=info.view, images=info.views, preview=None,
                 **({"slot": info.slot} if info.slot else {}))

    with out_of_memory_as_error(f"texturing on {job.device}"):
        result = texture(req, models, on_view=on_view, mesh=mesh)
    paths = save_result(result, output)
    slot_files = [f for s in paths.get("slots") or [] for f in (s["texture"], *(s[k] for k in MAP_KINDS if k in s))]
    files = [paths["glb"], *(slot_files or [paths["texture"]])]  # the first slot's tile is the texture
    ctx.keep(*files, paths["sidecar"])
    return {"files": files, "glb": paths["glb"], "texture": paths["texture"], "sidecar": paths["sidecar"],
            "mode": req.mode, "tile_size": req.tile_size,
            "slots": paths.get("slots"), "metadata": result.metadata, "metrics": result.metrics,
            "warnings": result.warnings}


def asset_job(job: Opened, output: Path, ctx: JobContext) -> dict[str, Any]:
    """Text → 3-D asset into ``output`` (.glb), with a four-view preview PNG and a JSON sidecar beside it.
    A cancelled job leaves its state in ``<output stem>.asset-state.safetensors``; the same job again resumes."""
    from ..core.device import out_of_memory_as_error
    from ..core.estimate import Pace
    from ..core.provenance import atomic_write
    from .asset import AssetStep, make_asset, save_result

    req = job.request
    output = check_writable(output, (".glb",))
    if req.state is None:
        req.state = str(output.with_name(output.stem + ".asset-state.safetensors"))
    check_state(Path(req.state))  # a damaged state is refused before any model loads
    ctx.emit("progress", id=ctx.job_id, stage="loading", step=0, total=req.iters, loss=None, preview=None,
             image=0, images=1)
    models = load_models(job, ctx, need_controlnet=False)
    pace = Pace(req.iters, lambda **f: ctx.emit("estimate", id=ctx.job_id, **f), (ctx.estimate or {}).get("peak_bytes"))

    def on_step(info: AssetStep) -> None:
        pace.step(info.step)  # the warm-up had no field to render: its first iterations say the time again
        path = None
        if info.preview is not None and ctx.preview_every:
            folder = ctx.preview_dir or output.with_name(output.stem + "_previews")
            target = Path(folder) / f"asset_{info.step:05d}.png"
            path = str(atomic_write(target, lambda tmp: info.preview.save(tmp, format="PNG")))
        ctx.emit("progress", id=ctx.job_id, stage="asset", step=info.step, total=info.total,
                 loss=round(info.loss, 4), preview=path, image=0, images=1)
        ctx.check_cancel()  # after the step's event: a cancel saves the state including this step

    with out_of_memory_as_error(f"optimising the asset on {job.device}"):
        result = make_asset(req, models, on_step=on_step, check=ctx.check_cancel, on_stage=lambda stage: ctx.emit(
            "progress", id=ctx.job_id, stage=stage, step=req.iters, total=req.iters, loss=None, preview=None,
            image=0, images=1))
    paths = save_result(result, output)
    ctx.keep(paths["glb"], paths["preview"], paths["sidecar"])
    metrics = {k: v for k, v in result.metrics.items() if k != "loss_curve"}
    return {"files": [paths["glb"], paths["preview"]], "glb": paths["glb"], "preview": paths["preview"],
            "sidecar": paths["sidecar"], "metadata": {**result.metadata, "settings": asdict(req)}, "metrics": metrics}


def check_state(path: Path) -> None:
    """A resumable asset state that is there must read as one (``asset.save_state``'s safetensors file with its
    iteration, its JSON and the random generator's state), before any model loads; its tensors are read on
    resume, after the models, where a state made with other settings is refused by name."""
    import json

    from safetensors import safe_open

    if not path.is_file():
        return
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            int(meta.get("iteration", "0")), json.loads(meta.get("info", "{}"))
            if "rng" not in f.keys():
                raise ValueError("no random generator state ('rng')")
    except Exception as exc:  # safetensors, json and int raise assorted types for a damaged file
        first = str(exc).splitlines()[0][:200] if str(exc) else "unreadable"
        raise BadParameter("state", str(path), f"a state file saved by a cancelled asset run ({type(exc).__name__}: "
                           f"{first}); delete it to start over") from None
