"""Upscaling for boards (issue 19): tiled image-to-image with smooth blending, provenance kept and extended, progress
per tile, cancel, bad input named before any model loads; the CLI; the add-on's operator and API in real Blender."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sfumato.core import schema
from sfumato.core.errors import BadParameter, Cancelled
from sfumato.core.jobs import JobContext
from sfumato.core.loading import ModelCache
from sfumato.core.provenance import read_png_metadata, save_png
from sfumato.core.upscale import NEUTRAL_PROMPT, axis_weights
from sfumato.kinds import run_job

TINY = dict(bundle="tiny-sd15", tile=64, overlap=16, steps=4, strength=0.5, seed=7)  # 64² x2: 3 x 3 tiles


def _ctx(events: list, cancel_after: int | None = None) -> JobContext:
    cancel = threading.Event()

    def emit(event, **fields):
        events.append((event, fields))
        if cancel_after is not None and sum(1 for e, f in events if f.get("stage") == "upscaling") >= cancel_after:
            cancel.set()

    return JobContext("t", ModelCache(), "cpu", "fp32", cancel, emit, preview_every=0)


def _picture(path: Path, size=(64, 64), meta: dict | None = None) -> Path:
    """A smooth colour picture with some edges; with ``meta``, saved with that provenance."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    a = np.stack([0.5 + 0.4 * np.sin(9 * x), 0.4 + 0.3 * np.cos(7 * y), (x + y) / 2 * ((x * 8).astype(int) % 2)], -1)
    image = Image.fromarray((a * 255).clip(0, 255).astype(np.uint8))
    if meta is not None:
        return save_png(image, path, meta)
    image.save(path)
    return path


def _no_models(monkeypatch):
    monkeypatch.setattr(ModelCache, "get", lambda *a, **k: pytest.fail("a model loaded"))


# ---- the blending weights ------------------------------------------------------------------------------------
@pytest.mark.parametrize("length,tile,overlap", [(1024, 512, 64), (1000, 512, 64), (128, 64, 16), (130, 64, 8),
                                                 (64, 512, 64), (2048, 256, 0)])
def test_tile_weights_cover_the_axis_sum_to_one_and_are_smooth(length, tile, overlap):
    tiles = axis_weights(length, tile, overlap)
    total = np.zeros(length)
    for start, w in tiles:
        assert len(w) % 8 == 0 and 0 <= start and start + len(w) <= length
        assert (w >= 0).all() and (w <= 1).all() and w.max() > 0.99
        total[start:start + len(w)] += w
    assert np.allclose(total, 1)  # a partition of unity: blending never darkens or brightens
    for (a, wa), (b, _) in zip(tiles, tiles[1:]):
        assert a + len(wa) - b >= overlap  # neighbours share at least the overlap
        m = min(a + len(wa) - b, len(wa) - (a + len(wa) - b))
        assert m == 0 or np.abs(np.diff(wa)).max() <= np.pi / (2 * m) + 1e-9  # a ramp, no step: at most π/2m per pixel


def test_blended_2d_weights_sum_to_one_everywhere():
    xs, ys = axis_weights(200, 64, 16), axis_weights(136, 64, 16)
    total = np.zeros((136, 200))
    for y0, wy in ys:
        for x0, wx in xs:
            total[y0:y0 + len(wy), x0:x0 + len(wx)] += np.outer(wy, wx)
    assert np.allclose(total, 1)


# ---- the job ---------------------------------------------------------------------------------------------
def test_upscale_keeps_and_extends_provenance_with_progress_per_tile(sd15, tmp_path):
    source = _picture(tmp_path / "in.png", meta={"prompt": "red brick wall", "negative": "blurry", "seed": 3,
                                                 "bundle": "tiny-sd15", "width": 64, "height": 64, "steps": 2})
    events: list = []
    result = run_job("upscale", {"image": str(source), "scale": 2, **TINY}, tmp_path / "out.png", _ctx(events))
    out = Path(result["files"][0])
    assert Image.open(out).size == (128, 128)
    meta = read_png_metadata(out)
    assert {k: meta[k] for k in ("prompt", "seed", "width", "negative")} == {
        "prompt": "red brick wall", "seed": 3, "width": 64, "negative": "blurry"}  # the input's, kept
    (up,) = meta["upscale"]
    assert {k: up[k] for k in ("scale", "tile", "overlap", "strength", "seed", "source", "width", "height", "tiles",
                               "prompt", "first_pass")} == {
        "scale": 2, "tile": 64, "overlap": 16, "strength": 0.5, "seed": 7, "source": "in.png", "width": 128,
        "height": 128, "tiles": 9, "prompt": "red brick wall", "first_pass": "bicubic"}
    steps = [f for e, f in events if e == "progress" and f["stage"] == "upscaling"]
    assert {f["tile"] for f in steps} == set(range(9)) and all(f["tiles"] == 9 for f in steps)
    assert steps[-1]["step"] == steps[-1]["total"] == 2  # int(4 steps x strength 0.5)
    bicubic = np.asarray(Image.open(source).convert("RGB").resize((128, 128), Image.BICUBIC), np.float32)
    assert np.abs(np.asarray(Image.open(out), np.float32) - bicubic).mean() > 1  # the tiles changed the resize
    # upscaling the result again appends a second record
    again = run_job("upscale", {"image": str(out), "scale": 2, **TINY, "seed": 8}, tmp_path / "out4.png",
                    _ctx([]))
    meta2 = read_png_metadata(Path(again["files"][0]))
    assert [u["seed"] for u in meta2["upscale"]] == [7, 8] and meta2["prompt"] == "red brick wall"


