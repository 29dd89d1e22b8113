"""The fast path's switches and its safety net (graph capture itself needs CUDA: benchmarks/speed.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfumato.core import fast
from sfumato.core.errors import BadParameter
from sfumato.core.image import ImageRequest, generate


def test_enabled_only_on_cuda_and_validated():
    assert not fast.enabled("auto", torch.device("cpu"))
    assert not fast.enabled("on", torch.device("cpu"))
    assert fast.enabled("auto", torch.device("cuda")) and not fast.enabled("off", torch.device("cuda"))
    with pytest.raises(BadParameter, match="auto, on, off"):
        fast.enabled("turbo", torch.device("cpu"))
    with pytest.raises(BadParameter) as exc:
        ImageRequest(prompt="x", fast="yes").validate()
    assert exc.value.field == "fast"


def test_failed_capture_falls_back_to_eager_once_and_is_logged():
    """Where a graph cannot be recorded (here: no CUDA at all), the call runs eagerly, the key is
    remembered as eager, and the event says why."""
    cache = fast.GraphCache()
    calls = []

    def fn(x):
        calls.append(1)
        return x * 2

    x = torch.ones(3)
    for _ in range(3):
        assert torch.equal(cache.call(("unet", fast.signature([x])), fn, [x], tolerance=1e-4), x * 2)
    assert len(cache.calls) == 1 and next(iter(cache.calls.values())) is None
    assert [e["captured"] for e in cache.events] == [False] and len(calls) == 3


def test_fast_auto_on_cpu_equals_off(sd15_models):
    req = dict(prompt="a brick wall", seed=3, steps=3, width=64, height=64)
    a = generate(ImageRequest(**req, fast="auto"), sd15_models)[0].image
    b = generate(ImageRequest(**req, fast="off"), sd15_models)[0].image
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert "graphs" not in sd15_models.extras


def test_seamless_mode_is_part_of_a_graph_key(sd15_models):
    from sfumato.core.seamless import seamless

    assert fast.seamless_mode(sd15_models.unet) == "none"
    with seamless([sd15_models.unet], "x"):
        assert fast.seamless_mode(sd15_models.unet) == "x"
    assert fast.seamless_mode(sd15_models.unet) == "none"
