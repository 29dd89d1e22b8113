"""Batch throughput: the batch runner with 1 and 2 local workers and 1 and 2 Ray actors (one thread each), against
one process making the same images one after the other (what ``variations()`` does today through one worker),
all in one run; Ray's overhead per job; and the time to resume a 200-job batch in which every job is done.

    python benchmarks/batch.py                   # 12 images of the embedded bundle at 256², 12 steps
    python benchmarks/batch.py --jobs 8 --size 64 --steps 4 --smoke

Every row makes the same images (the same spec, seeds in the rows), and the table says whether each row's
files are byte-identical to the sequential baseline's.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import tempfile
import threading
import time
from pathlib import Path

import torch


def spec_file(folder: Path, jobs: int, size: int, steps: int, bundle: str) -> Path:
    prompts = ["red brick wall, running bond", "white marble floor", "oak planks", "grey slate roof tiles"]
    path = folder / "spec.csv"
    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["prompt", "seed", "steps", "width", "height", "bundle"])
        out.writerows([prompts[k % len(prompts)], 100 + k, steps, size, size, bundle] for k in range(jobs))
    return path


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.png")}


def sequential(spec, folder: Path, threads: int = 1) -> float:
    """The baseline: one process, one warm model cache, one job after the other."""
    from sfumato.core.jobs import JobContext
    from sfumato.core.loading import ModelCache
    from sfumato.kinds import run_job

    torch.set_num_threads(threads)
    cache, start = ModelCache(), time.perf_counter()
    for job in spec.jobs:
        ctx = JobContext(job.id, cache, "cpu", "auto", threading.Event(), lambda *a, **k: None, preview_every=0)
        run_job(job.kind, job.params, folder / job.output, ctx)
    return time.perf_counter() - start


def main() -> None:
    from sfumato.batch.local import LocalPool
    from sfumato.batch.runner import run_batch
    from sfumato.batch.spec import load
    from sfumato.core.quiet import quiet_libraries

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=12)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--bundle", default="materials")
    p.add_argument("--resume-jobs", type=int, default=200)
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--smoke", action="store_true", help="a quick run: fewer resume jobs")
    p.add_argument("--baselines-only", action="store_true", help="only the two sequential rows")
    args = p.parse_args()
    quiet_libraries()
    work = Path(tempfile.mkdtemp(prefix="sfumato-batch-bench-"))
    spec = load(spec_file(work, args.jobs, args.size, args.steps, args.bundle))
    rows = []
    (work / "seq").mkdir()
    base_s = sequential(spec, work / "seq")
    base = digests(work / "seq")
    rows.append(("sequential, one process, 1 thread", base_s, True, 0.0))
    (work / "seq-all").mkdir()
    cores = os.cpu_count() or 1
    all_s = sequential(spec, work / "seq-all", cores)  # today's variations(): one worker with every core
    rows.append((f"sequential, one process, {cores} threads (today's variations())", all_s,
                 digests(work / "seq-all") == base, 0.0))
    if args.baselines_only:
        rows.clear()
        rows += [("sequential, one process, 1 thread", base_s, True, 0.0),
                 (f"sequential, {cores} threads", all_s, digests(work / "seq-all") == base, 0.0)]

    def pool_row(label: str, pool, folder: str, workers: int) -> float:
        from sfumato.batch.manifest import Manifest

        start = time.perf_counter()
        run_batch(spec, work / folder, pool, progress=False, sheets=False)
        seconds = time.perf_counter() - start
        busy = sum(e.seconds for e in Manifest(work / folder).entries.values())  # inside the jobs, all workers
        rows.append((label, seconds, digests(work / folder) == base, seconds - busy / workers))
        return seconds

    for n in (1, 2) if not args.baselines_only else ():
        pool_row(f"batch, {n} local worker(s)", LocalPool(n, 1, "cpu", 2), f"local{n}", n)
    if not args.no_ray and not args.baselines_only:
        import ray

        from sfumato.batch.cluster import RayPool

        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
        for n in (1, 2):
            pool_row(f"batch, {n} Ray actor(s)", RayPool("auto", n, 1, "cpu", 2), f"ray{n}", n)
        ray.shutdown()

    print(f"{args.jobs} images of {args.bundle} at {args.size}², {args.steps} steps, 1 thread per worker, "
          f"{os.cpu_count()} cores\n")
    print("| run | seconds | images/min | vs sequential | outside the jobs (start-up, hand-over) s | same bytes |\n"
          "|---|---:|---:|---:|---:|---|")
    for label, seconds, same, outside in rows:
        print(f"| {label} | {seconds:.1f} | {60 * args.jobs / seconds:.1f} | {base_s / seconds:.2f}x | {outside:.1f} | "
              f"{'yes' if same else 'NO'} |")
    times = dict((label, s) for label, s, *_ in rows)
    if not args.no_ray and not args.baselines_only:
        over = (times["batch, 1 Ray actor(s)"] - times["batch, 1 local worker(s)"]) / args.jobs
        print(f"\nRay's overhead per job (1 actor against 1 local worker, start-up included): {over:+.3f} s")
    resume_jobs = 20 if args.smoke else args.resume_jobs
    (work / "resume-spec").mkdir()
    resume_spec = load(spec_file(work / "resume-spec", resume_jobs, 64, 1, args.bundle))
    run_batch(resume_spec, work / "resume", LocalPool(2, 1, "cpu", 2), progress=False, sheets=False)
    start = time.perf_counter()
    report = run_batch(resume_spec, work / "resume", LocalPool(2, 1, "cpu", 2), progress=False, sheets=False)
    print(f"resuming a {resume_jobs}-job batch with every job done (files hashed): "
          f"{time.perf_counter() - start:.2f} s, {report.skipped} skipped, {len(report.done)} run")


if __name__ == "__main__":
    main()
