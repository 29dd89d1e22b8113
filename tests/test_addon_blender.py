"""The add-on inside real Blender (the ``bpy`` module, headless) driving a real worker on tiny bundles.

Blender's user folders are isolated before ``bpy`` is imported. The add-on is enabled as a legacy
add-on named ``sfumato_addon`` (test_addon_install.py installs the built extension zip instead).
Background mode never runs timers, so the interactive path is exercised by calling the add-on's
timer function by hand, exactly as Blender's timer would.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

_USER = Path(tempfile.mkdtemp(prefix="sfumato-blender-user-"))
atexit.register(shutil.rmtree, _USER, True)
for _var, _sub in (("BLENDER_USER_RESOURCES", "resources"), ("XDG_CACHE_HOME", "cache"),
                   ("IMAGEIO_USERDIR", "imageio")):
    os.environ.setdefault(_var, str(_USER / _sub))

bpy = pytest.importorskip("bpy")
import addon_utils  # noqa: E402  (ships with bpy)
import mathutils  # noqa: E402

from test_addon_logic import load_addon  # noqa: E402

NAME = "sfumato_addon"
load_addon()


def _raise(exc):
    raise exc


def runtime():
    return sys.modules[f"{NAME}.runtime"]


def prefs():
    return bpy.context.preferences.addons[NAME].preferences


def pump(until, timeout: float = 60.0) -> None:
    """Call the add-on's timer function as Blender's timer would, until ``until()`` holds."""
    deadline = time.monotonic() + timeout
    while not until():
        runtime().tick()
        assert time.monotonic() < deadline, "timed out pumping the add-on's timer"
        time.sleep(0.005)


def snapshot() -> dict:
    handlers = {name: len(getattr(bpy.app.handlers, name)) for name in dir(bpy.app.handlers)
                if not name.startswith("_") and isinstance(getattr(bpy.app.handlers, name), list)}
    return {"types": set(dir(bpy.types)), "scene": set(bpy.types.Scene.bl_rna.properties.keys()),
            "scene_attrs": {a for a in dir(bpy.types.Scene) if "sfumato" in a}, "handlers": handlers,
            "api": "sfumato_api" in sys.modules, "prefs": NAME in bpy.context.preferences.addons}


# ---- registration ---------------------------------------------------------------------------------
def test_register_unregister_round_trip_leaves_nothing_behind(bundle_root, tmp_path):
    before = snapshot()
    assert not before["api"] and not before["scene_attrs"]
    for _ in range(2):
        assert addon_utils.enable(NAME, default_set=True, handle_error=_raise) is not None
        p = prefs()  # reachable once enabled
        assert (p.device, p.default_bundle, p.engine_python) == ("auto", "materials", "")
        p.bundle_folder, p.device, p.threads, p.output_folder = str(bundle_root), "cpu", 1, str(tmp_path)
        p.default_bundle = "tiny-sd15"
        assert {"SFUMATO_OT_image", "SFUMATO_OT_texture", "SFUMATO_OT_turntable", "SFUMATO_OT_asset", "SFUMATO_PT_main",
                "SFUMATO_PT_image", "SFUMATO_PT_texture", "SFUMATO_PT_turntable", "SFUMATO_PT_asset",
                "SFUMATO_UL_history"} <= set(dir(bpy.types))
        assert hasattr(bpy.context.scene, "sfumato") and "sfumato_api" in sys.modules
        # a worker, a timer and a job in flight: unregister must stop them all
        assert bpy.ops.sfumato.check_engine(blocking="ON") == {"FINISHED"}
        proc = runtime().SESSION.client.proc
        _make_scene()
        bpy.context.scene.sfumato.steps = 400
        assert bpy.ops.sfumato.image(mode="text", blocking="OFF") == {"FINISHED"}
        tick = runtime().tick
        assert bpy.app.timers.is_registered(tick)
        state = runtime().CURRENT
        pump(lambda: state.step >= 1 or not state.active)
        assert state.status == "running", state.message
        addon_utils.disable(NAME, default_set=True, handle_error=_raise)
        assert proc.wait(10) is not None
        assert not bpy.app.timers.is_registered(tick)
        after = snapshot()
        assert after == before, {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    time.sleep(0.2)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("sfumato-")]


@pytest.fixture(scope="module")
def enabled(bundle_root, tmp_path_factory):
    """The add-on, enabled for the rest of the module, on the tiny bundles (CPU, one thread)."""
    module = addon_utils.enable(NAME, default_set=True, handle_error=_raise)
    p = prefs()
    p.bundle_folder, p.device, p.threads = str(bundle_root), "cpu", 1
    p.default_bundle = "tiny-sd15"
    p.output_folder = str(tmp_path_factory.mktemp("sfumato-results"))
    yield module
    addon_utils.disable(NAME, default_set=True, handle_error=_raise)


def _make_scene():
    """A floor, a cube and a sphere seen by a camera, some sky above the horizon."""
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_plane_add(size=12, location=(0, 2, -1))
    bpy.ops.mesh.primitive_cube_add(size=2, location=(-1.3, 0, 0), rotation=(0, 0, 0.6))
    bpy.ops.mesh.primitive_uv_sphere_add(radius=1, location=(1.4, 1, 0))
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.location = (0.4, -7.0, 1.5)
    camera.rotation_euler = (mathutils.Vector((0, 0, 0)) - camera.location).to_track_quat('-Z', 'Y').to_euler()
    scene.camera = camera
    scene.render.engine = 'CYCLES'  # the scene's own engine, used by restyle's "render now"
    scene.cycles.samples = 2
    scene.cycles.device = 'CPU'
    scene.render.resolution_x, scene.render.resolution_y = 1920, 1080  # the add-on renders at its own size
    s = scene.sfumato
    s.prompt, s.seed, s.steps, s.width, s.height = "red brick wall", 5, 3, 72, 64
    return scene


@pytest.fixture()
def scene(enabled):
    scene = _make_scene()
    yield scene
    if runtime().busy():  # never leave a job running into the next test
        runtime().SESSION.cancel(runtime().CURRENT)
        pump(lambda: not runtime().busy())


def _new_images(before: set[str]) -> list:
    """Results made since ``before`` (renders also add a "Render Result" image; it carries no provenance)."""
    new = (bpy.data.images[n] for n in set(bpy.data.images.keys()) - before)
    return sorted((image for image in new if "sfumato" in image), key=lambda i: i.name)


# ---- image mode, end to end ------------------------------------------------------------------------
def test_text_to_image_makes_a_datablock_with_provenance_history_and_recall(scene):
    from sfumato.core.provenance import read_png_metadata

    before = set(bpy.data.images.keys())
    assert bpy.ops.sfumato.image(mode="text") == {"FINISHED"}
    (image,) = _new_images(before)
    assert image.name == "red brick wall s5" and tuple(image.size) == (72, 64)
    prov = image["sfumato"].to_dict()
    expected = {"prompt": "red brick wall", "seed": 5, "bundle": "tiny-sd15", "steps": 3, "width": 72, "height": 64,
                "scheduler": "dpmpp_2m", "image_mode": "text", "camera": "Camera"}
    assert {k: prov[k] for k in expected} == expected
    assert read_png_metadata(Path(prov["file"]))["seed"] == 5  # the file carries it too
    item = scene.sfumato_history[-1]
    assert item.image == image.name and "red brick wall s5" in item.label
    # a random seed is drawn per job and recorded; recall brings back the settings as run
    scene.sfumato.random_seed = True
    assert bpy.ops.sfumato.image(mode="text") == {"FINISHED"}
    drawn = bpy.data.images[scene.sfumato_history[-1].image]["sfumato"]["seed"]
    s = scene.sfumato
    s.prompt, s.seed, s.steps, s.width = "something else", 99, 20, 128
    assert bpy.ops.sfumato.recall(index=0) == {"FINISHED"}
    assert (s.prompt, s.seed, s.steps, s.width, s.random_seed) == ("red brick wall", 5, 3, 72, False)
    assert bpy.ops.sfumato.recall(index=1) == {"FINISHED"} and s.seed == drawn


def test_depth_mode_sends_blenders_exact_depth(scene):
    from sfumato.core.image import load_depth

    s = scene.sfumato
    s.width, s.height, s.set_background = 80, 64, True
    before = set(bpy.data.images.keys())
    assert bpy.ops.sfumato.image(mode="depth") == {"FINISHED"}
    (image,) = _new_images(before)
    state = runtime().CURRENT
    sent = Path(state.context["inputs"]["depth_image"])
    assert image["sfumato"]["mode"] == "depth" and image["sfumato"]["depth_image"] == sent.name
    d = np.load(sent)
    assert d.shape == (64, 80) and d.dtype == np.float32
    # ray casts from the camera through every pixel centre: planar depth (P - O) . forward
    camera = scene.camera
    scene.render.resolution_x, scene.render.resolution_y = 80, 64
    top_right, _bottom_right, bottom_left, top_left = camera.data.view_frame(scene=scene)
    rot = camera.matrix_world.to_3x3()
    origin, forward = camera.matrix_world.translation, (rot @ mathutils.Vector((0, 0, -1))).normalized()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    expected = np.full((64, 80), np.inf, np.float32)
    for y in range(64):
        for x in range(80):
            p = top_left + (top_right - top_left) * ((x + 0.5) / 80) + (bottom_left - top_left) * ((y + 0.5) / 64)
            hit, location, *_ = scene.ray_cast(depsgraph, origin, (rot @ p).normalized())
            if hit:
                expected[y, x] = (location - origin).dot(forward)
    same_coverage = np.isfinite(d) == np.isfinite(expected)
    both = np.isfinite(d) & np.isfinite(expected)
    err = np.abs(d[both] - expected[both])
    print(f"\ndepth vs ray casts: coverage agrees on {same_coverage.mean():.2%} of pixels, {both.mean():.1%} hit "
          f"geometry; |error| max {err.max():.2e}, median {np.median(err):.2e}, near {expected[both].min():.3f}, "
          f"far {expected[both].max():.3f}")
    assert same_coverage.mean() >= 0.995 and 0.3 < both.mean() < 0.98
    assert np.quantile(err, 0.995) < 1e-3 and np.median(err) < 1e-4
    # what the engine makes of it: one near/far for the frame, near = bright, background = 0
    control = load_depth(str(sent), 80, 64)[0, 0].numpy()
    nearest = np.unravel_index(np.argmin(np.where(np.isfinite(d), d, np.inf)), d.shape)
    assert control[nearest] == pytest.approx(1.0, abs=1e-3)
    assert np.all(control[~np.isfinite(d)] == 0)
    # and the result became the camera's background
    assert camera.data.show_background_images and camera.data.background_images[0].image == image


def test_restyle_renders_the_camera_and_sends_it(scene):
    scene.sfumato.strength = 0.5
    before = set(bpy.data.images.keys())
    assert bpy.ops.sfumato.image(mode="restyle") == {"FINISHED"}
    (image,) = _new_images(before)
    init = Path(runtime().CURRENT.context["inputs"]["init_image"])
    loaded = bpy.data.images.load(str(init))
    assert tuple(loaded.size) == (72, 64)
    bpy.data.images.remove(loaded)
    prov = image["sfumato"]
    assert prov["mode"] == "img2img" and prov["image_mode"] == "restyle" and prov["strength"] == 0.5
    assert prov["init_image"] == init.name
    scene.sfumato.restyle_source = "RESULT"  # headless Blender has no Render Result pixels
    with pytest.raises(RuntimeError, match="no render to restyle yet"):
        bpy.ops.sfumato.image(mode="restyle")


def test_batch_api_makes_distinct_variations_and_a_contact_sheet(scene):
    import sfumato_api

    out = sfumato_api.variations(prompts=["red brick wall", "green moss"], seeds=range(3), mode="image", steps=2)
    assert len(out.images) == len(set(out.files)) == 6 and all(Path(f).is_file() for f in out.files)
    assert [m["seed"] for m in out.metadata] == [0, 1, 2, 0, 1, 2]
    assert [m["prompt"] for m in out.metadata] == ["red brick wall"] * 3 + ["green moss"] * 3
    pixels = []
    for image in out.images:
        px = np.empty(len(image.pixels), np.float32)
        image.pixels.foreach_get(px)
        pixels.append(px)
    assert all(not np.array_equal(a, b) for i, a in enumerate(pixels) for b in pixels[i + 1:])
    assert Path(out.sheet_file).is_file() and tuple(out.sheet.size) == (4 + 3 * 76, 4 + 2 * 68)
    with pytest.raises(sfumato_api.BadSetting, match="mode='sculpt'"):
        sfumato_api.variations(["x"], mode="sculpt")
    with pytest.raises(sfumato_api.BadSetting, match="width=65"):
        sfumato_api.variations(["x"], width=65)
    with pytest.raises(sfumato_api.EngineError, match="no-such-bundle"):
        sfumato_api.variations(["x"], bundle="no-such-bundle")


# ---- bad input, faults -----------------------------------------------------------------------------
def test_bad_values_are_refused_with_the_reason(scene):
    s = scene.sfumato
    s.width = 100
    with pytest.raises(RuntimeError, match=r"width=100 is not allowed: a multiple of 8 .*96 or 104"):
        bpy.ops.sfumato.image()
    s.width, s.prompt = 72, "  "
    with pytest.raises(RuntimeError, match="prompt='  ' is not allowed: a text prompt"):
        bpy.ops.sfumato.image(mode="text")
    s.prompt, s.bundle = "x", "no-such-bundle"  # refused by the engine: the reason reaches the caller
    with pytest.raises(RuntimeError, match="bundle='no-such-bundle' was not found.*available: .*tiny-sd15"):
        bpy.ops.sfumato.image(mode="text")
    assert runtime().CURRENT.status == "error" and "no-such-bundle" in runtime().CURRENT.message
    s.bundle, scene.camera = "", None
    with pytest.raises(RuntimeError, match="has no active camera"):
        bpy.ops.sfumato.image()
    assert not bpy.ops.sfumato.image.poll()


def test_interactive_path_streams_progress_through_queue_and_timer(scene):
    scene.sfumato.steps = 6
    before = set(bpy.data.images.keys())
    assert bpy.ops.sfumato.image(mode="text", blocking="OFF") == {"FINISHED"}
    state = runtime().CURRENT
    assert state.active and not bpy.ops.sfumato.image.poll()  # one job at a time from the panel
    assert _new_images(before) == []  # nothing applied until the timer runs
    seen = []
    pump(lambda: (seen.append((state.status, state.step)), not state.active)[1])
    assert state.status == "done" and ("running", 6) in seen
    assert state.preview and Path(state.preview).name.startswith("step_")
    runtime().preview_icon(state.preview)  # what the panel shows under the progress bar (icon ids need a GPU)
    assert runtime()._previews[state.preview].image_size[0] > 0
    (image,) = _new_images(before)
    assert tuple(image.size) == (72, 64)
    assert runtime().tick() is None  # the timer stops itself when nothing is pending


def test_cancel_stops_within_a_step(scene):
    scene.sfumato.steps = 400
    before = set(bpy.data.images.keys())
    bpy.ops.sfumato.image(mode="text", blocking="OFF")
    state = runtime().CURRENT
    pump(lambda: state.step >= 2 or not state.active)
    at = state.step
    assert bpy.ops.sfumato.cancel() == {"FINISHED"}
    last = []
    pump(lambda: (last.append(state.step), not state.active)[1])
    assert state.status == "cancelled" and max(last) <= at + 2, (at, max(last))
    assert _new_images(before) == [] and runtime().SESSION.alive


def test_killed_worker_shows_the_error_and_the_next_job_starts_a_fresh_one(scene):
    scene.sfumato.steps = 400
    bpy.ops.sfumato.image(mode="text", blocking="OFF")
    state = runtime().CURRENT
    pump(lambda: state.step >= 1 or not state.active)
    assert state.status == "running", state.message
    old = runtime().SESSION.client.proc
    old.kill()
    pump(lambda: not state.active)
    assert state.status == "error" and "engine stopped" in state.message
    lines = _draw_main_panel()
    assert any(alert and "engine stopped" in text for text, alert in lines)
    scene.sfumato.steps = 2
    assert bpy.ops.sfumato.image(mode="text") == {"FINISHED"}
    assert runtime().SESSION.client.proc.pid != old.pid


def test_missing_or_broken_engine_python_is_a_clear_message(scene, tmp_path):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'sfumato'\" >&2\nexit 1\n")
    broken.chmod(0o755)
    p = prefs()
    try:
        p.engine_python = str(tmp_path / "nowhere" / "python")
        assert bpy.ops.sfumato.check_engine() == {"FINISHED"}  # a warning, never an exception
        lines = runtime().engine_check_lines()
        assert all(alert for _, alert in lines) and "does not exist" in " ".join(text for text, _ in lines)
        with pytest.raises(RuntimeError, match="Engine Python '.*nowhere/python' does not exist"):
            bpy.ops.sfumato.image(mode="text")
        assert "does not exist" in " ".join(t for t, alert in _draw_main_panel() if alert)
        p.engine_python = str(broken)
        bpy.ops.sfumato.image(mode="text", blocking="OFF")
        state = runtime().CURRENT
        pump(lambda: not state.active)
        assert state.status == "error" and "No module named 'sfumato'" in state.message
        assert state.message.startswith("The engine did not start with")
        panel = _draw_main_panel()
        assert all(alert for _, alert in panel[-3:]) and "did not start" in " ".join(t for t, _ in panel)
    finally:
        p.engine_python = ""
    assert bpy.ops.sfumato.check_engine() == {"FINISHED"}
    assert "tiny-sd15" in runtime().CHECK["info"]["bundles"] and runtime().CHECK["info"]["device"] == "cpu"
    assert bpy.ops.sfumato.release() == {"FINISHED"} and runtime().LAST_MESSAGE == ("GPU memory released", False)
    runtime().LAST_MESSAGE = None
    assert bpy.ops.sfumato.release(blocking="OFF") == {"FINISHED"}  # the panel's way: on a thread
    pump(lambda: runtime().LAST_MESSAGE is not None)
    assert runtime().LAST_MESSAGE == ("GPU memory released", False)


# ---- texture mode ----------------------------------------------------------------------------------
def texturing():
    return sys.modules[f"{NAME}.texturing"]


def _mesh_scene(kind: str = "monkey"):
    """An empty scene with one selected, active mesh and the panel's shared settings."""
    bpy.ops.wm.read_homefile(use_empty=True)
    {"monkey": bpy.ops.mesh.primitive_monkey_add, "plane": bpy.ops.mesh.primitive_plane_add,
     "cube": bpy.ops.mesh.primitive_cube_add}[kind]()
    s = bpy.context.scene.sfumato
    s.prompt, s.seed, s.steps = "weathered bronze", 5, 2
    return bpy.context.active_object


