"""Texture head, measured: coverage, seams, view agreement and time, per mode and variant.

    python benchmarks/texture.py [--bundle NAME] [--views 8] [--resolution 256] [--steps 25]
                                 [--meshes house,suzanne] [--out out/bench_texture]

Meshes are made here: ``house`` (a box with a gable roof, 2 parts), ``blob`` (an icosphere with a box
through it: hidden and concave parts) and Blender's Suzanne exported through ``bpy`` (when bpy is
installed). Each is textured in projection mode (sequential and sync) and in material mode.

Columns: coverage = share of the texels visible from 48 viewpoints over the upper sphere that a
generation view painted (before the UV-space fill); seam = mean colour jump (0-255) across UV-island
borders / across interior edges (1 = invisible seams); view PSNR = the baked texture re-rendered from
each generation view vs the generated image (mean over views, dB, pixels seen at cos > 0.3);
seconds = the whole job after loading. Renders of each result go to ``--out``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import trimesh
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def house() -> trimesh.Trimesh:
    body = trimesh.creation.box((6.0, 3.0, 4.0))
    body.apply_translation((0, 1.5, 0))
    # a gable roof: a triangular prism along x
    v = np.array([[-3.3, 3, -2.3], [3.3, 3, -2.3], [3.3, 3, 2.3], [-3.3, 3, 2.3], [-3.3, 4.8, 0], [3.3, 4.8, 0]])
    f = np.array([[0, 1, 5], [0, 5, 4], [3, 4, 5], [3, 5, 2], [0, 4, 3], [1, 2, 5], [0, 3, 2], [0, 2, 1]])
    roof = trimesh.Trimesh(v, f, process=False)
    return trimesh.util.concatenate([body.subdivide().subdivide(), roof.subdivide().subdivide()])


def blob() -> trimesh.Trimesh:
    box = trimesh.creation.box((2.0, 0.4, 0.4))
    return trimesh.util.concatenate([trimesh.creation.icosphere(3), box])


def suzanne(folder: Path) -> Path | None:
    """Blender's Suzanne, exported as GLB by bpy in a child process (None without bpy)."""
    path = folder / "suzanne.glb"
    code = ("import bpy; bpy.ops.wm.read_factory_settings(use_empty=True); bpy.ops.mesh.primitive_monkey_add(); "
            "bpy.ops.object.modifier_add(type='SUBSURF'); bpy.context.object.modifiers[0].levels = 1; "
            "bpy.ops.object.shade_smooth(); "
            f"bpy.ops.export_scene.gltf(filepath={str(path)!r}, export_apply=True)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return path if r.returncode == 0 and path.is_file() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", default=None)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--texture-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--meshes", default="house,blob,suzanne")
    ap.add_argument("--variants", default="sequential,sync,material")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="out/bench_texture")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from sfumato.core import bundle as bundles
    from sfumato.core.quiet import quiet_libraries
    from sfumato.core.device import pick_device, pick_dtype
    from sfumato.core.loading import load_models
    from sfumato.threed.cameras import rig
    from sfumato.threed.mesh import load_mesh
    from sfumato.threed.metrics import coverage, render, seam_ratio
    from sfumato.threed.texture import TextureRequest, texture

    quiet_libraries()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="sfumato-bench-"))
    files = {}
    for name in args.meshes.split(","):
        if name == "suzanne":
            p = suzanne(tmp)
            if p is None:
                print("suzanne: bpy not available, skipped")
                continue
            files[name] = p
        else:
            files[name] = tmp / f"{name}.glb"
            {"house": house, "blob": blob}[name]().export(files[name])
    device = pick_device("auto")
    dtype = pick_dtype(device, "auto")
    b = bundles.resolve(args.bundle)
    models = load_models(b, device, dtype, need_controlnet="controlnet_depth" in b.components)
    print(f"bundle {b.name} on {device} {str(dtype).replace('torch.', '')}, {torch.get_num_threads()} threads; "
          f"{args.views} views at {args.resolution}px, {args.steps} steps, texture {args.texture_size}px")
    print(f"{'mesh':8} {'faces':>6} {'mode':22} {'coverage':>9} {'seam':>18} {'view PSNR':>10} {'seconds':>8}")
    for name, path in files.items():
        mesh = load_mesh(path)
        for variant in args.variants.split(","):
            mode = "material" if variant == "material" else "projection"
            req = TextureRequest(mesh=str(path), prompt="weathered red brick wall" if name == "house" else
                                 "white marble", mode=mode, variant="sync" if variant == "sync" else "sequential",
                                 views=args.views, resolution=args.resolution, texture_size=args.texture_size,
                                 steps=args.steps, seed=1, tile_size=1.0)
            t0 = time.perf_counter()
            result = texture(req, models, mesh=mesh)
            seconds = time.perf_counter() - t0
            tex = torch.from_numpy(np.asarray(result.texture, dtype=np.float32) / 255).permute(2, 0, 1)
            norm = result.mesh.normalised() if mode == "projection" else result.mesh
            seam = seam_ratio(norm, tex)
            cov = coverage(norm, result.painted) if result.painted is not None else 1.0
            psnr = np.mean(result.metrics["view_psnr_db"]) if "view_psnr_db" in result.metrics else float("nan")
            label = f"{mode}/{req.variant}" if mode == "projection" else "material (box, 1 m)"
            print(f"{name:8} {len(mesh.faces):6d} {label:22} {cov * 100:8.1f}% "
                  f"{seam['seam_jump']:6.1f}/{seam['interior_jump']:5.1f}={seam['ratio']:4.2f} {psnr:9.1f}  "
                  f"{seconds:7.1f}", flush=True)
            # renders from 4 novel viewpoints, the texture, and the generated views
            novel = rig(torch.zeros(3), 1.0, 4, elevations=(25.0,), top=False, start_azimuth=45.0)
            shots = render(result.mesh.normalised(), tex, novel, 256)
            grid = torch.cat(list(shots), dim=-1)
            Image.fromarray((grid.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(out / f"{name}_{variant}.png")
            result.texture.save(out / f"{name}_{variant}_texture.png")
            if result.views:
                views = np.concatenate([np.asarray(v) for v in result.views], axis=1)
                Image.fromarray(views).save(out / f"{name}_{variant}_views.png")
    print(f"renders in {out}")


if __name__ == "__main__":
    main()
