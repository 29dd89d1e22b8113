"""A batch's manifest: one JSON line per finished or failed job, appended and flushed to disk as each ends.

Appending whole lines (and ``fsync``) means a run killed at any moment leaves every earlier line intact; a torn
last line is ignored when read. A job counts as done when its last line says so and every file it lists is
there with the sha256 it had, so a second run skips it and a file damaged since is made again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NAME = "batch-manifest.jsonl"


@dataclass
class Entry:
    id: str
    row: int
    kind: str
    status: str  # done | failed
    files: list[dict[str, str]] = field(default_factory=list)  # {"path": relative to the folder, "sha256": ...}
    seconds: float = 0.0
    error: str = ""
    attempts: int = 1
    worker: str = ""
    prompt: str = ""
    metadata: Any = None  # the job's provenance as its runner returned it (one dict per image for images)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Manifest:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / NAME
        self.entries: dict[str, Entry] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    entry = Entry(**json.loads(line))
                except (json.JSONDecodeError, TypeError):
                    continue  # a line torn by a kill, or from another tool: not ours
                self.entries[entry.id] = entry

    def done(self, job_id: str) -> bool:
        """Finished, with every file present and unchanged."""
        entry = self.entries.get(job_id)
        if entry is None or entry.status != "done" or not entry.files:
            return False
        for f in entry.files:
            path = self.folder / f["path"]
            if not path.is_file() or sha256(path) != f["sha256"]:
                return False
        return True

    def record(self, entry: Entry) -> None:
        """Append ``entry`` as one line, on disk before this returns."""
        line = json.dumps(asdict(entry), default=str) + "\n"
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self.entries[entry.id] = entry

    def files_of(self, paths: list[str]) -> list[dict[str, str]]:
        """``paths`` (inside the folder) with their sha256."""
        return [{"path": str(Path(p).resolve().relative_to(self.folder.resolve())), "sha256": sha256(Path(p))}
                for p in paths]

    def summary(self) -> dict[str, Any]:
        statuses = [e.status for e in self.entries.values()]
        return {"done": statuses.count("done"), "failed": statuses.count("failed")}
