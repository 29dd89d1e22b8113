"""What a job will take, said before its long work starts: peak memory from its sizes and the bundle's configs,
time from a short measured warm-up.

1. **Workload** (``workload``): what the job runs, counted in network calls. A request becomes the latent size
   (h, w) = (H/f, W/f), the latents per U-Net call B (images of a batch, frames of a window, views at once), the
   number of calls, the images decoded, and the VAE encodes that keep gradients (SDS through RGB renders).
2. **Memory** (``memory``), before any model loads, in bytes of the run's dtype (s = 4 for fp32, 2 for fp16)::

       weights  = Σ parameters in the components' safetensors headers · s     (0 when the models are loaded)
       U-Net    = B·g · s · [Σ_l (L+1)·c_l·h_l·w_l  +  k_l·c_l·h_l·w_l]          g = 2 with guidance, else 1
       VAE      = B_dec · s · (2·c_1 + 4·c_0) · H·W                               (the decoder at full size)
       peak     = the process now (resident) + weights + max(U-Net, VAE)

   The U-Net term is the skip connections its down path keeps (L+1 per level l of c_l channels) plus the widest
   working set at one level: k_l = 12 where the level has attention (q, k, v, out and a 4c GEGLU), 4 where it
   has only ResNets. Attention itself is linear in tokens (PyTorch's fused kernels, CPU and CUDA). The VAE term is
   the decoder's last up block, where the largest maps live. SDS adds the encoder's activations kept for its
   backward pass (``ENCODE_GRAD``·c_0·H·W), and an asset its render's sample points (``RENDER_BYTES`` each).
3. **Refusal** (``check_memory``): the job's own share (weights not yet loaded + the larger working set) against
   what the device has free (CUDA: ``torch.cuda.mem_get_info``; CPU: ``MemAvailable`` of /proc/meminfo, or
   psutil): above ``REFUSE`` of it the job is refused as ``out_of_memory`` with the numbers and the fields to lower,
   before anything big is allocated; above ``WARN`` a note says it is close.
4. **Time** (``measure``), once the models are loaded: one denoiser call at the job's latent size and batch (with
   guidance, as the job runs it) and one VAE decode and PNG write of a latent of half that side (scaled by area),
   timed, cached per network, size and batch; then ``calls`` · t_call + images · t_image (+ 3 · t_image per SDS
   iteration for the encode's backward pass). On a GPU the second of two calls is timed (the first builds kernels),
   and the peak memory both allocate is measured too: there the estimate's peak is the larger of the model above
   and what the warm-up took (cuDNN picks workspaces the model cannot see). An asset's warm-up has no radiance
   field to render yet (core knows no head), so its first estimate runs short (10 s said for 58 s taken on a CPU:
   64², 48 samples, 30 iterations); its first iterations say the time again (``Pace``: 40 s said for 51 s).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any

from . import schema
from .errors import OutOfMemory

REFUSE = 0.95  # refuse a job whose own share is above this part of the free memory
WARN = 0.7  # say it is close above this part
ENCODE_GRAD = 12  # activations per c_0·H·W an encode keeps for its backward pass (SDS through RGB renders)
RENDER_BYTES = 4096  # per sample point of an asset's render, kept for the backward pass (features, MLP, normals'
# double backward): about 3.5 KiB measured on a CPU at 64², 48 samples per ray
GiB = 1 << 30


@dataclass(frozen=True)
class Workload:
    """A job in the units the estimate counts."""

    size: tuple[int, int]  # (H, W) pixels of one image, frame, view or render
    batch: int  # latents per U-Net call, before guidance doubles them
    calls: int  # U-Net calls in the whole job
    decodes: int  # images decoded
    decode_batch: int  # images per VAE decode call
    encodes_with_grad: int = 0  # SDS iterations that encode a render through the VAE with gradients
    render_points: int = 0  # sample points of one radiance-field render kept for its backward pass (asset)
    guidance: bool = True  # classifier-free guidance doubles each call's batch
    components: tuple[str, ...] = ("unet", "vae", "text_encoder", "text_encoder_2")
    lower: str = "the size"  # what to lower, by field names
    eager: bool = False  # the head runs its calls eagerly on a GPU whatever ``fast`` says (video), so does the warm-up


@dataclass(frozen=True)
class Memory:
    peak: int  # bytes the job's process (CPU) or device (CUDA) is expected to reach
    share: int  # of which the job adds: weights not yet loaded and the working set
    free: int  # bytes free on the device now
    weights: int
    working: int


def _native(bundle: Any) -> int:
    from .capabilities import native_size

    return native_size(bundle)


def _image(req: schema.ImageRequest, bundle: Any) -> Workload:
    side = _native(bundle)
    b = min(req.n, req.batch_size)
    steps = max(1, int(req.steps * req.strength)) if req.init_image else req.steps
    return Workload((req.height or side, req.width or side), b, math.ceil(req.n / b) * steps, req.n, b,
                    guidance=req.guidance > 1, lower="batch_size (n adds time, not memory), or width and height",
                    components=("unet", "vae", "text_encoder", "text_encoder_2")
                    + tuple(f"controlnet_{u.kind}" for u in schema.control_uses(req)))


def _video(req: schema.VideoRequest, bundle: Any) -> Workload:
    side = req.resolution or _native(bundle)
    temporal = req.temporal != "off" and req.motion is None and "motion_adapter" in bundle.components
    window = _config(bundle, "motion_adapter").get("motion_max_seq_length") if temporal else None
    length = min(req.window or int(window or 16), req.frames)  # as the head picks it (video/generate.py)
    windows = 1 if req.frames <= length else math.ceil(req.frames / max(1, length // 2))
    return Workload((side, side), length, req.steps * windows, req.frames, min(8, req.frames),
                    guidance=req.guidance > 1, lower="resolution, frames or window", eager=True,
                    components=("unet", "vae", "text_encoder", "text_encoder_2", "motion_adapter"))


def _texture(req: schema.TextureRequest, bundle: Any) -> Workload:
    side = req.resolution or _native(bundle)
    if req.mode == "sds":
        return Workload((side, side), 1, req.iters, 0, 1, encodes_with_grad=req.iters, guidance=req.guidance > 1,
                        lower="resolution")
    if req.mode == "material":
        return Workload((side, side), 1, req.steps, 1, 1, guidance=req.guidance > 1, lower="resolution")
    views = req.views + int(req.top) + req.fill_views
    at_once = views if req.variant == "sync" else 1
    return Workload((side, side), at_once, req.steps * views // at_once, views, 1, guidance=req.guidance > 1,
                    lower="resolution, views or fill_views" + (" (or the sequential variant)" if at_once > 1 else ""),
                    components=("unet", "vae", "text_encoder", "text_encoder_2", "controlnet_depth"))


def _asset(req: schema.AssetRequest, bundle: Any) -> Workload:
    side = req.resolution // 2 ** (len(_config(bundle, "vae").get("block_out_channels") or [0]) - 1) \
        if req.render == "latent" else req.resolution
    return Workload((req.resolution, req.resolution), 1, req.iters, 0, 1,
                    encodes_with_grad=req.iters if req.render == "rgb" else 0, guidance=req.guidance > 1,
                    render_points=side * side * req.samples, lower="resolution or samples (or render latent)")


WORKLOADS = {schema.ImageRequest: _image, schema.VideoRequest: _video, schema.TurntableRequest: _video,
             schema.TextureRequest: _texture, schema.AssetRequest: _asset}


def workload(req: Any, bundle: Any) -> Workload | None:
    """The job's workload, or None for a kind the estimate does not know (it then says nothing)."""
    make = WORKLOADS.get(type(req))
    return make(req, bundle) if make is not None else None


