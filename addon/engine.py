"""The engine seen from Blender: finding its Python, one worker session, jobs and their state.

Blender-free (standard library only), so tests import it without ``bpy``. The add-on never imports
torch or the engine: it starts ``python -m sfumato.worker`` with the engine's interpreter and
talks JSON lines through ``client.WorkerClient``.

Two ways to run a job, one state machine:

- ``Session.start`` (interactive Blender): a reader thread submits the job (starting the worker if
  needed, which can take seconds) and forwards the job's events into ``Session.events``, a queue; a
  ``bpy.app.timers`` function on the main thread drains it with ``Session.drain`` and applies them.
  Blender's UI never waits on the worker.
- ``Session.run`` (``blender -b``, scripts): the same submit, waited for on the calling thread,
  because timers never run in background mode.

Either way ``JobState.apply(event)`` folds the events into what the panel shows.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import client as worker_client

PREFS_HINT = "set Preferences > Add-ons > Sfumato > Engine Python"
DEVICES = ("auto", "cpu", "cuda")
STOP_GRACE = 10.0  # seconds a stopped job has to end after its cancel before the worker is killed


class EngineError(RuntimeError):
    """A job did not produce its result (refused, failed, cancelled, the worker died); one clear line."""


class EngineUnavailable(EngineError):
    """The engine cannot be started; the message says why and what to do, in one line or two."""


@dataclass(frozen=True)
class EngineConfig:
    """What the worker is started with; a change of any field starts a fresh worker."""

    python: str = ""  # the engine's interpreter; "" = auto-detect
    bundle_folder: str = ""  # an extra bundle folder (SFUMATO_BUNDLES); "" = the engine's default
    device: str = "auto"  # auto | cpu | cuda
    threads: int = 0  # CPU threads for torch in the worker; 0 = torch's default


# ---- finding the engine's Python ------------------------------------------------------------------
def _python_in(folder: Path) -> Path | None:
    """The interpreter of a virtual environment or Python install given as a folder."""
    for candidate in ("bin/python3", "bin/python", "Scripts/python.exe", "python.exe", "python3", "python"):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def _shebang_python(script: str) -> str | None:
    """The interpreter named on the first line of a console script such as ``sfumato``."""
    try:
        with open(script, "rb") as fh:
            first = fh.readline(512).decode("utf-8", "replace").strip()
    except OSError:
        return None
    if not first.startswith("#!"):
        return None
    parts = first[2:].split()
    if not parts:
        return None
    if Path(parts[0]).name == "env" and len(parts) > 1:
        return shutil.which(parts[1])
    return parts[0] if Path(parts[0]).is_file() else None


def _has_sfumato() -> bool:
    """Whether the running Python (Blender's) can import the engine; looked up, not imported."""
    return importlib.util.find_spec("sfumato") is not None


def find_engine_python(configured: str = "") -> tuple[str, str]:
    """(interpreter path, how it was found); raises ``EngineUnavailable`` with what to do.

    Order: the preference, ``$SFUMATO_PYTHON``, the Python running Blender when it has sfumato
    installed, the interpreter of a ``sfumato`` command on PATH.
    """
    if configured:
        path = Path(os.path.expanduser(configured))
        if path.is_dir():
            found = _python_in(path)
            if found is None:
                raise EngineUnavailable(f"Engine Python {configured!r} is a folder without a Python "
                                        f"interpreter (looked for bin/python3, Scripts/python.exe); {PREFS_HINT} "
                                        "to the python file of the environment where sfumato is installed")
            path = found
        if not path.is_file():
            raise EngineUnavailable(f"Engine Python {configured!r} does not exist; {PREFS_HINT} to the python "
                                    "of the environment where sfumato is installed, or clear it to auto-detect")
        if not os.access(path, os.X_OK):
            raise EngineUnavailable(f"Engine Python {configured!r} is not executable; {PREFS_HINT}")
        return str(path), "preference"
    if os.environ.get("SFUMATO_PYTHON"):
        return find_engine_python(os.environ["SFUMATO_PYTHON"])[0], "$SFUMATO_PYTHON"
    if _has_sfumato() and sys.executable and Path(sys.executable).is_file():
        return sys.executable, "this Python has sfumato"
    script = shutil.which("sfumato")
    if script:
        python = _shebang_python(script)
        if python:
            return python, f"the sfumato command at {script}"
    raise EngineUnavailable("No engine found: sfumato is not installed in Blender's Python and no `sfumato` "
                            f"command is on PATH; {PREFS_HINT} to the python of the environment where "
                            "sfumato is installed (pip install sfumato)")


# what to lower when a job's memory ran out, by the job's tag
LOWER = {"image": "the image size (width, height)", "texture": "the view size, the texture size or the views",
         "turntable": "the frame size or the frames", "asset": "the render size or the samples per ray"}
KILLED = (-getattr(signal, "SIGKILL", 9), 128 + getattr(signal, "SIGKILL", 9))  # by the process, or through a shell


def stopped_message(returncode: Any, kind: str = "", files: list[str] | tuple[str, ...] = ()) -> str:
    """Why the engine stopped during a job, and the files it had finished (they are kept). SIGKILL is what the
    system's out-of-memory killer sends, so a killed engine says memory ran out and what to lower, instead of a
    bare exit code."""
    if returncode in KILLED:
        lower = LOWER.get(kind, "the job's size (image, view, texture or frame size, frames)")
        text = (f"The engine stopped, killed (SIGKILL): memory most likely ran out. Lower {lower}, or free "
                "memory (close other programs, Release GPU memory); the next job starts a fresh engine")
    else:
        text = f"The engine stopped during the job (exit code {returncode}); the next job starts a fresh one"
    return text + kept(files)


def kept(files: list[str] | tuple[str, ...]) -> str:
    """What a job had finished before it ended early, said after the reason (nothing when there is none)."""
    if not files:
        return ""
    names = ", ".join(Path(f).name for f in files[:4]) + (f" and {len(files) - 4} more" if len(files) > 4 else "")
    return f". Finished and kept: {names}"


def explain(exc: BaseException, python: str = "", stderr: str = "") -> str:
    """One clear line (or two) for the panel, never a traceback. ``stderr``: the worker's last words."""
    if isinstance(exc, EngineUnavailable):
        return str(exc)
    if isinstance(exc, worker_client.JobFailed):
        ev = exc.event
        return f"{ev.get('message')}" + (f" ({ev['hint']})" if ev.get("hint") else "")
    if isinstance(exc, worker_client.JobCancelled):
        return "cancelled"
    if isinstance(exc, worker_client.WorkerError):
        text = str(exc)
        if text.startswith("the engine did not start"):
            lines = [ln.strip() for ln in (stderr or text.partition(": ")[2]).split("\n") if ln.strip()]
            reason = lines[-1] if lines else text
            return (f"The engine did not start with {python or 'its Python'}: {reason[:300]}; "
                    f"{PREFS_HINT} to the python of the environment where sfumato is installed")
        if "exited" in text:
            code = re.search(r"exited (?:with code )?\(?(-?\d+)", text)
            if code and int(code.group(1)) in KILLED:
                return stopped_message(int(code.group(1)), files=exc.files)
            first = text.split(":", 1)[0]
            return f"The engine stopped ({first}); the next job starts a fresh one" + kept(exc.files)
        return f"Engine problem: {text[:300]}"
    if isinstance(exc, OSError):
        return f"Cannot start the engine with {python!r}: {exc.strerror or exc}; {PREFS_HINT}"
    return f"{type(exc).__name__}: {exc}"


# ---- one job's state, fed by events ----------------------------------------------------------------
ACTIVE = ("starting", "queued", "running")


@dataclass
class JobState:
    """What the panel shows about one job; ``apply`` folds the worker's events into it."""

    tag: str  # what the add-on does with the result ("image", "variations", ...)
    context: dict[str, Any] = field(default_factory=dict)  # plain data the result step needs
    job_id: str | None = None
    status: str = "starting"  # starting | queued | running | done | cancelled | error
    stage: str = ""
    step: int = 0
    total: int = 0
    image: int = 0  # the image (or view, see ``unit``) being made, 0-based
    images: int = 1
    unit: str = "image"  # what ``image``/``images`` count: "image", or "view" / "slot" for texture jobs
    slot: str = ""  # material mode: the slot being made
    title: str = ""  # what the job works on, shown before its progress ("Suzanne (1/3)")
    preview: str | None = None
    message: str = ""
    result: dict[str, Any] | None = None
    cancel_requested: bool = False
    stop_requested: bool = False  # Stop: the cancel escalates to ending the engine after ``STOP_GRACE``
    estimate: dict[str, Any] | None = None  # the engine's ``estimate`` event: seconds, peak_bytes, text
    saved: list[str] = field(default_factory=list)  # files the job finished so far (``saved`` events)
    started: float = field(default_factory=time.monotonic)
    # called on the main thread with the state and the final event's kind (result, error, cancelled, ...), so
    # the add-on's runtime applies any job's result without knowing the module that started it
    on_final: Callable[[JobState, str], None] | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def fraction(self) -> float:
        """Overall progress 0..1 across the job's images."""
        if self.status == "done":
            return 1.0
        if not self.total:
            return 0.0
        return min(1.0, (self.image + self.step / self.total) / max(self.images, 1))

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "accepted":
            self.status = "queued"
        elif kind == "progress":
            self.status = "running"
            self.stage = event.get("stage", "")
            self.step, self.total = int(event.get("step") or 0), int(event.get("total") or 0)
            self.unit = "view" if "views" in event else "image"
            self.image = int(event.get(self.unit) or 0)
            self.images = int(event.get(self.unit + "s") or 1)
            self.slot = str(event.get("slot") or "")
            if self.slot:
                self.unit = "slot"
            if event.get("preview"):
                self.preview = event["preview"]
        elif kind == "result":
            self.status, self.result = "done", event
            self.message = f"done in {event.get('seconds', 0):.1f} s"
        elif kind == "cancelled":
            self.status, self.message = "cancelled", "cancelled"
        elif kind == "error":
            self.status = "error"
            self.message = str(event.get("message", "unknown error"))
            if event.get("hint"):
                self.message += f" ({event['hint']})"
        elif kind == "saved":
            self.saved += [str(f) for f in event.get("files") or []]
        elif kind == "estimate":
            self.estimate = event
        elif kind == "worker_exited" and self.cancel_requested:  # Stop ended a worker that ignored the cancel
            self.status = "cancelled"
            self.message = ("stopped: the engine did not answer the cancel and was ended"
                            + (kept(event.get("files") or self.saved) or "; nothing was finished"))
        elif kind == "worker_exited":
            self.status = "error"
            self.message = stopped_message(event.get("returncode"), self.tag, event.get("files") or self.saved)
        elif kind == "failed":  # the add-on's own: the job could not be submitted
            self.status, self.message = "error", str(event.get("message"))

    def status_lines(self) -> list[tuple[str, bool]]:
        """(text, is_alert) lines for the panel."""
        if self.status == "starting":
            return [("Starting the engine...", False)]
        if self.status == "queued":
            return [("Queued", False)]
        if self.status == "running":
            what = "Loading models" if self.stage == "loading" else f"Step {self.step}/{self.total}"
            if self.images > 1 or self.slot:
                what += f", {self.unit} {self.image + 1}/{self.images}" + (f" {self.slot}" if self.slot else "")
            if self.title:
                what = f"{self.title}: {what}"
            said = " (stopping)" if self.stop_requested else " (cancelling)" if self.cancel_requested else ""
            return [(what + said, False)]
        if self.status == "error":
            return [(line, True) for line in wrap(self.message)]
        return [(self.message or self.status, False)]


def wrap(text: str, width: int = 60) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])


