"""PBR maps: ground-truth surfaces from the materials generator, and the shipped map network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sfumato.core.bundle import embedded_dir, open_bundle, verify
from sfumato.core.maps import (MapNet, MapNetConfig, baseline_maps, decode_normals, encode_normals, load_map_net,
                               normals_from_height, predict_maps)
from sfumato.core.train.maps_train import HELD_OUT, MapTrainConfig, MapTrainer
from sfumato.core.train.materials import FAMILIES, sample
from sfumato.core.train.surfaces import sample_surface, surface_normals


def _seam_ratio(maps: list[np.ndarray]) -> tuple[float, float]:
    """Wrap-around difference over the mean difference of adjacent interior columns / rows (0 when flat)."""
    out = []
    for axis in (1, 0):
        wrap = sum(np.abs(np.take(a, -1, axis) - np.take(a, 0, axis)).mean() for a in maps)
        inner = sum(np.abs(np.diff(a, axis=axis)).mean() for a in maps)
        out.append(0.0 if wrap == inner == 0 else wrap / inner)
    return out[0], out[1]


@pytest.fixture(scope="module")
def net() -> MapNet:
    torch.set_num_threads(1)
    return load_map_net()


def test_colour_is_the_sample_bit_for_bit():
    cases = [(s, 64, f, None) for s, f in enumerate(sorted(FAMILIES))]
    cases += [(100 + s, 96, None, None) for s in range(6)] + [(7, 128, "running_bond_brick", "white")]
    for seed, size, family, colour in cases:
        img, labels = sample(seed, size, family, colour)
        rgb, height, rough, labels2 = sample_surface(seed, size, family, colour)
        assert np.array_equal(img, rgb) and labels == labels2, (seed, family)
        assert height.shape == rough.shape == (size, size) and height.dtype == rough.dtype == np.float32
        assert 0 <= height.min() and height.max() <= 1 and 0 <= rough.min() and rough.max() <= 1


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_height_and_roughness_tile(name):
    surfaces = [sample_surface(s, 64, name)[1:3] for s in range(6)]
    for maps in zip(*surfaces):
        cols, rows = _seam_ratio([m.astype(np.float32) for m in maps])
        assert cols <= 1.5 and rows <= 1.5, (name, cols, rows)


def test_surfaces_say_what_the_families_are():
    """Mortar below brick faces; polished marble smoother than brick; grout rougher than glazed tile."""
    rgb, h, r, _ = sample_surface(3, 128, "running_bond_brick")
    assert np.percentile(h, 5) < 0.3 < 0.7 < np.median(h)
    marble = sample_surface(3, 128, "marble")[2].mean()
    assert marble < 0.2 < 0.7 < r.mean()
    _, h, r, _ = sample_surface(4, 128, "square_tiles")
    assert r[h < 0.4].mean() > 0.6 > 0.3 > r[h > 0.8].mean()


def test_normal_convention_is_opengl():
    """A height rising to the right tilts the normal left (-X); rising down the image tilts it up (+Y)."""
    ramp = np.tile(np.sin(np.linspace(0, 2 * np.pi, 32, endpoint=False)), (32, 1)).astype(np.float32)
    n = normals_from_height(ramp, 4.0)
    assert n[5, 1, 0] < 0 and abs(n[5, 1, 1]) < 1e-6
    n = normals_from_height(ramp.T.copy(), 4.0)
    assert n[1, 5, 1] > 0 and abs(n[1, 5, 0]) < 1e-6
    assert np.allclose(np.linalg.norm(n, axis=-1), 1, atol=1e-5)
    assert np.abs(decode_normals(encode_normals(n)) - n).max() < 0.01


def test_network_ships_in_the_embedded_bundle(net):
    bundle = open_bundle(embedded_dir() / "materials")
    assert bundle.components["maps"] == "maps"
    listed = bundle.manifest["files"]["maps/model.safetensors"]
    assert listed["bytes"] < 4_000_000
    assert any(line.startswith("maps/model.safetensors: sha256 ok") for line in verify(bundle))
    config = json.loads((bundle.path / "maps" / "config.json").read_text())
    assert config["normal_convention"].startswith("OpenGL")
    assert 2e5 < sum(p.numel() for p in net.parameters()) < 2e6
    assert load_map_net() is net and load_map_net(bundle) is net  # cached


def test_maps_tile_and_have_the_right_shapes(net):
    rgb = sample_surface(HELD_OUT + 5, 64, "hex_tiles")[0]
    out = predict_maps(rgb, net)
    assert out["height"].shape == out["roughness"].shape == (64, 64)
    assert out["normal"].shape == (64, 64, 3) and out["normal"].dtype == np.uint8
    for key in ("height", "roughness"):
        assert out[key].dtype == np.float32 and 0 <= out[key].min() and out[key].max() <= 1
    n = out["normal"].astype(np.float32) / 255 * 2 - 1
    assert np.abs(np.linalg.norm(n, axis=-1) - 1).max() < 0.02 and n[..., 2].min() > 0
    # circular all the way through: shifting the input by a multiple of 8 shifts the maps exactly
    shifted = predict_maps(np.roll(rgb, (16, 40), (0, 1)), net)
    assert np.abs(np.roll(out["height"], (16, 40), (0, 1)) - shifted["height"]).max() < 1e-4
    cols, rows = _seam_ratio([out["height"], out["roughness"], n[..., 0], n[..., 1]])
    assert cols <= 1.5 and rows <= 1.5


def test_beats_the_baseline_on_held_out_tiles(net):
    ours, base = [], []
    for k, family in enumerate(sorted(FAMILIES)):
        rgb, h, _, _ = sample_surface(HELD_OUT + 500 + k, 64, family)
        gt = surface_normals(h)
        for maps, errs in ((predict_maps(rgb, net), ours), (baseline_maps(rgb), base)):
            cos = (decode_normals(maps["normal"]) * gt).sum(-1)
            errs.append(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())
    assert np.mean(ours) < 0.8 * np.mean(base), (np.mean(ours), np.mean(base))


def test_any_image_any_size(net):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)  # not a multiple of 8: padded by wrapping
    gradient = np.broadcast_to(np.linspace(0, 255, 48, dtype=np.uint8)[None, :, None], (32, 48, 3)).copy()
    for img in (noise, gradient):
        for maps in (predict_maps(img, net), baseline_maps(img)):
            assert maps["height"].shape == maps["roughness"].shape == img.shape[:2]
            assert maps["normal"].shape == img.shape and all(np.isfinite(m).all() for m in maps.values())
    with pytest.raises(ValueError, match="uint8"):
        predict_maps(noise.astype(np.float32), net)


def test_training_runs_and_resumes(tmp_path):
    cfg = MapTrainConfig(steps=2, batch=2, crop=32, validation_tiles=1, checkpoint_every=1,
                         net=MapNetConfig(channels=(8, 8, 16, 16)))
    trainer = MapTrainer(cfg, tmp_path, log=lambda m: None)
    assert trainer.run()["step"] == 2 and (tmp_path / "maps_checkpoint.pt").is_file()
    again = MapTrainer(cfg, tmp_path, log=lambda m: None)
    assert again.step == 2 and again.run()["step"] == 2