# ---- memory ---------------------------------------------------------------------------------------------
def _config(bundle: Any, component: str) -> dict[str, Any]:
    path = bundle.path / bundle.components[component] / "config.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def parameters(bundle: Any, component: str) -> int:
    """Parameters of one component, counted from its safetensors headers (nothing loaded)."""
    from .bundle import component_weights
    from .safetensors_check import read_header

    if component not in bundle.components:
        return 0
    total = 0
    for path in component_weights(bundle.path / bundle.components[component], allow_pickle=True):
        if path.suffix == ".safetensors":
            total += sum(math.prod(t.shape) for t in read_header(path).values())
        else:  # a pickle (refused later unless allowed): its size is about its parameters in fp32
            total += path.stat().st_size // 4
    return total


def working_set(bundle: Any, work: Workload, itemsize: int) -> int:
    """Bytes of activations at the job's peak: the larger of a U-Net call and a VAE decode (module doc, 2.)."""
    unet, vae = _config(bundle, "unet"), _config(bundle, "vae")
    H, W = work.size
    channels = [int(c) for c in vae.get("block_out_channels") or [128, 256, 512, 512]]
    f = 2 ** (len(channels) - 1)
    h, w = max(1, H // f), max(1, W // f)
    levels = [int(c) for c in unet.get("block_out_channels") or [320, 640, 1280, 1280]]
    per_block = unet.get("layers_per_block", 2)
    per_block = max(per_block) if isinstance(per_block, list) else int(per_block)
    kinds = unet.get("down_block_types") or ["CrossAttnDownBlock2D"] * len(levels)
    skips = widest = 0
    for level, c in enumerate(levels):
        hw = max(1, h >> level) * max(1, w >> level)
        skips += (per_block + 1) * c * hw
        widest = max(widest, (12 if "Attn" in str(kinds[min(level, len(kinds) - 1)]) else 4) * c * hw)
    batch = work.batch * (2 if work.guidance else 1)
    u_net = batch * itemsize * (skips + widest)
    c0, c1 = channels[0], channels[1] if len(channels) > 1 else channels[0]
    decode = work.decode_batch * itemsize * (2 * c1 + 4 * c0) * H * W if work.decodes else 0
    encode = ENCODE_GRAD * c0 * H * W * 4 if work.encodes_with_grad else 0  # kept in fp32 for the backward pass
    return max(u_net + encode + work.render_points * RENDER_BYTES, decode)


def free_bytes(device: Any) -> int:
    """Memory free for a job now: CUDA's free device memory, or the computer's available memory."""
    if getattr(device, "type", str(device)) == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 62  # unknown (no psutil, no /proc): never refuse on a guess


def resident_bytes() -> int:
    """This process's resident memory now (what Python, torch and anything loaded already take)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory(job: Any, work: Workload, loaded: bool) -> Memory:
    """The job's expected peak and its own share, before anything of it is allocated."""
    import torch

    itemsize = torch.empty((), dtype=job.dtype).element_size()
    weights = 0 if loaded else sum(parameters(job.bundle, c) for c in work.components) * itemsize
    working = working_set(job.bundle, work, itemsize)
    on_cuda = job.device.type == "cuda"
    base = int(torch.cuda.memory_allocated(job.device)) if on_cuda else resident_bytes()
    return Memory(base + weights + working, weights + working, free_bytes(job.device), weights, working)


def gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / (1 << 20):.0f} MiB"


