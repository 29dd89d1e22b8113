"""Trust: the worker runs only our code, whatever folder it starts in, and a bundle's scheduler config cannot
name an arbitrary class."""

from __future__ import annotations

import os
import sys

import pytest

from conftest import load_client

client_mod = load_client()

PLANT = ("import os\nopen(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'RAN_' + __name__), 'w')"
         ".close()\nraise SystemExit('planted module ran')\n")


def test_worker_ignores_modules_planted_in_the_current_folder(bundle_root, tmp_path, monkeypatch):
    project = tmp_path / "downloaded project"
    project.mkdir()
    for name in ("sfumato", "resource", "json", "torch"):
        (project / f"{name}.py").write_text(PLANT)
    monkeypatch.chdir(project)
    # empty and relative PYTHONPATH entries also mean "the current folder"; the client drops them
    env = dict(os.environ, SFUMATO_BUNDLES=str(bundle_root), PYTHONPATH=os.pathsep.join(["", ".", "sub"]))
    with client_mod.WorkerClient(sys.executable, env=env, threads=1, device="cpu") as client:
        assert client.start()["event"] == "ready"
        assert client.proc.args[1:4] == ["-P", "-m", "sfumato.worker"]
        job = client.submit("image", {"prompt": "brick", "bundle": "tiny-sd15", "seed": 1, "steps": 2},
                            str(tmp_path / "out.png"))
        assert client.wait(job, timeout=120)["files"] == [str(tmp_path / "out.png")]
    assert sorted(p.name for p in project.iterdir() if p.name.startswith("RAN_")) == []


def test_safe_pythonpath_keeps_only_absolute_folders():
    sep = os.pathsep
    assert client_mod.safe_pythonpath(sep.join(["", ".", "lib", os.path.abspath("x")])) == os.path.abspath("x")


def test_a_bundle_scheduler_must_be_a_class_we_run():
    from sfumato.core.errors import BadParameter
    from sfumato.core.schedulers import make_scheduler

    base = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}
    for bad in ("StableDiffusionPipeline", "UNet2DConditionModel", "", None, ["DDIMScheduler"]):
        with pytest.raises(BadParameter, match="scheduler='bundle' is not allowed: a named scheduler") as err:
            make_scheduler("bundle", {**base, "_class_name": bad})
        assert "PNDMScheduler" in str(err.value)
    assert type(make_scheduler("bundle", {**base, "_class_name": "PNDMScheduler"})).__name__ == "PNDMScheduler"
