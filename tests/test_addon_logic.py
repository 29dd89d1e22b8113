"""The add-on's Blender-free parts as plain Python: settings, validation, engine discovery, job state,
depth and contact-sheet arithmetic, the extension build. No ``bpy`` needed."""

from __future__ import annotations

import ast
import atexit
import importlib
import importlib.util
import json
import shutil
import stat
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

ADDON = ROOT / "addon"


def load_addon():
    """The add-on package as ``sfumato_addon``, importable from sys.path as Blender's add-on folders make
    it (a link in a temporary folder); importing it does not import bpy."""
    if "sfumato_addon" not in sys.modules:
        folder = Path(tempfile.mkdtemp(prefix="sfumato-addons-"))
        atexit.register(shutil.rmtree, folder, True)
        (folder / "sfumato_addon").symlink_to(ADDON, target_is_directory=True)
        sys.path.insert(0, str(folder))
        importlib.import_module("sfumato_addon")
    return sys.modules["sfumato_addon"]


load_addon()
from sfumato_addon import depth, engine, request, sheet  # noqa: E402


# ---- boundaries -----------------------------------------------------------------------------------
BLENDER_FREE = ("__init__", "client", "engine", "request", "depth", "sheet", "batch", "conditions")
FORBIDDEN = {"torch", "diffusers", "transformers", "sfumato", "core", "PIL", "safetensors", "accelerate"}


