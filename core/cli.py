"""The ``sfumato`` command line: image generation, bundles, the worker.

    sfumato image "red brick wall" -o brick.png --seed 1 --n 4
    sfumato texture house.glb "weathered red brick" -o house_textured.glb [--mode material --tile-size 1]
    sfumato asset "a park bench" -o bench.glb [--iters 600 --resolution 64 --seed 1 --preview-every 50]
    sfumato bundle list | info NAME | verify NAME | import FILE --family sd15 | make-tiny
    sfumato worker            # JSON lines on stdin/stdout, for the Blender add-on and scripts
    sfumato info              # device, dtype and bundles

Bad input ends with one line on stderr naming the field, the value and what is allowed, and a
non-zero exit status (2 for bad input, 1 for other failures, 130 when interrupted).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def quiet_libraries() -> None:
    """Keep diffusers/transformers chatter (progress bars, advisories) out of our output."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


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


def _image(args: argparse.Namespace) -> int:
    from .jobs import JobContext, image_job
    from .loading import ModelCache

    params = {
        "prompt": args.prompt, "negative": args.negative, "bundle": args.bundle, "seed": args.seed,
        "steps": args.steps, "guidance": args.guidance, "width": args.width, "height": args.height,
        "scheduler": args.scheduler, "init_image": args.init, "strength": args.strength,
        "depth_image": args.depth, "control_scale": args.control_scale, "seamless": args.seamless, "n": args.n,
        "batch_size": args.batch_size, "device": args.device, "dtype": args.dtype, "fast": args.fast,
    }
    bar = ProgressBar()
    ctx = JobContext(job_id="cli", cache=ModelCache(), device=args.device, dtype=args.dtype,
                     cancel=threading.Event(), emit=bar, preview_every=0)
    started = time.perf_counter()
    result = image_job(params, Path(args.output).absolute(), ctx)
    bar.done()
    meta = result["metadata"][0]
    seeds = ", ".join(str(m["seed"]) for m in result["metadata"])
    print(f"{len(result['files'])} image(s) in {time.perf_counter() - started:.1f} s · bundle {meta['bundle']} "
          f"({meta['bundle_hash']}) · {meta['width']}x{meta['height']} · {meta['scheduler']} {meta['steps']} steps "
          f"· guidance {meta['guidance']} · seed {seeds} · {meta['device']} {meta['dtype']}")
    for f in result["files"]:
        print(f)
    return 0


@contextmanager
def _interrupt_cancels(cancel: threading.Event) -> Iterator[None]:
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


def _run_job(kind: str, params: dict[str, Any], output: Path, ctx: Any, resumable: bool) -> dict[str, Any] | None:
    """Run a head's job from the CLI; None when Ctrl-C cancelled it (after saying what was kept)."""
    from .errors import Cancelled
    from .jobs import JOB_KINDS

    try:
        with _interrupt_cancels(ctx.cancel):
            return JOB_KINDS[kind](params, output, ctx)
    except Cancelled:
        print("sfumato: cancelled; " + ("the state is saved beside the output: run the same command again to "
                                       "resume" if resumable else "nothing was written"), file=sys.stderr)
        return None


