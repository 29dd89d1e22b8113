"""Texture mode, shared by the operator and the scripting API: a mesh out as GLB, a material back.

1. validate the settings and the object (a mesh whose evaluated geometry has faces);
2. projection mode: make sure the object has a UV map (Smart UV Project on the object alone when it
   has none, islands packed to fill the texture, since the texture must fit the UV map the object keeps);
3. export the object alone as GLB (``export_glb``): a temporary copy with its modifiers applied, only
   its active UV map, and one plain material, so that the engine sees one primitive whose TEXCOORD_0 is
   that UV map;
4. build the engine's params (``request.params``) and the output path;
5. the caller runs the job (interactive: queue + timer, one object after the other; background: blocking);
6. ``finish``: the texture PNG becomes an image datablock and a material "Sfumato texture <object>" is shown
   in every slot of that object alone (``assign``: object-linked slots, faces keep their material index, the
   mesh keeps its own materials), with the provenance on both; ``revert`` puts the user's materials back.

UV convention: the glTF exporter writes (u, 1 - v) and the engine's loader flips it back, so the
PNG maps onto the exported UV map exactly as Blender has it: image loaded as it is, no flip.
Material mode ignores the UV map: the PNG is a seamless tile laid with box projection in object
coordinates, scaled so that one tile covers ``tile_size`` metres.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bpy

from . import engine, prefs, request, runtime, scene_io, slot_table
from .imaging import Prepared, output_folder

SMART_UV_ANGLE = 1.15192  # radians (66 degrees), Smart UV Project's own default
PACK_MARGIN = 0.01  # between UV islands, as a fraction of the packed size (Pack Islands' "Scaled" margin)
BOX_BLEND = 0.2  # how softly box projection blends where a surface turns from one axis to the next


@dataclass
class Textured:
    """What one finished texture job made."""

    object: Any  # bpy.types.Object
    material: Any  # bpy.types.Material
    image: Any  # bpy.types.Image
    glb: str
    texture: str
    metadata: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    slots: dict[str, Any] = field(default_factory=dict)  # material mode: slot name -> its new material


# ---- 1. what can be textured ------------------------------------------------------------------------
def leave_edit_mode() -> None:
    """Edits made in Edit Mode reach the mesh data (and so the export) only in Object Mode."""
    active = bpy.context.view_layer.objects.active
    if active is not None and active.mode != 'OBJECT':
        bpy.ops.object.mode_set(mode='OBJECT')


def selected_meshes(context) -> list[bpy.types.Object]:
    """The selected mesh objects, by name (one job each, in this order)."""
    return sorted((o for o in getattr(context, "selected_objects", None) or [] if o.type == 'MESH'),
                  key=lambda o: o.name)


def face_count(obj: bpy.types.Object) -> int:
    """Faces of the object as it renders (modifiers applied)."""
    evaluated = obj.evaluated_get(bpy.context.evaluated_depsgraph_get())
    return len(evaluated.data.polygons) if evaluated.type == 'MESH' else 0


def check(obj: bpy.types.Object, s: request.TextureSettings) -> None:
    """Raise ``request.BadSetting`` / ``scene_io.SceneProblem`` with the reason ``obj`` cannot be textured."""
    request.first_problem(s)
    if obj is None or obj.type != 'MESH':
        what = "nothing" if obj is None else f"{obj.name!r}, a {obj.type.lower()}"
        raise scene_io.SceneProblem(f"texture mode needs a mesh object, got {what}")
    if face_count(obj) == 0:
        raise scene_io.SceneProblem(f"the mesh {obj.name!r} has no faces: there is no surface to texture")


# ---- 2. a UV map -----------------------------------------------------------------------------------
def ensure_uv_map(obj: bpy.types.Object) -> bool:
    """Give ``obj`` a UV map with Smart UV Project when it has none; True when one was added. Blender's
    operators work on the current view layer, so ``obj`` must be in it. Only ``obj`` is unwrapped: other
    selected meshes are never put in Edit Mode, and the selection comes back as it was."""
    if obj.data.uv_layers:
        return False
    view_layer = bpy.context.view_layer
    if obj.name not in view_layer.objects:
        raise scene_io.SceneProblem(f"{obj.name!r} has no UV map and is not in the view layer "
                                    f"{view_layer.name!r}, so none can be unwrapped: add a UV map to it")
    leave_edit_mode()
    try:
        with alone(obj):
            bpy.ops.object.mode_set(mode='EDIT')
            bpy.ops.mesh.select_all(action='SELECT')
            bpy.ops.uv.smart_project(angle_limit=SMART_UV_ANGLE, island_margin=0.02)
            bpy.ops.uv.select_all(action='SELECT')
            bpy.ops.uv.pack_islands(rotate=True, margin=PACK_MARGIN)  # the islands fill the texture
    except RuntimeError as exc:
        raise scene_io.SceneProblem(f"could not unwrap {obj.name!r} (Smart UV Project): {exc}; "
                                    "add a UV map to it yourself") from None
    return True


@contextmanager
def alone(obj: bpy.types.Object):
    """``obj`` the only selected object and the active one while the block runs (shown, if it was hidden),
    so that operators (Edit Mode above all) touch nothing else; then Object Mode, and the selection, the
    active object and ``obj``'s visibility exactly as they were, also when the block fails."""
    view_layer = bpy.context.view_layer
    selected, active = [o for o in view_layer.objects if o.select_get()], view_layer.objects.active
    hidden = obj.hide_get(), obj.hide_viewport
    try:
        for other in selected:
            other.select_set(False)
        obj.hide_viewport = False
        obj.hide_set(False)
        obj.select_set(True)
        view_layer.objects.active = obj
        yield obj
    finally:
        if obj.mode != 'OBJECT':
            bpy.ops.object.mode_set(mode='OBJECT')
        obj.select_set(False)
        obj.hide_set(hidden[0])
        obj.hide_viewport = hidden[1]
        for other in selected:
            other.select_set(True)
        view_layer.objects.active = active


