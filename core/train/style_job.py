"""The ``train_style`` job: style training (``style.py``) run by the worker, for the add-on and scripts.

The request (``schema.StyleRequest``) becomes a ``StyleTrainConfig`` on the job's bundle and device; progress is the
worker's ``progress`` event (stage "training", step, total, loss), the trainer's lines are ``note`` events, and a
cancel stops before the next step, leaving the last checkpoint: the same job again resumes from it (the checkpoints
are kept per bundle and style in the user's data folder, as ``sfumato train style`` keeps them). The output is a
JSON summary (the LoRA's path and hash, steps, seconds, the loss per step); the LoRA itself goes into the bundle
(or, for the embedded bundle, the user's folder for it), where every job can name it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..jobs import JobContext, Opened, check_writable
from ..provenance import atomic_write, version
from .style import StyleTrainConfig, default_work, train_style


def style_job(job: Opened, output: Path, ctx: JobContext) -> dict[str, Any]:
    req = job.request
    check_writable(output, (".json",))
    cfg = StyleTrainConfig(folder=req.folder, name=req.name, bundle=str(job.bundle.path), steps=req.steps,
                           rank=req.rank, resolution=req.resolution, caption=req.prompt, trigger=req.trigger,
                           seed=req.seed, device=str(job.device), overwrite=req.overwrite, force=req.force)
    ctx.emit("progress", id=ctx.job_id, stage="loading", step=0, total=req.steps, image=0, images=1, preview=None)

    def progress(step: int, total: int, loss: float) -> None:
        ctx.emit("progress", id=ctx.job_id, stage="training", step=step, total=total, image=0, images=1,
                 preview=None, loss=loss)

    summary = train_style(cfg, default_work(str(job.bundle.path), req.name), progress=progress,
                          cancelled=ctx.cancel.is_set, log=lambda line: ctx.emit("note", id=ctx.job_id, message=line))
    record = {**summary, "kind": "train_style", "folder": str(req.folder), "seed": req.seed, "rank": req.rank,
              "sfumato_version": version()}
    atomic_write(output, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=2) + "\n"))
    ctx.keep(output)
    return {"files": [str(output)], **{k: v for k, v in record.items() if k != "losses"}}
