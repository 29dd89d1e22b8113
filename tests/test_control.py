"""Control after failures: a CPU allocation failure is out_of_memory like CUDA's, an asset run checkpoints its
state while it runs (a crash resumes), and a dead process's half-written files and preview folders are cleaned."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from sfumato.core.errors import OutOfMemory


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_cpu_allocation_failure_is_out_of_memory():
    from sfumato.core.device import out_of_memory_as_error

    with pytest.raises(OutOfMemory, match="out of memory making a huge tensor") as err:
        with out_of_memory_as_error("making a huge tensor"):
            torch.empty(2**50, dtype=torch.uint8)  # a petabyte: the CPU allocator refuses it
    assert err.value.code == "out_of_memory" and "computer's memory" in err.value.message


def test_the_worker_says_out_of_memory_for_a_cpu_allocation_failure_anywhere(tmp_path):
    from sfumato.core import schema
    from sfumato.core.jobs import Kind
    from sfumato.core.worker import Worker

    def runner(job, output, ctx):
        torch.empty(2**50, dtype=torch.uint8)

    out = io.StringIO()
    worker = Worker(out, {"image": Kind(schema.ImageRequest, runner)}, device="cpu")
    worker.handle_line(json.dumps({"v": 1, "type": "submit", "id": "big", "kind": "image",
                                   "params": {"prompt": "x", "bundle": "materials"},
                                   "output": str(tmp_path / "o.png")}))
    worker.run(worker.jobs.get_nowait())
    event = json.loads(out.getvalue().splitlines()[-1])
    assert event["event"] == "error" and event["code"] == "out_of_memory"


def test_an_asset_run_checkpoints_and_a_crash_resumes_where_it_saved(tmp_path):
    from sfumato.core.bundle import resolve
    from sfumato.core.checks import checked
    from sfumato.core.loading import load_models
    from sfumato.threed.asset import AssetRequest, optimise, settings_for

    models = load_models(resolve(None), torch.device("cpu"), torch.float32)
    req = checked(AssetRequest(prompt="oak planks", iters=6, seed=3, resolution=32, samples=16, preview_every=0,
                               state=str(tmp_path / "run.safetensors")))
    often = replace(settings_for(req), checkpoint_seconds=1e-9)  # every iteration

    def crash_at_4(info):
        if info.step == 4:
            raise RuntimeError("the power went out")

    with pytest.raises(RuntimeError, match="power"):
        optimise(req, models, seed=3, settings=often, on_step=crash_at_4)
    assert Path(req.state).is_file()  # not a cancel: the periodic checkpoint saved it
    _, stats = optimise(req, models, seed=3, settings=often)
    assert stats["resumed_from"] == 4 and len(stats["losses"]) == 6 and not Path(req.state).exists()


def test_half_written_files_of_dead_processes_are_removed_before_writing(tmp_path):
    from sfumato.core.jobs import check_writable

    out = tmp_path / "wall.png"
    dead = tmp_path / f".wall.png.{_dead_pid()}.part"
    alive = tmp_path / f".wall.png.{os.getpid()}.part"
    other = tmp_path / f".other.png.{_dead_pid()}.part"
    for f in (dead, alive, other):
        f.write_bytes(b"half")
    check_writable(out)
    assert not dead.exists() and alive.exists() and other.exists()


def test_preview_folders_of_dead_workers_are_removed_at_start():
    from sfumato.core.worker import PREVIEWS, Worker

    dead = Path(tempfile.mkdtemp(prefix=f"{PREVIEWS}{_dead_pid()}-job-"))
    mine = Path(tempfile.mkdtemp(prefix=f"{PREVIEWS}{os.getpid()}-job-"))
    (dead / "step_0001.png").write_bytes(b"x")
    try:
        assert dead in Worker.remove_stale_previews()
        assert not dead.exists() and mine.is_dir()
    finally:
        mine.rmdir()


def test_a_frozen_worker_goes_quiet_and_stop_kills_it_keeping_finished_files(bundle_root, tmp_path):
    import signal

    from conftest import load_client

    client_mod = load_client()
    env = dict(os.environ, SFUMATO_BUNDLES=str(bundle_root), SFUMATO_WORKER_HEARTBEAT="0.3")
    with client_mod.WorkerClient(sys.executable, env=env, threads=1, device="cpu") as client:
        job = client.submit("image", {"prompt": "brick", "bundle": "tiny-sd15", "seed": 1, "steps": 400, "n": 2,
                                      "batch_size": 1}, str(tmp_path / "o.png"))
        for event in client.events(job, timeout=120):
            if event["event"] == "progress" and event.get("image") == 1:
                break  # the first image is finished and on disk
        time.sleep(1.0)
        assert client.silent_for() < 1.0  # heartbeats keep coming while it works
        os.kill(client.proc.pid, signal.SIGSTOP)  # frozen: no step, no heartbeat, cancel unheard
        time.sleep(1.5)
        assert client.silent_for() > 1.0
        started = time.monotonic()
        assert client.stop(job, grace=1.0) is True
        assert time.monotonic() - started < 5
        with pytest.raises(client_mod.WorkerError, match="exited"):
            client.wait(job, timeout=30)
        assert (tmp_path / "o_s1.png").is_file() and not list(tmp_path.glob(".*part"))
        again = client.submit("image", {"prompt": "brick", "bundle": "tiny-sd15", "seed": 1, "steps": 2},
                              str(tmp_path / "next.png"))
        assert client.wait(again, timeout=120)["files"]
        assert client.stop(again, grace=0.5) is False  # already ended: nothing to kill


def test_a_worker_ended_by_stop_reads_as_stopped_not_as_memory():
    from test_addon_logic import load_addon

    load_addon()
    from sfumato_addon import engine

    state = engine.JobState(tag="image")
    state.cancel_requested = True
    state.apply({"event": "worker_exited", "returncode": -9})
    assert state.status == "cancelled" and "did not answer the cancel" in state.message
    unasked = engine.JobState(tag="image")
    unasked.apply({"event": "worker_exited", "returncode": -9})
    assert unasked.status == "error" and "memory" in unasked.message