def _texture(args: argparse.Namespace) -> int:
    from .jobs import JobContext
    from .loading import ModelCache

    params = {
        "mesh": args.mesh, "prompt": args.prompt, "negative": args.negative, "mode": args.mode,
        "variant": args.variant, "views": args.views, "fill_views": args.fill_views, "iters": args.iters,
        "lr": args.lr, "resolution": args.resolution,
        "texture_size": args.texture_size, "tile_size": args.tile_size, "seed": args.seed, "steps": args.steps,
        "guidance": args.guidance, "scheduler": args.scheduler, "bundle": args.bundle,
        "conditioning": args.conditioning, "max_faces": args.max_faces, "device": args.device, "dtype": args.dtype,
        "fast": args.fast,
    }
    bar = ProgressBar()

    def emit(event: str, **f: Any) -> None:
        if event == "progress" and f.get("views", 1) > 1:
            f["stage"] = f"view {f.get('view', 0) + 1}/{f['views']}"
            f["images"] = 1
        bar(event, **f)

    ctx = JobContext(job_id="cli", cache=ModelCache(), device=args.device, dtype=args.dtype,
                     cancel=threading.Event(), emit=emit, preview_every=0)
    started = time.perf_counter()
    result = _run_job("texture", params, Path(args.output).absolute(), ctx, resumable=args.mode == "sds")
    bar.done()
    if result is None:
        return 130
    meta = result["metadata"]
    for w in result["warnings"]:
        print(f"warning: {w}", file=sys.stderr)
    detail = (f"{meta['views']} views ({meta['variant']}, {meta['conditioning']}) · texture {meta['texture_size']}px"
              if meta["mode"] == "projection" else f"tile {meta['resolution']}px = {meta['tile_size']} m"
              if meta["mode"] == "material" else f"{meta['iters']} SDS iterations · texture {meta['texture_size']}px")
    print(f"textured {meta['mesh']} in {time.perf_counter() - started:.1f} s · {meta['mode']} · {detail} · bundle "
          f"{meta['bundle']} · seed {meta['seed']}")
    for f in (result["glb"], result["texture"], result["sidecar"]):
        print(f)
    return 0


def _asset(args: argparse.Namespace) -> int:
    from .jobs import JobContext
    from .loading import ModelCache

    params = {
        "prompt": args.prompt, "negative": args.negative, "iters": args.iters, "resolution": args.resolution,
        "seed": args.seed, "guidance": args.guidance, "lr": args.lr, "preview_every": args.preview_every,
        "bundle": args.bundle, "render": args.render, "samples": args.samples, "mesh_resolution": args.mesh_resolution,
        "colours": args.colours, "size": args.size, "device": args.device, "dtype": args.dtype,
        "negative_weight": args.negative_weight, "background": args.background,
    }
    bar = ProgressBar()

    def emit(event: str, **f: Any) -> None:
        if event == "progress" and f.get("loss") is not None:
            f["stage"] = f"asset · loss {f['loss']:.2f}"
        bar(event, **f)

    ctx = JobContext(job_id="cli", cache=ModelCache(), device=args.device, dtype=args.dtype,
                     cancel=threading.Event(), emit=emit, preview_every=1 if args.preview_every else 0)
    started = time.perf_counter()
    result = _run_job("asset", params, Path(args.output).absolute(), ctx, resumable=True)
    bar.done()
    if result is None:
        return 130
    meta, m = result["metadata"], result["metrics"]
    print(f"asset in {time.perf_counter() - started:.1f} s · {meta['iters']} SDS iterations at {meta['resolution']}px "
          f"· loss {m['loss_first']} -> {m['loss_last']} · {m['faces']} faces · bundle {meta['bundle']} · "
          f"seed {meta['seed']}")
    for f in (result["glb"], result["preview"], result["sidecar"]):
        print(f)
    return 0


