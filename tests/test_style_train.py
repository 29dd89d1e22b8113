"""Style training (``core/train/style.py``): a LoRA trained on a folder of references lands in the bundle (listed,
hashed) and changes the images made with it; a cancelled run resumed ends with the same weights as one that ran
through; the loss falls on a set a LoRA can learn; bad folders and settings are refused by name."""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sfumato.core.errors import BadParameter, Cancelled
from sfumato.core.train.style import StyleTrainConfig, check, train_style


def _images(folder: Path, n: int, size: tuple[int, int] = (64, 64), seed: int = 0) -> Path:
    """``n`` reddish images with a few stripes (something to learn), made here."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = np.zeros((size[1], size[0], 3), np.uint8)
        a[...] = (200, 40, 30)
        a[::8] = (240, 200, 60)
        a = np.clip(a + rng.integers(-10, 10, a.shape), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(folder / f"ref_{i}.png")
    return folder


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width × height pixels, in a few hundred bytes (a bomb's shape)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture
def bundle(sd15, tmp_path) -> Path:
    """A copy of the session's tiny bundle: training writes into it."""
    return Path(shutil.copytree(sd15, tmp_path / "tiny-style"))


def _cfg(folder: Path, bundle: Path, **kw) -> StyleTrainConfig:
    return StyleTrainConfig(**{"folder": str(folder), "name": "reds", "bundle": str(bundle), "steps": 6,
                               "checkpoint_every": 2, "lr": 1e-2, "batch": 2, **kw})


def _image(models, loras=()) -> np.ndarray:
    from sfumato.core.image import ImageRequest, generate

    req = ImageRequest(prompt="a surface in the reds style", seed=3, steps=4, width=64, height=64, fast="off",
                       loras=loras)
    return np.asarray(generate(req, models)[0].image, np.float32)


def test_the_lora_lands_in_the_bundle_and_changes_the_image(bundle, tmp_path):
    from sfumato.core.bundle import open_bundle
    from sfumato.core.bundle_add import holdings
    from sfumato.core.loading import load_models
    from sfumato.core.safetensors_check import sha256

    folder = _images(tmp_path / "refs", 5)
    seen = []
    summary = train_style(_cfg(folder, bundle), tmp_path / "work", progress=lambda *a: seen.append(a),
                          log=lambda m: None)
    lora = Path(summary["lora"])
    assert lora == bundle / "loras" / "reds.safetensors" and summary["steps"] == 6 and len(summary["losses"]) == 6
    assert [s[:2] for s in seen] == [(k, 6) for k in range(1, 7)] and all(np.isfinite(s[2]) for s in seen)
    b = open_bundle(bundle)
    assert b.manifest["files"]["loras/reds.safetensors"]["sha256"] == sha256(lora)  # hashed into the manifest
    assert "reds" in holdings(b)["loras"]  # what `sfumato bundle info` lists
    assert summary["hash"] == sha256(lora)[:12]  # the hash outputs record
    models = load_models(b, torch.device("cpu"), torch.float32)
    base, styled = _image(models), _image(models, ("reds",))
    assert np.abs(styled - base).mean() > 0.5  # the LoRA, loaded by name through core/lora.py, changes the image
    assert np.abs(_image(models) - base).max() == 0  # and turned off, it is gone


def test_the_cli_trains_refuses_an_existing_name_and_overwrites(bundle, tmp_path, capsys):
    from sfumato.cli import main

    folder = _images(tmp_path / "refs", 5)
    args = ["train", "style", str(folder), "--bundle", str(bundle), "--name", "reds", "--steps", "2", "--lr", "0.01",
            "--checkpoint-every", "1", "--work", str(tmp_path / "work")]
    assert main(args) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[out.index("{\n"):])  # the summary, as JSON after the log lines
    assert summary["lora"] == str(bundle / "loras" / "reds.safetensors") and summary["steps"] == 2
    assert main(args) == 2  # the name is taken now
    assert "name='reds'" in capsys.readouterr().err
    assert main([*args, "--overwrite", "--work", str(tmp_path / "work2")]) == 0


