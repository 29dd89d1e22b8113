"""Looping video through the shared denoiser: windows on a circle, temporal U-Net, turntable depth, files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from sfumato.core import schema
from sfumato.core.errors import BadParameter
from sfumato.core.checks import checked, raise_first
from sfumato.core.schema import VideoRequest
from sfumato.kinds import run_job
from sfumato.threed.mesh import Mesh
from sfumato.video.generate import generate_video, write_video
from sfumato.video.motion import MotionConfig, inflate


def _box() -> Mesh:
    tm = trimesh.creation.box((2.0, 1.0, 1.0))
    return Mesh(torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces), source="box.glb")


def _video(models, prompt: str, *, mesh: Mesh | None = None, motion=None, **fields):
    """``generate_video`` on a request checked by the jobs' door, as a job would run it."""
    return generate_video(models, checked(VideoRequest(prompt=prompt, **fields), models.bundle), mesh=mesh,
                          motion=motion)


def test_fresh_motion_module_equals_per_frame_video(sd15_models):
    """Zero-initialised frame attention adds nothing: temporal and per-frame runs give the same frames."""
    kw = dict(frames=6, resolution=64, steps=2, seed=3, window=4)
    off, meta_off = _video(sd15_models, "a red brick wall", **kw)
    motion = inflate(sd15_models.unet, MotionConfig.for_unet(sd15_models.unet.config, num_attention_heads=2,
                                                             max_frames=8))
    try:
        on, meta_on = _video(sd15_models, "a red brick wall", motion=motion, **kw)
        with torch.no_grad():  # a trained (here: random) module changes the frames
            for p in motion.motion.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        moved, _ = _video(sd15_models, "a red brick wall", motion=motion, **kw)
    finally:
        motion.remove()
    diff = max(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() for a, b in zip(on, off))
    assert diff <= 1
    assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(moved, off))
    assert meta_on["temporal"] and not meta_off["temporal"] and len(on) == 6


def test_turntable_frames_and_files(sd15_models, tmp_path):
    frames, meta = _video(sd15_models, "timber house", frames=5, mesh=_box(), resolution=64, steps=2, seed=1)
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
        _video(sd15_models, "x", frames=0)
    with pytest.raises(BadParameter, match="multiple of 8"):
        _video(sd15_models, "x", frames=4, resolution=100)
    embedded = load_models(resolve(None), torch.device("cpu"), torch.float32)
    with pytest.raises(BadParameter, match="no depth ControlNet"):
        _video(embedded, "x", frames=4, mesh=_box(), conditioning="depth")
    with pytest.raises(BadParameter, match="sync"):
        _video(embedded, "x", frames=4, mesh=_box(), sync=2.0)
    with pytest.raises(BadParameter, match=r"\.mp4 or \.gif"):
        write_video([], tmp_path / "x.avi", 8, {})
    # an image-to-image turntable whose strength leaves no step is refused by name, not a tensor error
    with pytest.raises(BadParameter, match=r"strength=0\.03 .*with steps=16") as err:
        _video(embedded, "x", frames=2, mesh=_box(), resolution=64, conditioning="img2img", strength=0.03)
    assert err.value.field == "strength"
    with pytest.raises(BadParameter, match="strength.*with steps=20"):  # the request knows before any model loads
        raise_first(schema.problems(VideoRequest(prompt="x", mesh="m.glb", steps=20, strength=0.03,
                                                 conditioning="img2img")))
    # unused with depth; with auto it depends on the bundle, and generate_video refuses it as above
    raise_first(schema.problems(VideoRequest(prompt="x", mesh="m.glb", steps=20, strength=0.03)))


def test_cli_video_and_turntable(sd15, tmp_path, capsys):
    from sfumato.cli import main

    mesh = tmp_path / "box.obj"
    trimesh.creation.box((2.0, 1.0, 1.0)).export(mesh)
    assert main(["turntable", str(mesh), "timber house", "-o", str(tmp_path / "t.gif"), "--bundle", str(sd15),
                 "--frames", "4", "--steps", "2", "--resolution", "64", "--seed", "2"]) == 0
    assert "turntable · temporal off" in capsys.readouterr().out and (tmp_path / "t.gif.json").is_file()
    assert main(["video", "brick", "-o", str(tmp_path / "v.gif"), "--bundle", str(sd15), "--frames", "3",
                 "--steps", "2", "--resolution", "64", "--temporal", "on"]) == 2
    assert "no motion module" in capsys.readouterr().err


