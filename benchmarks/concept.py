"""Concept renders (issue #19): given a massing's depth through its depth ControlNet, does the embedded bundle draw
that massing, each part in the material its prompt names? Every number beside its baseline, in one process.

    python benchmarks/concept.py --bundle BUNDLE                 # 12 held-out massings, 3 Blender views, 8 frames
    python benchmarks/concept.py --bundle BUNDLE --picture docs/concept_depth.png
    python benchmarks/concept.py --bundle BUNDLE --quick         # a smoke run: 2 massings, 1 view, 4 steps

BUNDLE is a bundle folder (or name) with a ``controlnet_depth`` component, e.g. a copy of the embedded ``materials``
with the trainer's export added (``sfumato bundle add COPY FOLDER --as controlnet-depth``).

Inputs:

* **held-out massings**: building seeds ``HELD_OUT + i`` (never trained on), rendered by ``threed/building_render.py``
  (a view drawn from the seed), their distances handed to the engine as the ``.npy`` it reads, their caption as the
  prompt;
* **a house built in Blender**: the tests' two-storey box house with a gable roof on a lawn, built the same way as
  ``tests/test_addon_data_safety.py`` does (a scaled cube, two extrusions, the top squeezed to a ridge) but standing
  on the lawn, here through ``bpy`` and seen from three cameras; depth and normals
  come from the add-on's own Cycles pass render (``addon/passes.py``), walls and roof told apart by the normals.
  Skipped (and said so) where ``bpy`` is not installed.

Measures (the issue's words):

* **depth following**: Canny edges of the depth map against Canny edges of the image's grey, F-score at
  ``--tolerance`` pixels (precision: share of image edges within the tolerance of a depth edge; recall: share of
  depth edges within it of an image edge). Baseline: the same prompt and seed without the depth (text to image).
  Reference: the procedural render itself, what a faithful drawing of the geometry scores (its texture edges lower
  its precision as they lower a generated image's);
* **per-part adherence**: the bundle's material and colour judges (``core/train/judge.py``, fitted only on procedural
  material samples) on the walls' and on the roof's pixels, from the render's part mask: material from the material
  CNN on the part's bounding box with the pixels outside the part filled with its mean colour, colour from the
  colour judge on the part's pixels alone. Without the depth the masks are those of the depth the image should
  have followed: that is the point. Parts under 1% of the picture are not judged;
* **turntables**: warping error (``video/consistency.py``, exact flow from the orbit's geometry, frames without the
  headlight) of the demo house (``threed/demo_house.py``, lawn left out) with the depth ControlNet against today's
  image-to-image shading path, same prompt, seed and frames, the bundle's motion module on as the turntable job has
  it; the floor is an exact render whose colour is a fixed function of the surface point;
* **time** per image at ``--size``² on this CPU, the models loaded and warmed, with and without the ControlNet.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Canny settings: Gaussian σ (pixels) and hysteresis thresholds on the per-pixel gradient (units of the input per
# pixel: depth in [0, 1], grey in [0, 1]). The image's σ is larger so fine texture (mortar joints, boards) stays
# mostly below the thresholds and the massing's outlines and creases remain.
DEPTH_EDGES = (1.0, 0.012, 0.03)
IMAGE_EDGES = (1.5, 0.02, 0.05)
MIN_PART = 0.01  # share of the picture a part must cover to be judged

# The Blender house from three cameras: azimuth (degrees), prompt, and what the judges should see on walls and roof.
BLENDER_VIEWS = (
    (35.0, "two-storey house, red brick walls, grey slate gable roof, on a lawn",
     {"walls": ("running_bond_brick", "red"), "roof": ("slate", "grey")}),
    (150.0, "two-storey house, white stucco walls, black shingle gable roof, on a lawn",
     {"walls": ("stucco", "white"), "roof": ("roof_shingles", "black")}),
    (250.0, "two-storey house, brown timber walls, grey standing seam metal gable roof, on a lawn",
     {"walls": ("wood_planks", "brown"), "roof": ("standing_seam_metal", "grey")}),
)
TURNTABLE_PROMPT = "two-storey house, red brick walls, grey shingle hip roof"


# ---- edges and the F-score ----------------------------------------------------------------------------------------
def canny(x: np.ndarray, sigma: float, low: float, high: float) -> np.ndarray:
    """Canny edges (H, W) bool of a single-channel picture (H, W) float: Gaussian blur, Sobel gradient, thinning to
    the gradient's local maxima across the edge, hysteresis (weak pixels kept where they connect to strong ones)."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
    r = max(1, int(3 * sigma + 0.5))
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    t = F.conv2d(F.pad(t, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    t = F.conv2d(F.pad(t, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8  # per-pixel difference
    p = F.pad(t, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(p, sobel.view(1, 1, 3, 3))[0, 0]
    gy = F.conv2d(p, sobel.t().contiguous().view(1, 1, 3, 3))[0, 0]
    mag = torch.hypot(gx, gy)
    # the two neighbours along the gradient, its direction quantised to 0, 45, 90, 135 degrees
    angle = torch.rad2deg(torch.atan2(gy, gx)) % 180
    sector = ((angle + 22.5) // 45).long() % 4
    m = F.pad(mag, (1, 1, 1, 1))
    h, w = mag.shape

    def at(dy: int, dx: int) -> torch.Tensor:
        return m[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    pairs = [(at(0, 1), at(0, -1)), (at(1, 1), at(-1, -1)), (at(1, 0), at(-1, 0)), (at(1, -1), at(-1, 1))]
    a = torch.stack([q for q, _ in pairs]).gather(0, sector[None])[0]
    b = torch.stack([q for _, q in pairs]).gather(0, sector[None])[0]
    thin = (mag >= a) & (mag >= b)
    weak = thin & (mag >= low)
    strong = thin & (mag >= high)
    for _ in range(h + w):  # grow the strong set along weak pixels until nothing changes
        grown = weak & (F.max_pool2d(strong[None, None].float(), 3, 1, 1)[0, 0] > 0)
        if torch.equal(grown, strong):
            break
        strong = grown
    return strong.numpy()


def near(edges: np.ndarray, tolerance: int) -> np.ndarray:
    """Pixels within ``tolerance`` pixels (chessboard distance) of an edge pixel."""
    t = torch.from_numpy(edges)[None, None].float()
    return F.max_pool2d(t, 2 * tolerance + 1, 1, tolerance)[0, 0].numpy() > 0


def edge_f_score(depth_edges: np.ndarray, image_edges: np.ndarray, tolerance: int) -> tuple[float, float, float]:
    """(precision, recall, F) of the image's edges against the depth's at ``tolerance`` pixels; 0 where undefined."""
    precision = float(near(depth_edges, tolerance)[image_edges].mean()) if image_edges.any() else 0.0
    recall = float(near(image_edges, tolerance)[depth_edges].mean()) if depth_edges.any() else 0.0
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f


def grey(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32).mean(-1) / 255.0


def depth_image(distance: np.ndarray) -> np.ndarray:
    """Distances (inf = background) as the engine normalises a ``.npy`` (``core/image.py`` ``load_depth``)."""
    valid = np.isfinite(distance) & (distance > 0)
    d = distance[valid]
    return np.where(valid, 1.0 - (distance - d.min()) / max(float(d.max() - d.min()), 1e-6) * 0.9, 0.0)


# ---- per-part judging ---------------------------------------------------------------------------------------------
@torch.no_grad()
def judge_part(judge, image: np.ndarray, mask: np.ndarray) -> tuple[str, str] | None:
    """(family, colour) the judges see on the masked part of ``image`` (H, W, 3) uint8; None for a part too small."""
    from sfumato.core.train.judge import COLOUR_NAMES, FAMILY_NAMES, colour_features

    if mask.mean() < MIN_PART:
        return None
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    if min(y1 - y0, x1 - x0) < 16:
        return None
    pixels = image[mask]
    crop = np.where(mask[y0:y1, x0:x1, None], image[y0:y1, x0:x1], pixels.mean(0).astype(np.uint8))
    x = torch.from_numpy(crop.astype(np.float32) / 255).permute(2, 0, 1)[None]
    family = FAMILY_NAMES[int(judge.material(x).argmax(1))]
    f = torch.from_numpy((colour_features(pixels[None, :, None]) - judge.mu) / judge.sd)
    colour = COLOUR_NAMES[int((torch.cat([f, torch.ones(1, 1)], 1) @ judge.colour_w).argmax(1))]
    return family, colour


# ---- one row of results -------------------------------------------------------------------------------------------
@dataclass
class Tally:
    """Scores of one way of drawing (with depth, without, the reference render) over the inputs."""

    f: list[float] = field(default_factory=list)
    precision: list[float] = field(default_factory=list)
    recall: list[float] = field(default_factory=list)
    parts: dict[str, list[tuple[bool, bool]]] = field(default_factory=lambda: {"walls": [], "roof": []})
    seconds: list[float] = field(default_factory=list)

    def add(self, image: np.ndarray, depth_edges: np.ndarray, masks: dict[str, np.ndarray],
            truth: dict[str, tuple[str, str]], judge, tolerance: int) -> None:
        p, r, f = edge_f_score(depth_edges, canny(grey(image), *IMAGE_EDGES), tolerance)
        self.precision.append(p)
        self.recall.append(r)
        self.f.append(f)
        for part, mask in masks.items():
            seen = judge_part(judge, image, mask)
            if seen is not None and part in truth:
                self.parts[part].append((seen[0] == truth[part][0], seen[1] == truth[part][1]))

    def part_cell(self, part: str, which: int) -> str:
        hits = [h[which] for h in self.parts[part]]
        return f"{np.mean(hits):.0%} ({len(hits)})" if hits else "—"


def generate_pair(models, prompt: str, seed: int, npy: Path, args) -> tuple[np.ndarray, float, np.ndarray, float]:
    """The image with the depth and without it, same prompt and seed, and each one's seconds."""
    from sfumato.core.image import ImageRequest, generate

    out = []
    for depth in (str(npy), None):
        req = ImageRequest(prompt=prompt, seed=seed, steps=args.steps, width=args.size, height=args.size,
                           depth_image=depth, control_scale=args.control_scale, fast=args.fast,
                           control_weights=(f"depth={args.control_scale},0,{args.control_end}",)
                           if depth and args.control_end < 1 else ())
        start = time.perf_counter()
        image = np.asarray(generate(req, models)[0].image.convert("RGB"))
        out += [image, time.perf_counter() - start]
    return tuple(out)


def massings(models, judge, args, folder: Path) -> tuple[dict[str, Tally], list]:
    """Held-out generated massings: with depth, without, and the procedural render as the reference."""
    from sfumato.threed.building_render import sample
    from sfumato.threed.depth_controlnet_train import HELD_OUT
    from sfumato.threed.massing import KINDS, generate as scene_of

    rows = {"with depth": Tally(), "without depth": Tally(), "procedural render (reference)": Tally()}
    shown = []
    for i in range(args.count):
        seed = HELD_OUT + i
        s = sample(seed, args.size)
        materials = scene_of(seed).main.materials  # the same scene sample() drew: what each part wears
        truth = {part: materials[part] for part in ("walls", "roof") if part in materials}
        masks = {part: s.mask == KINDS.index(part) for part in ("walls", "roof")}
        npy = folder / f"massing_{i}.npy"
        np.save(npy, s.distance)
        depth_edges = canny(s.depth, *DEPTH_EDGES)
        with_depth, t_with, without, t_without = generate_pair(models, s.caption, 1 + i, npy, args)
        for name, image, seconds in (("with depth", with_depth, t_with), ("without depth", without, t_without),
                                     ("procedural render (reference)", s.image, None)):
            rows[name].add(image, depth_edges, masks, truth, judge, args.tolerance)
            if seconds is not None:
                rows[name].seconds.append(seconds)
        print(f"  massing {seed} ({s.view}): F {rows['with depth'].f[-1]:.2f} with depth, "
              f"{rows['without depth'].f[-1]:.2f} without, {rows['procedural render (reference)'].f[-1]:.2f} "
              f"render · {s.caption[:70]}", flush=True)
        shown.append((s.depth, with_depth, without, s.image))
    return rows, shown


# ---- the house built in Blender -----------------------------------------------------------------------------------
def blender_house_views(size: int, views: int, folder: Path) -> list[tuple[Path, np.ndarray, dict[str, np.ndarray]]]:
    """The tests' two-storey gable house on a lawn, built through bpy; per camera: the add-on's depth ``.npy``, the
    depth as the engine sees it, and wall and roof masks from the normals (walls vertical, roof sloped)."""
    import importlib.util

    addon = Path(__file__).resolve().parent.parent / "addon"
    if "sfumato_addon" not in sys.modules:  # the add-on as a package, as Blender imports it (importing needs no bpy)
        spec = importlib.util.spec_from_file_location("sfumato_addon", addon / "__init__.py",
                                                      submodule_search_locations=[str(addon)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["sfumato_addon"] = module
        spec.loader.exec_module(module)
    import bpy
    import mathutils
    from sfumato_addon import passes

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=9, y_subdivisions=7, size=30)  # the lawn
    bpy.ops.mesh.primitive_cube_add(size=1, location=(0, 0, 1.5))
    house = bpy.context.active_object
    house.scale = (8, 6, 3)
    bpy.ops.object.transform_apply(scale=True)
    bpy.ops.object.mode_set(mode='EDIT')
    bpy.ops.mesh.select_all(action='DESELECT')
    bpy.ops.object.mode_set(mode='OBJECT')
    max(house.data.polygons, key=lambda f: f.center.z).select = True
    bpy.ops.object.mode_set(mode='EDIT')  # a second storey, then a gable roof (its ridge along x)
    bpy.ops.mesh.extrude_region_move(TRANSFORM_OT_translate={"value": (0, 0, 3)})
    bpy.ops.mesh.extrude_region_move(TRANSFORM_OT_translate={"value": (0, 0, 2.5)})
    bpy.ops.transform.resize(value=(1, 0.05, 1))
    bpy.ops.object.mode_set(mode='OBJECT')
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    camera.data.lens = 28
    out = []
    for k, (azimuth, _, _) in enumerate(BLENDER_VIEWS[:views]):
        a = math.radians(azimuth)
        camera.location = (15 * math.sin(a), -15 * math.cos(a), 6.0)
        camera.rotation_euler = (mathutils.Vector((0, 0, 3.5)) - camera.location).to_track_quat('-Z', 'Y').to_euler()
        distance, normals = passes.render_passes(scene, size, size, normals=True)
        npy = folder / f"blender_{k}.npy"
        np.save(npy, distance)
        hit, up = np.isfinite(distance), normals[..., 2]
        masks = {"walls": hit & (np.abs(up) < 0.2), "roof": hit & (up >= 0.2) & (up < 0.98)}
        out.append((npy, depth_image(distance), masks))
    return out


def blender_rows(models, judge, args, folder: Path) -> dict[str, Tally] | None:
    try:
        views = blender_house_views(args.size, args.views, folder)
    except ImportError as exc:
        print(f"  the Blender house is skipped: {exc}")
        return None
    rows = {"with depth": Tally(), "without depth": Tally()}
    for k, (npy, depth, masks) in enumerate(views):
        azimuth, prompt, truth = BLENDER_VIEWS[k]
        depth_edges = canny(depth, *DEPTH_EDGES)
        with_depth, t_with, without, t_without = generate_pair(models, prompt, 1 + k, npy, args)
        rows["with depth"].add(with_depth, depth_edges, masks, truth, judge, args.tolerance)
        rows["without depth"].add(without, depth_edges, masks, truth, judge, args.tolerance)
        rows["with depth"].seconds.append(t_with)
        rows["without depth"].seconds.append(t_without)
        print(f"  Blender house at {azimuth:.0f}°: F {rows['with depth'].f[-1]:.2f} with depth, "
              f"{rows['without depth'].f[-1]:.2f} without · {prompt}", flush=True)
    return rows


# ---- turntables ---------------------------------------------------------------------------------------------------
def demo_house_mesh():
    """The demo house's parts but its lawn (a 14 m lawn would fill the orbit's frame) as one mesh."""
    import trimesh

    from sfumato.threed.demo_house import house_parts
    from sfumato.threed.mesh import Mesh

    tm = trimesh.util.concatenate([mesh for mesh, name in house_parts() if name != "Lawn"])
    return Mesh(torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces), source="house.glb")


def floor_frames(mesh, cameras, size: int) -> list[np.ndarray]:
    """An exactly consistent orbit: colour a fixed smooth function of the surface point (what resampling costs)."""
    from sfumato.threed.raster import rasterize

    frags = rasterize(cameras, mesh.vertices, mesh.faces, size)
    p = frags.interpolate(mesh.vertices, mesh.faces)
    rgb = 0.5 + 0.4 * torch.sin(p * torch.tensor([9.0, 11.0, 10.0]))
    return list((torch.where(frags.mask[..., None], rgb, torch.full((), 0.5)) * 255).numpy())


def turntables(models, args) -> dict[str, tuple[float, float, float, float | None]]:
    """label -> (warping error, seam ratio, detail, seconds per frame) of the demo house's orbit."""
    from sfumato.core.schema import VideoRequest
    from sfumato.video.consistency import detail, orbit_flow, seam_ratio, warping_errors
    from sfumato.video.generate import generate_video
    from sfumato.video.turntable import orbit_cameras

    mesh = demo_house_mesh()
    norm = mesh.normalised()
    cameras = orbit_cameras(norm, args.frames)  # the cameras generate_video makes (default elevation)
    flow = orbit_flow(norm, cameras, args.frame_size)
    floor = floor_frames(norm, cameras, args.frame_size)
    e = warping_errors(floor, flow)
    rows = {"floor (exact render)": (float(e.mean()), seam_ratio(e), detail(floor, flow), None)}
    has_motion = "motion_adapter" in models.bundle.components
    for label, conditioning in (("depth ControlNet", "depth"), ("image-to-image shading (today's path)", "img2img")):
        motion = None
        if has_motion and not args.no_motion:
            from sfumato.video.adapter import load_motion_adapter

            motion = load_motion_adapter(models.bundle.component_dir("motion_adapter"), models.unet)
        req = VideoRequest(prompt=TURNTABLE_PROMPT, seed=3, frames=args.frames, resolution=args.frame_size,
                           steps=args.steps, relight=False, conditioning=conditioning, fast=args.fast)
        try:
            start = time.perf_counter()
            frames, _ = generate_video(models, req, mesh=mesh, motion=motion)
            seconds = (time.perf_counter() - start) / args.frames
        finally:
            if motion is not None:
                motion.remove()
        e = warping_errors(frames, flow)
        rows[label] = (float(e.mean()), seam_ratio(e), detail(frames, flow), seconds)
        print(f"  turntable, {label}: warping error {e.mean():.2f}", flush=True)
        if args.frames_out:
            out = Path(args.frames_out)
            out.mkdir(parents=True, exist_ok=True)
            frames[0].save(out / f"turntable_{conditioning}.gif", save_all=True, append_images=frames[1:], loop=0,
                           duration=100)
    return rows


# ---- the picture --------------------------------------------------------------------------------------------------
def picture(shown: list, path: Path, columns: str, cell: int = 160) -> None:
    """Rows of held-out massings: the depth, then the images ``columns`` names (with the depth ControlNet, without
    it, the baseline bundle's, the procedural render of that geometry). 256 colours, so it stays small."""
    from PIL import Image

    sheet = Image.new("RGB", (len(shown[0]) * cell, len(shown) * cell), "white")
    for r, row in enumerate(shown):
        depth, *images = row
        tiles = [np.repeat((depth * 255).astype(np.uint8)[..., None], 3, -1), *images]
        for c, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile).resize((cell, cell), Image.LANCZOS), (c * cell, r * cell))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(256).save(path, optimize=True)
    print(f"picture: {path} ({path.stat().st_size // 1000} KB; columns: depth | {columns})")


# ---- the report ---------------------------------------------------------------------------------------------------
def report(sets: dict[str, dict[str, Tally]], turns: dict, args) -> None:
    print(f"\nDepth following: Canny edges (depth σ {DEPTH_EDGES[0]}, image σ {IMAGE_EDGES[0]}), F-score at "
          f"{args.tolerance} px, mean over the pictures")
    print("| input | drawn | pictures | precision | recall | F |")
    print("|---|---|---:|---:|---:|---:|")
    for name, rows in sets.items():
        for label, t in rows.items():
            print(f"| {name} | {label} | {len(t.f)} | {np.mean(t.precision):.2f} | {np.mean(t.recall):.2f} | "
                  f"{np.mean(t.f):.2f} |")
    print("\nPer-part adherence: the judges on each part's pixels (share right, parts judged)")
    print("| input | drawn | walls material | walls colour | roof material | roof colour |")
    print("|---|---|---:|---:|---:|---:|")
    for name, rows in sets.items():
        for label, t in rows.items():
            print(f"| {name} | {label} | {t.part_cell('walls', 0)} | {t.part_cell('walls', 1)} | "
                  f"{t.part_cell('roof', 0)} | {t.part_cell('roof', 1)} |")
    if turns:
        print(f"\nTurntables: the demo house, {args.frames} frames at {args.frame_size}², warping error (0..255, lower "
              "is steadier), seam ratio, detail (mean gradient, higher is sharper)")
        print("| conditioning | warping error | seam ratio | detail | s per frame |")
        print("|---|---:|---:|---:|---:|")
        for label, (err, seam, det, sec) in turns.items():
            print(f"| {label} | {err:.2f} | {seam:.2f} | {det:.2f} | {'—' if sec is None else f'{sec:.2f}'} |")
    print(f"\nTime per {args.size}² image on this CPU ({torch.get_num_threads()} thread(s)), median:")
    print("| drawn | s per image | images |")
    print("|---|---:|---:|")
    for label in ("with depth", "without depth"):
        seconds = [s for rows in sets.values() for s in rows[label].seconds]
        print(f"| {label} | {statistics.median(seconds):.2f} | {len(seconds)} |")


def main() -> None:
    from bundle_quality import load_judge

    from sfumato.core.bundle import resolve
    from sfumato.core.denoiser import Denoiser
    from sfumato.core.image import ImageRequest, generate
    from sfumato.core.loading import load_models
    from sfumato.core.quiet import quiet_libraries
    from sfumato.core.train import judge as judges

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, help="a bundle (folder or name) with a controlnet_depth component")
    p.add_argument("--baseline", default=None, help="a second bundle with a depth ControlNet, drawn on the same inputs "
                   "in the same run (e.g. the embedded bundle before `sfumato train buildings`)")
    p.add_argument("--count", type=int, default=12, help="held-out massings")
    p.add_argument("--views", type=int, default=len(BLENDER_VIEWS), help="cameras on the Blender house (0: none)")
    p.add_argument("--size", type=int, default=256, help="picture side")
    p.add_argument("--steps", type=int, default=None, help="default: the bundle's")
    p.add_argument("--control-scale", type=float, default=1.0)
    p.add_argument("--control-end", type=float, default=1.0,
                   help="the depth ControlNet acts on the first this share of the steps (the still images)")
    p.add_argument("--tolerance", type=int, default=2, help="edge F-score tolerance, pixels")
    p.add_argument("--frames", type=int, default=8, help="turntable frames (0: no turntables)")
    p.add_argument("--frame-size", type=int, default=128, help="turntable frame side")
    p.add_argument("--no-motion", action="store_true", help="turntables without the bundle's motion module")
    p.add_argument("--frames-out", default=None, help="write the turntables as GIFs into this folder")
    p.add_argument("--picture", default=None, help="write depth | with | without for the first massings here")
    p.add_argument("--picture-rows", type=int, default=4)
    p.add_argument("--fast", default="auto", choices=["auto", "off"], help="the CPU fast path (core/fast.py)")
    p.add_argument("--judge", default=None, help="judge weights (fitted and cached on first use)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 massings, 1 view, 4 frames, 4 steps")
    args = p.parse_args()
    if not 0 < args.control_end <= 1:
        p.error(f"--control-end={args.control_end} is not allowed: a share of the steps, above 0 and at most 1")
    quiet_libraries()
    # captions past the text encoder's 77 tokens are cut (as in training): say so once, not per image
    logging.getLogger("sfumato").addFilter(lambda record: "longer than" not in record.getMessage())
    torch.set_num_threads(args.threads)
    if args.quick:
        args.count, args.views, args.frames, args.steps = 2, min(args.views, 1), min(args.frames, 4), args.steps or 4
    bundle = resolve(args.bundle)
    if "controlnet_depth" not in bundle.components:
        sys.exit(f"--bundle {args.bundle}: bundle {bundle.name} has no controlnet_depth component; add the trainer's "
                 "export to a copy of it (sfumato bundle add COPY FOLDER --as controlnet-depth)")
    judge = load_judge(args.judge)
    own_material, own_colour = judges.self_check(judge, n=100)
    models = load_models(bundle, torch.device("cpu"), torch.float32, need_controlnet=True)
    args.steps = args.steps or models.bundle.default_steps
    precision = "bfloat16 U-Net" if Denoiser(models, fast=args.fast).cpu_bf16 else "float32"
    record = (models.bundle.component_dir("controlnet_depth") / "training.json")
    trained = ""
    if record.is_file():
        import json

        r = json.loads(record.read_text())
        trained = f" · ControlNet trained {r.get('step')} steps ({r.get('seconds', 0) / 60:.0f} min)"
    print(f"bundle {bundle.name} ({bundle.identity()}){trained} · {args.size}² · {args.steps} steps · control scale "
          f"{args.control_scale} over the first {args.control_end:.0%} of the steps · fast {args.fast} ({precision}) · "
          f"{torch.get_num_threads()} thread(s)")
    print(f"judges on fresh procedural material samples: material {own_material:.0%}, colour {own_colour:.0%}")
    folder = Path(tempfile.mkdtemp(prefix="sfumato-concept-"))
    npy = folder / "warm.npy"
    np.save(npy, np.linspace(1, 2, args.size * args.size, dtype=np.float32).reshape(args.size, args.size))
    for depth in (None, npy):  # warm both paths once, so the timings below are of generation alone
        generate(ImageRequest(prompt="house", seed=0, steps=2, width=args.size, height=args.size, fast=args.fast,
                              depth_image=str(npy) if depth else None), models)

    sets = {}
    print(f"held-out massings ({args.count}):")
    sets["held-out massings"], shown = massings(models, judge, args, folder)
    if args.views:
        print(f"the house built in Blender ({args.views} views):")
        rows = blender_rows(models, judge, args, folder)
        if rows is not None:
            sets["Blender house"] = rows
    turns = turntables(models, args) if args.frames else {}
    columns = "with the depth ControlNet | without it, same prompt and seed | the procedural render"
    if args.baseline:
        base = load_models(resolve(args.baseline), torch.device("cpu"), torch.float32, need_controlnet=True)
        for depth in (None, npy):
            generate(ImageRequest(prompt="house", seed=0, steps=2, width=args.size, height=args.size,
                                  fast=args.fast, depth_image=str(npy) if depth else None), base)
        name = f"baseline {base.bundle.name} ({base.bundle.identity()})"
        print(f"the same with the {name}:")
        rows, base_shown = massings(base, judge, args, folder)
        sets["held-out massings"].update({f"{name}, {k}": v for k, v in rows.items() if "reference" not in k})
        shown = [(d, w, b[1], r) for (d, w, _, r), b in zip(shown, base_shown)]
        columns = f"with the depth ControlNet | the {name} with its depth ControlNet | the procedural render"
        if "Blender house" in sets:
            rows = blender_rows(base, judge, args, folder) or {}
            sets["Blender house"].update({f"{name}, {k}": v for k, v in rows.items()})
        if args.frames:
            turns.update({f"{name}, {k}": v for k, v in turntables(base, args).items() if "exact" not in k})
    report(sets, turns, args)
    if args.picture:
        picture(shown[:args.picture_rows], Path(args.picture), columns)


if __name__ == "__main__":
    main()
