"""How many sampling steps does the embedded bundle need? Judged quality and time per step count, one run.

    python benchmarks/steps.py                          # 8, 12, 16, 20, 25 steps against a 50-step reference
    python benchmarks/steps.py --steps 10,15,25 --scheduler dpmpp_2m_karras
    python benchmarks/steps.py --quick                  # a few prompts, for a smoke run
    python benchmarks/steps.py --gain                   # only: a default job now against the old defaults

Every step count generates the same prompts with the same seeds (``train`` and ``reworded`` prompt sets of
``bundle_quality.py``, judged at the bundle's training scale by the same material and colour judges), so the
rows differ only in the step count. ``vs ref`` is the mean absolute pixel difference (0-255) of each image to
the same prompt and seed at ``--reference`` steps: how far from converged an image still is. ``s / 256²``
is one 256×256 image at that step count (median of ``--repeat``), the time a CPU user waits.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from bundle_quality import load_judge, prompt_images  # noqa: E402  (this folder: run as a script)


def images_for(models, prompts: list[dict], seeds: int, size: int, steps: int, scheduler: str,
               fast: str) -> np.ndarray:
    """Every prompt's images, as ``bundle_quality.py`` makes them (same seeds)."""
    return np.concatenate([prompt_images(models, k, p["prompt"], seeds, size, steps, fast, scheduler)
                           for k, p in enumerate(prompts)])


def judged(judge, images: np.ndarray, prompts: list[dict], seeds: int) -> tuple[float, float]:
    fam, col = judge.predict(images)
    want = [p for p in prompts for _ in range(seeds)]
    return (float(np.mean([f == p["family"] for f, p in zip(fam, want)])),
            float(np.mean([c == p["colour"] for c, p in zip(col, want)])))


def gain(bundle_name: str, repeat: int) -> None:
    """What a job that names no step count gains from the bundle's ``default_steps`` and the fast path."""
    from sfumato.core.bundle import resolve
    from sfumato.core.image import ImageRequest, generate
    from sfumato.core.loading import load_models

    bundle = resolve(bundle_name)
    models = load_models(bundle, torch.device("cpu"), torch.float32)
    rows = {"25 steps, float32 (--fast off)": {"steps": 25, "fast": "off"},
            "25 steps, fast path": {"steps": 25, "fast": "auto"},
            f"the bundle's default ({bundle.default_steps} steps), fast path": {"fast": "auto"}}

    def run(settings: dict) -> float:
        start = time.perf_counter()
        generate(ImageRequest(prompt="red brick wall, running bond", seed=1, width=256, height=256, seamless="xy",
                              **settings), models)
        return time.perf_counter() - start

    for settings in rows.values():
        run(settings)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(repeat):
        for name, settings in rows.items():
            times[name].append(run(settings))
    base = statistics.median(next(iter(times.values())))
    print(f"bundle {bundle.name} · 256² · {torch.get_num_threads()} threads · median of {repeat}, interleaved")
    for name, t in times.items():
        print(f"  {name:48} {statistics.median(t):6.2f} s  {base / statistics.median(t):5.2f}×")


def main() -> None:
    from sfumato.core.bundle import resolve
    from sfumato.core.quiet import quiet_libraries
    from sfumato.core.image import ImageRequest, generate
    from sfumato.core.loading import load_models
    from sfumato.core.schedulers import names
    from sfumato.core.train import materials

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="materials")
    p.add_argument("--steps", default="8,12,16,20,25", help="comma-separated step counts")
    p.add_argument("--reference", type=int, default=50, help="step count of the converged reference")
    p.add_argument("--scheduler", default="bundle", choices=names())
    p.add_argument("--per-family", type=int, default=2, help="prompts per material family (16 families)")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--size", type=int, default=128, help="judged image size (the bundle's training scale)")
    p.add_argument("--sets", default="train,reworded")
    p.add_argument("--repeat", type=int, default=3, help="timed 256² images per step count")
    p.add_argument("--fast", default="auto", choices=["auto", "off"])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--gain", action="store_true", help="only time a default 256² job against the old defaults "
                   "(25 steps, float32) and 25 steps on the fast path, interleaved, median of --repeat")
    args = p.parse_args()
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.per_family, args.seeds, args.repeat = 1, 2, 1
    if args.gain:
        return gain(args.bundle, args.repeat)
    counts = sorted({int(s) for s in args.steps.split(",")} - {args.reference})
    judge = load_judge()
    bundle = resolve(args.bundle)
    models = load_models(bundle, torch.device("cpu"), torch.float32)
    sets = {style: materials.prompt_set(style, args.per_family, seed=11) for style in args.sets.split(",")}
    n_images = sum(len(v) for v in sets.values()) * args.seeds
    print(f"bundle {bundle.name} ({bundle.identity()}) · scheduler {args.scheduler} · fast {args.fast} · "
          f"{n_images} images per row at {args.size}² ({', '.join(sets)}) · {torch.get_num_threads()} threads")

    reference = {s: images_for(models, pr, args.seeds, args.size, args.reference, args.scheduler, args.fast)
                 for s, pr in sets.items()}
    rows = []
    for n in [*counts, args.reference]:
        scores, diffs = {}, []
        for style, prompts in sets.items():
            imgs = reference[style] if n == args.reference else \
                images_for(models, prompts, args.seeds, args.size, n, args.scheduler, args.fast)
            scores[style] = judged(judge, imgs, prompts, args.seeds)
            diffs.append(np.abs(imgs.astype(np.float32) - reference[style].astype(np.float32)).mean(axis=(1, 2, 3)))
        req = ImageRequest(prompt="red brick wall, running bond", seed=1, width=256, height=256, seamless="xy",
                           steps=n, scheduler=args.scheduler, fast=args.fast)
        generate(req, models)  # warm-up
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            generate(req, models)
            times.append(time.perf_counter() - start)
        d = np.concatenate(diffs)
        rows.append((n, scores, float(d.mean()), float(np.percentile(d, 90)), statistics.median(times)))
        print(f"  {n} steps done", flush=True)

    head = " | ".join(f"{s} material / colour" for s in sets)
    print(f"\n| steps | {head} | vs ref mean (p90) | s / 256² |")
    print("|---:|" + "---:|" * len(sets) + "---:|---:|")
    for n, scores, mean, p90, t in rows:
        cells = " | ".join(f"{m:.1%} / {c:.1%}" for m, c in scores.values())
        print(f"| {n}{' (ref)' if n == args.reference else ''} | {cells} | {mean:.1f} ({p90:.1f}) | {t:.2f} |")


if __name__ == "__main__":
    main()