def _pixels(image) -> np.ndarray:
    """(h, w, channels) floats, bottom row first, as Blender stores them."""
    w, h = image.size
    px = np.empty(w * h * image.channels, np.float32)
    image.pixels.foreach_get(px)
    return px.reshape(h, w, image.channels)


def _glb_corners(path: Path) -> np.ndarray:
    """(N, 5): x, y, z, u, v of every vertex the engine reads from the GLB, in Blender's axes (Z up)."""
    import trimesh

    loaded = trimesh.load(str(path), process=False, maintain_order=True, force="mesh")
    assert loaded.visual.uv is not None, "trimesh read no UVs (a primitive without a material loses them)"
    x, y, z = np.asarray(loaded.vertices).T  # glTF: +Y up, Blender's -Y forward is glTF's +Z
    return np.column_stack([x, -z, y, loaded.visual.uv])


def _blender_corners(obj) -> np.ndarray:
    """(N, 5): x, y, z, u, v of every face corner of the object as it renders, in world space."""
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    mesh = evaluated.to_mesh()
    try:
        uv = mesh.uv_layers.active.data
        co = (obj.matrix_world @ mesh.vertices[loop.vertex_index].co for loop in mesh.loops)
        return np.array([[*c, *uv[i].uv] for i, c in enumerate(co)])
    finally:
        evaluated.to_mesh_clear()


