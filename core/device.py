"""Device and dtype choice: cuda (fp16, or bf16 on request) > mps > cpu (fp32)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch

from .errors import BadParameter, OutOfMemory

DeviceName = Literal["auto", "cuda", "mps", "cpu"]
DtypeName = Literal["auto", "fp16", "bf16", "fp32"]
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def pick_device(device: str = "auto") -> torch.device:
    if not isinstance(device, str):
        raise BadParameter("device", device, "auto, cuda, cuda:N, mps or cpu")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = device.split(":")[0]
    if kind not in ("cuda", "mps", "cpu"):
        raise BadParameter("device", device, "auto, cuda, cuda:N, mps or cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise BadParameter("device", device, "this machine has no CUDA device; use auto or cpu")
    if kind == "cuda" and ":" in device:
        index = device.split(":", 1)[1]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise BadParameter("device", device, f"cuda:0..cuda:{torch.cuda.device_count() - 1} on this machine")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise BadParameter("device", device, "this machine has no Apple MPS device; use auto or cpu")
    return torch.device(device)


def pick_dtype(device: torch.device, dtype: str = "auto") -> torch.dtype:
    if not isinstance(dtype, str):
        raise BadParameter("dtype", dtype, "auto, fp16, bf16 or fp32")
    if dtype == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if dtype not in DTYPES:
        raise BadParameter("dtype", dtype, "auto, fp16, bf16 or fp32")
    if device.type == "cpu" and dtype == "fp16":
        raise BadParameter("dtype", dtype, "fp32 or bf16 on the CPU (fp16 convolutions are not "
                           "supported there)")
    return DTYPES[dtype]


def is_out_of_memory(exc: BaseException) -> bool:
    """A device's allocation failure: CUDA's, MPS's, or the CPU's (``DefaultCPUAllocator: can't allocate
    memory``, or Python's ``MemoryError``)."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def empty_cache() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        torch.mps.empty_cache()


@contextlib.contextmanager
def out_of_memory_as_error(what: str) -> Iterator[None]:
    """Turn a device out-of-memory error inside the block into ``OutOfMemory`` with a hint, after
    leaving the ``except`` block (whose traceback pins the failed step's tensors) and freeing memory. A CPU
    allocation failure is reported the same way, with a hint for the computer's memory."""
    failed: bool | None = None  # None: no failure; else whether the CPU's memory ran out
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        failed = "can't allocate" in str(exc).lower() or isinstance(exc, MemoryError)
    if failed is not None:
        empty_cache()
        if failed:  # the CPU's memory
            raise OutOfMemory(f"out of memory {what} (the computer's memory)", hint="lower the size, n or "
                              "batch_size, or close other programs; the job asked for more than is free")
        raise OutOfMemory(f"out of memory {what}", hint="lower the size or batch_size, use dtype fp16/bf16, "
                          "release other GPU memory (Release GPU memory / the worker's release request)")
