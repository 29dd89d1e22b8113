"""The fast path (``fast="auto" | "on" | "off"``): network calls captured once per shape as CUDA graphs.

Where the time goes in an eager diffusers U-Net call on a big GPU is mostly Python and kernel
launches (hundreds of small kernels per call), not arithmetic. A CUDA graph records the launches of
one call once and replays them as a unit, so a step costs what the kernels cost.

A graph is tied to its input *shapes*, *memory addresses* and anything Python decided while it was
recorded (the ControlNet scale, seamless padding). So:

* every captured call copies its inputs into static buffers it owns, replays, and returns a *copy*
  of its static output (multistep schedulers keep earlier outputs, which the next replay would
  overwrite);
* graphs are keyed by every input's shape and dtype, the ControlNet scale and the seamless mode, and
  kept in ``models.extras`` so the worker reuses them across steps, jobs and seeds of the same shape
  (the first job of a shape pays the capture: a few eager warm-up calls and the recording);
* the first replay of a new graph is checked against an eager call on the same inputs; a graph that
  does not match (or fails to record) is dropped for that key with a log line, and the call runs
  eagerly: the fast path never changes what a job produces beyond fp16 rounding.

``auto`` and ``on`` turn it on for CUDA devices; ``compile`` adds ``torch.compile`` of the U-Net
(minutes of compiling per new shape: for long batch runs).

On the CPU there are no graphs. There the fast path runs the U-Net (and ControlNet) in bfloat16, where the CPU
does bfloat16 arithmetic natively (AMX or AVX512-BF16): channels-last weights, bfloat16 copies of them kept on
the module (``bf16_call``), under autocast. On this project's 2-core CI machine that made a 256² image of the
embedded bundle 2.0× faster (5.31 → 2.60 s), with a mean pixel difference of 0.9 of 255 and the same judged
material and colour accuracy (``benchmarks/speed.py --cpu-knobs``, ``benchmarks/bundle_quality.py``).
Whether it helps is measured, not guessed from a CPU name: ``cpu_bf16_helps`` times one convolution and one
matrix product both ways, once per process (about 0.2 s); without native support bfloat16 is slower and the
path stays off. U-Nets under ``MIN_BF16_PARAMS`` (test bundles) stay in float32: their calls are overhead, not
arithmetic. The latents, the scheduler and the VAE stay in the bundle's precision. ``torch.compile`` on top of
bfloat16 measured between 0.8× and 1.2× on the CPU for 81 s of compiling per image size, so ``compile`` means
the same as ``on`` there (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import logging
import time
import typing
import weakref
from collections.abc import Callable
from typing import Any

import torch

from .schema import Fast

log = logging.getLogger("sfumato.fast")

FAST_MODES = typing.get_args(Fast)  # the schema's choices


def enabled(mode: str, device: torch.device) -> bool:
    if mode not in FAST_MODES:
        from .errors import BadParameter

        raise BadParameter("fast", mode, ", ".join(FAST_MODES))
    if mode == "off":
        return False
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_bf16_helps()


_cpu_bf16: dict[str, Any] = {}


def cpu_bf16_helps(threshold: float = 1.25) -> bool:
    """Does this CPU run bfloat16 convolutions and matrix products at least ``threshold``× faster than
    float32? Timed once per process on one 3×3 convolution and one linear layer of U-Net-like sizes
    (best of 6 after a warm-up, each way). Natively it measures 3-5× here; emulated bfloat16 is slower
    than float32, so the threshold has room for a busy machine's noise."""
    if "helps" in _cpu_bf16:
        return _cpu_bf16["helps"]
    conv = torch.nn.Conv2d(128, 128, 3, padding=1).to(memory_format=torch.channels_last)
    linear = torch.nn.Linear(320, 1280)
    image = torch.randn(2, 128, 32, 32).contiguous(memory_format=torch.channels_last)
    tokens = torch.randn(2048, 320)

    seconds: dict[bool, list[float]] = {False: [], True: []}
    try:
        with torch.no_grad():
            for _ in range(7):  # interleaved, so a busy machine slows both alike; the first round warms up
                for bf16 in (False, True):
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        started = time.perf_counter()
                        conv(image)
                        linear(tokens)
                        seconds[bf16].append(time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001  no bfloat16 kernels at all: the plain path
        log.info("fast path (CPU): bfloat16 unavailable (%s: %s); running in float32", type(exc).__name__, exc)
        _cpu_bf16.update(helps=False, speedup=0.0)
        return False
    fp32, bf16 = min(seconds[False][1:]), min(seconds[True][1:])
    speedup = fp32 / max(bf16, 1e-9)
    helps = speedup >= threshold
    _cpu_bf16.update(helps=helps, speedup=speedup)
    log.info("fast path (CPU): bfloat16 is %.1f× float32 on this CPU; U-Net in %s", speedup,
             "bfloat16" if helps else "float32 (below %.1f×)" % threshold)
    return helps


MIN_BF16_PARAMS = 5_000_000  # smaller U-Nets are bound by per-call overhead on the CPU: bfloat16 measured slower


def cpu_bf16_for(models) -> bool:
    """The CPU's fast path for these models: float32 models on a CPU with fast bfloat16, and a U-Net big
    enough for arithmetic to be the cost (the tiny test bundles' U-Net call went from 16 to 20 ms)."""
    return (models.device.type == "cpu" and models.dtype == torch.float32 and cpu_bf16_helps()
            and sum(p.numel() for p in models.unet.parameters()) >= MIN_BF16_PARAMS)


BF16_COPY_LIMIT = 2_000_000_000  # parameters; a bigger network (SDXL's U-Net) is cast per call instead


def bf16_call(module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    """``module(*args, **kwargs)`` with bfloat16 copies of its parameters (call it under bfloat16 autocast).

    Autocast alone casts every weight on every call: for SD1.5 at 256² on this CPU that cast cost as much as
    the bfloat16 arithmetic saved. The copies are kept on the module (about half its float32 size) and remade
    for any parameter that is new, replaced or changed in place, and the live module runs with them
    (``torch.func.functional_call``), so whatever is patched into it (seamless padding, inserted motion
    modules) applies as it is. Networks above ``BF16_COPY_LIMIT`` parameters keep no copy.

    A change written through ``param.data`` is invisible to the version counter: code that edits weights that
    way (merging a LoRA, say) must call ``forget_bf16(module)`` afterwards."""
    cache: dict[str, tuple] = module.__dict__.setdefault("_sfumato_bf16", {})
    named = list(module.named_parameters())
    if sum(p.numel() for _, p in named) > BF16_COPY_LIMIT:
        return module(*args, **kwargs)
    params = {}
    for name, p in named:
        try:
            state = (p._version, p.data_ptr())
        except RuntimeError:  # inference-mode tensors keep no version counter: cast per call instead
            return module(*args, **kwargs)
        hit = cache.get(name)
        if hit is None or hit[0]() is not p or hit[1] != state:
            hit = cache[name] = (weakref.ref(p), state, p.detach().to(torch.bfloat16))
        params[name] = hit[2]
    for name in cache.keys() - params.keys():
        del cache[name]
    return torch.func.functional_call(module, params, args, kwargs, strict=False)


def forget_bf16(module: torch.nn.Module) -> None:
    """Drop the bfloat16 copies ``bf16_call`` keeps on ``module`` (after editing weights through ``.data``)."""
    module.__dict__.pop("_sfumato_bf16", None)


class CapturedCall:
    """``fn(*tensors) -> tensor`` recorded as one CUDA graph for the shapes of ``example``."""

    def __init__(self, fn: Callable[..., torch.Tensor], example: list[torch.Tensor], pool: Any = None,
                 warmup: int = 2):
        self.static = [e.detach().clone() for e in example]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the default stream (cuDNN/cuBLAS pick algorithms here)
            for _ in range(warmup):
                fn(*self.static)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.out = fn(*self.static)

    def __call__(self, *args: torch.Tensor) -> torch.Tensor:
        for buffer, value in zip(self.static, args):
            buffer.copy_(value)
        self.graph.replay()
        return self.out.clone()


class GraphCache:
    """Captured calls by key, kept on a ``Models`` (``models.extras["graphs"]``) for the worker's life."""

    def __init__(self) -> None:
        self.calls: dict[tuple, CapturedCall | None] = {}  # None: capture failed or mismatched, run eagerly
        self.pool = None
        self.events: list[dict[str, Any]] = []  # what was captured, how long it took, how well it matched

    @staticmethod
    def of(models) -> "GraphCache":
        cache = models.extras.get("graphs")
        if cache is None:
            cache = models.extras["graphs"] = GraphCache()
        return cache

    def call(self, key: tuple, fn: Callable[..., torch.Tensor], args: list[torch.Tensor], *,
             tolerance: float) -> torch.Tensor:
        if key in self.calls:
            captured = self.calls[key]
            return captured(*args) if captured is not None else fn(*args)
        started = time.perf_counter()
        try:
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            captured = CapturedCall(fn, args, self.pool)
            out = captured(*args)
            reference = fn(*args)
            diff = float((out.float() - reference.float()).abs().max())
            scale = float(reference.float().abs().max()) or 1.0
        except Exception as exc:  # noqa: BLE001  any capture failure means: run this shape eagerly
            log.warning("fast path: could not capture %s (%s: %s); running it eagerly", key[0], type(exc).__name__, exc)
            self.calls[key] = None
            self.events.append({"what": key[0], "shape": str(key[1]), "captured": False, "error": str(exc)})
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            return fn(*args)
        seconds = time.perf_counter() - started
        ok = diff <= tolerance * max(scale, 1.0)
        self.events.append({"what": key[0], "shape": str(key[1]), "captured": ok, "seconds": round(seconds, 2),
                            "max_abs_diff": diff})
        if not ok:
            log.warning("fast path: captured %s differs from eager by %.3g; running it eagerly", key[0], diff)
            self.calls[key] = None
            return reference
        log.info("fast path: captured %s for %s in %.2f s (max diff to eager %.2g)", key[0], key[1], seconds, diff)
        self.calls[key] = captured
        return out


def prepare(models, compile: bool = False) -> None:
    """Once per loaded models: channels-last weights (fp16 convolutions run on tensor cores in NHWC
    without layout conversions) and cuDNN autotuning (shapes are static, so the tuned algorithm is
    what the graph records). ``compile`` (mode "compile"): the U-Net's forward also goes through
    ``torch.compile`` (fused normalisation and pointwise kernels; about a minute per new shape, paid
    during the graph's warm-up, so the recorded graph replays the compiled kernels)."""
    if models.device.type == "cpu":
        # bfloat16 autocast (``Denoiser.network``): channels-last U-Net and ControlNet weights measured
        # faster; the VAE stays as it is (channels-last made the float32 decode slower on the CPU)
        for module in (models.unet, *models.controlnets.values()):  # per module: ControlNets come later
            if module is not None and not module.__dict__.get("_sfumato_channels_last"):
                module.to(memory_format=torch.channels_last)
                module.__dict__["_sfumato_channels_last"] = True
        return
    if compile and not models.extras.get("fast_compiled"):
        models.unet.forward = torch.compile(models.unet.forward, dynamic=False)
        models.extras["fast_compiled"] = True
    if models.extras.get("fast_prepared"):
        return
    torch.backends.cudnn.benchmark = True
    for module in (models.unet, models.vae, *models.controlnets.values()):
        if module is not None and not module.__dict__.get("_sfumato_channels_last"):
            module.to(memory_format=torch.channels_last)
            module.__dict__["_sfumato_channels_last"] = True
    models.extras["fast_prepared"] = True


def signature(args: list[torch.Tensor]) -> tuple:
    return tuple((tuple(a.shape), str(a.dtype), str(a.device)) for a in args)


def seamless_mode(module: torch.nn.Module | None) -> str:
    """The seamless axes patched into ``module`` right now (see ``seamless.py``): part of a graph's key."""
    conv = getattr(module, "conv_in", None) if module is not None else None
    return getattr(conv, "_sfumato_axes", "none") if conv is not None else "none"


def tolerance(dtype: torch.dtype) -> float:
    """Allowed max |graph − eager| relative to the output's magnitude: replays run the same kernels, so
    anything beyond rounding means the graph recorded something it should not have."""
    return 1e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-4
