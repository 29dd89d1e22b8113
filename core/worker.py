"""The worker: one process per GPU, JSON lines on stdin/stdout, one job at a time.

Protocol version 1. Every line is one JSON object with ``"v": 1``.

Requests (client -> worker)::

    {"v": 1, "type": "submit", "id": "j1", "kind": "image", "params": {...}, "output": "/abs/out.png",
     "preview_every": 1}
    {"v": 1, "type": "cancel", "id": "j1"}
    {"v": 1, "type": "info"}          {"v": 1, "type": "release"}          {"v": 1, "type": "shutdown"}

Events (worker -> client)::

    ready     {version, protocol, pid}                                  once, at start
    accepted  {id, position}                                            a submit was queued
    progress  {id, stage, step, total, image, images, preview}          during a job
    note      {id, message}                                             said during a job ("created folder ...")
    saved     {id, files}                                               outputs finished so far (kept if it dies)
    estimate  {id, seconds, peak_bytes, free_bytes, warm_up, text}      before a job's long work (core/estimate.py)
    heartbeat {busy}                                                    every few seconds, even mid-step
    result    {id, files, metadata, seconds}                            a job finished
    cancelled {id}                                                      a job stopped on request
    error     {id|null, code, message, hint}                            anything that went wrong
    info      {version, protocol, schema, device, dtype, bundles, loaded} answer to info
    released  {}                                                        models dropped, memory freed

A client ignores events it does not know (``saved`` and ``estimate`` came later in version 1), so new events
never break an older add-on.

The job kinds (each a schema request and a runner) are given to the worker by its entry point,
``python -m sfumato.worker`` (``sfumato/kinds.py``), so core imports no head.

A reader thread takes requests as they arrive (so ``cancel`` lands while a job runs, within one
denoising step); the main thread runs jobs from a queue. Malformed lines, unknown kinds, bad
parameters and missing files produce an ``error`` event and the worker keeps serving; a line is read with a
bounded ``readline`` (``MAX_LINE``), so an endless one costs no more memory than a normal one. Only protocol
lines go to stdout: anything a library prints is redirected to stderr at the file-descriptor level.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .jobs import Kind

PROTOCOL = 1
HEARTBEAT = 5.0  # seconds between heartbeat events ($SFUMATO_WORKER_HEARTBEAT)
PREVIEWS = "sfumato-w"  # step previews go to <temp>/sfumato-w<pid>-<job>-*/, removed when that worker is gone
MAX_LINE = 1 << 20  # bytes in one request line: far above any real request (texts are at most 10 000 characters)
log = logging.getLogger("sfumato.worker")


@dataclass
class Job:
    id: str
    kind: str
    params: dict[str, Any]
    output: str
    preview_every: int = 1
    cancel: threading.Event = field(default_factory=threading.Event)


class Worker:
    def __init__(self, out: io.TextIOBase, kinds: Mapping[str, Kind], *, device: str = "auto", dtype: str = "auto"):
        from .loading import ModelCache

        self.out, self.kinds = out, kinds
        self.device, self.dtype = device, dtype
        self.cache = ModelCache()
        self.jobs: queue.Queue[Job | str] = queue.Queue()
        self.pending: dict[str, Job] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.preview_dirs: list[Path] = []  # the last few jobs' step previews; older ones are removed

    # ---- events -------------------------------------------------------------------------------
    def emit(self, event: str, **fields: Any) -> None:
        line = json.dumps({"v": PROTOCOL, "event": event, **fields}, default=str)
        with self.lock:
            self.out.write(line + "\n")
            self.out.flush()

    def error(self, job_id: str | None, code: str, message: str, hint: str = "") -> None:
        self.emit("error", id=job_id, code=code, message=message, hint=hint)

    # ---- requests (reader thread) -------------------------------------------------------------
    def handle_line(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            msg = json.loads(line)
        except json.JSONDecodeError as exc:
            return self.error(None, "malformed", f"not a JSON line: {exc.msg} at column {exc.colno}",
                              "send one JSON object per line")
        except RecursionError:
            return self.error(None, "malformed", "a JSON line nested too deeply", "send one flat JSON object per "
                              "line: settings are numbers, text, true/false or lists of numbers")
        if not isinstance(msg, dict):
            return self.error(None, "malformed", "a request must be a JSON object")
        if msg.get("v") != PROTOCOL:
            return self.error(msg.get("id"), "bad_version", f"v={msg.get('v')!r}; this worker speaks "
                              f"protocol {PROTOCOL}", "update the client and the engine together")
        kind = msg.get("type")
        if kind == "submit":
            self._submit(msg)
        elif kind == "cancel":
            job = self.pending.get(str(msg.get("id")))
            if job is None:
                self.error(msg.get("id"), "unknown_job", f"id={msg.get('id')!r} is not queued or running")
            else:
                job.cancel.set()
        elif kind == "info":
            self.emit("info", **self.info())
        elif kind == "release":
            self.jobs.put("release")
        elif kind == "shutdown":
            self.shutdown()
        else:
            self.error(msg.get("id"), "unknown_type", f"type={kind!r}; allowed: submit, cancel, info, release, "
                       "shutdown")

    def _submit(self, msg: dict[str, Any]) -> None:
        job_id = msg.get("id")
        if not isinstance(job_id, str) or not job_id:
            return self.error(None, "bad_request", "submit needs an 'id' string")
        if job_id in self.pending:
            return self.error(job_id, "duplicate_id", f"id={job_id!r} is already queued or running")
        if not isinstance(msg.get("kind"), str) or msg["kind"] not in self.kinds:
            return self.error(job_id, "unknown_kind", f"kind={msg.get('kind')!r}; allowed: "
                              f"{', '.join(self.kinds)}")
        if not isinstance(msg.get("params"), dict):
            return self.error(job_id, "bad_request", "submit needs 'params', a JSON object")
        output = msg.get("output")
        if not isinstance(output, str) or not os.path.isabs(output):
            return self.error(job_id, "bad_request", f"output={output!r}; needs an absolute file path")
        preview_every = msg.get("preview_every", 1)
        if not isinstance(preview_every, int) or preview_every < 0:
            return self.error(job_id, "bad_request", f"preview_every={preview_every!r}; an integer ≥ 0 "
                              "(0 = no previews)")
        job = Job(job_id, msg["kind"], msg["params"], output, preview_every)
        self.pending[job_id] = job
        self.emit("accepted", id=job_id, position=len(self.pending))
        self.jobs.put(job)

    def shutdown(self) -> None:
        if self.stopping.is_set():
            return
        self.stopping.set()
        for job in list(self.pending.values()):
            job.cancel.set()
        self.jobs.put("stop")

    def info(self) -> dict[str, Any]:
        from . import bundle as bundles
        from . import capabilities, schema
        from .device import pick_device, pick_dtype
        from .provenance import version

        try:
            device = pick_device(self.device)
            dtype = str(pick_dtype(device, self.dtype)).replace("torch.", "")
            device_name = str(device)
            fast_path = "none"
            if device.type == "cuda":
                import torch

                device_name += f" ({torch.cuda.get_device_name(device)})"
                fast_path = "CUDA graphs"
            elif device.type == "cpu" and dtype == "float32":
                from . import fast

                helps = fast.cpu_bf16_helps()
                floor = f"bfloat16 U-Net (U-Nets of {fast.MIN_BF16_PARAMS / 1e6:.0f} M parameters and more)"
                fast_path = (f"{floor if helps else 'none'} "
                             f"(bfloat16 measured {fast._cpu_bf16['speedup']:.1f}x float32 on this CPU)")
        except Exception as exc:  # report, never die, on a broken device setup
            device_name, dtype, fast_path = f"unavailable: {exc}", "n/a", "n/a"
        found = bundles.find_bundles()
        return {"version": version(), "protocol": PROTOCOL, "schema": schema.VERSION, "device": device_name, "dtype": dtype, "fast_path": fast_path,
                "bundles": [b.name for b in found], "capabilities": capabilities.describe(found),
                "loaded": self.cache.loaded, "python": sys.executable, "pid": os.getpid()}

    # ---- jobs (main thread) -------------------------------------------------------------------
    def serve(self) -> None:
        while True:
            item = self.jobs.get()
            if item == "stop":
                return
            if item == "release":
                self.cache.release()
                self.emit("released")
                continue
            assert isinstance(item, Job)
            self.run(item)

    def _preview_dir(self, job_id: str) -> Path:
        import shutil

        while len(self.preview_dirs) >= 3:
            shutil.rmtree(self.preview_dirs.pop(0), ignore_errors=True)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in job_id)[:40]
        self.preview_dirs.append(Path(tempfile.mkdtemp(prefix=f"{PREVIEWS}{os.getpid()}-{safe}-")))
        return self.preview_dirs[-1]

    @staticmethod
    def remove_stale_previews() -> list[Path]:
        """Preview folders of workers that died without cleaning up (killed, crashed), removed at start."""
        import re
        import shutil

        from .provenance import pid_alive

        removed = []
        for folder in Path(tempfile.gettempdir()).glob(f"{PREVIEWS}*"):
            found = re.match(re.escape(PREVIEWS) + r"(\d+)-", folder.name)
            if found and folder.is_dir() and not pid_alive(int(found.group(1))):
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(folder)
        return removed

    def cleanup(self) -> None:
        import shutil

        for folder in self.preview_dirs:
            shutil.rmtree(folder, ignore_errors=True)

    def run(self, job: Job) -> None:
        from . import jobs
        from .errors import Cancelled, SfumatoError

        if job.cancel.is_set():
            self.pending.pop(job.id, None)
            return self.emit("cancelled", id=job.id, files=[])
        started = time.perf_counter()
        preview_dir = self._preview_dir(job.id)
        ctx = jobs.JobContext(job_id=job.id, cache=self.cache, device=self.device, dtype=self.dtype,
                         cancel=job.cancel, emit=self.emit, preview_every=job.preview_every, preview_dir=preview_dir)
        final: tuple[str, dict[str, Any]]
        try:
            result = jobs.run(self.kinds, job.kind, job.params, Path(job.output), ctx)
        except Cancelled:
            final = ("cancelled", {"files": ctx.saved})
        except SfumatoError as exc:
            final = ("error", {**exc.to_event(), "files": ctx.saved})
        except Exception as exc:  # a bug must not kill the worker: report it and keep serving
            from .device import is_out_of_memory

            traceback.print_exc(file=sys.stderr)
            if is_out_of_memory(exc):  # outside a head's own out_of_memory_as_error: said the same way
                final = ("error", {"code": "out_of_memory", "message": f"out of memory: {str(exc)[:300]}",
                                   "hint": "lower the size, n or batch_size; the job asked for more memory than "
                                   "is free", "files": ctx.saved})
            else:
                final = ("error", {"code": "internal", "message": f"{type(exc).__name__}: {exc}",
                                   "hint": "this is a bug in sfumato; the worker's stderr has the traceback",
                                   "files": ctx.saved})
        else:
            final = ("result", {"seconds": round(time.perf_counter() - started, 3), **result})
        self.pending.pop(job.id, None)  # before the final event, so the id can be reused at once
        self.emit(final[0], id=job.id, **final[1])


def _protocol_stream() -> io.TextIOBase:
    """Keep the real stdout for protocol lines; send fd 1 (C and Python prints) to stderr."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return io.TextIOWrapper(os.fdopen(fd, "wb"), encoding="utf-8", write_through=True)


