"""Single-file checkpoint import: tiny models written in the original layout must come back exactly."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ldm_layout import clip_to_ldm, openclip_to_ldm, unet_to_ldm, vae_to_ldm
from sfumato.core import convert
from sfumato.core.bundle import open_bundle, verify
from sfumato.core.errors import BadParameter, BundleCorrupt, PickleRefused
from sfumato.core.loading import load_models
from sfumato.core.safetensors_check import read_header, sha256
from sfumato.core.tiny import build_tiny_bundle

ROOT = Path(__file__).resolve().parent.parent
CPU = torch.device("cpu")


def _models(folder: Path):
    return load_models(open_bundle(folder), CPU, torch.float32)


def _config(folder: Path, component: str) -> dict:
    return json.loads((folder / component / "config.json").read_text())


def ldm_checkpoint(folder: Path, family: str) -> dict[str, torch.Tensor]:
    """The tiny bundle at ``folder`` as one state dict in ``family``'s original single-file layout."""
    models = _models(folder)
    state = {**unet_to_ldm(models.unet.state_dict(), _config(folder, "unet")),
             **vae_to_ldm(models.vae.state_dict(), _config(folder, "vae"))}
    encoder = models.text_encoders[0].state_dict()
    if family == "sd15":
        state.update(clip_to_ldm(encoder, "cond_stage_model.transformer."))
    elif family == "sd21":  # OpenCLIP with one more layer and a projection, which SD 2.x does not use
        extra = {k.replace("layers.1.", "layers.2."): v + 1 for k, v in encoder.items() if "layers.1." in k}
        hidden = encoder["final_layer_norm.weight"].shape[0]
        state.update(openclip_to_ldm({**encoder, **extra, "text_projection.weight": torch.randn(hidden, hidden)},
                                     "cond_stage_model.model."))
    else:
        state.update(clip_to_ldm(encoder, "conditioner.embedders.0.transformer."))
        state.update(openclip_to_ldm(models.text_encoders[1].state_dict(), "conditioner.embedders.1.model."))
    # what real files carry besides the models: schedule buffers and EMA copies
    state["alphas_cumprod"] = torch.linspace(1, 0, 1000)
    for k in list(state)[:3]:
        state["model_ema." + k.replace("model.diffusion_model.", "diffusion_model").replace(".", "")] = state[k].clone()
    return {k: v.contiguous() for k, v in state.items()}


@pytest.fixture(scope="module")
def tiny_sd15(tmp_path_factory) -> Path:
    return build_tiny_bundle(tmp_path_factory.mktemp("src") / "tiny-sd15", "sd15", controlnet=False)


@pytest.fixture(scope="module")
def sd15_file(tiny_sd15, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny-sd15-single.safetensors"
    save_file(ldm_checkpoint(tiny_sd15, "sd15"), str(path))
    return path


def assert_same_weights(source: Path, imported: Path) -> None:
    a, b = _models(source), _models(imported)
    pairs = [("unet", a.unet, b.unet), ("vae", a.vae, b.vae)]
    pairs += [(f"text_encoder{i}", x, y) for i, (x, y) in enumerate(zip(a.text_encoders, b.text_encoders))]
    assert len(a.text_encoders) == len(b.text_encoders)
    for name, x, y in pairs:
        sx, sy = x.state_dict(), y.state_dict()
        assert sx.keys() == sy.keys(), name
        for k in sx:
            assert torch.equal(sx[k], sy[k]), f"{name} {k} differs"


# ---------------------------------------------------------------- shipped family configs

PARAMS_M = {  # millions of parameters of the public models
    "sd15": {"unet": 859.52, "vae": 83.65, "text_encoder": 123.06},
    "sd21": {"unet": 865.91, "vae": 83.65, "text_encoder": 340.39},
    "sdxl": {"unet": 2567.46, "vae": 83.65, "text_encoder": 123.06, "text_encoder_2": 694.66},
}


@pytest.mark.parametrize("family", sorted(PARAMS_M))
def test_family_configs_build_with_the_right_sizes(family):
    import diffusers

    configs = convert.load_configs(family)
    for component, millions in PARAMS_M[family].items():
        with torch.device("meta"):
            model = convert._empty_model(component, configs[component])
        count = sum(p.numel() for p in model.parameters()) / 1e6
        assert abs(count - millions) / millions < 0.005, (family, component, count)
    scheduler = getattr(diffusers, configs["scheduler"]["_class_name"]).from_config(configs["scheduler"])
    assert scheduler.config.prediction_type == ("v_prediction" if family == "sd21" else "epsilon")
    assert scheduler.config.beta_schedule == "scaled_linear"
    assert configs["vae"]["scaling_factor"] == (0.13025 if family == "sdxl" else 0.18215)
    assert configs["vae"]["force_upcast"] is (family == "sdxl")
    pads = json.loads((convert.FAMILY_DIR / family / "tokenizers.json").read_text())
    assert pads["tokenizer"]["pad_token"] == ("!" if family == "sd21" else "<|endoftext|>")
    assert set(pads) == ({"tokenizer", "tokenizer_2"} if family == "sdxl" else {"tokenizer"})


def test_family_configs_are_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'"sfumato\.core" = \[[^\]]*"families/\*/\*\.json"', text)


