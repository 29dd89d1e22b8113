"""The Styles list in real Blender (``bpy``, headless) with a real worker (issue 17): a bundle's LoRAs listed from
the engine, one turned on at a strength, every job sent with it and its output recording it, and history recall
turning it back on."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch

from test_addon_blender import NAME, bpy, enabled, prefs, runtime  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("enabled")


def _module(name: str):
    return sys.modules[f"{NAME}.{name}"]


def _lora(sd15, folder):
    """A LoRA made by peft on the tiny U-Net (B given weights, so it changes the picture), saved by diffusers."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(sd15 / "unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights="gaussian"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.3)
    StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=get_peft_model_state_dict(unet),
                                              safe_serialization=True)
    return folder


@pytest.fixture()
def styled_bundles(sd15, tmp_path):
    """A bundle folder holding one bundle with a LoRA named "studio", set in the preferences for this test."""
    from sfumato.cli import main

    root = tmp_path / "bundles"
    shutil.copytree(sd15, root / "tiny-styled")
    manifest = json.loads((root / "tiny-styled" / "sfumato.json").read_text())
    (root / "tiny-styled" / "sfumato.json").write_text(json.dumps({**manifest, "name": "tiny-styled"}))
    assert main(["bundle", "add", str(root / "tiny-styled"), str(_lora(sd15, tmp_path / "lora")), "--as", "lora",
                 "--name", "studio"]) == 0
    p = prefs()
    before = (p.bundle_folder, p.default_bundle)
    p.bundle_folder, p.default_bundle = str(root), "tiny-styled"
    runtime().CHECK.clear()
    yield root
    p.bundle_folder, p.default_bundle = before
    runtime().CHECK.clear()


def test_the_styles_list_sends_the_enabled_lora_and_recall_turns_it_back_on(styled_bundles, tmp_path):
    import sfumato_api

    scene = bpy.context.scene
    s = scene.sfumato
    s.styles.clear()
    assert bpy.ops.sfumato.styles_refresh() == {"FINISHED"}
    assert [row.name for row in s.styles] == ["studio"] and not s.styles[0].enabled
    assert _module("props").settings_from(s).loras == ()  # listed is not used
    s.styles[0].enabled, s.styles[0].strength = True, 0.6
    assert _module("props").settings_from(s).loras == ("studio:0.6",)
    assert _module("props").texture_settings_from(s).loras == ("studio:0.6",)  # every head wears it
    done = sfumato_api.variations(["red brick wall"], seeds=[3], image_mode="text", folder=tmp_path / "out",
                                  contact_sheet=False, steps=2, width=64, height=64)
    (meta,) = done.metadata
    (used,) = meta["loras"]
    assert used["name"] == "studio.safetensors" and used["scale"] == pytest.approx(0.6) and len(used["hash"]) == 12
    # the list refreshed keeps the strength; a LoRA gone from the bundle leaves the list
    assert bpy.ops.sfumato.styles_refresh() == {"FINISHED"}
    assert s.styles[0].enabled and s.styles[0].strength == pytest.approx(0.6)
    _module("styles").sync(s.styles, [])
    assert len(s.styles) == 0
    # recall: the history entry's settings turn the style on again at its strength
    record = scene.sfumato_history[-1]
    assert bpy.ops.sfumato.recall(index=len(scene.sfumato_history) - 1) == {"FINISHED"}
    assert [(row.name, row.enabled, round(row.strength, 3)) for row in s.styles] == [("studio", True, 0.6)], \
        record.record


def test_train_style_from_a_folder_runs_in_the_engine_and_turns_the_style_on(styled_bundles, tmp_path):
    import numpy as np
    from PIL import Image

    refs = tmp_path / "refs"
    refs.mkdir()
    for i in range(5):
        a = np.full((64, 64, 3), (40, 120, 90), np.uint8)
        a[::5] = (220, 210, 180)
        Image.fromarray(a).save(refs / f"board_{i}.png")
    s = bpy.context.scene.sfumato
    s.styles.clear()
    p = prefs()
    before = p.output_folder
    p.output_folder = str(tmp_path / "results")
    try:
        assert bpy.ops.sfumato.train_style(directory=str(refs), name="greens", steps=2, rank=2, resolution=64,
                                           blocking="ON") == {"FINISHED"}
    finally:
        p.output_folder = before
    assert [(row.name, row.enabled, row.strength) for row in s.styles] == [("greens", True, 1.0)]
    (summary,) = (tmp_path / "results" / "styles").glob("*.json")
    assert '"name": "greens"' in summary.read_text()
    assert bpy.ops.sfumato.styles_refresh() == {"FINISHED"}  # the engine lists it now, beside the bundle's own
    assert sorted(row.name for row in s.styles) == ["greens", "studio"]
    with pytest.raises(RuntimeError, match="folder"):  # no folder: refused by the panel's check, nothing runs
        bpy.ops.sfumato.train_style(directory="", name="x", blocking="ON")
