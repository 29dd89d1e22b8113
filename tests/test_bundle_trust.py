"""Bundles are what their manifest says: weights hashed before use (and the verified state cached), paths and
links kept inside the bundle, configs bounded before a model is built, pickles with code refused unrun."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from sfumato.core import bundle as bundles
from sfumato.core.errors import BundleCorrupt
from sfumato.core.loading import load_models

CPU, F32 = torch.device("cpu"), torch.float32


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(bundles, "_VERIFIED", {})
    return tmp_path / "cache" / "sfumato" / "verified.json"


@pytest.fixture()
def hashes(monkeypatch):
    """The files hashed, in order."""
    seen: list[str] = []
    real = bundles.sha256

    def counting(path, *a, **kw):
        seen.append(Path(path).name)
        return real(path, *a, **kw)

    monkeypatch.setattr(bundles, "sha256", counting)
    return seen


def _copy(sd15: Path, dst: Path) -> Path:
    shutil.copytree(sd15, dst)
    return dst


def _relabel_f32_as_i32(path: Path) -> None:
    """Same size, same bytes of data: one tensor's dtype in the header changed (garbage if it loaded)."""
    data = bytearray(path.read_bytes())
    at = data.index(b'"F32"')
    data[at:at + 5] = b'"I32"'
    path.write_bytes(bytes(data))


def test_a_tampered_file_of_the_same_size_is_refused_before_loading(tmp_path, sd15, cache):
    b = _copy(sd15, tmp_path / "relabelled")
    f = b / "unet" / "diffusion_pytorch_model.safetensors"
    size = f.stat().st_size
    _relabel_f32_as_i32(f)
    assert f.stat().st_size == size
    with pytest.raises(BundleCorrupt, match="sha256 .* differs from the manifest's .* it was not loaded") as err:
        load_models(bundles.open_bundle(b), CPU, F32)
    assert err.value.path == str(f)
    with pytest.raises(BundleCorrupt, match="sha256"):
        bundles.verify(bundles.open_bundle(b))


def test_hashes_are_checked_once_then_again_when_a_file_changes(tmp_path, sd15, cache, hashes):
    b = _copy(sd15, tmp_path / "warm")
    load_models(bundles.open_bundle(b), CPU, F32)
    first = list(hashes)
    assert {"diffusion_pytorch_model.safetensors", "model.safetensors"} <= set(first)
    assert cache.is_file() and len(json.loads(cache.read_text())) == len(first)
    bundles._VERIFIED.clear()  # a new process: only the cache file remembers
    load_models(bundles.open_bundle(b), CPU, F32)
    assert hashes == first  # a warm start hashes nothing
    vae = b / "vae" / "diffusion_pytorch_model.safetensors"
    later = time.time() + 5
    os.utime(vae, (later, later))
    load_models(bundles.open_bundle(b), CPU, F32)
    assert hashes[len(first):] == ["diffusion_pytorch_model.safetensors"]  # the touched file, and it alone
    cache.write_text("{damaged")
    bundles._VERIFIED.clear()
    load_models(bundles.open_bundle(b), CPU, F32)  # a damaged cache means hashing again, not an error
    assert len(hashes) == 2 * len(first) + 1


def test_rewriting_a_file_and_restoring_its_mtime_is_still_caught(tmp_path, sd15, cache):
    b = _copy(sd15, tmp_path / "sneaky")
    load_models(bundles.open_bundle(b), CPU, F32)
    f = b / "text_encoder" / "model.safetensors"
    st = f.stat()
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, same mtime: the change time still moved
    with pytest.raises(BundleCorrupt, match="sha256"):
        load_models(bundles.open_bundle(b), CPU, F32)


def test_verify_hashes_every_file_whatever_the_cache_says(tmp_path, sd15, cache, hashes):
    b = _copy(sd15, tmp_path / "full")
    report = bundles.verify(bundles.open_bundle(b))
    listed = json.loads((b / "sfumato.json").read_text())["files"]
    assert {f"{rel}: sha256 ok" for rel in listed} <= set(report)
    before = len(hashes)
    bundles.verify(bundles.open_bundle(b))
    assert len(hashes) - before == len(listed)  # hashed again: verify trusts no cache


