"""The built extension zip installed with Blender's own extension machinery, in a fresh headless
Blender (a subprocess with its own user folders), then the documented example run unattended."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT

# Blender runs only in the subprocesses, each with its own user folders: importing bpy here, before
# those folders are isolated, would write to the home folder.
if importlib.util.find_spec("bpy") is None:
    pytest.skip("needs the bpy module (pip install bpy==5.0.1)", allow_module_level=True)

INSTALL = textwrap.dedent("""
    import json, sys
    import bpy
    import addon_utils, mathutils

    zip_path, blend, bundles = sys.argv[1:4]
    bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
    name = "bl_ext.user_default.sfumato"
    out = {"enabled": name in bpy.context.preferences.addons}
    p = bpy.context.preferences.addons[name].preferences
    out["prefs"] = [p.device, p.default_bundle, p.engine_python]
    import sfumato_api
    out["api"] = sfumato_api.__name__
    p.bundle_folder, p.device, p.threads, p.default_bundle = bundles, "cpu", 1, "tiny-sd15"
    bpy.ops.sfumato.check_engine()
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    bpy.ops.mesh.primitive_cube_add(size=2)
    bpy.ops.mesh.primitive_plane_add(size=10, location=(0, 0, -1))
    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(cam)
    cam.location = (0, -6, 2)
    cam.rotation_euler = (-cam.location).to_track_quat("-Z", "Y").to_euler()
    scene.camera = cam
    s = scene.sfumato
    s.prompt, s.steps, s.width, s.height = "stone", 2, 64, 64
    out["op"] = sorted(bpy.ops.sfumato.image(mode="depth"))
    image = bpy.data.images[scene.sfumato_history[-1].image]
    out["image"] = [image.name, list(image.size), image["sfumato"]["mode"]]
    out["engine_in_blender"] = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "diffusers", "sfumato"))
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    addon_utils.disable(name, default_set=True)
    out["left"] = [hasattr(bpy.types.Scene, "sfumato"), "sfumato_api" in sys.modules]
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


def _blender(code: str, args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_extension_zip_installs_with_blenders_machinery_and_the_example_runs_unattended(tmp_path, bundle_root):
    from sfumato.core.addon_build import build_addon

    zip_path = build_addon(tmp_path / "dist")
    user = tmp_path / "blender-user"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFUMATO_")}
    env.update(BLENDER_USER_RESOURCES=str(user / "resources"), XDG_CACHE_HOME=str(user / "cache"),
               IMAGEIO_USERDIR=str(user / "imageio"), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    blend = tmp_path / "scene.blend"
    proc = _blender(INSTALL, [str(zip_path), str(blend), str(bundle_root)], env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["enabled"] and out["prefs"] == ["auto", "materials", ""]
    assert out["api"] == "bl_ext.user_default.sfumato.api"
    assert out["op"] == ["FINISHED"] and out["image"] == ["stone s0", [64, 64], "depth"]
    assert out["engine_in_blender"] == []  # Blender's process never imports torch or the engine
    assert out["left"] == [False, False]
    assert (user / "resources" / "extensions" / "user_default" / "sfumato" / "blender_manifest.toml").is_file()

    # the documented example, unattended, in a fresh Blender that has the extension installed
    results = tmp_path / "results"
    env["SFUMATO_BUNDLES"] = str(bundle_root)
    proc = _blender(RUN_EXAMPLE, [str(blend), str(ROOT / "docs" / "examples" / "variations.py"),
                                  "--prompt", "red brick", "--prompt", "green moss", "--seeds", "2",
                                  "--mode", "depth", "--steps", "2", "--size", "64x64", "--bundle", "tiny-sd15",
                                  "--device", "cpu", "--out", str(results), "--save"], env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "sfumato: 4/4 images" in proc.stdout
    pngs = sorted(p.name for p in results.glob("*.png"))
    sheets = [p for p in pngs if "contact-sheet" in p]
    assert len(pngs) - len(sheets) == 4 and len(sheets) == 1  # the variations (a batch) and their sheet
    assert len(list(results.glob("inputs/*.depth.npy"))) == 1  # the depth was rendered once for the batch
    assert len((results / "batch-manifest.jsonl").read_text().splitlines()) == 4
    # a bad value: a one-line reason and exit status 1, no traceback
    proc = _blender(RUN_EXAMPLE, [str(blend), str(ROOT / "docs" / "examples" / "variations.py"),
                                  "--prompt", "x", "--size", "100x64", "--out", str(results)], env)
    assert proc.returncode == 1 and "width=100 is not allowed" in proc.stderr
    assert "Traceback" not in proc.stderr
