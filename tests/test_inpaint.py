"""An inpainting U-Net (9 input channels): imported from an original-layout checkpoint, run by every head, used to
repaint faces, and fed exactly what diffusers' StableDiffusionInpaintPipeline feeds it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image
from safetensors.torch import save_file

from sfumato.core import convert, inpaint, text
from sfumato.core import latents as latent_space
from sfumato.core.bundle import open_bundle, save_component, write_manifest
from sfumato.core.denoiser import Denoiser, make_conditioning
from sfumato.core.jobs import JobContext
from sfumato.core.loading import ModelCache, load_models
from sfumato.core.sampling import sample, timesteps_for
from sfumato.core.schedulers import make_scheduler
from sfumato.core.tiny import build_tiny_bundle
from sfumato.kinds import run_job
from sfumato.threed.demo_house import write_house
from test_convert import assert_same_weights, ldm_checkpoint

CPU = torch.device("cpu")


def widen_unet(folder: Path, seed: int = 1) -> None:
    """The tiny bundle's U-Net made an inpainting one: conv_in reads 4 + 1 + 4 channels, the new ones random
    (so the mask and the masked image visibly steer it)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    wide = UNet2DConditionModel.from_config({**unet.config, "in_channels": 9})
    state = unet.state_dict()
    g = torch.Generator().manual_seed(seed)
    w = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([w, torch.randn(w.shape[0], 5, *w.shape[2:], generator=g) * w.std()], 1)
    wide.load_state_dict(state)
    for f in (folder / "unet").iterdir():
        f.unlink()
    save_component(wide, folder / "unet")
    manifest = json.loads((folder / "sfumato.json").read_text())
    write_manifest(folder, name=manifest["name"], family="sd15", license=manifest["license"],
                   description="tiny random sd15-layout bundle with an inpainting U-Net")


@pytest.fixture(scope="module")
def inpaint_bundle(tmp_path_factory) -> Path:
    """Tiny SD 1.5 layout, 9-channel U-Net, with the (4-channel) depth ControlNet."""
    folder = build_tiny_bundle(tmp_path_factory.mktemp("src") / "tiny-inpaint", "sd15")
    widen_unet(folder)
    return folder


@pytest.fixture(scope="module")
def imported(inpaint_bundle, tmp_path_factory) -> Path:
    """The bundle written as one original-layout file and imported with the 4-channel family configs."""
    plain = build_tiny_bundle(tmp_path_factory.mktemp("plain") / "tiny-plain", "sd15", controlnet=False)
    path = tmp_path_factory.mktemp("ckpt") / "tiny-inpainting.safetensors"
    state = ldm_checkpoint(inpaint_bundle, "sd15")
    assert state["model.diffusion_model.input_blocks.0.0.weight"].shape[1] == 9
    save_file(state, str(path))
    return convert.import_checkpoint(path, "sd15", dest_root=tmp_path_factory.mktemp("out"), config_dir=plain,
                                     dtype="fp32")


def _ctx() -> JobContext:
    return JobContext("t", ModelCache(), "cpu", "fp32", threading.Event(), lambda e, **f: None, preview_every=0)


def test_inpainting_checkpoint_imports_with_nine_input_channels(inpaint_bundle, imported):
    assert json.loads((imported / "unet" / "config.json").read_text())["in_channels"] == 9
    assert "inpainting" in json.loads((imported / "sfumato.json").read_text())["description"]
    assert_same_weights(inpaint_bundle, imported)


def test_other_widths_of_the_unet_input_are_refused(inpaint_bundle, tmp_path):
    state = ldm_checkpoint(inpaint_bundle, "sd15")
    key = "model.diffusion_model.input_blocks.0.0.weight"
    state[key] = state[key][:, :8].contiguous()  # instruct-pix2pix's 8 channels: not a U-Net sfumato runs
    save_file(state, str(tmp_path / "p2p.safetensors"))
    with pytest.raises(Exception, match="reads 8 input channels.*runs 4 .*or 9"):
        convert.import_checkpoint(tmp_path / "p2p.safetensors", "sd15", dest_root=tmp_path / "out",
                                  config_dir=inpaint_bundle)


def test_plain_generation_paints_everywhere(imported, tmp_path):
    """Text-to-image on an inpainting U-Net: mask 1 and an all-grey masked image, as diffusers does for a blank."""
    models = load_models(open_bundle(imported), CPU, torch.float32)
    cond = inpaint.blank(models, 8, 8)
    assert cond.mask.shape == (1, 1, 8, 8) and bool((cond.mask == 1).all())
    grey = models.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean * models.vae.config.scaling_factor
    assert torch.allclose(cond.masked_latents, grey)
    result = run_job("image", {"bundle": str(imported), "prompt": "red brick", "width": 64, "height": 64,
                               "steps": 2, "seed": 3, "n": 2}, tmp_path / "i.png", _ctx())
    images = [np.asarray(Image.open(tmp_path / name)) for name in ("i_s3.png", "i_s4.png")]
    assert images[0].shape == (64, 64, 3) and images[0].std() > 1 and not np.array_equal(*images)
    assert result["metadata"][0]["steps"] == 2


