"""The documented headless setup and every script in docs/examples, run the way a user runs them: each in a
fresh Blender process (the ``bpy`` module in a subprocess with its own user folders), on the embedded
``materials`` bundle, as docs/examples/README.md and the scripts' docstrings write them (smaller sizes)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT

# Blender runs only in the subprocesses, each with the user folders below: importing bpy here would write to
# the home folder.
if importlib.util.find_spec("bpy") is None:
    pytest.skip("needs the bpy module (pip install bpy==5.0.1)", allow_module_level=True)

EXAMPLES = ROOT / "docs" / "examples"
ADDON = "bl_ext.user_default.sfumato"

# a later process: the preferences the first one saved, the .blend it saved, the engine check
REOPEN = textwrap.dedent("""
    import json, sys
    import bpy
    import addon_utils

    blend, name = sys.argv[1:3]
    out = {"enabled_at_start": name in bpy.context.preferences.addons}
    # enabled without default_set: the API still reaches its preferences
    addon_utils.enable(name)
    import sfumato_api
    out["bare_enable_prefs"] = sfumato_api.preferences().device
    addon_utils.disable(name)
    bpy.ops.wm.read_userpref()  # step 1 of headless.py
    import sfumato_api
    p = sfumato_api.preferences()
    out["prefs"] = [p.engine_python, p.device]
    bpy.ops.wm.open_mainfile(filepath=blend)
    out["images"] = [[i.name, list(i.size), i.use_fake_user, i["sfumato"]["bundle"], i["sfumato"]["steps"]]
                     for i in bpy.data.images if "sfumato" in i]
    bpy.ops.sfumato.check_engine()
    out["check"] = [line for line, alert in sfumato_api.runtime.engine_check_lines()]
    out["caps"] = sfumato_api.capabilities("materials")["can"]
    scene = bpy.context.scene  # a quick render engine for the restyle example
    scene.render.engine = "CYCLES"
    scene.cycles.samples, scene.cycles.device = 1, "CPU"
    bpy.ops.wm.save_mainfile()
    print("RESULT " + json.dumps(out))
""")

# what `blender -b FILE --python SCRIPT -- ARGS` does, with the bpy module
RUN_EXAMPLE = textwrap.dedent("""
    import runpy, sys
    import bpy

    blend, script, *args = sys.argv[1:]
    bpy.ops.wm.open_mainfile(filepath=blend)
    sys.argv = ["blender", "-b", blend, "--python", script, "--", *args]
    runpy.run_path(script, run_name="__main__")
