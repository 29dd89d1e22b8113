"""Normals and line art of the camera view from the scene's exact geometry (issue 17), in real Blender (``bpy``,
headless), fed with depth to several ControlNets at once through a real worker.

The normal map is checked against normals worked out by hand for a box turned 30 degrees in front of the camera;
the line art against the box's outline and its one visible crease; the depth-mode job against what the engine was
sent and recorded."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_addon_blender import NAME, bpy, enabled, prefs, runtime  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("enabled")


def _module(name: str):
    return sys.modules[f"{NAME}.{name}"]


def _box_scene(width: int = 96, height: int = 64):
    """A 2 m box turned 30 degrees about Z, seen straight on from 6 m along -Y, nothing behind it."""
    import mathutils

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_cube_add(size=2, location=(0, 0, 0), rotation=(0, 0, math.radians(30)))
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.location = (0, -6, 0)
    camera.rotation_euler = (mathutils.Vector((0, 0, 0)) - camera.location).to_track_quat('-Z', 'Y').to_euler()
    scene.camera = camera
    s = scene.sfumato
    s.prompt, s.seed, s.steps, s.width, s.height = "a white box", 2, 2, width, height
    return scene


def _encoded(n_cam) -> np.ndarray:
    """The ScanNet colour of a camera-frame normal (red = left, green = up, blue = towards the viewer)."""
    x, y, z = n_cam
    return np.round((np.array([-x, y, z]) + 1) * 127.5)


def test_the_normal_map_and_line_art_follow_the_geometry(tmp_path):
    passes = _module("passes")
    scene = _box_scene()
    files, summary = passes.render_conditions(scene, 96, 64, tmp_path / "cam", ("depth", "normal", "lineart"))
    assert set(files) == {"depth", "normal", "lineart"} and 0.1 < summary["coverage"] < 0.9
    depth = np.load(files["depth"])
    normal = np.asarray(Image.open(files["normal"]).convert("RGB"), dtype=np.float32)
    lines = np.asarray(Image.open(files["lineart"]).convert("L"))
    assert normal.shape == (64, 96, 3) and lines.shape == (64, 96)
    hit = np.isfinite(depth)
    assert np.all(normal[~hit] == [128, 128, 255])  # the background faces the viewer
    # the box turned 30 degrees: its front face (world normal (sin 30, -cos 30, 0)) seen on the right half,
    # its left face (world (-cos 30, -sin 30, 0)) on the left; camera frame: x = world x, z = -world y
    s, c = math.sin(math.radians(30)), math.cos(math.radians(30))
    front, left = _encoded((s, 0.0, c)), _encoded((-c, 0.0, s))
    colours = normal[hit].reshape(-1, 3)
    near_front = np.abs(colours - front).max(axis=1) <= 2
    near_left = np.abs(colours - left).max(axis=1) <= 2
    assert near_front.mean() > 0.25 and near_left.mean() > 0.1 and (near_front | near_left).mean() > 0.97
    # line art: white on black, on the outline and the vertical crease between the two faces, not inside a face
    assert set(np.unique(lines)) == {0, 255}
    outline = hit & ~np.pad(hit, 1, mode="edge")[1:-1, 1:-1] | hit & (
        ~np.roll(hit, 1, 0) | ~np.roll(hit, -1, 0) | ~np.roll(hit, 1, 1) | ~np.roll(hit, -1, 1))
    assert (lines[outline] == 255).mean() > 0.9
    face = np.where(hit, np.abs(normal - front).max(axis=2) <= 2, False)
    inner = face & np.roll(face, 2, 1) & np.roll(face, -2, 1) & np.roll(face, 2, 0) & np.roll(face, -2, 0)
    assert inner.sum() > 50 and (lines[inner] == 0).all()
    rows = lines[20:44]  # the crease: a vertical line inside the box's silhouette
    inside = hit[20:44]
    crease_cols = [x for x in range(96) if (rows[:, x] == 255).mean() > 0.8 and inside[:, max(0, x - 3)].all()
                   and inside[:, min(95, x + 3)].all()]
    assert crease_cols, "no crease line between the two visible faces"


def test_depth_mode_sends_depth_normals_and_line_art_to_their_controlnets(sd15, tmp_path):
    """A copy of the tiny bundle with normal and line-art ControlNets: the job gets three condition files and
    each weight, and the result records them."""
    import sfumato_api
    from controlnet_files import tiny_controlnet
    from sfumato.cli import main

    bundle = tmp_path / "tiny-controls"
    shutil.copytree(sd15, bundle)
    for kind, seed in (("normal", 5), ("lineart", 6)):
        tiny_controlnet(sd15 / "unet", seed).save_pretrained(tmp_path / kind)
        assert main(["bundle", "add", str(bundle), str(tmp_path / kind), "--as", f"controlnet-{kind}"]) == 0
    scene = _box_scene(64, 64)
    s = scene.sfumato
    s.bundle, s.mode, s.control_scale, s.depth_end = str(bundle), "depth", 0.9, 0.8
    s.use_normal, s.normal_weight, s.normal_start = True, 0.7, 0.25
    s.use_lineart, s.lineart_weight = True, 0.5
    settings = _module("props").settings_from(s)
    assert settings.conditions == ("normal", "lineart")
    assert settings.control_weights == ("depth=0.9,0,0.8", "normal=0.7,0.25,1", "lineart=0.5,0,1")
    done = sfumato_api.variations(["a white box"], seeds=[2], image_mode="depth", folder=tmp_path / "out",
                                  bundle=str(bundle), contact_sheet=False)
    (meta,) = done.metadata
    assert meta["mode"] == "controlnet"
    assert [(c["kind"], c["scale"], c["start"], c["end"]) for c in meta["controls"]] == [
        ("depth", 0.9, 0.0, 0.8), ("normal", 0.7, 0.25, 1.0), ("lineart", 0.5, 0.0, 1.0)]
    assert all(Path(tmp_path / "out" / "inputs" / c["image"]).is_file() for c in meta["controls"])
    # recalled from history, the panel shows the same ControlNets again
    fresh = _box_scene(64, 64).sfumato
    _module("props").apply_settings(fresh, settings)
    assert (fresh.use_normal, fresh.use_lineart, fresh.use_canny) == (True, True, False)
    assert (fresh.normal_weight, fresh.normal_start, fresh.depth_end) == pytest.approx((0.7, 0.25, 0.8))


def test_the_panel_offers_the_controlnets_the_bundle_has(monkeypatch):
    rt = runtime()
    monkeypatch.setitem(rt.CHECK, "info", {"capabilities": [{"name": "mine", "controlnets": ["depth", "lineart"]}]})
    assert rt.bundle_capability("mine", "controlnets") == ["depth", "lineart"]
    assert rt.bundle_capability("other", "controlnets") is None
