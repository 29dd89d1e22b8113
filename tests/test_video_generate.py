"""Looping video through the shared denoiser: windows on a circle, temporal U-Net, turntable depth, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from sfumato.core.errors import BadParameter
from sfumato.threed.mesh import Mesh
from sfumato.video.generate import generate_video, write_video
from sfumato.video.motion import MotionConfig, inflate


def _box() -> Mesh:
    tm = trimesh.creation.box((2.0, 1.0, 1.0))
    return Mesh(torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces), source="box.glb")


def test_fresh_motion_module_equals_per_frame_video(sd15_models):
    """Zero-initialised frame attention adds nothing: temporal and per-frame runs give the same frames."""
    kw = dict(frames=6, resolution=64, steps=2, seed=3, window=4)
    off, meta_off = generate_video(sd15_models, "a red brick wall", **kw)
    motion = inflate(sd15_models.unet, MotionConfig.for_unet(sd15_models.unet.config, num_attention_heads=2,
                                                             max_frames=8))
    try:
        on, meta_on = generate_video(sd15_models, "a red brick wall", motion=motion, **kw)
        with torch.no_grad():  # a trained (here: random) module changes the frames
            for p in motion.motion.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        moved, _ = generate_video(sd15_models, "a red brick wall", motion=motion, **kw)
    finally:
        motion.remove()
    diff = max(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() for a, b in zip(on, off))
    assert diff <= 1
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(moved, off))
    assert meta_on["temporal"] and not meta_off["temporal"] and len(on) == 6


def test_turntable_frames_and_files(sd15_models, tmp_path):
    frames, meta = generate_video(sd15_models, "timber house", frames=5, mesh=_box(), resolution=64, steps=2, seed=1)
    assert len(frames) == 5 and meta["mode"] == "turntable" and meta["mesh"] == "box.glb"
    gif, side = write_video(frames, tmp_path / "t.gif", 8, meta)
    assert gif.stat().st_size > 0 and '"seed": 1' in side.read_text()
    pytest.importorskip("imageio_ffmpeg")
    mp4, _ = write_video(frames, tmp_path / "t.mp4", 8, meta)
    import imageio_ffmpeg

    assert imageio_ffmpeg.count_frames_and_secs(str(mp4))[0] == 5


def test_video_bad_input(sd15_models, tmp_path):
    from sfumato.core.bundle import resolve
    from sfumato.core.loading import load_models

    with pytest.raises(BadParameter, match="frames"):
        generate_video(sd15_models, "x", frames=0)
    with pytest.raises(BadParameter, match="multiple of 8"):
        generate_video(sd15_models, "x", frames=4, resolution=100)
    embedded = load_models(resolve(None), torch.device("cpu"), torch.float32)
    with pytest.raises(BadParameter, match="ControlNet"):
        generate_video(embedded, "x", frames=4, mesh=_box())
    with pytest.raises(BadParameter, match=r"\.mp4 or \.gif"):
        write_video([], tmp_path / "x.avi", 8, {})


def test_cli_video_and_turntable(sd15, tmp_path, capsys):
    from sfumato.core.cli import main

    mesh = tmp_path / "box.obj"
    trimesh.creation.box((2.0, 1.0, 1.0)).export(mesh)
    assert main(["turntable", str(mesh), "timber house", "-o", str(tmp_path / "t.gif"), "--bundle", str(sd15),
                 "--frames", "4", "--steps", "2", "--resolution", "64", "--seed", "2"]) == 0
    assert "turntable · temporal off" in capsys.readouterr().out and (tmp_path / "t.gif.json").is_file()
    assert main(["video", "brick", "-o", str(tmp_path / "v.gif"), "--bundle", str(sd15), "--frames", "3",
                 "--steps", "2", "--resolution", "64", "--temporal", "on"]) == 2
    assert "no motion module" in capsys.readouterr().err
