"""Quality of the embedded materials bundle: does a prompt give the material and colour it names?

    python benchmarks/bundle_quality.py                  # 48 prompts × 4 seeds, both prompt sets
    python benchmarks/bundle_quality.py --quick          # a few prompts, for a smoke run
    python benchmarks/bundle_quality.py --fast off       # the float32 path (default auto: bfloat16 U-Net
                                                         # on a CPU that does bfloat16 natively)

For each prompt set — ``train`` (the caption templates the bundle was trained with), ``reworded`` (sentence
templates never used in training, with the training words) and ``paraphrase`` (held-out templates *and*
synonyms the bundle never saw, e.g. "crimson", "timeworn") — every prompt is generated with several seeds, and
each image is judged by ``sfumato.core.train.judge``: a material CNN and a colour classifier fitted
only on held-out procedural samples, never on generated images. The judges' own accuracy on fresh
procedural samples is printed first, so a weak judge is not mistaken for a weak bundle. Two judges fitted
from different seeds disagree by a few points on generated images, so ``--judges 3`` (the default) fits three
and every score is their mean; a change against ``--baseline`` is printed with its range over the judges, and
only a change whose whole range clears a threshold is a change. Also timed: one 256×256 texture at the
default steps.
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import numpy as np
import torch



def prompt_images(models, k: int, prompt: str, seeds: int, size: int, steps: int, fast: str = "auto",
                  scheduler: str | None = None) -> np.ndarray:
    """The images (seeds, size, size, 3) of prompt number ``k`` of a set: seeds 1000 + 17k onwards, tileable;
    ``scheduler`` None: the default one."""
    from sfumato.core.image import ImageRequest, generate

    request = ImageRequest(prompt=prompt, seed=1000 + 17 * k, n=seeds, batch_size=seeds, steps=steps, width=size,
                           height=size, seamless="xy", fast=fast, **({"scheduler": scheduler} if scheduler else {}))
    images = generate(request, models)
    return np.stack([np.asarray(g.image) for g in images])


def load_judge(path: str | None = None, seed: int = 0):
    """The material and colour judges fitted from ``seed`` on held-out procedural samples, cached on first use
    (a fit takes a few minutes on one thread and is the same file every time on a machine)."""
    from sfumato.core.bundle import user_dir
    from sfumato.core.train import judge as judges
    from sfumato.core.train import materials

    path = Path(path) if path else user_dir().parent / "judges" / f"{materials.DATA_VERSION}-fit1.safetensors"
    if seed:
        path = path.with_name(f"{path.stem}-seed{seed}{path.suffix}")
    return judges.load_or_fit(path, judges.JudgeConfig(seed=seed), log=lambda m: None)


def evaluate(models, judges: list, prompts: list[dict], seeds: int, size: int, steps: int, log=print,
             fast: str = "auto") -> list[dict]:
    """Each judge's verdict on the same images: one dict per judge (material, colour, images, wrong)."""
    families = [[] for _ in judges]
    colours = [[] for _ in judges]
    wrong = [collections.Counter() for _ in judges]
    for k, p in enumerate(prompts):
        images = prompt_images(models, k, p["prompt"], seeds, size, steps, fast)
        for j, judge in enumerate(judges):
            fam, col = judge.predict(images)
            families[j] += [f == p["family"] for f in fam]
            colours[j] += [c == p["colour"] for c in col]
            for f, c in zip(fam, col):
                if f != p["family"]:
                    wrong[j][f"{p['family']} → {f}"] += 1
                if c != p["colour"]:
                    wrong[j][f"{p['colour']} → {c}"] += 1
        if (k + 1) % 8 == 0:
            log(f"  {k + 1}/{len(prompts)} prompts: material {np.mean(families[0]):.0%}, colour "
                f"{np.mean(colours[0]):.0%} (judge 0)")
    return [{"material": float(np.mean(f)), "colour": float(np.mean(c)), "images": len(f), "wrong": w.most_common(8)}
            for f, c, w in zip(families, colours, wrong)]


def _spread(values: list[float]) -> str:
    """Mean of per-judge values in points, with their range when there is more than one judge."""
    mean = 100 * float(np.mean(values))
    if len(values) == 1:
        return f"{mean:+.1f}"
    return f"{mean:+.1f} [{100 * min(values):+.1f}, {100 * max(values):+.1f}]"


