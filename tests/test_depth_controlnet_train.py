"""The depth ControlNet trainer of issue #19 on a few tiny steps: it runs, a resumed run ends with the same weights
as an uninterrupted one (bit for bit), a checkpoint of other settings is refused, the time budget stops it, and
the export is a diffusers folder that loads and fits the size limit."""

from __future__ import annotations

import pytest
import torch

from sfumato.threed import depth_controlnet_train as dct

TINY = dct.DepthTrainConfig(steps=3, batch=2, size=64, warmup=2, checkpoint_every=1, validation=0, threads=1,
                            log_every=1)


def _weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_three_steps_resume_bit_for_bit_and_export(tmp_path):
    straight, record = dct.train(TINY, tmp_path / "a", log=lambda _: None)
    assert record["step"] == 3
    first, part = dct.train(TINY, tmp_path / "b", until=2, log=lambda _: None)
    assert part["step"] == 2 and (tmp_path / "b" / dct.CHECKPOINT).is_file()
    assert not list((tmp_path / "b").glob("*.part"))
    resumed, record_b = dct.train(TINY, tmp_path / "b", log=lambda _: None)
    assert record_b["step"] == 3
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], _weights(first)[k]) for k in a)  # the third step did change something
    assert "resumed at step 2" in (tmp_path / "b" / "progress.log").read_text()

    from diffusers import ControlNetModel

    folder = dct.export(straight, tmp_path / "out", record)
    assert folder.name == "controlnet_depth"
    weights = folder / "diffusion_pytorch_model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= dct.MAX_BYTES
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    loaded = ControlNetModel.from_pretrained(str(folder), local_files_only=True).float()
    assert all(torch.allclose(p.float(), q.half().float()) for p, q in zip(loaded.parameters(), straight.parameters()))
    z = torch.randn(1, 4, 16, 16)  # 64 px on the embedded VAE (factor 4)
    down, mid = loaded(z, torch.tensor([500]), encoder_hidden_states=torch.randn(1, 77, 128),
                       controlnet_cond=torch.rand(1, 3, 64, 64), return_dict=False)
    assert down[0].shape[-2:] == z.shape[-2:] and mid.shape[1] == 192


def test_other_settings_are_refused_and_the_budget_stops(tmp_path):
    budget = dct.DepthTrainConfig(**{**TINY.__dict__, "time_budget": 0.0})
    _, record = dct.train(budget, tmp_path, log=lambda _: None)
    assert record["step"] == 1  # the first checkpoint past the budget
    other = dct.DepthTrainConfig(**{**TINY.__dict__, "lr": 1e-3})
    with pytest.raises(ValueError, match="another run"):
        dct.train(other, tmp_path, log=lambda _: None)


def test_the_export_joins_a_copy_of_the_embedded_bundle_and_generation_takes_a_depth(tmp_path):
    import shutil

    import numpy as np
    from PIL import Image

    from sfumato.core.bundle import embedded_dir, open_bundle
    from sfumato.core.bundle_add import add_component, controlnet_writer
    from sfumato.core.image import ImageRequest, generate
    from sfumato.core.loading import load_models
    from sfumato.threed.building_render import sample

    net, record = dct.train(dct.DepthTrainConfig(**{**TINY.__dict__, "steps": 1}), tmp_path / "work",
                            log=lambda _: None)
    folder = dct.export(net, tmp_path / "out", record)
    bundle = shutil.copytree(embedded_dir() / "materials", tmp_path / "materials")
    add_component(bundle, "controlnet_depth", controlnet_writer(open_bundle(bundle), folder), replace=True)
    models = load_models(open_bundle(bundle), torch.device("cpu"), torch.float32, need_controlnet=True)
    Image.fromarray((sample(3, 64).depth * 255).astype(np.uint8)).save(tmp_path / "depth.png")
    request = ImageRequest(prompt="red brick walls", seed=1, steps=2, width=64, height=64, fast="off",
                           depth_image=str(tmp_path / "depth.png"))
    image = generate(request, models)[0].image
    assert image.size == (64, 64)


def test_the_cli_trains_and_exports(tmp_path, capsys):
    from sfumato.cli import main

    assert main(["train", "depth", "--work", str(tmp_path / "w"), "--out", str(tmp_path / "x"), "--steps", "1",
                 "--batch", "1", "--size", "64"]) == 0
    assert (tmp_path / "x" / "controlnet_depth" / "config.json").is_file()
    assert "--as controlnet-depth" in capsys.readouterr().out