def _psnr_back(out: Path, source: Path) -> float:
    """PSNR (dB) of the result shrunk to the input's size (box) against the input."""
    a = np.asarray(Image.open(source).convert("RGB"), np.float64)
    b = np.asarray(Image.open(out).convert("RGB"), np.float64)
    s = b.shape[0] // a.shape[0]
    small = b.reshape(a.shape[0], s, a.shape[1], s, 3).mean(axis=(1, 3))
    return 10 * np.log10(255 ** 2 / ((small - a) ** 2).mean())


def test_back_projection_keeps_the_input_whatever_the_tiles_drew(sd15, tmp_path):
    source = _picture(tmp_path / "in.png")
    kept = run_job("upscale", {"image": str(source), **TINY}, tmp_path / "kept.png", _ctx([]))
    raw = run_job("upscale", {"image": str(source), **TINY, "fidelity": 0.0}, tmp_path / "raw.png", _ctx([]))
    # the tiny bundle is untrained, so its tiles are noise; back-projection still gives the input back
    assert _psnr_back(Path(kept["files"][0]), source) > 30 > 20 > _psnr_back(Path(raw["files"][0]), source)
    assert read_png_metadata(Path(kept["files"][0]))["upscale"][0]["fidelity"] == 1.0


def test_a_file_without_provenance_starts_a_new_record(sd15, tmp_path):
    source = _picture(tmp_path / "plain.png")
    result = run_job("upscale", {"image": str(source), "scale": 2, **TINY}, tmp_path / "out.png", _ctx([]))
    meta = read_png_metadata(Path(result["files"][0]))
    assert meta["mode"] == "upscale" and meta["prompt"] == NEUTRAL_PROMPT and meta["seed"] == 7
    assert (meta["width"], meta["height"]) == (128, 128) and meta["upscale"][0]["source"] == "plain.png"
    assert read_png_metadata(source) == {}  # the input is untouched


def test_cancel_mid_run_leaves_no_output(sd15, tmp_path):
    source = _picture(tmp_path / "in.png")
    events: list = []
    with pytest.raises(Cancelled):
        run_job("upscale", {"image": str(source), "scale": 2, **TINY}, tmp_path / "out.png", _ctx(events, 5))
    tiles = {f["tile"] for e, f in events if f.get("stage") == "upscaling"}
    assert tiles and max(tiles) < 8  # stopped inside the run, not at its end
    assert not list(tmp_path.glob("out*")) and not list(tmp_path.glob(".out*"))


def test_scale_3_is_refused_with_what_is_allowed():
    req, _ = schema.parse(schema.UpscaleRequest, {"image": "x.png", "scale": 3})
    (problem,) = schema.field_problems(req)
    assert problem.field == "scale" and "2 or 4" in str(problem)
    req, _ = schema.parse(schema.UpscaleRequest, {"image": "x.png", "tile": 128, "overlap": 100})
    assert [p.field for p in schema.problems(req)] == ["overlap"]


def test_a_missing_image_says_what_is_there_instead(tmp_path):
    req, _ = schema.parse(schema.UpscaleRequest, {"image": str(tmp_path / "gone.png")})
    (problem,) = schema.field_problems(req, files=True)
    assert problem.field == "image" and "an existing file" in str(problem) and "nothing is there" in str(problem)
    req, _ = schema.parse(schema.UpscaleRequest, {"image": str(tmp_path)})
    (problem,) = schema.field_problems(req, files=True)
    assert problem.field == "image" and "a folder is there" in str(problem)


