"""Material slots: each material of a mesh textured with its own prompt, tile size and maps (issue 16)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from sfumato.core.checks import checked
from sfumato.core.errors import BadParameter
from sfumato.core.schema import TextureRequest, slot_prompt, slot_tile_metres
from sfumato.kinds import run_job
from sfumato.threed.mesh import load_mesh
from sfumato.threed.demo_house import SLOTS, house_parts, write_house
from sfumato.threed.slots import NO_MATERIAL, file_label, plan
from test_texture import _ctx  # a job context that records events and cancels after N steps

HOUSE_SLOTS = SLOTS


@pytest.fixture(scope="module")
def house(tmp_path_factory) -> Path:
    return write_house(tmp_path_factory.mktemp("slots") / "house.glb")


def _req(house: Path, **kw) -> TextureRequest:
    return TextureRequest(**{"mesh": str(house), "prompt": "", "mode": "material", **kw})


# ---- names, groups, plans --------------------------------------------------------------------------------
@pytest.mark.parametrize("name,prompt", [("Roof_tiles.001", "roof tiles"), ("Material.001", ""),
                                         ("M_BrickFacade", "brick facade"), ("sfumato-default", ""),
                                         ("Dach (Ziegel)", "dach ziegel"), ("屋根_瓦", "屋根 瓦"), ("mat_03", "")])
def test_slot_names_become_prompts(name, prompt):
    assert slot_prompt(name) == prompt


def test_tile_sizes_follow_the_material_named():
    assert slot_tile_metres("brick facade") == pytest.approx(0.9)  # about 12 courses of 75 mm
    assert slot_tile_metres("roof tiles") == pytest.approx(2.5)
    assert slot_tile_metres("window frames") is None


def test_glb_materials_become_face_groups(house):
    mesh = load_mesh(house)
    assert mesh.groups == HOUSE_SLOTS
    counts = torch.bincount(mesh.face_group, minlength=5).tolist()
    assert counts == [len(m.faces) for m, _ in house_parts()]


def test_obj_usemtl_with_its_mtl_file(tmp_path):
    (tmp_path / "walls.mtl").write_text("newmtl Brick\nKd 0.6 0.2 0.1\nnewmtl Slate_roof\nKd 0.2 0.2 0.2\n")
    (tmp_path / "walls.obj").write_text("mtllib walls.mtl\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nv 0 0 1\n"
                                        "usemtl Brick\nf 1 2 3\nf 1 3 4\nusemtl Slate_roof\nf 1 2 5\n")
    mesh = load_mesh(tmp_path / "walls.obj")
    assert sorted(mesh.groups) == ["Brick", "Slate_roof"]
    assert torch.bincount(mesh.face_group).tolist() == [2 if g == "Brick" else 1 for g in mesh.groups]


def test_plan_prompts_from_table_names_and_style(house):
    mesh = load_mesh(house)
    req = _req(house, prompt="photo, daylight", slots=("Brick facade=weathered red brick, running bond",))
    slots = plan(req, mesh, seed=7).slots
    by = {s.name: s for s in slots}
    assert by["Brick facade"].prompt == "weathered red brick, running bond, photo, daylight"
    assert by["Brick facade"].source == "table"
    assert by["Roof_tiles.001"].prompt == "roof tiles, photo, daylight" and by["Roof_tiles.001"].source == "name"
    assert by["Roof_tiles.001"].tile_size == pytest.approx(2.5) and by["Window frames"].tile_source == "default"
    assert [s.seed for s in slots] == [7, 8, 9, 10, 11]  # the slot's index: --only gives the same tile again


def test_meaningless_names_take_the_main_prompt_and_say_so(tmp_path):
    path = write_house(tmp_path / "h.glb", ("Material.001", "Roof", "Material.002", "Plinth", "Lawn"))
    mesh = load_mesh(path)
    chosen = plan(_req(path, prompt="white stucco"), mesh, seed=1)
    assert chosen.slots[0].prompt == "white stucco" and chosen.slots[0].source == "main prompt"
    assert any("Material.001, Material.002" in n for n in chosen.notes)
    with pytest.raises(BadParameter, match="'Material.001' or 'Material.002' have names that say nothing"):
        plan(_req(path), mesh, seed=1)  # no main prompt, no table: nothing to generate for those


def test_unknown_duplicate_and_bad_table_entries_are_named(house, tmp_path):
    mesh = load_mesh(house)
    with pytest.raises(BadParameter, match=r"slots=.*Bricks=red.*it has 'Brick facade', 'Roof_tiles.001'"):
        plan(_req(house, slots=("Bricks=red",)), mesh, 1)
    with pytest.raises(BadParameter, match="did you mean 'Lawn'"):
        plan(_req(house, only=("lawn",)), mesh, 1)
    with pytest.raises(BadParameter, match="'Lawn' is given twice"):
        plan(_req(house, slots=("Lawn=grass", "Lawn=gravel")), mesh, 1)
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"Lawn": {"prompt": "grass", "tile_size": -1}}))
    with pytest.raises(BadParameter, match=r"Lawn.tile_size=-1.*metres in \(0, 1000\]"):
        plan(_req(house, slots_file=str(bad)), mesh, 1)
    bad.write_text("{not json")
    with pytest.raises(BadParameter, match="slots_file=.*a JSON object"):
        plan(_req(house, slots_file=str(bad)), mesh, 1)
    with pytest.raises(BadParameter, match="slot_tiles='Lawn=big'"):
        checked(_req(house, slot_tiles=("Lawn=big",)))
    with pytest.raises(BadParameter, match=r"slots=\('no equals sign',\)"):
        checked(_req(house, slots=("no equals sign",)))


def test_table_file_turns_slots_off_and_sets_sizes(house, tmp_path):
    table = tmp_path / "slots.json"
    table.write_text(json.dumps({"Lawn": {"enabled": False}, "Brick facade": {"prompt": "yellow brick",
                                                                              "tile_size": 0.45}}))
    chosen = plan(_req(house, slots_file=str(table), prompt="x"), load_mesh(house), 1)
    by = {s.name: s for s in chosen.slots}
    assert not by["Lawn"].selected and by["Brick facade"].tile_size == 0.45
    assert any("turned off" in n and "Lawn" in n for n in chosen.notes)


def test_file_labels_keep_any_script_and_stay_apart():
    assert file_label("Roof tiles/../x", 1) == "01-Roof_tiles_x"
    assert file_label("屋根", 2) == "02-屋根" and file_label("???", 3) == "03-slot"
    assert file_label("", 0) == "00-slot" and NO_MATERIAL == "(no material)"


# ---- the job, on the embedded bundle ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def five_slots(house, tmp_path_factory):
    out = tmp_path_factory.mktemp("five") / "house.glb"
    events: list = []
    params = {"mesh": str(house), "prompt": "", "mode": "material", "resolution": 64, "steps": 4, "seed": 3}
    return run_job("texture", params, out, _ctx(events)), events, params


def test_five_slots_get_five_pbr_materials(five_slots):
    result, events, _ = five_slots
    assert [s["name"] for s in result["slots"]] == list(HOUSE_SLOTS)
    views = {f["views"] for e, f in events if f.get("stage") == "texture"}
    assert views == {5}  # progress counts slots
    for s in result["slots"]:
        for kind in ("texture", "normal", "roughness", "height"):
            image = np.asarray(Image.open(s[kind]))
            assert image.std() > 0.5, (s["name"], kind)  # not blank
    loaded = trimesh.load(result["glb"], process=False)
    materials = {g.visual.material.name: g for g in loaded.geometry.values()}
    assert sorted(materials) == sorted(f"Sfumato {n}" for n in HOUSE_SLOTS)
    faces = {name: len(g.faces) for name, g in materials.items()}
    assert faces == {f"Sfumato {n}": len(m.faces) for m, n in house_parts()}
    for g in materials.values():
        m = g.visual.material
        assert m.normalTexture is not None and m.metallicRoughnessTexture is not None
        mr = np.asarray(m.metallicRoughnessTexture)
        assert mr[..., 1].std() > 0 and mr[..., 2].max() == 0  # roughness in G, metallic 0 in B (glTF 2.0)


def test_only_regenerates_a_slot_exactly(five_slots, tmp_path):
    result, _, params = five_slots
    again = run_job("texture", {**params, "only": ["Roof_tiles.001"]}, tmp_path / "roof.glb", _ctx([]))
    assert [s["name"] for s in again["slots"]] == ["Roof_tiles.001"]
    before = next(s for s in result["slots"] if s["name"] == "Roof_tiles.001")
    assert np.array_equal(np.asarray(Image.open(again["slots"][0]["texture"])), np.asarray(Image.open(before["texture"])))
    loaded = trimesh.load(again["glb"], process=False)
    names = sorted(g.visual.material.name for g in loaded.geometry.values())
    assert "Sfumato Roof_tiles.001" in names and "Brick facade" in names  # the rest keeps its plain material


# ---- paint some faces again ----------------------------------------------------------------------------------
def test_repaint_paints_only_the_chosen_faces_again(tmp_path):
    """A projection texture, then the roof painted again: every texel off the roof (and its gutter) is kept byte for
    byte, the roof's texels change, and views that do not see the roof are skipped."""
    house = write_house(tmp_path / "h.glb")
    params = {"prompt": "red brick house", "mode": "projection", "views": 3, "fill_views": 0, "resolution": 64,
              "texture_size": 128, "steps": 3, "seed": 2, "view_prompts": False}
    first = run_job("texture", {**params, "mesh": str(house)}, tmp_path / "first.glb", _ctx([]))
    textured = trimesh.load(first["glb"], force="mesh", process=False)  # the mesh with the UVs the texture uses
    centres = textured.triangles_center
    roof = textured.submesh([np.nonzero(centres[:, 1] > 3.0)[0]], append=True)
    roof.export(tmp_path / "roof.glb")
    events: list = []
    again = run_job("texture", {**params, "mesh": first["glb"], "texture_in": first["texture"],
                                "repaint": str(tmp_path / "roof.glb"), "seed": 9}, tmp_path / "again.glb", _ctx(events))
    before, after = np.asarray(Image.open(first["texture"])), np.asarray(Image.open(again["texture"]))
    from sfumato.threed.mesh import load_mesh as load
    from sfumato.threed.repaint import load as load_repaint

    req = TextureRequest(prompt="x", mesh=first["glb"], texture_size=128, texture_in=first["texture"],
                         repaint=str(tmp_path / "roof.glb"))
    redo = load_repaint(req, load(first["glb"])).redo.numpy()
    assert np.array_equal(before[~redo], after[~redo])  # kept exactly
    assert np.abs(before[redo].astype(int) - after[redo].astype(int)).mean() > 2  # painted again
    assert again["metadata"]["repaint"]["texels"] == int(redo.sum())
    assert again["metadata"]["repaint"]["views"] <= 3


