"""Scheduler contract: every named scheduler runs in our loop, is deterministic, and matches golden numbers.

The golden numbers come from the loop run with a deterministic analytic "model"
(eps = 0.8·tanh(x) + 0.1·cos(t/100)) on seeded noise. Regenerate them deliberately with
``python tests/test_schedulers.py --regen`` and review the diff.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from sfumato.core.denoiser import Conditioning
from sfumato.core.errors import BadParameter, Cancelled
from sfumato.core.sampling import sample, timesteps_for
from sfumato.core.schedulers import SCHEDULERS, make_scheduler, names, takes_generator
from sfumato.core.tiny import SCHEDULER_SD15

GOLDEN = Path(__file__).parent / "golden" / "loop.json"
COND = Conditioning(positive=torch.zeros(1), negative=torch.zeros(1), guidance=1.0)


def analytic_model(x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    return 0.8 * torch.tanh(x) + 0.1 * torch.cos(torch.as_tensor(t, dtype=x.dtype) / 100)


def run(name: str, steps: int = 8, strength: float = 1.0, seed: int = 0, on_step=None) -> torch.Tensor:
    scheduler = make_scheduler(name, SCHEDULER_SD15)
    timesteps, _ = timesteps_for(scheduler, steps, torch.device("cpu"), strength)
    g = [torch.Generator().manual_seed(seed)]
    x = torch.randn((1, 4, 8, 8), generator=g[0]) * scheduler.init_noise_sigma
    return sample(analytic_model, scheduler, x, COND, timesteps,
                  generator=g if takes_generator(scheduler) else None, on_step=on_step)


def summary(x: torch.Tensor) -> list[float]:
    return [round(float(v), 5) for v in (x.mean(), x.std(), x.abs().sum(), *x.flatten()[:3])]


@pytest.mark.parametrize("name", names())
def test_every_scheduler_runs_is_deterministic_and_matches_golden(name):
    steps = 4 if name == "lcm" else 8
    a, b = run(name, steps), run(name, steps)
    assert torch.isfinite(a).all() and a.shape == (1, 4, 8, 8)
    assert torch.equal(a, b)
    golden = json.loads(GOLDEN.read_text())
    assert summary(a) == pytest.approx(golden[name], abs=1e-3), name


@pytest.mark.parametrize("name", names())
def test_callback_sees_every_step_and_can_cancel(name):
    seen = []
    run(name, 6 if name != "lcm" else 4, on_step=lambda info: seen.append((info.step, info.total)))
    assert [s for s, _ in seen] == list(range(1, len(seen) + 1)) and seen[-1][0] == seen[-1][1]

    def cancel_at_2(info):
        if info.step == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        run(name, 6, on_step=cancel_at_2)


def test_strength_skips_the_start_of_the_schedule():
    scheduler = make_scheduler("ddim", SCHEDULER_SD15)
    full, start0 = timesteps_for(scheduler, 20, torch.device("cpu"), 1.0)
    part, start = timesteps_for(scheduler, 20, torch.device("cpu"), 0.5)
    assert start0 == 0 and start == 10 and torch.equal(part, full[10:])


def test_unknown_scheduler_names_the_choices():
    with pytest.raises(BadParameter, match="scheduler='heun2'.*dpmpp_2m_karras"):
        make_scheduler("heun2", SCHEDULER_SD15)


def test_beta_schedule_override():
    s = make_scheduler("ddim", SCHEDULER_SD15, beta_schedule="linear")
    assert s.config.beta_schedule == "linear" and set(SCHEDULERS) <= set(names())


if __name__ == "__main__" and "--regen" in sys.argv:
    GOLDEN.write_text(json.dumps({n: summary(run(n, 4 if n == "lcm" else 8)) for n in names()}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