def _video(args: argparse.Namespace) -> int:
    from .device import pick_device, pick_dtype
    from .loading import load_models
    from ..video.jobs import VideoRequest, run_video

    fields = ("prompt", "negative", "frames", "fps", "resolution", "steps", "guidance", "seed", "scheduler",
              "elevation", "temporal", "motion", "window", "conditioning", "strength", "sync", "bundle", "device",
              "dtype", "beta_schedule", "fast")
    req = VideoRequest.from_dict({**{k: getattr(args, k) for k in fields},
                                  "mesh": getattr(args, "mesh", None)}).validate()
    device = pick_device(req.device)
    dtype = pick_dtype(device, req.dtype)
    bar = ProgressBar()
    started = time.perf_counter()
    result = run_video(req, Path(args.output), lambda b, control: load_models(b, device, dtype, need_controlnet=control),
                       on_step=lambda i: bar("progress", stage="video", step=i.step, total=i.total))
    bar.done()
    meta = result["metadata"]
    print(f"{result['frames']} frames in {time.perf_counter() - started:.1f} s · {meta['mode']} · temporal "
          f"{'on' if meta['temporal'] else 'off'} · seed {meta['seed']} · bundle {meta['bundle']}")
    for p in (result["video"], result["sidecar"]):
        print(p)
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from . import bundle as bundles

    if args.bundle_cmd == "list":
        found = bundles.find_bundles()
        if not found:
            print(f"no bundles in {' or '.join(map(str, bundles.search_path()))}; build a tiny one with "
                  "`sfumato bundle make-tiny`", file=sys.stderr)
        for b in found:
            s = b.summary()
            print(f"{s['name']:24} {s['family']:5} {s['bytes'] / 1e6:8.1f} MB  {s['hash']}  {s['path']}")
        return 0
    if args.bundle_cmd == "info":
        print(json.dumps(bundles.resolve(args.name).summary(), indent=2))
        return 0
    if args.bundle_cmd == "verify":
        b = bundles.resolve(args.name)
        for line in bundles.verify(b):
            print(line)
        print(f"{b.name}: ok")
        return 0
    if args.bundle_cmd == "make-tiny":
        from .tiny import build_tiny_bundle

        name = args.name or f"tiny-{args.family}"
        dest = Path(args.dest) if args.dest else bundles.user_dir()
        path = build_tiny_bundle(dest / name, args.family, controlnet=not args.no_controlnet, name=name)
        print(f"built {path}")
        return 0
    if args.bundle_cmd == "import":
        from .convert import import_checkpoint

        def progress(stage: str, fraction: float) -> None:
            print(f"\r{stage}: {fraction * 100:5.1f}%", end="", file=sys.stderr, flush=True)

        path = import_checkpoint(Path(args.file), args.family, name=args.name, allow_pickle=args.allow_pickle,
                                 dest_root=Path(args.dest) if args.dest else None, overwrite=args.overwrite,
                                 on_progress=progress)
        print(f"\nimported into {path}")
        return 0
    raise AssertionError(args.bundle_cmd)


def _train(args: argparse.Namespace) -> int:
    from .bundle import embedded_dir, user_dir
    from .train.bundle_train import TrainConfig, Trainer

    out = Path(args.out) if args.out else embedded_dir() / args.preset
    work = Path(args.work) if args.work else user_dir().parent / "training" / args.preset
    cfg = TrainConfig(seed=args.seed, threads=args.threads, budget_minutes=args.budget_minutes)
    if args.unet_steps:
        cfg = dataclasses.replace(cfg, unet_steps=args.unet_steps)
    if args.quick:  # a smoke run of every stage in about a minute
        cfg = dataclasses.replace(cfg, samples=64, vae_steps=4, unet_steps=4, checkpoint_every=2)
    Trainer(cfg, work, out, log=lambda m: print(m, flush=True)).run()
    return 0


def _train_motion(args: argparse.Namespace) -> int:
    from ..video.train import MotionTrainConfig, MotionTrainer
    from .bundle import user_dir

    work = Path(args.work) if args.work else user_dir().parent / "training" / "motion"
    cfg = MotionTrainConfig(seed=args.seed, threads=args.threads, budget_minutes=args.budget_minutes,
                            steps=args.steps)
    if args.quick:  # a smoke run in well under a minute
        cfg = dataclasses.replace(cfg, steps=2, batch=1, frames=4, validation_clips=1, checkpoint_every=1)
    trainer = MotionTrainer(cfg, args.bundle, work, log=lambda m: print(m, flush=True))
    summary = trainer.run()
    path = trainer.export(summary, Path(args.out) if args.out else None)
    print(f"exported {path}: validation loss {summary['val_on']:.4f} with frame attention, "
          f"{summary['val_off']:.4f} image model alone", flush=True)
    return 0