def test_manifest_paths_that_leave_the_bundle_are_refused(tmp_path, sd15, cache):
    b = _copy(sd15, tmp_path / "escape")
    manifest = json.loads((b / "sfumato.json").read_text())
    digest = {"sha256": "0" * 64, "bytes": 1}
    for bad in ("../../../../etc/passwd", "/etc/passwd", "unet/../../outside.safetensors"):
        (b / "sfumato.json").write_text(json.dumps({**manifest, "files": {**manifest["files"], bad: digest}}))
        with pytest.raises(BundleCorrupt, match="leads out of the bundle|is not allowed: a relative path"):
            bundles.verify(bundles.open_bundle(b))
    outside = tmp_path / "elsewhere"
    shutil.copytree(b / "unet", outside)
    (b / "sfumato.json").write_text(json.dumps({**manifest, "components": {**manifest["components"],
                                                                          "unet": str(outside)}}))
    with pytest.raises(BundleCorrupt, match="is not allowed: a relative path inside"):
        bundles.open_bundle(b)


def test_links_out_of_the_bundle_are_refused(tmp_path, sd15, cache):
    b = _copy(sd15, tmp_path / "links")
    f = b / "unet" / "diffusion_pytorch_model.safetensors"
    outside = tmp_path / "same-weights.safetensors"
    shutil.copy(f, outside)
    f.unlink()
    f.symlink_to(outside)  # the very same bytes, but not inside the bundle
    with pytest.raises(BundleCorrupt, match="leads out of the bundle's folder") as err:
        load_models(bundles.open_bundle(b), CPU, F32)
    assert err.value.path == str(f)
    with pytest.raises(BundleCorrupt, match="leads out"):
        bundles.verify(bundles.open_bundle(b))
    shutil.rmtree(b / "vae")
    (b / "vae").symlink_to(sd15 / "vae", target_is_directory=True)
    with pytest.raises(BundleCorrupt, match="leads out"):
        bundles.open_bundle(b)


@pytest.mark.parametrize("component, key, value, expect", [
    ("unet", "layers_per_block", 1e6, "layers_per_block=1000000.0 is not allowed: a whole number 1..8"),
    ("unet", "layers_per_block", 1_000_000, "layers_per_block=1000000 is not allowed"),
    ("unet", "block_out_channels", [32] * 1000, "block_out_channels=.* is not allowed"),
    ("unet", "transformer_layers_per_block", True, "transformer_layers_per_block=True is not allowed"),
    ("unet", "down_block_types", ["CrossAttnDownBlock2D"] * 500, "down_block_types=.* is not allowed"),
    ("vae", "sample_size", 10**9, "sample_size=1000000000 is not allowed"),
    ("text_encoder", "num_hidden_layers", 100_000, "num_hidden_layers=100000 is not allowed"),
    ("text_encoder", "vocab_size", -5, "vocab_size=-5 is not allowed"),
])
def test_config_values_that_size_a_model_are_bounded_before_it_is_built(tmp_path, sd15, cache, component, key,
                                                                        value, expect):
    b = _copy(sd15, tmp_path / "config")
    path = b / component / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), key: value}))
    started = time.perf_counter()
    with pytest.raises(BundleCorrupt, match=expect) as err:
        load_models(bundles.open_bundle(b), CPU, F32)
    assert err.value.path == str(path) and time.perf_counter() - started < 30


def test_a_config_that_is_not_an_object_is_corrupt_not_a_hub_name(tmp_path, sd15, cache, monkeypatch):
    import huggingface_hub

    def no_hub(*a, **kw):
        raise AssertionError("a model hub was asked")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_hub)
    b = _copy(sd15, tmp_path / "list")
    (b / "vae" / "config.json").write_text("[]")
    with pytest.raises(BundleCorrupt, match=r"vae/config.json: is not a JSON object"):
        load_models(bundles.open_bundle(b), CPU, F32)


class _RunsCode:
    def __reduce__(self):
        return (os.mkdir, (os.environ["SFUMATO_TEST_MARKER"],))


def test_a_pickle_holding_code_is_refused_unrun_with_our_words(tmp_path, sd15, cache, monkeypatch):
    from sfumato.core.safetensors_check import load_state_dict

    marker = tmp_path / "code-ran"
    monkeypatch.setenv("SFUMATO_TEST_MARKER", str(marker))
    evil = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "payload": _RunsCode()}, evil)
    with pytest.raises(BundleCorrupt, match="is not a plain weights file.*nothing in it was run") as err:
        load_state_dict(evil, allow_pickle=True)
    assert "file an issue" not in str(err.value).lower() and not marker.exists()
    b = _copy(sd15, tmp_path / "pickled")
    unet = b / "unet" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    torch.save({**load_file(unet), "payload": _RunsCode()}, b / "unet" / "diffusion_pytorch_model.bin")
    unet.unlink()
    with pytest.raises(BundleCorrupt, match="is not a plain weights file") as err:
        load_models(bundles.open_bundle(b), CPU, F32, allow_pickle=True)
    assert "file an issue" not in str(err.value).lower() and not marker.exists()
