"""Turntable consistency and speed, temporal on vs off, in one process.

    python benchmarks/video.py                 # CPU: the embedded bundle and its motion module
    python benchmarks/video.py --gif docs/turntable.gif   # plus the README's side-by-side GIF
    python benchmarks/video.py --gpu           # GPU: random-weight SD1.5 + AnimateDiff-v2 architecture,
                                               # 16 frames at 512², 20 steps, next to diffusers' AnimateDiffPipeline

Consistency is measured against exact ground truth (``video/consistency.py``): the orbit's geometry
gives where each visible surface pixel of frame k appears in frame k+1, so the warping error is the
mean colour change of the same surface point between neighbouring frames (0..255), and the seam
ratio the error across the loop's cut (N−1 → 0) over the median of the others. Frames are measured
without the headlight relighting (``relight=False``), which changes colours between frames by itself.
The same seeds, prompts and meshes run with the frame attention on and off (``--temporal off`` is the
per-frame baseline: the same windows and loop noise, no motion module). A render of a surface whose
colour is a fixed function of position gives the floor: what resampling alone costs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

PROMPTS = ("red brick wall, running bond", "weathered timber planks", "white stucco facade", "grey slate tiles")


def meshes():
    import trimesh

    from texture import house  # benchmarks/texture.py

    from sfumato.threed.mesh import Mesh

    def as_mesh(tm, name):
        return Mesh(torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces), source=name).normalised()

    tower = trimesh.util.concatenate([trimesh.creation.box((1.0, 3.0, 1.0)), trimesh.creation.cylinder(0.9, 0.4)])
    return {"house": as_mesh(house(), "house.glb"), "tower": as_mesh(tower, "tower.glb")}


def floor(mesh, cams, size: int) -> np.ndarray:
    from sfumato.threed.raster import rasterize

    frags = rasterize(cams, mesh.vertices, mesh.faces, size)
    p = frags.interpolate(mesh.vertices, mesh.faces)
    rgb = 0.5 + 0.4 * torch.sin(p * torch.tensor([9.0, 11.0, 10.0]))
    rgb = torch.where(frags.mask[..., None], rgb, torch.full((), 0.5))
    return list((rgb * 255).numpy())


def cpu(args) -> None:
    from sfumato.core.bundle import resolve
    from sfumato.core.fast import cpu_bf16_helps
    from sfumato.core.loading import load_models
    from sfumato.video.adapter import load_motion_adapter
    from sfumato.video.consistency import detail, orbit_flow, seam_ratio, warping_errors
    from sfumato.core.schema import VideoRequest
    from sfumato.video.generate import generate_video
    from sfumato.video.turntable import orbit_cameras

    torch.set_num_threads(args.threads)
    bundle = resolve(args.bundle)
    if "motion_adapter" not in bundle.components:
        sys.exit(f"bundle {bundle.name} has no motion module: run `sfumato train motion` first")
    models = load_models(bundle, torch.device("cpu"), torch.float32)
    variants = {  # label: (frame attention, generate_video settings)
        "temporal off, plain loop noise": (False, {"anchored_noise": False}),
        "temporal off": (False, {}),
        "temporal on": (True, {}),
        "temporal on + sync 0.5": (True, {"sync": 0.5}),
    }
    if not args.all_variants:
        variants = {k: v for k, v in variants.items() if k in ("temporal off", "temporal on")}
    if args.compare_fast:  # the rows above run the default fast path; these the float32 models as loaded
        variants["temporal off, fast off (float32)"] = (False, {"fast": "off"})
        variants["temporal on, fast off (float32)"] = (True, {"fast": "off"})
    rows: dict[str, list] = {"floor (exact render)": [], **{label: [] for label in variants}}
    times: dict[str, list] = {label: [] for label in variants}
    details: dict[str, list] = {label: [] for label in rows}
    kw = dict(frames=args.frames, resolution=args.resolution, steps=args.steps, relight=False)
    for name, mesh in meshes().items():
        cams = orbit_cameras(mesh, args.frames)
        flow = orbit_flow(mesh, cams, args.resolution)
        e = warping_errors(floor(mesh, cams, args.resolution), flow)
        rows["floor (exact render)"].append(e)
        details["floor (exact render)"].append(detail(floor(mesh, cams, args.resolution), flow))
        for k, prompt in enumerate(PROMPTS[:args.prompts]):
            for label, (temporal, extra) in variants.items():
                motion = load_motion_adapter(bundle.component_dir("motion_adapter"), models.unet) if temporal else None
                try:
                    t0 = time.perf_counter()
                    req = VideoRequest(prompt=prompt, seed=100 + k, **kw, **extra)
                    frames, _ = generate_video(models, req, mesh=mesh, motion=motion)
                    times[label].append((time.perf_counter() - t0) / args.frames)
                finally:
                    if motion is not None:
                        motion.remove()
                e = warping_errors(frames, flow)
                rows[label].append(e)
                details[label].append(detail(frames, flow))
                print(f"{name:6s} {prompt[:28]:28s} {label:30s}: warping error {e.mean():6.2f}, "
                      f"seam ratio {seam_ratio(e):5.2f}, detail {details[label][-1]:5.2f}", flush=True)
                if args.save:
                    out = Path(args.save)
                    out.mkdir(parents=True, exist_ok=True)
                    frames[0].save(out / f"{name}_{k}_{label.replace(' ', '_')}.gif", save_all=True,
                                   append_images=frames[1:], loop=0, duration=83)
    print(f"\n{bundle.name} bundle · {len(meshes())} meshes × {args.prompts} prompts · {args.frames} frames at "
          f"{args.resolution}² · {args.steps} steps · {args.threads} CPU threads · torch {torch.__version__} · fast path: "
          f"{'bfloat16 U-Net' if cpu_bf16_helps() else 'float32 (this CPU has no fast bfloat16)'}\n")
    print("| frames | warping error (0..255) | seam ratio (median) | detail (mean gradient) | s/frame |")
    print("|---|---:|---:|---:|---:|")
    for label, errs in rows.items():
        mean = float(np.mean([e.mean() for e in errs]))
        seam = statistics.median(seam_ratio(e) for e in errs)
        t = f"{statistics.median(times[label]):.2f}" if label in times else "–"
        print(f"| {label} | {mean:.2f} | {seam:.2f} | {np.mean(details[label]):.2f} | {t} |")
    off = np.mean([e.mean() for e in rows["temporal off"]])
    on = np.mean([e.mean() for e in rows["temporal on"]])
    pairs = [(a.mean(), b.mean()) for a, b in zip(rows["temporal off"], rows["temporal on"])]
    if args.compare_fast:
        for on_off in ("off", "on"):
            fast, plain = f"temporal {on_off}", f"temporal {on_off}, fast off (float32)"
            print(f"fast path, temporal {on_off}: {statistics.median(times[plain]) / statistics.median(times[fast]):.2f}× "
                  f"per frame; warping error {np.mean([e.mean() for e in rows[fast]]):.2f} vs "
                  f"{np.mean([e.mean() for e in rows[plain]]):.2f} in float32")
    if args.gif:
        side_by_side(models, bundle, meshes()["house"], PROMPTS[0], kw, Path(args.gif))
    print(f"\nframe attention lowers the warping error by {100 * (1 - on / off):.1f}% "
          f"(lower in {sum(b < a for a, b in pairs)} of {len(pairs)} videos)")


def side_by_side(models, bundle, mesh, prompt: str, kw: dict, path: Path) -> None:
    """A GIF of the same turntable with frame attention off (left) and on (right), as users see it (relit)."""
    from PIL import Image, ImageDraw

    from sfumato.video.adapter import load_motion_adapter
    from sfumato.core.schema import VideoRequest
    from sfumato.video.generate import generate_video

    runs = []
    for temporal in ("off", "on"):
        motion = load_motion_adapter(bundle.component_dir("motion_adapter"), models.unet) if temporal == "on" else None
        try:
            req = VideoRequest(prompt=prompt, seed=7, **{**kw, "relight": True})
            frames, _ = generate_video(models, req, mesh=mesh, motion=motion)
        finally:
            if motion is not None:
                motion.remove()
        runs.append(frames)
    w, h = runs[0][0].size
    out = []
    for left, right in zip(*runs):
        canvas = Image.new("RGB", (2 * w, h + 14), (255, 255, 255))
        canvas.paste(left, (0, 14))
        canvas.paste(right, (w, 14))
        draw = ImageDraw.Draw(canvas)
        draw.text((4, 1), "temporal off", fill=(0, 0, 0))
        draw.text((w + 4, 1), "temporal on", fill=(0, 0, 0))
        out.append(canvas)
    path.parent.mkdir(parents=True, exist_ok=True)
    out[0].save(path, save_all=True, append_images=out[1:], loop=0, duration=83, optimize=True)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB): {prompt!r}, seed 7")


def gpu(args) -> None:
    """16 frames at 512², 20 steps, guidance 7.5, fp16: AnimateDiffPipeline vs our loop, same modules."""
    from diffusers import AnimateDiffPipeline, DDIMScheduler, MotionAdapter, UNetMotionModel

    from image import random_models

    from sfumato.video.adapter import load_motion_adapter
    from sfumato.core.schema import VideoRequest
    from sfumato.video.generate import generate_video

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    models = random_models("sd15", device, dtype)
    adapter = MotionAdapter(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2,
                            motion_mid_block_layers_per_block=1, motion_num_attention_heads=8,
                            motion_norm_num_groups=32, motion_max_seq_length=32, use_motion_mid_block=True)
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="sfumato-video-bench-")) / "adapter"
    adapter.save_pretrained(folder, safe_serialization=True)
    adapter = adapter.to(device, dtype)
    unet_motion = UNetMotionModel.from_unet2d(models.unet, adapter).to(device, dtype)
    sched = DDIMScheduler.from_config({**models.scheduler_config, "beta_schedule": "linear"})
    pipe = AnimateDiffPipeline(vae=models.vae, text_encoder=models.text_encoders[0], tokenizer=models.tokenizers[0],
                               unet=unet_motion, motion_adapter=adapter, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    frames, size, steps = (4, 64, 2) if args.smoke else (16, 512, 20)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def theirs():
        return pipe("a glass pavilion at dusk", num_frames=frames, height=size, width=size, num_inference_steps=steps,
                    guidance_scale=7.5, output_type="pt").frames

    motion = load_motion_adapter(folder, models.unet)

    def ours():
        req = VideoRequest(prompt="a glass pavilion at dusk", frames=frames, resolution=size, steps=steps, seed=0,
                           scheduler="ddim", window=16, beta_schedule="linear")
        return generate_video(models, req, motion=motion)

    results = {}
    for label, fn in (("diffusers AnimateDiffPipeline", theirs), ("ours (shared denoiser + frame attention hooks)", ours)):
        fn()
        sync()
        ts = []
        for _ in range(args.repeat):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        results[label] = (statistics.median(ts), peak)
    card = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (smoke run)"
    print(f"{card} · {frames} frames at {size}², {steps} steps, {str(dtype).replace('torch.', '')}, random weights")
    print("| loop | s per video | peak GiB |\n|---|---:|---:|")
    for label, (t, mem) in results.items():
        print(f"| {label} | {t:.2f} | {mem:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save", default=None, help="folder for the GIFs")
    ap.add_argument("--gif", default=None, help="also write a side-by-side GIF (off | on) of the house here")
    ap.add_argument("--compare-fast", action="store_true",
                    help="also the float32 rows (fast off) next to the default fast path (bfloat16 U-Net on a CPU "
                    "that does bfloat16 natively)")
    ap.add_argument("--all-variants", action="store_true",
                    help="also per-frame without surface-anchored noise, and frame attention with surface sync")
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="--gpu at 4 frames, 64², 2 steps (checks the script on a CPU)")
    args = ap.parse_args()
    gpu(args) if args.gpu else cpu(args)


if __name__ == "__main__":
    main()
