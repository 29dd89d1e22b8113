"""One Blender massing rendered three ways (brick, timber, concrete), made by a script (issue #19).

    python docs/examples/concept_gallery.py --bundle BUNDLE --out docs/concept_gallery.png

BUNDLE is a bundle (folder or name) with a depth ControlNet (``controlnet_depth``), e.g. a copy of the embedded
``materials`` bundle with the trainer's export added (``sfumato bundle add COPY FOLDER --as controlnet-depth``).

Why: an architect's first use of a depth ControlNet is a concept render of a massing modelled in Blender: the same
geometry in several materials, side by side. The steps, each a few lines below:

1. **Build** the massing through ``bpy``: a two-storey house with a gable roof and a lower one-storey wing with its
   own gable, its ridge across the main one, on a lawn; a camera three-quarters on, a little above eye level.
2. **Depth**: Blender's exact depth from that camera, rendered by the add-on's own code (``addon/passes.py``
   ``render_depth``: one Cycles sample, the Z pass through the compositor), saved as a ``.npy`` of distances, the
   file the add-on's depth mode hands the engine.
3. **Generate** three times through the engine's Python API (``sfumato.core.image``), one prompt per material,
   the same seed, so only the words change.
4. **Compose** the depth and the three results in one picture, each labelled.

Needs ``bpy`` (Blender as a Python module, or run inside Blender with the engine importable). Prompts use the words
the bundle was trained with (building captions: "red brick walls", "black slate gable roof"); ``--prompt`` replaces
them (repeat it for each picture).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
import tempfile
from pathlib import Path

import numpy as np

ADDON = Path(__file__).resolve().parents[2] / "addon"
PROMPTS = (  # (label, prompt)
    ("brick", "two-storey house, red brick walls, black slate gable roof, on a lawn"),
    ("timber", "two-storey house, brown timber walls, grey standing seam metal gable roof, on a lawn"),
    ("concrete", "two-storey house, grey board-formed concrete walls, black slate gable roof, on a lawn"),
)


# ---- 1. build --------------------------------------------------------------------------------------------------------
def gable_block(name: str, length: float, width: float, eaves: float, ridge: float, location, angle: float = 0.0):
    """A box ``length`` (x) by ``width`` (y) by ``eaves`` high with a gable roof rising ``ridge`` more, its ridge
    along the block's x axis; turned ``angle`` degrees about z and placed with its footprint's centre at
    ``location``. Metres, z up."""
    import bpy

    a, b = length / 2, width / 2
    verts = [(-a, -b, 0), (a, -b, 0), (a, b, 0), (-a, b, 0),  # footprint
             (-a, -b, eaves), (a, -b, eaves), (a, b, eaves), (-a, b, eaves),  # eaves
             (-a, 0, eaves + ridge), (a, 0, eaves + ridge)]  # ridge ends
    faces = [(0, 3, 2, 1), (0, 1, 5, 4), (1, 2, 6, 9, 5), (2, 3, 7, 6), (3, 0, 4, 8, 7),  # floor, walls, gables
             (4, 5, 9, 8), (6, 7, 8, 9)]  # the two roof slopes
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    obj.location = location
    obj.rotation_euler = (0.0, 0.0, math.radians(angle))
    bpy.context.scene.collection.objects.link(obj)
    return obj


def build_scene(size: int):
    """The massing, a lawn and the camera in an empty scene; returns the scene."""
    import bpy
    import mathutils

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_plane_add(size=60, location=(0, 0, 0))  # the lawn
    gable_block("House", 11.0, 7.0, 6.0, 3.0, (0.0, 0.0, 0.0))
    gable_block("Wing", 6.0, 5.0, 3.2, 2.2, (2.5, -6.0, 0.0), angle=90.0)  # lower, forward, its ridge across
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    camera.data.lens = 28
    camera.location = (-11.5, -18.5, 5.5)
    camera.rotation_euler = (mathutils.Vector((1.0, -2.0, 3.5)) - camera.location).to_track_quat('-Z', 'Y').to_euler()
    scene.render.resolution_x = scene.render.resolution_y = size
    return scene


# ---- 2. depth --------------------------------------------------------------------------------------------------------
def addon_passes():
    """The add-on's ``passes`` module, the add-on imported as a package the way Blender does (its own folder in this
    checkout; importing it does not start anything)."""
    if "sfumato_addon" not in sys.modules:
        spec = importlib.util.spec_from_file_location("sfumato_addon", ADDON / "__init__.py",
                                                      submodule_search_locations=[str(ADDON)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["sfumato_addon"] = module
        spec.loader.exec_module(module)
    from sfumato_addon import passes

    return passes


# ---- 3. generate -----------------------------------------------------------------------------------------------------
def generate_all(bundle: str, npy: Path, prompts, seed: int, size: int, steps: int | None, scale: float, threads: int):
    """One image per prompt, the same seed and depth: [PIL.Image]."""
    import torch

    from sfumato.core.bundle import resolve
    from sfumato.core.image import ImageRequest, generate
    from sfumato.core.loading import load_models

    torch.set_num_threads(threads)
    b = resolve(bundle)
    if "controlnet_depth" not in b.components:
        sys.exit(f"--bundle {bundle}: bundle {b.name} has no depth ControlNet (controlnet_depth); add one to a copy "
                 "of it: sfumato bundle add COPY FOLDER --as controlnet-depth")
    models = load_models(b, torch.device("cpu"), torch.float32, need_controlnet=True)
    images = []
    for label, prompt in prompts:
        req = ImageRequest(prompt=prompt, seed=seed, width=size, height=size, depth_image=str(npy),
                           control_scale=scale, **({"steps": steps} if steps else {}))
        images.append(generate(req, models)[0].image.convert("RGB"))
        print(f"{label}: {prompt}")
    return images


# ---- 4. compose ------------------------------------------------------------------------------------------------------
def compose(depth: np.ndarray, images, labels, out: Path) -> None:
    """depth | one column per prompt, a label under each."""
    from PIL import Image, ImageDraw

    size, strip = images[0].width, 18
    sheet = Image.new("RGB", (size * (1 + len(images)), size + strip), "white")
    sheet.paste(Image.fromarray((depth * 255).astype(np.uint8)).convert("RGB").resize((size, size)), (0, 0))
    draw = ImageDraw.Draw(sheet)
    for k, (image, label) in enumerate(zip([None, *images], ["Blender depth", *labels])):
        if image is not None:
            sheet.paste(image, (size * k, 0))
        draw.text((size * k + 6, size + 3), label, fill=(40, 40, 40))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, optimize=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="a bundle (folder or name) with controlnet_depth")
    p.add_argument("--out", required=True, help="the picture to write (.png)")
    p.add_argument("--prompt", action="append", help="replace the three prompts (repeat it; label = first word)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--size", type=int, default=256, help="picture side (the embedded bundle's default size)")
    p.add_argument("--steps", type=int, default=None, help="default: the bundle's")
    p.add_argument("--control-scale", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--depth-out", default=None, help="also keep Blender's depth (.npy of distances) here")
    args = p.parse_args()
    prompts = [(text.split()[0].strip(","), text) for text in args.prompt] if args.prompt else PROMPTS

    passes = addon_passes()  # 1-2: Blender's part, before the engine is loaded
    scene = build_scene(args.size)
    npy = Path(args.depth_out) if args.depth_out else Path(tempfile.mkdtemp(prefix="sfumato-gallery-")) / "depth.npy"
    summary = passes.render_depth(scene, args.size, args.size, npy)
    print(f"Blender depth: near {summary['near']:.1f} m, far {summary['far']:.1f} m, "
          f"{summary['coverage']:.0%} of the frame covered")

    images = generate_all(args.bundle, npy, prompts, args.seed, args.size, args.steps, args.control_scale,
                          args.threads)
    from sfumato.core.image import load_depth

    depth = load_depth(str(npy), args.size, args.size)[0, 0].numpy()  # as the engine saw it
    compose(depth, images, [label for label, _ in prompts], Path(args.out))
    print(f"wrote {args.out} ({Path(args.out).stat().st_size // 1000} KB)")


if __name__ == "__main__":
    main()