""")


@pytest.fixture(scope="module")
def blender(tmp_path_factory):
    """Run Python in a fresh Blender process with this module's user folders (shared by its tests, in order)."""
    user = tmp_path_factory.mktemp("blender-user")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFUMATO_")}
    env.update(BLENDER_USER_RESOURCES=str(user / "resources"), XDG_CACHE_HOME=str(user / "cache"),
               IMAGEIO_USERDIR=str(user / "imageio"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")

    def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=user)

    run.user = user
    return run


@pytest.fixture(scope="module")
def scene(blender, tmp_path_factory) -> Path:
    """headless.py as its docstring writes it, in a fresh process: install the built zip, enable, set the engine
    and save the preferences, one 64² image on the embedded bundle, the .blend saved."""
    from sfumato.core.addon_build import build_addon

    written = "python docs/examples/headless.py --zip dist/sfumato-0.1.0.zip --out scene.blend"
    assert written in (EXAMPLES / "headless.py").read_text() and written in (EXAMPLES / "README.md").read_text()
    folder = tmp_path_factory.mktemp("headless")
    zip_path = build_addon(folder / "dist")
    blend = folder / "scene.blend"
    proc = blender([str(EXAMPLES / "headless.py"), "--zip", str(zip_path), "--engine-python", sys.executable,
                    "--device", "cpu", "--save-preferences", "--size", "64", "--steps", "2", "--out", str(blend)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    made = [ln.rpartition(" -> ")[2] for ln in proc.stdout.splitlines()
            if ln.startswith("sfumato: 'weathered red brick wall s0' -> ")]
    assert len(made) == 1 and blend.is_file()
    assert Path(made[0]).is_file() and Path(made[0]).is_relative_to(folder / "sfumato")  # next to the .blend
    return blend


def test_headless_steps_install_enable_set_the_engine_run_and_save(blender, scene):
    proc = blender(["-c", REOPEN, str(scene), ADDON])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["enabled_at_start"] is False  # the bpy module starts on factory preferences: hence step 1
    assert out["bare_enable_prefs"] == "auto"  # enabled without default_set, its preferences are there
    assert out["prefs"] == [sys.executable, "cpu"]  # saved by the first process, read back by step 1
    assert out["images"] == [["weathered red brick wall s0", [64, 64], True, "materials", 2]]
    assert "materials (mini, 256 px, 16 steps): text to image, image to image, depth guidance" in \
        " ".join(out["check"])
    assert not any("no depth guidance" in line for line in out["check"])
    assert out["caps"] == ["text to image", "image to image", "depth guidance (depth ControlNet)",
                           "video with its motion module (8 frames)"]


def test_variations_example_runs_on_the_embedded_bundle_as_written(blender, scene, tmp_path):
    doc = (EXAMPLES / "variations.py").read_text()
    assert "--seeds 8 --mode restyle --steps 20 --save" in doc  # the written command, here smaller
    proc = blender(["-c", RUN_EXAMPLE, str(scene), str(EXAMPLES / "variations.py"),
                    "--prompt", "red brick facade", "--prompt", "white render facade", "--seeds", "2",
                    "--mode", "restyle", "--steps", "2", "--size", "64x64", "--out", str(tmp_path), "--save"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "sfumato: 4/4 images" in proc.stdout
    made = dict(ln[len("sfumato: "):].split(" -> ") for ln in proc.stdout.splitlines() if " -> " in ln)
    assert sorted(made) == ["'red brick facade s0'", "'red brick facade s1'", "'white render facade s0'",
                            "'white render facade s1'"]
    assert all(Path(f).is_file() and Path(f).is_relative_to(tmp_path) for f in made.values())
    sheet = next(ln for ln in proc.stdout.splitlines() if ln.startswith("sfumato: contact sheet "))
    assert Path(sheet.rpartition(" ")[2]).is_file()
    assert len(list(tmp_path.rglob("*.render.png"))) == 1  # the camera rendered once for the batch


def test_variations_depth_mode_runs_on_the_embedded_bundle(blender, scene, tmp_path):
    """The embedded bundle has a depth ControlNet: depth mode renders Blender's depth once and follows it."""
    proc = blender(["-c", RUN_EXAMPLE, str(scene), str(EXAMPLES / "variations.py"), "--prompt", "red brick house",
                    "--seeds", "1", "--mode", "depth", "--steps", "2", "--size", "64x64", "--out", str(tmp_path)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "sfumato: 1/1 images" in proc.stdout and "Traceback" not in proc.stderr
    assert len(list(tmp_path.rglob("*.depth.npy"))) == 1  # the camera's depth, rendered once


def test_batch_example_runs_on_the_embedded_bundle_and_resumes(blender, scene, tmp_path):
    doc = (EXAMPLES / "batch.py").read_text()
    assert "--spec options.csv --workers 2 --save" in doc
    args = ["-c", RUN_EXAMPLE, str(scene), str(EXAMPLES / "batch.py"), "--steps", "2", "--size", "64",
            "--out", str(tmp_path / "night"), "--save"]
    proc = blender(args, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "sfumato: 8/8 " in proc.stdout and "sfumato: 8 images, 0 clips, 0 objects" in proc.stdout
    assert len(list((tmp_path / "night" / "sheets").glob("*.png"))) == 4  # a contact sheet per material
    again = blender(args, timeout=300)  # everything is there: nothing runs, everything is loaded
    assert again.returncode == 0 and "sfumato: 8 images" in again.stdout and "8/8 " not in again.stdout
