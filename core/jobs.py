"""Job kinds the worker (and the CLI) run: plain functions ``(params, output, ctx) -> result``.

A job reads only its own inputs, reports progress through ``ctx.emit``, checks ``ctx.cancel`` between
denoising steps, and writes its outputs atomically. Heads add their kinds to ``JOB_KINDS``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
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

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()


def image_job(params: dict[str, Any], output: Path, ctx: JobContext) -> dict[str, Any]:
    from . import bundle as bundles
    from .device import pick_device, pick_dtype
    from .image import ImageRequest, generate_safely, output_paths
    from .latents import preview
    from .provenance import atomic_write, save_png

    if not isinstance(params, dict):
        raise BadParameter("params", params, "a JSON object of image settings")
    try:
        req = ImageRequest.from_dict(params).validate()
    except TypeError as exc:
        raise BadParameter("params", params, str(exc)) from None
    device = pick_device(req.device if req.device != "auto" else ctx.device)
    dtype = pick_dtype(device, req.dtype if req.dtype != "auto" else ctx.dtype)
    bundle = bundles.resolve(req.bundle)
    if req.seed is None:
        import random

        req.seed = random.randint(0, 2**31 - 1)
    output_paths(output, [req.seed])  # validate the output name before any work
    ctx.emit("progress", id=ctx.job_id, stage="loading", step=0, total=req.steps, image=0, images=req.n,
             preview=None)
    models = ctx.cache.get(bundle, device, dtype, need_controlnet=req.depth_image is not None)
    ctx.check_cancel()
    done_batches = [0]

    def on_step(info) -> None:
        ctx.check_cancel()
        path = None
        if ctx.preview_dir is not None and ctx.preview_every and \
                (info.step % ctx.preview_every == 0 or info.step == info.total):
            target = ctx.preview_dir / f"step_{info.step:04d}.png"
            path = str(atomic_write(target, lambda tmp: preview(models, info.latents).save(tmp, format="PNG")))
        first = done_batches[0] * req.batch_size
        if info.step == info.total:
            done_batches[0] += 1
        ctx.emit("progress", id=ctx.job_id, stage="denoising", step=info.step, total=info.total,
                 image=first, images=req.n, preview=path)

    images = generate_safely(req, models, on_step=on_step)
    paths = output_paths(output, [g.seed for g in images])
    files = [str(save_png(g.image, p, g.metadata)) for g, p in zip(images, paths)]
    return {"files": files, "metadata": [g.metadata for g in images]}


JOB_KINDS: dict[str, Callable[[dict[str, Any], Path, JobContext], dict[str, Any]]] = {
    "image": image_job,
}
