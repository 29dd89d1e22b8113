"""Style training on the embedded bundle: does a LoRA trained on 20 references carry their look, and what does it
cost the prompt?

    python benchmarks/style.py                 # the full run: 20 references at 256², trained and measured
    python benchmarks/style.py --quick         # a smoke run in a few minutes (few steps, few prompts)

1. **A style no prompt names**: procedural materials (``core/train/materials.py``, seeds the bundle never saw)
   recoloured into a teal/ochre duotone posterised to four tones, a palette and a hard-edged flatness the
   embedded bundle was not trained on; 20 references at 256² for training, 8 more held out.
2. **Training** with ``sfumato.core.train.style.train_style`` on a copy of the embedded bundle (the embedded one is
   never written), timed; each reference has a sidecar caption: the caption of the material it was made from, its
   original colour word included, and the trigger ("brownish brick wall, running bond, tealochre style"), so the
   trigger learns to override the colour words while the material words keep their meaning.
3. **Before and after**: the same prompts (the bundle's own caption templates, one per material family, colour
   words included, with ", tealochre style" added) and seeds, without and with the LoRA at scale 1, at 256² (the style statistics) and at 128² (the judge, at the
   bundle's training scale, as ``benchmarks/bundle_quality.py`` judges).
4. **Measures**, each a distance to the 20 references (lower is closer to the style):
   * colour: the Fréchet distance between Gaussians fitted to the pixels in CIE Lab (mean and covariance);
   * texture: the L1 distance between histograms of gradient magnitude (log-spaced) and of gradient orientation
     (magnitude-weighted) of the luminance, the two halves summed; flat posterised areas and hard edges show here;
   * prompt adherence: the bundle's judge (``core/train/judge.py``) reads material and colour from each image.
   For scale, the table also shows the 8 held-out references (the floor: the style itself) and unrecoloured
   procedural materials (what the bundle makes when it follows the prompt).
5. A before/after picture, ``docs/style_before_after.png``: references on top, then each prompt before and after.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

TEAL, OCHRE = np.array([18, 92, 104], np.float32), np.array([226, 168, 58], np.float32)
TONES = 4
STYLE_SEED = 700_000_000  # far from the bundle's training seeds and from the judge's held-out ones
TRIGGER = "tealochre"


# ---- 1. the style ------------------------------------------------------------------------------------------------
def stylise(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> the teal/ochre duotone of its luminance, stretched and posterised to ``TONES`` tones."""
    lum = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    lo, hi = np.percentile(lum, 2), np.percentile(lum, 98)
    level = np.floor(np.clip((lum - lo) / max(hi - lo, 1.0), 0, 0.999) * TONES) / (TONES - 1)
    return (TEAL + level[..., None] * (OCHRE - TEAL)).round().astype(np.uint8)


