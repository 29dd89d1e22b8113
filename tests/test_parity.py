"""Parity: our loop reproduces diffusers' pipelines on the same bundle, seed and settings.

These run the plain loop (``fast="off"``): the fast path's own agreement with the plain one is checked in
``test_fast.py`` (bfloat16 on a CPU cannot match a float32 pipeline to 1/255)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from sfumato.core.image import ImageRequest, generate
from sfumato.core.schedulers import make_scheduler


def _pipe(models, cls_name: str, scheduler: str):
    import diffusers

    m = models
    kwargs = dict(vae=m.vae, text_encoder=m.text_encoders[0], tokenizer=m.tokenizers[0], unet=m.unet,
                  scheduler=make_scheduler(scheduler, m.scheduler_config))
    if cls_name.startswith("StableDiffusionXL"):
        kwargs.update(text_encoder_2=m.text_encoders[1], tokenizer_2=m.tokenizers[1])
    else:
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if "ControlNet" in cls_name:
        kwargs["controlnet"] = m.controlnet
    pipe = getattr(diffusers, cls_name)(**kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _max_diff(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).max())


@pytest.mark.parametrize("scheduler", ["bundle", "dpmpp_2m", "euler_a", "ddim"])
def test_txt2img_matches_stable_diffusion_pipeline(sd15_models, scheduler):
    req = ImageRequest(prompt="red brick wall", negative="blurry", seed=1234, steps=6, guidance=7.5,
                       width=64, height=64, scheduler=scheduler, n=2, fast="off")
    ours = generate(req, sd15_models)
    pipe = _pipe(sd15_models, "StableDiffusionPipeline", scheduler)
    theirs = pipe("red brick wall", negative_prompt="blurry", num_inference_steps=6, guidance_scale=7.5,
                  width=64, height=64, num_images_per_prompt=2,
                  generator=[torch.Generator().manual_seed(s) for s in (1234, 1235)]).images
    for a, b in zip(ours, theirs):
        assert _max_diff(a.image, b) <= 1.0, f"{scheduler}: differs by more than 1/255"


def test_img2img_matches_pipeline(sd15_models, tmp_path):
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    init.save(tmp_path / "init.png")
    req = ImageRequest(prompt="white marble", seed=7, steps=8, width=64, height=64, scheduler="euler",
                       init_image=str(tmp_path / "init.png"), strength=0.6, fast="off")
    ours = generate(req, sd15_models)[0].image
    pipe = _pipe(sd15_models, "StableDiffusionImg2ImgPipeline", "euler")
    theirs = pipe("white marble", image=init, strength=0.6, num_inference_steps=8, guidance_scale=7.5,
                  generator=torch.Generator().manual_seed(7)).images[0]
    assert _max_diff(ours, theirs) <= 1.0


def test_depth_controlnet_matches_pipeline(sd15_models, tmp_path):
    depth = Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1)))
    depth.save(tmp_path / "depth.png")
    req = ImageRequest(prompt="a modern house", seed=3, steps=5, width=64, height=64, scheduler="dpmpp_2m",
                       depth_image=str(tmp_path / "depth.png"), control_scale=0.8, fast="off")
    ours = generate(req, sd15_models)[0].image
    pipe = _pipe(sd15_models, "StableDiffusionControlNetPipeline", "dpmpp_2m")
    theirs = pipe("a modern house", image=depth.convert("RGB"), num_inference_steps=5, guidance_scale=7.5,
                  controlnet_conditioning_scale=0.8, generator=torch.Generator().manual_seed(3)).images[0]
    assert _max_diff(ours, theirs) <= 1.0


def test_sdxl_matches_pipeline(sdxl_models):
    req = ImageRequest(prompt="glass and timber pavilion", seed=11, steps=5, guidance=5.0, width=64, height=64,
                       scheduler="euler", fast="off")
    ours = generate(req, sdxl_models)[0].image
    pipe = _pipe(sdxl_models, "StableDiffusionXLPipeline", "euler")
    theirs = pipe("glass and timber pavilion", num_inference_steps=5, guidance_scale=5.0, width=64, height=64,
                  generator=torch.Generator().manual_seed(11)).images[0]
    assert _max_diff(ours, theirs) <= 1.0
