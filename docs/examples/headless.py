"""Sfumato headless, from nothing to a saved .blend: install the add-on, enable it, set the engine, run a job.

    blender -b --python docs/examples/headless.py -- --zip dist/sfumato-0.1.0.zip \\
        --engine-python ENV/bin/python --save-preferences --out scene.blend
    python docs/examples/headless.py --zip dist/sfumato-0.1.0.zip --out scene.blend   # Blender as a module (bpy)

Runs on the embedded ``materials`` bundle as written. The steps, each a few lines below, to copy into a script:

1. ``bpy.ops.wm.read_userpref()``: the saved preferences (which add-ons are enabled, the engine's Python).
   ``blender -b`` has read them at start, so the line changes nothing there; the ``bpy`` module starts on
   factory preferences and never reads them itself, so without it the add-on is not enabled, ``import
   sfumato_api`` fails and the Engine Python set earlier is not there.
2. Install the zip built by ``sfumato addon build`` (``--zip``; once per Blender, again after an update):
   ``bpy.ops.extensions.package_install_files(filepath=ZIP, repo="user_default", enable_on_install=True)``.
   Otherwise enable the installed add-on: ``addon_utils.enable("bl_ext.user_default.sfumato",
   default_set=True)``. Either way ``import sfumato_api`` works from the next line on.
3. Set the engine in the add-on's preferences, ``sfumato_api.preferences()``: ``engine_python`` (the python of
   the environment where sfumato is installed; empty = auto-detect, or ``$SFUMATO_PYTHON``), ``device``,
   ``bundle_folder``. Background Blender never saves preferences by itself: ``--save-preferences`` calls
   ``bpy.ops.wm.save_userpref()``, so later runs find the add-on enabled and the engine set after step 1.
4. Save the .blend before the job when it has no file yet (``--out``), so the results are written to a
   ``sfumato/`` folder next to it, then run the job: here one text-to-image ``sfumato_api.generate``.
5. Save the .blend: results keep a fake user, so they are in the file when it is opened again.

The exit status is 0 on success and 1 with a one-line reason otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import bpy
import addon_utils  # after bpy: with Blender as a Python module, bpy puts it on the path

REPOSITORY = "user_default"  # Blender's local extension repository; the add-on's module is bl_ext.<repo>.sfumato


def parse_args() -> argparse.Namespace:
    if "--" in sys.argv:  # blender -b --python headless.py -- ARGS (or python headless.py -- ARGS)
        argv = sys.argv[sys.argv.index("--") + 1:]
    else:  # python headless.py ARGS; Blender's own arguments are never ours
        argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith(".py") else []
    p = argparse.ArgumentParser(prog="headless.py", description="Install, enable and set up Sfumato, then make "
                                "one image and save the .blend.")
    p.add_argument("--zip", help="install (or update) the add-on from this zip, built by `sfumato addon build`")
    p.add_argument("--engine-python", help="the python of the environment where sfumato is installed")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="the engine's device")
    p.add_argument("--bundle-folder", help="a folder of extra bundles")
    p.add_argument("--save-preferences", action="store_true",
                   help="keep the add-on enabled and these engine settings for later runs")
    p.add_argument("--prompt", default="weathered red brick wall")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="denoising steps (default: the bundle's own)")
    p.add_argument("--size", type=int, help="image side in pixels, a multiple of 8 (default: the bundle's native)")
    p.add_argument("--bundle", help="bundle name (default: the add-on's default bundle, the embedded materials)")
    p.add_argument("--out", help="save the .blend here (default: the open .blend file)")
    return p.parse_args(argv)


def enable_sfumato(zip_path: str | None = None):
    """Steps 1-2: the saved preferences, then the add-on installed from ``zip_path`` or enabled; the API."""
    bpy.ops.wm.read_userpref()
    if zip_path:
        if not Path(zip_path).is_file():
            raise SystemExit(f"sfumato: --zip {zip_path!r} does not exist; build it with `sfumato addon build`")
        bpy.ops.extensions.package_install_files(filepath=str(Path(zip_path).resolve()), repo=REPOSITORY,
                                                 enable_on_install=True)
    else:
        installed = [m.__name__ for m in addon_utils.modules(refresh=True)
                     if m.__name__.startswith("bl_ext.") and m.__name__.rpartition(".")[2] == "sfumato"]
        if not installed:
            raise SystemExit("sfumato: the Sfumato add-on is not installed in this Blender: pass --zip with the "
                             "zip built by `sfumato addon build`")
        if installed[0] not in bpy.context.preferences.addons:
            addon_utils.enable(installed[0], default_set=True)
    import sfumato_api

    return sfumato_api


def main() -> int:
    args = parse_args()
    api = enable_sfumato(args.zip)
    p = api.preferences()  # step 3
    if args.engine_python:
        p.engine_python = args.engine_python
    if args.device:
        p.device = args.device
    if args.bundle_folder:
        p.bundle_folder = args.bundle_folder
    if args.save_preferences:
        bpy.ops.wm.save_userpref()
    if args.out:  # step 4: a file first, so that the results go next to it
        bpy.ops.wm.save_as_mainfile(filepath=str(Path(args.out).resolve()))
    elif not bpy.data.filepath:
        print("sfumato: --out is needed: this Blender has no .blend file open", file=sys.stderr)
        return 1
    changes = {k: v for k, v in (("steps", args.steps), ("width", args.size), ("height", args.size),
                                 ("bundle", args.bundle)) if v}
    try:
        out = api.generate(args.prompt, seed=args.seed, image_mode="text", **changes)
    except (api.BadSetting, api.SceneProblem, api.EngineError) as exc:
        print(f"sfumato: {exc}", file=sys.stderr)
        return 1
    for image, path in zip(out.images, out.files):
        print(f"sfumato: {image.name!r} -> {path}")
    bpy.ops.wm.save_mainfile()  # step 5
    print(f"sfumato: saved {bpy.data.filepath}")
    return 0


if __name__ == "__main__":
    code = main()
    if code:
        sys.exit(code)
