"""PBR maps, measured: the map network against the free-tool baseline on held-out procedural ground truth.

    python benchmarks/maps.py [--tiles 200] [--size 128] [--bundle PATH] [--picture docs/maps_example.png]

Tiles: seeds from ``maps_train.HELD_OUT + 2_000_000`` up (training draws below ``HELD_OUT``), the family
cycling through all 16 (so about 12 tiles each), the colour drawn from the seed. Both predictors run in this
process on the same tiles:

* normal: mean angular error in degrees between the predicted normal (decoded from its uint8 map) and the
  normal of the true height (``surfaces.surface_normals``); "flat" is the error of (0, 0, 1) everywhere;
* roughness: mean absolute error (0..1); the baseline is 1 - normalised luminance, and "const" the training
  set's mean roughness everywhere (the better of the two naive answers);
* relief: mean absolute error of height after removing each map's mean (the baseline's height is
  luminance stretched to 0..1, so only its shape is comparable).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from sfumato.core.maps import baseline_maps, decode_normals, load_map_net, predict_maps
from sfumato.core.train.maps_train import HELD_OUT
from sfumato.core.train.materials import FAMILIES
from sfumato.core.train.surfaces import sample_surface, surface_normals

MEAN_ROUGHNESS = 0.61  # mean ground-truth roughness of training seeds 500-595


def angular(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((a * b).sum(-1), -1, 1))).mean())


def relief(h: np.ndarray, gt: np.ndarray) -> float:
    return float(np.abs((h - h.mean()) - (gt - gt.mean())).mean())


def score(tiles: int, size: int, net) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {f: [] for f in FAMILIES}
    for k in range(tiles):
        family = list(FAMILIES)[k % len(FAMILIES)]
        rgb, h_gt, r_gt, _ = sample_surface(HELD_OUT + 2_000_000 + k, size, family)
        n_gt = surface_normals(h_gt)
        ours, base = predict_maps(rgb, net), baseline_maps(rgb)
        flat = np.zeros_like(n_gt)
        flat[..., 2] = 1
        rows[family].append({
            "n_net": angular(decode_normals(ours["normal"]), n_gt),
            "n_base": angular(decode_normals(base["normal"]), n_gt), "n_flat": angular(flat, n_gt),
            "r_net": float(np.abs(ours["roughness"] - r_gt).mean()),
            "r_base": float(np.abs(base["roughness"] - r_gt).mean()),
            "r_const": float(np.abs(MEAN_ROUGHNESS - r_gt).mean()),
            "h_net": relief(ours["height"], h_gt), "h_base": relief(base["height"], h_gt)})
    return rows


def table(rows: dict[str, list[dict]]) -> str:
    keys = ["n_net", "n_base", "n_flat", "r_net", "r_base", "r_const", "h_net", "h_base"]
    lines = ["| family | tiles | normal ° net | normal ° baseline | net vs baseline | normal ° flat | "
             "roughness MAE net | baseline (1 - lum) | const | relief MAE net | baseline |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def line(name: str, items: list[dict]) -> str:
        m = {k: np.mean([r[k] for r in items]) for k in keys}
        change = 100 * (m["n_net"] / m["n_base"] - 1)
        return (f"| {name} | {len(items)} | {m['n_net']:.2f} | {m['n_base']:.2f} | {change:+.0f}% | "
                f"{m['n_flat']:.2f} | {m['r_net']:.3f} | {m['r_base']:.3f} | {m['r_const']:.3f} | "
                f"{m['h_net']:.3f} | {m['h_base']:.3f} |")

    for family, items in rows.items():
        lines.append(line(family, items))
    lines.append(line("**all**", [r for items in rows.values() for r in items]))
    return "\n".join(lines)


PICTURE_FAMILIES = ("running_bond_brick", "hex_tiles", "gravel", "standing_seam_metal")


def picture(path: str, net) -> None:
    """One row per family, held-out tiles: colour | predicted normal | predicted roughness | true normal."""
    from PIL import Image, ImageDraw

    from sfumato.core.maps import encode_normals

    rows = []
    for k, family in enumerate(PICTURE_FAMILIES):
        rgb, h, _, _ = sample_surface(HELD_OUT + 4_000_000 + k, 128, family)
        ours = predict_maps(rgb, net)
        grey = np.repeat(np.rint(ours["roughness"] * 255).astype(np.uint8)[..., None], 3, -1)
        rows.append(np.concatenate([rgb, ours["normal"], grey, encode_normals(surface_normals(h))], 1))
    img = Image.new("RGB", (4 * 128, 16 + 128 * len(rows)), "white")
    img.paste(Image.fromarray(np.concatenate(rows, 0)), (0, 16))
    draw = ImageDraw.Draw(img)
    for i, text in enumerate(["colour", "predicted normal", "predicted roughness", "true normal"]):
        draw.text((4 + 128 * i, 2), text, fill="black")
    img.save(path, optimize=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=200)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--bundle", default=None, help="bundle holding maps/ (default: the embedded materials)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--picture", default=None, help="also write the example picture here (PNG)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    net = load_map_net(args.bundle)
    if args.picture:
        picture(args.picture, net)
    t0 = time.time()
    rows = score(args.tiles, args.size, net)
    print(table(rows))
    rgb = sample_surface(HELD_OUT + 3_000_000, 256)[0]
    t1 = time.time()
    predict_maps(rgb, net)
    print(f"\n{args.tiles} tiles at {args.size} px in {t1 - t0:.0f} s; predict_maps at 256 px: "
          f"{time.time() - t1:.2f} s ({args.threads} thread)")


if __name__ == "__main__":
    main()
