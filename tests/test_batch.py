"""The batch runner: a spec checked whole, outputs that survive a kill -9, workers that die, and the same batch on a
local Ray cluster (a head and one more node) with an actor killed in the middle of a job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sfumato.batch.manifest import NAME, Manifest, sha256
from sfumato.batch.runner import run_batch
from sfumato.batch.spec import SpecInvalid, load

STEPS = 30  # long enough (about a second per job here) to kill a worker in the middle of one


def _spec(folder: Path, rows: list[str], name: str = "spec.csv") -> Path:
    path = folder / name
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def spec12(tmp_path, sd15):
    """Twelve image jobs on the tiny bundle; one without a seed (it gets one from its content)."""
    rows = ["prompt,seed,steps,width,height,bundle"]
    rows += [f"material {k % 3},{k if k else ''},{STEPS},64,64,{sd15.name}" for k in range(12)]
    return _spec(tmp_path, rows)


def _files(folder: Path) -> dict[str, str]:
    return {p.name: sha256(p) for p in sorted(folder.glob("*.png"))}


def _local(workers: int = 2, retries: int = 2):
    from sfumato.batch.local import LocalPool

    return LocalPool(workers, 1, "cpu", retries)


# ---- the spec ----------------------------------------------------------------------------------------------------
def test_every_problem_is_listed_with_row_and_column_and_nothing_runs(tmp_path, sd15):
    (tmp_path / "house.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    path = _spec(tmp_path, [
        "prompt,seed,stepz,width,kind,mesh,name,guidance",
        "red brick,1,2,64,,,,",
        "red brick,x,2,100,image,,a,",
        "slate,1,2,,texture,missing.glb,b,",
        "slate,1,2,,texture,house.obj,a,",
        "timber,1,,64,turntable,house.obj,,true",
    ])
    with pytest.raises(SpecInvalid) as err:
        load(path)
    found = {(p.row, p.column) for p in err.value.problems}
    assert (2, "stepz") in found and "did you mean steps?" in str(err.value)
    assert {(3, "seed"), (3, "width"), (4, "mesh"), (6, "width"), (6, "guidance")} <= found
    assert "mesh=" in str(err.value) and "existing file" in str(err.value)
    assert "not a turntable column (image jobs take it)" in str(err.value)


def test_two_rows_writing_one_file_and_a_json_product(tmp_path, sd15):
    path = _spec(tmp_path, ["prompt,seed,steps,bundle,name", f"a,1,2,{sd15.name},x", f"b,2,2,{sd15.name},X.png"])
    with pytest.raises(SpecInvalid, match="row 3, column name: 'X.png': the same file as row 2"):
        load(path)
    product = {"defaults": {"steps": 2, "bundle": sd15.name, "width": 64, "height": 64},
               "product": {"prompt": ["brick", "slate"], "seed": [1, 2, 3]}}
    spec = load(_spec(tmp_path, [json.dumps(product)], "spec.json"))
    assert [(j.params["prompt"], j.params["seed"]) for j in spec.jobs][:4] == [("brick", 1), ("brick", 2),
                                                                                ("brick", 3), ("slate", 1)]
    assert len({j.id for j in spec.jobs}) == 6 and len({j.stem for j in spec.jobs}) == 6
    again = load(_spec(tmp_path, [json.dumps(product)], "same.json"))
    assert [j.id for j in again.jobs] == [j.id for j in spec.jobs]  # the ids come from the content


# ---- local workers -----------------------------------------------------------------------------------------------
def test_a_killed_batch_started_again_ends_with_the_same_files(spec12, tmp_path, bundle_root):
    whole = tmp_path / "whole"
    first = run_batch(load(spec12), whole, _local(), progress=False)
    assert len(first.done) == 12 and not first.failed and len(first.sheets) == 3
    again = run_batch(load(spec12), whole, _local(), progress=False)
    assert again.skipped == 12 and not again.done  # finished and verified: nothing runs twice

    cut = tmp_path / "cut"
    cmd = [sys.executable, "-m", "sfumato.cli", "batch", str(spec12), "-o", str(cut), "--workers", "2",
           "--threads", "1", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and (not (cut / NAME).is_file() or len((cut / NAME).read_text().splitlines()) < 4):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers, mid-batch
    proc.wait()
    lines = (cut / NAME).read_text().splitlines()
    assert 4 <= len(lines) < 12
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"{12 - len(lines)} made now, {len(lines)} already done" in r.stdout
    assert _files(cut) == _files(whole)  # the same names, the same bytes
    assert not (cut / ".staging").exists()


def test_a_worker_that_dies_in_a_job_is_replaced_and_the_job_runs_again(spec12, tmp_path, bundle_root):
    pool, killed = _local(workers=2, retries=2), []
    threading.Thread(target=_kill_a_busy_worker, args=(pool, killed), daemon=True).start()
    report = run_batch(load(spec12), tmp_path / "out", pool, progress=False, sheets=False)
    assert killed and pool.crashes == 1 and len(report.done) == 12 and not report.failed
    entries = [json.loads(line) for line in (tmp_path / "out" / NAME).read_text().splitlines()]
    assert sorted(e["attempts"] for e in entries)[-1] == 2 and len({e["id"] for e in entries}) == 12


def _kill_a_busy_worker(pool, killed: list) -> None:
    while not pool.busy_pids():
        time.sleep(0.05)
    time.sleep(0.5)
    pid = pool.busy_pids()[0]
    os.kill(pid, signal.SIGKILL)
    killed.append(pid)


def test_a_job_whose_worker_dies_past_its_retries_fails_and_the_batch_goes_on(spec12, tmp_path, bundle_root):
    pool, killed = _local(workers=2, retries=0), []
    threading.Thread(target=_kill_a_busy_worker, args=(pool, killed), daemon=True).start()
    report = run_batch(load(spec12), tmp_path / "out", pool, progress=False, sheets=False)
    assert killed and len(report.done) == 11 and len(report.failed) == 1
    assert "worker process died in this job 1 time(s) (exit code -9" in report.failed[0][1]


def test_a_full_disk_fails_that_job_and_keeps_the_manifest(tmp_path, sd15, bundle_root, monkeypatch):
    from sfumato.batch import runner

    spec = load(_spec(tmp_path, ["prompt,seed,steps,width,height,bundle"] +
                      [f"slate,{k},2,64,64,{sd15.name}" for k in range(3)]))
    victim = spec.jobs[1].output

    class FullDisk:  # os, except that the second job's file finds no space
        def __getattr__(self, name):
            return getattr(os, name)

        def replace(self, src, dst):
            if Path(dst).name == victim:
                raise OSError(28, "No space left on device")
            return os.replace(src, dst)

    monkeypatch.setattr(runner, "os", FullDisk())
    report = run_batch(spec, tmp_path / "out", _local(workers=1), progress=False, sheets=False)
    assert len(report.done) == 2 and len(report.failed) == 1 and "No space left" in report.failed[0][1]
    assert Manifest(tmp_path / "out").summary() == {"done": 2, "failed": 1}  # every line reads back
    monkeypatch.undo()
    again = run_batch(spec, tmp_path / "out", _local(workers=1), progress=False, sheets=False)
    assert again.skipped == 2 and again.done == [victim]  # space again: only the failed job runs


# ---- Ray ---------------------------------------------------------------------------------------------------------
def test_ray_errors_are_clear_and_quick(monkeypatch):
    from sfumato.batch import cluster

    started = time.time()
    with pytest.raises(cluster.ClusterError, match="no Ray cluster answers at 127.0.0.1:9"):
        cluster.probe("127.0.0.1:9", timeout=5)
    assert time.time() - started < 10
    with pytest.raises(cluster.ClusterError, match="HOST:PORT"):
        cluster.probe("somewhere")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    with pytest.raises(cluster.ClusterError, match=r"\[cluster\]"):
        cluster.import_ray()


@pytest.mark.slow
def test_the_batch_on_a_ray_cluster_survives_a_killed_actor_and_makes_the_local_bytes(spec12, tmp_path,
                                                                                         bundle_root):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from sfumato.batch.cluster import RayPool

    local = tmp_path / "local"
    run_batch(load(spec12), local, _local(), progress=False, sheets=False)
    head = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    head.add_node(num_cpus=1)  # a second node process: one actor each
    empty = tmp_path / "no-bundles"
    empty.mkdir()
    # the second actor's node knows no bundles: the tiny one must be sent to it
    lacking = {"env_vars": {"SFUMATO_BUNDLES": str(empty), "SFUMATO_NODE_CACHE": str(tmp_path / "node2")}}
    pool = RayPool(head.address, 2, 1, "cpu", retries=2, runtime_envs=[{}, lacking])
    killed = []

    def kill_one() -> None:
        while not pool.handles:
            time.sleep(0.1)
        done = tmp_path / "ray" / NAME
        while not done.is_file() or len(done.read_text().splitlines()) < 3:  # in the middle of the batch
            time.sleep(0.1)
        pid = pool.pids()[1]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    try:
        threading.Thread(target=kill_one, daemon=True).start()
        report = run_batch(load(spec12), tmp_path / "ray", pool, progress=False, sheets=False)
        after = pool.pids()
    finally:
        ray.shutdown()
        head.shutdown()
    assert killed and killed[0] not in after  # Ray restarted the actor
    assert len(report.done) == 12 and not report.failed and pool.shipped >= 1
    done = [json.loads(line)["id"] for line in (tmp_path / "ray" / NAME).read_text().splitlines()]
    assert len(done) == len(set(done)) == 12  # no job ran twice to completion
    assert _files(tmp_path / "ray") == _files(local)  # the same bytes as the local run
