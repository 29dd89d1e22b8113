"""The CLI's job commands (``image``, ``texture``, ``video``, ``turntable``, ``asset``, ``upscale``), their flags generated
from the request schema (``core/schema.py``).

Each schema field becomes a flag (``--control-scale`` for ``control_scale``; a field's ``Spec.flag`` renames
it), a required field a positional argument. Flags the user does not give stay out of the params, so the
schema's defaults apply. Values reach the schema as typed (a number that does not parse stays text), so a
bad value gets the same sentence here as from the worker and the add-on. Every command runs through the
same door and job runner as the worker (``sfumato/kinds.py``), with a progress bar, one model cache and
Ctrl-C to cancel after the current step.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .core import schema

OUTPUTS = {"image": "output .png (several images: NAME_s<seed>.png)",
           "texture": "output .glb (the texture .png and a .json beside it)",
           "video": ".mp4 (needs imageio-ffmpeg) or .gif", "turntable": ".mp4 (needs imageio-ffmpeg) or .gif",
           "asset": "output .glb (a preview .png and a .json beside it); a cancelled run resumes from "
                    "<output>.asset-state.safetensors",
           "upscale": "output .png (the input's provenance kept, with an upscale record added)"}
HELP = {"image": "generate images from a prompt", "texture": "texture a mesh from a prompt (GLB + PNG)",
        "video": "a looping video from a prompt", "turntable": "a looping turntable video of a mesh",
        "asset": "a 3-D asset from a prompt: SDS on a radiance field, then a GLB mesh",
        "upscale": "an image 2 or 4 times larger, given detail tile by tile by the bundle"}


class ProgressBar:
    """One status line on stderr: ``[#####.....] step 12/25 · image 1-4 of 8 · 3.1 s``."""

    def __init__(self, stream=None, width: int = 30):
        # sys.stderr looked up now, not at import: it may have been replaced since (tests, IDEs)
        self.stream, self.width, self.start = stream or sys.stderr, width, time.perf_counter()
        self.tty = self.stream.isatty()
        self.last = -1.0

    def __call__(self, event: str, **f: Any) -> None:
        if event != "progress":
            return
        if f.get("views", 1) > 1 or f.get("slot"):
            what = f"slot {f.get('view', 0) + 1}/{f['views']} {f['slot']}" if f.get("slot") else \
                f"view {f.get('view', 0) + 1}/{f['views']}"
            f["stage"], f["images"] = what, 1
        if f.get("tiles"):
            f["stage"], f["images"] = f"tile {f.get('tile', 0) + 1}/{f['tiles']}", 1
        if f.get("loss") is not None:
            f["stage"] = f"asset · loss {f['loss']:.2f}"
        total, step = max(1, f.get("total") or 1), f.get("step") or 0
        now = time.perf_counter()
        if not self.tty and step != total and now - self.last < 2.0:
            return  # in logs, one line every 2 s is enough
        self.last = now
        filled = int(self.width * step / total)
        bar = "#" * filled + "." * (self.width - filled)
        images = f.get("images", 1)
        where = f" · image {f.get('image', 0) + 1} of {images}" if images > 1 else ""
        text = f"{f.get('stage', '')}: [{bar}] step {step}/{total}{where} · {now - self.start:.1f} s"
        self.stream.write(("\r" + text) if self.tty else text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")


# ---- flags from the schema -------------------------------------------------------------------------
def _lenient(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """``convert``, or the text itself when it does not parse: the schema then names what is allowed."""
    def parse(text: str) -> Any:
        try:
            return convert(text)
        except ValueError:
            return text

    parse.__name__ = convert.__name__
    return parse


def _none_or(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda text: None if text.lower() == "none" else convert(text)


def add_request_flags(p: argparse.ArgumentParser, cls: type) -> list[str]:
    """A positional argument per required field (files first), a flag per other field; returns the names."""
    hints = schema.field_types(cls)
    fields = schema.fields(cls)
    for f in sorted((f for f in fields if schema.spec_of(f).required), key=lambda f: not schema.spec_of(f).path):
        p.add_argument(f.name, help=schema.spec_of(f).help)
    for f in fields:
        s = schema.spec_of(f)
        if s.required:
            continue
        base, optional = schema.unwrap(hints[f.name])
        flag = "--" + (s.flag or f.name.replace("_", "-"))
        text = f"{s.help}; {schema.describe(f, hints[f.name])} (default: {'none' if f.default is None else f.default})"
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": text.replace("%", "%%")}
        if base is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if typing.get_origin(base) is tuple and typing.get_args(base)[0] is str:
            kw["action"] = "append"  # --lora a --lora b:0.5
        elif typing.get_origin(base) is tuple:
            kw.update(nargs="+", type=_lenient(float))
        elif base in (int, float):
            kw["type"] = _lenient(base)
        if optional and "type" in kw:
            kw["type"] = _none_or(kw["type"])
        p.add_argument(flag, metavar=(s.flag or f.name).upper() if schema.choices(base) is None else
                       "{" + ",".join(schema.choices(base)) + "}", **kw)
    return [f.name for f in fields]


def add_job_commands(sub: Any) -> None:
    """``sfumato image|texture|video|turntable|asset``, one per schema kind."""
    for kind, cls in schema.KINDS.items():
        if kind in schema.TRAINING_KINDS:  # ``sfumato train style`` (cli.py) runs these
            continue
        p = sub.add_parser(kind, help=HELP[kind], description=(cls.__doc__ or "").strip())
        names = add_request_flags(p, cls)
        p.add_argument("-o", "--output", required=True, help=OUTPUTS[kind])
        p.add_argument("--overwrite", action="store_true", help="replace an output (and the files written beside "
                       "it) that already exists; without it an existing output is refused before the job runs")
        p.set_defaults(run=lambda args, kind=kind, names=names: run_job_command(kind, names, args))


# ---- running -----------------------------------------------------------------------------------------
@contextmanager
def interrupt_cancels(cancel: threading.Event) -> Iterator[None]:
    """The first Ctrl-C asks the job to stop after its current step (jobs that keep a state save it
    there); a second one interrupts at once."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if cancel.is_set():
            raise KeyboardInterrupt
        cancel.set()
        print("\nsfumato: stopping after this step (Ctrl-C again to quit at once)", file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_job_command(kind: str, names: list[str], args: argparse.Namespace) -> int:
    """Run one job command through the same door and runner as the worker; print what was made."""
    from .core.errors import Cancelled
    from .core.jobs import JobContext
    from .core.loading import ModelCache
    from .kinds import run_job

    params = {name: getattr(args, name) for name in names if hasattr(args, name)}
    bar = ProgressBar()

    def emit(event: str, **fields: Any) -> None:
        if event == "note":
            print(f"sfumato: {fields.get('message')}", file=sys.stderr, flush=True)
        elif event == "estimate":  # from a warm-up step, before the long work (core/estimate.py)
            print(f"sfumato: estimated {fields.get('text')}", file=sys.stderr, flush=True)
        bar(event, **fields)

    ctx = JobContext(job_id="cli", cache=ModelCache(), device=params.get("device", "auto"),
                     dtype=params.get("dtype", "auto"), cancel=threading.Event(), emit=emit,
                     preview_every=1 if kind == "asset" and params.get("preview_every", 1) else 0,
                     overwrite=args.overwrite)
    started = time.perf_counter()
    try:
        with interrupt_cancels(ctx.cancel):
            result = run_job(kind, params, Path(args.output).absolute(), ctx)
    except Cancelled:
        bar.done()
        resumable = kind == "asset" or (kind == "texture" and params.get("mode") == "sds")
        kept = f"kept what was finished: {', '.join(ctx.saved)}" if ctx.saved else "nothing was written"
        print("sfumato: cancelled; " + ("the state is saved beside the output: run the same command again to "
                                       "resume" if resumable else kept), file=sys.stderr)
        return 130
    bar.done()
    for w in result.get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    print(SUMMARIES[kind](result, time.perf_counter() - started))
    for f in result["files"] + [result[k] for k in ("sidecar",) if k in result]:
        print(f)
    return 0


def _image_summary(result: dict[str, Any], seconds: float) -> str:
    meta = result["metadata"][0]
    seeds = ", ".join(str(m["seed"]) for m in result["metadata"])
    return (f"{len(result['files'])} image(s) in {seconds:.1f} s · bundle {meta['bundle']} ({meta['bundle_hash']}) · "
            f"{meta['width']}x{meta['height']} · {meta['scheduler']} {meta['steps']} steps · guidance "
            f"{meta['guidance']} · seed {seeds} · {meta['device']} {meta['dtype']}")


def _texture_summary(result: dict[str, Any], seconds: float) -> str:
    meta = result["metadata"]
    detail = (f"{meta['views']} views ({meta['variant']}, {meta['conditioning']}) · texture {meta['texture_size']}px"
              if meta["mode"] == "projection" else _slots_detail(meta) if meta.get("slots") else
              f"tile {meta['resolution']}px = {meta['tile_size']} m"
              if meta["mode"] == "material" else f"{meta['iters']} SDS iterations · texture {meta['texture_size']}px")
    return (f"textured {meta['mesh']} in {seconds:.1f} s · {meta['mode']} · {detail} · bundle {meta['bundle']} · "
            f"seed {meta['seed']}")


def _slots_detail(meta: dict[str, Any]) -> str:
    sizes = ", ".join(f"{s['name'] or 'no material'} {s['tile_size']:g} m" for s in meta["slots"])
    return f"{len(meta['slots'])} slot{'s' if len(meta['slots']) > 1 else ''} of {meta['resolution']}px ({sizes})"


def _video_summary(result: dict[str, Any], seconds: float) -> str:
    meta = result["metadata"]
    return (f"{result['frames']} frames in {seconds:.1f} s · {meta['mode']} · temporal "
            f"{'on' if meta['temporal'] else 'off'} · seed {meta['seed']} · bundle {meta['bundle']}")


def _asset_summary(result: dict[str, Any], seconds: float) -> str:
    meta, m = result["metadata"], result["metrics"]
    return (f"asset in {seconds:.1f} s · {meta['iters']} SDS iterations at {meta['resolution']}px · loss "
            f"{m['loss_first']} -> {m['loss_last']} · {m['faces']} faces · bundle {meta['bundle']} · seed {meta['seed']}")


def _upscale_summary(result: dict[str, Any], seconds: float) -> str:
    up = result["metadata"]["upscale"][-1]
    return (f"upscaled {up['source']} {up['source_size'][0]}x{up['source_size'][1]} -> {up['width']}x{up['height']} "
            f"in {seconds:.1f} s · {up['first_pass']} + {up['tiles']} tiles of {up['tile']}px (overlap "
            f"{up['overlap']}) · strength {up['strength']} · {up['scheduler']} {up['steps']} steps · bundle "
            f"{up['bundle']} · seed {up['seed']}")


SUMMARIES = {"image": _image_summary, "texture": _texture_summary, "video": _video_summary,
             "turntable": _video_summary, "asset": _asset_summary, "upscale": _upscale_summary}
