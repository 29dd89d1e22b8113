"""Material slots (issue 16): the five-slot house end to end, and whether each slot gets the material it names.

    python benchmarks/slots.py                 # 4 seeds; pictures into docs/ with --pictures
    python benchmarks/slots.py --quick         # 2 seeds, fewer steps: a smoke run

Measured in one process on the embedded bundle:

* time: ``sfumato texture`` in material mode on the five-slot house (``threed/demo_house.py``) at 256² tiles, the
  bundle's default steps, maps on, from the job's start to its files (models already loaded, as in the worker);
* adherence: each slot's tile judged by the bundle's material and colour judges (``core/train/judge.py``, fitted
  only on held-out procedural samples) against the slot's own prompt, at the bundle's native 128²; the baseline is
  today's one prompt per object: one tile from all five slot prompts joined, judged against each slot;
* PBR maps are measured by ``benchmarks/maps.py``.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

# slot -> (its prompt, the family and colour the judge should see)
TABLE = {
    "Brick facade": ("red brick wall, running bond", "running_bond_brick", "red"),
    "Roof_tiles.001": ("dark grey roof shingles", "roof_shingles", "grey"),
    "Window frames": ("black standing seam metal", "standing_seam_metal", "black"),
    "Concrete plinth": ("grey board-formed concrete", "board_formed_concrete", "grey"),
    "Lawn": ("green grass", "grass", "green"),
}


def _context():
    from sfumato.core.jobs import JobContext
    from sfumato.core.loading import ModelCache

    return JobContext("bench", ModelCache(), "cpu", "fp32", threading.Event(), lambda *a, **k: None, preview_every=0)


def time_house(folder: Path, steps: int | None, size: int) -> tuple[float, dict]:
    from sfumato.kinds import run_job
    from sfumato.threed.demo_house import write_house

    house = write_house(folder / "house.glb")
    ctx = _context()
    slots = [f"{name}={prompt}" for name, (prompt, _, _) in TABLE.items()]
    params = {"mesh": str(house), "prompt": "", "mode": "material", "resolution": size, "seed": 1, "slots": slots,
              **({"steps": steps} if steps else {})}
    run_job("texture", {**params, "resolution": 64, "steps": 2}, folder / "warm.glb", ctx)  # models loaded once
    start = time.perf_counter()
    result = run_job("texture", params, folder / "house_slots.glb", ctx)
    return time.perf_counter() - start, result


def adherence(models, judge, seeds: int, steps: int, size: int) -> dict[str, dict[str, float]]:
    from bundle_quality import prompt_images

    joined = ", ".join(prompt for prompt, _, _ in TABLE.values())
    per_slot = {"material": [], "colour": []}
    one_prompt = {"material": [], "colour": []}
    rows = {}
    one = judge.predict(prompt_images(models, 99, joined, seeds, size, steps))
    for k, (name, (prompt, family, colour)) in enumerate(TABLE.items()):
        fam, col = judge.predict(prompt_images(models, k, prompt, seeds, size, steps))
        rows[name] = {"material": np.mean([f == family for f in fam]), "colour": np.mean([c == colour for c in col]),
                      "one material": np.mean([f == family for f in one[0]]),
                      "one colour": np.mean([c == colour for c in one[1]])}
        per_slot["material"] += [f == family for f in fam]
        per_slot["colour"] += [c == colour for c in col]
        one_prompt["material"] += [f == family for f in one[0]]
        one_prompt["colour"] += [c == colour for c in one[1]]
    rows["all slots"] = {"material": np.mean(per_slot["material"]), "colour": np.mean(per_slot["colour"]),
                         "one material": np.mean(one_prompt["material"]), "one colour": np.mean(one_prompt["colour"])}
    return rows


def pictures(result: dict, folder: Path, out: Path, steps: int | None, size: int) -> None:
    """Before (one prompt over the object, as before this issue) and after (a tile per slot), rendered."""
    from PIL import Image

    from sfumato.kinds import run_job
    from sfumato.threed.demo_house import write_house
    from sfumato.threed.preview import render_glb

    plain = write_house(folder / "plain.glb", names=[None] * len(TABLE))  # no slots: one prompt for everything
    joined = ", ".join(prompt for prompt, _, _ in TABLE.values())
    before = run_job("texture", {"mesh": str(plain), "prompt": joined, "mode": "material", "resolution": size,
                                 "seed": 1, **({"steps": steps} if steps else {})}, folder / "before.glb", _context())
    views = [render_glb(path, 320, azimuth=30, elevation=16) for path in (before["glb"], result["glb"])]
    tiles = [Image.open(s["texture"]).convert("RGB").resize((128, 128)) for s in result["slots"]]
    maps = [Image.open(result["slots"][0][k]).convert("RGB").resize((128, 128))
            for k in ("normal", "roughness", "height") if k in result["slots"][0]]
    sheet = Image.new("RGB", (640, 320 + 128 + 128), (255, 255, 255))
    for i, view in enumerate(views):
        sheet.paste(view, (320 * i, 0))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (128 * i, 320))
    for i, m in enumerate([tiles[0], *maps]):
        sheet.paste(m, (128 * i, 448))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)
    print(f"picture: {out} (top: one prompt over the object | a tile per slot; middle: the five tiles; bottom: the "
          f"brick tile and its normal, roughness and height maps)")


def main() -> None:
    import tempfile

    from bundle_quality import load_judge

    from sfumato.core.bundle import resolve
    from sfumato.core.loading import load_models
    from sfumato.core.quiet import quiet_libraries
    from sfumato.core.train import judge as judges

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--steps", type=int, default=None, help="default: the bundle's")
    p.add_argument("--size", type=int, default=256, help="tile size of the timed run")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--pictures", default=None, help="write the before/after picture here (a .png in docs/)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.seeds, args.steps = 2, args.steps or 8
    folder = Path(tempfile.mkdtemp(prefix="sfumato-slots-"))
    seconds, result = time_house(folder, args.steps, args.size)
    meta = result["metadata"]
    print(f"five-slot house, material mode, {args.size}² tiles, {meta['steps']} steps, maps "
          f"{'on' if meta.get('maps') else 'off'}: {seconds:.1f} s on the CPU ({torch.get_num_threads()} threads); "
          f"target 120 s")
    judge = load_judge(None)
    own_material, own_colour = judges.self_check(judge)
    models = load_models(resolve("materials"), torch.device("cpu"), torch.float32)
    steps = args.steps or models.bundle.default_steps
    rows = adherence(models, judge, args.seeds, steps, 128)
    print(f"\njudges on fresh procedural samples: material {own_material:.1%}, colour {own_colour:.1%}")
    print(f"adherence at 128², {steps} steps, {args.seeds} seeds per slot (per slot: its own prompt; one prompt: "
          "all five joined, as one object got before)")
    print(f"{'slot':16} {'material':>9} {'colour':>7} {'one-prompt material':>20} {'one-prompt colour':>18}")
    for name, r in rows.items():
        print(f"{name:16} {r['material']:9.0%} {r['colour']:7.0%} {r['one material']:20.0%} {r['one colour']:18.0%}")
    print("targets: at least 80% material and 85% colour over all slots")
    if args.pictures:
        pictures(result, folder, Path(args.pictures), args.steps, args.size)


if __name__ == "__main__":
    main()
