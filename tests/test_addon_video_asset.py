"""The turntable and asset operators inside real Blender (the ``bpy`` module, headless) with a real worker on
the tiny bundles; the helpers and the enabled add-on come from test_addon_blender.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from test_addon_blender import NAME, Layout, _mesh_scene, bpy, enabled, pump, runtime  # noqa: F401  (enabled: fixture)

pytestmark = pytest.mark.usefixtures("enabled")  # the add-on, enabled on the tiny bundles for the module


def _module(name: str):
    return sys.modules[f"{NAME}.{name}"]


def _draw(panel) -> list[tuple[str, bool]]:
    log: list = []
    panel.draw(SimpleNamespace(layout=Layout(log)), bpy.context)
    return log


def _output_files() -> set[Path]:
    return set(Path(bpy.context.preferences.addons[NAME].preferences.output_folder).rglob("*"))


# ---- turntable -------------------------------------------------------------------------------------
def test_turntable_operator_makes_a_gif_and_a_movie_clip():
    import trimesh

    obj = _mesh_scene("cube")
    obj.modifiers.new("bevel", 'BEVEL')  # exported as it renders
    bpy.ops.object.mode_set(mode='EDIT')  # the operator works from Edit Mode too
    result = bpy.ops.sfumato.turntable(frames=4, resolution=64, steps=2, temporal="off", format="gif")
    assert result == {"FINISHED"} and obj.mode == 'OBJECT'
    clip = bpy.data.movieclips["Sfumato turntable Cube"]
    assert clip.frame_duration == 4 and tuple(clip.size) == (64, 64) and clip.source == 'MOVIE'
    prov = clip["sfumato"].to_dict()
    assert {k: prov[k] for k in ("prompt", "seed", "bundle", "object", "frames", "fps", "format", "mode")} == {
        "prompt": "weathered bronze", "seed": 5, "bundle": "tiny-sd15", "object": "Cube", "frames": 4, "fps": 12,
        "format": "gif", "mode": "turntable"}
    video = Path(prov["file"])
    assert video.suffix == ".gif" and Path(bpy.path.abspath(clip.filepath)) == video
    assert json.loads(Path(prov["sidecar"]).read_text())["fps"] == 12
    mesh = trimesh.load(prov["mesh_file"], force="mesh", process=False)
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    assert len(mesh.faces) == sum(len(p.vertices) - 2 for p in evaluated.data.polygons) > 12  # bevelled
    state = runtime().CURRENT
    assert (state.status, state.stage, state.step, state.total, state.title) == ("done", "video", 2, 2, "Cube")
    # the frames differ (the orbit turns), and the video is what Blender shows
    frames = [np.asarray(im.convert("RGB"), np.float32) for im in _gif_frames(video)]
    assert len(frames) == 4 and all(np.abs(a - b).mean() > 1 for a, b in zip(frames, frames[1:]))


def _gif_frames(path: Path):
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [frame.copy() for frame in ImageSequence.Iterator(im)]


def test_turntable_scripting_api_writes_mp4(tmp_path):
    import sfumato_api

    pytest.importorskip("imageio_ffmpeg", reason="MP4 needs imageio-ffmpeg in the engine's environment")
    obj = _mesh_scene("monkey")
    bpy.ops.object.select_all(action='DESELECT')  # the API takes the object, not the selection
    done = sfumato_api.turntable("Suzanne", "green jade", frames=4, fps=8, resolution=64, steps=1, seed=3,
                                 temporal="off", format="mp4", folder=tmp_path)
    assert done.object == obj.name and done.clip.name == "Sfumato turntable Suzanne"
    assert Path(done.video).parent == tmp_path and done.video.endswith("_s3.mp4") and done.frames == 4
    assert done.clip.frame_duration == 4 and round(done.clip.fps) == 8 and tuple(done.clip.size) == (64, 64)
    assert done.metadata["seed"] == 3 and done.metadata["prompt"] == "green jade" and done.warnings == []
    assert done.clip["sfumato"]["format"] == "mp4"
    with pytest.raises(sfumato_api.BadSetting, match="frames=0"):
        sfumato_api.turntable(obj, frames=0)
    bpy.context.view_layer.objects.active = None  # no object given and no active one
    with pytest.raises(sfumato_api.SceneProblem, match="needs a mesh object, got nothing"):
        sfumato_api.turntable(None)
    with pytest.raises(sfumato_api.EngineError, match="no-such-bundle"):
        sfumato_api.turntable(obj, frames=2, resolution=64, steps=1, temporal="off", format="gif",
                              bundle="no-such-bundle", folder=tmp_path)


def test_turntable_interactive_path_loads_the_clip_from_the_timer():
    _mesh_scene("cube")
    s = bpy.context.scene.sfumato
    s.turntable_frames, s.turntable_resolution, s.turntable_temporal, s.turntable_format = 3, 64, "off", "gif"
    assert bpy.ops.sfumato.turntable(steps=1, blocking="OFF") == {"FINISHED"}
    state = runtime().CURRENT
    assert state.active and state.tag == "turntable" and not bpy.ops.sfumato.turntable.poll()
    assert "Sfumato turntable Cube" not in bpy.data.movieclips  # nothing applied until the timer runs
    pump(lambda: not state.active, timeout=120)
    assert state.status == "done", state.message
    assert bpy.data.movieclips["Sfumato turntable Cube"].frame_duration == 3
    assert runtime().LAST_MESSAGE == ("Cube -> movie clip 'Sfumato turntable Cube'", False)
    assert runtime().tick() is None


def test_turntable_refuses_bad_settings_and_no_mesh_without_a_job():
    _mesh_scene("cube")
    before_state, before_files, before_clips = runtime().CURRENT, _output_files(), len(bpy.data.movieclips)
    with pytest.raises(RuntimeError, match="frames=0 is not allowed: an integer 2..720"):
        bpy.ops.sfumato.turntable(frames=0)
    with pytest.raises(RuntimeError, match=r"resolution=100 is not allowed: .*multiple of 8.*\(nearest: 96 or 104\)"):
        bpy.ops.sfumato.turntable(resolution=100)
    with pytest.raises(TypeError, match="webm"):  # Blender itself refuses a value not in the list
        bpy.ops.sfumato.turntable(format="webm")
    bpy.context.scene.sfumato.prompt = ""
    with pytest.raises(RuntimeError, match="prompt='' is not allowed: a non-empty text prompt"):
        bpy.ops.sfumato.turntable()
    assert ("prompt='' is not allowed: a non-empty text prompt", True) in \
        _draw(_module("ui").SFUMATO_PT_turntable)
    bpy.context.scene.sfumato.prompt = "x"
    bpy.ops.object.select_all(action='DESELECT')
    assert bpy.ops.sfumato.turntable() == {"CANCELLED"}  # a warning, no exception
    assert ("select a mesh object to orbit", True) in _draw(_module("ui").SFUMATO_PT_turntable)
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    bpy.context.scene.collection.objects.link(camera)
    camera.select_set(True)
    assert bpy.ops.sfumato.turntable() == {"CANCELLED"}
    bpy.ops.mesh.primitive_plane_add(location=(3, 0, 0))
    bpy.data.objects["Cube"].select_set(True)
    bpy.context.view_layer.objects.active = camera
    assert bpy.ops.sfumato.turntable() == {"CANCELLED"}
    assert ("2 meshes are selected: make the one to orbit the active object", True) in \
        _draw(_module("ui").SFUMATO_PT_turntable)
    empty = bpy.data.objects.new("Empty mesh", bpy.data.meshes.new("nothing"))
    bpy.context.scene.collection.objects.link(empty)
    empty.select_set(True)
    bpy.context.view_layer.objects.active = empty
    with pytest.raises(RuntimeError, match="the mesh 'Empty mesh' has no faces"):
        bpy.ops.sfumato.turntable()
    # nothing was submitted, exported or loaded
    assert runtime().CURRENT is before_state and _output_files() == before_files
    assert len(bpy.data.movieclips) == before_clips


# ---- asset -----------------------------------------------------------------------------------------
def _fake_asset_result(job, tmp_path: Path) -> dict:
    """What the engine's asset job returns, with a GLB of a 1 x 2 x 3 box standing on the origin (glTF +Y up)."""
    import trimesh

    box = trimesh.creation.box((1.0, 3.0, 2.0))  # x, y (glTF up), z: Blender's 1 x 2 x 3 with Z up
    box.apply_translation((0.0, 1.5, 0.0))
    glb = Path(job.output)
    box.export(glb)
    return {"event": "result", "files": [str(glb)], "glb": str(glb), "preview": None, "sidecar": str(glb) + ".json",
            "metadata": {"prompt": job.params["prompt"], "seed": job.params["seed"], "iters": job.params["iters"]},
            "metrics": {"loss_first": 1.0, "loss_last": 0.5}}