def read_lines(stream: io.BufferedIOBase, worker: Worker, limit: int = MAX_LINE) -> Iterator[str]:
    """The protocol lines of ``stream``, each read with a bounded ``readline``: a line longer than ``limit``
    bytes is skipped in ``limit``-sized pieces (so it never takes more memory than one piece) and answered with
    a ``line_too_long`` error."""
    while True:
        raw = stream.readline(limit)
        if not raw:
            return
        if len(raw) >= limit and not raw.endswith(b"\n"):
            skipped = len(raw)
            while (rest := stream.readline(limit)) and not rest.endswith(b"\n"):
                skipped += len(rest)
            skipped += len(rest)
            worker.error(None, "line_too_long", f"a line of {skipped} bytes; a request is at most {limit} bytes",
                         "send one JSON object per line; texts and paths have their own, much smaller limits")
            continue
        yield raw.decode("utf-8", errors="replace")


def _no_current_folder_imports() -> None:
    """Drop the current folder from the import path when a launcher put it there (``python -m`` without
    ``-P``): modules imported later (lazily, by a job) must come from the engine's install, never from the
    folder a project was opened in. The add-on starts the worker with ``-P``, so this is a second lock."""
    here = os.getcwd()
    if not sys.flags.safe_path and sys.path and sys.path[0] in ("", ".", here):
        sys.path.pop(0)
    sys.path[:] = [p for p in sys.path if p and os.path.isabs(p)]


