"""The fast path's switches and its safety net (graph capture itself needs CUDA: benchmarks/speed.py), and
the CPU's fast path: the U-Net under bfloat16 autocast where the CPU does bfloat16 natively."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfumato.core import fast
from sfumato.core.errors import BadParameter
from sfumato.core.image import ImageRequest, generate
from sfumato.core.checks import checked
from sfumato.core.schema import VideoRequest


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set what the CPU probe found, whatever this machine's CPU is."""
    def force(helps: bool) -> None:
        monkeypatch.setattr(fast, "_cpu_bf16", {"helps": helps, "speedup": 3.0 if helps else 0.6})
        monkeypatch.setattr(fast, "MIN_BF16_PARAMS", 0)  # the tiny test U-Nets stand in for real ones
    return force


def test_enabled_on_cuda_and_on_a_cpu_with_native_bfloat16_and_validated(cpu_bf16):
    cpu_bf16(False)
    assert not fast.enabled("auto", torch.device("cpu")) and not fast.enabled("on", torch.device("cpu"))
    cpu_bf16(True)
    assert fast.enabled("auto", torch.device("cpu")) and fast.enabled("compile", torch.device("cpu"))
    assert not fast.enabled("off", torch.device("cpu"))
    assert fast.enabled("auto", torch.device("cuda")) and not fast.enabled("off", torch.device("cuda"))
    with pytest.raises(BadParameter, match="auto, on, off"):
        fast.enabled("turbo", torch.device("cpu"))
    with pytest.raises(BadParameter) as exc:
        checked(ImageRequest(prompt="x", fast="yes"))
    assert exc.value.field == "fast"


def test_tiny_unets_stay_in_float32(sd15_models, cpu_bf16, monkeypatch):
    from sfumato.core.denoiser import Denoiser

    cpu_bf16(True)
    assert Denoiser(sd15_models, fast="auto").cpu_bf16
    monkeypatch.setattr(fast, "MIN_BF16_PARAMS", 5_000_000)
    assert sum(p.numel() for p in sd15_models.unet.parameters()) < 5_000_000
    assert not Denoiser(sd15_models, fast="auto").cpu_bf16


def test_cpu_probe_measures_once_per_process(monkeypatch):
    monkeypatch.setattr(fast, "_cpu_bf16", {})
    helps = fast.cpu_bf16_helps()
    assert isinstance(helps, bool) and fast._cpu_bf16["speedup"] > 0
    monkeypatch.setattr(torch.nn.Conv2d, "forward", lambda *a, **k: pytest.fail("measured twice"))
    assert fast.cpu_bf16_helps() is helps


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


def test_fast_auto_on_a_cpu_without_native_bfloat16_equals_off(sd15_models, cpu_bf16):
    cpu_bf16(False)
    req = dict(prompt="a brick wall", seed=3, steps=3, width=64, height=64)
    a = generate(ImageRequest(**req, fast="auto"), sd15_models)[0]
    b = generate(ImageRequest(**req, fast="off"), sd15_models)[0]
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    assert "graphs" not in sd15_models.extras and "unet_dtype" not in a.metadata


def test_cpu_fast_path_runs_the_unet_in_bfloat16_close_to_the_plain_path(sd15_models, cpu_bf16, tmp_path):
    """With native bfloat16 the U-Net and ControlNet run under autocast, the latents stay float32, the
    image stays within bfloat16 rounding of the plain path, and the provenance says which precision ran."""
    cpu_bf16(True)
    from PIL import Image

    Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))).save(tmp_path / "depth.png")
    seen = []
    hook = sd15_models.unet.conv_in.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    control = sd15_models.controlnet.controlnet_cond_embedding.register_forward_hook(
        lambda mod, args, out: seen.append(out.dtype))
    try:
        req = dict(prompt="a brick wall", negative="blurry", seed=3, steps=6, width=64, height=64, n=2,
                   depth_image=str(tmp_path / "depth.png"))
        off = generate(ImageRequest(**req, fast="off"), sd15_models)
        assert seen.count(torch.float32) == len(seen) >= 12  # U-Net and ControlNet, 6 steps
        seen.clear()
        auto = generate(ImageRequest(**req, fast="auto"), sd15_models)
        assert seen.count(torch.bfloat16) == len(seen) >= 12
    finally:
        hook.remove()
        control.remove()
    for a, b in zip(auto, off):
        diff = np.abs(np.asarray(a.image, np.float32) - np.asarray(b.image, np.float32))
        assert diff.mean() < 1.0 and diff.max() <= 8, (diff.mean(), diff.max())  # measured 0.36 and 3
        assert a.metadata["unet_dtype"] == "bfloat16 (autocast)" and a.metadata["fast"] == "auto"
        assert "unet_dtype" not in b.metadata and b.metadata["dtype"] == "float32"
    # a different seed differs far more than the bfloat16 rounding does
    other = generate(ImageRequest(**{**req, "seed": 4, "n": 1}, fast="off"), sd15_models)[0]
    spread = np.abs(np.asarray(other.image, np.float32) - np.asarray(off[0].image, np.float32)).mean()
    rounding = np.abs(np.asarray(auto[0].image, np.float32) - np.asarray(off[0].image, np.float32)).mean()
    assert rounding < spread / 10, (rounding, spread)  # measured 0.36 against 45