def _farthest(a: np.ndarray, b: np.ndarray) -> float:
    """How far the row of ``a`` farthest from every row of ``b`` is from its nearest one (max norm)."""
    return max(float(np.abs(b - row).max(1).min()) for row in a)


def _fake_result(job, tmp_path: Path, size: int = 64) -> dict:
    """What the engine's texture job returns, with a texture whose quadrants are red (top left), green (top
    right), blue (bottom left) and white (bottom right) in the PNG as written, top row first."""
    from PIL import Image

    png = np.zeros((size, size, 3), np.uint8)
    half = size // 2
    png[:half, :half], png[:half, half:] = (255, 0, 0), (0, 255, 0)
    png[half:, :half], png[half:, half:] = (0, 0, 255), (255, 255, 255)
    path = tmp_path / "fake.png"
    Image.fromarray(png).save(path)
    mode = job.params["mode"]
    return {"event": "result", "files": [job.output, str(path)], "glb": job.output, "texture": str(path), "mode": mode,
            "tile_size": job.params["tile_size"], "warnings": ["a fabricated warning"],
            "metadata": {"prompt": job.params["prompt"], "seed": job.params["seed"], "mode": mode,
                         "bundle": "tiny-sd15"}}


def _finish_fake(job, tmp_path):
    engine = sys.modules[f"{NAME}.engine"]
    state = engine.JobState(tag="texture", context={**job.context, "params": job.params}, status="done")
    state.result = _fake_result(job, tmp_path)
    return texturing().finish(state)