def test_every_head_runs_on_an_inpainting_unet(inpaint_bundle, tmp_path):
    """Heads that ask for no inpainting (material tiles, synced views, SDS, turntables, video, assets, upscaling)
    run on a 9-channel U-Net: it paints everywhere."""
    mesh = tmp_path / "box.obj"
    trimesh.creation.box((2.0, 1.0, 1.0)).export(mesh)
    Image.new("RGB", (64, 64), (120, 60, 40)).save(tmp_path / "small.png")
    box = {"mesh": str(mesh), "prompt": "brick", "resolution": 64, "steps": 2}
    jobs = [("texture", {**box, "texture_size": 32, "mode": "material"}, "m.glb"),
            ("texture", {**box, "texture_size": 32, "views": 2, "variant": "sync", "fill_views": 0}, "s.glb"),
            ("texture", {**box, "texture_size": 32, "mode": "sds", "iters": 2}, "d.glb"),
            ("turntable", {**box, "frames": 2, "conditioning": "depth"}, "t.gif"),
            ("video", {"prompt": "brick", "frames": 2, "resolution": 64, "steps": 2}, "v.gif"),
            ("asset", {"prompt": "a brick", "iters": 2, "resolution": 32, "samples": 8, "mesh_resolution": 16},
             "a.glb"),
            ("upscale", {"image": str(tmp_path / "small.png"), "prompt": "brick", "tile": 64, "overlap": 0, "steps": 4,
                         "strength": 0.5}, "u.png")]
    for kind, params, output in jobs:
        run_job(kind, {"bundle": str(inpaint_bundle), "seed": 1, **params}, tmp_path / output, _ctx())
        assert any(tmp_path.glob(Path(output).stem + "*")), (kind, params)


@pytest.mark.parametrize("bundle", ["inpaint_bundle", "imported"])
def test_repaint_with_an_inpainting_unet_keeps_the_rest(bundle, request, tmp_path, monkeypatch):
    """A 9-channel U-Net with the depth ControlNet (fed the 4 latent channels), or imported without one (views are
    image-to-image from the shading), a prompt per slot (regional denoiser): a projection texture, then the roof
    painted again; every texel off the roof is kept byte for byte, and the views told the U-Net what they keep."""
    from sfumato.core.schema import TextureRequest
    from sfumato.threed.mesh import load_mesh
    from sfumato.threed.repaint import load as load_repaint

    house = write_house(tmp_path / "h.glb")
    params = {"prompt": "red brick house", "bundle": str(request.getfixturevalue(bundle)), "mode": "projection",
              "views": 3, "fill_views": 0, "resolution": 64, "texture_size": 128, "steps": 3, "seed": 2,
              "view_prompts": False}
    first = run_job("texture", {**params, "mesh": str(house)}, tmp_path / "first.glb", _ctx())
    assert len(first["metadata"]["slots"]) > 1
    masks: list[torch.Tensor] = []
    condition = inpaint.condition

    def spy(*args):
        out = condition(*args)
        masks.append(out.mask)
        return out

    monkeypatch.setattr(inpaint, "condition", spy)
    textured = trimesh.load(first["glb"], force="mesh", process=False)
    roof = textured.submesh([np.nonzero(textured.triangles_center[:, 1] > 3.0)[0]], append=True)
    roof.export(tmp_path / "roof.glb")
    again = run_job("texture", {**params, "mesh": first["glb"], "texture_in": first["texture"],
                                "repaint": str(tmp_path / "roof.glb"), "seed": 9}, tmp_path / "again.glb", _ctx())
    before, after = np.asarray(Image.open(first["texture"])), np.asarray(Image.open(again["texture"]))
    req = TextureRequest(prompt="x", mesh=first["glb"], texture_size=128, texture_in=first["texture"],
                         repaint=str(tmp_path / "roof.glb"))
    redo = load_repaint(req, load_mesh(first["glb"])).redo.numpy()
    assert np.array_equal(before[~redo], after[~redo])  # kept exactly
    assert np.abs(before[redo].astype(int) - after[redo].astype(int)).mean() > 2  # painted again
    assert again["metadata"]["repaint"]["method"] == "inpainting-unet"
    assert masks and all(m.shape == (1, 1, 8, 8) for m in masks)
    assert any(bool((m == 0).any() and (m == 1).any()) for m in masks)  # some latents kept, some painted


