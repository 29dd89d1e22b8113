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

``auto`` and ``on`` turn it on for CUDA devices only; ``compile`` adds ``torch.compile`` of the U-Net
(minutes of compiling per new shape: for long batch runs); on the CPU there are no graphs (``benchmarks/speed.py``
measures what threads and memory format do there).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import torch

log = logging.getLogger("sfumato.fast")

FAST_MODES = ("auto", "on", "off", "compile")


def enabled(mode: str, device: torch.device) -> bool:
    if mode not in FAST_MODES:
        from .errors import BadParameter

        raise BadParameter("fast", mode, ", ".join(FAST_MODES))
    return mode != "off" and device.type == "cuda"


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
    if compile and not models.extras.get("fast_compiled"):
        models.unet.forward = torch.compile(models.unet.forward, dynamic=False)
        models.extras["fast_compiled"] = True
    if models.extras.get("fast_prepared"):
        return
    torch.backends.cudnn.benchmark = True
    for module in (models.unet, models.vae, models.controlnet):
        if module is not None:
            module.to(memory_format=torch.channels_last)
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
