"""The ``train_style`` worker job (``core/train/style_job.py``): what the add-on's "Train style from folder" and
scripts run. Progress per step with the loss, a JSON summary, the style usable at once by name; a cancel stops
before the next step and the same job again resumes; settings are checked at the door like any job's."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sfumato.core import jobs, schema
from sfumato.core.errors import BadParameter, Cancelled
from sfumato.core.loading import ModelCache
from sfumato.kinds import KINDS


def _refs(folder: Path, n: int = 5) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        a = np.full((64, 64, 3), (30, 90, 160), np.uint8)
        a[:, ::6] = (230, 230, 230)
        Image.fromarray(np.clip(a + rng.integers(-8, 8, a.shape), 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


def _ctx(events: list, cancel: threading.Event | None = None) -> jobs.JobContext:
    return jobs.JobContext("s", ModelCache(), "cpu", "fp32", cancel or threading.Event(),
                           lambda event, **f: events.append((event, f)), preview_every=0)


@pytest.fixture
def setup(sd15, tmp_path, monkeypatch):
    monkeypatch.setenv("SFUMATO_BUNDLES", str(tmp_path / "data" / "bundles"))  # checkpoints go beside it
    bundle = Path(shutil.copytree(sd15, tmp_path / "tiny-job"))
    return bundle, _refs(tmp_path / "refs")


PARAMS = dict(prompt="blue tiles in the {trigger} style", name="blues", steps=3, rank=2, resolution=64, seed=5)


def test_a_style_job_reports_progress_writes_its_summary_and_the_style_is_usable(setup, tmp_path):
    from sfumato.core.bundle import open_bundle
    from sfumato.core.capabilities import capabilities

    bundle, refs = setup
    events: list = []
    out = tmp_path / "blues.json"
    result = jobs.run(KINDS, "train_style", {**PARAMS, "folder": str(refs), "bundle": str(bundle)}, out, _ctx(events))
    steps = [f["step"] for e, f in events if e == "progress" and f.get("stage") == "training"]
    assert steps == [1, 2, 3] and all("loss" in f for e, f in events if f.get("stage") == "training")
    record = json.loads(out.read_text())
    assert result["files"] == [str(out)] and record["name"] == "blues" and len(record["losses"]) == 3
    assert record["hash"] == result["hash"] and Path(record["lora"]).is_file() and record["seed"] == 5
    assert capabilities(open_bundle(bundle))["loras"] == ["blues"]
    assert any(e == "note" and "wrote" in f["message"] for e, f in events)


def test_a_cancelled_style_job_resumes_where_it_stopped(setup, tmp_path):
    bundle, refs = setup
    cancel, events = threading.Event(), []
    params = {**PARAMS, "folder": str(refs), "bundle": str(bundle), "steps": 4}

    def emit(event, **f):
        events.append((event, f))
        if event == "progress" and f.get("step") == 2 and f.get("stage") == "training":
            cancel.set()

    ctx = jobs.JobContext("s", ModelCache(), "cpu", "fp32", cancel, emit, preview_every=0)
    with pytest.raises(Cancelled):
        jobs.run(KINDS, "train_style", {**params, "steps": 4}, tmp_path / "a.json", ctx)
    assert not (tmp_path / "a.json").exists()
    events.clear()
    jobs.run(KINDS, "train_style", params, tmp_path / "a.json", _ctx(events))
    notes = " ".join(f["message"] for e, f in events if e == "note")
    steps = [f["step"] for e, f in events if e == "progress" and f.get("stage") == "training"]
    assert "resuming at step 2" in notes and steps == [3, 4]  # the cancel kept step 2 (checkpoints are every 50)


@pytest.mark.parametrize("change,field", [({"steps": 0}, "steps"), ({"rank": 500}, "rank"),
                                          ({"resolution": 100}, "resolution"), ({"loras": ["x.safetensors"]}, "loras"),
                                          ({"name": ""}, "name"), ({"prompt": "no trigger word"}, "prompt")])
def test_bad_settings_are_refused_at_the_door(setup, tmp_path, change, field):
    bundle, refs = setup
    with pytest.raises(BadParameter) as err:
        jobs.run(KINDS, "train_style", {**PARAMS, "folder": str(refs), "bundle": str(bundle), **change},
                 tmp_path / "x.json", _ctx([]))
    assert err.value.field == field


def test_the_cli_has_no_job_command_for_training_kinds():
    from sfumato.cli import parser

    sub = next(a for a in parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    assert "train_style" not in sub.choices and "train" in sub.choices
    assert set(schema.TRAINING_KINDS) <= set(schema.KINDS)
