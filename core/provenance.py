"""Provenance: every output says how it was made, inside the file.

PNGs carry two text chunks: ``sfumato`` (JSON: prompt, negative, seed, bundle name and hash,
scheduler, steps, guidance, size, mode, sfumato version, ...) and ``parameters``, the line format
other Stable Diffusion tools read and write, so a seed reproduces across tools. Files are written
under a temporary name and renamed, so a killed process never leaves a half-written result.

Writes never clobber: while a job runs (``guarded_writes``, set by the job's door), no write may replace a
file the job reads (an ``-o`` equal to ``--init``) or a read-only file, and a folder that has to be created is
said (``WriteGuard.note``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import stat
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

import sfumato

from .errors import BadParameter


@dataclass(frozen=True)
class WriteGuard:
    """What the running job's writes must respect."""

    inputs: tuple[str, ...] = ()  # real paths of the files the job reads: never written over
    overwrite: bool = True  # whether an existing output may be replaced (the CLI asks for --overwrite)
    note: Callable[[str], None] | None = None  # told when a folder is created


_GUARD: ContextVar[WriteGuard] = ContextVar("sfumato_write_guard", default=WriteGuard())


@contextlib.contextmanager
def guarded_writes(guard: WriteGuard) -> Iterator[None]:
    """Every write in the block (this thread's) respects ``guard``."""
    token = _GUARD.set(guard)
    try:
        yield
    finally:
        _GUARD.reset(token)


def current_guard() -> WriteGuard:
    return _GUARD.get()


def check_target(path: Path, field: str = "output") -> None:
    """Refuse to write ``path`` over one of the running job's inputs or over a read-only file."""
    guard = _GUARD.get()
    if os.path.realpath(path) in guard.inputs:
        raise BadParameter(field, str(path), "a path that is not one of the job's own input files (writing there "
                           "would destroy the input)")
    try:
        st = os.stat(path)
    except OSError:
        return  # nothing there yet
    if not stat.S_ISREG(st.st_mode):
        raise BadParameter(field, str(path), "a file path (something other than a file is there)")
    if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(path, os.W_OK):
        raise BadParameter(field, str(path), "a path that is not a read-only file (make it writable, or choose "
                           "another name)")


def make_folder(folder: Path) -> None:
    """``folder`` and its parents, saying so through the guard's ``note`` when it did not exist."""
    folder = Path(folder)
    if folder.is_dir():
        return
    folder.mkdir(parents=True, exist_ok=True)
    note = _GUARD.get().note
    if note is not None:
        note(f"created folder {folder}")


def version() -> str:
    return sfumato.__version__


def parameters_line(meta: dict[str, Any]) -> str:
    lines = [meta.get("prompt", "")]
    if meta.get("negative"):
        lines.append(f"Negative prompt: {meta['negative']}")
    fields = [("Steps", meta.get("steps")), ("Sampler", meta.get("scheduler")), ("CFG scale", meta.get("guidance")),
              ("Seed", meta.get("seed")), ("Size", f"{meta['width']}x{meta['height']}" if meta.get("width") and meta.get("height") else None),
              ("Model hash", meta.get("bundle_hash")), ("Model", meta.get("bundle")),
              ("Denoising strength", meta.get("strength") if meta.get("mode") == "img2img" else None),
              ("Tiling", meta.get("seamless") if meta.get("seamless") not in (None, "none") else None),
              ("Version", f"sfumato {meta.get('sfumato_version')}")]
    lines.append(", ".join(f"{k}: {v}" for k, v in fields if v is not None))
    return "\n".join(lines)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (on Windows, where probing can end a process, every pid counts as alive)."""
    if os.name == "nt" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process
    return True


def remove_stale_parts(path: Path) -> list[Path]:
    """The temporary ``.NAME.<pid>.part`` files ``atomic_write`` left beside ``path`` when its process died
    mid-write, removed (those of a live process are kept)."""
    removed = []
    for part in Path(path).parent.glob(f".{glob.escape(Path(path).name)}.*.part*"):
        pid = part.name[len(Path(path).name) + 2:].split(".", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                part.unlink()
                removed.append(part)
    return removed


def atomic_write(path: Path, write, *, keep_suffix: bool = False) -> Path:
    """Call ``write(tmp_path)`` then rename onto ``path``; a crash leaves no partial ``path``, and ``path`` is
    never one of the running job's inputs or a read-only file (``check_target``).
    ``keep_suffix``: the temporary name ends in ``path``'s suffix too, for writers that choose their
    format by extension (ffmpeg)."""
    path = Path(path)
    check_target(path)
    make_folder(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part" + (path.suffix if keep_suffix else ""))
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def save_png(image: Image.Image, path: Path, meta: dict[str, Any]) -> Path:
    info = PngInfo()
    info.add_text("sfumato", json.dumps(meta, sort_keys=True))
    info.add_text("parameters", parameters_line(meta))
    return atomic_write(path, lambda tmp: image.save(tmp, format="PNG", pnginfo=info))


def read_png_metadata(path: Path) -> dict[str, Any]:
    with Image.open(path) as image:
        text = image.text.get("sfumato")  # type: ignore[attr-defined]
    return json.loads(text) if text else {}