def test_seamless_mode_is_part_of_a_graph_key(sd15_models):
    from sfumato.core.seamless import seamless

    assert fast.seamless_mode(sd15_models.unet) == "none"
    with seamless([sd15_models.unet], "x"):
        assert fast.seamless_mode(sd15_models.unet) == "x"
    assert fast.seamless_mode(sd15_models.unet) == "none"


def test_bf16_copies_follow_the_live_module():
    """The CPU path's bfloat16 weight copies are reused while the weights stay, remade for a parameter changed
    in place or replaced, dropped with a removed one; the live module's forward is what runs."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    x = torch.randn(3, 8)

    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return fast.bf16_call(net, x).float()

    out = run()
    assert torch.allclose(out, net(x), atol=0.05, rtol=0.02)
    copies = {k: v[2] for k, v in net._sfumato_bf16.items()}
    assert all(c.dtype == torch.bfloat16 for c in copies.values()) and len(copies) == 4
    run()
    assert all(net._sfumato_bf16[k][2] is c for k, c in copies.items())  # nothing re-cast
    with torch.no_grad():
        net[1].bias.add_(10.0)  # in place
    assert torch.allclose(run(), net(x), atol=0.05, rtol=0.02) and run().min() > 5
    assert net._sfumato_bf16["1.bias"][2] is not copies["1.bias"] and net._sfumato_bf16["0.weight"][2] is copies["0.weight"]
    net[1] = torch.nn.Linear(8, 2)  # replaced by a module of another shape
    assert run().shape == (3, 2) and torch.allclose(run(), net(x), atol=0.05, rtol=0.02)
    del net[1]
    run()
    assert set(net._sfumato_bf16) == {"0.weight", "0.bias"}


def test_cpu_fast_path_keeps_seamless_padding(sd15_models, cpu_bf16):
    """Seamless tiling patches the live convolutions; the bfloat16 path runs those same modules, so a
    seamless image stays seamless (and close to the float32 one)."""
    cpu_bf16(True)
    req = dict(prompt="a brick wall", seed=5, steps=4, width=64, height=64, seamless="xy")
    quick = np.asarray(generate(ImageRequest(**req, fast="auto"), sd15_models)[0].image, np.float32)
    plain = np.asarray(generate(ImageRequest(**req, fast="off"), sd15_models)[0].image, np.float32)
    flat = np.asarray(generate(ImageRequest(**{**req, "seamless": "none"}, fast="auto"), sd15_models)[0].image,
                      np.float32)
    assert np.abs(quick - plain).mean() < 1.0  # measured 0.55
    assert np.abs(quick - flat).mean() > 10 * np.abs(quick - plain).mean()  # measured 19.6


def test_fast_path_leaves_models_alone_where_it_does_not_run(sd15_models, cpu_bf16, monkeypatch):
    """Small U-Nets stay float32 and keep their memory format; a bad mode is a clear error in video too."""
    from sfumato.core.denoiser import Denoiser

    cpu_bf16(True)
    monkeypatch.setattr(fast, "MIN_BF16_PARAMS", 10**9)
    unet = sd15_models.unet
    flag = unet.__dict__.pop("_sfumato_channels_last", None)
    weight = unet.conv_in.weight
    try:
        unet.to(memory_format=torch.contiguous_format)
        assert not Denoiser(sd15_models, fast="auto").cpu_bf16
        assert weight.is_contiguous() and "_sfumato_channels_last" not in unet.__dict__
    finally:
        if flag:
            unet.to(memory_format=torch.channels_last)
            unet.__dict__["_sfumato_channels_last"] = True
    with pytest.raises(BadParameter) as exc:
        checked(VideoRequest(prompt="x", frames=2, resolution=64, steps=1, fast="turbo"))
    assert exc.value.field == "fast"


def test_forget_bf16_after_an_edit_through_data():
    net = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast.bf16_call(net, x)
        net.weight.data.mul_(2)  # invisible to the version counter
        fast.forget_bf16(net)
        assert torch.allclose(fast.bf16_call(net, x).float(), net(x).float(), atol=0.05, rtol=0.02)
