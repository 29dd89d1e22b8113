"""Batches from Blender (real ``bpy``, headless): ``sfumato_api.batch`` and the Batch operator run the engine's batch
runner on the tiny bundle, load images and clips into the .blend, and a second run makes nothing again;
``variations`` is a batch too, and resumes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from test_addon_blender import NAME, bpy, enabled, pump, scene  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("enabled")


def _module(name: str):
    return sys.modules[f"{NAME}.{name}"]


def _rows(mesh: Path) -> list[dict]:
    rows = [{"prompt": p, "seed": s, "steps": 2, "width": 64, "height": 64} for p in ("slate", "oak") for s in (1, 2)]
    return rows + [{"kind": "turntable", "prompt": "timber house", "mesh": str(mesh), "frames": 3, "steps": 2,
                    "resolution": 64, "seed": 3, "name": "house.gif"}]


def _box(tmp_path: Path) -> Path:
    import trimesh

    path = tmp_path / "box.obj"
    trimesh.creation.box((2.0, 1.0, 1.0)).export(path)
    return path


def test_api_batch_loads_images_and_clips_and_a_second_run_makes_nothing(scene, tmp_path):
    import sfumato_api

    rows = _rows(_box(tmp_path))
    out = sfumato_api.batch(rows, folder=tmp_path / "b", workers=2)
    assert not out.failed and len(out.jobs) == 5 and len(out.images) == 4 and len(out.clips) == 1
    assert all(img.use_fake_user for img in out.images) and out.clips[0].use_fake_user
    seeds = sorted((img["sfumato"]["prompt"], img["sfumato"]["seed"]) for img in out.images)
    assert seeds == [("oak", 1), ("oak", 2), ("slate", 1), ("slate", 2)]  # provenance from the engine
    lines = (tmp_path / "b" / "batch-manifest.jsonl").read_text().splitlines()
    again = sfumato_api.batch(rows, folder=tmp_path / "b")
    assert (tmp_path / "b" / "batch-manifest.jsonl").read_text().splitlines() == lines  # nothing ran twice
    assert [j["files"] for j in again.jobs] == [j["files"] for j in out.jobs] and len(again.images) == 4
    with pytest.raises(sfumato_api.EngineError, match="row 1, column stepz: unknown column; did you mean steps"):
        sfumato_api.batch([{"prompt": "x", "stepz": 2}], folder=tmp_path / "bad")


def test_the_batch_operator_runs_a_csv_in_the_background_and_interactively(scene, tmp_path):
    spec = tmp_path / "options.csv"
    spec.write_text("prompt,seed,steps,width,height\nslate,1,2,64,64\noak,1,2,64,64\n")
    scene.sfumato_batch.spec, scene.sfumato_batch.workers = str(spec), 1
    before = len(bpy.data.images)
    assert bpy.ops.sfumato.batch() == {"FINISHED"}  # background mode: waits
    assert len(bpy.data.images) == before + 2
    runtime, batch_ui = _module("runtime"), _module("batch_ui")
    spec.write_text(spec.read_text() + "moss,4,2,64,64\n")
    assert bpy.ops.sfumato.batch(blocking="OFF") == {"FINISHED"}  # as in the UI: a timer applies the result
    state = runtime.CURRENT
    assert state.tag == "batch" and "run" in batch_ui.RUNNING
    pump(lambda: not state.active, timeout=300)
    assert state.status == "done", state.message
    assert "3 images" in runtime.LAST_MESSAGE[0] and "run" not in batch_ui.RUNNING
    manifest = [json.loads(line) for line in (Path(state.result["batch"].folder) / "batch-manifest.jsonl")
                .read_text().splitlines()]
    assert len(manifest) == 3  # the two finished before were not made again


def test_variations_are_a_batch_and_resume(scene, tmp_path):
    import sfumato_api

    out = sfumato_api.variations(["red brick wall"], seeds=[1, 2], steps=2, folder=tmp_path / "v")
    manifest = tmp_path / "v" / "batch-manifest.jsonl"
    lines = manifest.read_text().splitlines()
    assert len(out.images) == 2 and len(lines) == 2 and out.sheet_file
    again = sfumato_api.variations(["red brick wall"], seeds=[1, 2], steps=2, folder=tmp_path / "v")
    assert manifest.read_text().splitlines() == lines and again.files == out.files
