"""The job operators' shared properties and the engine settings the add-on now exposes (texture sds mode, the
synchronised projection variant, fill views, the asset's size and latent render), in real Blender (the ``bpy``
module, headless) with a real worker on the tiny bundles; the enabled add-on comes from test_addon_blender.py."""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from test_addon_blender import NAME, Layout, _make_scene, _mesh_scene, bpy, enabled, runtime  # noqa: F401

pytestmark = pytest.mark.usefixtures("enabled")  # the add-on, enabled on the tiny bundles for the module

JOB_OPERATORS = ("image", "texture", "turntable", "asset")


def _module(name: str):
    return sys.modules[f"{NAME}.{name}"]


class Recorder(Layout):
    """``Layout`` (every call checked against Blender's UILayout) that also notes the properties drawn."""

    def __getattr__(self, name):
        call = super().__getattr__(name)

        def recorded(*args, **kwargs):
            if name == "prop":
                self.log.append(("prop", args[1]))
            out = call(*args, **kwargs)
            return Recorder(self.log) if isinstance(out, Layout) else out

        return recorded


def _drawn(panel) -> set[str]:
    log: list = []
    panel.draw(SimpleNamespace(layout=Recorder(log)), bpy.context)
    return {name for kind, name in log if kind == "prop"}


def test_the_four_job_operators_take_the_same_common_properties():
    common = {"prompt", "negative", "bundle", "seed", "guidance", "blocking"}
    found = {op: set(getattr(bpy.ops.sfumato, op).get_rna_type().properties.keys()) for op in JOB_OPERATORS}
    for op, names in found.items():
        assert common <= names, (op, common - names)
        assert ("steps" in names) == (op != "asset"), op  # score distillation counts iterations, not steps
    ops = _module("ops")
    assert set(ops.COMMON) | {"blocking"} == common and set(ops.SAMPLED) == set(ops.COMMON) | {"steps"}


def test_image_operator_takes_a_prompt_and_the_common_properties():
    scene = _make_scene()
    before = set(bpy.data.images.keys())
    result = bpy.ops.sfumato.image(mode="text", prompt="green moss", negative="blur", seed=7, steps=2, guidance=3.0)
    assert result == {"FINISHED"}
    (image,) = [bpy.data.images[n] for n in set(bpy.data.images.keys()) - before if "sfumato" in bpy.data.images[n]]
    prov = image["sfumato"].to_dict()
    assert image.name == "green moss s7"
    assert {k: prov[k] for k in ("prompt", "negative", "seed", "steps", "guidance")} == {
        "prompt": "green moss", "negative": "blur", "seed": 7, "steps": 2, "guidance": 3.0}
    s = scene.sfumato  # the panel keeps its own settings
    assert (s.prompt, s.negative, s.seed, s.steps) == ("red brick wall", "", 5, 3)
    # a bad value set on the operator is refused with the engine's sentence
    with pytest.raises(RuntimeError, match="guidance=60.0 is not allowed: a number 0..50"):
        bpy.ops.sfumato.image(mode="text", guidance=60.0)


def test_texture_sync_variant_and_fill_views_reach_the_engine():
    obj = _mesh_scene("cube")
    result = bpy.ops.sfumato.texture(variant="sync", views=2, fill_views=1, resolution=64, texture_size=64)
    assert result == {"FINISHED"}
    prov = obj.material_slots[0].material["sfumato"].to_dict()
    assert (prov["texture_mode"], prov["variant"], prov["views"], prov["fill_views"]) == ("projection", "sync", 2, 1)


def test_texture_sds_mode_paints_the_uv_map_it_adds():
    obj = _mesh_scene("cube")
    obj.data.uv_layers.remove(obj.data.uv_layers[0])  # no UV map: sds paints one, so the add-on makes it
    assert bpy.ops.sfumato.texture(mode="sds", iters=2, resolution=64, texture_size=64) == {"FINISHED"}
    assert len(obj.data.uv_layers) == 1
    material = obj.material_slots[0].material
    prov = material["sfumato"].to_dict()
    assert (prov["texture_mode"], prov["iters"], prov["uv_map"], prov["uv_added"]) == (
        "sds", 2, obj.data.uv_layers[0].name, 1)
    uv_node = next(n for n in material.node_tree.nodes if n.type == 'UVMAP')
    assert uv_node.uv_map == obj.data.uv_layers[0].name  # the texture is laid on the UV map it was painted for


def test_asset_size_in_metres_and_latent_render():
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.sfumato.prompt, scene.sfumato.seed = "a wooden chair", 2
    assert (scene.sfumato.asset_size, scene.sfumato.asset_render) == (_module("request").A.size,
                                                                      _module("request").A.render)
    before = set(bpy.data.objects.keys())
    assert bpy.ops.sfumato.asset(iters=2, resolution=64, size=2.5, render="latent") == {"FINISHED"}
    new = [bpy.data.objects[n] for n in set(bpy.data.objects.keys()) - before]
    corners = np.array([o.matrix_world @ v.co for o in new if o.type == 'MESH' for v in o.data.vertices])
    assert (corners.max(0) - corners.min(0)).max() == pytest.approx(2.5, rel=1e-3)  # its largest side
    root = next(o for o in new if o.parent is None)
    assert root["sfumato"]["size_m"] == 2.5 and root["sfumato"]["render"] == "latent"


def test_panels_show_the_new_settings_and_the_api_takes_them():
    _mesh_scene("cube")
    ui, s = _module("ui"), bpy.context.scene.sfumato
    assert {"texture_variant", "texture_views", "texture_fill_views"} <= _drawn(ui.SFUMATO_PT_texture)
    s.texture_mode = "sds"
    drawn = _drawn(ui.SFUMATO_PT_texture)
    assert "texture_iters" in drawn and not {"texture_variant", "texture_fill_views"} & drawn
    assert {"asset_size", "asset_render"} <= _drawn(ui.SFUMATO_PT_asset)
    api = sys.modules["sfumato_api"]
    t = api.texture_settings(variant="sync", fill_views=3)
    assert (t.mode, t.variant, t.fill_views) == ("sds", "sync", 3)  # the panel's mode, the changes given
    assert api.asset_settings(size=0.3, render="latent").size == 0.3
    with pytest.raises(api.BadSetting, match=r"size=0\.0 is not allowed: a number in \(0, 1000\]"):
        _module("request").first_problem(api.asset_settings(size=0.0))


def test_a_running_job_shows_its_elapsed_time_and_an_estimate_of_what_is_left():
    ui = _module("ui")
    assert (ui.timing(30, 0.25), ui.timing(5, 0.0), ui.clock(3725)) == ("0:30, about 1:30 left", "0:05", "1:02:05")
    state = _module("engine").JobState(tag="image", status="running", step=2, total=8, started=time.monotonic() - 10)
    runtime().CURRENT = state
    try:
        log: list = []
        ui.draw_progress(Layout(log))
    finally:
        runtime().CURRENT = None
    assert log[0] == ("Step 2/8", False) and log[1][0].startswith("0:1") and log[1][0].endswith("left")
    assert ui.timing(10, state.fraction) == "0:10, about 0:30 left"  # a quarter done in 10 s
