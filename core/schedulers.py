"""Schedulers by name: diffusers' scheduler classes, configured from the bundle's own schedule.

Each entry builds the class from the bundle's ``scheduler_config.json`` (so beta schedule,
prediction type and timestep spacing stay what the model was trained with) plus a few overrides.
Schedulers whose ``step`` draws fresh noise receive the job's generators there, as diffusers' pipelines
pass them, so seeds reproduce across tools.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import diffusers

from .errors import BadParameter


@dataclass(frozen=True)
class SchedulerSpec:
    cls: str  # diffusers class name
    overrides: dict[str, Any] = field(default_factory=dict)
    note: str = ""


SCHEDULERS: dict[str, SchedulerSpec] = {
    "ddim": SchedulerSpec("DDIMScheduler", note="deterministic with eta=0"),
    "ddpm": SchedulerSpec("DDPMScheduler", note="ancestral, needs many steps"),
    "euler": SchedulerSpec("EulerDiscreteScheduler"),
    "euler_a": SchedulerSpec("EulerAncestralDiscreteScheduler"),
    "dpmpp_2m": SchedulerSpec("DPMSolverMultistepScheduler",
                              {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": False}),
    "dpmpp_2m_karras": SchedulerSpec("DPMSolverMultistepScheduler",
                                     {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}),
    "unipc": SchedulerSpec("UniPCMultistepScheduler"),
    "lcm": SchedulerSpec("LCMScheduler", note="for LCM-distilled weights, 4-8 steps"),
}
DEFAULT_SCHEDULER = "dpmpp_2m"
# the classes a bundle's own scheduler_config.json may name for ``bundle``: ours, plus the ones Stable Diffusion
# checkpoints ship with (PNDM for SD 1.x, LMS in older exports). Anything else is refused by name: the config is
# data from a downloaded folder and must not pick an arbitrary class of the diffusers package.
BUNDLE_CLASSES = frozenset({spec.cls for spec in SCHEDULERS.values()} | {"PNDMScheduler", "LMSDiscreteScheduler"})
# keys a bundle's config may carry for its own class that another class would reject or misuse
_CLASS_SPECIFIC = ("skip_prk_steps", "set_alpha_to_one", "solver_order", "algorithm_type", "use_karras_sigmas",
                   "original_inference_steps", "timestep_scaling")


def names() -> list[str]:
    return ["bundle", *SCHEDULERS]


def make_scheduler(name: str, bundle_config: dict[str, Any], *, beta_schedule: str | None = None):
    """A fresh scheduler instance. ``bundle`` uses the bundle's own class unchanged.

    ``beta_schedule`` overrides the noise schedule (heads such as video may need ``linear``).
    """
    config = dict(bundle_config)
    if beta_schedule is not None:
        config["beta_schedule"] = beta_schedule
    if name == "bundle":
        class_name = config.get("_class_name")
        if not isinstance(class_name, str) or class_name not in BUNDLE_CLASSES:
            shown = class_name if isinstance(class_name, str) and len(class_name) <= 80 else type(class_name).__name__
            raise BadParameter("scheduler", name, f"a named scheduler ({', '.join(SCHEDULERS)}): the bundle's own "
                               f"class {shown!r} is not one sfumato runs (it runs {', '.join(sorted(BUNDLE_CLASSES))})")
        return getattr(diffusers, class_name).from_config(config)
    if name not in SCHEDULERS:
        raise BadParameter("scheduler", name, ", ".join(names()))
    spec = SCHEDULERS[name]
    if config.get("_class_name") != spec.cls:
        for key in _CLASS_SPECIFIC:
            config.pop(key, None)
    return getattr(diffusers, spec.cls).from_config({**config, **spec.overrides})


def takes_generator(scheduler) -> bool:
    """Whether ``scheduler.step`` draws noise from a generator we should pass (diffusers' pipelines pass
    theirs to every ``step`` that accepts one, so we ask the signature the same way to match seeds)."""
    import inspect

    return "generator" in inspect.signature(scheduler.step).parameters