def main() -> None:
    from sfumato.core.bundle import resolve
    from sfumato.core.quiet import quiet_libraries
    from sfumato.core.image import ImageRequest, generate
    from sfumato.core.loading import load_models
    from sfumato.core.train import judge as judges
    from sfumato.core.train import materials

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default="materials")
    p.add_argument("--baseline", default=None, help="a second bundle judged the same way in the same run (points "
                   "of change printed beside)")
    p.add_argument("--per-family", type=int, default=3, help="prompts per material family (16 families)")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--size", type=int, default=128, help="judged image size (the bundle's training scale)")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--judge", default=None, help="judge weights (fitted and cached here on first use)")
    p.add_argument("--judges", type=int, default=3, help="judges fitted from seeds 0.. (each judges the same "
                   "images; scores are their mean, changes their mean and range, since two fits disagree by points)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--fast", default="auto", choices=["auto", "off"], help="the fast path (see core/fast.py)")
    p.add_argument("--sets", default="train,reworded,paraphrase",
                   help="prompt sets: train (training templates), reworded (held-out templates, training words), "
                   "paraphrase (held-out templates and held-out synonyms)")
    args = p.parse_args()
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.per_family, args.seeds = 1, 2
    if args.judges < 1:
        p.error(f"--judges {args.judges}: at least 1")
    if args.baseline and resolve(args.baseline).path == resolve(args.bundle).path:
        p.error(f"--baseline {args.baseline!r} is the bundle being judged ({args.bundle!r}): name another bundle")
    judge_list = [load_judge(args.judge, seed) for seed in range(args.judges)]
    own = [judges.self_check(j) for j in judge_list]
    judged = {}
    for name in [args.bundle, *([args.baseline] if args.baseline else [])]:
        bundle = resolve(name)
        models = load_models(bundle, torch.device("cpu"), torch.float32)
        from sfumato.core.denoiser import Denoiser

        precision = "bfloat16 U-Net" if Denoiser(models, fast=args.fast).cpu_bf16 else "float32"
        print(f"bundle {bundle.name} ({bundle.identity()}) · judged at {args.size}² · {args.steps} steps · seamless "
              f"xy · fast {args.fast} ({precision})")
        print("judges on fresh procedural samples: " + "; ".join(
            f"seed {k}: material {m:.1%}, colour {c:.1%}" for k, (m, c) in enumerate(own)))
        rows = []
        for style in args.sets.split(","):
            prompts = materials.prompt_set(style, args.per_family, seed=11)
            print(f"{style}: {len(prompts)} prompts × {args.seeds} seeds, e.g. {prompts[0]['prompt']!r}")
            rows.append((style, evaluate(models, judge_list, prompts, args.seeds, args.size, args.steps,
                                         fast=args.fast)))
        judged[f"{bundle.name} ({bundle.identity()})"] = rows

    chance_material = 1 / len(materials.FAMILIES)
    chance_colour = float(np.mean([1 / len(s.colours) for s in materials.FAMILIES.values()]))
    for label, rows in judged.items():
        print(f"\n{label} (mean of {args.judges} judges; each judge's material score in brackets)")
        print(f"{'prompt set':12} {'images':>6} {'material':>9} {'colour':>7}")
        for style, per_judge in rows:
            m = [r["material"] for r in per_judge]
            c = [r["colour"] for r in per_judge]
            print(f"{style:12} {per_judge[0]['images']:6d} {np.mean(m):9.1%} {np.mean(c):7.1%}   ["
                  + ", ".join(f"{x:.1%}" for x in m) + "]")
        print(f"{'chance':12} {'':6} {chance_material:9.1%} {chance_colour:7.1%}   (colour: uniform over each "
              "family's colours)")
        for style, per_judge in rows:
            print(f"most frequent mistakes ({style}, judge 0): " + "; ".join(
                f"{k} ×{v}" for k, v in per_judge[0]["wrong"]))
    if len(judged) == 2:
        (a, rows_a), (b, rows_b) = judged.items()
        print(f"\n{'prompt set':12} {'material':>9} {'baseline':>9} {'change [range over judges]':>27} {'colour':>7} "
              f"{'baseline':>9} {'change [range]':>22}   ({a} against {b})")
        for (style, r), (_, q) in zip(rows_a, rows_b):
            dm = [x["material"] - y["material"] for x, y in zip(r, q)]
            dc = [x["colour"] - y["colour"] for x, y in zip(r, q)]
            print(f"{style:12} {np.mean([x['material'] for x in r]):9.1%} {np.mean([y['material'] for y in q]):9.1%} "
                  f"{_spread(dm):>27} {np.mean([x['colour'] for x in r]):7.1%} "
                  f"{np.mean([y['colour'] for y in q]):9.1%} {_spread(dc):>22}")

    req = ImageRequest(prompt="red brick wall, running bond", seed=1, width=256, height=256, seamless="xy",
                       fast=args.fast)
    generate(req, models)  # warm-up
    start = time.perf_counter()
    generate(req, models)
    print(f"\none 256×256 texture, {models.bundle.default_steps} steps (the bundle's default, {req.scheduler}), "
          f"guidance {req.guidance}: "
          f"{time.perf_counter() - start:.1f} s on the CPU ({torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