def _top_level_imports(path: Path, only_module_level: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if only_module_level else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_addon_never_imports_the_engine_and_blender_free_modules_skip_bpy():
    for path in sorted(ADDON.glob("*.py")):
        imported = _top_level_imports(path, only_module_level=False)
        assert not imported & FORBIDDEN, (path.name, imported & FORBIDDEN)
        allowed = set(sys.stdlib_module_names) | {"bpy", "bmesh", "numpy", "addon_utils", "__future__"}
        assert imported <= allowed, (path.name, imported - allowed)
        if path.stem in BLENDER_FREE:
            assert "bpy" not in _top_level_imports(path, only_module_level=True), path.name


def test_the_addon_reads_the_engines_schema_file():
    """Nothing is copied: in a checkout the add-on loads the engine's own ``core/schema.py``; the built zip
    carries that file (``test_build_addon_with_blenders_builder_and_without``)."""
    from sfumato.core import bundle, schema

    assert Path(request.schema.__file__).resolve() == Path(schema.__file__).resolve()
    assert request.DEFAULT_BUNDLE == bundle.DEFAULT_BUNDLE


def test_manifest_and_bl_info_agree():
    manifest = tomllib.loads((ADDON / "blender_manifest.toml").read_text())
    addon = load_addon()
    assert manifest["id"] == "sfumato" and manifest["type"] == "add-on"
    assert tuple(int(x) for x in manifest["version"].split(".")) == addon.bl_info["version"]
    assert tuple(int(x) for x in manifest["blender_version_min"].split(".")) == addon.bl_info["blender"] >= (4, 2, 0)


# ---- settings and params ---------------------------------------------------------------------------
def test_validation_names_field_value_and_what_is_allowed():
    s = request.ImageSettings(prompt="brick", width=100)
    (problem,) = request.problems(s)
    assert str(problem) == ("width=100 is not allowed: a multiple of 8 from 64 to 4096, or none for the bundle's "
                            "native size (nearest: 96 or 104)")
    assert problem.field == "width" and problem.value == 100
    empty = request.problems(request.ImageSettings(prompt="   ", mode="depth"))
    assert [p.field for p in empty] == ["prompt"] and "depth mode needs one" in str(empty[0])
    assert request.problems(request.ImageSettings(prompt="", mode="restyle")) == []  # restyle may go without
    few = request.problems(request.ImageSettings(prompt="x", mode="restyle", steps=2, strength=0.2))
    assert [p.field for p in few] == ["strength"] and "1/steps = 0.5" in str(few[0])
    bad = request.problems(request.ImageSettings(prompt="x", scheduler="magic", steps=-1, guidance=-1))
    assert [p.field for p in bad] == ["guidance", "steps", "scheduler"] and "for the bundle's default" in str(bad[1])
    with pytest.raises(request.BadSetting, match="colour"):
        request.ImageSettings().replace(colour="red")


def _engine_accepts(kind: str, params: dict):
    """The engine's request for ``params``, checked as its job door checks them (files included)."""
    from sfumato.core import schema
    from sfumato.core.checks import raise_first

    req, found = schema.parse(schema.KINDS[kind], params)
    raise_first(found or schema.problems(req, files=True))
    return req


def test_params_are_an_image_request_the_engine_accepts(tmp_path):
    npy, png = tmp_path / "d.npy", tmp_path / "r.png"
    np.save(npy, np.ones((8, 8), np.float32))
    png.write_bytes(b"")
    base = request.ImageSettings(prompt="red brick", negative="blurry", seed=7, steps=4, width=64, height=72)
    text = request.params(base, seed=7, default_bundle="tiny-sd15")
    assert text["bundle"] == "tiny-sd15" and "depth_image" not in text and "init_image" not in text
    assert text["steps"] == 4
    # steps 0 (the default) is not sent: the engine runs the bundle's own default_steps
    assert "steps" not in request.params(base.replace(steps=0), seed=7)
    assert "steps" not in request.params(base.replace(steps=None), seed=7)  # from scripts, as the engine
    assert request.ImageSettings().steps == request.TextureSettings().steps == request.TurntableSettings().steps == 0
    assert "steps" not in request.params(request.TextureSettings(prompt="x"), seed=1, inputs={"mesh": "m.glb"})
    assert "steps" not in request.params(request.TurntableSettings(prompt="x"), seed=1, inputs={"mesh": "m.glb"})
    depth_p = request.params(base.replace(mode="depth", control_scale=0.5), seed=9, n=3,
                             inputs={"depth_image": str(npy)})
    assert depth_p["depth_image"] == str(npy) and depth_p["control_scale"] == 0.5 and depth_p["n"] == 3
    restyle = request.params(base.replace(mode="restyle", bundle="mine"), seed=1, inputs={"init_image": str(png)})
    assert restyle["bundle"] == "mine" and restyle["strength"] == request.RESTYLE_STRENGTH
    for params in (text, depth_p, restyle):
        assert (_engine_accepts("image", params).width, _engine_accepts("image", params).height) == (64, 72)
    assert _engine_accepts("image", depth_p).mode == "depth" and _engine_accepts("image", restyle).mode == "img2img"
    with pytest.raises(request.BadSetting, match="depth_image"):
        request.params(base.replace(mode="depth"), seed=1)


def test_names_files_and_provenance_values(tmp_path):
    assert request.result_name("red   brick\nwall", 42) == "red brick wall s42"
    long = request.result_name("ü" * 100, 2**31 - 1)
    assert len(long.encode()) <= 63 and long.endswith("… s2147483647")
    assert request.slug("A Red/Brick: wall!") == "a-red-brick-wall" and request.slug("???") == "untitled"
    first = request.output_stem(tmp_path, "red brick", stamp=0)
    Path(f"{first}_s1.png").write_bytes(b"")
    second = request.output_stem(tmp_path, "red brick", stamp=0)
    assert second.name == first.name + "-2"
    props = request.id_properties({"seed": 2**40, "hint": None, "ok": True, "sizes": [1, 2], "g": 7.5})
    assert props == {"seed": str(2**40), "ok": 1, "sizes": "[1, 2]", "g": 7.5}


def test_history_record_recalls_the_settings_as_run():
    s = request.ImageSettings(prompt="old", random_seed=True, seed=3, steps=9, mode="depth", bundle="tiny-sd15")
    meta = {"prompt": "old", "seed": 123456, "steps": 9, "guidance": 7.5, "scheduler": "euler", "width": 64,
            "height": 64, "bundle": "tiny-sd15", "negative": ""}
    record = json.loads(json.dumps(request.history_record(s, meta, "old s123456", "/x/old.png")))
    back = request.settings_from_record(json.dumps(record))
    assert back == s.replace(seed=123456, random_seed=False, scheduler="euler", width=64, height=64)
    assert record["image"] == "old s123456" and "[depth]" in record["label"]


def test_geometry_controlnets_become_the_schemas_fields_and_come_back():
    values = {"control_scale": 0.9, "depth_end": 0.8, "use_normal": True, "normal_weight": 0.7, "normal_start": 0.25,
              "use_canny": True, "canny_weight": 1.25}
    conditions, weights = request.geometry_controls(values)
    assert conditions == ("normal", "canny")
    assert weights == ("depth=0.9,0,0.8", "normal=0.7,0.25,1", "canny=1.25,0,1")
    s = request.ImageSettings(prompt="a house", mode="depth", conditions=conditions, control_weights=weights)
    assert request.problems(s) == []
    params = request.params(s, seed=1, inputs={"depth_image": "d.npy", "controls": ("normal=n.png", "canny=c.png")})
    assert params["control_weights"] == weights and params["controls"] == ("normal=n.png", "canny=c.png")
    back = request.geometry_props(s)
    assert back["use_normal"] and back["use_canny"] and not back["use_lineart"]
    assert (back["normal_start"], back["depth_end"], back["control_scale"]) == (0.25, 0.8, 0.9)
    assert "control_weights" not in request.params(s.replace(mode="text"), seed=1)
    bad = request.problems(s.replace(conditions=("shadow",)))
    assert bad[0].field == "conditions" and "normal, lineart, canny" in str(bad[0])
    bad = request.problems(s.replace(control_weights=("depth=0.9,0.8,0.2",)))
    assert bad[0].field == "control_weights" and "START < END" in str(bad[0])


# ---- job state -------------------------------------------------------------------------------------
def test_job_state_folds_events_into_what_the_panel_shows():
    st = engine.JobState(tag="image")
    assert st.active and st.status_lines() == [("Starting the engine...", False)]
    for event in ({"event": "accepted", "id": "j"},
                  {"event": "progress", "stage": "loading", "step": 0, "total": 4, "image": 0, "images": 2},
                  {"event": "progress", "stage": "denoising", "step": 2, "total": 4, "image": 1, "images": 2,
                   "preview": "/p.png"}):
        st.apply(event)
    assert st.status == "running" and st.fraction == pytest.approx(0.75) and st.preview == "/p.png"
    assert st.status_lines() == [("Step 2/4, image 2/2", False)]
    st.apply({"event": "worker_exited", "returncode": -9})
    assert not st.active and st.status == "error"
    (line, alert), *_ = st.status_lines()
    assert alert and "engine stopped" in line
    err = engine.JobState(tag="image")
    err.apply({"event": "error", "code": "bad_parameter", "message": "width=100 is not allowed", "hint": "h"})
    assert err.message == "width=100 is not allowed (h)"


# ---- finding the engine ------------------------------------------------------------------------------
def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_engine_python_discovery(tmp_path, monkeypatch):
    monkeypatch.delenv("SFUMATO_PYTHON", raising=False)
    with pytest.raises(engine.EngineUnavailable, match="does not exist.*Engine Python"):
        engine.find_engine_python(str(tmp_path / "missing" / "python"))
    venv_python = _executable(tmp_path / "venv" / "bin" / "python3", "#!/bin/sh\n")
    assert engine.find_engine_python(str(tmp_path / "venv")) == (str(venv_python), "preference")
    (tmp_path / "missing").mkdir()
    with pytest.raises(engine.EngineUnavailable, match="folder without a Python"):
        engine.find_engine_python(str(tmp_path / "missing"))
    # this Python has sfumato (the bpy-as-a-module case)
    assert engine.find_engine_python("") == (sys.executable, "this Python has sfumato")
    # real Blender without sfumato: the interpreter of the `sfumato` command on PATH
    monkeypatch.setattr(engine, "_has_sfumato", lambda: False)
    _executable(tmp_path / "bin" / "sfumato", f"#!{venv_python}\nimport sys\n")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    python, how = engine.find_engine_python("")
    assert python == str(venv_python) and "sfumato command" in how
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    with pytest.raises(engine.EngineUnavailable, match="No engine found.*pip install sfumato"):
        engine.find_engine_python("")


def test_broken_engine_python_gives_a_clear_message(tmp_path):
    broken = _executable(tmp_path / "python", "#!/bin/sh\necho \"ModuleNotFoundError: No module named 'sfumato'\" >&2\n"
                         "exit 1\n")
    session = engine.Session()
    state = engine.JobState(tag="image")
    try:
        with pytest.raises(engine.EngineUnavailable) as err:
            session.run(engine.EngineConfig(python=str(broken)), state, "image", {"prompt": "x"},
                        str(tmp_path / "o.png"))
    finally:
        session.shutdown()
    text = str(err.value)
    assert text.startswith(f"The engine did not start with {broken}: ModuleNotFoundError: No module named 'sfumato';")
    assert "Engine Python" in text
    assert state.status == "error" and state.message == text and "\n" not in text


# ---- depth and contact sheets ----------------------------------------------------------------------
def test_zpass_becomes_top_down_distances_the_engine_normalises(tmp_path):
    from sfumato.core.image import load_depth

    # Blender's layout: bottom row first, 4 channels, background 1e10
    z = np.array([[1e10, 2.0, 4.0],  # bottom row
                  [3.0, 5.0, 1e10]], np.float32)
    pixels = np.repeat(z[..., None], 4, axis=2).ravel()
    d = depth.distances_from_zpass(pixels, width=3, height=2, channels=4)
    assert d.shape == (2, 3) and d[0, 0] == 3.0 and d[1, 1] == 2.0 and np.isinf(d[0, 2]) and np.isinf(d[1, 0])
    assert depth.summary(d) == {"near": 2.0, "far": 5.0, "coverage": pytest.approx(4 / 6)}
    np.save(tmp_path / "d.npy", d)
    control = load_depth(str(tmp_path / "d.npy"), 3, 2)[0, 0].numpy()  # near = bright, background = 0
    assert control[1, 1] == pytest.approx(1.0, abs=1e-4) and control[0, 2] == 0
    assert control[0, 1] == pytest.approx(0.1, abs=1e-3)


def test_contact_sheet_grid():
    assert sheet.grid_shape(8, 4) == (2, 4) and sheet.grid_shape(5) == (2, 3) and sheet.grid_shape(1) == (1, 1)
    tiles = [np.full((4, 6, 4), i / 10, np.float32) for i in range(5)]
    grid = sheet.compose(tiles, columns=3, pad=2)
    assert grid.shape == (2 + 2 * 6, 2 + 3 * 8, 4)
    assert np.all(grid[2:6, 2:8] == 0.0) and np.all(grid[8:12, 10:16] == pytest.approx(0.4))
    assert grid[0, 0, 0] == pytest.approx(0.12)
    with pytest.raises(ValueError, match="at least one"):
        sheet.grid_shape(0)


# ---- the extension zip -----------------------------------------------------------------------------
def _names(path: Path) -> set[str]:
    with zipfile.ZipFile(path) as zf:
        return set(zf.namelist())


def test_build_addon_with_blenders_builder_and_without(tmp_path):
    from sfumato.core.addon_build import blender_builder, build_addon

    assert blender_builder() is not None, "bpy wheel's extension builder not found"
    built = build_addon(tmp_path / "out")
    assert built == tmp_path / "out" / "sfumato-0.1.0.zip"
    expected = {"blender_manifest.toml", "schema.py"} | {p.name for p in ADDON.glob("*.py")}
    assert _names(built) == expected
    plain = build_addon(tmp_path / "plain.zip", use_blender=False)
    assert _names(plain) == expected
    schema_file = (ADDON.parent / "core" / "schema.py").read_bytes()
    for path in (built, plain):  # the engine's schema, as it is: the add-on's limits and defaults come from it
        with zipfile.ZipFile(path) as zf:
            assert zf.read("schema.py") == schema_file
            assert tomllib.loads(zf.read("blender_manifest.toml").decode())["id"] == "sfumato"


# ---- texture jobs ----------------------------------------------------------------------------------
def test_texture_settings_are_checked_with_the_reason():
    s = request.TextureSettings(prompt="bronze")
    assert request.problems(s) == []
    bad = request.problems(s.replace(prompt=" ", views=0, resolution=100, texture_size=8, tile_size=0.0, mode="paint"))
    assert [p.field for p in bad] == ["mode", "views", "resolution", "texture_size", "tile_size"]
    assert str(bad[2]) == ("resolution=100 is not allowed: a multiple of 8 from 64 to 2048, or none for the bundle's "
                           "native size (nearest: 96 or 104)")
    assert str(bad[0]) == "mode='paint' is not allowed: projection, material or sds"  # every texture mode the engine has
    blank = request.problems(s.replace(prompt=" "))  # projection needs a prompt; material mode may take slot prompts
    assert [p.field for p in blank] == ["prompt"] and "non-empty" in str(blank[0])
    assert request.problems(s.replace(prompt=" ", mode="material")) == []
    with pytest.raises(request.BadSetting, match="colour"):
        s.replace(colour="red")


def test_texture_params_are_a_texture_request_the_engine_accepts(tmp_path):
    mesh = tmp_path / "m.glb"
    mesh.write_bytes(b"glTF")
    s = request.TextureSettings(prompt="bronze", negative="rust", steps=3, views=2, texture_size=64, bundle="")
    params = request.params(s, seed=4, default_bundle="tiny-sd15", inputs={"mesh": str(mesh)})
    assert params["bundle"] == "tiny-sd15" and params["seed"] == 4 and "resolution" not in params  # native size
    assert params["mode"] == "projection" and params["tile_size"] == 1.0
    sized = request.params(s.replace(resolution=64, mode="material", tile_size=2), seed=1, inputs={"mesh": str(mesh)})
    assert sized["resolution"] == 64 and sized["tile_size"] == 2.0 and sized["bundle"] == "materials"
    with pytest.raises(request.BadSetting, match="mesh=''"):
        request.params(s, seed=1, inputs={"mesh": ""})
    for p in (params, sized):
        req = _engine_accepts("texture", p)
        assert (req.mode, req.views, req.seed) == (p["mode"], p["views"], p["seed"])


def test_texture_names_and_tile_scale():
    assert request.material_name("Suzanne") == "Sfumato texture Suzanne"
    assert len(request.material_name("ü" * 60).encode()) <= 63
    assert request.tile_scale(0.5, (1.0, 2.0, -1.0)) == (2.0, 4.0, 2.0)  # object units -> metres -> tiles
    with pytest.raises(request.BadSetting, match="tile_size=0"):
        request.tile_scale(0, (1, 1, 1))


def test_job_state_counts_views_for_texture_jobs():
    st = engine.JobState(tag="texture", title="Suzanne (1/2)")
    st.apply({"event": "progress", "stage": "texture", "step": 1, "total": 2, "view": 1, "views": 4})
    assert st.status_lines() == [("Suzanne (1/2): Step 1/2, view 2/4", False)]
    assert st.fraction == pytest.approx((1 + 0.5) / 4)
    st.apply({"event": "progress", "stage": "texture", "step": 3, "total": 4, "view": 0, "views": 1,
              "slot": "Roof tiles"})  # material mode counts slots, and names the one being made
    assert st.status_lines() == [("Suzanne (1/2): Step 3/4, slot 1/1 Roof tiles", False)]


# ---- turntable jobs --------------------------------------------------------------------------------
def test_turntable_settings_are_checked_with_the_reason():
    s = request.TurntableSettings(prompt="bronze statue")
    assert request.problems(s) == []
    bad = request.problems(s.replace(prompt="", frames=0, fps=0, resolution=100, elevation=90.0,
                                     temporal="sometimes", window=65, format="webm"))
    assert [p.field for p in bad] == ["format", "prompt", "frames", "fps", "resolution", "elevation", "temporal",
                                      "window"]
    assert str(bad[0]) == "format='webm' is not allowed: mp4 or gif"
    assert str(bad[2]) == "frames=0 is not allowed: an integer 2..720"
    assert str(bad[6]) == "temporal='sometimes' is not allowed: auto, on or off"
    assert [p.field for p in request.problems(s.replace(frames=True, steps=2.5))] == ["steps", "frames"]
    with pytest.raises(request.BadSetting, match="turns"):
        s.replace(turns=2)
    with pytest.raises(request.BadSetting, match="frames=1 is not allowed"):
        request.first_problem(s.replace(frames=1))


def test_turntable_params_are_a_video_request_the_engine_accepts(tmp_path):
    mesh = tmp_path / "m.glb"
    mesh.write_bytes(b"glTF")
    s = request.TurntableSettings(prompt="bronze statue", negative="blur", frames=4, fps=8, steps=2, temporal="off")
    params = request.params(s, seed=3, default_bundle="tiny-sd15", inputs={"mesh": str(mesh)})
    assert params["bundle"] == "tiny-sd15" and params["seed"] == 3 and params["mesh"] == str(mesh)
    assert not {"resolution", "window", "motion"} & set(params)  # the engine's defaults: native size, module length
    req = _engine_accepts("turntable", params)
    assert (req.frames, req.fps, req.temporal, req.resolution, req.seed) == (4, 8, "off", None, 3)
    sized = request.params(s.replace(resolution=64, window=4, conditioning="img2img", format="gif"), seed=1,
                           inputs={"mesh": str(mesh)})
    req = _engine_accepts("turntable", sized)
    assert (req.resolution, req.window, req.conditioning, req.bundle) == (64, 4, "img2img", "materials")
    with pytest.raises(request.BadSetting, match="mesh=''"):
        request.params(s, seed=1, inputs={"mesh": ""})


def test_turntable_names_and_progress():
    assert request.clip_name("Cube") == "Sfumato turntable Cube"
    assert len(request.clip_name("ü" * 60).encode()) <= 63
    st = engine.JobState(tag="turntable", title="Cube")
    st.apply({"event": "progress", "stage": "video", "step": 1, "total": 4, "image": 0, "images": 1, "frames": 8,
              "preview": None})
    assert st.status_lines() == [("Cube: Step 1/4", False)] and st.fraction == pytest.approx(0.25)


# ---- asset jobs ------------------------------------------------------------------------------------
def test_asset_settings_are_checked_with_the_reason():
    s = request.AssetSettings(prompt="a wooden chair")
    assert request.problems(s) == []
    bad = request.problems(s.replace(prompt=" ", iters=0, resolution=100, guidance=250.0))
    assert [p.field for p in bad] == ["prompt", "guidance", "iters", "resolution"]
    assert str(bad[2]) == "iters=0 is not allowed: an integer 1..100000"
    assert str(bad[3]) == "resolution=100 is not allowed: a multiple of 16 from 32 to 512 (nearest: 96 or 112)"
    assert str(bad[1]) == "guidance=250.0 is not allowed: a number 0..200"
    assert "(nearest: 32 or 48)" in str(request.problems(s.replace(resolution=8))[0])
    assert "(nearest: 496 or 512)" in str(request.problems(s.replace(resolution=4000))[0])
    with pytest.raises(request.BadSetting, match="steps"):
        s.replace(steps=3)  # score distillation counts iterations, not denoising steps


def test_asset_params_are_an_asset_request_the_engine_accepts():
    from sfumato.core.schema import AssetRequest

    s = request.AssetSettings(prompt="a wooden chair", negative="blurry", iters=20, resolution=64, guidance=30)
    params = request.params(s, seed=9, default_bundle="tiny-sd15")
    assert params == {"prompt": "a wooden chair", "negative": "blurry", "iters": 20, "resolution": 64, "seed": 9,
                      "guidance": 30.0, "size": AssetRequest.size, "render": AssetRequest.render, "bundle": "tiny-sd15"}
    assert request.params(s.replace(bundle="mine"), seed=1)["bundle"] == "mine"
    with pytest.raises(request.BadSetting, match="iters=0"):
        request.params(s.replace(iters=0), seed=1)
    req = _engine_accepts("asset", params)
    assert (req.prompt, req.iters, req.resolution, req.seed, req.guidance) == ("a wooden chair", 20, 64, 9, 30.0)
    defaults = request.AssetSettings()
    assert (defaults.iters, defaults.resolution, defaults.guidance) == (AssetRequest.iters, AssetRequest.resolution,
                                                                       AssetRequest.guidance)
