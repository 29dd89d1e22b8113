"""Turntable building blocks: orbit and its depth, circular windows, blending, loop-consistent noise."""

from __future__ import annotations

import pytest
import torch
import trimesh

from sfumato.core.errors import BadParameter
from sfumato.threed.mesh import Mesh
from sfumato.video.turntable import (circular_windows, loop_noise, orbit_cameras, orbit_depth, window_weights,
                                     windowed)


def _box() -> Mesh:
    tm = trimesh.creation.box((2.0, 1.0, 1.0))
    return Mesh(torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces))


def test_orbit_closes_and_depth_uses_one_range():
    mesh = _box()
    cams = orbit_cameras(mesh, 12)
    pos = cams.positions
    assert torch.allclose(pos.norm(dim=1), pos[0].norm().expand(12), atol=1e-5)
    step = (pos[1] - pos[0]).norm()
    assert torch.allclose((pos[0] - pos[-1]).norm(), step, atol=1e-5)  # frame N-1 -> 0 like any neighbours
    depth = orbit_depth(mesh, cams, 64)
    assert depth.shape == (12, 3, 64, 64)
    assert float(depth.max()) == pytest.approx(1.0) and float(depth[depth > 0].min()) >= 0.1 - 1e-6
    # frames 0 and 6 see the box from opposite sides: the same depth picture, mirrored
    assert torch.allclose(depth[0, 0], depth[6, 0].flip(-1), atol=0.05)


def test_bad_orbits():
    with pytest.raises(BadParameter, match="frames"):
        orbit_cameras(_box(), 0)
    with pytest.raises(BadParameter, match="frames"):
        orbit_cameras(_box(), 10_000)
    with pytest.raises(BadParameter, match="multiple of 8"):
        orbit_depth(_box(), orbit_cameras(_box(), 4), 60)


@pytest.mark.parametrize("frames,length,shift", [(24, 16, 0), (24, 16, 5), (40, 16, 13), (10, 16, 0), (16, 16, 3)])
def test_circular_windows_cover_every_frame_and_wrap(frames, length, shift):
    windows = circular_windows(frames, length, shift=shift)
    seen = torch.cat(windows)
    assert set(seen.tolist()) == set(range(frames))
    assert all(len(w) == min(frames, length) for w in windows)
    for w in windows:  # consecutive modulo N
        assert bool(((w[1:] - w[:-1]) % frames == 1).all())
    if frames > length:
        assert any(bool((w == frames - 1).any() and (w == 0).any()) for w in windows)  # a window spans the seam


def test_windowed_blend_is_exact_for_framewise_functions():
    x = torch.randn(24, 4, 8, 8)
    out = windowed(lambda xs, idx: xs * 2 + idx.view(-1, 1, 1, 1), x, circular_windows(24, 16, shift=7))
    assert torch.allclose(out, x * 2 + torch.arange(24).view(-1, 1, 1, 1), atol=1e-5)
    w = window_weights(16)
    assert w.max() <= 1 and w.min() > 0 and w[7] > w[0]


def test_loop_noise_is_unit_variance_and_seamless():
    g = torch.Generator().manual_seed(0)
    n = loop_noise(24, (4, 64, 64), g)
    assert n.shape == (24, 4, 64, 64)
    assert torch.allclose(n.std(dim=(1, 2, 3)), torch.ones(24), atol=0.03)
    flat = n.view(24, -1)
    corr = lambda i, j: float(torch.corrcoef(torch.stack([flat[i], flat[j]]))[0, 1])  # noqa: E731
    assert corr(0, 1) > corr(0, 6) > corr(0, 12) - 0.05
    assert corr(23, 0) == pytest.approx(corr(0, 1), abs=0.03)
