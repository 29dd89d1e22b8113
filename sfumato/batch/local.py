"""Local worker processes for a batch: N processes, each keeping its models loaded between jobs.

Each process runs jobs through the same door and runners as the worker and the CLI (``kinds.run_job``), writing
into the job's staging folder. The parent hands out one job at a time per process over a pipe and watches the
process itself: a process that dies in a job (a crash, the OOM killer, ``kill -9``) is replaced by a fresh one and
its job runs again, up to ``retries`` times; then the job is marked failed with what happened and the batch goes
on. A job that fails by itself (a bad mesh, ...) is not retried: it would fail the same way.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from .spec import BatchJob

Finish = Callable[[BatchJob, dict[str, Any]], None]  # job, outcome {"status", "files", "error", "worker", ...}


def serve(conn: Connection, threads: int, device: str) -> None:
    """A worker process: run each job sent, answer with its outcome, until told to stop (``None``)."""
    import threading

    import torch

    from ..core.errors import SfumatoError
    from ..core.jobs import JobContext
    from ..core.loading import ModelCache
    from ..core.quiet import quiet_libraries
    from ..kinds import run_job

    torch.set_num_threads(threads)
    quiet_libraries()
    cache = ModelCache()
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        job_id, kind, params, output = message
        ctx = JobContext(job_id, cache, device, "auto", threading.Event(), lambda *a, **k: None, preview_every=0)
        started = time.perf_counter()
        try:
            result = run_job(kind, params, Path(output), ctx)
            outcome = {"status": "done", "files": list(ctx.saved), "metadata": result.get("metadata")}
        except SfumatoError as exc:
            outcome = {"status": "failed", "error": str(exc), "code": exc.code, "files": list(ctx.saved)}
        except Exception as exc:  # a bug must not take the batch down: report it with the job
            outcome = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "code": "internal"}
        outcome.update(seconds=round(time.perf_counter() - started, 3), worker=f"pid {os.getpid()}")
        conn.send((job_id, outcome))


@dataclass
class Slot:
    process: Any
    conn: Connection
    job: BatchJob | None = None
    started: float = 0.0


class LocalPool:
    """``workers`` processes with ``threads`` torch threads each."""

    def __init__(self, workers: int, threads: int, device: str = "auto", retries: int = 2):
        self.workers, self.threads, self.device, self.retries = workers, threads, device, retries
        self.context = multiprocessing.get_context("spawn")  # no forked torch state
        self.crashes = 0  # worker processes that died in a job
        self.slots: list[Slot] = []

    def _spawn(self) -> Slot:
        parent, child = self.context.Pipe()
        process = self.context.Process(target=serve, args=(child, self.threads, self.device), daemon=True,
                                       name="sfumato-batch-worker")
        process.start()
        child.close()
        return Slot(process, parent)

    def run(self, jobs: list[BatchJob], staging: Callable[[BatchJob], Path], finish: Finish) -> None:
        pending = collections.deque(jobs)
        attempts: collections.Counter[str] = collections.Counter()
        self.slots = slots = [self._spawn() for _ in range(min(self.workers, len(jobs)))]
        try:
            while pending or any(s.job for s in slots):
                for slot in slots:
                    if slot.job is None and pending:
                        slot.job, slot.started = pending.popleft(), time.perf_counter()
                        attempts[slot.job.id] += 1
                        output = staging(slot.job) / slot.job.output
                        slot.conn.send((slot.job.id, slot.job.kind, slot.job.params, str(output)))
                busy = [s for s in slots if s.job is not None]
                wait([s.conn for s in busy] + [s.process.sentinel for s in busy])
                for i, slot in enumerate(slots):
                    if slot.job is not None:
                        slots[i] = self._collect(slot, attempts, pending, finish)
        finally:
            for slot in slots:
                self._stop(slot)

    def _collect(self, slot: Slot, attempts, pending, finish: Finish) -> Slot:
        """The slot after looking at its job: its outcome handed to ``finish``, or a fresh process after a death."""
        try:
            if slot.conn.poll():
                job_id, outcome = slot.conn.recv()
                job, slot.job = slot.job, None
                outcome["attempts"] = attempts[job.id]
                finish(job, outcome)
                return slot
        except (EOFError, OSError):
            pass
        if slot.process.is_alive():
            return slot
        job = slot.job
        code = slot.process.exitcode
        self.crashes += 1
        self._stop(slot)
        if attempts[job.id] <= self.retries:
            pending.appendleft(job)
        else:
            finish(job, {"status": "failed", "code": "worker_died", "attempts": attempts[job.id],
                         "error": f"the worker process died in this job {attempts[job.id]} time(s) (exit code "
                                  f"{code}{', killed: out of memory?' if code == -9 else ''})",
                         "seconds": round(time.perf_counter() - slot.started, 3), "worker": "local"})
        return self._spawn()

    def busy_pids(self) -> list[int]:
        """The processes running a job now."""
        return [s.process.pid for s in list(self.slots) if s.job is not None and s.process.is_alive()]

    @staticmethod
    def _stop(slot: Slot) -> None:
        try:
            if slot.process.is_alive():
                slot.conn.send(None)
                slot.process.join(5)
        except (OSError, BrokenPipeError):
            pass
        if slot.process.is_alive():
            slot.process.kill()
            slot.process.join(5)
        slot.conn.close()
