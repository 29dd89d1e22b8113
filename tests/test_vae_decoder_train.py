"""The VAE decoder trainer of issue #19 on a few tiny steps: only the decoder moves (every latent keeps its meaning),
a resumed run ends bit for bit where an uninterrupted one does, and the export installs into a copy of the embedded
bundle with its training record."""

from __future__ import annotations

import json
import shutil

import torch

from sfumato.threed import building_train, vae_decoder_train as vdt

TINY = vdt.DecoderTrainConfig(steps=3, batch=2, size=32, warmup=2, checkpoint_every=1, validation=1, threads=1,
                              log_every=1)


def _weights(net) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_only_the_decoder_trains_resumes_bit_for_bit_and_installs(tmp_path):
    start, _ = vdt.load(TINY)
    straight, record = vdt.train(TINY, tmp_path / "a", log=lambda _: None)
    assert record["step"] == 3 and set(record["start"]) == {"psnr_buildings", "psnr_materials"}
    before, after = _weights(start), _weights(straight)
    moved = {k.split(".")[0] for k in after if not torch.equal(before[k], after[k])}
    assert moved and moved <= {"decoder", "post_quant_conv"}  # the encoder (and so every latent) is untouched
    vdt.train(TINY, tmp_path / "b", until=2, log=lambda _: None)
    resumed, _ = vdt.train(TINY, tmp_path / "b", log=lambda _: None)
    b = _weights(resumed)
    assert all(torch.equal(after[k], b[k]) for k in after)

    from sfumato.core.bundle import embedded_dir, open_bundle
    from sfumato.core.loading import load_component

    out = vdt.export(straight, tmp_path / "export", record)
    bundle = tmp_path / "bundle"
    shutil.copytree(embedded_dir() / "materials", bundle)
    building_train.install(out, bundle, "decoder_training", "sfumato train decoder")
    vae = load_component(open_bundle(bundle), "vae", torch.device("cpu"), torch.float32)
    assert all(torch.equal(v, after[k].half().float()) for k, v in vae.state_dict().items())
    manifest = json.loads((bundle / "sfumato.json").read_text())
    assert manifest["decoder_training"]["command"] == "sfumato train decoder"
    assert manifest["decoder_training"]["steps"] == 3