# ---- the session: one worker, one configuration ----------------------------------------------------
class Session:
    """Owns the worker client; restarts it when the configuration changes or the worker died."""

    def __init__(self) -> None:
        self.client: worker_client.WorkerClient | None = None
        self.config: EngineConfig | None = None
        self.python = ""
        self.events: queue.Queue[tuple[JobState, dict[str, Any]]] = queue.Queue()
        self.lock = threading.RLock()

    def client_for(self, config: EngineConfig) -> worker_client.WorkerClient:
        with self.lock:
            if self.client is not None and config == self.config:
                return self.client
            self.shutdown()
            python, _how = find_engine_python(config.python)
            env = dict(os.environ)
            if python != sys.executable:
                env.pop("PYTHONHOME", None)  # Blender's own Python home must not leak into another interpreter
            if config.bundle_folder:
                env["SFUMATO_BUNDLES"] = os.path.abspath(os.path.expanduser(config.bundle_folder))
            self.client = worker_client.WorkerClient(python, device=config.device, env=env,
                                                     threads=config.threads or None)
            self.config, self.python = config, python
            return self.client

    @property
    def alive(self) -> bool:
        return self.client is not None and self.client.alive

    def explain(self, exc: BaseException) -> str:
        """``explain`` with the worker's stderr. A worker that dies at start can end its stdout before
        its stderr is read, so give the stderr reader a moment to catch up."""
        stderr = ""
        if isinstance(exc, worker_client.WorkerError) and self.client is not None:
            deadline = time.monotonic() + 1.0
            while not (stderr := self.client.stderr_tail()) and time.monotonic() < deadline:
                time.sleep(0.02)
        return explain(exc, self.python, stderr)

    # ---- interactive: a reader thread fills the queue -----------------------------------------
    def start(self, config: EngineConfig, state: JobState, kind: str, params: dict[str, Any], output: str,
              preview_every: int = 1) -> threading.Thread:
        def reader() -> None:
            try:
                client = self.client_for(config)
                state.job_id = client.submit(kind, params, output, preview_every=preview_every)
                if state.cancel_requested:
                    client.cancel(state.job_id)
                for event in client.events(state.job_id):
                    self.events.put((state, event))
            except Exception as exc:  # reported in the panel, never raised into Blender
                self.events.put((state, {"event": "failed", "message": self.explain(exc)}))

        thread = threading.Thread(target=reader, name=f"sfumato-{state.tag}", daemon=True)
        thread.start()
        return thread

    def call(self, state: JobState, fn: Callable[[worker_client.WorkerClient], dict[str, Any]],
             config: EngineConfig) -> threading.Thread:
        """Run ``fn(client)`` on a thread (engine checks, release); its dict arrives as one event."""
        def run() -> None:
            try:
                self.events.put((state, {"event": "result", **fn(self.client_for(config))}))
            except Exception as exc:
                self.events.put((state, {"event": "failed", "message": self.explain(exc)}))

        thread = threading.Thread(target=run, name=f"sfumato-{state.tag}", daemon=True)
        thread.start()
        return thread

    def drain(self) -> list[tuple[JobState, dict[str, Any]]]:
        """Every event that arrived, without blocking (for the main-thread timer); applied to states."""
        out = []
        while True:
            try:
                state, event = self.events.get_nowait()
            except queue.Empty:
                return out
            state.apply(event)
            out.append((state, event))

    def cancel(self, state: JobState) -> None:
        state.cancel_requested = True
        client = self.client
        if state.job_id and client is not None:
            try:
                client.cancel(state.job_id)
            except worker_client.WorkerError:
                pass  # the worker is gone already; its exit event ends the job

    def stop(self, state: JobState, grace: float = STOP_GRACE) -> threading.Thread:
        """Cancel, then after ``grace`` seconds kill the worker if the job has not ended (a frozen worker, a step
        that never ends), on a thread so Blender never waits. Finished files stay; the job's stream ends with
        ``worker_exited`` and the next job starts a fresh worker."""
        state.cancel_requested = True
        client = self.client

        def escalate() -> None:
            if state.job_id and client is not None:
                client.stop(state.job_id, grace)

        thread = threading.Thread(target=escalate, name="sfumato-stop", daemon=True)
        thread.start()
        return thread

    def silent_for(self) -> float:
        """Seconds the worker has been quiet (it sends a heartbeat every few seconds); 0 when none runs."""
        client = self.client
        return client.silent_for() if client is not None and client.alive else 0.0

    # ---- blocking: background mode and scripts ------------------------------------------------
    def run(self, config: EngineConfig, state: JobState, kind: str, params: dict[str, Any], output: str,
            on_event: Callable[[JobState, dict[str, Any]], None] | None = None,
            preview_every: int = 0) -> dict[str, Any]:
        """Submit and wait; returns the result event. Raises ``EngineUnavailable`` when the engine cannot
        start, ``EngineError`` when the job fails or is cancelled; Ctrl-C cancels the job."""
        try:
            client = self.client_for(config)
            state.job_id = client.submit(kind, params, output, preview_every=preview_every)

            def forward(event: dict[str, Any]) -> None:
                state.apply(event)
                if on_event is not None:
                    on_event(state, event)

            try:
                return client.wait(state.job_id, on_event=forward)
            except KeyboardInterrupt:
                client.cancel(state.job_id)
                raise
        except (EngineUnavailable, worker_client.WorkerError, worker_client.JobFailed, worker_client.JobCancelled,
                OSError) as exc:
            state.apply({"event": "cancelled"} if isinstance(exc, worker_client.JobCancelled)
                        else {"event": "failed", "message": self.explain(exc)})
            raise (EngineError if state.job_id else EngineUnavailable)(state.message) from None
        except BaseException:  # Ctrl-C or a bug: the state must not stay "running" for ever
            state.apply({"event": "failed", "message": "interrupted"})
            raise

    def info(self, config: EngineConfig, timeout: float = 120.0) -> dict[str, Any]:
        try:
            return self.client_for(config).info(timeout)
        except (worker_client.WorkerError, OSError) as exc:
            raise EngineUnavailable(self.explain(exc)) from None

    def release(self, timeout: float = 60.0) -> bool:
        """Drop the worker's models; False when no worker runs."""
        if not self.alive:
            return False
        assert self.client is not None
        try:
            self.client.release(timeout)
        except worker_client.WorkerError as exc:
            raise EngineUnavailable(self.explain(exc)) from None
        return True

    def shutdown(self) -> None:
        with self.lock:
            if self.client is not None:
                self.client.shutdown()
            self.client, self.config = None, None
