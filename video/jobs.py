"""Worker/CLI job kinds of the video head: ``video`` (text-to-video) and ``turntable`` (a mesh's orbit).

Both run one ``VideoRequest``: the CLI builds it from its flags, the worker from the job's params, so
the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core.bundle import fill_steps, resolve
from ..core.errors import BadParameter
from ..core.fast import FAST_MODES
from ..core.image import MAX_SEED, STEPS_ALLOWED, checked_fields, field_check, is_integer, is_number, is_steps
from ..core.jobs import JobContext, check_writable
from ..core.sampling import strength_allowed
from ..core.schedulers import DEFAULT_SCHEDULER, names
from .turntable import MAX_FRAMES

TEMPORAL = ("auto", "on", "off")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


@dataclass
class VideoRequest:
    prompt: str
    mesh: str | None = None  # a turntable of this mesh; None: text-to-video
    negative: str = ""
    frames: int = 24
    fps: int = 12
    resolution: int | None = None  # default: the bundle's native size
    steps: int | None = None  # None = the bundle's default_steps
    guidance: float = 7.5
    seed: int | None = None
    scheduler: str = DEFAULT_SCHEDULER
    beta_schedule: str | None = None  # override the bundle's noise schedule (AnimateDiff weights expect "linear")
    elevation: float = 20.0
    temporal: str = "auto"  # auto: the bundle's motion module (or ``motion``) when there is one; off: per frame
    motion: str | None = None  # an AnimateDiff motion adapter (diffusers folder or .safetensors)
    window: int | None = None  # frames per frame-attention call (default: the module's length)
    conditioning: str = "auto"  # turntable: auto (depth ControlNet when the bundle has one), depth, img2img
    strength: float = 0.8  # turntable with img2img: how far frames move from the orbit's shading
    relight: bool = True  # turntable with img2img: the headlight's shading multiplied onto the surface
    anchored_noise: bool = True  # turntable: the mesh's pixels start from noise fixed on its surface
    sync: float = 0.0  # turntable: pull each bit of surface's latents toward their mean over frames (0..1)
    sync_until: float = 0.5  # ... for this share of the steps
    control_scale: float = 1.0
    max_faces: int = 200_000
    bundle: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    fast: str = "auto"  # auto/on: a bfloat16 U-Net on a CPU that does bfloat16 natively; off: eager (core/fast.py)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VideoRequest":
        return cls(**checked_fields(cls, data, {"prompt": "a text prompt is required"}))

    def validate(self) -> "VideoRequest":
        check, number, integer = field_check(self), is_number, is_integer

        check("prompt", isinstance(self.prompt, str) and bool(self.prompt.strip()), "a non-empty text prompt")
        check("mesh", self.mesh is None or (isinstance(self.mesh, str) and bool(self.mesh)),
              "a path to a .glb, .gltf, .obj or .ply file, or none for text-to-video")
        check("negative", isinstance(self.negative, str), "a text")
        check("frames", integer(self.frames) and 2 <= self.frames <= MAX_FRAMES, f"an integer from 2 to {MAX_FRAMES}")
        check("fps", integer(self.fps) and 1 <= self.fps <= 120, "an integer from 1 to 120")
        check("resolution", self.resolution is None or (integer(self.resolution) and self.resolution % 8 == 0
                                                        and 64 <= self.resolution <= 2048),
              "a multiple of 8 from 64 to 2048, or none for the bundle's size")
        check("steps", is_steps(self.steps), STEPS_ALLOWED)
        check("guidance", number(self.guidance) and 0 <= self.guidance <= 50, "a number 0..50")
        check("seed", self.seed is None or (integer(self.seed) and 0 <= self.seed <= MAX_SEED),
              f"an integer 0..{MAX_SEED}, or none for random")
        check("scheduler", self.scheduler in names(), ", ".join(names()))
        check("beta_schedule", self.beta_schedule in (None, *BETA_SCHEDULES), f"none or {', '.join(BETA_SCHEDULES)}")
        check("elevation", number(self.elevation) and -89 <= self.elevation <= 89, "an angle from -89 to 89 degrees")
        check("temporal", self.temporal in TEMPORAL, ", ".join(TEMPORAL))
        check("motion", self.motion is None or (isinstance(self.motion, str) and bool(self.motion)),
              "a motion adapter folder or .safetensors file, or none for the bundle's")
        check("window", self.window is None or (integer(self.window) and 1 <= self.window <= 64),
              "an integer 1..64, or none for the motion module's length")
        check("conditioning", self.conditioning in ("auto", "depth", "img2img"), "auto, depth or img2img")
        check("strength", number(self.strength) and 0 < self.strength <= 1, "a number in (0, 1]")
        if self.mesh is not None and self.conditioning == "img2img" and integer(self.steps) and number(self.strength):
            check("strength", int(self.steps * self.strength) >= 1, strength_allowed(self.steps))
        check("relight", isinstance(self.relight, bool), "true or false")
        check("anchored_noise", isinstance(self.anchored_noise, bool), "true or false")
        check("sync", number(self.sync) and 0 <= self.sync <= 1, "a number 0..1")
        check("sync_until", number(self.sync_until) and 0 <= self.sync_until <= 1, "a number 0..1")
        check("control_scale", number(self.control_scale) and 0 <= self.control_scale <= 4, "a number 0..4")
        check("max_faces", integer(self.max_faces) and self.max_faces >= 1, "a positive integer")
        check("fast", self.fast in FAST_MODES, ", ".join(FAST_MODES))
        return self


def check_output(path: Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise BadParameter("output", str(path), "a path ending in .mp4 or .gif")
    check_writable(path)
    return path


def run_video(req: VideoRequest, output: Path, get_models: Callable[[Any, bool], Any],
              on_step: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Generate ``req`` and write ``output`` (+ ``output.json``); ``get_models(bundle, need_controlnet)``.

    Bad meshes, outputs and motion adapters fail before the denoiser runs its first step."""
    from .generate import generate_video, write_video

    output = check_output(output)
    mesh = None
    if req.mesh is not None:
        from ..threed.mesh import load_mesh

        mesh = load_mesh(req.mesh, max_faces=req.max_faces)
    b = resolve(req.bundle)
    req = fill_steps(req, b)
    has_depth = "controlnet_depth" in b.components
    models = get_models(b, mesh is not None and req.conditioning != "img2img" and has_depth)
    source = req.motion or (str(b.component_dir("motion_adapter")) if "motion_adapter" in b.components else None)
    if req.temporal == "on" and source is None:
        raise BadParameter("temporal", "on", f"off or auto: bundle {b.name} has no motion module (motion_adapter/); "
                           "give a motion adapter (AnimateDiff weights) as motion")
    motion = None
    if source is not None and req.temporal != "off":
        from .adapter import load_motion_adapter

        motion = load_motion_adapter(source, models.unet)
    try:
        frames, meta = generate_video(models, req.prompt, frames=req.frames, mesh=mesh, motion=motion,
                                      negative=req.negative, resolution=req.resolution, steps=req.steps,
                                      guidance=req.guidance, seed=req.seed, scheduler=req.scheduler,
                                      beta_schedule=req.beta_schedule,
                                      elevation=req.elevation, window=req.window, control_scale=req.control_scale,
                                      conditioning=req.conditioning, strength=req.strength, relight=req.relight,
                                      anchored_noise=req.anchored_noise, sync=req.sync, sync_until=req.sync_until,
                                      fast=req.fast, on_step=on_step)
    finally:
        if motion is not None:
            motion.remove()  # the U-Net is shared with image jobs in the worker's cache
    if motion is not None:
        meta["motion"] = Path(source).name if req.motion else f"{b.name}/motion_adapter"
    meta["settings"] = {k: v for k, v in asdict(req).items() if k not in ("prompt", "negative", "mesh")}
    video, sidecar = write_video(frames, output, req.fps, meta)
    return {"files": [str(video)], "video": str(video), "sidecar": str(sidecar), "frames": len(frames),
            "fps": req.fps, "metadata": meta}


