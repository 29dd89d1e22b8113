"""Nothing the user makes or owns is lost (issue 21, data loss), in real Blender (the ``bpy`` module, headless).

Results (variation images, a contact sheet, a turntable's movie clip, replaced texture materials) survive
saving and reopening the .blend, and the history still opens its images; texturing one object leaves every
other object's mesh data byte for byte as it was and packs its own UV islands to fill the texture. Results
are fabricated (files written here, handed to the add-on's own ``finish``), so no engine job runs.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from test_addon_blender import NAME, _finish_fake, bpy, enabled, prefs, scene  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("enabled")  # the add-on, enabled on the tiny bundles for the module


def _module(name: str):
    return sys.modules[f"{NAME}.{name}"]


def _pixels(image) -> np.ndarray:
    px = np.empty(len(image.pixels), np.float32)
    image.pixels.foreach_get(px)
    return px


def _save_and_reopen(path: Path):
    """Save the open file as ``path``, open it again; the scene it opens on."""
    assert bpy.ops.wm.save_as_mainfile(filepath=str(path)) == {"FINISHED"}
    assert bpy.ops.wm.open_mainfile(filepath=str(path)) == {"FINISHED"}
    return bpy.context.scene


# ---- fabricated results, through the add-on's own finish -------------------------------------------------
def _fake_images(scene, seeds: list[int], folder: Path | None = None) -> list:
    """Image results of ``seeds`` as imaging.finish makes them from the engine's files (random pixels)."""
    from PIL import Image

    imaging, engine = _module("imaging"), _module("engine")
    s = _module("props").settings_from(scene.sfumato).replace(mode="text", random_seed=False)
    job = imaging.prepare(bpy.context, s, seed=seeds[0], n=len(seeds), folder=folder)
    stem = job.output.removesuffix(f"_s{seeds[0]}.png" if len(seeds) == 1 else ".png")  # the engine's names
    files = [f"{stem}_s{seed}.png" for seed in seeds]
    for seed, file in zip(seeds, files):
        rgb = np.random.default_rng(seed).integers(0, 256, (s.height, s.width, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(file)
    state = engine.JobState(tag="image", context=job.context, status="done")
    state.result = {"files": files, "metadata": [
        {"prompt": s.prompt, "seed": seed, "bundle": "tiny-sd15", "steps": s.steps, "mode": "txt2img"}
        for seed in seeds]}
    return imaging.finish(state, bpy.context)


def _fake_turntable(obj, folder: Path, frames: int = 3):
    """A turntable result: a GIF written where the job says, loaded by turntable.finish."""
    from PIL import Image

    turntable, engine = _module("turntable"), _module("engine")
    s = _module("props").turntable_settings_from(bpy.context.scene.sfumato).replace(
        frames=frames, resolution=64, format="gif", temporal="off")
    job = turntable.prepare(bpy.context, obj, s, folder=folder)
    images = [Image.new("RGB", (64, 64), (60 * i, 200 - 50 * i, 90)) for i in range(frames)]
    images[0].save(job.output, save_all=True, append_images=images[1:], duration=83, loop=0)
    state = engine.JobState(tag="turntable", context={**job.context, "params": job.params}, status="done")
    state.result = {"video": job.output, "frames": frames, "fps": 12,
                    "metadata": {"prompt": s.prompt, "seed": job.params["seed"], "bundle": "tiny-sd15"}}
    return turntable.finish(state)


# ---- results survive save and reopen -------------------------------------------------------------------
def test_results_survive_save_and_reopen_and_history_opens_them(scene, tmp_path):
    scene_io = _module("scene_io")
    images = _fake_images(scene, [3, 4])
    sheet = scene_io.contact_sheet(images, tmp_path / "contact sheet.png", "sfumato contact sheet", columns=2)
    clip = _fake_turntable(bpy.data.objects["Cube"], tmp_path).clip
    sphere = bpy.data.objects["Sphere"]  # textured twice: the first material is replaced, and kept
    textures = [_finish_fake(_module("texturing").prepare(bpy.context, sphere, _module("props").texture_settings_from(
        scene.sfumato).replace(views=1), seed=seed, folder=tmp_path), tmp_path) for seed in (1, 2)]
    assert sphere.active_material == textures[1].material and textures[0].material.users == 1  # its fake user
    texture_names = [(t.material.name, t.image.name) for t in textures]
    made = images + [sheet]
    names, pixels = [i.name for i in made], [_pixels(i) for i in made]
    files = {Path(i["sfumato"]["file"]): Path(i["sfumato"]["file"]).read_bytes() for i in images}
    assert all(i.use_fake_user for i in made) and clip.use_fake_user
    history = [(item.image, item.label) for item in scene.sfumato_history]
    assert [image for image, _ in history] == names[:2]

    scene = _save_and_reopen(tmp_path / "house.blend")
    for name, before in zip(names, pixels):
        image = bpy.data.images.get(name)
        assert image is not None, f"{name!r} was dropped from the saved .blend"
        assert np.allclose(_pixels(image), before, atol=0.6 / 255), name  # the sheet: float -> 8-bit PNG
    clip = bpy.data.movieclips.get("Sfumato turntable Cube")
    assert clip is not None and clip.frame_duration == 3 and clip["sfumato"]["format"] == "gif"
    for material, image in texture_names:
        assert bpy.data.materials[material].node_tree.nodes["Image Texture"].image == bpy.data.images[image]
    assert all(path.read_bytes() == data for path, data in files.items())  # the files stay as they are
    # the history still opens every image, by the name it keeps
    assert [(item.image, item.label) for item in scene.sfumato_history] == history
    for index, item in enumerate(scene.sfumato_history):
        assert bpy.ops.sfumato.recall(index=index) == {"FINISHED"}
        assert scene_io.history_image(item) == bpy.data.images[names[index]]
        assert scene.sfumato.seed == json.loads(item.record)["settings"]["seed"] == [3, 4][index]
    # a datablock the user deleted comes back from its file, kept like any result
    bpy.data.images.remove(bpy.data.images[names[0]])
    reloaded = scene_io.history_image(scene.sfumato_history[0])
    assert reloaded is not None and reloaded.use_fake_user and reloaded.name == scene.sfumato_history[0].image
    assert np.allclose(_pixels(reloaded), pixels[0]) and reloaded["sfumato"]["seed"] == 3
    # neither datablock nor file: recall still restores the settings and says the image is gone
    bpy.data.images.remove(reloaded)
    file = Path(json.loads(scene.sfumato_history[0].record)["file"])
    file.rename(file.with_suffix(".moved"))
    assert scene_io.history_image(scene.sfumato_history[0]) is None
    assert bpy.ops.sfumato.recall(index=0) == {"FINISHED"} and scene.sfumato.seed == 3


def test_results_are_packed_when_chosen_or_in_a_temporary_folder(scene, tmp_path):
    scene_io, imaging = _module("scene_io"), _module("imaging")
    p = prefs()
    (plain,) = _fake_images(scene, [1], tmp_path)
    assert plain.packed_file is None and plain.use_fake_user  # by default results stay files
    output_folder = p.output_folder
    try:
        p.pack_results = True
        (chosen,) = _fake_images(scene, [2], tmp_path)
        assert chosen.packed_file is not None
        p.pack_results, p.output_folder = False, ""  # an unsaved .blend: results go to a temporary folder
        folder = imaging.output_folder(bpy.context)[0]
        assert str(folder).startswith(bpy.app.tempdir)
        temporary = _fake_images(scene, [5, 6])
        sheet = scene_io.contact_sheet(temporary, folder / "sheet.png", "sfumato contact sheet")
    finally:
        p.pack_results, p.output_folder = False, output_folder
    made = [chosen, *temporary, sheet]
    assert all(i.packed_file is not None and i.use_fake_user for i in made)
    names, pixels, plain = [i.name for i in made], [_pixels(i) for i in made], plain.name
    files = [Path(i.filepath_raw) for i in made]
    scene = _save_and_reopen(tmp_path / "packed.blend")
    for file in files:  # the temporary folder goes when Blender quits; packed results do not need it
        if file.is_file():
            shutil.move(file, file.with_suffix(".gone"))
    for name, before in zip(names, pixels):
        image = bpy.data.images[name]  # its pixels are read now, from the .blend
        assert image.packed_file is not None and np.allclose(_pixels(image), before, atol=0.6 / 255), name
    assert bpy.data.images[plain].packed_file is None


# ---- texturing one object leaves the others alone --------------------------------------------------------
def _house_lawn_statue():
    """A two-storey house without UVs (active), a lawn with two UV maps and two materials (selected too), and an
    unselected statue with its own UV map."""
    bpy.ops.wm.read_homefile(use_empty=True)
    s = bpy.context.scene.sfumato
    s.prompt, s.seed, s.steps = "a brick house", 5, 2
    bpy.ops.mesh.primitive_grid_add(x_subdivisions=9, y_subdivisions=7, size=30)
    lawn = bpy.context.active_object
    lawn.name = "Lawn"
    uv = lawn.data.uv_layers.active.data
    for i, loop in enumerate(uv):
        loop.uv = loop.uv * 4.0 + type(loop.uv)((0.01 * (i % 7), 0.0))  # tiled grass, not a fresh unwrap
    lawn.data.uv_layers.new(name="Detail")
    for name in ("Grass", "Path"):
        lawn.data.materials.append(bpy.data.materials.new(name))
    lawn.data.polygons.foreach_set("material_index", np.arange(len(lawn.data.polygons)) % 2)
    bpy.ops.mesh.primitive_monkey_add(location=(20, 0, 1))
    bpy.context.active_object.name = "Statue"
    bpy.ops.mesh.primitive_cube_add(size=1, location=(0, 0, 3))
    house = bpy.context.active_object
    house.name = "House"
    house.scale = (8, 6, 3)
    bpy.ops.object.transform_apply(scale=True)
    bpy.ops.object.mode_set(mode='EDIT')
    bpy.ops.mesh.select_all(action='DESELECT')
    bpy.ops.object.mode_set(mode='OBJECT')
    max(house.data.polygons, key=lambda f: f.center.z).select = True
    bpy.ops.object.mode_set(mode='EDIT')  # a second storey, then a roof
    bpy.ops.mesh.extrude_region_move(TRANSFORM_OT_translate={"value": (0, 0, 3)})
    bpy.ops.mesh.extrude_region_move(TRANSFORM_OT_translate={"value": (0, 0, 2)})
    bpy.ops.transform.resize(value=(1, 0.05, 1))
    bpy.ops.object.mode_set(mode='OBJECT')
    house.data.uv_layers.remove(house.data.uv_layers[0])
    bpy.data.objects["Statue"].select_set(False)
    lawn.select_set(True)
    return house, lawn


def _mesh_bytes(mesh) -> dict[str, bytes]:
    """Everything of a mesh's data as bytes: positions, topology, materials, every attribute, every UV map."""
    out = {"materials": repr([m.name if m else None for m in mesh.materials]).encode(),
           "uv_layers": repr([(u.name, u.active, u.active_render) for u in mesh.uv_layers]).encode()}
    for what, items, prop, size in (("co", mesh.vertices, "co", 3), ("edges", mesh.edges, "vertices", 2),
                                    ("loops", mesh.loops, "vertex_index", 1),
                                    ("loop_start", mesh.polygons, "loop_start", 1),
                                    ("material_index", mesh.polygons, "material_index", 1)):
        values = [0] * (len(items) * size)
        items.foreach_get(prop, values)
        out[what] = np.asarray(values).tobytes()
    for layer in mesh.uv_layers:
        values = np.empty(len(layer.data) * 2, np.float32)
        layer.data.foreach_get("uv", values)
        out[f"uv {layer.name}"] = values.tobytes()
    for attr in mesh.attributes:
        if attr.data_type != 'STRING':
            prop = "color" if "COLOR" in attr.data_type else "vector" if attr.data_type in ('FLOAT_VECTOR', 'FLOAT2') \
                else "value"
            out[f"attribute {attr.name}"] = np.asarray([np.ravel(getattr(e, prop)) for e in attr.data]).tobytes()
    return out


def _uv_fill(mesh) -> tuple[float, float]:
    """(island area, bounding-box area) of the active UV map, both as a fraction of the unit square."""
    uv = np.empty(len(mesh.loops) * 2, np.float32)
    mesh.uv_layers.active.data.foreach_get("uv", uv)
    uv = uv.reshape(-1, 2).astype(np.float64)
    assert uv.min() >= -1e-4 and uv.max() <= 1 + 1e-4, "islands outside the texture"
    area = 0.0
    for face in mesh.polygons:
        x, y = uv[face.loop_start:face.loop_start + face.loop_total].T
        area += 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    return area, float(np.prod(uv.max(0) - uv.min(0)))


def _selection() -> tuple[list[str], str | None]:
    view_layer = bpy.context.view_layer
    active = view_layer.objects.active
    return sorted(o.name for o in view_layer.objects if o.select_get()), active.name if active else None


def test_texturing_one_object_leaves_every_other_mesh_byte_identical(enabled, tmp_path):
    texturing = _module("texturing")
    house, lawn = _house_lawn_statue()
    others = {o.name: _mesh_bytes(o.data) for o in bpy.data.objects if o.type == 'MESH' and o != house}
    selection = _selection()
    assert selection == (["House", "Lawn"], "House")
    s = _module("props").texture_settings_from(bpy.context.scene.sfumato).replace(views=1)
    job = texturing.prepare(bpy.context, house, s, folder=tmp_path)
    assert job.context["uv_added"] and house.data.uv_layers.active.name == job.context["uv_map"]
    for name, before in others.items():
        after = _mesh_bytes(bpy.data.objects[name].data)
        assert after.keys() == before.keys() and not [k for k in before if before[k] != after[k]], name
    assert _selection() == selection and all(o.mode == 'OBJECT' for o in bpy.data.objects)
    island, bbox = _uv_fill(house.data)
    print(f"\nhouse UV fill with the lawn selected too: island area {island:.3f}, bounding box {bbox:.3f}")
    assert island > 0.5 and bbox > 0.8  # the bug: island area about 0.1-0.2 (the lawn's islands took the rest)


def test_texturing_keeps_slots_and_face_assignment_and_revert_puts_the_materials_back(enabled, tmp_path):
    """A house with five named slots (and a linked duplicate sharing its mesh): the texture shows in every slot of
    that object only, the mesh keeps its materials and every face its material index, twice; revert restores."""
    import sfumato_api

    texturing = _module("texturing")
    house, _ = _house_lawn_statue()
    house.data.uv_layers.new(name="UVMap")  # a map of its own: projection adds none, so the mesh is compared whole
    slots = ["Brick facade", "Roof tiles", "Window frames", "Concrete plinth", "Lawn"]
    for name in slots:
        house.data.materials.append(bpy.data.materials.new(name))
    house.data.polygons.foreach_set("material_index", np.arange(len(house.data.polygons)) % len(slots))
    plinth = bpy.data.materials.new("Own plinth")  # one slot linked to the object, as a user may have it
    house.material_slots[3].link, house.material_slots[3].material = 'OBJECT', plinth
    twin = bpy.data.objects.new("House twin", house.data)  # a linked duplicate: the same mesh
    bpy.context.scene.collection.objects.link(twin)
    before = _mesh_bytes(house.data)
    s = _module("props").texture_settings_from(bpy.context.scene.sfumato).replace(views=1)
    done = [_finish_fake(texturing.prepare(bpy.context, house, s, seed=seed, folder=tmp_path), tmp_path)
            for seed in (1, 2)]
    assert [slot.material for slot in house.material_slots] == [done[1].material] * len(slots)
    assert _mesh_bytes(house.data) == before  # materials of the mesh, face indices, UVs: as the user made them
    assert [slot.material.name for slot in twin.material_slots] == slots[:3] + ["Concrete plinth", "Lawn"]
    assert plinth.users >= 1 and all(bpy.data.materials.get(n) for n in slots)  # nothing dropped on save
    assert sfumato_api.revert(house) is True
    assert [slot.material.name for slot in house.material_slots] == slots[:3] + ["Own plinth", "Lawn"]
    assert [slot.link for slot in house.material_slots] == ['DATA'] * 3 + ['OBJECT', 'DATA']
    assert _mesh_bytes(house.data) == before and sfumato_api.revert(house) is False
    bare = bpy.data.objects["Statue"]  # no slots at all: one is added for the texture and taken away on revert
    bare.data.polygons.foreach_set("material_index", np.arange(len(bare.data.polygons)) % 3)  # left by an import
    bare_before = _mesh_bytes(bare.data)
    _finish_fake(texturing.prepare(bpy.context, bare, s.replace(mode="material"), seed=3, folder=tmp_path), tmp_path)
    assert len(bare.material_slots) == 1 and bare.active_material.name.startswith("Sfumato texture")
    assert sfumato_api.revert("Statue") and len(bare.material_slots) == 0
    assert _mesh_bytes(bare.data) == bare_before  # its faces' material indices too, though it has no slot now
    twin = bpy.data.objects.new("Statue twin", bare.data)  # a linked duplicate textured too: its texture stays
    bpy.context.scene.collection.objects.link(twin)
    for target in (bare, twin):
        _finish_fake(texturing.prepare(bpy.context, target, s.replace(mode="material"), seed=4, folder=tmp_path),
                     tmp_path)
    shown = twin.active_material
    assert sfumato_api.revert("Statue") and bare.active_material is None
    assert twin.active_material == shown and shown.name.startswith("Sfumato texture")
    assert sfumato_api.revert("Statue twin") and len(twin.material_slots) == 0
    assert _mesh_bytes(bare.data) == bare_before


def test_a_hidden_object_is_unwrapped_alone_and_stays_hidden(enabled):
    house, lawn = _house_lawn_statue()
    lawn_before = _mesh_bytes(lawn.data)
    house.hide_set(True)
    selection = _selection()
    assert _module("texturing").ensure_uv_map(house) and house.hide_get()
    assert _selection() == selection and _mesh_bytes(lawn.data) == lawn_before and _uv_fill(house.data)[0] > 0.5


def test_a_failed_unwrap_restores_the_selection_and_touches_nothing(enabled, monkeypatch):
    texturing, scene_io = _module("texturing"), _module("scene_io")
    house, lawn = _house_lawn_statue()
    lawn_before = _mesh_bytes(lawn.data)
    selection = _selection()

    def fail(**_):
        assert house.mode == 'EDIT' and lawn.mode == 'OBJECT'  # the house alone is in Edit Mode
        raise RuntimeError("Smart UV Project failed")

    monkeypatch.setattr(bpy.ops, "uv", SimpleNamespace(smart_project=fail), raising=False)
    with pytest.raises(scene_io.SceneProblem, match="could not unwrap 'House'.*Smart UV Project failed"):
        texturing.ensure_uv_map(house)
    monkeypatch.undo()
    assert _selection() == selection and all(o.mode == 'OBJECT' for o in bpy.data.objects)
    assert _mesh_bytes(lawn.data) == lawn_before
