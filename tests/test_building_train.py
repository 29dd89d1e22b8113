"""The building trainer of issue #19 (U-Net + depth ControlNet on buildings mixed with material tiles)
on a few tiny steps: a resumed run ends with the same weights as an uninterrupted one (bit for bit), a checkpoint
of other settings is refused, and the export installs into a copy of the embedded bundle, which then loads and
records how it was trained."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from sfumato.threed import building_train as bt

TINY = bt.BuildingTrainConfig(steps=3, size=64, building_batch=2, material_batch=2, material_tiles=8, warmup=2,
                              checkpoint_every=1, validation=2, threads=1, log_every=1)


def _weights(nets: dict) -> dict[str, torch.Tensor]:
    return {f"{n}.{k}": v.detach().clone() for n, net in nets.items() for k, v in net.state_dict().items()}


def test_three_steps_resume_bit_for_bit_and_install(tmp_path):
    straight, record = bt.train(TINY, tmp_path / "a", log=lambda _: None)
    assert record["step"] == 3 and len(record["history"]) == 3
    assert set(record["start"]) == {"buildings_depth", "buildings_text_only", "materials"}
    first, _ = bt.train(TINY, tmp_path / "b", until=2, log=lambda _: None)
    first = _weights(first)
    resumed, record_b = bt.train(TINY, tmp_path / "b", log=lambda _: None)
    assert record_b["step"] == 3 and "resumed at step 2" in (tmp_path / "b" / "progress.log").read_text()
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    changed = {k.split(".")[0] for k in a if not torch.equal(a[k], first[k])}
    assert changed == {"unet", "controlnet_depth"}  # the third step moved every trained net; the text encoder is frozen

    with pytest.raises(ValueError, match="another run"):
        bt.train(bt.BuildingTrainConfig(**{**TINY.__dict__, "unet_lr": 1e-3}), tmp_path / "a", log=lambda _: None)

    from sfumato.core.bundle import embedded_dir, open_bundle
    from sfumato.core.loading import load_models

    out = bt.export(straight, tmp_path / "export", record)
    bundle = tmp_path / "bundle"
    shutil.copytree(embedded_dir() / "materials", bundle)
    assert sorted(p.name for p in out.iterdir()) == ["controlnet_depth", "training.json", "unet"]
    text_before = (bundle / "text_encoder" / "model.safetensors").read_bytes()
    bt.install(out, bundle)
    assert (bundle / "text_encoder" / "model.safetensors").read_bytes() == text_before
    models = load_models(open_bundle(bundle), torch.device("cpu"), torch.float32, controls=("depth",))
    for name, net in (("unet", models.unet), ("controlnet_depth", models.controlnets["depth"])):
        mine = dict(straight[name].named_parameters())
        assert all(torch.equal(p, mine[k].half().float()) for k, p in net.named_parameters()), name
    trained = json.loads((bundle / "sfumato.json").read_text())["building_training"]
    assert trained["steps"] == 3 and trained["validation"]["step"] == 3 and trained["validation_at_start"]


def test_a_text_rate_trains_and_exports_the_text_encoder_too(tmp_path):
    cfg = bt.BuildingTrainConfig(**{**TINY.__dict__, "steps": 1, "text_lr": 1e-4, "validation": 0})
    nets, _ = bt.train(cfg, tmp_path / "w", log=lambda _: None)
    assert set(nets) == set(bt.COMPONENTS)
    assert (bt.export(nets, tmp_path / "out") / "text_encoder").is_dir()


def test_install_with_unet_blend_moves_the_bundles_unet_part_way(tmp_path):
    from safetensors.torch import load_file

    from sfumato.core.bundle import embedded_dir

    cfg = bt.BuildingTrainConfig(**{**TINY.__dict__, "steps": 1, "validation": 0})
    nets, record = bt.train(cfg, tmp_path / "w", log=lambda _: None)
    out = bt.export(nets, tmp_path / "export", record)
    for name in ("unet", "controlnet_depth"):  # no path of the machine that trained it travels with the weights
        assert "_name_or_path" not in json.loads((out / name / "config.json").read_text())
    bundle = tmp_path / "bundle"
    shutil.copytree(embedded_dir() / "materials", bundle)
    weights = "unet/diffusion_pytorch_model.safetensors"
    old, new = load_file(str(bundle / weights)), load_file(str(out / weights))
    with pytest.raises(ValueError, match=r"unet_blend=1.5 is not allowed: a number in \(0, 1\]"):
        bt.install(out, bundle, unet_blend=1.5)
    assert load_file(str(bundle / weights)).keys() == old.keys()  # refused before anything moved
    bt.install(out, bundle, unet_blend=0.5)
    got = load_file(str(bundle / weights))
    moved = [k for k in old if not torch.equal(old[k], new[k])]
    assert moved and all(torch.allclose(got[k].float(), (old[k].float() + new[k].float()) / 2, atol=1e-3) for k in old)
    assert (bundle / "controlnet_depth").is_dir()  # the other components go in whole
    manifest = json.loads((bundle / "sfumato.json").read_text())
    assert manifest["building_training"]["unet_blend"] == 0.5
    from sfumato.core.bundle import open_bundle, verify

    verify(open_bundle(bundle))  # the rewritten manifest's hashes match the blended file (raises if not)
