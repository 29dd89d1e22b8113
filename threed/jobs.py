"""Worker/CLI job kinds of the 3-D heads: ``texture`` and ``asset``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..core.errors import BadParameter
from ..core.jobs import JobContext, check_writable


def texture_job(params: dict[str, Any], output: Path, ctx: JobContext) -> dict[str, Any]:
    """Texture ``params["mesh"]`` into ``output`` (.glb), with the texture PNG and a JSON sidecar beside it."""
    from ..core import bundle as bundles
    from ..core.device import out_of_memory_as_error, pick_device, pick_dtype
    from .mesh import load_mesh
    from .texture import TextureRequest, ViewInfo, save_result, texture

    if not isinstance(params, dict):
        raise BadParameter("params", params, "a JSON object of texture settings")
    req = TextureRequest.from_dict(params).validate()
    output = Path(output)
    if req.mode == "sds" and req.state is None:  # cancel saves here; the same job again resumes
        req.state = str(output.with_name(output.stem + ".sds-state.safetensors"))
    if output.suffix.lower() != ".glb":
        raise BadParameter("output", str(output), "a path ending in .glb")
    check_writable(output)
    mesh = load_mesh(req.mesh, max_faces=req.max_faces)  # bad meshes fail before any model loads
    device = pick_device(req.device if req.device != "auto" else ctx.device)
    dtype = pick_dtype(device, req.dtype if req.dtype != "auto" else ctx.dtype)
    bundle = bundles.resolve(req.bundle)
    req = bundles.fill_steps(req, bundle)
    views = req.views if req.mode == "projection" and req.variant == "sequential" else 1
    ctx.emit("progress", id=ctx.job_id, stage="loading", step=0, total=req.steps, view=0, views=views,
             image=0, images=1, preview=None)
    with out_of_memory_as_error(f"loading bundle {bundle.name} on {device}"):
        has_depth = "controlnet_depth" in bundle.components
        models = ctx.cache.get(bundle, device, dtype, need_controlnet=req.mode == "projection" and (
            req.conditioning == "depth" or (req.conditioning == "auto" and has_depth)))
    ctx.check_cancel()

    def on_view(info: ViewInfo) -> None:
        ctx.check_cancel()
        ctx.emit("progress", id=ctx.job_id, stage="texture", step=info.step.step, total=info.step.total,
                 view=info.view, views=info.views, image=info.view, images=info.views, preview=None)

    with out_of_memory_as_error(f"texturing on {device}"):
        result = texture(req, models, on_view=on_view, mesh=mesh)
    paths = save_result(result, output)
    ctx.saved += [paths["glb"], paths["texture"], paths["sidecar"]]
    return {"files": [paths["glb"], paths["texture"]], "glb": paths["glb"], "texture": paths["texture"],
            "sidecar": paths["sidecar"], "mode": req.mode, "tile_size": req.tile_size,
            "metadata": result.metadata, "metrics": result.metrics, "warnings": result.warnings}


def asset_job(params: dict[str, Any], output: Path, ctx: JobContext) -> dict[str, Any]:
    """Text → 3-D asset into ``output`` (.glb), with a four-view preview PNG and a JSON sidecar beside it.
    A cancelled job leaves its state in ``<output stem>.asset-state.safetensors``; the same job again resumes."""
    from ..core import bundle as bundles
    from ..core.device import out_of_memory_as_error, pick_device, pick_dtype
    from ..core.provenance import atomic_write
    from .asset import AssetRequest, AssetStep, make_asset, save_result

    if not isinstance(params, dict):
        raise BadParameter("params", params, "a JSON object of asset settings")
    req = AssetRequest.from_dict(params).validate()
    output = Path(output)
    if output.suffix.lower() != ".glb":
        raise BadParameter("output", str(output), "a path ending in .glb")
    check_writable(output)
    if req.state is None:
        req.state = str(output.with_name(output.stem + ".asset-state.safetensors"))
    device = pick_device(req.device if req.device != "auto" else ctx.device)
    dtype = pick_dtype(device, req.dtype if req.dtype != "auto" else ctx.dtype)
    bundle = bundles.resolve(req.bundle)
    ctx.emit("progress", id=ctx.job_id, stage="loading", step=0, total=req.iters, loss=None, preview=None,
             image=0, images=1)
    with out_of_memory_as_error(f"loading bundle {bundle.name} on {device}"):
        models = ctx.cache.get(bundle, device, dtype, need_controlnet=False)
    ctx.check_cancel()

    def on_step(info: AssetStep) -> None:
        path = None
        if info.preview is not None and ctx.preview_every:
            folder = ctx.preview_dir or output.with_name(output.stem + "_previews")
            target = Path(folder) / f"asset_{info.step:05d}.png"
            path = str(atomic_write(target, lambda tmp: info.preview.save(tmp, format="PNG")))
        ctx.emit("progress", id=ctx.job_id, stage="asset", step=info.step, total=info.total,
                 loss=round(info.loss, 4), preview=path, image=0, images=1)
        ctx.check_cancel()  # after the step's event: a cancel saves the state including this step

    with out_of_memory_as_error(f"optimising the asset on {device}"):
        result = make_asset(req, models, on_step=on_step, on_stage=lambda stage: ctx.emit(
            "progress", id=ctx.job_id, stage=stage, step=req.iters, total=req.iters, loss=None, preview=None,
            image=0, images=1))
    paths = save_result(result, output)
    ctx.saved += [paths["glb"], paths["preview"], paths["sidecar"]]
    metrics = {k: v for k, v in result.metrics.items() if k != "loss_curve"}
    return {"files": [paths["glb"], paths["preview"]], "glb": paths["glb"], "preview": paths["preview"],
            "sidecar": paths["sidecar"], "metadata": {**result.metadata, "settings": asdict(req)}, "metrics": metrics}
