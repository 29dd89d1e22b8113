"""Batch variations from a .blend's active camera, unattended.

    blender -b scene.blend --python docs/examples/variations.py -- \\
        --prompt "red brick facade, overcast" --prompt "white render facade, low sun" \\
        --seeds 8 --mode restyle --steps 20 --save

Runs on the embedded ``materials`` bundle as written. Every prompt is generated with every seed (0..7 here).
``--mode restyle`` (the default) re-imagines the camera's render (``--strength``), rendered once for the whole
batch with the scene's render engine; ``text`` ignores the scene; ``depth`` guides the images with Blender's
exact depth of the scene from the active camera. --mode depth needs a bundle with a depth ControlNet (add one
with `sfumato bundle add-controlnet`; the embedded materials bundle has one): with one that has none, the
script stops with that sentence before anything is rendered. The images become image datablocks named after
prompt and seed, each with its provenance as custom properties, and a contact sheet (one row per prompt, one
column per seed) is written beside them.

Needs the Sfumato add-on installed (Preferences > Get Extensions > Install from Disk, or headless.py --zip
beside this script); the script reads the saved preferences and enables it for this run when it is not
enabled. The engine, its device and extra bundle folder come from the add-on's preferences; ``--device`` and
``--bundle`` override them here. Files go to ``--out``, else to the add-on's output folder, else to a
``sfumato`` folder next to the .blend. ``--save`` saves the .blend with the new images. The exit status is 0
on success and 1 with a one-line reason otherwise.
"""

from __future__ import annotations

import argparse
import sys

import bpy
import addon_utils  # after bpy: with Blender as a Python module, bpy puts it on the path


def parse_args() -> argparse.Namespace:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    p = argparse.ArgumentParser(prog="blender -b FILE.blend --python variations.py --",
                                description="Sfumato variations from the active camera.")
    p.add_argument("--prompt", action="append", required=True, help="repeat for several prompts")
    p.add_argument("--seeds", type=int, default=4, help="how many seeds per prompt (default 4)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--mode", choices=("text", "depth", "restyle"), default="restyle",
                   help="restyle the camera's render (default), text only, or depth-guided (needs a bundle with a "
                   "depth ControlNet)")
    p.add_argument("--steps", type=int, help="denoising steps (default: the scene's panel setting)")
    p.add_argument("--size", help="WIDTHxHEIGHT, multiples of 8 (default: the panel's)")
    p.add_argument("--strength", type=float, help="restyle: share of the render re-imagined, (0, 1]")
    p.add_argument("--bundle", help="model bundle name or folder (default: the add-on's default bundle)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="the engine's device for this run")
    p.add_argument("--out", help="folder for the images and the contact sheet")
    p.add_argument("--save", action="store_true", help="save the .blend with the new images")
    return p.parse_args(argv)


def enable_sfumato():
    """The add-on's scripting API; enables the installed add-on for this run when needed (headless.py explains
    the steps)."""
    bpy.ops.wm.read_userpref()  # blender -b has read them already; the bpy module starts on factory preferences
    try:
        import sfumato_api
        return sfumato_api
    except ImportError:
        pass
    for module in addon_utils.modules(refresh=True):
        if module.__name__.rpartition(".")[2] == "sfumato" and module.__name__.startswith("bl_ext."):
            addon_utils.enable(module.__name__, default_set=True)
            break
    try:
        import sfumato_api
    except ImportError:
        raise SystemExit("sfumato: the Sfumato add-on is not installed in this Blender") from None
    return sfumato_api


def main() -> int:
    args = parse_args()
    api = enable_sfumato()
    scene = bpy.context.scene
    changes = {}
    if args.steps:
        changes["steps"] = args.steps
    if args.size:
        width, _, height = args.size.lower().partition("x")
        changes.update(width=int(width), height=int(height or width))
    if args.strength is not None:
        changes["strength"] = args.strength
    if args.bundle:
        changes["bundle"] = args.bundle
    if args.device:
        bpy.context.preferences.addons[api.__package__].preferences.device = args.device
    if args.mode == "depth":
        try:
            caps = api.capabilities(args.bundle)
        except api.BadSetting:  # a bundle given as a folder: the engine itself says whether it does depth
            caps = {"depth": True}
        except api.EngineError as exc:
            print(f"sfumato: {exc}", file=sys.stderr)
            return 1
        if not caps["depth"]:
            print(f"sfumato: --mode depth needs a bundle with a depth ControlNet (add one with `sfumato bundle "
                  f"add-controlnet`; {caps['name']!r} has none): use --mode restyle or text, or --bundle with one "
                  "that has", file=sys.stderr)
            return 1
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    progress = {"done": 0}

    def on_event(state, event):
        if event.get("event") in ("result", "job"):  # an engine job's images, or a batch job's
            progress["done"] += len([f for f in event.get("files") or [] if str(f).endswith(".png")])
            print(f"sfumato: {progress['done']}/{len(args.prompt) * args.seeds} images", flush=True)

    try:
        out = api.variations(prompts=args.prompt, seeds=seeds, mode="image", image_mode=args.mode, scene=scene,
                             folder=args.out, on_event=on_event, **changes)
    except (api.BadSetting, api.SceneProblem, api.EngineError) as exc:
        print(f"sfumato: {exc}", file=sys.stderr)
        return 1
    for image, path in zip(out.images, out.files):
        print(f"sfumato: {image.name!r} -> {path}")
    print(f"sfumato: contact sheet {out.sheet_file}")
    if args.save:
        bpy.ops.wm.save_mainfile()
        print(f"sfumato: saved {bpy.data.filepath}")
    return 0


if __name__ == "__main__":
    code = main()
    if code:
        sys.exit(code)
