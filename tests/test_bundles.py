"""Bundles: discovery, loading round trips, pickle refusal, and corrupt bundles named precisely."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from sfumato.core import bundle as bundles
from sfumato.core.errors import BundleCorrupt, BundleNotFound, PickleRefused
from sfumato.core.loading import load_models


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_search_path_lists_resolves_and_summarises(bundle_root, sd15):
    names = [b.name for b in bundles.find_bundles()]
    assert {"tiny-sd15", "tiny-sdxl"} <= set(names)
    b = bundles.resolve("tiny-sd15")
    assert b.family == "sd15" and "controlnet_depth" in b.components
    assert bundles.resolve(str(sd15)).path == b.path
    s = b.summary()
    assert s["hash"] == b.identity() and len(s["hash"]) == 12 and s["bytes"] > 0
    with pytest.raises(BundleNotFound, match="available: .*tiny-sd15"):
        bundles.resolve("nope")


def test_loader_round_trip_equals_saved_weights(sd15):
    from diffusers import UNet2DConditionModel

    models = load_models(bundles.open_bundle(sd15), torch.device("cpu"), torch.float32)
    reference = UNet2DConditionModel.from_pretrained(sd15 / "unet", local_files_only=True)
    for (k, a), (_, b) in zip(models.unet.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), k
    assert models.tokenizers[0]("red brick wall").input_ids[:2] != [0, 0]


def test_plain_diffusers_folder_is_a_bundle_and_loads_in_diffusers(tmp_path, sd15_models):
    from diffusers import StableDiffusionPipeline

    m = sd15_models
    pipe = StableDiffusionPipeline(vae=m.vae, text_encoder=m.text_encoders[0], tokenizer=m.tokenizers[0],
                                   unet=m.unet, scheduler=__import__("diffusers").PNDMScheduler.from_config(
                                       m.scheduler_config), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(tmp_path / "plain")
    b = bundles.open_bundle(tmp_path / "plain")
    assert not b.has_manifest and b.family == "mini" and "unet" in b.components
    load_models(b, torch.device("cpu"), torch.float32)
    StableDiffusionPipeline.from_pretrained(tmp_path / "plain", local_files_only=True)


def test_sdxl_bundle_is_detected(sdxl):
    b = bundles.open_bundle(sdxl)
    assert b.family == "sdxl" and "text_encoder_2" in b.components


def test_pickle_weights_are_refused_unless_allowed(tmp_path, sd15):
    b = _copy(sd15, tmp_path / "pickled")
    unet = b / "unet" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    torch.save(load_file(unet), b / "unet" / "diffusion_pytorch_model.bin")
    unet.unlink()
    with pytest.raises(PickleRefused, match="--allow-pickle") as err:
        load_models(bundles.open_bundle(b), torch.device("cpu"), torch.float32)
    assert "diffusion_pytorch_model.bin" in str(err.value)
    models = load_models(bundles.open_bundle(b), torch.device("cpu"), torch.float32, allow_pickle=True)
    assert models.unet is not None


def test_missing_component_is_named(tmp_path, sd15):
    b = _copy(sd15, tmp_path / "partial")
    shutil.rmtree(b / "vae")
    with pytest.raises(BundleCorrupt, match=r"vae.*folder of component 'vae' is missing"):
        bundles.open_bundle(b)


def test_truncated_file_is_named(tmp_path, sd15):
    b = _copy(sd15, tmp_path / "truncated")
    f = b / "vae" / "diffusion_pytorch_model.safetensors"
    f.write_bytes(f.read_bytes()[:-1000])
    with pytest.raises(BundleCorrupt, match="truncated") as err:
        load_models(bundles.open_bundle(b), torch.device("cpu"), torch.float32)
    assert err.value.path == str(f)
    with pytest.raises(BundleCorrupt, match="size .* differs from the manifest"):
        bundles.verify(bundles.open_bundle(b))


def test_hash_mismatch_is_found_by_verify(tmp_path, sd15):
    b = _copy(sd15, tmp_path / "tampered")
    f = b / "text_encoder" / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0xFF  # same size, different content
    f.write_bytes(bytes(data))
    assert bundles.verify(bundles.open_bundle(sd15))  # the original is fine
    with pytest.raises(BundleCorrupt, match="sha256") as err:
        bundles.verify(bundles.open_bundle(b))
    assert err.value.path == str(f)


def test_wrong_shapes_are_named(tmp_path, sd15):
    b = _copy(sd15, tmp_path / "mixed")
    cfg = json.loads((b / "unet" / "config.json").read_text())
    cfg["cross_attention_dim"] = 48
    (b / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(BundleCorrupt, match=r"wrong tensor shapes: .*attn2") as err:
        load_models(bundles.open_bundle(b), torch.device("cpu"), torch.float32)
    assert "diffusion_pytorch_model.safetensors" in err.value.path


def test_not_safetensors_is_named(tmp_path, sd15):
    b = _copy(sd15, tmp_path / "garbage")
    (b / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(BundleCorrupt, match="not a safetensors file|truncated|header"):
        load_models(bundles.open_bundle(b), torch.device("cpu"), torch.float32)


def test_bad_manifest_is_named(tmp_path, sd15):
    b = _copy(sd15, tmp_path / "badmanifest")
    (b / "sfumato.json").write_text("{not json")
    with pytest.raises(BundleCorrupt, match="sfumato.json: is not valid JSON"):
        bundles.open_bundle(b)
    (b / "sfumato.json").write_text(json.dumps({"format": 1, "family": "sd99", "components": {}}))
    with pytest.raises(BundleCorrupt, match="family='sd99'"):
        bundles.open_bundle(b)


def test_missing_controlnet_is_a_clear_error(tmp_path, sd15):
    from sfumato.core.errors import ComponentMissing
    from sfumato.core.loading import attach_controlnet

    b = _copy(sd15, tmp_path / "nocontrol")
    shutil.rmtree(b / "controlnet_depth")
    manifest = json.loads((b / "sfumato.json").read_text())
    del manifest["components"]["controlnet_depth"]
    (b / "sfumato.json").write_text(json.dumps(manifest))
    models = load_models(bundles.open_bundle(b), torch.device("cpu"), torch.float32)
    with pytest.raises(ComponentMissing, match="no depth ControlNet"):
        attach_controlnet(models)


def test_diffusers_folder_with_extra_components_and_variants(tmp_path, sd15):
    """A hub-style folder: feature_extractor/safety_checker entries are ignored, the plain weight file
    wins over an fp16 variant beside it."""
    b = _copy(sd15, tmp_path / "hub")
    (b / "sfumato.json").unlink()
    index = {"_class_name": "StableDiffusionPipeline", "feature_extractor": ["transformers", "CLIPImageProcessor"],
             "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
             **{c: ["diffusers" if c in ("unet", "vae", "scheduler") else "transformers", "x"]
                for c in ("unet", "vae", "text_encoder", "tokenizer", "scheduler")}}
    (b / "model_index.json").write_text(json.dumps(index))
    (b / "feature_extractor").mkdir()
    (b / "feature_extractor" / "preprocessor_config.json").write_text("{}")
    shutil.copy(b / "unet" / "diffusion_pytorch_model.safetensors", b / "unet" / "diffusion_pytorch_model.fp16.safetensors")
    opened = bundles.open_bundle(b)
    assert set(opened.components) == {"unet", "vae", "text_encoder", "tokenizer", "scheduler", "controlnet_depth"}
    assert bundles.component_weights(b / "unet") == [b / "unet" / "diffusion_pytorch_model.safetensors"]
    load_models(opened, torch.device("cpu"), torch.float32)


def test_a_file_of_another_model_is_named(tmp_path, sd15):
    b = _copy(sd15, tmp_path / "swapped")
    shutil.copy(b / "vae" / "diffusion_pytorch_model.safetensors", b / "text_encoder" / "model.safetensors")
    bundles.write_manifest(b, name="swapped", family="sd15", license="test")  # hashes agree: the shapes must tell
    with pytest.raises(BundleCorrupt, match="none of its .* tensors belongs to a CLIPTextModel") as err:
        load_models(bundles.open_bundle(b), torch.device("cpu"), torch.float32)
    assert err.value.path.endswith("text_encoder/model.safetensors")


def test_manifest_with_wrong_types_is_named(tmp_path, sd15):
    b = _copy(sd15, tmp_path / "types")
    manifest = json.loads((b / "sfumato.json").read_text())
    manifest["components"] = ["unet", "vae"]
    (b / "sfumato.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleCorrupt, match="components must map"):
        bundles.open_bundle(b)
    assert "types" not in [x.name for x in bundles.find_bundles()]  # skipped, not a crash


def test_default_steps_come_from_the_manifest_and_bad_values_are_named(tmp_path, sd15):
    assert bundles.open_bundle(sd15).default_steps == bundles.DEFAULT_STEPS == 25  # its manifest names none
    assert bundles.resolve("materials").default_steps == 16  # measured: benchmarks/steps.py, RESULTS.md
    b = _copy(sd15, tmp_path / "steps")
    manifest = json.loads((b / "sfumato.json").read_text())
    (b / "sfumato.json").write_text(json.dumps({**manifest, "default_steps": 3}))
    opened = bundles.open_bundle(b)
    assert opened.default_steps == 3 and opened.summary()["default_steps"] == 3
    for bad in (0, 501, 2.5, "16", True):
        (b / "sfumato.json").write_text(json.dumps({**manifest, "default_steps": bad}))
        with pytest.raises(BundleCorrupt, match=re.escape(f"default_steps={bad!r}; allowed: an integer 1..500")):
            bundles.open_bundle(b)


def test_jobs_without_steps_take_the_bundles_default(tmp_path, sd15):
    """Image, texture and turntable jobs that name no step count run the bundle's ``default_steps``: the
    progress counts them and the provenance records them; a step count given wins."""
    import threading

    import trimesh

    from sfumato.core.jobs import JobContext
    from sfumato.kinds import run_job
    from sfumato.core.loading import ModelCache

    b = _copy(sd15, tmp_path / "three-steps")
    manifest = json.loads((b / "sfumato.json").read_text())
    (b / "sfumato.json").write_text(json.dumps({**manifest, "default_steps": 3}))
    mesh = tmp_path / "box.obj"
    trimesh.creation.box((2.0, 1.0, 1.0)).export(mesh)
    cache = ModelCache()

    def run(kind: str, params: dict, output: str) -> tuple[dict, list[int]]:
        events: list[dict] = []
        ctx = JobContext("s", cache, "cpu", "fp32", threading.Event(), lambda e, **f: events.append(f),
                         preview_every=0)
        result = run_job(kind, {"bundle": str(b), "seed": 1, **params}, tmp_path / output, ctx)
        return result, sorted({f["total"] for f in events if "total" in f})

    image, totals = run("image", {"prompt": "brick", "width": 64, "height": 64}, "i.png")
    assert image["metadata"][0]["steps"] == 3 and totals == [3]
    image, totals = run("image", {"prompt": "brick", "width": 64, "height": 64, "steps": 2}, "j.png")
    assert image["metadata"][0]["steps"] == 2 and totals == [2]
    texture, totals = run("texture", {"mesh": str(mesh), "prompt": "brick", "views": 1, "fill_views": 0,
                                      "resolution": 64, "texture_size": 32}, "t.glb")
    assert texture["metadata"]["steps"] == 3 and totals == [3]
    video, totals = run("turntable", {"mesh": str(mesh), "prompt": "brick", "frames": 2, "resolution": 64,
                                      "conditioning": "depth"}, "v.gif")
    assert video["metadata"]["steps"] == 3 and video["metadata"]["settings"]["steps"] == 3 and totals == [3]
