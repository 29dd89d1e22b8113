"""The ``sfumato`` command line, run as a user runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT


def sfumato(*args: str, bundles) -> subprocess.CompletedProcess:
    env = dict(os.environ, SFUMATO_BUNDLES=str(bundles), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "sfumato.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_image_writes_pngs_with_provenance_and_a_summary(bundle_root, tmp_path):
    from sfumato.core.provenance import read_png_metadata

    r = sfumato("image", "red brick wall", "-o", str(tmp_path / "wall.png"), "--bundle", "tiny-sd15",
                "--seed", "3", "--n", "2", "--steps", "3", "--seamless", "x", bundles=bundle_root)
    assert r.returncode == 0, r.stderr
    assert "2 image(s)" in r.stdout and "seed 3, 4" in r.stdout
    meta = read_png_metadata(tmp_path / "wall_s4.png")
    assert meta["prompt"] == "red brick wall" and meta["seed"] == 4 and meta["seamless"] == "x"
    assert meta["bundle"] == "tiny-sd15" and len(meta["bundle_hash"]) == 12 and meta["sfumato_version"]
    assert "step 3/3" in r.stderr


def test_bad_input_is_one_line_and_non_zero(bundle_root, tmp_path):
    r = sfumato("image", "x", "-o", str(tmp_path / "x.png"), "--bundle", "tiny-sd15", "--width", "100",
                bundles=bundle_root)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["sfumato: error: width=100 is not allowed: a multiple of 8 from 64 to "
                                             "4096, or none for the bundle's native size (nearest: 96 or 104)"]
    r = sfumato("image", "x", "-o", str(tmp_path / "x.png"), "--bundle", "missing-one", bundles=bundle_root)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "missing-one" in r.stderr
    assert not (tmp_path / "x.png").exists()


def test_bundle_commands(bundle_root, tmp_path):
    r = sfumato("bundle", "list", bundles=bundle_root)
    assert r.returncode == 0 and "tiny-sd15" in r.stdout and "tiny-sdxl" in r.stdout
    info = json.loads(sfumato("bundle", "info", "tiny-sdxl", bundles=bundle_root).stdout)
    assert info["family"] == "sdxl" and "text_encoder_2" in info["components"]
    r = sfumato("bundle", "verify", "tiny-sd15", bundles=bundle_root)
    assert r.returncode == 0 and "sha256 ok" in r.stdout and r.stdout.strip().endswith("tiny-sd15: ok")
    r = sfumato("bundle", "make-tiny", "--dest", str(tmp_path), "--name", "mine", "--no-controlnet",
                bundles=bundle_root)
    assert r.returncode == 0 and (tmp_path / "mine" / "sfumato.json").is_file()


def test_info_reports_device_and_bundles(bundle_root):
    r = sfumato("info", bundles=bundle_root)
    info = json.loads(r.stdout)
    assert info["device"] == "cpu" and info["dtype"] == "float32" and "tiny-sd15" in info["bundles"]


def test_a_depth_map_of_another_size_is_resized_and_said_and_a_flat_one_warned(bundle_root, tmp_path):
    import numpy as np
    from PIL import Image

    from sfumato.core.provenance import read_png_metadata

    ramp = np.tile(np.linspace(0, 255, 96, dtype=np.uint8), (48, 1))  # 96x48: twice as wide as tall
    Image.fromarray(ramp).save(tmp_path / "wide.png")
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(tmp_path / "flat.png")
    args = ("image", "a house", "--bundle", "tiny-sd15", "--steps", "2", "--width", "64", "--height", "64")
    r = sfumato(*args, "-o", str(tmp_path / "a.png"), "--depth", str(tmp_path / "wide.png"), bundles=bundle_root)
    assert r.returncode == 0, r.stderr
    assert ("warning: depth_image wide.png is 96x48; resized to the request's 64x64 (aspect 2.00 stretched to 1.00"
            in r.stderr)
    assert read_png_metadata(tmp_path / "a.png")["mode"] == "depth"
    r = sfumato(*args, "-o", str(tmp_path / "b.png"), "--depth", str(tmp_path / "flat.png"), bundles=bundle_root)
    assert r.returncode == 0, r.stderr
    assert "warning: depth map flat.png has one value everywhere (0.50)" in r.stderr and "resized" not in r.stderr