def test_a_cancelled_run_resumed_ends_with_the_same_weights(sd15, tmp_path):
    from safetensors.torch import load_file

    folder = _images(tmp_path / "refs", 5)
    once = Path(shutil.copytree(sd15, tmp_path / "once"))
    twice = Path(shutil.copytree(sd15, tmp_path / "twice"))
    whole = train_style(_cfg(folder, once, steps=7), tmp_path / "work_once", log=lambda m: None)

    steps = []
    with pytest.raises(Cancelled, match="before step 4 of 7"):  # after 3 steps: the checkpoint holds step 2
        train_style(_cfg(folder, twice, steps=7), tmp_path / "work_twice", progress=lambda s, *_: steps.append(s),
                    cancelled=lambda: len(steps) >= 3, log=lambda m: None)
    assert not (twice / "loras" / "reds.safetensors").exists()
    resumed = train_style(_cfg(folder, twice, steps=7), tmp_path / "work_twice", log=lambda m: None)
    assert resumed["losses"] == whole["losses"]
    a, b = load_file(whole["lora"]), load_file(resumed["lora"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    with pytest.raises(BadParameter, match="work=.*same training"):  # another run's checkpoint is not resumed
        train_style(_cfg(folder, twice, steps=7, rank=4, overwrite=True), tmp_path / "work_twice", log=lambda m: None)


def _fixed_loss(models, folder: Path, loras: tuple[str, ...]) -> float:
    """The diffusion loss on fixed draws (64 timesteps and noises) of the references, with or without the LoRA."""
    from diffusers import DDPMScheduler

    from sfumato.core import lora, text

    lora.apply(models, loras)
    g = torch.Generator().manual_seed(123)
    x = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))) for p in sorted(folder.glob("*.png"))])
    x = x.permute(0, 3, 1, 2).float() / 127.5 - 1
    sched = DDPMScheduler.from_pretrained(str(models.bundle.component_dir("scheduler")))
    with torch.no_grad():
        z0 = models.vae.encode(x).latent_dist.mean * models.vae.config.scaling_factor
        z0 = z0[torch.arange(64) % len(z0)]
        t = torch.randint(0, 1000, (64,), generator=g)
        eps = torch.randn(z0.shape, generator=g)
        tokens = text.encode(models, "a surface in the reds style").tokens.expand(64, -1, -1)
        pred = models.unet(sched.add_noise(z0, eps, t), t, encoder_hidden_states=tokens).sample
    return float(((pred - eps) ** 2).mean())


def test_the_loss_falls_on_a_learnable_set(bundle, tmp_path):
    from sfumato.core.bundle import open_bundle
    from sfumato.core.loading import load_models

    folder = _images(tmp_path / "refs", 5)
    summary = train_style(_cfg(folder, bundle, steps=150, checkpoint_every=150, batch=4, snr_gamma=None),
                          tmp_path / "work", log=lambda m: None)
    losses = np.array(summary["losses"])
    assert losses[-30:].mean() < losses[:30].mean()
    models = load_models(open_bundle(bundle), torch.device("cpu"), torch.float32)
    before, after = _fixed_loss(models, folder, ()), _fixed_loss(models, folder, ("reds",))
    assert after < 0.9 * before, (before, after)  # on draws training never saw: fitted, not lucky