def check_memory(job: Any, work: Workload, loaded: bool, note: Any) -> Memory:
    """Refuse a job whose share of memory exceeds what is free (``OutOfMemory``, with the numbers and what to
    lower), or ``note`` that it is close; returns the estimate."""
    mem = memory(job, work, loaded)
    where = "the GPU" if job.device.type == "cuda" else "this computer"
    H, W = work.size
    what = f"{work.batch} x {W}x{H}" if work.batch > 1 else f"{W}x{H}"
    said = f"this job ({what}) needs about {gib(mem.share)} more ({gib(mem.weights)} of weights, " \
           f"{gib(mem.working)} working), {where} has {gib(mem.free)} free"
    if mem.share > REFUSE * mem.free:
        raise OutOfMemory(f"not started: {said}", hint=f"lower {work.lower}, use dtype fp16 on a GPU, or free "
                          "memory (close other programs, release other models)")
    if mem.share > WARN * mem.free:
        note(f"memory is close: {said}; it may run out (lower {work.lower} if it does)")
    return mem


# ---- time -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measured:
    """One warm-up, kept per network, size and batch."""

    call: float  # seconds of one U-Net call at the job's size and batch
    image: float  # seconds to decode one image and write it as PNG (from a quarter of its area, scaled)
    call_peak: int = 0  # CUDA: bytes the call allocated above what was there before it (cuDNN's workspace too)
    image_peak: int = 0  # CUDA: bytes one image's decode allocated (scaled); the CPU measures no peak


def _timed(fn: Any, device: Any) -> tuple[float, int]:
    """(seconds, bytes allocated at the peak above the start: CUDA only) of ``fn()``; on a GPU the second of two
    calls (the first builds kernels, and a graph on the fast path)."""
    import torch

    if device.type != "cuda":
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started, 0
    fn()
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    started = time.perf_counter()
    fn()
    torch.cuda.synchronize(device)
    return time.perf_counter() - started, int(torch.cuda.max_memory_allocated(device) - before)