def _nodes(material) -> dict:
    return {node.bl_idname: node for node in material.node_tree.nodes}


def test_texture_export_sends_the_objects_uv_map_and_a_result_becomes_its_material(enabled, tmp_path):
    obj = _mesh_scene("monkey")
    obj.data.uv_layers.remove(obj.data.uv_layers[0])  # projection adds one with Smart UV Project
    obj.location, obj.scale = (1.0, 2.0, 3.0), (2.0, 2.0, 2.0)
    obj.modifiers.new("subdivide", 'SUBSURF').levels = 1  # exported as it renders
    obj.data.materials.append(bpy.data.materials.new("old"))
    s = sys.modules[f"{NAME}.props"].texture_settings_from(bpy.context.scene.sfumato).replace(
        views=2, texture_size=64, resolution=64)
    job = texturing().prepare(bpy.context, obj, s, folder=tmp_path)
    assert job.context["uv_added"] and obj.data.uv_layers.active.name == job.context["uv_map"] == "UVMap"
    assert job.params["mesh"].endswith(".mesh.glb") and job.output.endswith("_s5.glb")
    assert job.params["mesh"].startswith(str(tmp_path))
    # the engine reads exactly Blender's evaluated mesh, in world space, with the UVs as Blender has them
    glb, blender = _glb_corners(Path(job.params["mesh"])), _blender_corners(obj)
    assert _farthest(glb, blender) < 1e-5 and _farthest(blender, glb) < 1e-5
    assert [o.name for o in bpy.context.selected_objects] == ["Suzanne"]  # the export copy is gone
    assert not [m for m in bpy.data.materials if m.name.startswith(".sfumato")]
    done = _finish_fake(job, tmp_path)
    assert obj.active_material == done.material and len(obj.material_slots) == 1
    assert done.material.name == "Sfumato texture Suzanne" and done.warnings == ["a fabricated warning"]
    nodes = _nodes(done.material)
    assert nodes["ShaderNodeUVMap"].uv_map == "UVMap"
    tex = nodes["ShaderNodeTexImage"]
    assert tex.image == done.image and tuple(tex.image.size) == (64, 64) and tex.projection == 'FLAT'
    assert tex.inputs["Vector"].links[0].from_node == nodes["ShaderNodeUVMap"]
    assert nodes["ShaderNodeBsdfPrincipled"].inputs["Base Color"].links[0].from_node == tex
    # Blender stores rows bottom-up: UV (0, 0) samples the PNG's bottom-left (blue), (1, 1) its top right (green)
    px = _pixels(done.image)
    assert np.allclose(px[0, 0, :3], (0, 0, 1)) and np.allclose(px[-1, -1, :3], (0, 1, 0))
    prov = done.material["sfumato"].to_dict()
    assert prov == done.image["sfumato"].to_dict()
    assert {k: prov[k] for k in ("prompt", "seed", "bundle", "texture_mode", "object", "uv_map")} == {
        "prompt": "weathered bronze", "seed": 5, "bundle": "tiny-sd15", "texture_mode": "projection",
        "object": "Suzanne", "uv_map": "UVMap"}
    # material mode: no UV map needed, the tile is box-projected in object space at real-world size
    s = s.replace(mode="material", tile_size=0.5)
    job = texturing().prepare(bpy.context, obj, s, folder=tmp_path)
    assert not job.context["uv_added"]
    done = _finish_fake(job, tmp_path)
    nodes = _nodes(done.material)
    tex = nodes["ShaderNodeTexImage"]
    assert tex.projection == 'BOX' and 0 < tex.projection_blend < 1 and tex.extension == 'REPEAT'
    mapping = tex.inputs["Vector"].links[0].from_node
    assert mapping.bl_idname == "ShaderNodeMapping"
    assert mapping.inputs["Vector"].links[0].from_socket.name == "Object"
    assert tuple(mapping.inputs["Scale"].default_value) == pytest.approx((4.0, 4.0, 4.0))  # scale 2, 0.5 m tiles
    assert done.material["sfumato"]["tile_size"] == 0.5 and obj.active_material == done.material