# ---- 3. the mesh as GLB -----------------------------------------------------------------------------
def export_glb(obj: bpy.types.Object, path: Path, *, by_slot: bool = False) -> str:
    """Export ``obj`` alone, as it renders, to ``path``; returns the UV map exported (``""`` for none).

    The export is of a temporary copy: its data keeps only the active UV map (the exporter writes every
    UV map as TEXCOORD_0, 1, ... in their order) and one plain material (trimesh, the engine's loader,
    drops the UVs of a primitive without one; several materials would split the mesh into primitives).
    ``by_slot`` (material mode): each slot keeps the material the user gave it (``slot_table.original_materials``),
    exported by name only (no images), so the engine sees one primitive per material, named as the slot."""
    scene, view_layer = bpy.context.scene, bpy.context.view_layer  # the exporter's
    uv_map = obj.data.uv_layers.active.name if obj.data.uv_layers.active else ""
    copy = obj.copy()
    copy.data = obj.data.copy()
    copy.animation_data_clear()
    copy.parent = None
    copy.matrix_world = obj.matrix_world.copy()
    for layer in [layer for layer in copy.data.uv_layers if layer.name != uv_map]:
        copy.data.uv_layers.remove(layer)
    material = bpy.data.materials.new(".sfumato export")
    originals = slot_table.original_materials(obj) if by_slot else []
    for slot in copy.material_slots:  # the copy's own links to object-level materials go, users counted right
        slot.link, slot.material = 'OBJECT', None
    indices = clear_slots(copy.data)
    for original in originals if by_slot else [material]:  # a mesh without slots: faces without a material
        copy.data.materials.append(original)
    if originals:
        copy.data.polygons.foreach_set("material_index", indices)
    for slot in copy.material_slots:
        slot.link = 'DATA'
    selected, active = list(bpy.context.selected_objects), view_layer.objects.active
    scene.collection.objects.link(copy)
    try:
        for other in selected:
            other.select_set(False)
        copy.hide_viewport = copy.hide_select = False
        copy.hide_set(False)
        copy.select_set(True)
        view_layer.objects.active = copy
        path.parent.mkdir(parents=True, exist_ok=True)
        bpy.ops.export_scene.gltf(filepath=str(path), export_format='GLB', use_selection=True,
                                  export_apply=True, export_yup=True, export_texcoords=True, export_normals=True,
                                  export_materials='EXPORT', export_image_format='NONE',
                                  export_animations=False, export_morph=False,
                                  export_skins=False, export_cameras=False, export_lights=False,
                                  export_extras=False)
    finally:
        mesh = copy.data
        bpy.data.objects.remove(copy)
        bpy.data.meshes.remove(mesh)
        bpy.data.materials.remove(material)
        for other in selected:
            other.select_set(True)
        view_layer.objects.active = active
    if not path.is_file():
        raise scene_io.SceneProblem(f"the glTF exporter wrote no file for {obj.name!r} at {path}")
    return uv_map


