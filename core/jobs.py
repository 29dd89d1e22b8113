"""The door every job enters by, and the image job.

A job kind is a request class of the schema (``core/schema.py``) and a runner
``run(job: Opened, output, ctx) -> result``. ``open_job`` is the door: it parses a job's params, has them
checked and completed once (``checks.py``: every field, the files it reads, the bundle's ``default_steps`` and a
random seed, what ties fields together) and picks the device. Runners trust the request they get. The kinds are
assembled above core and the heads (``sfumato/kinds.py``), so core imports no head.

A runner reads only its own inputs, reports progress through ``ctx.emit``, checks ``ctx.cancel`` between
denoising steps, and writes its outputs atomically.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import schema
from .checks import admit, raise_first
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
    saved: list[str] = field(default_factory=list)  # outputs already written (kept on cancel or error)
    overwrite: bool = True  # an existing output may be replaced (the CLI: only with --overwrite)
    inside: CancelInside | None = None  # set by ``load_models``: the cancel reaches inside the networks
    estimate: dict[str, Any] | None = None  # the ``estimate`` event ``load_models`` sent, if any

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled()

    def keep(self, *paths: Any) -> None:
        """Record finished outputs and say so at once (a ``saved`` event), so a client whose worker dies later
        in the job still knows which files are complete."""
        files = [str(p) for p in paths]
        self.saved += files
        self.emit("saved", id=self.job_id, files=files)


@dataclass
class Opened:
    """A job past the door: its checked, complete request, its bundle, and where it runs."""

    request: Any  # a schema request with steps (where it has them) and seed filled in
    bundle: Any  # bundle.Bundle
    device: Any  # torch.device
    dtype: Any  # torch.dtype


@dataclass(frozen=True)
class Kind:
    """A job kind: its schema request and its runner."""

    request: type
    run: Callable[[Opened, Path, JobContext], dict[str, Any]]


def open_job(cls: type, params: Any, ctx: JobContext) -> Opened:
    """The door: ``params`` (a JSON object) as a checked, complete ``cls`` request, with its bundle and device."""
    from .device import pick_device, pick_dtype

    req, found = schema.parse(cls, params)
    raise_first(found)
    req, bundle = admit(req)
    device = pick_device(req.device if req.device != "auto" else ctx.device)
    return Opened(req, bundle, device, pick_dtype(device, req.dtype if req.dtype != "auto" else ctx.dtype))


def run(kinds: Mapping[str, Kind], kind: str, params: Any, output: Path, ctx: JobContext) -> dict[str, Any]:
    """Run one job of ``kind`` through the door; its writes never clobber (``provenance.guarded_writes``)."""
    from .provenance import WriteGuard, guarded_writes

    if not isinstance(kind, str) or kind not in kinds:
        raise BadParameter("kind", kind, ", ".join(kinds))
    job = open_job(kinds[kind].request, params, ctx)
    guard = WriteGuard(inputs=job_inputs(job.request), overwrite=ctx.overwrite,
                       note=lambda text: ctx.emit("note", id=ctx.job_id, message=text))
    try:
        with guarded_writes(guard):
            return kinds[kind].run(job, Path(output), ctx)
    finally:
        if ctx.inside is not None:
            ctx.inside.watch(None)  # the cached models outlive the job: its cancel no longer reaches them


def job_inputs(req: Any) -> tuple[str, ...]:
    """The real paths of the files a checked request reads (its path fields, and a motion adapter)."""
    names = [f.name for f in schema.fields(type(req)) if schema.spec_of(f).path] + ["motion"]
    return tuple(os.path.realpath(v) for v in (getattr(req, n, None) for n in names) if isinstance(v, str))


# files a head writes beside its output, by the output's suffix (``threed`` and ``video`` name them so)
COMPANIONS: dict[str, Callable[[Path], list[Path]]] = {
    ".glb": lambda out: [out.with_suffix(".png"), out.with_suffix(".json")],
    ".mp4": lambda out: [out.with_name(out.name + ".json")],
    ".gif": lambda out: [out.with_name(out.name + ".json")],
}


def check_writable(output: Path, suffixes: tuple[str, ...] = (".png",)) -> Path:
    """Fail before any work when the outputs cannot or must not be written (the field is ``output``): a wrong
    suffix, a folder, one of the job's inputs, a read-only file, or (without overwrite, the CLI's default) a file
    that exists, the output's companions included. A missing folder is created, and said."""
    from .provenance import check_target, current_guard, make_folder, remove_stale_parts

    output = Path(output)
    if len(str(output)) > 4096 or "\0" in str(output) or any(len(_bytes(p)) > NAME_MAX for p in output.parent.parts):
        raise BadParameter("output", str(output), f"a path of at most 4096 characters, each folder name at most "
                           f"{NAME_MAX} bytes, without NUL")
    if output.suffix.lower() not in suffixes:
        raise BadParameter("output", str(output), f"a path ending in {' or '.join(suffixes)}")
    targets = [output, *COMPANIONS.get(output.suffix.lower(), lambda _: [])(output)]
    longest = NAME_MAX - 24  # room for the temporary name written first (``.NAME.<pid>.part.EXT``)
    for target in targets:
        if len(_bytes(target.name)) > longest:
            raise BadParameter("output", str(output), f"a file name of at most {longest} bytes, with what is "
                               f"written beside it ({target.name[:40]}... is {len(_bytes(target.name))})")
    if output.is_dir():
        raise BadParameter("output", str(output), f"a {'/'.join(suffixes)} file path, not a folder")
    for target in targets:
        check_target(target)
        remove_stale_parts(target)  # a crashed run's half-written files
        if not current_guard().overwrite and target.exists():
            raise BadParameter("output", str(output), f"a path where nothing exists yet: {target} is there "
                               "(pass --overwrite to replace it)")
    try:
        make_folder(output.parent)
        probe = output.parent / f".sfumato-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise BadParameter("output", str(output), f"a path in a writable folder ({exc.strerror})") from None
    return output