def test_img2img_turntable_keeps_the_background_and_paints_the_mesh(sd15_models):
    """Without a depth ControlNet a turntable starts each frame from its shading: the background stays the
    shading's exact grey and only the mesh's pixels are generated."""
    from sfumato.video.turntable import orbit_cameras, orbit_views

    frames, meta = _video(sd15_models, "timber house", frames=4, mesh=_box(), resolution=64, steps=3,
                                  seed=2, conditioning="img2img", strength=0.7)
    assert meta["conditioning"] == "img2img-shading" and meta["strength"] == 0.7 and meta["anchored_noise"]
    norm = _box().normalised()
    depth, shading = orbit_views(norm, orbit_cameras(norm, 4), 64)
    inside = depth[:, 0] > 0
    x = np.stack([np.asarray(f, np.int16) for f in frames])  # (N, H, W, 3)
    grey = np.round(shading[:, 0].numpy() * 255).astype(np.int16)
    assert np.abs(x[~inside.numpy()] - grey[~inside.numpy()][:, None]).max() <= 1
    assert np.abs(x[inside.numpy()] - grey[inside.numpy()][:, None]).mean() > 3  # the mesh is painted


def test_surface_noise_follows_the_surface():
    """The same surface cell gets the same noise in every frame; cells are about one pixel wide."""
    from sfumato.video.turntable import orbit_cameras, surface_cells, surface_groups, surface_noise, surface_sync

    mesh = _box().normalised()
    cams = orbit_cameras(mesh, 8)
    cells = surface_cells(mesh, cams, 32)
    noise = surface_noise(cells, 4, torch.Generator().manual_seed(0))
    assert bool((noise[(cells < 0)[:, None].expand_as(noise)] == 0).all())
    on = cells >= 0
    # every pixel of one frame has its own cell mostly (about a pixel wide), and neighbouring frames share many
    per_frame = [len(torch.unique(cells[k][on[k]])) / int(on[k].sum()) for k in range(8)]
    assert min(per_frame) > 0.5
    shared = np.intersect1d(cells[0][on[0]].numpy(), cells[1][on[1]].numpy())
    assert len(shared) > 0.3 * len(np.unique(cells[0][on[0]].numpy()))
    key = int(shared[0])
    a, b = noise[0].permute(1, 2, 0)[cells[0] == key][0], noise[1].permute(1, 2, 0)[cells[1] == key][0]
    assert torch.equal(a, b)
    values = noise.permute(0, 2, 3, 1)[on]
    assert abs(float(values.mean())) < 0.1 and 0.8 < float(values.std()) < 1.2
    # sync: amount 1 gives every pixel of a cell the cell's mean, amount 0 changes nothing
    x = torch.randn(8, 4, 32, 32)
    groups = surface_groups(cells)
    assert torch.equal(surface_sync(x, groups, 0.0), x)
    y = surface_sync(x, groups, 1.0)
    ya, yb = y[0].permute(1, 2, 0)[cells[0] == key], y[1].permute(1, 2, 0)[cells[1] == key]
    assert torch.allclose(ya[0], yb[0]) and torch.equal(y[(cells < 0)[:, None].expand_as(y)], x[(cells < 0)[:, None].expand_as(x)])


def test_video_and_turntable_jobs(sd15, tmp_path):
    """Worker jobs: files, provenance, progress, cancel, clear errors for bad fields."""
    import json
    import threading

    from sfumato.core.errors import Cancelled
    from sfumato.core.jobs import JobContext
    from sfumato.core.loading import ModelCache

    def ctx(events, cancel_at=None):
        cancel = threading.Event()

        def emit(event, **fields):
            events.append((event, fields))
            if cancel_at is not None and fields.get("stage") == "video" and fields["step"] >= cancel_at:
                cancel.set()

        return JobContext("v", ModelCache(), "cpu", "fp32", cancel, emit, preview_every=0)

    mesh = tmp_path / "box.obj"
    trimesh.creation.box((2.0, 1.0, 1.0)).export(mesh)
    events: list = []
    params = {"prompt": "timber house", "mesh": str(mesh), "frames": 4, "resolution": 64, "steps": 2, "seed": 4,
              "bundle": str(sd15), "fps": 6}
    result = run_job("turntable", params, tmp_path / "t.gif", ctx(events))
    assert Path(result["video"]).stat().st_size > 0 and result["frames"] == 4
    side = json.loads(Path(result["sidecar"]).read_text())
    assert side["seed"] == 4 and side["fps"] == 6 and side["mode"] == "turntable" and side["settings"]["frames"] == 4
    assert [f["step"] for e, f in events if f.get("stage") == "video"] == [1, 2]
    # text-to-video through the other kind
    result = run_job("video", {"prompt": "brick", "frames": 3, "resolution": 64, "steps": 1, "bundle": str(sd15),
                                 "beta_schedule": "linear"}, tmp_path / "v.gif", ctx([]))
    assert result["metadata"]["mode"] == "text-to-video" and result["metadata"]["beta_schedule"] == "linear"
    # cancel between steps leaves no video
    with pytest.raises(Cancelled):
        run_job("turntable", {**params, "steps": 4}, tmp_path / "c.gif", ctx([], cancel_at=1))
    assert not (tmp_path / "c.gif").exists()
    # bad input: named fields, before any model loads
    for bad, field in (({"frames": 0}, "frames"), ({"frames": 100000}, "frames"), ({"resolution": 100}, "resolution"),
                       ({"temporal": "maybe"}, "temporal"), ({"beta_schedule": "cubic"}, "beta_schedule"), ({"colour": 1}, "colour")):
        with pytest.raises(BadParameter, match=field):
            run_job("turntable", {**params, **bad}, tmp_path / "b.gif", ctx([]))
    with pytest.raises(BadParameter, match="mesh"):
        run_job("turntable", {"prompt": "x"}, tmp_path / "b.gif", ctx([]))
    with pytest.raises(BadParameter, match=r"\.mp4 or \.gif"):
        run_job("video", {"prompt": "x"}, tmp_path / "b.avi", ctx([]))
    empty = tmp_path / "empty.obj"
    empty.write_text("# nothing\n")
    with pytest.raises(BadParameter, match="mesh"):
        run_job("turntable", {**params, "mesh": str(empty)}, tmp_path / "b.gif", ctx([]))
    with pytest.raises(BadParameter, match="no motion module"):
        run_job("video", {"prompt": "x", "temporal": "on", "bundle": str(sd15)}, tmp_path / "b.gif", ctx([]))


