"""Batches from Blender: a spec (a CSV / JSON Lines / JSON file, or rows built by a script) run by the engine's
batch runner, ``sfumato batch SPEC -o FOLDER --events``, in a process of the engine's Python.

Blender-free (standard library only). The runner prints one JSON line per finished job and a last line listing
every job of the spec with its files and provenance, which ``run`` returns; the caller loads the files into
Blender on the main thread. Rows written by ``write_rows`` go to a file named by their content, in a folder named
by their content, so the same rows run again resume: the runner skips every finished job whose files are there.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import safe_pythonpath
from .engine import EngineConfig, EngineError, find_engine_python

OnEvent = Callable[[dict[str, Any]], None]


@dataclass
class BatchResult:
    folder: str
    jobs: list[dict[str, Any]] = field(default_factory=list)  # every row: kind, status, files (absolute), metadata
    failed: list[tuple[str, str]] = field(default_factory=list)  # (output, error)
    sheets: list[str] = field(default_factory=list)
    done_now: int = 0
    skipped: int = 0


def content_name(rows: list[dict[str, Any]]) -> str:
    """A short name for rows, from their content: the same rows, the same name."""
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:10]


def write_rows(rows: list[dict[str, Any]], folder: Path) -> Path:
    """``rows`` as a JSON Lines spec in ``folder`` (``spec-<content>.jsonl``)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"spec-{content_name(rows)}.jsonl"
    path.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows), encoding="utf-8")
    return path


def command(python: str, spec: Path, folder: Path, workers: int, device: str, threads: int) -> list[str]:
    cmd = [python, "-P", "-m", "sfumato.cli", "batch", str(spec), "-o", str(folder), "--events",
           "--workers", str(workers), "--device", device]
    return cmd + (["--threads", str(threads)] if threads else [])


def _env(config: EngineConfig, python: str) -> dict[str, str]:
    """The engine's environment, as the worker gets it (no Blender Python home, no current-folder imports)."""
    env = dict(os.environ, PYTHONIOENCODING="utf-8", PYTHONUNBUFFERED="1")
    if python != sys.executable:
        env.pop("PYTHONHOME", None)
    if "PYTHONPATH" in env:
        env["PYTHONPATH"] = safe_pythonpath(env["PYTHONPATH"])
    if config.bundle_folder:
        env["SFUMATO_BUNDLES"] = os.path.abspath(os.path.expanduser(config.bundle_folder))
    return env


class BatchRun:
    """One running batch: its events arrive on a reader thread; ``cancel`` stops it (finished jobs stay)."""

    def __init__(self, config: EngineConfig, spec: Path, folder: Path, *, workers: int = 1,
                 on_event: OnEvent | None = None):
        python, _ = find_engine_python(config.python)
        self.folder, self.on_event = Path(folder), on_event
        self.events: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self.finished: dict[str, Any] | None = None
        try:
            self.proc = subprocess.Popen(command(python, spec, self.folder, workers, config.device, config.threads),
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                                         errors="replace", env=_env(config, python), start_new_session=True)
        except OSError as exc:
            raise EngineError(f"cannot start the batch with {python!r}: {exc}") from None
        self._threads = [threading.Thread(target=self._read, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            self.events.append(event)
            if event.get("event") == "finished":
                self.finished = event
            if self.on_event is not None:
                self.on_event(event)

    def _read_stderr(self) -> None:
        for line in self.proc.stderr:
            self.stderr = (self.stderr + [line.rstrip()])[-40:]

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def progress(self) -> tuple[int, int]:
        """(jobs finished, jobs in the spec)."""
        total = next((e.get("total", 0) for e in self.events if e.get("event") == "started"), 0)
        jobs = [e for e in self.events if e.get("event") == "job"]
        return (jobs[-1]["finished"] if jobs else 0), total

    def cancel(self) -> None:
        """Stop the runner and its workers; every finished job is kept, the same batch again goes on."""
        if self.running:
            os.killpg(self.proc.pid, signal.SIGINT)

    def wait(self) -> BatchResult:
        """Until the batch ends; its result, or ``EngineError`` with the runner's reason."""
        code = self.proc.wait()
        for t in self._threads:
            t.join(5)
        if self.finished is None:
            first = next((k for k, line in enumerate(self.stderr) if line.startswith("sfumato: error")), None)
            errors = self.stderr[first:] if first is not None else self.stderr[-3:]  # with the lines it lists
            reason = " ".join(line.strip() for line in errors).replace("sfumato: error: ", "") or f"exit code {code}"
            raise EngineError("the batch did not run: " + reason)
        return result_of(self.finished)


def result_of(event: dict[str, Any]) -> BatchResult:
    folder = Path(event["folder"])
    jobs = [{**j, "files": [str(folder / f) for f in j.get("files", [])]} for j in event.get("jobs", [])]
    return BatchResult(str(folder), jobs, [tuple(f) for f in event.get("failed", [])], event.get("sheets", []),
                       event.get("done", 0), event.get("skipped", 0))


def run(config: EngineConfig, spec: Path, folder: Path, *, workers: int = 1, on_event: OnEvent | None = None
        ) -> BatchResult:
    """Blocking (scripts, background mode): run the batch to its end; Ctrl-C stops it, keeping what finished."""
    batch = BatchRun(config, spec, folder, workers=workers, on_event=on_event)
    try:
        return batch.wait()
    except KeyboardInterrupt:
        batch.cancel()
        raise
