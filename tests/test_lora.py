"""LoRAs: files written by diffusers and peft (and the same weights in kohya-ss's layout) give diffusers' own image
with that LoRA; they are re-scaled and removed without reloading; bad files are refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from sfumato.core.errors import BadParameter, PickleRefused
from sfumato.core.image import ImageRequest, generate

TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def _fresh(path):
    """Models of their own: LoRAs must not leak into the session's shared ones."""
    from sfumato.core.bundle import open_bundle
    from sfumato.core.loading import load_models

    return load_models(open_bundle(path), torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def lora_files(sd15, tmp_path_factory):
    """One LoRA made by peft on the tiny U-Net and saved by diffusers (``save_lora_weights``), and the same weights
    converted by diffusers to kohya-ss's layout."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_kohya
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    unet = _fresh(sd15).unet
    unet.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights="gaussian"))
    torch.manual_seed(0)
    with torch.no_grad():  # B starts at zero (a LoRA that changes nothing): give it weights
        for name, p in unet.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.3)
    layers = get_peft_model_state_dict(unet)
    root = tmp_path_factory.mktemp("loras")
    StableDiffusionPipeline.save_lora_weights(root / "diffusers", unet_lora_layers=layers, safe_serialization=True)
    kohya = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in layers.items()})
    save_file({k: v.contiguous() for k, v in kohya.items()}, root / "style_kohya.safetensors")
    return root


def _pipe(models):
    import diffusers

    from sfumato.core.schedulers import make_scheduler

    m = models
    pipe = diffusers.StableDiffusionPipeline(vae=m.vae, text_encoder=m.text_encoders[0], tokenizer=m.tokenizers[0],
                                             unet=m.unet, scheduler=make_scheduler("dpmpp_2m", m.scheduler_config),
                                             safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _diff(a: Image.Image, b: Image.Image) -> np.ndarray:
    return np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32))


def _ours(models, **kw) -> Image.Image:
    req = ImageRequest(prompt="red brick wall", seed=5, steps=4, width=64, height=64, fast="off", **kw)
    return generate(req, models)[0].image


def test_diffusers_and_kohya_files_match_diffusers_pipeline(sd15, lora_files):
    theirs_models = _fresh(sd15)
    pipe = _pipe(theirs_models)
    pipe.load_lora_weights(str(lora_files / "diffusers"), adapter_name="style")
    pipe.set_adapters(["style"], adapter_weights=[0.7])
    theirs = pipe("red brick wall", num_inference_steps=4, guidance_scale=7.5, width=64, height=64,
                  generator=torch.Generator().manual_seed(5)).images[0]
    ours_models = _fresh(sd15)
    base = _ours(ours_models)
    for entry in (f"{lora_files / 'diffusers'}:0.7", f"{lora_files / 'style_kohya.safetensors'}:0.7"):
        ours = _ours(ours_models, loras=(entry,))
        assert _diff(ours, theirs).max() <= 1.0, entry  # within 1/255 of diffusers with the same LoRA
    assert _diff(base, theirs).mean() > 2  # and the LoRA does change the image


def test_rescaled_and_removed_without_reloading(sd15, lora_files):
    models = _fresh(sd15)
    entry = str(lora_files / "style_kohya.safetensors")
    base = _ours(models)
    weights = {id(p) for p in models.unet.parameters()}
    strong = _ours(models, loras=(f"{entry}:1.0",))
    half = _ours(models, loras=(f"{entry}:0.5",))
    off = _ours(models)  # no LoRA named: it is turned off, not unloaded
    assert len(models.extras["lora_loaded"]) == 1 and weights <= {id(p) for p in models.unet.parameters()}
    assert _diff(off, base).max() == 0
    assert _diff(strong, base).mean() > _diff(half, base).mean() > 0
    assert _diff(_ours(models, loras=(f"{entry}:0.5",)), half).max() == 0  # the same scale, the same image again


def test_provenance_and_the_cli(sd15, lora_files, tmp_path, bundle_root):
    from sfumato.cli import main

    out = tmp_path / "x.png"
    assert main(["image", "red brick", "--bundle", str(sd15), "--steps", "2", "--width", "64", "--height", "64",
                 "--seed", "1", "--lora", f"{lora_files / 'style_kohya.safetensors'}:0.8", "-o", str(out)]) == 0
    (lora,) = json.loads(Image.open(out).text["sfumato"])["loras"]
    assert lora["name"] == "style_kohya.safetensors" and lora["scale"] == 0.8 and len(lora["hash"]) == 12


def test_bad_loras_are_refused_by_name(sd15, sdxl, lora_files, tmp_path):
    from safetensors.torch import save_file

    models = _fresh(sd15)
    with pytest.raises(BadParameter, match="loras=.*:scale from -4 to 4"):
        from sfumato.core.checks import checked

        checked(ImageRequest(prompt="x", loras=("a.safetensors:nan",)))
    save_file({"foo.bar": torch.zeros(2)}, tmp_path / "odd.safetensors")
    with pytest.raises(BadParameter, match="layout|matched"):
        _ours(models, loras=(str(tmp_path / "odd.safetensors"),))
    (tmp_path / "cut.safetensors").write_bytes((lora_files / "style_kohya.safetensors").read_bytes()[:300])
    with pytest.raises(BadParameter, match="readable"):
        _ours(models, loras=(str(tmp_path / "cut.safetensors"),))
    (tmp_path / "old.ckpt").write_bytes(b"\x80\x02}q\x00.")
    with pytest.raises(PickleRefused) as err:
        _ours(models, loras=(str(tmp_path / "old.ckpt"),))
    assert "--allow-pickle" not in str(err.value)  # the hint names only what a job can do
    with pytest.raises(BadParameter, match="a LoRA of bundle tiny-sd15"):
        _ours(models, loras=("no-such-style",))
    xl = _fresh(sdxl)  # a LoRA for the SD 1.5 U-Net does not fit the SDXL one
    with pytest.raises(BadParameter, match="this bundle's networks|matched"):
        generate(ImageRequest(prompt="x", seed=1, steps=1, width=64, height=64,
                              loras=(str(lora_files / "diffusers"),)), xl)
    assert _diff(_ours(models), _ours(models)).max() == 0  # the models still work after every refusal