# ---- 4. the job --------------------------------------------------------------------------------------
def prepare(context, obj: bpy.types.Object, s: request.TextureSettings, *, seed: int | None = None,
            folder: Path | None = None, repaint: bool = False) -> Prepared:
    """Steps 1-4 for one object. Projection mode may add a UV map to ``obj`` (``context["uv_added"]``). ``repaint``:
    paint the faces selected in Edit Mode again, keeping the rest of the projection texture ``obj`` wears."""
    check(obj, s)
    folder, pack = (Path(folder), False) if folder is not None else output_folder(context)
    folder.mkdir(parents=True, exist_ok=True)
    inputs: dict[str, str] = {}
    if repaint:
        from . import repaint as repainting

        s = s.replace(mode="projection", variant="sequential")
        inputs["texture_in"], uv_map = repainting.current_texture(obj)
        layers = obj.data.uv_layers
        if uv_map and layers.get(uv_map) is not None and layers.active.name != uv_map:
            raise scene_io.SceneProblem(f"the active UV map of {obj.name!r} is {layers.active.name!r}, its texture "
                                        f"lies on {uv_map!r}: make that one active to paint faces again")
    uv_added = ensure_uv_map(obj) if s.mode != "material" else False  # projection and sds paint the UV map
    if s.mode == "material":
        s = with_table(obj, s)
    stem = request.output_stem(folder, f"{obj.name} {s.prompt}")
    mesh = stem.with_name(stem.name + ".mesh.glb")
    uv_map = export_glb(obj, mesh, by_slot=s.mode == "material")
    if repaint:
        part = stem.with_name(stem.name + ".repaint.glb")
        repainting.export_selection(obj, part, export_glb)
        inputs["repaint"] = str(part)
    seed = request.pick_seed(s) if seed is None else seed
    params = request.params(s, seed=seed, default_bundle=prefs.get(context).default_bundle,
                            inputs={"mesh": str(mesh), **inputs})
    job_context = {"settings": dataclasses.asdict(s), "object": obj.name, "uv_map": uv_map, "uv_added": uv_added,
                   "mesh": str(mesh), "pack": pack, "scene": context.scene.name}
    return Prepared(params, f"{stem}_s{seed}.glb", job_context)


def with_table(obj: bpy.types.Object, s: request.TextureSettings) -> request.TextureSettings:
    """``s`` with the object's slot table (read again first: ``slot_table.sync``); slot prompts, tile sizes and an
    ``only`` given in ``s`` (scripts) win over the table's rows of the same slots."""
    slot_table.sync(obj)
    table = slot_table.entries(obj)
    merged = {}
    for name in ("slots", "slot_tiles"):
        given = {entry.partition("=")[0]: entry for entry in getattr(s, name)}
        merged[name] = tuple(e for e in table[name] if e.partition("=")[0] not in given) + tuple(given.values())
    merged["only"] = tuple(s.only) or table["only"]
    return s.replace(**merged)


