"""A night's batch from a .blend, unattended and resumable: a spec of jobs run by the engine's batch runner.

    blender -b house.blend --python docs/examples/batch.py -- --spec options.csv --workers 2 --save

Runs on the embedded ``materials`` bundle as written (a spec whose rows name no bundle uses the add-on's
default). A spec is a CSV, JSON Lines or JSON file with one job per row, columns named like the jobs' settings
(``prompt``, ``seed``, ``steps``, ``width``, ``mesh``, ...) plus ``kind`` (image, texture, video, turntable,
asset) and ``name``; ``sfumato batch --help`` and the README say more. Without ``--spec`` the script runs its own
small one: four facade materials, two seeds each. Killed or stopped, the same command again makes only what is
missing. Images become image datablocks, turntables movie clips, textured meshes and assets objects in a
collection "Sfumato batch <folder>"; ``--save`` keeps them in the .blend. Exit status 0 when every job
finished, 1 with the reasons otherwise.

Needs the Sfumato add-on installed (see headless.py).
"""

from __future__ import annotations

import argparse
import os
import sys

import bpy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from variations import enable_sfumato  # noqa: E402  (beside this script)

MATERIALS = ["weathered red brick facade", "white render facade", "grey slate cladding", "larch board cladding"]


def parse_args() -> argparse.Namespace:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    p = argparse.ArgumentParser(prog="blender -b FILE.blend --python batch.py --", description=__doc__.split("\n")[0])
    p.add_argument("--spec", help=".csv, .jsonl or .json (default: four materials x two seeds)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--steps", type=int, default=16, help="steps of the built-in spec's images")
    p.add_argument("--size", type=int, default=256, help="pixels of the built-in spec's square images")
    p.add_argument("--out", help="folder for the results (default: named after the spec, in the add-on's output "
                   "folder)")
    p.add_argument("--save", action="store_true", help="save the .blend with the results")
    return p.parse_args(argv)


def main() -> int:
    args = parse_args()
    api = enable_sfumato()
    spec = args.spec or [{"prompt": m, "seed": s, "steps": args.steps, "width": args.size, "height": args.size,
                          "seamless": "xy"} for m in MATERIALS for s in (1, 2)]

    def on_event(state, event):
        if event.get("event") == "job":
            print(f"sfumato: {event['finished']}/{event['total']} {event['output']}: {event['status']}", flush=True)

    try:
        out = api.batch(spec, folder=args.out, workers=args.workers, on_event=on_event)
    except (api.BadSetting, api.EngineError) as exc:
        print(f"sfumato: {exc}", file=sys.stderr)
        return 1
    print(f"sfumato: {len(out.images)} images, {len(out.clips)} clips, {len(out.objects)} objects in {out.folder}")
    for sheet in out.sheets:
        print(f"sfumato: contact sheet {sheet}")
    if args.save:
        bpy.ops.wm.save_mainfile()
        print(f"sfumato: saved {bpy.data.filepath}")
    for name, error in out.failed:
        print(f"sfumato: failed: {name}: {error}", file=sys.stderr)
    return 1 if out.failed else 0


if __name__ == "__main__":
    code = main()
    if code:
        sys.exit(code)