def references(n: int, size: int, offset: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(styled, original) images (n, size, size, 3) of materials of every family in their own colours, and the
    captions of the originals (the bundle's caption templates: material and colour words)."""
    from sfumato.core.train import materials

    families = [list(materials.FAMILIES)[(offset + i) % len(materials.FAMILIES)] for i in range(n)]
    rendered = [materials.render(STYLE_SEED + offset + i, size, f) for i, f in enumerate(families)]
    captions = [materials.caption(labels, np.random.default_rng(STYLE_SEED + offset + i))
                for i, (_, labels) in enumerate(rendered)]
    originals = np.stack([image for image, _ in rendered])
    return np.stack([stylise(x) for x in originals]), originals, captions


# ---- 4. measures -------------------------------------------------------------------------------------------------
def lab(images: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 sRGB -> (..., 3) CIE Lab (D65)."""
    c = images.astype(np.float64) / 255
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = c @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def colour_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians of the two sets' Lab pixels: |mu_a - mu_b|² + tr(S_a + S_b - 2 (S_a S_b)^½)."""
    pa, pb = lab(a).reshape(-1, 3), lab(b).reshape(-1, 3)
    mu_a, mu_b, s_a, s_b = pa.mean(0), pb.mean(0), np.cov(pa.T), np.cov(pb.T)
    # tr (S_a S_b)^½ is the sum of the square roots of S_a S_b's eigenvalues (real, >= 0 for covariances)
    root = np.sqrt(np.clip(np.linalg.eigvals(s_a @ s_b).real, 0, None)).sum()
    return float(max(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a + s_b) - 2 * root, 0.0)) ** 0.5


MAG_BINS = np.concatenate([[0], np.geomspace(0.5, 256, 16)])


def texture_histogram(images: np.ndarray) -> np.ndarray:
    """Gradient-magnitude histogram (log bins) and magnitude-weighted orientation histogram (12 bins over 180°)
    of the luminance, pooled over the set, each normalised to sum 1."""
    lum = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    gx = (np.roll(lum, -1, -1) - np.roll(lum, 1, -1)) / 2
    gy = (np.roll(lum, -1, -2) - np.roll(lum, 1, -2)) / 2
    mag, angle = np.hypot(gx, gy).ravel(), (np.arctan2(gy, gx).ravel() % np.pi)
    h_mag = np.histogram(np.minimum(mag, 255.9), MAG_BINS)[0].astype(np.float64)
    h_ang = np.histogram(angle, 12, (0, np.pi), weights=mag)[0]
    return np.concatenate([h_mag / h_mag.sum(), h_ang / max(h_ang.sum(), 1e-9)])


def texture_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(texture_histogram(a) - texture_histogram(b)).sum())


# ---- 3. generation -----------------------------------------------------------------------------------------------
def generate_set(models, prompts: list[dict], size: int, seeds: int, lora: str | None, scale: float = 1.0
                 ) -> np.ndarray:
    """Each prompt with ``seeds`` seeds (1000 + 17k on, as bundle_quality.py), with or without the LoRA."""
    from sfumato.core.image import ImageRequest, generate

    out = []
    for k, p in enumerate(prompts):
        req = ImageRequest(prompt=p["prompt"], seed=1000 + 17 * k, n=seeds, batch_size=seeds, width=size,
                           height=size, seamless="xy", fast="off", loras=(f"{lora}:{scale}",) if lora else ())
        out += [np.asarray(g.image) for g in generate(req, models)]
    return np.stack(out)


def adherence(judge, images: np.ndarray, prompts: list[dict], seeds: int) -> tuple[float, float]:
    families, colours = judge.predict(images)
    wanted = [p for p in prompts for _ in range(seeds)]
    return (float(np.mean([f == p["family"] for f, p in zip(families, wanted)])),
            float(np.mean([c == p["colour"] for c, p in zip(colours, wanted)])))


def picture(path: Path, refs: np.ndarray, before: np.ndarray, after: np.ndarray, columns: int, side: int) -> None:
    """References, then before, then after, ``columns`` wide, each tile ``side`` pixels; a 256-colour PNG."""
    rows = [refs[:columns], before[:columns], after[:columns]]
    sheet = Image.new("RGB", (columns * side + (columns - 1) * 4, 3 * side + 2 * 4), (255, 255, 255))
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            sheet.paste(Image.fromarray(im).resize((side, side), Image.Resampling.LANCZOS), (c * (side + 4),
                                                                                            r * (side + 4)))
    sheet.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main() -> None:
    from sfumato.core.bundle import embedded_dir, open_bundle
    from sfumato.core.loading import load_models
    from sfumato.core.quiet import quiet_libraries
    from sfumato.core.train import materials
    from sfumato.core.train.style import StyleTrainConfig, train_style

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)  # 1e-3: the same colour shift, more of the material lost
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=128, help="training crops, pixels (the bundle's training scale)")
    p.add_argument("--seeds", type=int, default=4, help="seeds per prompt (judged at 128²)")
    p.add_argument("--prompts", type=int, default=8, help="prompts, one per material family (16 at most)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1 keeps the timing steady on a shared CPU)")
    p.add_argument("--judge", default=None, help="judge weights (fitted and cached on first use)")
    p.add_argument("--picture", default="docs/style_before_after.png")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--scales", default="1.0", help="LoRA strengths measured after training, comma-separated (the "
                   "picture shows the first)")
    args = p.parse_args()
    quiet_libraries()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.seeds, args.prompts = 20, 1, 4
    prompts = [{**p, "prompt": f"{p['prompt']}, {TRIGGER} style"}  # the same prompts before and after
               for p in materials.prompt_set("train", 1, seed=11)[:args.prompts]]

    refs, _, captions = references(20, 256)
    held_out, plain, _ = references(8, 256, offset=20)
    with tempfile.TemporaryDirectory() as tmp:
        folder, bundle = Path(tmp) / "refs", Path(tmp) / "materials-style"
        folder.mkdir()
        for i, (im, caption) in enumerate(zip(refs, captions)):
            Image.fromarray(im).save(folder / f"{i:02d}.png")
            (folder / f"{i:02d}.txt").write_text(f"{caption}, {TRIGGER} style")  # a sidecar caption
        shutil.copytree(embedded_dir() / "materials", bundle)  # a user bundle of our own to write into
        cfg = StyleTrainConfig(folder=str(folder), name="tealochre", bundle=str(bundle), steps=args.steps,
                               rank=args.rank, lr=args.lr, batch=args.batch, crop=args.crop, resolution=256,
                               checkpoint_every=100, offset_noise=0.1)  # as the bundle was trained
        start = time.perf_counter()
        summary = train_style(cfg, Path(tmp) / "work", log=lambda m: print(m, flush=True))
        wall = time.perf_counter() - start
        losses = summary["losses"]
        print(f"trained {summary['steps']} steps in {wall / 60:.1f} min wall ({summary['seconds'] / 60:.1f} min in "
              f"steps), loss first 50 {np.mean(losses[:50]):.4f} → last 50 {np.mean(losses[-50:]):.4f}")

        models = load_models(open_bundle(bundle), torch.device("cpu"), torch.float32)
        from bundle_quality import load_judge

        judge = load_judge(args.judge)
        rows = {}
        scales = [float(v) for v in args.scales.split(",")]
        for label, lora, scale in (("before", None, 1.0), *((f"after {v:g}", summary["lora"], v) for v in scales)):
            t0 = time.perf_counter()
            big = generate_set(models, prompts, 256, 1, lora, scale)
            small = generate_set(models, prompts, 128, args.seeds, lora, scale)
            rows[label] = (big, adherence(judge, small, prompts, args.seeds))
            print(f"{label}: {len(big) + len(small)} images in {time.perf_counter() - t0:.0f} s", flush=True)

    print(f"\n{'images (vs the 20 references)':34} {'colour FD (Lab)':>15} {'texture L1':>10} {'material':>9} "
          f"{'colour':>7}")
    for label, images, judged in (("held-out references (floor)", held_out, None),
                                  ("procedural, unstyled", plain, None),
                                  ("generated, before (no LoRA)", *rows["before"]),
                                  *((f"generated, after (LoRA {v:g})", *rows[f"after {v:g}"]) for v in scales)):
        judged_text = f"{judged[0]:9.1%} {judged[1]:7.1%}" if judged else f"{'':9} {'':7}"
        print(f"{label:34} {colour_distance(images, refs):15.2f} {texture_distance(images, refs):10.3f} "
              f"{judged_text}")
    print(f"prompts: {len(prompts)} (one per family, the bundle's caption templates) × 1 seed at 256² for colour and "
          f"texture, × {args.seeds} seeds at 128² for the judge; training: {summary['images']} references at 256², "
          f"{args.steps} steps, rank {args.rank}, lr {args.lr}, batch {args.batch}, crops {args.crop}², "
          f"{summary['seconds'] / 60:.1f} min on {torch.get_num_threads()} CPU threads")
    picture(Path(args.picture), refs, rows["before"][0], rows[f"after {scales[0]:g}"][0], 6, 128)
    print(f"wrote {args.picture} ({Path(args.picture).stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