def test_asset_result_is_imported_at_the_cursor_and_selected(tmp_path):
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.mesh.primitive_cube_add(location=(-5, 0, 0))  # selected before: not after
    scene = bpy.context.scene
    scene.sfumato.prompt, scene.sfumato.seed = "a wooden chair", 5
    scene.cursor.location = (1.0, 2.0, 3.0)
    asset = _module("asset")
    s = _module("props").asset_settings_from(scene.sfumato)
    job = asset.prepare(bpy.context, s, folder=tmp_path)
    assert job.output.endswith("_s5.glb") and job.params["seed"] == 5 and job.params["bundle"] == "tiny-sd15"
    scene.cursor.location = (9.0, 9.0, 9.0)  # it lands where the cursor was when the job started
    engine = _module("engine")
    state = engine.JobState(tag="asset", context={**job.context, "params": job.params}, status="done")
    state.result = _fake_asset_result(job, tmp_path)
    done = asset.finish(state)
    (root,) = done.roots
    assert root.name == "a wooden chair s5" and root.type == 'MESH'
    corners = np.array([root.matrix_world @ v.co for v in root.data.vertices])
    assert np.allclose(corners.min(0), (0.5, 1.0, 3.0), atol=1e-5)  # base centred on the cursor
    assert np.allclose(corners.max(0), (1.5, 3.0, 6.0), atol=1e-5)
    assert [o.name for o in bpy.context.selected_objects] == [root.name]
    assert bpy.context.view_layer.objects.active == root
    prov = root["sfumato"].to_dict()
    assert {k: prov[k] for k in ("prompt", "seed", "iters", "file")} == {
        "prompt": "a wooden chair", "seed": 5, "iters": 600, "file": done.glb}
    assert json.loads(prov["metrics"]) == {"loss_first": 1.0, "loss_last": 0.5}
    # a file that is not there is a clear error, not a traceback from the importer
    state.result = {**state.result, "glb": str(tmp_path / "gone.glb")}
    with pytest.raises(_module("scene_io").SceneProblem, match="no such file"):
        asset.finish(state)