def main(kinds: Mapping[str, Kind], device: str = "auto", dtype: str = "auto", threads: int | None = None) -> int:
    _no_current_folder_imports()
    out = _protocol_stream()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="[sfumato] %(message)s")
    from .quiet import quiet_libraries

    quiet_libraries()
    if threads:
        import torch

        torch.set_num_threads(threads)
    worker = Worker(out, kinds, device=device, dtype=dtype)
    worker.remove_stale_previews()
    worker.emit("ready", version=__import__("sfumato").__version__, protocol=PROTOCOL, pid=os.getpid())

    def read() -> None:
        try:
            for line in read_lines(sys.stdin.buffer, worker):
                try:
                    worker.handle_line(line)
                except Exception as exc:  # never lose the reader: a dead reader would orphan the worker
                    traceback.print_exc(file=sys.stderr)
                    worker.error(None, "internal", f"{type(exc).__name__}: {exc}",
                                 "this is a bug in sfumato; the worker's stderr has the traceback")
                if worker.stopping.is_set():
                    return
        finally:
            worker.shutdown()  # stdin closed (the client is gone) or shutdown requested

    def beat() -> None:  # from its own thread: a client that hears nothing for a while knows the worker froze
        while not worker.stopping.wait(heartbeat):
            worker.emit("heartbeat", busy=bool(worker.pending))

    heartbeat = float(os.environ.get("SFUMATO_WORKER_HEARTBEAT") or HEARTBEAT)
    threading.Thread(target=read, name="sfumato-reader", daemon=True).start()
    threading.Thread(target=beat, name="sfumato-heartbeat", daemon=True).start()
    try:
        worker.serve()
    finally:
        worker.cleanup()
    return 0


if __name__ == "__main__":  # an add-on older than the kinds' move to the top package starts the worker here
    message = "the worker now starts with `python -m sfumato.worker`: update the Sfumato add-on to this engine's"
    print(json.dumps({"v": PROTOCOL, "event": "error", "id": None, "code": "bad_version", "message": message,
                      "hint": "build it with `sfumato addon build` and install the zip"}), flush=True)
    print(f"sfumato: {message}", file=sys.stderr)
    sys.exit(2)
