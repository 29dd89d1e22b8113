"""Check weight files before anything loads them: format, truncation, hashes.

A safetensors file is ``u64 little-endian header length N`` + ``N bytes of JSON`` + the tensor data.
The JSON gives each tensor's dtype, shape and ``data_offsets`` into the data block, so a truncated
or garbled file can be recognised without reading the data, and a mis-shaped one before building a
model. Pickle formats (``.ckpt``, ``.bin``, ``.pt``, ``.pth``) are refused unless the caller opts in.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleCorrupt, PickleRefused

PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth", ".pkl")
_DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8,
}


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]


def is_pickle(path: Path) -> bool:
    return Path(path).suffix.lower() in PICKLE_SUFFIXES


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and sanity-check a safetensors header; raise ``BundleCorrupt`` naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise BundleCorrupt(path, "file is missing")
    size = path.stat().st_size
    if size < 8:
        raise BundleCorrupt(path, f"file is {size} bytes, too short to be safetensors (truncated?)")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(size - 8, 100_000_000):
            raise BundleCorrupt(path, f"header length {n} exceeds the file size {size}: not a safetensors "
                                "file, or truncated")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleCorrupt(path, f"header is not valid JSON ({exc}): corrupt file") from None
    if not isinstance(header, dict):
        raise BundleCorrupt(path, "header is not a JSON object: corrupt file")
    header.pop("__metadata__", None)
    tensors: dict[str, TensorInfo] = {}
    end = 0
    for name, entry in header.items():
        try:
            dtype, shape, (start, stop) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise BundleCorrupt(path, f"tensor {name!r} has a malformed header entry") from None
        count = 1
        for d in shape:
            count *= d
        if dtype in _DTYPE_BYTES and stop - start != count * _DTYPE_BYTES[dtype]:
            raise BundleCorrupt(path, f"tensor {name!r}: {stop - start} bytes for shape {list(shape)} "
                                f"of {dtype}: corrupt file")
        end = max(end, stop)
        tensors[name] = TensorInfo(dtype, shape)
    expected = 8 + n + end
    if size < expected:
        raise BundleCorrupt(path, f"truncated: {size} bytes on disk, the header needs {expected}",
                            hint="copy or download the file again")
    return tensors


def sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_state_dict(path: Path, *, allow_pickle: bool = False) -> dict:
    """Load a whole checkpoint file as a CPU state dict: safetensors, or an opted-in pickle."""
    import torch
    from safetensors.torch import load_file

    path = Path(path)
    if is_pickle(path):
        if not allow_pickle:
            raise PickleRefused(path)
        if not path.is_file():
            raise BundleCorrupt(path, "file is missing")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad or unsafe pickle
            raise explain_load_failure(path, exc, "torch.load(weights_only=True) failed") from None
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        return state
    if path.suffix.lower() != ".safetensors":
        raise BundleCorrupt(path, f"unknown weight format {path.suffix!r}; allowed: .safetensors "
                            "(or a pickle with --allow-pickle)")
    read_header(path)
    return load_file(str(path), device="cpu")


def explain_load_failure(path: Path, exc: BaseException, what: str) -> BundleCorrupt:
    """The error to raise for a weight file or folder a loader failed on. A pickle that torch's safe loader
    refused (it holds Python objects beyond tensors, which could run code) is said to be that, and that it was
    not run, instead of torch's own advice; anything else keeps the loader's first line."""
    text, chain, seen = str(exc), [], exc
    while seen is not None and len(chain) < 10:  # loaders wrap torch's error in their own
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(e, pickle.UnpicklingError) or "weights only load failed" in str(e).lower() for e in chain):
        return BundleCorrupt(path, "is not a plain weights file: it holds pickled Python objects besides tensors, "
                             "so the safe loader refused it and nothing in it was run",
                             hint="convert it to .safetensors with a tool you trust, or use another copy")
    first = text.strip().splitlines()[0][:300] if text.strip() else type(exc).__name__
    return BundleCorrupt(path, f"{what}: {first}")


def file_fingerprint(path: Path) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}"