def test_asset_refuses_bad_settings_without_a_job():
    bpy.ops.wm.read_homefile(use_empty=True)
    s = bpy.context.scene.sfumato
    s.prompt = "a wooden chair"
    before_state, before_files = runtime().CURRENT, _output_files()
    with pytest.raises(RuntimeError, match="iters=0 is not allowed: an integer 1..100000"):
        bpy.ops.sfumato.asset(iters=0)
    with pytest.raises(RuntimeError, match=r"resolution=60 is not allowed: a multiple of 16 .*\(nearest: 48 or 64\)"):
        bpy.ops.sfumato.asset(resolution=60)
    s.prompt = "  "
    with pytest.raises(RuntimeError, match="prompt='  ' is not allowed: a non-empty text prompt"):
        bpy.ops.sfumato.asset()
    reason = "prompt='  ' is not allowed: a non-empty text prompt"
    assert (reason, True) in _draw(_module("ui").SFUMATO_PT_asset)
    assert runtime().CURRENT is before_state and _output_files() == before_files


def test_asset_operator_imports_the_engines_glb_at_the_cursor():
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.sfumato.prompt, scene.sfumato.seed = "a wooden chair", 2
    scene.cursor.location = (1.0, -2.0, 0.5)
    before = set(bpy.data.objects.keys())
    assert bpy.ops.sfumato.asset(iters=2, resolution=64) == {"FINISHED"}
    new = [bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - before]
    roots = [o for o in new if o.parent is None]
    assert roots and sorted(o.name for o in bpy.context.selected_objects) == sorted(o.name for o in new)
    for root in roots:
        assert root["sfumato"]["prompt"] == "a wooden chair" and root["sfumato"]["seed"] == 2
        assert Path(root["sfumato"]["file"]).is_file() and Path(root["sfumato"]["preview"]).is_file()
        assert tuple(root.location) == pytest.approx((1.0, -2.0, 0.5), abs=1e-5)
    # the engine stands the asset on its base at the origin: here it stands on the cursor, centred on it
    meshes = [o for o in new if o.type == 'MESH']
    corners = np.array([o.matrix_world @ v.co for o in meshes for v in o.data.vertices])
    assert len(corners) and corners[:, 2].min() == pytest.approx(0.5, abs=1e-4)
    centre = (corners.min(0) + corners.max(0)) / 2
    assert centre[:2] == pytest.approx((1.0, -2.0), abs=1e-3)
    state = runtime().CURRENT
    assert (state.status, state.stage, state.step, state.total) == ("done", "extracting", 2, 2)  # the last event: the mesh being extracted
    # interactively the timer imports it; the cursor as it was at the start counts
    assert bpy.ops.sfumato.asset(iters=1, resolution=32, seed=4, blocking="OFF") == {"FINISHED"}
    state = runtime().CURRENT
    assert state.tag == "asset" and state.active and not bpy.ops.sfumato.asset.poll()
    scene.cursor.location = (0.0, 0.0, 0.0)
    pump(lambda: not state.active, timeout=120)
    assert state.status == "done", state.message
    (root,) = [o for o in bpy.context.selected_objects if o.parent is None]
    assert root.name == "a wooden chair s4" and tuple(root.location) == pytest.approx((1.0, -2.0, 0.5), abs=1e-5)
    assert runtime().LAST_MESSAGE == ("a wooden chair s4 at the 3D cursor", False)


def test_turntable_and_asset_panels_draw_with_valid_calls():
    _mesh_scene("cube")
    ui = _module("ui")
    assert [alert for _, alert in _draw(ui.SFUMATO_PT_turntable)] == []  # ready: no reason shown
    assert [alert for _, alert in _draw(ui.SFUMATO_PT_asset)] == []
    bpy.context.scene.sfumato.turntable_resolution = 100
    assert any(alert and "resolution=100" in text for text, alert in _draw(ui.SFUMATO_PT_turntable))
