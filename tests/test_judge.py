"""The material and colour judges fit reproducibly: the same config gives the same weights whatever thread
count the caller runs with (a fit's floating-point sums otherwise depend on it, and two judges then disagree by
points), and the caller's thread count is left as it was."""

import torch

from sfumato.core.train import judge as judges


def _fit(threads: int) -> dict[str, torch.Tensor]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        state = judges.fit(judges.JudgeConfig(samples=96, epochs=2, batch=16, size=64, crop=32),
                           log=lambda m: None).state()
        assert torch.get_num_threads() == threads  # the caller's setting comes back
        return state
    finally:
        torch.set_num_threads(before)


def test_a_fit_is_the_same_whatever_the_callers_thread_count():
    one, two = _fit(1), _fit(2)
    assert one.keys() == two.keys()
    for key in one:
        assert torch.equal(one[key], two[key]), key


def test_fits_of_different_seeds_differ():
    cfg = judges.JudgeConfig(samples=96, epochs=1, batch=16, size=64, crop=32)
    a = judges.fit(cfg, log=lambda m: None).state()
    b = judges.fit(judges.JudgeConfig(**{**cfg.__dict__, "seed": 1}), log=lambda m: None).state()
    assert not torch.equal(a["colour_w"], b["colour_w"])