def _addon(args: argparse.Namespace) -> int:
    from .addon_build import build_addon

    print(f"built {build_addon(Path(args.output))}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from .worker import Worker

    print(json.dumps(Worker(sys.stdout, device=args.device).info(), indent=2))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from .worker import main

    return main(args.device, args.dtype, args.threads)


STEPS_HELP = "sampling steps (default: the bundle's default_steps, else 25; see `sfumato bundle info NAME`)"


def parser() -> argparse.ArgumentParser:
    from .schedulers import DEFAULT_SCHEDULER, names

    p = argparse.ArgumentParser(prog="sfumato", description="Offline diffusion engine for Blender.")
    sub = p.add_subparsers(dest="command", required=True)

    img = sub.add_parser("image", help="generate images from a prompt")
    img.add_argument("prompt")
    img.add_argument("-o", "--output", required=True, help="output .png (several images: NAME_s<seed>.png)")
    img.add_argument("--bundle", default=None, help="bundle name or folder (default: the embedded bundle)")
    img.add_argument("--negative", default="")
    img.add_argument("--steps", type=int, default=None, help=STEPS_HELP)
    img.add_argument("--guidance", type=float, default=7.5)
    img.add_argument("--seed", type=int, default=None, help="default: random (printed and stored)")
    img.add_argument("--width", type=int, default=None)
    img.add_argument("--height", type=int, default=None)
    img.add_argument("--scheduler", default=DEFAULT_SCHEDULER, help=", ".join(names()))
    img.add_argument("--init", default=None, help="init image for image-to-image")
    img.add_argument("--strength", type=float, default=0.75)
    img.add_argument("--depth", default=None, help="depth image (near = bright) for a depth ControlNet")
    img.add_argument("--control-scale", type=float, default=1.0)
    img.add_argument("--seamless", default="none", choices=["none", "x", "y", "xy"])
    img.add_argument("--n", type=int, default=1, help="variations with seeds seed..seed+n-1")
    img.add_argument("--batch-size", type=int, default=4)
    img.add_argument("--device", default="auto")
    img.add_argument("--dtype", default="auto", help="auto, fp16, bf16, fp32")
    img.add_argument("--fast", default="auto", choices=["auto", "on", "off", "compile"],
                     help="auto/on: CUDA graphs per shape on a GPU, a bfloat16 U-Net on a CPU that does "
                     "bfloat16 natively; compile: plus torch.compile on a GPU; off: eager, the models' precision")
    img.set_defaults(run=_image)

    tex = sub.add_parser("texture", help="texture a mesh from a prompt into its UV map (GLB + PNG)")
    tex.add_argument("mesh", help=".glb, .gltf, .obj or .ply")
    tex.add_argument("prompt")
    tex.add_argument("-o", "--output", required=True, help="output .glb (the texture .png and a .json beside it)")
    tex.add_argument("--mode", default="projection", choices=["projection", "material", "sds"],
                     help="projection: views painted into the UVs; material: a seamless tile, box-mapped; "
                     "sds: the texture optimised by score distillation (resumes after a cancel)")
    tex.add_argument("--iters", type=int, default=300, help="sds: optimisation steps")
    tex.add_argument("--lr", type=float, default=0.05, help="sds: learning rate")
    tex.add_argument("--variant", default="sequential", choices=["sequential", "sync"],
                     help="projection: views in turn (default) or all at once sharing one UV latent")
    tex.add_argument("--views", type=int, default=8)
    tex.add_argument("--fill-views", type=int, default=8, help="extra views for what the orbit missed (0: none)")
    tex.add_argument("--resolution", type=int, default=None, help="per view / tile, px (default: bundle's size)")
    tex.add_argument("--texture-size", type=int, default=1024)
    tex.add_argument("--tile-size", type=float, default=1.0, help="material mode: metres one tile covers")
    tex.add_argument("--conditioning", default="auto", choices=["auto", "depth", "img2img"],
                     help="auto: the bundle's depth ControlNet when it has one, else image-to-image")
    tex.add_argument("--bundle", default=None)
    tex.add_argument("--negative", default="")
    tex.add_argument("--steps", type=int, default=None, help=STEPS_HELP)
    tex.add_argument("--guidance", type=float, default=7.5)
    tex.add_argument("--seed", type=int, default=None)
    tex.add_argument("--scheduler", default=DEFAULT_SCHEDULER, help=", ".join(names()))
    tex.add_argument("--max-faces", type=int, default=200_000)
    tex.add_argument("--device", default="auto")
    tex.add_argument("--dtype", default="auto")
    tex.add_argument("--fast", default="auto", choices=["auto", "on", "off", "compile"],
                     help="auto/on: CUDA graphs on a GPU, a bfloat16 U-Net on a CPU that does bfloat16 natively; "
                     "off: eager, the models' precision")
    tex.set_defaults(run=_texture)

    ast = sub.add_parser("asset", help="a 3-D asset from a prompt: SDS on a radiance field, then a GLB mesh")
    ast.add_argument("prompt")
    ast.add_argument("-o", "--output", required=True, help="output .glb (a preview .png and a .json beside it); "
                     "a cancelled run resumes from <output>.asset-state.safetensors")
    ast.add_argument("--iters", type=int, default=600)
    ast.add_argument("--resolution", type=int, default=64, help="px of the renders the bundle sees")
    ast.add_argument("--seed", type=int, default=None)
    ast.add_argument("--preview-every", type=int, default=50, help="preview renders into <output>_previews/ (0: none)")
    ast.add_argument("--guidance", type=float, default=50.0)
    ast.add_argument("--lr", type=float, default=0.01)
    ast.add_argument("--render", default="rgb", choices=["rgb", "latent"],
                     help="latent: render at latent size, linear map to latents (cheaper, coarser)")
    ast.add_argument("--samples", type=int, default=48, help="samples per ray")
    ast.add_argument("--mesh-resolution", type=int, default=64, help="extraction grid cells per axis")
    ast.add_argument("--colours", default="vertex", choices=["vertex", "texture"],
                     help="vertex colours, or a UV texture baked after unwrapping the mesh (slower: minutes)")
    ast.add_argument("--background", default="random", choices=["random", "learned"],
                     help="random: a new solid colour each iteration, so only the object can match the prompt")
    ast.add_argument("--size", type=float, default=1.0, help="metres: the asset's largest side")
    ast.add_argument("--bundle", default=None)
    ast.add_argument("--negative", default="")
    ast.add_argument("--negative-weight", type=float, default=0.0,
                     help="> 0: push away from --negative with this weight instead of using it as the unconditional")
    ast.add_argument("--device", default="auto")
    ast.add_argument("--dtype", default="auto")
    ast.set_defaults(run=_asset)

    for name in ("video", "turntable"):
        vid = sub.add_parser(name, help="a looping video from a prompt" if name == "video" else
                             "a looping turntable video of a mesh (depth-conditioned per frame)")
        if name == "turntable":
            vid.add_argument("mesh")
        vid.add_argument("prompt")
        vid.add_argument("-o", "--output", required=True, help=".mp4 (needs imageio-ffmpeg) or .gif")
        vid.add_argument("--frames", type=int, default=24)
        vid.add_argument("--fps", type=int, default=12)
        vid.add_argument("--resolution", type=int, default=None)
        vid.add_argument("--elevation", type=float, default=20.0)
        vid.add_argument("--temporal", default="auto", choices=["auto", "on", "off"],
                         help="frame attention (the bundle's motion module or --motion); off: per-frame baseline")
        vid.add_argument("--motion", default=None, help="AnimateDiff motion adapter: diffusers folder or .safetensors")
        vid.add_argument("--bundle", default=None)
        vid.add_argument("--negative", default="")
        vid.add_argument("--steps", type=int, default=None, help=STEPS_HELP)
        vid.add_argument("--guidance", type=float, default=7.5)
        vid.add_argument("--seed", type=int, default=None)
        vid.add_argument("--scheduler", default=DEFAULT_SCHEDULER, help=", ".join(names()))
        vid.add_argument("--beta-schedule", default=None, choices=["linear", "scaled_linear", "squaredcos_cap_v2"],
                         help="override the bundle's noise schedule (AnimateDiff motion modules expect linear)")
        vid.add_argument("--window", type=int, default=None, help="frames per frame-attention call "
                         "(default: the motion module's length)")
        vid.add_argument("--conditioning", default="auto", choices=["auto", "depth", "img2img"],
                         help="turntable: auto = the depth ControlNet when the bundle has one, else image-to-image "
                         "from the orbit's shading")
        vid.add_argument("--strength", type=float, default=0.8, help="img2img: how far frames move from the shading")
        vid.add_argument("--sync", type=float, default=0.0, help="turntable: 0..1, pull the latents of each bit of "
                         "surface toward their mean over the frames that see it (the geometry ties frames together)")
        vid.add_argument("--device", default="auto")
        vid.add_argument("--dtype", default="auto")
        vid.add_argument("--fast", default="auto", choices=["auto", "on", "off"],
                         help="auto/on: a bfloat16 U-Net on a CPU that does bfloat16 natively; off: the models' precision")
        vid.set_defaults(run=_video)

    bun = sub.add_parser("bundle", help="list, inspect, verify, import bundles")
    bsub = bun.add_subparsers(dest="bundle_cmd", required=True)
    bsub.add_parser("list")
    for name in ("info", "verify"):
        bsub.add_parser(name).add_argument("name")
    imp = bsub.add_parser("import", help="turn a single-file checkpoint into a bundle")
    imp.add_argument("file")
    imp.add_argument("--family", required=True, choices=["sd15", "sd21", "sdxl"])
    imp.add_argument("--name", default=None)
    imp.add_argument("--dest", default=None, help="folder to put the bundle in (default: user bundles)")
    imp.add_argument("--allow-pickle", action="store_true",
                     help="load a pickled .ckpt/.bin with torch.load(weights_only=True)")
    imp.add_argument("--overwrite", action="store_true")
    tiny = bsub.add_parser("make-tiny", help="build a tiny random bundle (tests, smoke runs)")
    tiny.add_argument("--family", default="sd15", choices=["sd15", "sdxl"])
    tiny.add_argument("--name", default=None)
    tiny.add_argument("--dest", default=None)
    tiny.add_argument("--no-controlnet", action="store_true")
    bun.set_defaults(run=_bundle)

    wk = sub.add_parser("worker", help="serve jobs as JSON lines on stdin/stdout")
    wk.add_argument("--device", default="auto")
    wk.add_argument("--dtype", default="auto")
    wk.add_argument("--threads", type=int, default=None)
    wk.set_defaults(run=_worker)

    tr = sub.add_parser("train", help="train a bundle from scratch on procedural data")
    tsub = tr.add_subparsers(dest="train_cmd", required=True)
    tb = tsub.add_parser("bundle")
    tb.add_argument("--preset", default="materials", choices=["materials"])
    tb.add_argument("--out", default=None, help="bundle folder (default: bundles/<preset> in this project)")
    tb.add_argument("--work", default=None, help="checkpoints, data and logs (default: user data folder)")
    tb.add_argument("--seed", type=int, default=0)
    tb.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    tb.add_argument("--budget-minutes", type=float, default=None,
                    help="stop the U-Net stage at the first checkpoint past this total time")
    tb.add_argument("--unet-steps", type=int, default=None, help="U-Net training steps (default 9000)")
    tb.add_argument("--quick", action="store_true", help="tiny smoke run of every stage")
    tb.set_defaults(run=_train)
    tm = tsub.add_parser("motion", help="train a bundle's motion module (frame attention) on synthetic clips")
    tm.add_argument("--bundle", default=None, help="bundle whose frozen U-Net it trains over (default: embedded)")
    tm.add_argument("--out", default=None, help="bundle folder to write motion_adapter/ into (default: the bundle)")
    tm.add_argument("--work", default=None, help="checkpoints and logs (default: user data folder)")
    tm.add_argument("--seed", type=int, default=0)
    tm.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    tm.add_argument("--steps", type=int, default=4000)
    tm.add_argument("--budget-minutes", type=float, default=None,
                    help="stop at the first checkpoint past this total time")
    tm.add_argument("--quick", action="store_true", help="tiny smoke run")
    tm.set_defaults(run=_train_motion)

    ad = sub.add_parser("addon", help="the Blender add-on")
    asub = ad.add_subparsers(dest="addon_cmd", required=True)
    ab = asub.add_parser("build", help="build the installable extension zip")
    ab.add_argument("-o", "--output", default="dist", help="a .zip path or a folder (default: dist/)")
    ad.set_defaults(run=_addon)

    info = sub.add_parser("info", help="device, dtype and bundles")
    info.add_argument("--device", default="auto")
    info.set_defaults(run=_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command != "worker":
        logging.basicConfig(level=logging.WARNING, format="sfumato: %(message)s")
        quiet_libraries()
    from .errors import BadParameter, SfumatoError

    try:
        return args.run(args)
    except BadParameter as exc:
        print(f"sfumato: error: {exc}", file=sys.stderr)
        return 2
    except SfumatoError as exc:
        print(f"sfumato: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nsfumato: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