# ---- bad input ---------------------------------------------------------------------------------------------------
def test_bad_folders_are_refused_by_name(bundle, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(BadParameter, match=r"folder=.*reference images.*no image files \(e.g. notes.txt\)"):
        check(_cfg(empty, bundle))
    with pytest.raises(BadParameter, match="folder=.*an existing folder"):
        check(_cfg(tmp_path / "missing", bundle))
    huge = _images(tmp_path / "huge", 5)
    _png_header_only(huge / "big.png", 9000, 9000)  # under PIL's bomb limit, over ours: refused with its size
    with pytest.raises(BadParameter, match=r"big.png.*at most 64 megapixels.*9000×9000"):
        check(_cfg(huge, bundle))
    _png_header_only(huge / "big.png", 30000, 30000)  # a decompression bomb: refused from its header too
    with pytest.raises(BadParameter, match="big.png.*at most"):
        check(_cfg(huge, bundle))
    (huge / "big.png").write_bytes(b"not an image at all")
    with pytest.raises(BadParameter, match="big.png.*readable image"):
        check(_cfg(huge, bundle))


def test_odd_folders_are_trained_with_a_note(bundle, tmp_path):
    mixed = _images(tmp_path / "mixed", 3, (96, 64))
    _images(mixed, 2, (64, 64), seed=1)  # overwrites two of them: 64×64 and 96×64 side by side
    (mixed / "ref_0.txt").write_text("  red stripes\non a wall ")
    _, cfg, data = check(_cfg(mixed, bundle))
    assert data.images.shape == (3, 64, 64, 3) and cfg.resolution == 64  # the bundle's native size
    assert data.captions == ["red stripes on a wall", "a surface in the reds style", "a surface in the reds style"]
    notes = " ".join(data.notes)
    assert "1 of 3 images are not 64×64 (96×64): each is centre-cropped" in notes and "3 reference images" in notes
    _, _, one = check(_cfg(_images(tmp_path / "one", 1), bundle, caption="{trigger} paint", trigger="zq"))
    assert "only one reference image" in " ".join(one.notes) and one.captions == ["zq paint"]


@pytest.mark.parametrize("field,value,allowed", [
    ("steps", 0, "1 to 20000"), ("rank", 999, "1 to 128"), ("resolution", 100, "a multiple of 64"),
    ("resolution", 4096, "64 to 1024"), ("crop", 128, "at most the resolution"), ("lr", 5.0, "to 0.1"), ("offset_noise", 2.0, "0 to 1"),
    ("caption", "a wall", "holding {trigger}"), ("trigger", "two words", "one word"),
    ("name", "../evil", "letters, digits")])
def test_bad_settings_are_refused_by_name(bundle, tmp_path, field, value, allowed):
    folder = _images(tmp_path / "refs", 5)
    with pytest.raises(BadParameter) as err:
        check(dataclasses.replace(_cfg(folder, bundle), **{field: value}))
    assert err.value.field == field and allowed in str(err.value), str(err.value)


def test_an_existing_name_is_refused_unless_overwrite(bundle, tmp_path):
    folder = _images(tmp_path / "refs", 5)
    (bundle / "loras").mkdir()
    (bundle / "loras" / "reds.safetensors").write_bytes(b"")
    with pytest.raises(BadParameter, match="name='reds'.*does not hold yet") as err:
        check(_cfg(folder, bundle))
    assert "--overwrite" in err.value.hint
    assert check(_cfg(folder, bundle, overwrite=True))[1].name == "reds"


def test_a_run_too_long_for_the_cpu_is_refused_with_its_estimate(bundle, tmp_path):
    folder = _images(tmp_path / "refs", 5)
    with pytest.raises(BadParameter, match=r"device='cpu'.*would take about .*(minutes|hours) \(.* s a step, "
                       r"measured\)") as err:
        train_style(_cfg(folder, bundle, steps=20_000, cpu_limit_minutes=0.001), tmp_path / "work",
                    log=lambda m: None)
    assert "--force" in err.value.hint and not (bundle / "loras").exists()


def test_the_embedded_bundle_is_accepted_its_loras_going_to_the_users_folder(bundle_root, tmp_path):
    from sfumato.core.bundle import loras_dir

    b, cfg, _ = check(_cfg(_images(tmp_path / "refs", 5), "materials"))
    assert b.name == "materials" and cfg.resolution == 256 and not loras_dir(b).is_relative_to(b.path)
