"""Exact geometry of the camera view from Blender: depth, normals, and the condition images made from them.

One Cycles render of a temporary copy of the scene (one sample, a near-zero pixel filter, so each pixel's ray goes
through its centre) writes the Z pass and, when asked, the Normal pass through the compositor into 32-bit EXR files
that are read back. The user's scene, render settings and compositor are never touched.

- depth: a ``.npy`` of planar distances (``inf`` = background) for the engine (``depth.py``);
- normal: the Normal pass (world space) turned into the camera's frame and coloured for normal ControlNets;
- lineart / canny: silhouettes, occlusion boundaries and creases found in those exact passes (``conditions.py``).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import bpy
import numpy as np

from . import conditions
from . import depth as depth_mod
from .scene_io import SceneProblem, active_camera, render_copy

CONDITION_FILES = {"depth": ".depth.npy", "normal": ".normal.png", "lineart": ".lineart.png", "canny": ".canny.png"}


def render_passes(scene, width: int, height: int, *, normals: bool = False
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """(distances (H, W) float32 with ``inf`` for the background, world normals (H, W, 3) or None), top row
    first, of ``scene``'s active camera at width x height."""
    active_camera(scene)
    tmp = render_copy(scene, width, height)
    tree = bpy.data.node_groups.new(".sfumato passes", "CompositorNodeTree")
    folder = Path(tempfile.mkdtemp(prefix="sfumato-passes-"))
    try:
        tmp.render.engine = 'CYCLES'
        cycles = tmp.cycles
        cycles.device = 'CPU'
        cycles.samples = 1
        cycles.use_adaptive_sampling = False
        cycles.use_denoising = False
        cycles.filter_width = 0.01
        cycles.max_bounces = 0
        tmp.render.use_compositing = True
        shown = bpy.context.view_layer.name if bpy.context.scene == scene and bpy.context.view_layer else ""
        layer = tmp.view_layers.get(shown) or tmp.view_layers[0]  # the layer the user looks at
        for other in tmp.view_layers:
            other.use = other == layer
        layer.use_pass_z = True
        layer.use_pass_normal = normals
        tmp.compositing_node_group = tree
        layers = tree.nodes.new("CompositorNodeRLayers")
        layers.scene, layers.layer = tmp, layer.name
        out = tree.nodes.new("CompositorNodeOutputFile")
        out.format.media_type = 'IMAGE'
        out.format.file_format = 'OPEN_EXR'
        out.format.color_depth = '32'
        out.directory, out.file_name = str(folder), "pass_"
        wanted = {"depth": ("FLOAT", "Depth")} | ({"normal": ("VECTOR", "Normal")} if normals else {})
        for name, (socket, output) in wanted.items():
            out.file_output_items.new(socket, name)  # the item itself is not kept: adding another moves it
            tree.links.new(layers.outputs[output], out.inputs[name])
        bpy.ops.render.render(write_still=False, scene=tmp.name, layer=layer.name)
        arrays = {}
        for name in wanted:
            written = sorted(folder.glob(f"pass_{name}*.exr"))
            if not written:
                raise SceneProblem(f"Blender's {name} render wrote no file (is Cycles available?)")
            arrays[name] = _read_exr(written[0])
    finally:
        bpy.data.scenes.remove(tmp)
        bpy.data.node_groups.remove(tree)
        shutil.rmtree(folder, ignore_errors=True)
    h, w = arrays["depth"].shape[:2]
    flat = arrays["depth"][::-1].ravel()  # back to Blender's bottom-up order, as depth.py expects
    distances = depth_mod.distances_from_zpass(flat, w, h, arrays["depth"].shape[2])
    world = arrays["normal"][..., :3] if normals else None
    return distances, world


def _read_exr(path: Path) -> np.ndarray:
    """(H, W, C) float32, top row first."""
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        image.colorspace_settings.is_data = True
        w, h = image.size
        pixels = np.empty(w * h * image.channels, dtype=np.float32)
        image.pixels.foreach_get(pixels)
        return pixels.reshape(h, w, image.channels)[::-1].copy()
    finally:
        bpy.data.images.remove(image)


def render_depth(scene, width: int, height: int, npy_path: Path) -> dict[str, float]:
    """Blender's exact depth from the active camera, saved as a ``.npy`` of distances for the engine; returns
    near, far and coverage."""
    distances, _ = render_passes(scene, width, height)
    npy_path.parent.mkdir(parents=True, exist_ok=True)
    np.save(npy_path, distances)
    return depth_mod.summary(distances)


def render_conditions(scene, width: int, height: int, stem: Path, kinds: tuple[str, ...]
                      ) -> tuple[dict[str, str], dict[str, float]]:
    """The condition files of these kinds (depth, normal, lineart, canny) from one render of the active camera:
    (kind -> path (``stem`` + the kind's suffix in ``CONDITION_FILES``), the depth's near, far and coverage)."""
    camera = scene.camera
    distances, world = render_passes(scene, width, height, normals=any(k != "depth" for k in kinds))
    files: dict[str, str] = {}
    normals = None
    if world is not None:
        normals = conditions.camera_normals(world, np.array(camera.matrix_world.to_3x3()))
    for kind in kinds:
        path = stem.with_name(stem.name + CONDITION_FILES[kind])
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "depth":
            np.save(path, distances)
        elif kind == "normal":
            save_png(conditions.normal_image(normals, np.isfinite(distances)), path)
        else:
            lines = conditions.line_art(distances, normals, width=conditions.line_width(width, height))
            save_png(np.repeat(lines[..., None], 3, axis=2), path)
        files[kind] = str(path)
    return files, depth_mod.summary(distances)


def save_png(rgb: np.ndarray, path: Path) -> Path:
    """(H, W, 3) uint8 written as an 8-bit PNG, byte for byte (a data image: no colour management)."""
    h, w = rgb.shape[:2]
    image = bpy.data.images.new(".sfumato condition", w, h, alpha=False)
    try:
        image.colorspace_settings.is_data = True
        rgba = np.concatenate([rgb.astype(np.float32) / 255.0, np.ones((h, w, 1), np.float32)], axis=2)
        image.pixels.foreach_set(np.ascontiguousarray(rgba[::-1]).ravel())
        image.filepath_raw = str(path)
        image.file_format = 'PNG'
        image.save()
    finally:
        bpy.data.images.remove(image)
    return path
