"""The job kinds, assembled above core and the heads: each kind's schema request and its runner.

Core knows no head; the heads know core; this module knows them all, and the worker and the CLI take
their kinds from here. A head's runner is imported when its first job runs, so a worker that only
makes images never imports the video or 3-D heads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .core import schema
from .core.jobs import JobContext, Kind, Opened, image_job


def _texture(job: Opened, output: Path, ctx: JobContext) -> dict[str, Any]:
    from .threed.jobs import texture_job

    return texture_job(job, output, ctx)


def _asset(job: Opened, output: Path, ctx: JobContext) -> dict[str, Any]:
    from .threed.jobs import asset_job

    return asset_job(job, output, ctx)


def _video(job: Opened, output: Path, ctx: JobContext) -> dict[str, Any]:
    from .video.jobs import video_job

    return video_job(job, output, ctx)


def _upscale(job: Opened, output: Path, ctx: JobContext) -> dict[str, Any]:
    from .core.upscale import upscale_job

    return upscale_job(job, output, ctx)


def _train_style(job: Opened, output: Path, ctx: JobContext) -> dict[str, Any]:
    from .core.train.style_job import style_job

    return style_job(job, output, ctx)


KINDS: dict[str, Kind] = {
    "image": Kind(schema.ImageRequest, image_job),
    "texture": Kind(schema.TextureRequest, _texture),
    "video": Kind(schema.VideoRequest, _video),
    "turntable": Kind(schema.TurntableRequest, _video),
    "asset": Kind(schema.AssetRequest, _asset),
    "upscale": Kind(schema.UpscaleRequest, _upscale),
    "train_style": Kind(schema.StyleRequest, _train_style),
}
assert set(KINDS) == set(schema.KINDS), "every schema kind has a runner"


def run_job(kind: str, params: Any, output: Path, ctx: JobContext) -> dict[str, Any]:
    """One job of ``kind`` through the door (``core/jobs.py``): what the worker and the CLI call."""
    from .core.jobs import run

    return run(KINDS, kind, params, output, ctx)
