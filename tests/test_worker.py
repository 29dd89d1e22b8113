"""The worker protocol, driven through the stdlib client exactly as the Blender add-on drives it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from conftest import ROOT, load_client

client_mod = load_client()


@pytest.fixture()
def client(bundle_root):
    env = dict(os.environ, SFUMATO_BUNDLES=str(bundle_root), PYTHONPATH=str(ROOT))
    c = client_mod.WorkerClient(sys.executable, env=env, threads=1, device="cpu")
    yield c
    c.shutdown()


def _params(**kw):
    return {"prompt": "red brick wall", "bundle": "tiny-sd15", "seed": 1, "steps": 4, **kw}


def test_image_job_streams_progress_with_previews_and_returns_files(client, tmp_path):
    ready = client.start()
    assert ready["protocol"] == 1
    info = client.info()
    assert {"tiny-sd15", "tiny-sdxl"} <= set(info["bundles"]) and info["device"].startswith("cpu")
    job = client.submit("image", _params(n=2), str(tmp_path / "out.png"))
    events = list(client.events(job, timeout=120))
    kinds = [e["event"] for e in events]
    assert kinds[0] == "accepted" and kinds[-1] == "result"
    steps = [e for e in events if e["event"] == "progress" and e["stage"] == "denoising"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    assert all(Path(e["preview"]).is_file() for e in steps)
    result = events[-1]
    assert [Path(f).name for f in result["files"]] == ["out_s1.png", "out_s2.png"]
    assert result["metadata"][1]["seed"] == 2 and result["metadata"][0]["bundle"] == "tiny-sd15"


def test_cancel_stops_within_a_step_and_writes_nothing(client, tmp_path):
    job = client.submit("image", _params(steps=400), str(tmp_path / "long.png"))
    seen = []
    for event in client.events(job, timeout=120):
        seen.append(event)
        if event["event"] == "progress" and event.get("step") == 2:
            client.cancel(job)
    assert seen[-1]["event"] == "cancelled"
    last_step = max(e.get("step", 0) for e in seen if e["event"] == "progress")
    assert last_step <= 4  # cancel lands between two steps, not at the end
    assert not (tmp_path / "long.png").exists()
    job2 = client.submit("image", _params(), str(tmp_path / "after.png"))  # still serving
    assert client.wait(job2, timeout=120)["files"]


def test_bad_input_gets_error_events_and_worker_keeps_serving(client, tmp_path):
    client.start()
    client.send_raw("this is not json")
    client.send_raw(json.dumps({"v": 1, "type": "launch"}))
    client.send_raw(json.dumps({"v": 99, "type": "info"}))
    codes = [client._wait_for("error", 30)["code"] for _ in range(3)]
    assert codes == ["malformed", "unknown_type", "bad_version"]
    bad = {
        "unknown_kind": client.submit("sculpt", _params(), str(tmp_path / "a.png")),
        "width": client.submit("image", _params(width=100), str(tmp_path / "b.png")),
        "init_image": client.submit("image", _params(init_image=str(tmp_path / "missing.png")),
                                    str(tmp_path / "c.png")),
        "bundle_not_found": client.submit("image", _params(bundle="no-such-bundle"), str(tmp_path / "d.png")),
        "colour": client.submit("image", _params(colour="red"), str(tmp_path / "e.png")),
    }
    for expect, job in bad.items():
        with pytest.raises(client_mod.JobFailed) as err:
            client.wait(job, timeout=60)
        assert expect in str(err.value), (expect, str(err.value))
    ok = client.submit("image", _params(), str(tmp_path / "ok.png"))
    assert client.wait(ok, timeout=120)["files"] == [str(tmp_path / "ok.png")]


def test_jobs_queue_and_run_in_order(client, tmp_path):
    first = client.submit("image", _params(steps=3), str(tmp_path / "1.png"))
    second = client.submit("image", _params(steps=3, seed=9), str(tmp_path / "2.png"))
    assert client.wait(first, timeout=120)["metadata"][0]["seed"] == 1
    assert client.wait(second, timeout=120)["metadata"][0]["seed"] == 9


def test_killed_worker_is_noticed_and_restarted_on_next_submit(client, tmp_path):
    job = client.submit("image", _params(steps=400), str(tmp_path / "k.png"))
    for event in client.events(job, timeout=120):
        if event["event"] == "progress" and event.get("step") == 1:
            client.proc.kill()
            break
    with pytest.raises(client_mod.WorkerError):
        client.wait(job, timeout=60)
    assert not client.alive
    assert not list(tmp_path.glob("k*.png")) and not list(tmp_path.glob(".*part"))
    job2 = client.submit("image", _params(), str(tmp_path / "again.png"))
    assert client.wait(job2, timeout=120)["files"]


def test_release_and_shutdown(client):
    client.start()
    client.release()
    proc = client.proc
    client.shutdown()
    assert proc.returncode == 0


def test_cancel_keeps_finished_batches_and_unwritable_output_fails_early(client, tmp_path):
    job = client.submit("image", _params(n=4, batch_size=1, steps=3), str(tmp_path / "part.png"))
    done = None
    for event in client.events(job, timeout=120):
        if event["event"] == "progress" and event.get("image") == 1 and event.get("step") == 1:
            client.cancel(job)
        done = event
    assert done["event"] == "cancelled"
    assert done["files"] and all(Path(f).is_file() for f in done["files"])  # nothing lost
    dir_job = client.submit("image", _params(), str(tmp_path))
    with pytest.raises(client_mod.JobFailed, match="output="):
        client.wait(dir_job, timeout=60)
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro").chmod(0o500)
    try:
        if os.access(tmp_path / "ro", os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        bad = client.submit("image", _params(), str(tmp_path / "ro" / "x.png"))
        with pytest.raises(client_mod.JobFailed, match="output="):
            client.wait(bad, timeout=60)
    finally:
        (tmp_path / "ro").chmod(0o700)


def test_every_waiter_sees_a_dead_worker(client, tmp_path):
    first = client.submit("image", _params(steps=400), str(tmp_path / "a.png"))
    second = client.submit("image", _params(steps=400), str(tmp_path / "b.png"))
    for event in client.events(first, timeout=120):
        if event["event"] == "progress" and event.get("step") == 1:
            client.proc.kill()
            break
    for job in (first, second):
        with pytest.raises(client_mod.WorkerError):
            client.wait(job, timeout=60)
    assert client.poll()[-1]["event"] == "worker_exited"


def test_an_older_addons_worker_command_gets_a_clear_version_error():
    """Add-ons from before the kinds moved to the top package start ``python -m sfumato.core.worker``: they get
    one error event saying what to update, not a hang or a traceback."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "sfumato.core.worker"], input="", capture_output=True, text=True,
                          timeout=120)
    (line,) = proc.stdout.strip().splitlines()
    event = json.loads(line)
    assert proc.returncode == 2 and event["event"] == "error" and event["code"] == "bad_version"
    assert "python -m sfumato.worker" in event["message"] and "Traceback" not in proc.stderr