def _std(image) -> float:
    return float(_pixels(image)[..., :3].std())


def test_texture_operator_paints_the_uv_map_and_lays_a_material_tile(enabled):
    obj = _mesh_scene("monkey")
    bpy.ops.object.mode_set(mode='EDIT')  # the operator works from Edit Mode too
    assert bpy.ops.sfumato.texture(views=2, resolution=64, texture_size=64, steps=2) == {"FINISHED"}
    assert obj.mode == 'OBJECT'
    material = obj.active_material
    assert material.name == "Sfumato texture Suzanne" and len(obj.material_slots) == 1
    nodes = _nodes(material)
    image = nodes["ShaderNodeTexImage"].image
    assert tuple(image.size) == (64, 64) and _std(image) > 0.01
    assert nodes["ShaderNodeUVMap"].uv_map == obj.data.uv_layers.active.name
    prov = material["sfumato"].to_dict()
    assert {k: prov[k] for k in ("prompt", "seed", "bundle", "texture_mode", "views", "texture_size", "steps")} == {
        "prompt": "weathered bronze", "seed": 5, "bundle": "tiny-sd15", "texture_mode": "projection", "views": 2,
        "texture_size": 64, "steps": 2}
    assert Path(prov["glb"]).is_file() and Path(prov["file"]).is_file() and Path(prov["mesh"]).is_file()
    assert "views_coverage" in json.loads(prov["metrics"])  # the engine's quality signals travel along
    state = runtime().CURRENT
    assert state.status == "done" and state.unit == "view" and state.images >= 2 and state.title == "Suzanne"  # 2 rig views + fill views
    # material mode: one seamless tile, box-projected
    assert bpy.ops.sfumato.texture(mode="material", resolution=64, steps=2, tile_size=0.5, seed=7) == {"FINISHED"}
    tile = obj.active_material
    tex = _nodes(tile)["ShaderNodeTexImage"]
    assert tile != material and tex.projection == 'BOX' and tuple(tex.image.size) == (64, 64) and _std(tex.image) > 0.01
    assert tile["sfumato"]["seed"] == 7 and tile["sfumato"]["tile_size"] == 0.5
    assert tile["sfumato"]["texture_mode"] == "material"