def video_job(params: dict[str, Any], output: Path, ctx: JobContext) -> dict[str, Any]:
    """``video`` and ``turntable`` jobs: ``params`` are ``VideoRequest`` fields (``mesh`` for a turntable)."""
    from ..core.device import out_of_memory_as_error, pick_device, pick_dtype

    req = VideoRequest.from_dict(params).validate()
    req = fill_steps(req, resolve(req.bundle))  # the step count the progress reports
    device = pick_device(req.device if req.device != "auto" else ctx.device)
    dtype = pick_dtype(device, req.dtype if req.dtype != "auto" else ctx.dtype)
    ctx.emit("progress", id=ctx.job_id, stage="loading", step=0, total=req.steps, image=0, images=1, preview=None)

    def get_models(bundle, need_controlnet: bool):
        with out_of_memory_as_error(f"loading bundle {bundle.name} on {device}"):
            models = ctx.cache.get(bundle, device, dtype, need_controlnet=need_controlnet)
        ctx.check_cancel()
        return models

    def on_step(info) -> None:
        ctx.check_cancel()
        ctx.emit("progress", id=ctx.job_id, stage="video", step=info.step, total=info.total, image=0, images=1,
                 frames=req.frames, preview=None)

    with out_of_memory_as_error(f"generating {req.frames} frames on {device}"):
        result = run_video(req, output, get_models, on_step)
    ctx.saved += [result["video"], result["sidecar"]]
    return result


def turntable_job(params: dict[str, Any], output: Path, ctx: JobContext) -> dict[str, Any]:
    if isinstance(params, dict) and not params.get("mesh"):
        raise BadParameter("mesh", params.get("mesh"), "a path to a .glb, .gltf, .obj or .ply file for a turntable")
    return video_job(params, output, ctx)
