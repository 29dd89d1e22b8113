"""Image generation behaviours: variations, img2img, depth, seamless tiling, previews, errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from sfumato.core import latents as latent_space
from sfumato.core.errors import BadParameter, OutOfMemory
from sfumato.core import schema
from sfumato.core.image import ImageRequest, generate, generate_safely
from sfumato.core.checks import checked, raise_first
from sfumato.core.seamless import seamless


def _arr(img) -> np.ndarray:
    return np.asarray(img, np.float32)


def test_variations_equal_single_runs_with_consecutive_seeds(sd15_models):
    batch = generate(ImageRequest(prompt="oak planks", seed=40, n=3, batch_size=2, steps=4), sd15_models)
    assert [g.seed for g in batch] == [40, 41, 42]
    for g in batch:
        single = generate(ImageRequest(prompt="oak planks", seed=g.seed, steps=4), sd15_models)[0]
        assert np.abs(_arr(g.image) - _arr(single.image)).max() <= 1.0
    assert np.abs(_arr(batch[0].image) - _arr(batch[1].image)).mean() > 5


def test_img2img_strength_sets_the_steps_run_and_the_init_matters(sd15_models, tmp_path):
    """(Exact agreement with diffusers' img2img pipeline is in test_parity.py.)"""
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        init = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((64, 64), Image.BILINEAR)
        init.save(tmp_path / f"{name}.png")
    outs = {}
    for name, strength in (("a", 0.2), ("a", 0.9), ("b", 0.2)):
        steps = []
        out = generate(ImageRequest(prompt="marble", seed=2, steps=10, scheduler="ddim",
                                    init_image=str(tmp_path / f"{name}.png"), strength=strength), sd15_models,
                       on_step=lambda info: steps.append(info.total))[0]
        assert steps[-1] == int(10 * strength) and len(steps) == int(10 * strength)
        assert out.metadata["mode"] == "img2img" and out.metadata["strength"] == strength
        outs[name, strength] = _arr(out.image)
    assert np.abs(outs["a", 0.2] - outs["b", 0.2]).mean() > 2  # the init image shapes the result


def test_depth_steers_the_image_and_scale_zero_is_plain_text_to_image(sd15_models, tmp_path):
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    Image.fromarray(ramp.T.copy()).save(tmp_path / "ramp_t.png")
    np.save(tmp_path / "dist.npy", np.linspace(2.0, 10.0, 64 * 64, dtype=np.float32).reshape(64, 64))
    kw = dict(prompt="a house", seed=5, steps=5)
    a = generate(ImageRequest(depth_image=str(tmp_path / "ramp.png"), **kw), sd15_models)[0]
    b = generate(ImageRequest(depth_image=str(tmp_path / "ramp_t.png"), **kw), sd15_models)[0]
    c = generate(ImageRequest(depth_image=str(tmp_path / "dist.npy"), **kw), sd15_models)[0]
    off = generate(ImageRequest(depth_image=str(tmp_path / "ramp.png"), control_scale=0.0, **kw), sd15_models)[0]
    plain = generate(ImageRequest(**kw), sd15_models)[0]
    assert np.abs(_arr(a.image) - _arr(b.image)).mean() > 2
    assert np.abs(_arr(a.image) - _arr(c.image)).mean() > 0
    assert np.abs(_arr(off.image) - _arr(plain.image)).max() <= 1.0
    assert a.metadata["mode"] == "depth" and a.metadata["control_scale"] == 1.0


def _seam_ratio(img: np.ndarray, axis: int) -> float:
    """Mean |first − last| line difference over the mean adjacent-line difference inside the image."""
    a = np.moveaxis(img, axis, 0)
    inner = np.abs(np.diff(a, axis=0)).mean()
    return float(np.abs(a[0] - a[-1]).mean() / inner)


@pytest.mark.parametrize("axes", ["x", "y", "xy"])
def test_seamless_edges_continue_each_other(sd15_models, axes):
    kw = dict(prompt="grey stone", seed=8, steps=6, width=128, height=128)
    tiled = _arr(generate(ImageRequest(seamless=axes, **kw), sd15_models)[0].image)
    plain = _arr(generate(ImageRequest(**kw), sd15_models)[0].image)
    for axis, name in ((1, "x"), (0, "y")):
        if name in axes:
            assert _seam_ratio(tiled, axis) < 1.3, (axes, name, _seam_ratio(tiled, axis))
            assert _seam_ratio(tiled, axis) < _seam_ratio(plain, axis)


def test_seamless_networks_are_exactly_periodic(sd15_models):
    """Rolling the input rolls the output: the U-Net and decoder see a torus, so any result tiles.

    (Rolls are multiples of the U-Net's total stride, 2 for the tiny bundle.)
    """
    m = sd15_models
    z = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    text = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(500)
    with seamless([m.unet, m.vae], "xy"):
        eps, eps_rolled = (m.unet(x, t, encoder_hidden_states=text).sample for x in (z, z.roll(4, dims=-1)))
        img, img_rolled = (latent_space.decode(m, x) for x in (z, z.roll(3, dims=-2)))
    assert torch.allclose(eps.roll(4, dims=-1), eps_rolled, atol=1e-4)
    assert torch.allclose(img.roll(3 * 8, dims=-2), img_rolled, atol=1e-4)
    plain = m.unet(z.roll(4, dims=-1), t, encoder_hidden_states=text).sample  # patch is undone
    assert not torch.allclose(eps.roll(4, dims=-1), plain, atol=1e-3)


def test_sdxl_generates_with_size_conditioning(sdxl_models):
    out = generate(ImageRequest(prompt="pavilion", seed=1, steps=3, width=64, height=96), sdxl_models)[0]
    assert out.image.size == (64, 96) and out.metadata["bundle"] == "tiny-sdxl"


def test_preview_is_a_cheap_linear_map(sd15_models):
    z = torch.randn(2, 4, 8, 8)
    img = latent_space.preview(sd15_models, z)
    assert img.size == (32, 32) and img.mode == "RGB"
    assert latent_space.fit_preview_map(sd15_models).shape == (5, 3)


def test_long_prompt_is_truncated_with_a_warning(sd15_models, caplog):
    long = " ".join(["weathered red brick wall with white mortar"] * 20)
    with caplog.at_level(logging.WARNING, logger="sfumato"):
        generate(ImageRequest(prompt=long, seed=1, steps=1), sd15_models)
    assert "longer than 77 tokens" in caplog.text


@pytest.mark.parametrize("field, value, allowed", [
    ("width", 100, "nearest: 96 or 104"), ("height", 32, "multiple of 8"), ("steps", 0, "1..500"),
    ("strength", 0.0, "(0, 1]"), ("seamless", "z", "none, x, y or xy"), ("scheduler", "fast", "euler_a"),
    ("n", 0, "1..256"), ("guidance", -1, "0..50"), ("seed", -5, "integer"), ("init_image", "/no/such.png", "existing"),
])
def test_bad_parameters_name_field_value_and_allowed(field, value, allowed):
    with pytest.raises(BadParameter) as err:
        checked(ImageRequest(prompt="x", **{field: value}))
    assert err.value.field == field and allowed in str(err.value) and repr(value) in str(err.value)


def test_unknown_fields_are_rejected_by_name():
    with pytest.raises(BadParameter, match="colour"):
        raise_first(schema.parse(ImageRequest, {"prompt": "x", "colour": "red"})[1])


def test_out_of_memory_is_reported_with_a_hint(sd15_models, monkeypatch):
    from sfumato.core import denoiser

    def boom(*a, **k):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(denoiser.Denoiser, "unet_call", boom)
    with pytest.raises(OutOfMemory, match="out of memory") as err:
        generate_safely(ImageRequest(prompt="x", seed=1, steps=2), sd15_models)
    assert "batch_size" in err.value.hint


def test_unreadable_images_and_seed_ranges_are_bad_parameters(sd15_models, tmp_path):
    (tmp_path / "fake.png").write_text("not an image")
    with pytest.raises(BadParameter, match="init_image=.*fake.png.*readable"):
        generate(ImageRequest(prompt="x", steps=2, init_image=str(tmp_path / "fake.png")), sd15_models)
    np.save(tmp_path / "cube.npy", np.ones((2, 2, 2, 2), np.float32))
    with pytest.raises(BadParameter, match="depth_image=.*2-D"):
        generate(ImageRequest(prompt="x", steps=2, depth_image=str(tmp_path / "cube.npy")), sd15_models)
    with pytest.raises(BadParameter, match="seed=.*n=4"):
        checked(ImageRequest(prompt="x", seed=schema.MAX_SEED - 2, n=4))
    with pytest.raises(BadParameter, match="strength=0.05.*one step"):
        checked(ImageRequest(prompt="x", steps=10, strength=0.05, init_image=str(tmp_path / "cube.npy")))
    with pytest.raises(BadParameter, match="device=0"):
        checked(ImageRequest(prompt="x", device=0))


def test_batches_are_handed_over_as_they_finish(sd15_models):
    seen = []
    out = generate(ImageRequest(prompt="x", seed=1, steps=2, n=5, batch_size=2), sd15_models,
                   on_images=lambda batch: seen.append([g.seed for g in batch]))
    assert seen == [[1, 2], [3, 4], [5]] and [g.seed for g in out] == [1, 2, 3, 4, 5]


def test_library_calls_without_steps_take_the_bundles_default(sd15_models, tmp_path, monkeypatch):
    monkeypatch.setitem(sd15_models.bundle.manifest, "default_steps", 4)
    totals = []
    out = generate(ImageRequest(prompt="marble", seed=2, width=64, height=64), sd15_models,
                   on_step=lambda info: totals.append(info.total))[0]
    assert out.metadata["steps"] == 4 and totals == [4] * 4
    # checks that need the step count run once it is known: 0.2 of 4 steps is no step at all
    Image.new("RGB", (64, 64), "grey").save(tmp_path / "init.png")
    with pytest.raises(BadParameter, match="strength.*with steps=4") as err:
        generate(ImageRequest(prompt="marble", init_image=str(tmp_path / "init.png"), strength=0.2), sd15_models)
    assert err.value.field == "strength"