NAME_MAX = 255  # bytes in one file or folder name on the usual file systems (ext4, APFS, NTFS in UTF-16 units)


def _bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def load_models(job: Opened, ctx: JobContext, *, need_controlnet: bool, controls: tuple[str, ...] = ()) -> Any:
    """The job's models from the worker's cache (out of memory said clearly), then a cancel check. Before them,
    the job's memory is estimated and a job that cannot fit is refused; after them, a warm-up step times it and
    the ``estimate`` event says how long it should take (``estimate.py``)."""
    from . import estimate
    from .device import out_of_memory_as_error

    work = estimate.workload(job.request, job.bundle)
    if work is not None:
        mem = estimate.check_memory(job, work, loaded=ctx.cache.loaded == job.bundle.name,
                                    note=lambda text: ctx.emit("note", id=ctx.job_id, message=text))
    with out_of_memory_as_error(f"loading bundle {job.bundle.name} on {job.device}"):
        models = ctx.cache.get(job.bundle, job.device, job.dtype, need_controlnet=need_controlnet,
                               controls=controls)
    ctx.inside = models.extras.setdefault("cancel_inside", CancelInside())
    ctx.inside.watch(ctx.cancel, models.unet, models.vae, models.controlnet, *models.controlnets.values())
    ctx.check_cancel()
    if work is not None:
        def said(**fields: Any) -> None:
            ctx.estimate = fields
            ctx.emit("estimate", id=ctx.job_id, **fields)

        estimate.announce(job, models, work, mem, said)
    return models


class CancelInside:
    """A cancel that lands inside one long network call, not only between steps: a forward pre-hook on every
    layer (every module without children) of a job's networks raises ``Cancelled`` once the watched event is
    set, so a VAE decode of a large latent or a U-Net step at 4096² stops at the next layer. The hooks only read
    an event, so results are unchanged; they are put on once per loaded network and follow the current job."""

    def __init__(self) -> None:
        import torch

        self.event: threading.Event | None = None
        self.hooked: set[int] = set()  # ids of the networks that carry the hooks
        self.compiling = torch.compiler.is_compiling  # True while torch.compile traces (fast="compile")

    def watch(self, event: threading.Event | None, *networks: Any) -> None:
        self.event = event
        for net in networks:
            if net is None or id(net) in self.hooked:
                continue
            self.hooked.add(id(net))
            for layer in net.modules():
                if next(layer.children(), None) is None:
                    layer.register_forward_pre_hook(self._check)

    def _check(self, layer: Any, args: Any) -> None:
        if self.compiling():  # torch.compile traces through hooks: keep the event out of its graph
            return
        if self.event is not None and self.event.is_set():
            raise Cancelled()


def image_job(job: Opened, output: Path, ctx: JobContext) -> dict[str, Any]:
    """Generate ``job.request`` (an ``ImageRequest``) into ``output``; each batch is saved as it finishes."""
    from .image import check_image_file, condition_notes, generate_safely, native_size, output_paths
    from .latents import preview
    from .provenance import atomic_write, save_png

    req = job.request
    paths = output_paths(output, list(range(req.seed, req.seed + req.n)))
    for path in paths:
        check_writable(path)
    for name in ("init_image", "depth_image"):  # from their headers, before any model loads
        if getattr(req, name):
            check_image_file(name, getattr(req, name))
    uses = schema.control_uses(req)
    for use in uses:
        if use.kind != "depth" or not req.depth_image:
            check_image_file("controls", use.image)
    ctx.emit("progress", id=ctx.job_id, stage="loading", step=0, total=req.steps, image=0, images=req.n,
             preview=None)
    models = load_models(job, ctx, need_controlnet=False, controls=tuple(u.kind for u in uses))
    notes = condition_notes(req, req.width or native_size(models), req.height or native_size(models))
    metadata: list[dict[str, Any]] = []

    def on_step(info) -> None:
        ctx.check_cancel()
        path = None
        if ctx.preview_dir is not None and ctx.preview_every and \
                (info.step % ctx.preview_every == 0 or info.step == info.total):
            target = ctx.preview_dir / f"step_{len(metadata):04d}_{info.step:04d}.png"
            path = str(atomic_write(target, lambda tmp: preview(models, info.latents).save(tmp, format="PNG")))
        ctx.emit("progress", id=ctx.job_id, stage="denoising", step=info.step, total=info.total,
                 image=len(metadata), images=req.n, preview=path)

    def on_images(batch) -> None:
        for g in batch:
            ctx.keep(save_png(g.image, paths[g.seed - req.seed], g.metadata))
            metadata.append(g.metadata)

    graphs = models.extras.get("graphs")
    seen = len(graphs.events) if graphs is not None else 0
    generate_safely(req, models, on_step=on_step, on_images=on_images)
    result: dict[str, Any] = {"files": list(ctx.saved), "metadata": metadata}
    if notes:
        result["warnings"] = notes
    graphs = models.extras.get("graphs")
    if graphs is not None and len(graphs.events) > seen:  # the fast path recorded new shapes in this job
        result["fast_path"] = graphs.events[seen:]
    return result