def measure(models: Any, req: Any, work: Workload) -> tuple[Measured, float]:
    """(the warm-up's measurements, seconds it took now: 0 when cached): one denoiser call at the job's size and
    batch, and one decode and PNG write at half the side, timed."""
    import io

    import torch

    from . import latents, text
    from .denoiser import Denoiser, make_conditioning

    H, W = work.size
    f = models.vae_scale_factor
    cache = models.extras.setdefault("warm_up", {})
    fast = "off" if work.eager else getattr(req, "fast", "off")
    key = (id(models.unet), id(models.vae), str(models.device), str(models.dtype), work.size, work.batch,
           work.guidance, fast)
    started = time.perf_counter()
    if key not in cache:
        with torch.no_grad():
            positive, negative = text.encode_pair(models, "", "")
            cond = make_conditioning(models, positive, negative, work.batch, 2.0 if work.guidance else 1.0,
                                     width=W, height=H)
            denoiser = Denoiser(models, fast=fast)
            g = torch.Generator().manual_seed(0)
            x = torch.randn((work.batch, int(models.vae.config.latent_channels), H // f, W // f), generator=g)
            x = x.to(models.device, models.dtype)
            t = torch.tensor(500, device=models.device)
            call, call_peak = _timed(lambda: denoiser(x, t, cond), models.device)
            z = x[:1, :, : max(1, H // f // 2), : max(1, W // f // 2)]  # a quarter of the area, scaled back up
            scale = x[0, 0].numel() / z[0, 0].numel()
            decoded: list[Any] = []
            decode, decode_peak = _timed(lambda: decoded.append(latents.decode(models, z)), models.device)
            started_png = time.perf_counter()
            latents.tensor_to_pil(decoded[-1])[0].save(io.BytesIO(), format="PNG")
            write = time.perf_counter() - started_png
        cache[key] = Measured(call, (decode + write) * scale, call_peak, int(decode_peak * scale))
    return cache[key], time.perf_counter() - started


def seconds(work: Workload, m: Measured) -> float:
    """The job's time from its warm-up: its U-Net calls, its images, and for SDS the encode's backward pass
    (about three decodes' worth per iteration)."""
    return work.calls * m.call + work.decodes * m.image + work.encodes_with_grad * 3 * m.image


class Pace:
    """The estimate again from a job's own first iterations, for a head whose warm-up cannot run a whole
    iteration (an asset's radiance field is built in the job): ``after`` iterations past the first one seen, the
    pace so far times the iterations left goes out as a second ``estimate`` event."""

    def __init__(self, total: int, emit: Any, peak: int | None, after: int = 3):
        self.total, self.emit, self.peak, self.after = total, emit, peak, after
        self.first: tuple[int, float] | None = None
        self.said = False

    def step(self, done: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = (done, now)
        elif not self.said and done - self.first[0] >= self.after:
            self.said = True
            left = (now - self.first[1]) / (done - self.first[0]) * (self.total - done)
            memory = f", {gib(self.peak)} of memory at peak" if self.peak else ""
            self.emit(seconds=round(left, 1), peak_bytes=self.peak, warm_up=0.0,
                      text=f"{say(left)} more{memory} (the pace of iterations {self.first[0] + 1}-{done})")


def say(seconds: float) -> str:
    """``about 40 s``, ``about 7 min``, ``about 2.5 h``."""
    if seconds < 90:
        return f"about {max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def announce(job: Any, models: Any, work: Workload, mem: Memory, emit: Any) -> None:
    """Measure the warm-up and send the ``estimate`` event; an estimate that cannot be made is logged and
    skipped (it must never fail a job), but a cancel or memory running out in the warm-up is the job's."""
    import logging

    from .device import is_out_of_memory
    from .errors import SfumatoError

    try:
        measured, warm = measure(models, job.request, work)
    except SfumatoError:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            raise OutOfMemory(f"out of memory in the warm-up step at {work.size[1]}x{work.size[0]}",
                              hint=f"lower {work.lower}") from None
        logging.getLogger("sfumato").warning("no time estimate: %s: %s", type(exc).__name__, exc)
        return
    peak = mem.peak
    if job.device.type == "cuda":  # measured, cuDNN's workspace and all: the model is only a floor there
        import torch

        taken = max(measured.call_peak, measured.image_peak * work.decode_batch)
        peak = max(peak, int(torch.cuda.memory_allocated(job.device)) + taken)
    total = seconds(work, measured)
    emit(seconds=round(total, 1), peak_bytes=peak, free_bytes=mem.free, warm_up=round(warm, 2),
         text=f"{say(total)}, {gib(peak)} of memory at peak")
