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
procedural samples is printed first, so a weak judge is not mistaken for a weak bundle. Also timed:
one 256×256 texture at the default steps.
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


def load_judge(path: str | None = None):
    """The material and colour judges, fitted on held-out procedural samples and cached on first use."""
    from sfumato.core.bundle import user_dir
    from sfumato.core.train import judge as judges
    from sfumato.core.train import materials

    path = Path(path) if path else user_dir().parent / "judges" / f"{materials.DATA_VERSION}.safetensors"
    return judges.load_or_fit(path, judges.JudgeConfig(), log=lambda m: None)


def evaluate(models, judge, prompts: list[dict], seeds: int, size: int, steps: int, log=print,
             fast: str = "auto") -> dict:
    families, colours, wrong = [], [], collections.Counter()
    for k, p in enumerate(prompts):
        fam, col = judge.predict(prompt_images(models, k, p["prompt"], seeds, size, steps, fast))
        families += [f == p["family"] for f in fam]
        colours += [c == p["colour"] for c in col]
        for f, c in zip(fam, col):
            if f != p["family"]:
                wrong[f"{p['family']} → {f}"] += 1
            if c != p["colour"]:
                wrong[f"{p['colour']} → {c}"] += 1
        if (k + 1) % 8 == 0:
            log(f"  {k + 1}/{len(prompts)} prompts: material {np.mean(families):.0%}, colour {np.mean(colours):.0%}")
    return {"material": float(np.mean(families)), "colour": float(np.mean(colours)), "images": len(families),
            "wrong": wrong.most_common(8)}


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
    judge = load_judge(args.judge)
    own_material, own_colour = judges.self_check(judge)
    judged = {}
    for name in [args.bundle, *([args.baseline] if args.baseline else [])]:
        bundle = resolve(name)
        models = load_models(bundle, torch.device("cpu"), torch.float32)
        from sfumato.core.denoiser import Denoiser

        precision = "bfloat16 U-Net" if Denoiser(models, fast=args.fast).cpu_bf16 else "float32"
        print(f"bundle {bundle.name} ({bundle.identity()}) · judged at {args.size}² · {args.steps} steps · seamless "
              f"xy · fast {args.fast} ({precision})")
        print(f"judges on fresh procedural samples: material {own_material:.1%}, colour {own_colour:.1%}")
        rows = []
        for style in args.sets.split(","):
            prompts = materials.prompt_set(style, args.per_family, seed=11)
            print(f"{style}: {len(prompts)} prompts × {args.seeds} seeds, e.g. {prompts[0]['prompt']!r}")
            rows.append((style, evaluate(models, judge, prompts, args.seeds, args.size, args.steps, fast=args.fast)))
        judged[f"{bundle.name} ({bundle.identity()})"] = rows

    chance_material = 1 / len(materials.FAMILIES)
    chance_colour = float(np.mean([1 / len(s.colours) for s in materials.FAMILIES.values()]))
    for label, rows in judged.items():
        print(f"\n{label}\n{'prompt set':12} {'images':>6} {'material':>9} {'colour':>7}")
        for style, r in rows:
            print(f"{style:12} {r['images']:6d} {r['material']:9.1%} {r['colour']:7.1%}")
        print(f"{'chance':12} {'':6} {chance_material:9.1%} {chance_colour:7.1%}   (colour: uniform over each "
              "family's colours)")
        for style, r in rows:
            print(f"most frequent mistakes ({style}): " + "; ".join(f"{k} ×{v}" for k, v in r["wrong"]))
    if len(judged) == 2:
        (a, rows_a), (b, rows_b) = judged.items()
        print(f"\n{'prompt set':12} {'material':>9} {'baseline':>9} {'change':>7} {'colour':>7} {'baseline':>9} "
              f"{'change':>7}   ({a} against {b})")
        for (style, r), (_, q) in zip(rows_a, rows_b):
            print(f"{style:12} {r['material']:9.1%} {q['material']:9.1%} {100 * (r['material'] - q['material']):+6.1f} "
                  f"{r['colour']:7.1%} {q['colour']:9.1%} {100 * (r['colour'] - q['colour']):+6.1f}")

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
