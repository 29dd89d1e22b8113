"""Material slots in real Blender (``bpy``, headless) with a real worker on the embedded bundle (issue 16): a house
with five named slots gets five PBR materials, faces keep their material index, one slot can be redone alone, the
slot table follows the object's slots, and revert puts the user's materials back."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from types import SimpleNamespace

from test_addon_blender import NAME, Layout, bpy, enabled, prefs  # noqa: F401  (fixtures)
from test_addon_data_safety import _house_lawn_statue, _mesh_bytes, _pixels

pytestmark = pytest.mark.usefixtures("enabled")

SLOTS = ["Brick facade", "Roof_tiles.001", "Window frames", "Concrete plinth", "Material.001"]
QUICK = {"mode": "material", "resolution": 64, "steps": 3, "bundle": "materials"}


def _module(name: str):
    return sys.modules[f"{NAME}.{name}"]


def _house():
    house, _ = _house_lawn_statue()
    for name in SLOTS:
        house.data.materials.append(bpy.data.materials.new(name))
    house.data.polygons.foreach_set("material_index", np.arange(len(house.data.polygons)) % len(SLOTS))
    return house


def _image_nodes(material) -> dict[str, object]:
    """Each image texture node's image by the socket it feeds (Base Color, Roughness, Color of the normal map, ...)."""
    out = {}
    for node in material.node_tree.nodes:
        if node.type == 'TEX_IMAGE':
            target = node.outputs["Color"].links[0].to_node
            key = target.type if target.type != 'BSDF_PRINCIPLED' else node.outputs["Color"].links[0].to_socket.name
            out[key] = node.image
    return out


def test_five_slots_become_five_pbr_materials_and_revert_restores(tmp_path):
    import sfumato_api

    house = _house()
    before = _mesh_bytes(house.data)
    done = sfumato_api.texture(house, "white stucco", seed=4, folder=tmp_path,
                               slots={"Brick facade": "red brick wall, running bond"}, **QUICK)
    assert sorted(done.slots) == sorted(SLOTS)
    assert [slot.material for slot in house.material_slots] == [done.slots[n] for n in SLOTS]
    assert _mesh_bytes(house.data) == before  # every face keeps its material index; the mesh keeps its materials
    for name, material in done.slots.items():
        assert material.name == f"Sfumato {name}"
        images = _image_nodes(material)
        assert set(images) == {"Base Color", "Roughness", "NORMAL_MAP", "DISPLACEMENT"}, name
        for socket, image in images.items():
            assert _pixels(image).std() > 0.002, (name, socket)  # not blank
            assert image.colorspace_settings.name == ("sRGB" if socket == "Base Color" else "Non-Color")
    record = dict(done.slots["Brick facade"]["sfumato"])
    assert record["prompt"] == "red brick wall, running bond, white stucco" and record["slot"] == "Brick facade"
    assert dict(done.slots["Material.001"]["sfumato"])["prompt"] == "white stucco"  # the name says nothing
    assert sfumato_api.revert(house) is True
    assert [slot.material.name for slot in house.material_slots] == SLOTS and _mesh_bytes(house.data) == before


