"""``sfumato batch SPEC -o DIR [--workers N] [--ray auto|HOST:PORT] [--retries 2]``: check the whole spec, then run
what is not done yet, locally or on a Ray cluster, and print a summary."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..core.errors import BadParameter
from .manifest import Manifest


def add_parser(sub) -> None:
    p = sub.add_parser("batch", help="run a CSV / JSON Lines / JSON spec of jobs, resumably (locally or on Ray)",
                       description=__doc__)
    p.add_argument("spec", help=".csv, .jsonl or .json: one job per row, columns named like the jobs' fields, "
                   "plus kind and name")
    p.add_argument("-o", "--output", required=True, help="folder for the outputs and batch-manifest.jsonl")
    p.add_argument("--workers", type=int, default=None, help="local worker processes, or Ray actors (default: the "
                   "GPUs, else 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per worker (default: the cores split "
                   "between the workers)")
    p.add_argument("--ray", default=None, metavar="auto|HOST:PORT", help="run on Ray: auto starts a local one; "
                   "HOST:PORT joins a running cluster (needs the [cluster] extra)")
    p.add_argument("--retries", type=int, default=2, help="runs of a job whose worker died, after the first")
    p.add_argument("--device", default="auto")
    p.add_argument("--check", action="store_true", help="check the spec and say what would run; run nothing")
    p.add_argument("--no-sheets", action="store_true", help="no contact sheets")
    p.add_argument("--events", action="store_true", help="JSON lines on stdout instead of a progress bar: one per "
                   "job as it ends, then the summary (for the Blender add-on and scripts)")
    p.set_defaults(run=run_command)


def _counts(args: argparse.Namespace) -> tuple[int, int]:
    gpus = 0
    if args.device != "cpu":
        import torch

        gpus = torch.cuda.device_count()
    workers = args.workers if args.workers is not None else max(1, gpus)
    if workers < 1 or workers > 256:
        raise BadParameter("workers", workers, "an integer 1..256")
    threads = args.threads if args.threads is not None else max(1, (os.cpu_count() or 1) // workers)
    if threads < 1:
        raise BadParameter("threads", threads, "a positive integer")
    if not 0 <= args.retries <= 20:
        raise BadParameter("retries", args.retries, "an integer 0..20")
    return workers, threads


def _emit(event: dict) -> None:
    print(json.dumps(event, default=str), flush=True)


def _job_event(job, entry, report) -> None:
    _emit({"event": "job", "row": job.row, "kind": job.kind, "output": job.output, "status": entry.status,
           "error": entry.error, "files": [f["path"] for f in entry.files], "metadata": entry.metadata,
           "finished": len(report.done) + len(report.failed) + report.skipped, "total": report.total})


def _entry(entry) -> dict:
    if entry is None:
        return {"status": "missing", "files": [], "metadata": None, "error": ""}
    return {"status": entry.status, "files": [f["path"] for f in entry.files], "metadata": entry.metadata,
            "error": entry.error}


def run_command(args: argparse.Namespace) -> int:
    from .runner import run_batch, summary_table
    from .spec import SpecInvalid, load

    try:
        spec = load(args.spec)
    except SpecInvalid as exc:
        print(f"sfumato: error: {exc}", file=sys.stderr)
        return 2
    workers, threads = _counts(args)
    if args.check:
        manifest = Manifest(args.output)
        todo = sum(not manifest.done(job.id) for job in spec.jobs)
        print(f"{len(spec.jobs)} jobs checked: {todo} to run, {len(spec.jobs) - todo} already done")
        return 0
    if args.ray:
        from .cluster import RayPool

        pool = RayPool(args.ray, workers, threads, args.device, args.retries)
    else:
        from .local import LocalPool

        pool = LocalPool(workers, threads, args.device, args.retries)
    if args.events:
        _emit({"event": "started", "total": len(spec.jobs), "folder": str(Path(args.output).absolute())})
    try:
        report = run_batch(spec, args.output, pool, sheets=not args.no_sheets, progress=not args.events,
                           on_job=_job_event if args.events else None)
    except KeyboardInterrupt:
        print("\nsfumato: stopped; finished jobs are kept: run the same command again to go on", file=sys.stderr)
        return 130
    if args.events:
        manifest = Manifest(args.output)
        jobs = [{"row": j.row, "kind": j.kind, "output": j.output, **_entry(manifest.entries.get(j.id))}
                for j in spec.jobs]  # in spec order, finished earlier or now
        _emit({"event": "finished", "done": len(report.done), "skipped": report.skipped, "failed": report.failed,
               "sheets": report.sheets, "folder": str(manifest.folder.absolute()), "jobs": jobs})
        return 1 if report.failed else 0
    print(summary_table(report))
    for sheet in report.sheets:
        print(sheet)
    return 1 if report.failed else 0