def test_repaint_needs_its_texture_and_the_mesh_uvs(house, tmp_path):
    with pytest.raises(BadParameter, match="texture_in=None .*go together"):
        checked(TextureRequest(prompt="x", mesh=str(house), repaint=str(house)))
    with pytest.raises(BadParameter, match="repaint=.*projection mode, sequential variant"):
        checked(TextureRequest(prompt="x", mesh=str(house), repaint=str(house), texture_in=str(house),
                               mode="material"))
    png = tmp_path / "t.png"
    Image.new("RGB", (8, 8)).save(png)
    with pytest.raises(BadParameter, match="repaint=.*a repaint of a mesh with UVs"):
        run_job("texture", {"prompt": "x", "mesh": str(house), "repaint": str(house), "texture_in": str(png)},
                tmp_path / "x.glb", _ctx([]))


def test_fifty_slots_show_progress_and_a_cancel_leaves_no_files(tmp_path):
    from sfumato.core.errors import Cancelled

    boxes = [trimesh.creation.box((0.5, 0.5, 0.5)).apply_translation((i % 10, 0, i // 10)) for i in range(50)]
    for i, box in enumerate(boxes):
        box.visual = trimesh.visual.texture.TextureVisuals(
            material=trimesh.visual.material.PBRMaterial(name=f"Stone {i:02d}"))
    path = tmp_path / "fifty.glb"
    path.write_bytes(trimesh.Scene(boxes).export(file_type="glb"))
    events: list = []
    with pytest.raises(Cancelled):
        run_job("texture", {"mesh": str(path), "prompt": "", "mode": "material", "resolution": 64, "steps": 2,
                            "maps": False}, tmp_path / "out.glb", _ctx(events, cancel_after=5))
    slots = [f["slot"] for e, f in events if f.get("stage") == "texture"]
    assert slots[0] == "Stone 00" and {f["views"] for e, f in events if f.get("stage") == "texture"} == {50}
    assert not list(tmp_path.glob("out*"))  # nothing half-written: results are saved only at the end


def test_a_glb_whose_materials_have_no_names_takes_the_main_prompt(tmp_path):
    path = write_house(tmp_path / "h.glb", names=["", "", "", "", ""])
    mesh = load_mesh(path)
    chosen = plan(_req(path, prompt="white stucco"), mesh, 1)
    assert [s.prompt for s in chosen.slots] == ["white stucco"] * len(mesh.groups)
    with pytest.raises(BadParameter, match="prompt='' .*a prompt: the slot '\\(no material\\)' has a name"):
        plan(_req(path), mesh, 1)