def test_texture_lands_on_the_uv_islands_the_way_blender_shows_them(enabled):
    """A plane whose UVs fill only the bottom-left quarter of UV space (as Blender's UV editor shows it): the
    generated detail must land in that quarter of the image as Blender loads it (rows bottom-up), the rest
    being the engine's smooth fill."""
    obj = _mesh_scene("plane")
    uv = obj.data.uv_layers.active.data
    for loop in uv:
        loop.uv = loop.uv * 0.5
    assert bpy.ops.sfumato.texture(views=1, resolution=64, texture_size=64, steps=2) == {"FINISHED"}
    px = _pixels(_nodes(obj.active_material)["ShaderNodeTexImage"].image)[..., :3]
    detail = np.abs(np.diff(px, axis=0))[:, :-1] + np.abs(np.diff(px, axis=1))[:-1]  # local contrast
    quarters = {"bottom left": detail[2:30, 2:30].mean(), "bottom right": detail[2:30, 34:62].mean(),
                "top left": detail[34:62, 2:30].mean(), "top right": detail[34:62, 34:62].mean()}
    print("\nlocal contrast per quarter of the texture (Blender's rows, bottom up):",
          {k: round(float(v), 4) for k, v in quarters.items()})
    assert max(quarters, key=quarters.get) == "bottom left"
    assert quarters["bottom left"] > 3 * max(v for k, v in quarters.items() if k != "bottom left")


