"""Client for the sfumato worker, standard library only (it runs inside Blender's Python).

    client = WorkerClient(python="/path/to/engine/python")
    job = client.submit("image", {"prompt": "red brick wall", "seed": 1}, output="/tmp/out.png")
    for event in client.events(job):          # progress ... then result / error / cancelled
        print(event)

The worker is started on first use as ``python -m sfumato.core.worker``. A reader thread turns its
stdout lines into events on a queue; a second thread drains stderr (kept as a tail for error
messages) so the worker never blocks on a full pipe. If the worker dies, waiting calls get a
``worker_exited`` event, and the next ``submit`` starts a fresh worker.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Any, Iterator

PROTOCOL = 1
FINAL = ("result", "error", "cancelled")


class WorkerError(RuntimeError):
    """The worker could not be started or stopped answering."""


class JobFailed(RuntimeError):
    def __init__(self, event: dict[str, Any]):
        super().__init__(f"{event.get('code')}: {event.get('message')}"
                         + (f" ({event['hint']})" if event.get("hint") else ""))
        self.event = event


class JobCancelled(RuntimeError):
    pass


class WorkerClient:
    def __init__(self, python: str | None = None, *, device: str = "auto", dtype: str = "auto",
                 env: dict[str, str] | None = None, start_timeout: float = 120.0, threads: int | None = None):
        self.python = python or sys.executable
        self.args = ["-m", "sfumato.core.worker"]
        self.device, self.dtype, self.threads = device, dtype, threads
        self.env = env
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.ready: dict[str, Any] | None = None
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._by_job: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._stderr: collections.deque[str] = collections.deque(maxlen=60)
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()

    # ---- process --------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> dict[str, Any]:
        """Start the worker and wait for its ``ready`` event; raises ``WorkerError`` with its stderr."""
        if self.alive:
            return self.ready or {}
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        env["SFUMATO_WORKER_DEVICE"], env["SFUMATO_WORKER_DTYPE"] = self.device, self.dtype
        if self.threads:
            env["SFUMATO_WORKER_THREADS"] = str(self.threads)
        self._events = queue.Queue()
        self._by_job.clear()
        self._stderr.clear()
        try:
            self.proc = subprocess.Popen([self.python, *self.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, env=env, text=True, encoding="utf-8",
                                         bufsize=1)
        except OSError as exc:
            raise WorkerError(f"cannot start the engine with python={self.python!r}: {exc}") from None
        threading.Thread(target=self._read_stdout, args=(self.proc,), daemon=True).start()
        threading.Thread(target=self._read_stderr, args=(self.proc,), daemon=True).start()
        event = self._next(None, timeout=self.start_timeout)
        if event is None or event.get("event") != "ready":
            self.kill()
            raise WorkerError("the engine did not start: " + (self.stderr_tail() or f"no answer in "
                                                               f"{self.start_timeout:.0f} s"))
        self.ready = event
        return event

    def _read_stdout(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                self._stderr.append(f"(stdout) {line.rstrip()}")
                continue
            self._events.put(event)
        proc.wait()
        self._events.put({"event": "worker_exited", "returncode": proc.returncode, "stderr": self.stderr_tail()})

    def _read_stderr(self, proc: subprocess.Popen) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self._stderr.append(line.rstrip())

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
            except (BrokenPipeError, OSError) as exc:
                raise WorkerError(f"the engine stopped: {exc}; {self.stderr_tail(5)}") from None

    def send_raw(self, line: str) -> None:
        """Write one raw line (tests use this to send malformed input)."""
        assert self.proc is not None and self.proc.stdin is not None
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

    def info(self, timeout: float = 60.0) -> dict[str, Any]:
        if not self.alive:
            self.start()
        self._send({"type": "info"})
        return self._wait_for("info", timeout)

    def release(self, timeout: float = 60.0) -> None:
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
    def _next(self, job_id: str | None, timeout: float | None) -> dict[str, Any] | None:
        """The next event for ``job_id`` (or any event when None); events of other jobs are kept."""
        if job_id is not None and self._by_job[job_id]:
            return self._by_job[job_id].popleft()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                event = self._events.get(timeout=remaining)
            except queue.Empty:
                return None
            owner = event.get("id")
            if job_id is None or owner == job_id or event.get("event") == "worker_exited" or \
                    (owner is None and event.get("event") == "error"):
                return event
            self._by_job[owner].append(event)

    def _wait_for(self, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = self._next(None, max(0.0, deadline - time.monotonic()))
            if event is None:
                raise WorkerError(f"no {name!r} answer from the engine in {timeout:.0f} s")
            if event.get("event") == name:
                return event
            if event.get("event") == "worker_exited":
                raise WorkerError(f"the engine exited ({event.get('returncode')}): {event.get('stderr')}")
            self._by_job[event.get("id")].append(event)

    def poll(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """Every event available now, without blocking (for a ``bpy.app.timers`` function)."""
        events = []
        while (event := self._next(job_id, 0.0)) is not None:
            events.append(event)
        return events

    def events(self, job_id: str, timeout: float | None = None) -> Iterator[dict[str, Any]]:
        """Yield the job's events until its final one (result, error, cancelled) or the worker's exit."""
        while True:
            event = self._next(job_id, timeout)
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
                                  f"{job_id}: {event.get('stderr', '')[-800:]}")
        raise WorkerError("event stream ended")  # pragma: no cover

    def __enter__(self) -> "WorkerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
