"""A batch on a Ray cluster: one actor per CPU slot (or GPU), each keeping its models loaded between jobs.

Ray places the actors over the cluster's nodes, restarts an actor whose process dies and retries the job it was
running (``max_restarts``, ``max_task_retries``). An actor runs each job through the same door and runners as the
worker (``kinds.run_job``) in a temporary folder of its node and returns the files' bytes; the driver writes
them into the batch's folder, so no shared file system is needed. A job's bundle is named by its hash: an
actor whose node lacks it (or holds a different one under that name) receives it from the driver once, as an
archive, and keeps it in its node's cache.

``--ray auto`` starts a local Ray instance; ``--ray HOST:PORT`` joins a running cluster (``ray start --head`` on
one machine, ``ray start --address HOST:PORT`` on the others).
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from ..core.errors import SfumatoError
from .local import Finish
from .spec import BatchJob

INSTALL_HINT = 'install the cluster extra: pip install -e ".[cluster]" (or pip install "sfumato[cluster]")'


class ClusterError(SfumatoError):
    code = "cluster"


def import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError("--ray needs Ray, which is not installed", hint=INSTALL_HINT) from None
    return ray


def probe(address: str, timeout: float = 10.0) -> None:
    """Fail within ``timeout`` seconds, clearly, when nothing answers at ``address`` (HOST:PORT)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ClusterError(f"--ray {address!r}: auto, or the head node's HOST:PORT (as `ray start --head` prints)")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ClusterError(f"no Ray cluster answers at {address} within {timeout:.0f} s ({exc.strerror or exc})",
                           hint="start one with `ray start --head` there, or use --ray auto") from None


def bundle_archive(folder: Path) -> bytes:
    """A bundle folder as an uncompressed tar (weights do not compress)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(folder), arcname=".")
    return buffer.getvalue()


class JobActor:
    """Runs jobs on one node with a warm model cache (made a Ray actor by ``RayPool``)."""

    def __init__(self, threads: int, device: str):
        import torch

        from ..core.loading import ModelCache
        from ..core.quiet import quiet_libraries

        torch.set_num_threads(threads)
        quiet_libraries()
        self.cache, self.device = ModelCache(), device
        self.installed = Path(os.environ.get("SFUMATO_NODE_CACHE") or tempfile.gettempdir()) / "sfumato-bundles"

    def pid(self) -> int:
        return os.getpid()

    def bundle_path(self, name: str | None, identity: str) -> str | None:
        """This node's folder of the bundle with ``identity``: its own by ``name`` when the hash agrees, else one
        received earlier; None when it has none."""
        from ..core import bundle as bundles

        received = self.installed / identity
        if received.is_dir():
            return str(received)
        try:
            local = bundles.resolve(name)
        except SfumatoError:
            return None
        return str(local.path) if local.identity() == identity else None

    def install(self, identity: str, archive: bytes) -> str:
        target = self.installed / identity
        partial = target.with_name(f".{identity}.{os.getpid()}.part")
        partial.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r") as tar:
            tar.extractall(partial, filter="data")  # "data": no links or paths out of the folder
        if target.exists():  # another actor on this node was quicker
            shutil.rmtree(partial, ignore_errors=True)
        else:
            os.replace(partial, target)
        return str(target)

    def run(self, job_id: str, kind: str, params: dict[str, Any], output: str) -> dict[str, Any]:
        import threading

        from ..core.jobs import JobContext
        from ..kinds import run_job

        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="sfumato-batch-") as folder:
            ctx = JobContext(job_id, self.cache, self.device, "auto", threading.Event(), lambda *a, **k: None,
                             preview_every=0)
            try:
                result = run_job(kind, params, Path(folder) / output, ctx)
            except SfumatoError as exc:
                return {"status": "failed", "error": str(exc), "code": exc.code, "files": {}}
            files = {Path(p).name: Path(p).read_bytes() for p in ctx.saved}
        return {"status": "done", "files": files, "metadata": result.get("metadata"),
                "seconds": round(time.perf_counter() - started, 3),
                "worker": f"pid {os.getpid()} on {socket.gethostname()}"}


class RayPool:
    def __init__(self, address: str, actors: int, threads: int, device: str = "auto", retries: int = 2,
                 runtime_envs: list[dict] | None = None):
        self.address, self.actors, self.threads, self.device, self.retries = address, actors, threads, device, retries
        self.runtime_envs = runtime_envs or []  # per actor (tests: a node without the bundle)
        self.shipped = 0  # bundles sent to actors that lacked them
        self.handles: list[Any] = []

    def connect(self):
        ray = import_ray()
        if self.address != "auto":
            probe(self.address)
        if not ray.is_initialized():
            ray.init(address=None if self.address == "auto" else self.address, logging_level="WARNING",
                     include_dashboard=False, log_to_driver=False)
        return ray

    def run(self, jobs: list[BatchJob], staging, finish: Finish) -> None:
        ray = self.connect()
        gpus = 1 if self.device.startswith("cuda") else 0  # one actor per GPU
        remote = ray.remote(num_cpus=self.threads, num_gpus=gpus, max_restarts=-1,
                            max_task_retries=self.retries)(JobActor)
        self.handles = [remote.options(**({"runtime_env": self.runtime_envs[k]} if k < len(self.runtime_envs)
                                          else {})).remote(self.threads, self.device)
                        for k in range(min(self.actors, len(jobs)))]
        pending, running = list(reversed(jobs)), {}
        paths: dict[tuple[int, str], str] = {}
        while pending or running:
            for k, actor in enumerate(self.handles):
                if pending and k not in {a for a, _ in running.values()}:
                    job = pending.pop()
                    params = {**job.params, "bundle": self._bundle_on(ray, k, job, paths)}
                    running[actor.run.remote(job.id, job.kind, params, job.output)] = (k, job)
            done, _ = ray.wait(list(running), num_returns=1)
            k, job = running.pop(done[0])
            try:
                outcome = ray.get(done[0])
            except ray.exceptions.RayError as exc:  # the actor died more often than retries allow
                finish(job, {"status": "failed", "code": "worker_died", "error": f"the Ray actor failed: {exc}"[:500],
                             "worker": f"ray actor {k}"})
                continue
            folder = staging(job)
            folder.mkdir(parents=True, exist_ok=True)
            written = []
            for name, data in outcome.pop("files").items():
                (folder / name).write_bytes(data)
                written.append(str(folder / name))
            finish(job, {**outcome, "files": written})

    def _bundle_on(self, ray, k: int, job: BatchJob, paths: dict) -> str:
        """The folder on actor ``k``'s node of ``job``'s bundle, sent there first when the node lacks it."""
        from ..core import bundle as bundles

        key = (k, job.bundle_identity)
        if key not in paths:
            actor, name = self.handles[k], job.params.get("bundle")
            path = ray.get(actor.bundle_path.remote(name, job.bundle_identity))
            if path is None:
                archive = ray.put(bundle_archive(bundles.resolve(name).path))
                path = ray.get(actor.install.remote(job.bundle_identity, archive))
                self.shipped += 1
            paths[key] = path
        return paths[key]

    def pids(self) -> list[int]:
        ray = import_ray()
        return [ray.get(a.pid.remote()) for a in self.handles]

    def close(self) -> None:
        ray = import_ray()
        for actor in self.handles:
            ray.kill(actor)
        self.handles = []