def test_one_slot_redone_leaves_the_others_and_the_table_drives_the_job(tmp_path):
    import sfumato_api

    slot_table = _module("slot_table")
    house = _house()
    first = sfumato_api.texture(house, "", seed=4, folder=tmp_path, slots={"Material.001": "grey slate"}, **QUICK)
    shown = [slot.material for slot in house.material_slots]
    again = sfumato_api.texture(house, "", seed=9, folder=tmp_path, only=["Window frames"], **QUICK)
    assert list(again.slots) == ["Window frames"]
    after = [slot.material for slot in house.material_slots]
    assert after[2] == again.slots["Window frames"] != shown[2]
    assert after[:2] + after[3:] == shown[:2] + shown[3:] and first.slots["Brick facade"] == after[0]
    # the table: a row per slot, prompts prefilled from the names (read from the user's materials, not Sfumato's)
    assert [row.name for row in house.sfumato_slots] == SLOTS
    assert [row.prompt for row in house.sfumato_slots] == ["brick facade", "roof tiles", "window frames",
                                                          "concrete plinth", ""]
    house.sfumato_slots["Roof_tiles.001"].enabled = False
    house.sfumato_slots["Brick facade"].tile_size = 0.45
    entries = slot_table.entries(house)
    assert "Roof_tiles.001" not in entries["only"] and len(entries["only"]) == 4
    assert entries["slot_tiles"] == ("Brick facade=0.45",)
    house.data.materials.append(bpy.data.materials.new("Lawn"))
    assert not slot_table.in_sync(house)
    slot_table.sync(house)
    assert house.sfumato_slots[-1].name == "Lawn"
    house.sfumato_slots["Lawn"].prompt = "green grass"
    assert not any(e.startswith("Lawn=") for e in slot_table.entries(house)["slots"])  # no face uses it: not sent
    assert house.sfumato_slots["Brick facade"].tile_size == pytest.approx(0.45)  # edits kept


def test_a_table_naming_a_missing_slot_is_refused_with_the_real_ones(tmp_path):
    import sfumato_api

    house = _house()
    with pytest.raises(RuntimeError, match=r"slots='Bricks=red'.*it has 'Brick facade', 'Roof_tiles.001'"):
        sfumato_api.texture(house, "", seed=1, folder=tmp_path, slots={"Bricks": "red"}, **QUICK)
    assert [slot.material.name for slot in house.material_slots] == SLOTS  # nothing touched


def test_selected_faces_painted_again_keep_the_rest_of_the_texture(tmp_path):
    import sfumato_api

    house = _house()
    quick = {"mode": "projection", "views": 2, "fill_views": 0, "resolution": 64, "texture_size": 64, "steps": 2,
             "bundle": "materials"}
    first = sfumato_api.texture(house, "red brick house", seed=2, folder=tmp_path, **quick)
    top = [p.index for p in house.data.polygons if p.center.z > 0]  # the upper half of the box
    again = sfumato_api.repaint(house, "grey slate", faces=top, seed=5, folder=tmp_path,
                                **{k: v for k, v in quick.items() if k != "mode"})
    assert again.material != first.material and house.material_slots[0].material == again.material
    assert first.image.name in bpy.data.images  # the earlier texture stays in the file
    old, new = _pixels(first.image), _pixels(again.image)
    same = np.isclose(old, new, atol=1e-6).mean()
    assert 0.2 < same < 0.98, same  # most of the texture kept exactly, the top painted again
    record = dict(again.material["sfumato"])
    assert "repaint" in record and house.data.uv_layers.active.name == record["uv_map"]


def test_the_slot_table_draws_with_valid_calls():
    """The Texture section in material mode, drawn against Blender's own UILayout signatures: the table of the
    active object (and its 'read them again' line when its slots changed), in both modes' buttons."""
    house = _house()
    ui, slot_table = _module("ui"), _module("slot_table")
    bpy.context.view_layer.objects.active = house
    bpy.context.scene.sfumato.texture_mode = "material"
    log: list = []
    ui.SFUMATO_PT_texture.draw(SimpleNamespace(layout=Layout(log)), bpy.context)
    assert any("read them again" in text for text, _ in log)  # no table read yet
    slot_table.sync(house)
    log.clear()
    ui.SFUMATO_PT_texture.draw(SimpleNamespace(layout=Layout(log)), bpy.context)
    assert any(text == f"Slots of {house.name}" for text, _ in log)
    assert not any("read them again" in text for text, _ in log)
    row = house.sfumato_slots[0]
    slot_table.SFUMATO_UL_slots.draw_item(None, bpy.context, Layout(log), house, row, 0, house, "sfumato_slot_index", 0)
    bpy.context.scene.sfumato.texture_mode = "projection"
    ui.SFUMATO_PT_texture.draw(SimpleNamespace(layout=Layout(log)), bpy.context)  # with the repaint button