def run(config: engine.EngineConfig, job: Prepared, *, index: int = 0, count: int = 1,
        on_event=None) -> Textured:
    """Blocking (background mode, scripts): run one object's job and apply it. Raises ``engine.EngineError``
    when the job fails, ``scene_io.SceneProblem`` when its object went away."""
    return finish(runtime.run_job(config, "texture", job, _title(job, index + 1, count), on_event=on_event))


def start(config: engine.EngineConfig, jobs: list[Prepared]) -> engine.JobState:
    """Interactive: start the first object's job; ``runtime`` calls ``start_next`` once a result is applied."""
    runtime.LAST_MESSAGE = None
    return _launch(dataclasses.asdict(config), [dataclasses.asdict(job) for job in jobs], 1, len(jobs))


def start_next(state: engine.JobState) -> engine.JobState | None:
    """After ``state``'s result was applied: start the next pending object's job, if any."""
    pending = state.context.get("pending") or []
    if not pending:
        return None
    return _launch(state.context["config"], pending, state.context["index"] + 1, state.context["count"])


def _launch(config: dict[str, Any], jobs: list[dict[str, Any]], index: int, count: int) -> engine.JobState:
    """Start ``jobs[0]`` (as plain data); the rest ride along in its state for ``start_next``."""
    job = Prepared(**jobs[0])
    state = engine.JobState(tag="texture", context={**job.context, "params": job.params, "config": config,
                                                    "pending": jobs[1:], "index": index, "count": count},
                            title=_title(job, index, count), on_final=on_final)
    runtime.CURRENT = state
    runtime.track(state)
    runtime.SESSION.start(engine.EngineConfig(**config), state, "texture", job.params, job.output, preview_every=1)
    return state


def _title(job: Prepared, index: int, count: int) -> str:
    return job.context["object"] + (f" ({index}/{count})" if count > 1 else "")


def on_final(state: engine.JobState, kind: str) -> None:
    """An interactive texture job ended: apply its material, then start the next selected object's job; when it
    failed, say which objects were never started."""
    if kind != "result":
        left = not_done(state)
        if left:
            state.message += f"; not textured: {', '.join(left)}"
        return
    runtime.applying(finish, "texture", lambda done: f"{done.object.name}: " + "; ".join(done.warnings)
                     if done.warnings else None)(state, kind)
    if state.status != "error":
        start_next(state)


def not_done(state: engine.JobState) -> list[str]:
    """The objects of an interactive run that were never started because ``state`` failed."""
    return [job["context"]["object"] for job in state.context.get("pending") or []]