def test_texture_interactive_path_textures_each_selected_mesh_in_turn(enabled):
    first = _mesh_scene("monkey")
    bpy.ops.mesh.primitive_cube_add(location=(3, 0, 0))
    second = bpy.context.active_object
    first.select_set(True)
    assert bpy.ops.sfumato.texture(views=2, resolution=64, texture_size=64, steps=2, blocking="OFF") == {"FINISHED"}
    assert not bpy.ops.sfumato.texture.poll()  # one job at a time
    jobs = [runtime().CURRENT]  # the panel shows one job after the other

    def done() -> bool:
        if runtime().CURRENT is not jobs[-1]:
            jobs.append(runtime().CURRENT)
        return not runtime().busy()

    pump(done, timeout=300)
    assert [s.title for s in jobs] == ["Cube (1/2)", "Suzanne (2/2)"]
    assert all((s.status, s.unit, s.step) == ("done", "view", 2) and s.images >= 2 for s in jobs), [s.message for s in jobs]
    for obj in (first, second):
        assert obj.active_material.name == f"Sfumato texture {obj.name}"
        assert _std(_nodes(obj.active_material)["ShaderNodeTexImage"].image) > 0.01
    assert runtime().tick() is None
    # a job that fails ends the run and says which objects were left
    bpy.context.scene.sfumato.bundle = "no-such-bundle"
    assert bpy.ops.sfumato.texture(views=1, texture_size=64, steps=1, blocking="OFF") == {"FINISHED"}
    pump(lambda: not runtime().busy(), timeout=60)
    state = runtime().CURRENT
    assert state.status == "error" and state.title == "Cube (1/2)"
    assert "no-such-bundle" in state.message and state.message.endswith("not textured: Suzanne")


def test_texture_scripting_api(enabled, tmp_path):
    import sfumato_api

    obj = _mesh_scene("cube")
    bpy.ops.object.select_all(action='DESELECT')  # the API takes the object, not the selection
    done = sfumato_api.texture("Cube", "green moss", views=1, resolution=64, texture_size=32, steps=1, seed=3,
                               folder=tmp_path)
    assert done.object == obj and obj.active_material == done.material and tuple(done.image.size) == (32, 32)
    assert done.metadata["seed"] == 3 and done.metadata["prompt"] == "green moss"
    assert Path(done.glb).parent == tmp_path and Path(done.texture).is_file()
    with pytest.raises(sfumato_api.BadSetting, match="views=0"):
        sfumato_api.texture(obj, views=0)
    with pytest.raises(sfumato_api.EngineError, match="no-such-bundle"):
        sfumato_api.texture(obj, views=1, resolution=64, texture_size=32, steps=1, bundle="no-such-bundle")


