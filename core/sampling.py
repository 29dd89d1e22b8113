"""Our sampling loop over diffusers' scheduler classes: one signature for every head.

    x_T ──► for t in timesteps[start:]:  x_in = scale(x, t);  out = denoiser(x_in, t, cond);
            x = scheduler.step(out, t, x) ──► x_0

Image-to-image is ``start_step > 0`` on a noised input (see ``timesteps_for``); video passes frames
folded into the batch; SDS calls the denoiser directly. ``on_step`` is called after every step with a
``StepInfo`` and may raise ``Cancelled`` to stop between two steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .denoiser import Conditioning
from .errors import BadParameter
from .schema import strength_allowed


@dataclass
class StepInfo:
    step: int  # 1-based index of the step just finished
    total: int  # steps this run takes (after img2img's skip)
    t: float  # the scheduler timestep just used
    latents: torch.Tensor  # (B, C, h, w) x after this step


OnStep = Callable[[StepInfo], None]


def timesteps_for(scheduler, steps: int, device: torch.device, strength: float = 1.0,
                  field: str = "strength") -> tuple[torch.Tensor, int]:
    """Set ``steps`` on the scheduler and return (timesteps to run, start step).

    ``strength`` < 1 skips the first ``steps − int(steps · strength)`` steps (diffusers' img2img
    convention), so the loop starts on an input noised to the first remaining timestep. A strength that
    leaves no step at all is a ``BadParameter`` on ``field`` (requests check it earlier; this is the backstop).
    """
    if int(steps * strength) < 1:
        raise BadParameter(field, strength, strength_allowed(steps))
    scheduler.set_timesteps(steps, device=device)
    start = max(steps - min(int(steps * strength), steps), 0)
    begin = start * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return scheduler.timesteps[begin:], start


def sample(denoiser: Callable[[torch.Tensor, torch.Tensor, Conditioning], torch.Tensor], scheduler,
           x: torch.Tensor, cond: Conditioning | None, timesteps: torch.Tensor, *,
           generator: list[torch.Generator] | None = None, on_step: OnStep | None = None,
           post_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Denoise ``x`` (B, C, h, w) along ``timesteps``; returns the final latents x_0.

    ``post_step(i, x)`` may replace parts of the latents after step ``i`` (0-based), before the next
    one sees them: inpainting keeps known regions there, multi-view texturing syncs views there."""
    step_kwargs: dict[str, Any] = {"return_dict": False}
    if generator is not None:
        step_kwargs["generator"] = generator
    total = len(timesteps)
    for i, t in enumerate(timesteps):
        x_in = scheduler.scale_model_input(x, t)
        out = denoiser(x_in, t, cond.at_step(i, total) if cond is not None else None)  # None: the denoiser's own
        x = scheduler.step(out, t, x, **step_kwargs)[0].to(x.dtype)
        if post_step is not None:
            x = post_step(i, x)
        if on_step is not None:
            on_step(StepInfo(step=i + 1, total=total, t=float(t), latents=x))
    return x