# ---------------------------------------------------------------- round trips

def test_sd15_round_trip(tiny_sd15, sd15_file, tmp_path):
    stages = []
    out = convert.import_checkpoint(sd15_file, "sd15", dest_root=tmp_path, config_dir=tiny_sd15, dtype="fp32",
                                    on_progress=lambda stage, fraction: stages.append((stage, fraction)))
    assert out == tmp_path / "tiny-sd15-single"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-sd15-single"]  # no temporary folder left
    assert_same_weights(tiny_sd15, out)
    bundle = open_bundle(out)
    assert bundle.family == "sd15"
    assert any("sha256 ok" in line for line in verify(bundle))
    assert bundle.manifest["source"] == {"file": sd15_file.name, "sha256": sha256(sd15_file)}
    assert bundle.manifest["description"] == f"imported from {sd15_file.name}"
    assert [s for s, _ in stages][0] == "read" and stages[-1] == ("done", 1.0)
    assert [f for _, f in stages] == sorted(f for _, f in stages)
    assert {"unet", "vae", "text_encoder"} <= {s for s, _ in stages}

    with pytest.raises(BadParameter, match="already exists"):
        convert.import_checkpoint(sd15_file, "sd15", dest_root=tmp_path, config_dir=tiny_sd15)
    again = convert.import_checkpoint(sd15_file, "sd15", dest_root=tmp_path, config_dir=tiny_sd15, overwrite=True)
    assert again == out and sorted(p.name for p in tmp_path.iterdir()) == ["tiny-sd15-single"]
    header = read_header(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert {info.dtype for info in header.values()} == {"F16"}  # the default dtype


def test_pickle_is_refused_unless_allowed(tiny_sd15, sd15_file, tmp_path):
    from safetensors.torch import load_file

    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(str(sd15_file))}, ckpt)
    with pytest.raises(PickleRefused, match="--allow-pickle"):
        convert.import_checkpoint(ckpt, "sd15", dest_root=tmp_path / "out", config_dir=tiny_sd15)
    out = convert.import_checkpoint(ckpt, "sd15", dest_root=tmp_path / "out", config_dir=tiny_sd15,
                                    allow_pickle=True, dtype="fp32", name="from-pickle")
    assert out.name == "from-pickle"
    assert_same_weights(tiny_sd15, out)