def test_a_plain_unet_repaints_by_masked_denoising(inpaint_bundle, tmp_path):
    from sfumato.threed import repaint

    plain = load_models(open_bundle(build_tiny_bundle(tmp_path / "plain", controlnet=False)), CPU, torch.float32)
    wide = load_models(open_bundle(inpaint_bundle), CPU, torch.float32)
    assert (repaint.method(plain), repaint.method(wide)) == ("masked-denoising", "inpainting-unet")
    keep = torch.zeros(64, 64, dtype=torch.bool)
    keep[:, :32] = True
    assert repaint.view_inpaint(plain, torch.rand(3, 64, 64), keep, torch.Generator()) is None
    cond = repaint.view_inpaint(wide, torch.rand(3, 64, 64), keep, torch.Generator().manual_seed(0))
    assert cond.mask[0, 0, :, :4].eq(0).all() and cond.mask[0, 0, :, 4:].eq(1).all()  # paint what is not kept
    x = torch.randn(2, 4, 8, 8)
    assert inpaint.unet_input(plain, x, None) is x
    assert torch.equal(inpaint.unet_input(wide, x, cond), torch.cat([x, cond.mask.repeat(2, 1, 1, 1),
                                                                      cond.masked_latents.repeat(2, 1, 1, 1)], 1))


# ---------------------------------------------------------------- parity with diffusers
def _capture_inputs(unet) -> tuple[list[torch.Tensor], list[torch.Tensor], object]:
    inputs, outputs = [], []
    pre = unet.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach().clone()))
    post = unet.register_forward_hook(lambda m, args, out: outputs.append(out[0].detach().clone()))
    return inputs, outputs, lambda: (pre.remove(), post.remove())


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_parity_with_diffusers_inpaint_pipeline(inpaint_bundle, scheduler):
    """Our loop (denoiser + Conditioning.inpaint) and StableDiffusionInpaintPipeline on the same tiny 9-channel
    model, prompt embeddings, seed and scheduler: the U-Net's 9-channel input and its prediction at every step,
    the final latents and the decoded image agree."""
    from diffusers import StableDiffusionInpaintPipeline
    from diffusers.utils.torch_utils import randn_tensor

    models = load_models(open_bundle(inpaint_bundle), CPU, torch.float32)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    mask = np.zeros((64, 64), np.uint8)
    mask[12:44, 20:60] = 255
    mask_image = Image.fromarray(mask)
    positive, negative = text.encode_pair(models, "red brick wall", "blurry")
    steps, guidance, seed = 4, 5.0, 7

    pipe = StableDiffusionInpaintPipeline(vae=models.vae, text_encoder=models.text_encoders[0],
                                          tokenizer=models.tokenizers[0], unet=models.unet,
                                          scheduler=make_scheduler(scheduler, models.scheduler_config),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    theirs_in, theirs_out, done = _capture_inputs(models.unet)
    theirs = pipe(prompt_embeds=positive.tokens, negative_prompt_embeds=negative.tokens, image=image,
                  mask_image=mask_image, height=64, width=64, num_inference_steps=steps, guidance_scale=guidance,
                  generator=torch.Generator().manual_seed(seed), output_type="latent").images
    done()

    ours_in, ours_out, done = _capture_inputs(models.unet)
    g = torch.Generator().manual_seed(seed)
    sched = make_scheduler(scheduler, models.scheduler_config)
    timesteps, _ = timesteps_for(sched, steps, CPU)
    x = randn_tensor((1, 4, 8, 8), generator=[g], device=CPU, dtype=torch.float32) * sched.init_noise_sigma
    paint = torch.from_numpy(mask).float()[None, None] / 255
    cond = make_conditioning(models, positive, negative, 1, guidance, width=64, height=64,
                             inpaint=inpaint.condition(models, latent_space.pil_to_tensor(image, 64, 64), paint, [g]))
    ours = sample(Denoiser(models), sched, x, cond, timesteps, generator=[g])
    done()

    assert len(ours_in) == len(theirs_in) == steps and ours_in[0].shape == (2, 9, 8, 8)
    for a, b in zip(ours_in, theirs_in):
        assert (a - b).abs().max().item() < 1e-5
    assert torch.equal(ours_in[0][:, 4:], theirs_in[0][:, 4:])  # mask and masked-image latents: the same bits
    for a, b in zip(ours_out, theirs_out):
        assert (a - b).abs().max().item() < 1e-4
    assert (ours - theirs).abs().max().item() < 1e-4
    decoded = [latent_space.decode(models, z) for z in (ours, theirs)]
    assert (decoded[0] - decoded[1]).abs().max().item() < 1 / 255


def test_a_controlnet_is_added_to_an_imported_inpainting_bundle(inpaint_bundle, imported, tmp_path):
    """A plain (4-channel) depth ControlNet fits an inpainting bundle: both see the 4 latent channels."""
    import shutil

    from safetensors.torch import load_file

    from sfumato.cli import main

    mine = tmp_path / "mine"
    shutil.copytree(imported, mine)
    assert main(["bundle", "add", str(mine), str(inpaint_bundle / "controlnet_depth"), "--as", "controlnet-depth"]) == 0
    models = load_models(open_bundle(mine), CPU, torch.float32, need_controlnet=True)
    assert models.controlnet is not None and models.controlnet.config.in_channels == 4
    weights = next((inpaint_bundle / "controlnet_depth").glob("*.safetensors"))
    single = tmp_path / "depth_diffusers_names.safetensors"  # one file in diffusers' names: a config is derived
    save_file(load_file(str(weights)), str(single))
    assert main(["bundle", "add", str(mine), str(single), "--as", "controlnet-depth", "--replace"]) == 0
