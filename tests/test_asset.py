"""Text → 3-D asset with the embedded bundle: a short SDS run lowers its loss and writes a valid GLB,
cancel + resume ends where an uninterrupted run does, a NaN stops with a message and keeps the last
good state, bad input is named; the job kind, the CLI and Blender's glTF importer."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import trimesh

from sfumato.core import schema
from sfumato.core.errors import BadParameter, Cancelled, SfumatoError
from sfumato.core.checks import checked, raise_first
from sfumato.threed.asset import AssetRequest, make_asset, optimise, save_result

FAST = dict(resolution=32, samples=16, mesh_resolution=24, texture_size=64, preview_every=0)


@pytest.fixture(scope="module")
def models():
    from sfumato.core.bundle import resolve
    from sfumato.core.loading import load_models

    return load_models(resolve(None), torch.device("cpu"), torch.float32)


def test_short_sds_run_lowers_its_loss_and_writes_a_glb(models, tmp_path):
    req = AssetRequest(prompt="red brick wall", iters=60, seed=0, **FAST)
    result = make_asset(req, models)
    m = result.metrics
    print(f"SDS asset, 60 iterations at 32²: probe loss {m['probe_first']} -> {m['probe_last']}; training loss "
          f"(first / last 10%) {m['loss_first']} -> {m['loss_last']}; {m['iters_per_second']} it/s; {m['faces']} faces")
    # the probe: the same 4 (view, t = 500, ε) draws before and after, so it compares the field, not the draw
    assert m["probe_last"] < 0.6 * m["probe_first"]  # measured 5259 -> 2311
    assert len(result.metrics["loss_curve"]) == 60
    paths = save_result(result, tmp_path / "brick.glb")
    tm = trimesh.load(paths["glb"], force="mesh")
    assert len(tm.faces) == m["faces"]  # the unwrap splits vertices, never faces
    tm.merge_vertices(merge_tex=True, merge_norm=True)
    assert tm.is_watertight
    assert abs(max(tm.extents) - 1.0) < 1e-3  # the largest side is size = 1 m
    side = json.loads(Path(paths["sidecar"]).read_text())
    assert side["metadata"]["bundle"] == "materials" and side["metadata"]["bundle_hash"]
    assert side["metadata"]["seed"] == 0 and len(side["metrics"]["loss_curve"]) == 60


def _params(field):
    return {k: v.clone() for k, v in field.state_dict().items()}


def test_cancel_saves_and_a_rerun_resumes_where_it_stopped(models, tmp_path):
    req = AssetRequest(prompt="oak planks", iters=10, seed=3, **FAST)
    straight, _ = optimise(checked(req), models, seed=3)
    state = tmp_path / "run.safetensors"
    req.state = str(state)

    def cancel_at_4(info):
        if info.step == 4:
            raise Cancelled()

    with pytest.raises(Cancelled):
        optimise(req, models, seed=3, on_step=cancel_at_4)
    assert state.is_file()
    resumed, stats = optimise(req, models, seed=3)
    assert stats["resumed_from"] == 4 and len(stats["losses"]) == 10
    assert not state.is_file()  # finished: nothing left to resume
    a, b = _params(straight), _params(resumed)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    # a state made with other settings is refused, not silently mixed in
    req2 = AssetRequest(prompt="oak planks", iters=10, seed=3, state=str(state), **FAST)
    with pytest.raises(Cancelled):
        optimise(req2, models, seed=3, on_step=cancel_at_4)
    req2.lr = 0.02
    with pytest.raises(SfumatoError, match="other settings.*lr"):
        optimise(req2, models, seed=3)


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_state(models, tmp_path):
    from safetensors import safe_open

    state = tmp_path / "nan.safetensors"
    req = AssetRequest(prompt="slate", iters=10, seed=1, state=str(state), **FAST)
    holder = {}

    def blow_up(info):
        if info.step == 3:  # as if an update had diverged
            grid = holder["field"].grids[0]
            with torch.no_grad():
                grid.fill_(float("nan"))

    import sfumato.threed.asset as asset_mod

    original = asset_mod.RadianceField

    def capture(*a, **k):
        holder["field"] = original(*a, **k)
        return holder["field"]

    asset_mod.RadianceField = capture
    try:
        with pytest.raises(SfumatoError, match="loss became nan at iteration 3.*kept the last good field"):
            optimise(req, models, seed=1, on_step=blow_up)
    finally:
        asset_mod.RadianceField = original
    with safe_open(str(state), "pt") as f:
        assert f.metadata()["iteration"] == "3"
        assert all(torch.isfinite(f.get_tensor(k)).all() for k in f.keys() if k.startswith("field."))
    assert torch.isfinite(holder["field"].grids[0]).all()  # the field in memory was restored too


@pytest.mark.parametrize("params,field", [
    ({"prompt": "x", "iters": 0}, "iters"),
    ({"prompt": "x", "resolution": 40}, "resolution"),
    ({"prompt": "x", "resolution": 1024}, "resolution"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x", "guidance": -1}, "guidance"),
    ({"prompt": "x", "render": "voxels"}, "render"),
    ({"prompt": "x", "colour": "red"}, "colour"),  # unknown field
    ({}, "prompt"),
])
def test_bad_input_names_the_field(params, field):
    with pytest.raises(BadParameter) as exc:
        req, found = schema.parse(AssetRequest, params)
        raise_first(found or schema.problems(req))
    assert exc.value.field == field and exc.value.allowed


def test_resolution_the_bundle_cannot_halve_is_refused(models):
    from sfumato.threed.asset import check_resolution

    class Deep:  # the same bundle seen as if its U-Net were one level deeper (SD1.5-like: 64 px steps)
        bundle, vae_scale_factor = models.bundle, models.vae_scale_factor

        class unet:
            class config:
                block_out_channels = (1, 2, 3, 4)

    with pytest.raises(BadParameter, match="a multiple of 32 for bundle materials"):
        check_resolution(Deep(), AssetRequest(prompt="x", resolution=48))


def test_asset_job_events_and_outputs(tmp_path):
    from sfumato.core.jobs import JobContext
    from sfumato.kinds import run_job
    from sfumato.core.loading import ModelCache

    events = []
    ctx = JobContext(job_id="j1", cache=ModelCache(), device="cpu", dtype="fp32", cancel=threading.Event(),
                     emit=lambda e, **f: events.append((e, f)), preview_every=1, preview_dir=tmp_path / "prev")
    with pytest.raises(BadParameter, match="output"):
        run_job("asset", {"prompt": "x"}, tmp_path / "a.obj", ctx)
    result = run_job("asset", {"prompt": "granite", "iters": 4, "seed": 2, **{**FAST, "preview_every": 2}},
                                tmp_path / "a.glb", ctx)
    progress = [f for e, f in events if e == "progress" and f["stage"] == "asset"]
    assert [f["step"] for f in progress] == [1, 2, 3, 4] and all(f["total"] == 4 for f in progress)
    assert all(isinstance(f["loss"], float) and f["image"] == 0 and f["images"] == 1 for f in progress)
    assert [f["stage"] for e, f in events if e == "progress"][-1] == "extracting"  # after the iterations
    previews = [f["preview"] for f in progress if f["preview"]]
    assert len(previews) == 2 and all(Path(p).is_file() for p in previews)
    assert result["files"] == [result["glb"], result["preview"]] and Path(result["sidecar"]).is_file()
    meta = result["metadata"]
    assert meta["prompt"] == "granite" and meta["seed"] == 2 and meta["bundle_hash"]
    assert meta["settings"]["iters"] == 4 and "probe_last" in result["metrics"]


def test_cli_asset(tmp_path, capsys):
    from sfumato.cli import main

    out = tmp_path / "stone.glb"
    code = main(["asset", "rough stone", "-o", str(out), "--iters", "3", "--resolution", "32", "--samples", "16",
                 "--mesh-resolution", "24", "--preview-every", "0", "--seed", "5", "--colours", "vertex"])
    assert code == 0
    printed = capsys.readouterr()
    assert str(out) in printed.out and "asset in" in printed.out
    assert out.is_file() and out.with_suffix(".png").is_file() and out.with_suffix(".json").is_file()
    assert trimesh.load(out, force="mesh").visual.kind == "vertex"
    assert main(["asset", "", "-o", str(out)]) == 2
    assert "prompt=''" in capsys.readouterr().err


def test_glb_imports_into_blender_standing_on_the_floor(tmp_path):
    """An ellipsoid tall along the field's +Y (glTF up) comes into Blender tall along +Z, base at z = 0."""
    pytest.importorskip("bpy")
    from sfumato.threed.extract import ExtractConfig, extract
    from sfumato.threed.mesh import save_glb

    def density(x):
        return 10 * (1 - (x / torch.tensor([0.3, 0.6, 0.3])).norm(dim=-1)) + 2

    ex = extract(density, lambda x: torch.full((x.shape[0], 3), 0.5), 1.0,
                 ExtractConfig(resolution=24, size=2.0, texture_size=64))
    path = save_glb(ex.mesh, ex.texture, tmp_path / "tall.glb")
    code = ("import bpy, json; bpy.ops.wm.read_factory_settings(use_empty=True); "
            f"bpy.ops.import_scene.gltf(filepath={str(path)!r}); "
            "o = [o for o in bpy.context.scene.objects if o.type == 'MESH'][0]; "
            "zs = [(o.matrix_world @ v.co).z for v in o.data.vertices]; "
            "print('RESULT', json.dumps([list(o.dimensions), min(zs)]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    line = [x for x in r.stdout.splitlines() if x.startswith("RESULT")]
    assert line, r.stderr[-2000:]
    dims, zmin = json.loads(line[0][len("RESULT "):])
    assert abs(dims[2] - 2.0) < 0.02 and dims[0] < 1.2 and dims[1] < 1.2
    assert abs(zmin) < 1e-4


def test_ctrl_c_in_the_cli_saves_the_state_and_the_same_command_resumes(tmp_path):
    """The first Ctrl-C stops after the current iteration and keeps the state; rerunning resumes from it."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "stone.glb"
    cmd = [sys.executable, "-m", "sfumato.cli", "asset", "rough stone", "-o", str(out), "--iters", "150",
           "--render", "latent", "--seed", "3", "--colours", "vertex", "--resolution", "32", "--samples", "16",
           "--mesh-resolution", "24", "--preview-every", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    seen = b""
    deadline = time.time() + 120
    while b"asset \xc2\xb7 loss" not in seen and time.time() < deadline:  # the first iterations ran
        seen += proc.stderr.read1(256)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (seen + err)[-2000:]
    assert b"run the same command again to resume" in err
    state = tmp_path / "stone.asset-state.safetensors"
    assert state.is_file() and not out.exists()
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "stone.json").read_text())["metrics"]
    assert 0 < metrics["resumed_from"] < 150 and not state.exists()