def test_sd21_round_trip_drops_the_last_openclip_layer(tiny_sd15, tmp_path):
    import shutil

    from transformers import CLIPTokenizer

    path = tmp_path / "tiny-sd21.safetensors"
    save_file(ldm_checkpoint(tiny_sd15, "sd21"), str(path))
    configs = tmp_path / "configs"  # configs only: the import writes the real CLIP tokenizer itself
    shutil.copytree(tiny_sd15, configs, ignore=shutil.ignore_patterns("tokenizer", "*.safetensors"))
    out = convert.import_checkpoint(path, "sd21", dest_root=tmp_path / "out", config_dir=configs, dtype="fp32")
    assert open_bundle(out).family == "sd21"
    assert_same_weights(tiny_sd15, out)
    tokenizer = CLIPTokenizer.from_pretrained(str(out / "tokenizer"), local_files_only=True)
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tokenizer.pad_token == "!" and tokenizer.pad_token_id == 0 and len(tokenizer) == 49408


def test_sdxl_round_trip(tmp_path):
    source = build_tiny_bundle(tmp_path / "tiny-sdxl", "sdxl", controlnet=False)
    path = tmp_path / "tiny-sdxl.safetensors"
    save_file(ldm_checkpoint(source, "sdxl"), str(path))
    out = convert.import_checkpoint(path, "sdxl", dest_root=tmp_path / "out", config_dir=source, dtype="fp32")
    bundle = open_bundle(out)
    assert bundle.family == "sdxl" and {"text_encoder_2", "tokenizer_2"} <= set(bundle.components)
    verify(bundle)
    assert_same_weights(source, out)


# ---------------------------------------------------------------- errors

def test_wrong_family_names_the_right_one(sd15_file, tmp_path):
    for family in ("sdxl", "sd21"):
        with pytest.raises(BadParameter) as info:
            convert.import_checkpoint(sd15_file, family, dest_root=tmp_path)
        message = str(info.value)
        assert f"family={family!r}" in message and "holds sd15 weights" in message
        assert "cond_stage_model.transformer.*" in message and "--family sd15" in message
    with pytest.raises(BadParameter, match="sd15, sd21, sdxl"):
        convert.import_checkpoint(sd15_file, "sd3", dest_root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_not_a_checkpoint_lists_the_expected_prefixes(tmp_path):
    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_down.weight": torch.zeros(2)}, str(path))
    with pytest.raises(BundleCorrupt, match=r"model\.diffusion_model\..*first_stage_model\.") as info:
        convert.import_checkpoint(path, "sd15", dest_root=tmp_path / "out")
    assert "lora.safetensors" in str(info.value)


def test_missing_tensor_is_named(tiny_sd15, sd15_file, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(sd15_file))
    gone = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
    del state[gone]
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    with pytest.raises(BundleCorrupt) as info:
        convert.import_checkpoint(path, "sd15", dest_root=tmp_path / "out", config_dir=tiny_sd15)
    assert str(path) in str(info.value) and gone in str(info.value)
    assert "down_blocks.0.resnets.0.conv1.weight" in str(info.value)
    assert not any((tmp_path / "out").iterdir())  # the half-written bundle was removed


def test_tiny_weights_do_not_fit_the_real_architecture(sd15_file, tmp_path):
    with pytest.raises(BundleCorrupt, match="of the unet"):
        convert.import_checkpoint(sd15_file, "sd15", dest_root=tmp_path)


def test_misshaped_tensor_raises_and_stray_tensor_warns(tiny_sd15, sd15_file, tmp_path, caplog):
    from safetensors.torch import load_file

    state = load_file(str(sd15_file))
    bad = dict(state, **{"first_stage_model.encoder.conv_in.weight": torch.zeros(3, 3)})
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(BundleCorrupt, match=r"wrong shape.*first_stage_model\.encoder\.conv_in\.weight"):
        convert.import_checkpoint(tmp_path / "bad.safetensors", "sd15", dest_root=tmp_path / "out",
                                  config_dir=tiny_sd15)
    stray = "model.diffusion_model.input_blocks.9.0.in_layers.2.weight"
    save_file(dict(state, **{stray: torch.zeros(3)}), str(tmp_path / "stray.safetensors"))
    with caplog.at_level("WARNING", logger="sfumato"):
        convert.import_checkpoint(tmp_path / "stray.safetensors", "sd15", dest_root=tmp_path / "out",
                                  config_dir=tiny_sd15)
    assert stray in caplog.text and "ignored 1 tensor" in caplog.text
