"""The embedded bundle's motion-module training: its synthetic clips and a smoke run of the command."""

from __future__ import annotations

import json

import numpy as np
import torch

from sfumato.video.train import MotionTrainConfig, camera_path, render_clip


def test_a_pan_clip_is_the_texture_moving():
    """A pan by whole pixels is an exact roll of the periodic texture, frame after frame."""
    rng = np.random.default_rng(0)
    texture = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
    maps = np.zeros((3, 2, 3))
    maps[:, :, :2] = np.eye(2)
    maps[:, 0, 2] = [0.0, 2.0, 4.0]  # two texture pixels right per frame
    frames = render_clip(texture, maps, 16)
    assert frames.shape == (3, 3, 16, 16)
    assert torch.allclose(frames[1][..., :-2], frames[0][..., 2:], atol=1e-5)
    assert torch.allclose(frames[2][..., :-4], frames[0][..., 4:], atol=1e-5)
    # a static camera gives the same frame again; a quarter turn gives the frame turned by 90°
    still = np.repeat(maps[:1], 2, axis=0)
    a, b = render_clip(texture, still, 16)
    assert torch.equal(a, b)
    turn = maps[:2].copy()
    turn[:, 0, 2] = 0.0
    turn[1, :, :2] = [[0.0, -1.0], [1.0, 0.0]]
    a, b = render_clip(texture, turn, 16)
    assert torch.allclose(torch.rot90(a, 1, (1, 2)), b, atol=1e-5) or torch.allclose(torch.rot90(a, -1, (1, 2)), b,
                                                                                   atol=1e-5)


def test_camera_paths_cover_every_motion():
    cfg = MotionTrainConfig()
    kinds = {camera_path(np.random.default_rng(s), cfg)[0] for s in range(60)}
    assert kinds == {"pan", "rotate", "zoom", "pan+rotate", "static"}
    for s in range(20):
        kind, maps = camera_path(np.random.default_rng(s), cfg)
        step = np.linalg.norm(maps[1, :, 2] - maps[0, :, 2])
        assert step <= cfg.max_pan + 1e-9 and (step > 0) == (kind in ("pan", "pan+rotate"))


def test_train_motion_quick_run_writes_a_loadable_module(tmp_path, capsys):
    from sfumato.core.bundle import resolve
    from sfumato.cli import main
    from sfumato.core.loading import load_models
    from sfumato.video.adapter import load_motion_adapter

    out = tmp_path / "materials-video"
    assert main(["train", "motion", "--quick", "--work", str(tmp_path / "work"), "--out", str(out),
                 "--threads", "1"]) == 0
    assert "validation loss" in capsys.readouterr().out
    manifest = json.loads((out / "sfumato.json").read_text())
    assert "motion_adapter" in manifest["components"] and "motion_adapter/diffusion_pytorch_model.safetensors" in \
        manifest["files"]
    assert manifest["motion_training"]["steps"] == 2 and "image_model" in manifest["motion_training"]["validation_loss"]
    bundle = resolve(str(out))
    models = load_models(bundle, torch.device("cpu"), torch.float32)
    motion = load_motion_adapter(bundle.component_dir("motion_adapter"), models.unet)
    assert motion.config.max_frames == 4
    motion.remove()
    # the log is resumable state: a second run continues from the checkpoint, not from zero
    assert (tmp_path / "work" / "motion.safetensors").is_file()


def test_embedded_bundle_ships_a_motion_module_used_by_default(tmp_path, capsys):
    """`sfumato video` on the embedded bundle runs its frame attention unless told --temporal off."""
    from sfumato.core.bundle import resolve
    from sfumato.cli import main

    bundle = resolve(None)
    assert "motion_adapter" in bundle.components
    training = bundle.manifest["motion_training"]
    assert training["validation_loss"]["temporal"] < 0.9 * training["validation_loss"]["image_model"]
    assert main(["video", "red brick wall", "-o", str(tmp_path / "v.gif"), "--frames", "4", "--resolution", "64",
                 "--steps", "2", "--seed", "1"]) == 0
    assert "temporal on" in capsys.readouterr().out
    side = json.loads((tmp_path / "v.gif.json").read_text())
    assert side["temporal"] and side["motion"] == "materials/motion_adapter" and side["window"] == 8
