"""A contact sheet of the embedded bundle: one generated texture per material family, with its prompt.

    python benchmarks/contact_sheet.py -o docs/materials_contact_sheet.png [--size 256 --seed 1]

Top row of each cell: the generated texture (seamless); the caption under it is the prompt. A second
sheet with ``--procedural`` shows the training data generator's samples of the same families instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


PROMPTS = {
    "running_bond_brick": "red brick wall, running bond", "stack_bond_brick": "grey bricks in stack bond",
    "herringbone_parquet": "oak herringbone parquet floor", "wood_planks": "wide brown wood planks",
    "board_formed_concrete": "board-formed concrete wall", "polished_concrete": "polished grey concrete floor",
    "marble": "white marble", "slate": "black slate", "square_tiles": "blue square ceramic tiles",
    "hex_tiles": "white hexagonal tiles", "roof_shingles": "red roof shingles",
    "corrugated_metal": "grey corrugated metal", "standing_seam_metal": "green standing seam metal roof",
    "stucco": "beige stucco", "gravel": "grey gravel", "grass": "green grass",
}


def main() -> None:
    from sfumato.core.bundle import resolve
    from sfumato.core.quiet import quiet_libraries
    from sfumato.core.image import ImageRequest, generate
    from sfumato.core.loading import load_models
    from sfumato.core.train import materials

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", default="docs/materials_contact_sheet.png")
    p.add_argument("--bundle", default="materials")
    p.add_argument("--size", type=int, default=192)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--procedural", action="store_true", help="show training data instead")
    args = p.parse_args()
    quiet_libraries()
    assert set(PROMPTS) == set(materials.FAMILIES), "one prompt per family"
    cells = []
    if args.procedural:
        for k, family in enumerate(PROMPTS):
            img, lab = materials.sample(args.seed * 100 + k, args.size, family)
            cells.append((Image.fromarray(img), f"{lab['colour']} {family.replace('_', ' ')}"))
    else:
        import torch

        models = load_models(resolve(args.bundle), torch.device("cpu"), torch.float32)
        for k, (family, prompt) in enumerate(PROMPTS.items()):
            req = ImageRequest(prompt=prompt, seed=args.seed + k, steps=args.steps, width=args.size,
                               height=args.size, seamless="xy")
            cells.append((generate(req, models)[0].image, prompt))
            print(f"{k + 1}/{len(PROMPTS)} {prompt}", flush=True)
    cols, label_h, pad = 4, 18, 4
    rows = (len(cells) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (args.size + pad) + pad, rows * (args.size + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (img, text) in enumerate(cells):
        x, y = pad + (i % cols) * (args.size + pad), pad + (i // cols) * (args.size + label_h + pad)
        sheet.paste(img, (x, y))
        draw.text((x + 2, y + args.size + 3), text[: args.size // 6], fill=(20, 20, 20))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.output, optimize=True)
    print(f"wrote {args.output} ({np.prod(sheet.size) / 1e6:.1f} MP)")


if __name__ == "__main__":
    main()
