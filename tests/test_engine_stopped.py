"""A worker killed by SIGKILL (what the system's out-of-memory killer sends) is reported as memory running out,
with what to lower, on both of the add-on's paths (interactive events, blocking scripts); other exits keep their
code. Blender-free: the add-on's engine module drives a real worker on the tiny bundle."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from test_addon_logic import load_addon

load_addon()
from sfumato_addon import client, engine  # noqa: E402


def test_a_killed_engine_says_memory_ran_out_and_what_to_lower():
    for code in (-signal.SIGKILL, 128 + signal.SIGKILL):
        state = engine.JobState(tag="texture")
        state.apply({"event": "worker_exited", "returncode": code, "stderr": ""})
        assert state.status == "error" and "memory most likely ran out" in state.message
        assert "Lower the view size, the texture size or the views" in state.message
    state = engine.JobState(tag="image")
    state.apply({"event": "worker_exited", "returncode": 1, "stderr": ""})
    assert state.message == "The engine stopped during the job (exit code 1); the next job starts a fresh one"
    blocking = engine.explain(client.WorkerError("the engine exited with code -9 during job j1: "))
    assert "memory most likely ran out" in blocking and "Lower the job's size" in blocking
    assert engine.explain(client.WorkerError("the engine exited (3): boom")) == \
        "The engine stopped (the engine exited (3)); the next job starts a fresh one"


def test_a_worker_killed_mid_job_is_reported_as_memory(bundle_root, tmp_path):
    session = engine.Session()
    config = engine.EngineConfig(python=sys.executable, bundle_folder=str(bundle_root), device="cpu", threads=1)
    state = engine.JobState(tag="image")
    killed = []

    def kill_at_first_step(st, event):
        if event.get("event") == "progress" and event.get("step") and not killed:
            killed.append(session.client.proc.pid)
            os.kill(session.client.proc.pid, signal.SIGKILL)

    params = {"prompt": "red brick", "bundle": "tiny-sd15", "steps": 200, "width": 64, "height": 64, "seed": 1}
    try:
        with pytest.raises(engine.EngineError, match="memory most likely ran out") as stopped:
            session.run(config, state, "image", params, str(tmp_path / "x.png"), on_event=kill_at_first_step)
    finally:
        session.shutdown()
    assert killed and state.status == "error" and str(stopped.value) == state.message
    assert "the next job starts a fresh engine" in state.message


def test_a_worker_killed_mid_job_names_the_files_it_had_finished(bundle_root, tmp_path):
    """The worker says each finished file as it is written (``saved``); when it dies later in the job, the job's
    exit event names them, and so do both of the add-on's paths."""
    session = engine.Session()
    config = engine.EngineConfig(python=sys.executable, bundle_folder=str(bundle_root), device="cpu", threads=1)
    state = engine.JobState(tag="image")

    def kill_in_the_second_image(st, event):
        if event.get("event") == "progress" and event.get("image") == 1 and event.get("step"):
            os.kill(session.client.proc.pid, signal.SIGKILL)

    params = {"prompt": "red brick", "bundle": "tiny-sd15", "steps": 50, "width": 64, "height": 64, "seed": 1,
              "n": 2, "batch_size": 1}
    try:
        with pytest.raises(engine.EngineError, match="memory most likely ran out") as stopped:
            session.run(config, state, "image", params, str(tmp_path / "x.png"), on_event=kill_in_the_second_image)
        assert state.saved == [str(tmp_path / "x_s1.png")] and (tmp_path / "x_s1.png").is_file()
        assert str(stopped.value).endswith("Finished and kept: x_s1.png")
        client = session.client_for(config)  # the same job on a fresh worker, read as raw events
        job = client.submit("image", {**params, "seed": 11}, str(tmp_path / "y.png"))
        for event in client.events(job):
            if event["event"] == "progress" and event.get("image") == 1 and event.get("step"):
                client.kill()
        assert event["event"] == "worker_exited" and event["files"] == [str(tmp_path / "y_s11.png")]
    finally:
        session.shutdown()
    live = engine.JobState(tag="image")  # the interactive path folds the same events
    live.apply({"event": "saved", "id": "j", "files": ["/o/a.png"]})
    live.apply({"event": "worker_exited", "returncode": 1, "stderr": "", "files": ["/o/a.png"]})
    assert live.message.endswith("(exit code 1); the next job starts a fresh one. Finished and kept: a.png")
