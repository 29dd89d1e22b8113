"""The turntable's consistency metric against renders whose true consistency is known."""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from sfumato.threed.mesh import Mesh
from sfumato.threed.raster import rasterize
from sfumato.video.consistency import orbit_flow, seam_ratio, warping_errors
from sfumato.video.turntable import orbit_cameras


def _house() -> Mesh:
    body = trimesh.creation.box((2.0, 1.2, 1.4))
    roof = trimesh.creation.cone(0.9, 0.8, sections=4)
    roof.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, [1, 0, 0]))
    roof.apply_translation([0, 0.6, 0])
    tm = trimesh.util.concatenate([body, roof])
    return Mesh(torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces), source="house").normalised()


def _solid_render(mesh: Mesh, cams, size: int, phase: torch.Tensor | None = None) -> torch.Tensor:
    """Frames of a surface whose colour is a smooth function of the 3-D point: exactly consistent."""
    frags = rasterize(cams, mesh.vertices, mesh.faces, size)
    p = frags.interpolate(mesh.vertices, mesh.faces)
    shift = phase.view(-1, 1, 1, 1) if phase is not None else 0.0
    rgb = 0.5 + 0.4 * torch.sin(p * torch.tensor([5.0, 7.0, 6.0]) + shift)
    rgb = torch.where(frags.mask[..., None], rgb, torch.full((), 0.5))
    return (rgb * 255).permute(0, 3, 1, 2).numpy().transpose(0, 2, 3, 1)


def test_consistent_render_has_small_error_and_no_seam():
    mesh = _house()
    cams = orbit_cameras(mesh, 12)
    flow = orbit_flow(mesh, cams, 96)
    assert 0.1 < flow.coverage < 0.6  # the mesh fills part of the frame; edges and occlusions drop out
    errors = warping_errors(list(_solid_render(mesh, cams, 96)), flow)
    assert errors.max() < 3.0  # only the resampling error of a smooth pattern (0..255 units)
    assert 0.5 < seam_ratio(errors) < 2.0


def test_flicker_and_a_broken_loop_are_measured():
    mesh = _house()
    cams = orbit_cameras(mesh, 12)
    flow = orbit_flow(mesh, cams, 96)
    good = warping_errors(list(_solid_render(mesh, cams, 96)), flow)
    # the surface pattern jumps every frame: what per-frame generation does
    jumpy = warping_errors(list(_solid_render(mesh, cams, 96, torch.randn(12, generator=torch.Generator().manual_seed(0)) * 2)), flow)
    assert np.median(jumpy) > 10 * np.median(good)
    # the pattern drifts steadily but jumps back at the end: a loop with a seam
    drift = torch.linspace(0, 3.0, 12)
    seam = warping_errors(list(_solid_render(mesh, cams, 96, drift)), flow)
    assert seam_ratio(seam) > 3.0


def test_detail_falls_when_frames_are_blurred():
    """The detail figure beside the warping error: blur lowers both, so a lower error bought by blur shows."""
    from PIL import Image, ImageFilter

    from sfumato.video.consistency import detail

    mesh = _house()
    cams = orbit_cameras(mesh, 6)
    flow = orbit_flow(mesh, cams, 96)
    grain = np.random.default_rng(0).normal(0, 20, (6, 96, 96, 3))  # fine texture on the smooth pattern
    sharp = [Image.fromarray(np.clip(f + g, 0, 255).astype(np.uint8)) for f, g in zip(_solid_render(mesh, cams, 96), grain)]
    blurred = [f.filter(ImageFilter.GaussianBlur(1)) for f in sharp]
    assert detail(blurred, flow) < 0.5 * detail(sharp, flow)