# ---- 6. the result as a material ---------------------------------------------------------------------
def finish(state: engine.JobState) -> Textured:
    """Step 6, on the main thread: load the texture and give the object its material."""
    assert state.result is not None
    jc, result = state.context, state.result
    s = request.TextureSettings(**jc["settings"])
    obj = bpy.data.objects.get(jc["object"])
    if obj is None or obj.type != 'MESH':
        raise scene_io.SceneProblem(f"the object {jc['object']!r} is gone (renamed or deleted while it was "
                                    f"textured); the texture is at {result.get('texture')}")
    meta = dict(result.get("metadata") or {})
    mode = result.get("mode", s.mode)
    tile_size = float(result.get("tile_size", s.tile_size))
    extra = {"texture_mode": mode, "object": obj.name, "file": result["texture"], "glb": result.get("glb"),
             "mesh": jc["mesh"], "tile_size": tile_size if mode == "material" else None,
             "uv_map": jc["uv_map"] if mode != "material" else None, "uv_added": jc["uv_added"] or None,
             "warnings": result.get("warnings") or None, "metrics": result.get("metrics") or None,
             "sidecar": result.get("sidecar")}
    provenance = request.id_properties({"prompt": s.prompt, "seed": state.context.get("params", {}).get("seed"),
                                        **meta}, extra)
    seed = provenance.get("seed", 0)
    image = scene_io.load_result(result["texture"], request.result_name(f"{obj.name}: {s.prompt}", int(seed)),
                                 provenance, pack=jc["pack"])
    name = request.material_name(obj.name)
    made: dict[str, Any] = {}
    if mode == "material" and result.get("slots"):
        for record in result["slots"]:
            made[record["name"] or slot_table.NO_MATERIAL] = slot_material(obj, record, provenance, jc["pack"])
        material = next(iter(made.values()))
        image = bpy.data.images.get(material["sfumato_images"][0]) or image
        assign_slots(obj, made)
    else:
        if mode == "material":
            scale = request.tile_scale(tile_size, tuple(obj.matrix_world.to_scale()))
            material = box_material(name, image, scale)
        else:
            material = uv_material(name, image, jc["uv_map"])
        material["sfumato"] = provenance
        scene_io.keep(material)  # an earlier result stays in the .blend when a later one replaces it
        assign(obj, material)
    scene_io.show_in_image_editors(image)
    return Textured(obj, material, image, str(result.get("glb", "")), result["texture"], meta,
                    list(result.get("warnings") or []), made)


MAPS = ("normal", "roughness", "height")  # the maps a material-mode slot comes with, all Non-Color data


def slot_material(obj: bpy.types.Object, record: dict[str, Any], provenance: dict[str, Any],
                  pack: bool) -> bpy.types.Material:
    """One slot's result as a material "Sfumato <slot>": its colour tile and maps as images (kept in the .blend),
    box-mapped at the slot's real tile size, with the slot's provenance on each."""
    label = record["name"] or slot_table.NO_MATERIAL
    own = request.id_properties({**provenance, "prompt": record["prompt"], "seed": record["seed"],
                                 "tile_size": record["tile_size"], "slot": label, "file": record["texture"]})
    images = {"colour": scene_io.load_result(record["texture"], request.result_name(f"{label}: {record['prompt']}",
                                                                                     int(record["seed"])), own,
                                             pack=pack)}
    for kind in MAPS:
        if record.get(kind):
            image = scene_io.load_result(record[kind], request.result_name(f"{label} {kind}: {record['prompt']}",
                                                                           int(record["seed"])),
                                         {**own, "map": kind, "file": record[kind]}, pack=pack)
            image.colorspace_settings.name = 'Non-Color'
            images[kind] = image
    scale = request.tile_scale(float(record["tile_size"]), tuple(obj.matrix_world.to_scale()))
    name = request.slot_material_name(label) if record["name"] else request.material_name(obj.name)
    material = pbr_box_material(name, images, scale)
    material["sfumato"] = own
    material["sfumato_images"] = [image.name for image in images.values()]
    return scene_io.keep(material)


def _material(name: str) -> tuple[bpy.types.Material, Any, Any]:
    """A fresh node material with only a Principled BSDF into the output: (material, nodes, bsdf)."""
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender 4.x; from 5.0 materials always have nodes (use_nodes is deprecated)
        material.use_nodes = True
    nodes = material.node_tree.nodes
    nodes.clear()
    output = nodes.new("ShaderNodeOutputMaterial")
    output.location = (300, 0)
    bsdf = nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.location = (0, 0)
    material.node_tree.links.new(bsdf.outputs["BSDF"], output.inputs["Surface"])
    return material, nodes, bsdf


def uv_material(name: str, image: bpy.types.Image, uv_map: str) -> bpy.types.Material:
    """Projection: UV Map (the exported layer) -> Image Texture -> Base Color."""
    material, nodes, bsdf = _material(name)
    links = material.node_tree.links
    uv = nodes.new("ShaderNodeUVMap")
    uv.uv_map, uv.location = uv_map, (-700, 0)
    tex = nodes.new("ShaderNodeTexImage")
    tex.image, tex.location = image, (-450, 0)
    tex.extension = 'EXTEND'  # texels past an island's edge repeat it, never the far side of the atlas
    links.new(uv.outputs["UV"], tex.inputs["Vector"])
    links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    return material


