"""Several ControlNets at once, each with its scale and share of the steps, as diffusers' multi-ControlNet does.

The second ControlNet is a diffusers ``ControlNetModel`` saved, written in the original single-file layout
(``control_model.*``, keys renamed back by ``controlnet_files``) and added with ``sfumato bundle add --as
controlnet-normal``; diffusers' ``StableDiffusionControlNetPipeline`` runs the ControlNet diffusers itself saved.
Both must give the same image within 1/255 on the CPU in fp32."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from controlnet_files import controlnet_to_original, tiny_controlnet
from sfumato.cli import main
from sfumato.core import schema
from sfumato.core.bundle import open_bundle
from sfumato.core.errors import BadParameter, ComponentMissing
from sfumato.core.image import ImageRequest, generate
from sfumato.core.loading import load_models
from sfumato.core.schedulers import make_scheduler

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def setup(sd15, tmp_path_factory):
    """A copy of the tiny sd15 bundle with a normal ControlNet added from an original-layout file, its models, the
    ControlNet diffusers saved, and two condition images."""
    from diffusers import ControlNetModel
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("multi")
    net = tiny_controlnet(sd15 / "unet", 5)
    net.save_pretrained(root / "normal_diffusers")
    state = load_file(str(root / "normal_diffusers" / "diffusion_pytorch_model.safetensors"))
    save_file(controlnet_to_original(state, dict(net.config)), str(root / "control_tiny_normal.safetensors"))
    shutil.copytree(sd15, root / "bundle")
    assert main(["bundle", "add", str(root / "bundle"), str(root / "control_tiny_normal.safetensors"),
                 "--as", "controlnet-normal"]) == 0
    rng = np.random.default_rng(4)
    Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))).save(root / "depth.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(root / "normal.png")
    models = load_models(open_bundle(root / "bundle"), CPU, torch.float32, controls=("depth", "normal"))
    theirs = ControlNetModel.from_pretrained(root / "normal_diffusers").eval()
    return root, models, theirs


def _pipeline(models, controlnet):
    from diffusers import StableDiffusionControlNetPipeline

    pipe = StableDiffusionControlNetPipeline(
        vae=models.vae, text_encoder=models.text_encoders[0], tokenizer=models.tokenizers[0], unet=models.unet,
        controlnet=controlnet, scheduler=make_scheduler("dpmpp_2m", models.scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _max_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max())


KW = dict(prompt="a brick house", seed=3, steps=5, width=64, height=64, scheduler="dpmpp_2m", fast="off")


def test_an_added_original_layout_controlnet_alone_matches_diffusers_pipeline(setup):
    root, models, theirs = setup
    ours = generate(ImageRequest(controls=(f"normal={root / 'normal.png'}",), control_weights=("normal=0.9",), **KW),
                    models)[0]
    ref = _pipeline(models, theirs)("a brick house", image=Image.open(root / "normal.png"), num_inference_steps=5,
                                    guidance_scale=7.5, controlnet_conditioning_scale=0.9,
                                    generator=torch.Generator().manual_seed(3)).images[0]
    assert _max_diff(ours.image, ref) <= 1.0
    assert ours.metadata["mode"] == "controlnet"
    assert ours.metadata["controls"] == [{"kind": "normal", "image": "normal.png", "scale": 0.9, "start": 0.0,
                                          "end": 1.0}]


def test_two_controlnets_with_scales_and_step_ranges_match_diffusers_multi_controlnet(setup):
    root, models, theirs = setup
    req = ImageRequest(depth_image=str(root / "depth.png"), controls=(f"normal={root / 'normal.png'}",),
                       control_weights=("depth=0.8,0,0.6", "normal=1.2,0.2,1"), **KW)
    ours = generate(req, models)[0].image
    pipe = _pipeline(models, [models.controlnet, theirs])
    ref = pipe("a brick house", image=[Image.open(root / "depth.png").convert("RGB"), Image.open(root / "normal.png")],
               num_inference_steps=5, guidance_scale=7.5, controlnet_conditioning_scale=[0.8, 1.2],
               control_guidance_start=[0.0, 0.2], control_guidance_end=[0.6, 1.0],
               generator=torch.Generator().manual_seed(3)).images[0]
    assert _max_diff(ours, ref) <= 1.0
    full = generate(replace_weights(req, ("depth=0.8", "normal=1.2")), models)[0].image
    assert _max_diff(ours, full) > 1.0  # the step ranges change the picture


def replace_weights(req: ImageRequest, weights: tuple[str, ...]) -> ImageRequest:
    from dataclasses import replace

    return replace(req, control_weights=weights)


def test_a_control_at_scale_zero_is_no_control_and_a_range_skips_the_network(setup, monkeypatch):
    root, models, _ = setup
    plain = generate(ImageRequest(**KW), models)[0].image
    zero = generate(ImageRequest(controls=(f"normal={root / 'normal.png'}",), control_weights=("normal=0",), **KW),
                    models)[0].image
    assert _max_diff(plain, zero) == 0
    calls = []
    real = models.controlnets["normal"].forward
    monkeypatch.setattr(models.controlnets["normal"], "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    generate(ImageRequest(controls=(f"normal={root / 'normal.png'}",), control_weights=("normal=1,0,0.4",), **KW),
             models)
    assert len(calls) == 2  # steps 0 and 1 of 5 (i/5 >= 0 and (i+1)/5 <= 0.4), one guided batch each


@pytest.mark.parametrize("controls,weights,depth,field,says", [
    (("shadow=a.png",), (), None, "controls", "KIND one of depth, normal, lineart, canny"),
    (("normal=a.png", "normal=b.png"), (), None, "controls", "normal is given twice"),
    (("depth=a.png",), (), "d.png", "controls", "here and as depth_image"),
    (("normal=",), (), None, "controls", "the path of an image"),
    (("normal=a.png",), ("lineart=1",), None, "control_weights", "a control the request has: normal"),
    (("normal=a.png",), ("normal=1,0.5,0.5",), None, "control_weights", "0 <= START < END <= 1"),
    (("normal=a.png",), ("normal=5",), None, "control_weights", "SCALE in 0..4"),
    (("normal=a.png",), ("normal=1,0",), None, "control_weights", "KIND=SCALE or KIND=SCALE,START,END"),
    (("normal=a.png",), ("normal=1", "normal=0.5"), None, "control_weights", "normal is given twice"),
])
def test_bad_controls_are_refused_naming_the_field(controls, weights, depth, field, says):
    req = ImageRequest(prompt="x", controls=controls, control_weights=weights, depth_image=depth)
    found = schema.control_problems(req)
    assert found and found[0].field == field and says in str(found[0])


def test_the_cli_takes_controls_and_refuses_a_kind_the_bundle_lacks(setup, bundle_root, tmp_path, capsys):
    root, _, _ = setup
    out = tmp_path / "o.png"
    code = main(["image", "a house", "--bundle", str(root / "bundle"), "--steps", "2", "--width", "64", "--height",
                 "64", "--control", f"normal={root / 'normal.png'}", "--control-weight", "normal=0.5,0,0.5",
                 "-o", str(out), "--fast", "off"])
    assert code == 0, capsys.readouterr()
    capsys.readouterr()
    code = main(["image", "a house", "--bundle", str(root / "bundle"), "--steps", "2", "--width", "64", "--height",
                 "64", "--control", f"lineart={root / 'normal.png'}", "-o", str(tmp_path / "p.png")])
    said = capsys.readouterr()
    assert code != 0 and "no lineart ControlNet" in said.out + said.err and "depth, normal" in said.out + said.err
    code = main(["image", "a house", "--bundle", str(root / "bundle"), "--control", f"normal={tmp_path}/none.png",
                 "-o", str(tmp_path / "q.png")])
    said = capsys.readouterr()
    assert code != 0 and "controls" in said.out + said.err and not (tmp_path / "q.png").exists()


def test_a_missing_kind_is_said_with_the_kinds_the_bundle_has(setup):
    _, models, _ = setup
    from sfumato.core.capabilities import capabilities
    from sfumato.core.loading import attach_controls

    caps = capabilities(models.bundle)
    assert caps["controlnets"] == ["depth", "normal"]
    assert "normal-map guidance (normal ControlNet)" in caps["can"]
    assert "several ControlNets at once (depth, normal)" in caps["can"]

    with pytest.raises(ComponentMissing, match="its ControlNets: depth, normal"):
        attach_controls(models, ("canny",))
    with pytest.raises(BadParameter):
        from sfumato.core.image import load_control

        load_control(str(setup[0] / "nothing.png"), 64, 64)


def test_an_original_layout_sdxl_controlnet_is_converted_and_matches_diffusers_pipeline(sdxl, tmp_path):
    """diffusers' converter reads SD 1.x/2.x originals; SDXL's text/time embedding (``label_emb``) is what we add."""
    from diffusers import ControlNetModel, StableDiffusionXLControlNetPipeline
    from safetensors.torch import load_file, save_file

    net = tiny_controlnet(sdxl / "unet", 7)
    net.save_pretrained(tmp_path / "cn")
    state = load_file(str(tmp_path / "cn" / "diffusion_pytorch_model.safetensors"))
    original = controlnet_to_original(state, dict(net.config))
    assert any(k.startswith("control_model.label_emb.") for k in original)
    save_file(original, str(tmp_path / "control_xl_canny.safetensors"))
    shutil.copytree(sdxl, tmp_path / "bundle")
    assert main(["bundle", "add", str(tmp_path / "bundle"), str(tmp_path / "control_xl_canny.safetensors"),
                 "--as", "controlnet-canny"]) == 0
    models = load_models(open_bundle(tmp_path / "bundle"), CPU, torch.float32, controls=("canny",))
    ours_state = models.controlnets["canny"].state_dict()
    assert set(ours_state) == set(net.state_dict())
    assert all(torch.equal(ours_state[k], v) for k, v in net.state_dict().items())  # tensor for tensor
    edges = Image.fromarray(np.where(np.random.default_rng(1).random((64, 64)) > 0.9, 255, 0).astype(np.uint8))
    edges.convert("RGB").save(tmp_path / "edges.png")
    req = ImageRequest(prompt="a glass pavilion", seed=4, steps=4, width=64, height=64, scheduler="euler",
                       guidance=5.0, controls=(f"canny={tmp_path / 'edges.png'}",), control_weights=("canny=0.8",),
                       fast="off")
    ours = generate(req, models)[0].image
    theirs_net = ControlNetModel.from_pretrained(tmp_path / "cn").eval()
    pipe = StableDiffusionXLControlNetPipeline(
        vae=models.vae, text_encoder=models.text_encoders[0], text_encoder_2=models.text_encoders[1],
        tokenizer=models.tokenizers[0], tokenizer_2=models.tokenizers[1], unet=models.unet, controlnet=theirs_net,
        scheduler=make_scheduler("euler", models.scheduler_config))
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("a glass pavilion", image=Image.open(tmp_path / "edges.png"), num_inference_steps=4,
               guidance_scale=5.0, controlnet_conditioning_scale=0.8, width=64, height=64,
               generator=torch.Generator().manual_seed(4)).images[0]
    assert _max_diff(ours, ref) <= 1.0
