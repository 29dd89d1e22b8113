"""Upscaling for boards, measured: tiled image-to-image against plain bicubic, on material textures the embedded
bundle generates (issue 19).

    python benchmarks/upscale.py [--size 256] [--prompts 3] [--time-size 512] [--picture docs/upscale_example.png]

Inputs: ``--prompts`` material textures of ``--size``² from the embedded bundle (seeds 1, 2, ...), each upscaled 2x
with tile = the bundle's native size and the default overlap, strength and steps. Every method runs in this
process on the same inputs:

* border: mean squared gradient across the lines where tiles start or end (the seams of a naive tiling) over the
  mean squared gradient across every line of the image (x and y together), each line's taken relative to the
  same line of the bicubic image (a joint of the texture lying on a tile edge is not a seam); 1 = no seams,
  bicubic is 1 by definition. "overlap 0" tiles the same image without blending: the control that shows what a
  seam measures;
* detail: high-frequency energy, the mean square of (grey - Gaussian blur σ=1.5 of grey), over bicubic's;
* fidelity: PSNR (dB) of the result shrunk back to the input's size (s x s box mean) against the input;
* seconds per image on this machine's CPU, the model already loaded; ``--time-size`` times one more upscale
  (512² -> 1024² by default, tile 512) for the issue's "reasonable time".
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFilter

from sfumato.core.jobs import JobContext
from sfumato.core.loading import ModelCache
from sfumato.core.upscale import axis_weights
from sfumato.kinds import run_job

PROMPTS = ["weathered red brick wall", "oak wood planks", "grey slate roof tiles", "rough concrete",
           "mossy cobblestones"]


def grey(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), np.float64)


def line_energy(image: Image.Image, axis: int) -> np.ndarray:
    """Mean squared step between each line and the next, across ``axis`` (1: between columns, 0: between rows)."""
    return (np.diff(grey(image), axis=axis) ** 2).mean(axis=1 - axis)


def border_ratio(image: Image.Image, bicubic: Image.Image, tile: int, overlap: int) -> float:
    """Gradient energy across the tile edges against the interior (module doc), each line's energy taken relative
    to the same line of the seam-free bicubic image, so that a mortar joint lying on an edge counts for nothing."""
    ratios = []
    for axis, length in ((1, image.width), (0, image.height)):
        rel = line_energy(image, axis) / np.maximum(line_energy(bicubic, axis), 1e-6)
        tiles = axis_weights(length, tile, overlap)
        edges = {s for s, _ in tiles[1:]} | {s + len(w) for s, w in tiles[:-1]}
        edges = sorted(e - 1 for e in edges if 0 < e < length)  # the step from line e - 1 into line e
        ratios.append(rel[edges].mean() / rel.mean())
    return float(np.mean(ratios))


def high_frequency(image: Image.Image) -> float:
    g = grey(image)
    blurred = np.asarray(image.convert("L").filter(ImageFilter.GaussianBlur(1.5)), np.float64)
    return float(((g - blurred) ** 2).mean())


def psnr_back(result: Image.Image, source: Image.Image) -> float:
    a = np.asarray(source.convert("RGB"), np.float64)
    b = np.asarray(result.convert("RGB"), np.float64)
    s = b.shape[0] // a.shape[0]
    small = b.reshape(a.shape[0], s, a.shape[1], s, 3).mean(axis=(1, 3))
    return float(10 * np.log10(255 ** 2 / ((small - a) ** 2).mean()))


def context(cache: ModelCache) -> JobContext:
    return JobContext("bench", cache, "cpu", "fp32", threading.Event(), lambda *a, **k: None, preview_every=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--prompts", type=int, default=3)
    ap.add_argument("--time-size", type=int, default=512, help="one more upscale of this size, timed (0: none)")
    ap.add_argument("--out", default="out/upscale", help="inputs and results (ignored by git)")
    ap.add_argument("--picture", default=None, help="write input | bicubic | ours (a crop) here")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = ModelCache()
    from sfumato.core.bundle import resolve
    from sfumato.core.capabilities import native_size

    tile = native_size(resolve("materials"))
    methods = {"ours": {}, "ours, fidelity 0": {"fidelity": 0.0}, "overlap 0 (control)": {"overlap": 0}}
    rows: dict[str, list[tuple[float, float, float, float]]] = {"bicubic": [], **{m: [] for m in methods}}
    pictures = []
    for i, prompt in enumerate(PROMPTS[:args.prompts]):
        source = out / f"in{i}.png"
        run_job("image", {"prompt": prompt, "seed": i + 1, "width": args.size, "height": args.size,
                          "bundle": "materials"}, source, context(cache))
        src = Image.open(source).convert("RGB")
        size = (src.width * 2, src.height * 2)
        t0 = time.perf_counter()
        bicubic = src.resize(size, Image.BICUBIC)
        seconds = time.perf_counter() - t0
        base_hf = high_frequency(bicubic)
        rows["bicubic"].append((1.0, 1.0, psnr_back(bicubic, src), seconds))  # the reference of both ratios
        for k, (name, extra) in enumerate(methods.items()):
            target = out / f"in{i}_up{k}.png"
            params = {"image": str(source), "scale": 2, "tile": tile, "seed": 7, "bundle": "materials", **extra}
            t0 = time.perf_counter()
            run_job("upscale", params, target, context(cache))
            seconds = time.perf_counter() - t0
            result = Image.open(target).convert("RGB")
            rows[name].append((border_ratio(result, bicubic, tile, extra.get("overlap", 64)),
                               high_frequency(result) / base_hf, psnr_back(result, src), seconds))
            if name == "ours":
                pictures.append((src, bicubic, result))
        print(f"{prompt}: " + "; ".join(f"{m} border {r[-1][0]:.2f} detail {r[-1][1]:.2f} psnr {r[-1][2]:.1f} "
                                         f"{r[-1][3]:.1f} s" for m, r in rows.items()), flush=True)
    print(f"\n{args.prompts} material textures {args.size}² -> {2 * args.size}², tile {tile}, embedded bundle, CPU "
          f"({args.threads} threads)\n")
    print("| method | border/interior gradient energy | detail vs bicubic | fidelity PSNR (dB) | s per image |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        a = np.array(r).mean(axis=0)
        print(f"| {name} | {a[0]:.2f} | {a[1]:.2f} | {a[2]:.1f} | {a[3]:.1f} |")
    if args.time_size:
        source = out / "timed.png"
        run_job("image", {"prompt": PROMPTS[0], "seed": 1, "width": args.time_size, "height": args.time_size,
                          "bundle": "materials"}, source, context(cache))
        t0 = time.perf_counter()
        run_job("upscale", {"image": str(source), "scale": 2, "seed": 7, "bundle": "materials"}, out / "timed_2x.png",
                context(cache))
        print(f"\n{args.time_size}² -> {2 * args.time_size}² (default tile and overlap): "
              f"{time.perf_counter() - t0:.1f} s")
    if args.picture and pictures:
        src, bicubic, ours = pictures[0]
        crop = (0, 0, min(256, ours.width), min(256, ours.height))
        sheet = Image.new("RGB", (crop[2] * 3, crop[3]))
        for k, im in enumerate((src.resize(ours.size, Image.NEAREST), bicubic, ours)):
            sheet.paste(im.crop(crop), (k * crop[2], 0))
        sheet.save(args.picture, optimize=True)
        print(f"wrote {args.picture}")


if __name__ == "__main__":
    main()
