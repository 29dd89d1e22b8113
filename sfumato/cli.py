"""The ``sfumato`` command line.

    sfumato image "red brick wall" -o brick.png --seed 1 --n 4
    sfumato texture house.glb "weathered red brick" -o house_textured.glb [--mode material --tile-size 1]
    sfumato turntable house.glb "timber house" -o house.mp4 [--frames 24]
    sfumato asset "a park bench" -o bench.glb [--iters 600 --resolution 64 --seed 1 --preview-every 50]
    sfumato upscale board.png --scale 2 -o board_2x.png [--prompt "red brick" --strength 0.35 --tile 512]
    sfumato bundle list | info NAME | verify NAME | import FILE --family sd15 [--dtype fp32] | make-tiny
    sfumato bundle add NAME FILE --as controlnet-depth|controlnet-normal|controlnet-lineart|controlnet-canny|motion|lora
                       [--name NAME] [--replace]    # original single files are converted, diffusers folders copied
    sfumato bundle remove NAME COMPONENT_OR_LORA | info NAME [--text]
    sfumato bundle add-controlnet NAME FOLDER   # the same as add NAME FOLDER --as controlnet-depth
    sfumato worker            # JSON lines on stdin/stdout, for the Blender add-on and scripts
    sfumato info              # device, dtype and bundles

The job commands' flags come from the request schema (``cli_jobs.py``). Bad input ends with one line on
stderr naming the field, the value and what is allowed, and a non-zero exit status (2 for bad input, 1 for
other failures, 130 when interrupted).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from .batch import command as batch_command
from .cli_jobs import add_job_commands


def _bundle(args: argparse.Namespace) -> int:
    from .core import bundle as bundles

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
        from .core.bundle_add import format_holdings, holdings
        from .core.capabilities import capabilities

        b = bundles.resolve(args.name)
        held, caps = holdings(b), capabilities(b)
        print(format_holdings(b, held, caps) if args.text else
              json.dumps({**b.summary(), "capabilities": caps, "holds": held}, indent=2))
        return 0
    if args.bundle_cmd == "verify":
        b = bundles.resolve(args.name)
        for line in bundles.verify(b):
            print(line)
        print(f"{b.name}: ok")
        return 0
    if args.bundle_cmd == "make-tiny":
        from .core.tiny import build_tiny_bundle

        name = args.name or f"tiny-{args.family}"
        dest = Path(args.dest) if args.dest else bundles.user_dir()
        path = build_tiny_bundle(dest / name, args.family, controlnet=not args.no_controlnet, name=name)
        print(f"built {path}")
        return 0
    if args.bundle_cmd in ("add", "add-controlnet"):
        kind = "controlnet-depth" if args.bundle_cmd == "add-controlnet" else args.kind
        flag = "--overwrite" if args.bundle_cmd == "add-controlnet" else "--replace"
        path = _bundle_add(args.name, args.file, kind, getattr(args, "as_name", None), args.replace, flag)
        print(f"added {path}" + (f": {args.name} now does depth guidance" if kind == "controlnet-depth" else ""))
        return 0
    if args.bundle_cmd == "remove":
        from .core.bundle_add import remove

        print(f"removed {remove(args.name, args.what)} from {args.name}")
        return 0
    if args.bundle_cmd == "import":
        from .core.convert import import_checkpoint

        def progress(stage: str, fraction: float) -> None:
            print(f"\r{stage}: {fraction * 100:5.1f}%", end="", file=sys.stderr, flush=True)

        path = import_checkpoint(Path(args.file), args.family, name=args.name, allow_pickle=args.allow_pickle,
                                 dest_root=Path(args.dest) if args.dest else None, overwrite=args.overwrite,
                                 config_dir=Path(args.config_dir) if args.config_dir else None,
                                 on_progress=progress, **({"dtype": args.dtype} if args.dtype else {}))
        print(f"\nimported into {path}")
        return 0
    raise AssertionError(args.bundle_cmd)


def _bundle_add(bundle: str, source: str, kind: str, name: str | None, replace: bool, flag: str) -> Path:
    """``sfumato bundle add``: a LoRA is copied into ``loras/``; a ControlNet (core) or a motion module (the video
    head reads those) becomes a component through ``core.bundle_add.add_component``."""
    from .core import bundle_add
    from .core.errors import BadParameter

    if kind == "lora":
        return bundle_add.add_lora(bundle, source, name, replace=replace, replace_flag=flag)
    if name is not None:
        raise BadParameter("name", name, f"no --name with --as {kind}: the component is always "
                           f"{bundle_add.KINDS[kind]} (--name names LoRAs)")
    b = bundle_add.writable(bundle)
    if kind == "motion":
        from .video.motion_add import motion_writer

        writer = motion_writer(b, source)
    else:
        writer = bundle_add.controlnet_writer(b, source)
    return bundle_add.add_component(b, bundle_add.KINDS[kind], writer, replace=replace, replace_flag=flag)


def _train(args: argparse.Namespace) -> int:
    from .core.bundle import embedded_dir, user_dir
    from .core.train.bundle_train import TrainConfig, Trainer

    out = Path(args.out) if args.out else embedded_dir() / args.preset
    work = Path(args.work) if args.work else user_dir().parent / "training" / args.preset
    cfg = TrainConfig(seed=args.seed, threads=args.threads, budget_minutes=args.budget_minutes)
    if args.unet_steps:
        cfg = dataclasses.replace(cfg, unet_steps=args.unet_steps)
    if args.quick:  # a smoke run of every stage in about a minute
        cfg = dataclasses.replace(cfg, samples=64, vae_steps=4, unet_steps=4, checkpoint_every=2)
    Trainer(cfg, work, out, log=lambda m: print(m, flush=True)).run()
    return 0


def _train_maps(args: argparse.Namespace) -> int:
    from .core.bundle import embedded_dir, user_dir
    from .core.train.maps_train import MapTrainConfig, train_and_export

    work = Path(args.work) if args.work else user_dir().parent / "training" / "maps"
    cfg = MapTrainConfig(seed=args.seed, threads=args.threads, budget_minutes=args.budget_minutes)
    if args.steps:
        cfg = dataclasses.replace(cfg, steps=args.steps)
    out = Path(args.out) if args.out else embedded_dir() / "materials"
    if args.quick:  # a smoke run in seconds; nothing exported
        cfg = dataclasses.replace(cfg, steps=4, batch=2, validation_tiles=2, checkpoint_every=2)
        out = None
    train_and_export(cfg, work, out, log=lambda m: print(m, flush=True))
    return 0


def _train_style(args: argparse.Namespace) -> int:
    """``sfumato train style``: a LoRA from a folder of references, into a user bundle; Ctrl-C stops after the step
    under way and the same command resumes from the last checkpoint."""
    import signal

    from .core.train.style import StyleTrainConfig, default_work, train_style

    given = {k: getattr(args, k) for k in ("steps", "rank", "resolution", "crop", "batch", "lr", "caption",
                                          "trigger", "seed", "checkpoint_every") if getattr(args, k) is not None}
    cfg = StyleTrainConfig(folder=args.folder, name=args.name, bundle=args.bundle, device=args.device,
                           overwrite=args.overwrite, force=args.force, **given)
    work = Path(args.work) if args.work else default_work(args.bundle, args.name)
    stop: list[bool] = []

    def progress(step: int, total: int, loss: float) -> None:
        print(f"\rstep {step}/{total} loss {loss:.4f}", end="\n" if step == total else "", file=sys.stderr,
              flush=True)

    def interrupt(*_) -> None:  # the first Ctrl-C stops at the next step, a second one at once
        if stop:
            raise KeyboardInterrupt
        stop.append(True)
        print("\nsfumato: stopping after this step (Ctrl-C again to stop now)", file=sys.stderr, flush=True)

    from .core.errors import Cancelled

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        summary = train_style(cfg, work, progress=progress, cancelled=lambda: bool(stop),
                              log=lambda m: print(m, flush=True))
    except Cancelled as exc:
        print(f"\nsfumato: {exc}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)
    print(json.dumps({k: v for k, v in summary.items() if k != "losses"}, indent=2))
    return 0


def _train_depth(args: argparse.Namespace) -> int:
    """``sfumato train depth``: the embedded bundle's depth ControlNet on procedural buildings (resumable)."""
    from .core.bundle import user_dir
    from .threed.depth_controlnet_train import DepthTrainConfig, export, train

    given = {k: getattr(args, k) for k in ("steps", "batch", "size", "threads") if getattr(args, k) is not None}
    if args.budget_minutes is not None:
        given["time_budget"] = 60 * args.budget_minutes
    cfg = DepthTrainConfig(**given)
    work = Path(args.work) if args.work else user_dir().parent / "training" / "depth"
    net, record = train(cfg, work, log=lambda m: print(m, flush=True))
    if args.out:
        print(f"exported {export(net, Path(args.out), record)}; add it with `sfumato bundle add BUNDLE FOLDER --as "
              "controlnet-depth`", flush=True)
    return 0