def test_texture_refuses_what_it_cannot_texture(enabled):
    _mesh_scene("cube")
    bpy.ops.object.select_all(action='DESELECT')
    assert bpy.ops.sfumato.texture() == {"CANCELLED"}  # a warning, no exception
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    bpy.context.scene.collection.objects.link(camera)
    camera.select_set(True)
    assert bpy.ops.sfumato.texture() == {"CANCELLED"}
    empty = bpy.data.objects.new("Empty mesh", bpy.data.meshes.new("nothing"))
    bpy.context.scene.collection.objects.link(empty)
    empty.select_set(True)
    with pytest.raises(RuntimeError, match="the mesh 'Empty mesh' has no faces"):
        bpy.ops.sfumato.texture()
    empty.select_set(False)
    bpy.data.objects["Cube"].select_set(True)
    with pytest.raises(RuntimeError, match="texture_size=8 is not allowed: an integer 16..8192"):
        bpy.ops.sfumato.texture(texture_size=8)
    bpy.context.scene.sfumato.prompt = ""
    with pytest.raises(RuntimeError, match="prompt='' is not allowed"):
        bpy.ops.sfumato.texture()
    ui = sys.modules[f"{NAME}.ui"]
    log: list = []
    ui.SFUMATO_PT_texture.draw(SimpleNamespace(layout=Layout(log)), bpy.context)
    assert ("prompt='' is not allowed: a non-empty text prompt in projection mode (material mode may leave it empty "
            "when every slot has a prompt)", True) in log
    bpy.context.scene.sfumato.prompt = "x"
    bpy.ops.object.select_all(action='DESELECT')
    log.clear()
    ui.SFUMATO_PT_texture.draw(SimpleNamespace(layout=Layout(log)), bpy.context)
    assert ("select one or more mesh objects to texture", True) in log


# ---- the panel, drawn against Blender's own UILayout signatures ----------------------------------------
class Layout:
    """Records a panel's draw calls, checking each against ``bpy.types.UILayout``'s RNA definition."""

    SUBLAYOUTS = {"row", "column", "box", "split", "grid_flow", "column_flow"}

    def __init__(self, log: list):
        object.__setattr__(self, "log", log)
        object.__setattr__(self, "alert", False)

    def __setattr__(self, name, value):
        assert name in bpy.types.UILayout.bl_rna.properties, f"UILayout has no property {name!r}"
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        fn = bpy.types.UILayout.bl_rna.functions.get(name)
        assert fn is not None, f"UILayout has no function {name!r}"

        def call(*args, **kwargs):
            unknown = set(kwargs) - set(fn.parameters.keys())
            assert not unknown, f"UILayout.{name} has no parameter {unknown}"
            if "icon" in kwargs:
                assert kwargs["icon"] in fn.parameters["icon"].enum_items.keys(), f"no icon {kwargs['icon']!r}"
            if name in ("prop", "template_list") and isinstance(args[0], bpy.types.bpy_struct):
                assert args[1] in args[0].bl_rna.properties, f"{args[0]} has no property {args[1]!r}"
            if name == "label":
                self.log.append((kwargs.get("text", ""), self.alert))
            if name == "progress":
                self.log.append((kwargs.get("text", ""), False))
            if name in self.SUBLAYOUTS:
                return Layout(self.log)
            if name == "operator":
                module, _, op = args[0].partition(".")
                assert op in dir(getattr(bpy.ops, module)), f"no operator {args[0]}"
                return SimpleNamespace()
            return None

        return call


def _draw_main_panel() -> list[tuple[str, bool]]:
    ui = sys.modules[f"{NAME}.ui"]
    log: list = []
    for panel in (ui.SFUMATO_PT_main, ui.SFUMATO_PT_image, ui.SFUMATO_PT_texture, ui.SFUMATO_PT_turntable,
                  ui.SFUMATO_PT_asset, ui.SFUMATO_PT_history):
        panel.draw(SimpleNamespace(layout=Layout(log)), bpy.context)
    return log


def test_panels_and_preferences_draw_with_valid_calls(scene):
    assert bpy.ops.sfumato.image(mode="text") == {"FINISHED"}
    lines = _draw_main_panel()
    assert any("done in" in text for text, _ in lines)
    ui, prefs_mod = sys.modules[f"{NAME}.ui"], sys.modules[f"{NAME}.prefs"]
    log: list = []
    ui.SFUMATO_UL_history.draw_item(None, bpy.context, Layout(log), scene, scene.sfumato_history[0], 0, scene,
                                    "sfumato_history_index", 0)
    assert log == [(scene.sfumato_history[0].label, False)]
    log = []
    assert bpy.ops.sfumato.check_engine() == {"FINISHED"}
    prefs_mod.SfumatoPreferences.draw(SimpleNamespace(layout=Layout(log), engine_python=""), bpy.context)
    assert log[0] == (f"Auto: {sys.executable} (this Python has sfumato)", False)
    assert any(text.startswith("Device: cpu") for text, _ in log)  # the last "Check engine"
    scene.sfumato.width = 100
    assert any(alert and "width=100" in text for text, alert in _draw_main_panel())
    runtime().CURRENT = state = sys.modules[f"{NAME}.engine"].JobState(tag="image", status="running", step=2, total=8)
    assert ("Step 2/8", False) in _draw_main_panel()
    state.status = "done"
