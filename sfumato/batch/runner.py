"""Run a checked batch spec into a folder, resumably: ``sfumato batch SPEC -o DIR``.

1. read the manifest and skip every job whose files are there and verified;
2. clear what a killed run left half-made (the staging folder);
3. run the rest on local worker processes or a Ray cluster; each job writes into its own staging folder;
4. as each job ends, move its files into the folder (``os.replace``: all or nothing per file) and append its line
   to the manifest, so a run killed at any moment (``kill -9`` included) loses no finished job, and the same
   command again ends with exactly the files of an uninterrupted run;
5. a contact sheet per prompt for images, and a summary.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .manifest import Entry, Manifest
from .spec import BatchJob, Spec

STAGING = ".staging"


@dataclass
class Report:
    total: int = 0
    skipped: int = 0  # finished by an earlier run, files verified
    done: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (job output, error)
    seconds: float = 0.0
    sheets: list[str] = field(default_factory=list)
    by_kind: dict[str, dict[str, float]] = field(default_factory=dict)


def run_batch(spec: Spec, folder: Path, pool, *, progress: bool = True, sheets: bool = True,
              on_job: Callable[[BatchJob, Entry, Report], None] | None = None) -> Report:
    """Run ``spec``'s unfinished jobs on ``pool`` (``LocalPool`` or ``RayPool``) into ``folder``; ``on_job`` hears of
    each job as it ends (after its files and manifest line are written)."""
    from tqdm import tqdm

    folder = Path(folder).absolute()
    if not folder.is_dir():
        folder.mkdir(parents=True)
        print(f"sfumato: created {folder}", file=sys.stderr)
    started = time.perf_counter()
    manifest = Manifest(folder)
    todo = [job for job in spec.jobs if not manifest.done(job.id)]
    report = Report(total=len(spec.jobs), skipped=len(spec.jobs) - len(todo))
    shutil.rmtree(folder / STAGING, ignore_errors=True)  # what a killed run was making
    bar = tqdm(total=len(spec.jobs), initial=report.skipped, unit="job", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)

    def finish(job: BatchJob, outcome: dict[str, Any]) -> None:
        entry = _finish(job, outcome, folder, manifest)
        if entry.status == "done":
            report.done.append(job.output)
        else:
            report.failed.append((job.output, entry.error))
        stats = report.by_kind.setdefault(job.kind, {"done": 0, "failed": 0, "seconds": 0.0})
        stats[entry.status] += 1
        stats["seconds"] += entry.seconds
        bar.update(1)
        bar.set_postfix(failed=len(report.failed), refresh=False)
        if on_job is not None:
            on_job(job, entry, report)

    try:
        if todo:
            pool.run(todo, lambda job: folder / STAGING / job.id, finish)
    finally:
        bar.close()
        shutil.rmtree(folder / STAGING, ignore_errors=True)
    if sheets:
        report.sheets = contact_sheets(spec, manifest, folder)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _finish(job: BatchJob, outcome: dict[str, Any], folder: Path, manifest: Manifest) -> Entry:
    """Move a finished job's files into ``folder`` and record it; a failure is recorded with its error."""
    entry = Entry(job.id, job.row, job.kind, outcome["status"], seconds=outcome.get("seconds", 0.0),
                  error=outcome.get("error", ""), attempts=outcome.get("attempts", 1), worker=outcome.get("worker", ""),
                  prompt=str(job.params.get("prompt", "")), metadata=outcome.get("metadata"))
    if entry.status == "done":
        try:
            final = []
            for path in outcome["files"]:
                target = folder / Path(path).name
                os.replace(path, target)
                final.append(str(target))
            entry.files = manifest.files_of(final)
        except OSError as exc:  # a full disk, a folder gone read-only: this job fails, the batch goes on
            entry.status, entry.error, entry.files = "failed", f"could not write the job's files: {exc}", []
    shutil.rmtree(folder / STAGING / job.id, ignore_errors=True)
    manifest.record(entry)
    return entry


def contact_sheets(spec: Spec, manifest: Manifest, folder: Path, cell: int = 160) -> list[str]:
    """One PNG per prompt of the finished image jobs, in spec order: ``sheets/<prompt>.png``."""
    from PIL import Image

    from ..core.provenance import atomic_write

    by_prompt: dict[str, list[Path]] = defaultdict(list)
    for job in spec.jobs:
        entry = manifest.entries.get(job.id)
        if job.kind == "image" and entry is not None and entry.status == "done":
            by_prompt[entry.prompt] += [folder / f["path"] for f in entry.files if f["path"].endswith(".png")]
    written = []
    for prompt, files in by_prompt.items():
        cols = math.ceil(math.sqrt(len(files)))
        rows = math.ceil(len(files) / cols)
        sheet = Image.new("RGB", (cols * cell, rows * cell), (30, 30, 30))
        for i, path in enumerate(files):
            with Image.open(path) as im:
                im.thumbnail((cell - 4, cell - 4))
                sheet.paste(im.convert("RGB"), ((i % cols) * cell + 2, (i // cols) * cell + 2))
        name = re.sub(r"[^a-z0-9]+", "-", prompt.lower()).strip("-")[:60] or "untitled"
        target = folder / "sheets" / f"{name}.png"
        written.append(str(atomic_write(target, lambda tmp: sheet.save(tmp, format="PNG"))))
    return written


def summary_table(report: Report) -> str:
    lines = [f"{'kind':10} {'done':>6} {'failed':>7} {'s/job':>7}"]
    for kind, s in report.by_kind.items():
        count = s["done"] + s["failed"]
        lines.append(f"{kind:10} {int(s['done']):6d} {int(s['failed']):7d} {s['seconds'] / max(count, 1):7.1f}")
    lines.append(f"{report.total} jobs: {len(report.done)} made now, {report.skipped} already done, "
                 f"{len(report.failed)} failed · {report.seconds:.1f} s")
    lines += [f"failed: {name}: {error}" for name, error in report.failed[:20]]
    return "\n".join(lines)