def test_bad_input_is_refused_before_any_model_loads(sd15, tmp_path, monkeypatch):
    _no_models(monkeypatch)
    wide = _picture(tmp_path / "wide.png", size=(4100, 40))
    with pytest.raises(BadParameter) as exc:  # 4100 x 4 = 16400 > 16384
        run_job("upscale", {"image": str(wide), "scale": 4, "bundle": "tiny-sd15"}, tmp_path / "o.png", _ctx([]))
    assert exc.value.field == "scale" and "16384 pixels a side" in str(exc.value) and "16400x160" in str(exc.value)
    small = _picture(tmp_path / "small.png", size=(64, 64))
    with pytest.raises(BadParameter) as exc:  # the embedded bundle's native size is 256
        run_job("upscale", {"image": str(small), "tile": 128, "overlap": 16}, tmp_path / "o.png", _ctx([]))
    assert exc.value.field == "tile" and "native size, 256" in str(exc.value)
    tiny = _picture(tmp_path / "tiny.png", size=(16, 16))
    with pytest.raises(BadParameter, match="at least 32 pixels"):
        run_job("upscale", {"image": str(tiny), "bundle": "tiny-sd15"}, tmp_path / "o.png", _ctx([]))
    (tmp_path / "sr.safetensors").write_bytes(b"not a network")
    import importlib.util

    sr = {"image": str(small), "bundle": "tiny-sd15", "sr_model": str(tmp_path / "sr.safetensors")}
    with pytest.raises(BadParameter, match="pip install spandrel" if importlib.util.find_spec("spandrel") is None
                       else "a super-resolution network spandrel can load"):
        run_job("upscale", sr, tmp_path / "o.png", _ctx([]))
    assert not list(tmp_path.glob("o.png"))


# ---- the CLI -----------------------------------------------------------------------------------------------
def test_cli_upscales_says_what_it_did_and_refuses_bad_input(sd15, tmp_path, capsys):
    from sfumato.cli import main

    source = _picture(tmp_path / "board.png")
    out = tmp_path / "board_2x.png"
    args = ["upscale", str(source), "--scale", "2", "--tile", "64", "--overlap", "16", "--steps", "3",
            "--bundle", "tiny-sd15", "--seed", "1", "-o", str(out)]
    assert main(args) == 0
    said = capsys.readouterr().out
    assert "64x64 -> 128x128" in said and "9 tiles of 64px" in said and Image.open(out).size == (128, 128)
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err  # an existing output, refused
    assert main([*args[:3], "3", *args[4:], "--overwrite"]) == 2
    assert "scale=3 is not allowed: 2 or 4" in capsys.readouterr().err


# ---- the add-on, in real Blender -------------------------------------------------------------------------------
@pytest.fixture()
def blender(bundle_root, tmp_path):
    """The add-on enabled on the tiny bundles (CPU, one thread); test_addon_blender isolates Blender's user folders
    before ``bpy`` loads, and skips without ``bpy``."""
    tab = pytest.importorskip("test_addon_blender")
    import addon_utils

    addon_utils.enable(tab.NAME, default_set=True, handle_error=tab._raise)
    p = tab.prefs()
    p.bundle_folder, p.device, p.threads, p.default_bundle = str(bundle_root), "cpu", 1, "tiny-sd15"
    p.output_folder = str(tmp_path / "results")
    yield tab
    addon_utils.disable(tab.NAME, default_set=True, handle_error=tab._raise)


def test_addon_operator_and_api_upscale_an_image_datablock_with_its_provenance(blender, tmp_path):
    import json
    import sys

    bpy = blender.bpy
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.context.scene.sfumato.seed, bpy.context.scene.sfumato.random_seed = 5, False
    source = _picture(tmp_path / "in.png", meta={"prompt": "red brick wall", "seed": 3, "bundle": "tiny-sd15",
                                                 "width": 64, "height": 64})
    image = bpy.data.images.load(str(source))
    before = set(bpy.data.images.keys())
    assert bpy.ops.sfumato.upscale(image=image.name, scale="2", tile=64, overlap=16, steps=4, strength=0.5) == {
        "FINISHED"}
    (made,) = [bpy.data.images[n] for n in set(bpy.data.images.keys()) - before]
    assert tuple(made.size) == (128, 128) and made.name.startswith("in x2")
    prov = made["sfumato"].to_dict()
    assert prov["prompt"] == "red brick wall" and prov["seed"] == 3  # the source's provenance, kept
    (record,) = json.loads(prov["upscale"])
    assert (record["scale"], record["seed"], record["tiles"], record["source"]) == (2, 5, 9, "in.png")
    # the scripting API: a file path, and an image with no file of its own (written out first, a new record)
    api = sys.modules["sfumato_api"]
    done = api.upscale(str(source), 2, tile=64, overlap=16, steps=4, strength=0.5, seed=9)
    assert tuple(done.image.size) == (128, 128) and done.metadata["upscale"][-1]["seed"] == 9
    painted = bpy.data.images.new("painted", 48, 40)
    done = api.upscale(painted, 2, tile=64, overlap=16, steps=4, strength=0.5, seed=1)
    assert tuple(done.image.size) == (96, 80) and done.metadata["mode"] == "upscale"
    with pytest.raises(api.BadSetting, match="scale=3 is not allowed: 2 or 4"):
        api.upscale(image, 3)
