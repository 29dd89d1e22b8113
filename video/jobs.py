"""Job runners of the video head: ``video`` (text-to-video) and ``turntable`` (a mesh's orbit).

Both take a ``VideoRequest`` (``TurntableRequest`` for a turntable) checked and completed by the job's
door (``core/jobs.py``), so the CLI and the worker run the same path.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..core.errors import BadParameter
from ..core.jobs import JobContext, Opened, check_writable, load_models


def video_job(job: Opened, output: Path, ctx: JobContext) -> dict[str, Any]:
    """Generate ``job.request`` into ``output`` (.mp4 or .gif) and ``output.json``; bad meshes, outputs and motion
    adapters fail before the denoiser runs its first step."""
    from ..core.device import out_of_memory_as_error
    from .generate import generate_video, write_video

    req, b = job.request, job.bundle
    output = check_writable(output, (".mp4", ".gif"))
    mesh = None
    if req.mesh is not None:
        from ..threed.mesh import load_mesh

        mesh = load_mesh(req.mesh, max_faces=req.max_faces)
    ctx.emit("progress", id=ctx.job_id, stage="loading", step=0, total=req.steps, image=0, images=1, preview=None)
    has_depth = "controlnet_depth" in b.components
    models = load_models(job, ctx, need_controlnet=mesh is not None and req.conditioning != "img2img" and has_depth)
    source = req.motion or (str(b.component_dir("motion_adapter")) if "motion_adapter" in b.components else None)
    if req.temporal == "on" and source is None:
        raise BadParameter("temporal", "on", f"off or auto: bundle {b.name} has no motion module (motion_adapter/); "
                           "give a motion adapter (AnimateDiff weights) as motion")
    motion = None
    if source is not None and req.temporal != "off":
        from .adapter import load_motion_adapter

        motion = load_motion_adapter(source, models.unet)

    def on_step(info) -> None:
        ctx.check_cancel()
        ctx.emit("progress", id=ctx.job_id, stage="video", step=info.step, total=info.total, image=0, images=1,
                 frames=req.frames, preview=None)

    try:
        with out_of_memory_as_error(f"generating {req.frames} frames on {job.device}"):
            frames, meta = generate_video(models, req, mesh=mesh, motion=motion, on_step=on_step)
    finally:
        if motion is not None:
            motion.remove()  # the U-Net is shared with image jobs in the worker's cache
    if motion is not None:
        meta["motion"] = Path(source).name if req.motion else f"{b.name}/motion_adapter"
    meta["settings"] = {k: v for k, v in asdict(req).items() if k not in ("prompt", "negative", "mesh")}
    video, sidecar = write_video(frames, output, req.fps, meta)
    ctx.keep(video, sidecar)
    return {"files": [str(video)], "video": str(video), "sidecar": str(sidecar), "frames": len(frames),
            "fps": req.fps, "metadata": meta}