def test_motion_adapter_for_another_unet_is_refused(sd15_models, tmp_path):
    from sfumato.video.adapter import load_motion_adapter, save_motion_adapter
    from sfumato.video.motion import MotionConfig, MotionStack

    other = {**sd15_models.unet.config, "block_out_channels": (64, 128)}  # the test U-Net has (32, 64)
    stack = MotionStack(MotionConfig.for_unet(other, num_attention_heads=2, max_frames=8))
    folder = save_motion_adapter(stack, tmp_path / "xl_motion")
    with pytest.raises(BadParameter, match="another U-Net|motion_adapter"):
        load_motion_adapter(folder, sd15_models.unet)


def test_video_takes_the_cpu_fast_path(sd15_models, monkeypatch):
    """Video frames go through the same CPU fast path as images (a bfloat16 U-Net, frame attention included)
    and stay within its rounding of the float32 frames; the provenance says which precision ran."""
    from sfumato.core import fast
    monkeypatch.setattr(fast, "_cpu_bf16", {"helps": True, "speedup": 3.0})
    monkeypatch.setattr(fast, "MIN_BF16_PARAMS", 0)  # the tiny test U-Net stands in for a real one
    motion = inflate(sd15_models.unet, MotionConfig.for_unet(sd15_models.unet.config, num_attention_heads=2,
                                                             max_frames=8))
    seen = []
    handle = sd15_models.unet.conv_in.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    try:
        torch.manual_seed(0)  # the same random module every run
        with torch.no_grad():
            for p in motion.motion.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        kw = dict(frames=4, resolution=64, steps=3, seed=5, window=4, motion=motion)
        plain, meta_plain = _video(sd15_models, "a red brick wall", fast="off", **kw)
        assert set(seen) == {torch.float32}
        seen.clear()
        quick, meta_quick = _video(sd15_models, "a red brick wall", **kw)
        assert set(seen) == {torch.bfloat16}
    finally:
        handle.remove()
        motion.remove()
    diffs = [np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)) for a, b in zip(quick, plain)]
    assert max(d.mean() for d in diffs) < 1.0 and max(d.max() for d in diffs) <= 8
    assert meta_quick["unet_dtype"] == "bfloat16 (autocast)" and meta_quick["fast"] == "auto"
    assert "unet_dtype" not in meta_plain and meta_plain["fast"] == "off"
    with pytest.raises(BadParameter) as exc:
        raise_first(schema.problems(VideoRequest(prompt="x", fast="turbo")))
    assert exc.value.field == "fast"


def test_a_pickled_motion_module_is_refused_with_a_hint_that_works(sd15_models, tmp_path):
    """Jobs take no --allow-pickle, so the refusal does not tell the user to pass it."""
    from sfumato.core.errors import PickleRefused
    from sfumato.video.adapter import load_motion_adapter

    path = tmp_path / "mm_sd_v15_v2.ckpt"
    path.write_bytes(b"\x80\x02}q\x00.")  # a pickle
    with pytest.raises(PickleRefused) as err:
        load_motion_adapter(path, sd15_models.unet)
    assert "--allow-pickle" not in str(err.value) and ".safetensors" in str(err.value)
