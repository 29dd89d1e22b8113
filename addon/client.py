"""Client for the sfumato worker, standard library only (it runs inside Blender's Python).

    client = WorkerClient(python="/path/to/engine/python")
    job = client.submit("image", {"prompt": "red brick wall", "seed": 1}, output="/tmp/out.png")
    for event in client.events(job):          # progress ... then result / error / cancelled
        print(event)

The worker is started on first use as ``python -P -m sfumato.worker``: ``-P`` keeps the current folder (a
downloaded project's, where a planted ``sfumato.py`` or ``resource.py`` may wait) off the import path, which
``-m`` would otherwise put first, and relative or empty ``PYTHONPATH`` entries (which also mean the current
folder) are dropped. The engine's own install (editable or not) is found through site-packages, so it still
loads. A reader thread files its
stdout lines as events under their job id (``None`` for events of no job: ready, info, released,
errors about a malformed request); a second thread drains stderr (kept as a tail for error
messages) so the worker never blocks on a full pipe. Every waiter sees a dead worker: once it has
exited, each job's event stream ends with a ``worker_exited`` event naming the files that job had finished
(the worker says each as it is written, in ``saved`` events), and the next ``submit`` starts a fresh worker.
The worker sends a heartbeat every few seconds (``silent_for`` says how long it has been quiet), and ``stop``
escalates from cancel to killing the worker after a grace period. Each worker process has its own event store,
so a late event of an old process can never reach a new one. Safe to use from several threads.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

PROTOCOL = 1
FINAL = ("result", "error", "cancelled")


def safe_pythonpath(value: str) -> str:
    """``PYTHONPATH`` without the entries that resolve against the current folder (empty, ``.``, relative):
    only absolute folders may add code to the worker."""
    return os.pathsep.join(p for p in value.split(os.pathsep) if p and os.path.isabs(p))


class WorkerError(RuntimeError):
    """The worker could not be started or stopped answering; ``files``: what the job had finished before."""

    def __init__(self, message: str, files: list[str] | tuple[str, ...] = ()):
        super().__init__(message)
        self.files = list(files)


class JobFailed(RuntimeError):
    def __init__(self, event: dict[str, Any]):
        super().__init__(f"{event.get('code')}: {event.get('message')}"
                         + (f" ({event['hint']})" if event.get("hint") else ""))
        self.event = event


class JobCancelled(RuntimeError):
    pass


class _Events:
    """The events of one worker process, filed by job id, with a sticky exit event."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.by_job: dict[str | None, collections.deque] = collections.defaultdict(collections.deque)
        self.seq = itertools.count()
        self.exited: dict[str, Any] | None = None
        self.heard = time.monotonic()  # when the worker last wrote a line (heartbeats included)
        self.finished: set[Any] = set()  # ids of jobs whose final event arrived
        self.saved: dict[Any, list[str]] = collections.defaultdict(list)  # files each job finished (``saved``)

    def put(self, event: dict[str, Any]) -> None:
        self.heard = time.monotonic()
        if event.get("event") == "heartbeat":
            return  # heard, nothing to file
        with self.cond:
            if event.get("event") in FINAL:
                self.finished.add(event.get("id"))
            if event.get("event") == "saved" and isinstance(event.get("files"), list):
                self.saved[event.get("id")] += [str(f) for f in event["files"]]
            self.by_job[event.get("id")].append((next(self.seq), event))
            self.cond.notify_all()

    def exited_for(self, job_id: str | None) -> dict[str, Any]:
        """The exit event as one job sees it: with the files that job had finished before the worker died."""
        assert self.exited is not None
        return {**self.exited, "files": list(self.saved.get(job_id, []))}

    def exit(self, event: dict[str, Any]) -> None:
        with self.cond:
            self.exited = event
            self.cond.notify_all()

    def take(self, job_id: str | None, match=None, timeout: float | None = None) -> dict[str, Any] | None:
        """The next event of ``job_id`` (that ``match`` accepts); the exit event once the queue is empty
        and the worker is gone; None on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while True:
                queue = self.by_job[job_id]
                for i, (_, event) in enumerate(queue):
                    if match is None or match(event):
                        del queue[i]
                        return event
                if self.exited is not None:
                    return self.exited_for(job_id)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self.cond.wait(remaining)

    def drain(self, job_id: str | None, all_jobs: bool) -> list[dict[str, Any]]:
        with self.cond:
            keys = list(self.by_job) if all_jobs else [job_id]
            items = sorted(item for k in keys for item in self.by_job[k])
            for k in keys:
                self.by_job[k].clear()
            return [event for _, event in items]


class WorkerClient:
    def __init__(self, python: str | None = None, *, device: str = "auto", dtype: str = "auto",
                 env: dict[str, str] | None = None, start_timeout: float = 120.0, threads: int | None = None):
        self.python = python or sys.executable
        self.args = ["-P", "-m", "sfumato.worker"]  # -P: never import from the current folder (Python 3.11+)
        self.device, self.dtype, self.threads = device, dtype, threads
        self.env = env
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.ready: dict[str, Any] | None = None
        self._events = _Events()
        self._stderr: collections.deque[str] = collections.deque(maxlen=60)
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._start_lock = threading.RLock()

    # ---- process --------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> dict[str, Any]:
        """Start the worker and wait for its ``ready`` event; raises ``WorkerError`` with its stderr."""
        with self._start_lock:
            if self.alive:
                return self.ready or {}
            env = dict(os.environ if self.env is None else self.env)
            env.setdefault("PYTHONUNBUFFERED", "1")
            env["PYTHONIOENCODING"] = "utf-8"
            if "PYTHONPATH" in env:
                env["PYTHONPATH"] = safe_pythonpath(env["PYTHONPATH"])
            env["SFUMATO_WORKER_DEVICE"], env["SFUMATO_WORKER_DTYPE"] = self.device, self.dtype
            if self.threads:
                env["SFUMATO_WORKER_THREADS"] = str(self.threads)
            events, stderr = _Events(), collections.deque(maxlen=60)
            try:
                proc = subprocess.Popen([self.python, *self.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=env, text=True, encoding="utf-8",
                                        errors="replace", bufsize=1)
            except OSError as exc:
                raise WorkerError(f"cannot start the engine with python={self.python!r}: {exc}") from None
            self.proc, self._events, self._stderr = proc, events, stderr
            drain = threading.Thread(target=self._read_stderr, args=(proc, stderr), daemon=True)
            drain.start()
            threading.Thread(target=self._read_stdout, args=(proc, events, stderr, drain), daemon=True).start()
            event = events.take(None, lambda e: e.get("event") == "ready", timeout=self.start_timeout)
            if event is None or event.get("event") != "ready":
                self.kill()
                raise WorkerError("the engine did not start: " + (self.stderr_tail() or f"no answer in "
                                                                   f"{self.start_timeout:.0f} s"))
            self.ready = event
            return event

    @staticmethod
    def _read_stdout(proc: subprocess.Popen, events: _Events, stderr: collections.deque,
                     drain: threading.Thread) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                stderr.append(f"(stdout) {line.rstrip()}")
                continue
            if isinstance(event, dict):
                events.put(event)
        proc.wait()
        drain.join(timeout=5.0)  # the exit event carries the whole stderr tail (the reason it died)
        tail = "\n".join(list(stderr)[-20:])
        events.exit({"event": "worker_exited", "returncode": proc.returncode, "stderr": tail})

    @staticmethod
    def _read_stderr(proc: subprocess.Popen, stderr: collections.deque) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            stderr.append(line.rstrip())

    def stderr_tail(self, lines: int = 20) -> str:
        return "\n".join(list(self._stderr)[-lines:])

    def _send(self, message: dict[str, Any]) -> None:
        if not self.alive:
            raise WorkerError("the engine is not running")
        assert self.proc is not None and self.proc.stdin is not None
        with self._write_lock:
            try:
                self.proc.stdin.write(json.dumps({"v": PROTOCOL, **message}) + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError) as exc:
                raise WorkerError(f"the engine stopped: {exc}; {self.stderr_tail(5)}") from None

    def send_raw(self, line: str) -> None:
        """Write one raw line (tests use this to send malformed input)."""
        assert self.proc is not None and self.proc.stdin is not None
        with self._write_lock:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()

    # ---- requests -------------------------------------------------------------------------------
    def submit(self, kind: str, params: dict[str, Any], output: str, *, preview_every: int = 1,
               job_id: str | None = None) -> str:
        """Queue a job; starts (or restarts) the worker first. Returns the job id."""
        if not self.alive:
            self.start()
        job_id = job_id or f"job-{os.getpid()}-{next(self._ids)}"
        self._send({"type": "submit", "id": job_id, "kind": kind, "params": params,
                    "output": os.path.abspath(output), "preview_every": preview_every})
        return job_id

    def cancel(self, job_id: str) -> None:
        if self.alive:
            self._send({"type": "cancel", "id": job_id})

    def silent_for(self) -> float:
        """Seconds since the worker last wrote anything; it sends a heartbeat every few seconds even in the
        middle of a step, so a long silence means it froze (stopped, swapping, stuck in a library call)."""
        return time.monotonic() - self._events.heard

    def stop(self, job_id: str, grace: float = 10.0) -> bool:
        """Stop a job for sure: cancel it, and if it has not ended after ``grace`` seconds (a frozen worker, one
        long operation with no step in between), kill the worker. Files the job finished stay on disk; every
        waiter then sees ``worker_exited`` and the next ``submit`` starts a fresh worker. Returns whether the
        worker was killed."""
        try:
            self.cancel(job_id)
        except WorkerError:
            return False  # gone already
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if job_id in self._events.finished or not self.alive:
                return False
            time.sleep(0.05)
        self.kill()
        return True

    def info(self, timeout: float = 60.0) -> dict[str, Any]:
        if not self.alive:
            self.start()
        self._send({"type": "info"})
        return self._wait_for("info", timeout)

    def release(self, timeout: float | None = None) -> None:
        """Drop the loaded models and free their memory. Runs after the jobs already queued, so by
        default this waits as long as they take."""
        if self.alive:
            self._send({"type": "release"})
            self._wait_for("released", timeout)

    def shutdown(self, timeout: float = 10.0) -> None:
        if self.alive:
            try:
                self._send({"type": "shutdown"})
                assert self.proc is not None
                self.proc.wait(timeout)
            except (WorkerError, subprocess.TimeoutExpired):
                self.kill()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    # ---- events ---------------------------------------------------------------------------------
    def _wait_for(self, name: str, timeout: float | None) -> dict[str, Any]:
        event = self._events.take(None, lambda e: e.get("event") == name, timeout)
        if event is None:
            raise WorkerError(f"no {name!r} answer from the engine in {timeout:.0f} s")
        if event.get("event") == "worker_exited":
            raise WorkerError(f"the engine exited ({event.get('returncode')}): {event.get('stderr')}")
        return event

    def poll(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """Every event available now, without blocking (for a ``bpy.app.timers`` function): the job's,
        or with no ``job_id`` every event of every job in arrival order. Ends with ``worker_exited``
        when the worker is gone."""
        events = self._events.drain(job_id, all_jobs=job_id is None)
        if self._events.exited is not None and (not events or events[-1].get("event") != "worker_exited"):
            events.append(self._events.exited_for(job_id))
        return events

    def events(self, job_id: str, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield the job's events until its final one (result, error, cancelled) or the worker's exit."""
        while True:
            event = self._events.take(job_id, timeout=timeout)
            if event is None:
                raise WorkerError(f"no event from the engine for {timeout} s")
            yield event
            if event.get("event") in FINAL + ("worker_exited",):
                return

    def wait(self, job_id: str, on_event=None, timeout: float | None = None) -> dict[str, Any]:
        """Block until the job ends; returns its result event, raises JobFailed/JobCancelled/WorkerError."""
        for event in self.events(job_id, timeout):
            if on_event is not None:
                on_event(event)
            kind = event.get("event")
            if kind == "result":
                return event
            if kind == "cancelled":
                raise JobCancelled(job_id)
            if kind == "error":
                raise JobFailed(event)
            if kind == "worker_exited":
                raise WorkerError(f"the engine exited with code {event.get('returncode')} during job "
                                  f"{job_id}: {event.get('stderr', '')[-800:]}", event.get("files") or ())
        raise WorkerError("event stream ended")  # pragma: no cover

    def __enter__(self) -> "WorkerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
