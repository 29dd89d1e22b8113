"""What each bundle can do (``core/capabilities.py``), in the worker's ``info``; the depth hint, followed, works;
``sfumato bundle import`` takes ``--dtype`` and ``--config-dir``."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from conftest import ROOT
from sfumato.core.bundle import open_bundle, resolve, verify
from sfumato.core.capabilities import capabilities, describe, native_size
from sfumato.core.errors import ComponentMissing
from sfumato.core.image import native_size as loaded_native_size
from sfumato.core.loading import load_models
from sfumato.core.safetensors_check import read_header
from sfumato.core.tiny import build_tiny_bundle

CPU = torch.device("cpu")


def _sfumato(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "sfumato.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_the_embedded_bundle_says_what_it_can_and_cannot_do():
    caps = capabilities(resolve("materials"))
    assert (caps["text"], caps["image_to_image"], caps["depth"], caps["motion_module"]) == (True, True, True, True)
    assert caps["native_size"] == 256 and caps["default_steps"] == 16  # its manifest's default_size and steps
    assert caps["motion_frames"] == 8 and caps["controlnets"] == ["depth"] and caps["loras"] == []
    assert caps["can"] == ["text to image", "image to image", "depth guidance (depth ControlNet)",
                           "video with its motion module (8 frames)"]
    assert caps["cannot"] == []
    assert json.loads(json.dumps(caps)) == caps  # plain data: it crosses the protocol as it is


def test_native_size_read_from_the_configs_is_the_size_jobs_use(sd15, sd15_models):
    caps = capabilities(open_bundle(sd15))
    assert caps["depth"] and caps["controlnets"] == ["depth"] and not caps["motion_module"]
    assert caps["cannot"] == ["frame attention (motion module)"]
    assert native_size(open_bundle(sd15)) == loaded_native_size(sd15_models)  # no manifest default_size here


def test_the_loras_a_bundle_holds_are_listed_by_the_names_a_job_gives(tmp_path, sd15):
    bundle = tmp_path / "with-loras"
    shutil.copytree(sd15, bundle)
    (bundle / "loras").mkdir()
    for name in ("watercolour", "brick"):
        (bundle / "loras" / f"{name}.safetensors").write_bytes(b"")
    (bundle / "loras" / "notes.txt").write_text("not a LoRA")
    caps = capabilities(open_bundle(bundle))
    assert caps["loras"] == ["brick", "watercolour"] and caps["can"][-1] == "LoRAs brick, watercolour"


def test_a_bundle_whose_configs_cannot_be_read_says_why_and_hides_no_other(tmp_path, sd15):
    broken = tmp_path / "broken"
    shutil.copytree(sd15, broken)
    (broken / "unet" / "config.json").write_text("{not json")
    listed = describe([open_bundle(broken), open_bundle(sd15)])
    assert "unet/config.json" in listed[0]["error"] and "depth" not in listed[0]
    assert listed[1]["depth"] and "error" not in listed[1]


def test_worker_info_carries_each_bundles_capabilities(bundle_root):
    from sfumato.core.worker import Worker

    info = Worker(io.StringIO(), {}, device="cpu").info()
    by_name = {c["name"]: c for c in info["capabilities"]}
    assert [c["name"] for c in info["capabilities"]] == info["bundles"]
    assert by_name["materials"]["motion_module"] and by_name["materials"]["depth"]
    assert by_name["tiny-sd15"]["depth"] and by_name["tiny-sdxl"]["family"] == "sdxl"


def test_the_depth_hint_followed_gives_the_bundle_depth(tmp_path, sd15):
    bundle = build_tiny_bundle(tmp_path / "plain", "sd15", controlnet=False)
    with pytest.raises(ComponentMissing) as refused:
        load_models(open_bundle(bundle), CPU, torch.float32, need_controlnet=True)
    assert "`sfumato bundle add-controlnet NAME FOLDER`" in refused.value.hint
    # what the old hint said, a controlnet_depth/ folder, changes nothing for a bundle with a manifest
    shutil.copytree(sd15 / "controlnet_depth", bundle / "controlnet_depth")
    with pytest.raises(ComponentMissing):
        load_models(open_bundle(bundle), CPU, torch.float32, need_controlnet=True)
    r = _sfumato("bundle", "add-controlnet", str(bundle), str(sd15 / "controlnet_depth"))
    assert r.returncode == 0, r.stderr
    models = load_models(open_bundle(bundle), CPU, torch.float32, need_controlnet=True)
    assert models.controlnet is not None and capabilities(open_bundle(bundle))["depth"]
    assert any(line.endswith("sha256 ok") and "controlnet_depth/" in line for line in verify(open_bundle(bundle)))
    r = _sfumato("bundle", "add-controlnet", str(bundle), str(sd15 / "controlnet_depth"))
    assert r.returncode == 2 and "pass --overwrite" in r.stderr
    r = _sfumato("bundle", "add-controlnet", str(bundle), str(tmp_path))
    assert r.returncode == 2 and "is not allowed: a diffusers ControlNet folder" in r.stderr


# ---- sfumato bundle import --dtype --config-dir ------------------------------------------------------------
def test_bundle_import_takes_dtype_and_config_dir(tmp_path):
    from test_convert import ldm_checkpoint

    source = build_tiny_bundle(tmp_path / "src", "sd15", controlnet=False)
    checkpoint = tmp_path / "tiny.safetensors"
    save_file(ldm_checkpoint(source, "sd15"), str(checkpoint))
    r = _sfumato("bundle", "import", str(checkpoint), "--family", "sd15", "--dest", str(tmp_path / "out"),
                 "--dtype", "fp32", "--config-dir", str(source))
    assert r.returncode == 0, r.stderr
    unet = tmp_path / "out" / "tiny" / "unet"
    assert {t.dtype for t in read_header(unet / "diffusion_pytorch_model.safetensors").values()} == {"F32"}
    assert json.loads((unet / "config.json").read_text())["sample_size"] == \
        json.loads((source / "unet" / "config.json").read_text())["sample_size"]  # the tiny configs, not SD1.5's
    r = _sfumato("bundle", "import", str(checkpoint), "--family", "sd15", "--dest", str(tmp_path / "out2"),
                 "--dtype", "bf16", "--config-dir", str(source))
    assert r.returncode == 2 and r.stderr.strip() == "sfumato: error: dtype='bf16' is not allowed: fp16, fp32"
    assert not (tmp_path / "out2").exists()
