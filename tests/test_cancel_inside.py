"""A cancel lands inside one long operation, not only between steps: a VAE decode of a large latent (through a
real job, where it is the last thing after the final step), and mesh extraction between its pieces, keeping the
asset's state so the same job resumes with nothing left to optimise."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from sfumato.core.errors import Cancelled


def test_a_cancel_stops_a_large_vae_decode_between_two_layers(sd15_models):
    from sfumato.core.jobs import CancelInside
    from sfumato.core.latents import decode

    z = torch.randn(1, 4, 128, 128, generator=torch.Generator().manual_seed(0))  # a 1024² image
    inside, event = CancelInside(), threading.Event()
    inside.watch(event, sd15_models.vae)
    try:
        started = time.perf_counter()
        whole = decode(sd15_models, z)
        full = time.perf_counter() - started
        timer = threading.Timer(full / 5, event.set)
        started = time.perf_counter()
        timer.start()
        with pytest.raises(Cancelled):
            decode(sd15_models, z)
        stopped = time.perf_counter() - started
        inside.watch(None)
        assert torch.equal(decode(sd15_models, z[:, :, :8, :8]), decode(sd15_models, z[:, :, :8, :8]))
    finally:
        inside.watch(None)
    print(f"full decode {full:.2f} s, cancelled at {full / 5:.2f} s, stopped at {stopped:.2f} s")
    assert whole.shape[-1] == 1024 and stopped < full / 5 + max(0.5, full / 4)


def test_a_job_cancelled_after_its_last_step_stops_inside_the_decode(bundle_root, tmp_path):
    from sfumato.core.jobs import JobContext
    from sfumato.core.loading import ModelCache
    from sfumato.kinds import run_job

    marks: dict[str, float] = {}
    cancel = threading.Event()

    def emit(event, **fields):  # the final step's progress: the decode of a 1024² image comes next (~3 s here)
        if event == "progress" and fields.get("stage") == "denoising" and fields["step"] == fields["total"]:
            marks["set"] = time.perf_counter() + 0.3
            threading.Timer(0.3, cancel.set).start()  # well inside the decode

    ctx = JobContext(job_id="j", cache=ModelCache(), device="cpu", dtype="fp32", cancel=cancel, emit=emit,
                     preview_every=0)
    params = {"prompt": "brick", "bundle": "tiny-sd15", "steps": 1, "width": 1024, "height": 1024, "seed": 1}
    with pytest.raises(Cancelled):
        run_job("image", params, tmp_path / "o.png", ctx)
    after = time.perf_counter() - marks["set"]
    print(f"stopped {after:.2f} s after the cancel, set 0.3 s into the decode")
    assert after < 1.0 and not (tmp_path / "o.png").exists()
    assert ctx.inside is not None and ctx.inside.event is None  # the cached models no longer watch this job


def test_mesh_extraction_checks_between_its_pieces():
    from sfumato.threed.extract import ExtractConfig, extract

    calls = []

    def density(points):
        calls.append(len(points))
        return (1.0 - points.norm(dim=-1)).clamp(min=0) * 10

    def check():
        if len(calls) >= 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        extract(density, None, 1.0, ExtractConfig(resolution=96, colours="vertex"), check=check)
    assert len(calls) == 2  # of (97³ / 65536) = 14 chunks
    done = extract(density, None, 1.0, ExtractConfig(resolution=32, colours="vertex"))
    assert done.stats["faces"] > 0


def test_an_asset_cancelled_while_its_mesh_is_extracted_resumes_with_nothing_left_to_optimise(tmp_path):
    from sfumato.core.bundle import resolve
    from sfumato.core.loading import load_models
    from sfumato.threed.asset import AssetRequest, make_asset

    models = load_models(resolve(None), torch.device("cpu"), torch.float32)
    state = tmp_path / "o.asset-state.safetensors"
    req = AssetRequest(prompt="oak", iters=3, seed=2, resolution=32, samples=16, mesh_resolution=24,
                       texture_size=64, preview_every=0, state=str(state))

    def cancel_now():
        raise Cancelled()

    with pytest.raises(Cancelled):
        make_asset(req, models, check=cancel_now)
    assert state.is_file()
    again = make_asset(AssetRequest(**{**req.__dict__}), models)
    assert again.metrics["resumed_from"] == 3 and not state.exists() and Path(tmp_path).is_dir()