def _train_buildings(args: argparse.Namespace) -> int:
    """``sfumato train buildings``: the embedded bundle's U-Net, text encoder and depth ControlNet on procedural
    buildings mixed with its material tiles (resumable)."""
    from .core.bundle import user_dir
    from .threed.building_train import BuildingTrainConfig, export, train

    given = {k: getattr(args, k) for k in ("steps", "threads") if getattr(args, k) is not None}
    if args.budget_minutes is not None:
        given["time_budget"] = 60 * args.budget_minutes
    work = Path(args.work) if args.work else user_dir().parent / "training" / "buildings"
    nets, record = train(BuildingTrainConfig(**given), work, log=lambda m: print(m, flush=True))
    if args.out:
        print(f"exported {export(nets, Path(args.out), record)}; judge it (benchmarks/bundle_quality.py, "
              "benchmarks/concept.py) before it goes into a bundle", flush=True)
    return 0


def _train_decoder(args: argparse.Namespace) -> int:
    """``sfumato train decoder``: the embedded VAE's decoder on buildings and material tiles (encoder frozen)."""
    from .core.bundle import user_dir
    from .threed.vae_decoder_train import DecoderTrainConfig, export, train

    given = {k: getattr(args, k) for k in ("steps", "threads") if getattr(args, k) is not None}
    if args.budget_minutes is not None:
        given["time_budget"] = 60 * args.budget_minutes
    work = Path(args.work) if args.work else user_dir().parent / "training" / "decoder"
    vae, record = train(DecoderTrainConfig(**given), work, log=lambda m: print(m, flush=True))
    if args.out:
        print(f"exported {export(vae, Path(args.out), record)}", flush=True)
    return 0