def box_material(name: str, image: bpy.types.Image, scale: tuple[float, float, float]) -> bpy.types.Material:
    """Material: Texture Coordinate (Object) -> Mapping (scale = 1 / tile in object units) -> Image Texture
    with box projection -> Base Color. The tile repeats along every axis at real-world size."""
    material, nodes, bsdf = _material(name)
    links = material.node_tree.links
    coords = nodes.new("ShaderNodeTexCoord")
    coords.location = (-950, 0)
    mapping = nodes.new("ShaderNodeMapping")
    mapping.vector_type, mapping.location = 'POINT', (-700, 0)
    mapping.inputs["Scale"].default_value = scale
    tex = nodes.new("ShaderNodeTexImage")
    tex.image, tex.location = image, (-450, 0)
    tex.projection, tex.projection_blend, tex.extension = 'BOX', BOX_BLEND, 'REPEAT'
    links.new(coords.outputs["Object"], mapping.inputs["Vector"])
    links.new(mapping.outputs["Vector"], tex.inputs["Vector"])
    links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    return material


def pbr_box_material(name: str, images: dict[str, bpy.types.Image],
                     scale: tuple[float, float, float]) -> bpy.types.Material:
    """``box_material`` with the maps: normal through a Normal Map node, roughness into Roughness, height through a
    Displacement node (bump, at a few millimetres) into the output's Displacement; every map box-projected with the
    colour so they stay aligned."""
    material = box_material(name, images["colour"], scale)
    nodes, links = material.node_tree.nodes, material.node_tree.links
    bsdf = next(n for n in nodes if n.type == 'BSDF_PRINCIPLED')
    colour = next(n for n in nodes if n.type == 'TEX_IMAGE')
    vector = colour.inputs["Vector"].links[0].from_socket
    output = next(n for n in nodes if n.type == 'OUTPUT_MATERIAL')

    def tex(kind: str, y: int):
        node = nodes.new("ShaderNodeTexImage")
        node.image, node.location = images[kind], (-450, y)
        node.projection, node.projection_blend, node.extension = 'BOX', BOX_BLEND, 'REPEAT'
        links.new(vector, node.inputs["Vector"])
        return node

    if "roughness" in images:
        links.new(tex("roughness", -300).outputs["Color"], bsdf.inputs["Roughness"])
    if "normal" in images:
        normal_map = nodes.new("ShaderNodeNormalMap")
        normal_map.location = (-200, -600)
        links.new(tex("normal", -600).outputs["Color"], normal_map.inputs["Color"])
        links.new(normal_map.outputs["Normal"], bsdf.inputs["Normal"])
    if "height" in images:
        displacement = nodes.new("ShaderNodeDisplacement")
        displacement.location = (0, -900)
        displacement.inputs["Scale"].default_value = DISPLACEMENT_METRES
        links.new(tex("height", -900).outputs["Color"], displacement.inputs["Height"])
        links.new(displacement.outputs["Displacement"], output.inputs["Displacement"])
    return material


DISPLACEMENT_METRES = 0.005  # how deep the height map's relief reads (a brick joint is about this deep)
ORIGINAL = slot_table.ORIGINAL  # the object's slots as the user had them, for ``revert``


