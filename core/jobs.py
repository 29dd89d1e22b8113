"""Job kinds the worker (and the CLI) run: plain functions ``(params, output, ctx) -> result``.

A job reads only its own inputs, reports progress through ``ctx.emit``, checks ``ctx.cancel`` between
denoising steps, and writes its outputs atomically. Heads add their kinds to ``JOB_KINDS``.
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadParameter, Cancelled

Emit = Callable[..., None]


@dataclass
class JobContext:
    job_id: str
    cache: Any  # loading.ModelCache
    device: str  # the worker's default device ("auto", "cuda", ...)
    dtype: str
    cancel: threading.Event
    emit: Emit
    preview_every: int = 1  # 0 = no preview files
    preview_dir: Path | None = None
    saved: list[str] = field(default_factory=list)  # outputs already written (kept on cancel or error)

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()


def check_writable(output: Path) -> None:
    """Fail before any work when the outputs cannot be written (the field is ``output``)."""
    from .errors import BadParameter

    output = Path(output)
    if output.is_dir():
        raise BadParameter("output", str(output), "a .png file path, not a folder")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        probe = output.parent / f".sfumato-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BadParameter("output", str(output), f"a path in a writable folder ({exc.strerror})") from None


def image_job(params: dict[str, Any], output: Path, ctx: JobContext) -> dict[str, Any]:
    """Generate ``params`` (an ``ImageRequest``) into ``output``; each batch is saved as it finishes."""
    from . import bundle as bundles
    from .device import out_of_memory_as_error, pick_device, pick_dtype
    from .image import ImageRequest, generate_safely, output_paths
    from .latents import preview
    from .provenance import atomic_write, save_png

    if not isinstance(params, dict):
        raise BadParameter("params", params, "a JSON object of image settings")
    req = ImageRequest.from_dict(params).validate()
    device = pick_device(req.device if req.device != "auto" else ctx.device)
    dtype = pick_dtype(device, req.dtype if req.dtype != "auto" else ctx.dtype)
    bundle = bundles.resolve(req.bundle)
    req = bundles.fill_steps(req, bundle)
    if req.seed is None:
        req.seed = random.randint(0, 2**31 - 1)
    paths = output_paths(output, list(range(req.seed, req.seed + req.n)))
    check_writable(paths[0])
    ctx.emit("progress", id=ctx.job_id, stage="loading", step=0, total=req.steps, image=0, images=req.n,
             preview=None)
    with out_of_memory_as_error(f"loading bundle {bundle.name} on {device}"):
        models = ctx.cache.get(bundle, device, dtype, need_controlnet=req.depth_image is not None)
    ctx.check_cancel()
    metadata: list[dict[str, Any]] = []

    def on_step(info) -> None:
        ctx.check_cancel()
        path = None
        if ctx.preview_dir is not None and ctx.preview_every and \
                (info.step % ctx.preview_every == 0 or info.step == info.total):
            target = ctx.preview_dir / f"step_{len(metadata):04d}_{info.step:04d}.png"
            path = str(atomic_write(target, lambda tmp: preview(models, info.latents).save(tmp, format="PNG")))
        ctx.emit("progress", id=ctx.job_id, stage="denoising", step=info.step, total=info.total,
                 image=len(metadata), images=req.n, preview=path)

    def on_images(batch) -> None:
        for g in batch:
            ctx.saved.append(str(save_png(g.image, paths[g.seed - req.seed], g.metadata)))
            metadata.append(g.metadata)

    graphs = models.extras.get("graphs")
    seen = len(graphs.events) if graphs is not None else 0
    generate_safely(req, models, on_step=on_step, on_images=on_images)
    result: dict[str, Any] = {"files": list(ctx.saved), "metadata": metadata}
    graphs = models.extras.get("graphs")
    if graphs is not None and len(graphs.events) > seen:  # the fast path recorded new shapes in this job
        result["fast_path"] = graphs.events[seen:]
    return result


def texture_job(params: dict[str, Any], output: Path, ctx: JobContext) -> dict[str, Any]:
    """The texture head's job (``sfumato.threed``), imported when first used."""
    from ..threed.jobs import texture_job as run

    return run(params, output, ctx)


def video_job(params: dict[str, Any], output: Path, ctx: JobContext) -> dict[str, Any]:
    """The video head's text-to-video job (``sfumato.video``), imported when first used."""
    from ..video.jobs import video_job as run

    return run(params, output, ctx)


def turntable_job(params: dict[str, Any], output: Path, ctx: JobContext) -> dict[str, Any]:
    """The video head's turntable job: ``params["mesh"]`` orbited, one looping video."""
    from ..video.jobs import turntable_job as run

    return run(params, output, ctx)


def asset_job(params: dict[str, Any], output: Path, ctx: JobContext) -> dict[str, Any]:
    """The 3-D head's text-to-asset job (``sfumato.threed``): SDS on a radiance field, then a GLB."""
    from ..threed.jobs import asset_job as run

    return run(params, output, ctx)


JOB_KINDS: dict[str, Callable[[dict[str, Any], Path, JobContext], dict[str, Any]]] = {
    "image": image_job,
    "texture": texture_job,
    "video": video_job,
    "turntable": turntable_job,
    "asset": asset_job,
}