def _train_motion(args: argparse.Namespace) -> int:
    from .core.bundle import user_dir
    from .video.train import MotionTrainConfig, MotionTrainer

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
    from .core.addon_build import build_addon

    print(f"built {build_addon(Path(args.output))}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from .core.worker import Worker
    from .kinds import KINDS

    print(json.dumps(Worker(sys.stdout, KINDS, device=args.device).info(), indent=2))
    return 0


def _worker(args: argparse.Namespace) -> int:
    from .core.worker import main
    from .kinds import KINDS

    return main(KINDS, args.device, args.dtype, args.threads)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sfumato", description="Offline diffusion engine for Blender.")
    sub = p.add_subparsers(dest="command", required=True)
    add_job_commands(sub)
    batch_command.add_parser(sub)

    from .core.bundle_add import KINDS

    bun = sub.add_parser("bundle", help="list, inspect, verify, import, add to and remove from bundles")
    bsub = bun.add_subparsers(dest="bundle_cmd", required=True)
    bsub.add_parser("list")
    bsub.add_parser("verify").add_argument("name")
    inf = bsub.add_parser("info", help="what a bundle holds (components with sizes and hashes, LoRAs) and can do")
    inf.add_argument("name")
    inf.add_argument("--text", action="store_true", help="lines to read instead of JSON")
    imp = bsub.add_parser("import", help="turn a single-file checkpoint into a bundle")
    imp.add_argument("file")
    imp.add_argument("--family", required=True, choices=["sd15", "sd21", "sdxl"])
    imp.add_argument("--name", default=None)
    imp.add_argument("--dest", default=None, help="folder to put the bundle in (default: user bundles)")
    imp.add_argument("--allow-pickle", action="store_true",
                     help="load a pickled .ckpt/.bin with torch.load(weights_only=True)")
    imp.add_argument("--overwrite", action="store_true")
    imp.add_argument("--dtype", default=None, metavar="fp16|fp32",
                     help="precision of the written weights: fp16 (the default, half the disk) or fp32")
    imp.add_argument("--config-dir", default=None, metavar="FOLDER",
                     help="a diffusers-layout folder whose configs (and tokenizers, if any) replace the family's, "
                     "for a checkpoint of another size than the family's public models")
    add = bsub.add_parser("add", help="add a ControlNet, motion module or LoRA to a user bundle (checked against "
                          "its family, hashed into its manifest)")
    add.add_argument("name", help="bundle name or folder (a user bundle: the embedded one is never changed)")
    add.add_argument("file", help="a .safetensors file (original single-file or diffusers names) or diffusers folder")
    add.add_argument("--as", dest="kind", required=True, choices=list(KINDS))
    add.add_argument("--name", dest="as_name", default=None, metavar="NAME",
                     help="the LoRA's name in the bundle (default: the file's)")
    add.add_argument("--replace", "--overwrite", dest="replace", action="store_true",
                     help="replace a component or LoRA of that name")
    rem = bsub.add_parser("remove", help="remove a ControlNet, the motion module or a LoRA from a user bundle")
    rem.add_argument("name", help="bundle name or folder")
    rem.add_argument("what", help="a component (controlnet_depth or controlnet-depth, motion_adapter or motion) or "
                     "a LoRA's name")
    acn = bsub.add_parser("add-controlnet", help="give a bundle a depth ControlNet (the same as add --as "
                          "controlnet-depth)")
    acn.add_argument("name", help="bundle name or folder")
    acn.add_argument("file", help="the ControlNet: a diffusers folder or a .safetensors file")
    acn.add_argument("--overwrite", dest="replace", action="store_true", help="replace the bundle's depth ControlNet")
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

    tp = tsub.add_parser("maps", help="train the PBR map network (colour -> height, normal, roughness)")
    tp.add_argument("--out", default=None, help="bundle folder to write maps/ into (default: embedded materials)")
    tp.add_argument("--work", default=None, help="checkpoints and logs (default: user data folder)")
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--threads", type=int, default=1)
    tp.add_argument("--steps", type=int, default=None, help="training steps (default 1800)")
    tp.add_argument("--budget-minutes", type=float, default=None,
                    help="stop at the first checkpoint past this much training time")
    tp.add_argument("--quick", action="store_true", help="tiny smoke run, nothing exported")
    tp.set_defaults(run=_train_maps)

    td = tsub.add_parser("depth", help="train a depth ControlNet for the embedded bundle on procedural buildings "
                         "(rerun the same command to resume)")
    td.add_argument("--work", default=None, help="checkpoints and progress.log (default: user data folder)")
    td.add_argument("--out", default=None, help="export controlnet_depth/ (fp16) under this folder when done")
    td.add_argument("--steps", type=int, default=None, help="optimiser steps of the whole run (default: the "
                    "trainer's, about two hours on one CPU thread)")
    td.add_argument("--batch", type=int, default=None)
    td.add_argument("--size", type=int, default=None, help="rendered picture side, pixels")
    td.add_argument("--threads", type=int, default=None, help="CPU threads (resume with the same number)")
    td.add_argument("--budget-minutes", type=float, default=None,
                    help="stop at the first checkpoint past this much training time")
    td.set_defaults(run=_train_depth)

    tb = tsub.add_parser("buildings", help="teach the embedded bundle buildings: its U-Net, text encoder and depth "
                         "ControlNet on procedural buildings mixed with its material tiles (rerun to resume)")
    tb.add_argument("--work", default=None, help="checkpoints and progress.log (default: user data folder)")
    tb.add_argument("--out", default=None, help="export unet/, text_encoder/, controlnet_depth/ (fp16) under this "
                    "folder when done")
    tb.add_argument("--steps", type=int, default=None, help="optimiser steps of the whole run (default: the "
                    "trainer's, about 90 minutes on one CPU thread)")
    tb.add_argument("--threads", type=int, default=None, help="CPU threads (resume with the same number)")
    tb.add_argument("--budget-minutes", type=float, default=None,
                    help="stop at the first checkpoint past this much training time")
    tb.set_defaults(run=_train_buildings)

    tv = tsub.add_parser("decoder", help="fine-tune the embedded VAE's decoder on procedural buildings and its "
                         "material tiles, the encoder frozen (rerun to resume)")
    tv.add_argument("--work", default=None, help="checkpoints and progress.log (default: user data folder)")
    tv.add_argument("--out", default=None, help="export vae/ (fp16) under this folder when done")
    tv.add_argument("--steps", type=int, default=None, help="optimiser steps of the whole run (default: the "
                    "trainer's, about 40 minutes on one CPU thread)")
    tv.add_argument("--threads", type=int, default=None, help="CPU threads (resume with the same number)")
    tv.add_argument("--budget-minutes", type=float, default=None,
                    help="stop at the first checkpoint past this much training time")
    tv.set_defaults(run=_train_decoder)

    ts = tsub.add_parser("style", help="train a style LoRA on 5 to 50 reference images into a bundle (--lora "
                         "NAME uses it); rerun the same command to resume")
    ts.add_argument("folder", help="the reference images; a NAME.txt beside an image is its caption")
    ts.add_argument("--bundle", default=None, help="the bundle's name or folder to train on (default: the default "
                    "bundle, whose LoRAs go to the user's data folder)")
    ts.add_argument("--name", required=True, help="the LoRA's name in the bundle")
    ts.add_argument("--steps", type=int, default=None, help="optimiser steps (default: the trainer's, see "
                    "core/train/style.py)")
    ts.add_argument("--rank", type=int, default=None, help="LoRA rank")
    ts.add_argument("--resolution", type=int, default=None, help="references are centre-cropped and resized to this "
                    "square (a multiple of 64; default: the bundle's native size)")
    ts.add_argument("--crop", type=int, default=None, help="train on random square crops of this many pixels")
    ts.add_argument("--batch", type=int, default=None)
    ts.add_argument("--lr", type=float, default=None, help="learning rate of the LoRA")
    ts.add_argument("--caption", default=None, help="caption template for images without a .txt, holding {trigger} "
                    "(default: 'a surface in the {trigger} style')")
    ts.add_argument("--trigger", default=None, help="the word for {trigger} (default: --name)")
    ts.add_argument("--seed", type=int, default=None)
    ts.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints")
    ts.add_argument("--work", default=None, help="checkpoints (default: user data folder, per bundle and name)")
    ts.add_argument("--device", default="auto", help="auto (a GPU when there is one), cuda, mps or cpu")
    ts.add_argument("--overwrite", action="store_true", help="replace a LoRA of that name")
    ts.add_argument("--force", action="store_true", help="train on a CPU even when it would take over an hour")
    ts.set_defaults(run=_train_style)

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
        from .core.quiet import quiet_libraries

        logging.basicConfig(level=logging.WARNING, format="sfumato: %(message)s")
        quiet_libraries()
    from .core.errors import BadParameter, SfumatoError

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