def assign_slots(obj: bpy.types.Object, made: dict[str, bpy.types.Material]) -> None:
    """Each slot whose own material (as the user had it) is named in ``made`` shows its new material, linked to the
    object; slots not in ``made`` (``only``) keep what they show; faces keep their material index."""
    record_original(obj)
    for slot, original in zip(obj.material_slots, slot_table.original_materials(obj)):
        name = original.name if original is not None else slot_table.NO_MATERIAL
        if name in made:
            slot.link = 'OBJECT'
            slot.material = made[name]
    if not obj.material_slots and slot_table.NO_MATERIAL in made:
        obj.data.materials.append(None)
        obj.material_slots[0].link = 'OBJECT'
        obj.material_slots[0].material = made[slot_table.NO_MATERIAL]


def record_original(obj: bpy.types.Object) -> None:
    """The first time: the slots as they are, on the object, for ``revert``; object-linked materials get a fake user
    so they survive being replaced."""
    if ORIGINAL not in obj:
        slots = [{"link": slot.link, "object_material": slot.material.name if slot.link == 'OBJECT' and
                  slot.material else ""} for slot in obj.material_slots]
        obj[ORIGINAL] = json.dumps({"slots": slots, "added_slot": not slots})
    for slot in obj.material_slots:  # an object-linked material replaced here would lose its last user
        if slot.link == 'OBJECT' and slot.material is not None and not slot.material.get("sfumato"):
            slot.material.use_fake_user = True


def clear_slots(mesh: bpy.types.Mesh) -> list[int]:
    """Empty ``mesh``'s material slots and return each face's material index as it was: Blender resets every face to
    0 when the slots are cleared, so a caller puts them back (``foreach_set``) and no face assignment is lost."""
    indices = [0] * len(mesh.polygons)
    mesh.polygons.foreach_get("material_index", indices)
    mesh.materials.clear()
    return indices


def assign(obj: bpy.types.Object, material: bpy.types.Material) -> None:
    """Show ``material`` in every material slot of ``obj`` without touching the user's work: each slot is linked to
    the object (so the mesh, which other objects may share, keeps its materials), faces keep their material
    index, and the slots as they were are recorded on the object the first time, for ``revert``. A mesh without
    slots gets one (``revert`` takes it away again)."""
    record_original(obj)
    if not obj.material_slots:
        obj.data.materials.append(None)
    for slot in obj.material_slots:
        slot.link = 'OBJECT'
        slot.material = material


def _slot_shown_elsewhere(obj: bpy.types.Object) -> bool:
    """Whether another object sharing ``obj``'s mesh shows a material in a slot: removing the mesh's slot would take
    it from that object too (a texture the user made there, or their own object-linked material)."""
    return any(other is not obj and other.data == obj.data and any(slot.material for slot in other.material_slots)
               for other in bpy.data.objects)


def revert(obj: bpy.types.Object) -> bool:
    """Put back the materials ``obj`` had before it was first textured; False when there is nothing to revert.
    The textures made since stay in the file."""
    if ORIGINAL not in obj:
        return False
    record = json.loads(obj[ORIGINAL])
    for slot, was in zip(obj.material_slots, record["slots"]):
        slot.link = 'OBJECT'
        slot.material = bpy.data.materials.get(was["object_material"]) if was["object_material"] else None
        slot.link = was["link"]
    if record["added_slot"] and obj.material_slots and not record["slots"]:  # the slot ``assign`` added: empty
        slot = obj.material_slots[0]
        slot.link = 'OBJECT'
        slot.material = None
        slot.link = 'DATA'
    if record["added_slot"] and len(obj.data.materials) == 1 and obj.data.materials[0] is None and \
            not obj.material_slots[0].material:
        if _slot_shown_elsewhere(obj):  # a linked duplicate textured since: the last one reverted takes the slot
            for other in bpy.data.objects:
                if other is not obj and other.data == obj.data and ORIGINAL in other:
                    other[ORIGINAL] = json.dumps(dict(json.loads(other[ORIGINAL]), added_slot=True))
        else:  # the one empty slot ``assign`` added (``pop`` leaves the object's slot behind); faces keep their index
            obj.data.polygons.foreach_set("material_index", clear_slots(obj.data))
    del obj[ORIGINAL]
    return True
