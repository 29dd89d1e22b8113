"""The slot table of a mesh object: one row per material of the model (its name, a prompt prefilled from the name,
a tile size, on/off), stored on the object so it is saved with the .blend and follows the object.

Rows are keyed by the name of the material the user gave the slot (``original_materials``: the slots as they were
before Sfumato first textured the object, so a second run still sees "Brick facade", not "Sfumato Brick facade").
Slots with no material share the row ``NO_MATERIAL``, the engine's name for faces without one. ``entries`` turns
the rows into the texture job's ``slots``, ``slot_tiles`` and ``only`` fields.
"""

from __future__ import annotations

import json
from typing import Any

import bpy
from bpy.props import BoolProperty, CollectionProperty, FloatProperty, IntProperty, StringProperty

from .limits import schema

NO_MATERIAL = schema.NO_MATERIAL  # the engine's name for faces without a material
ORIGINAL = "sfumato_original_materials"  # the object's slots as the user had them (texturing.assign writes it)
T = schema.TextureRequest


class SfumatoSlot(bpy.types.PropertyGroup):
    """One row: ``name`` is the slot's material name."""

    prompt: StringProperty(name="Prompt", description="What this slot's material is; the panel's prompt is added as "
                           "a shared style. Empty: the name says it (or the panel's prompt, for names like "
                           "'Material.001')")
    tile_size: FloatProperty(name="Tile", description="Metres one tile covers on this slot (0 = from the material "
                             "its words name, e.g. 0.9 m for brick, or the panel's tile size)", min=0.0,
                             soft_max=T.__dataclass_fields__["tile_size"].metadata["spec"].hi, unit='LENGTH')
    enabled: BoolProperty(name="On", description="Texture this slot", default=True)


def original_materials(obj: bpy.types.Object) -> list[Any]:
    """The material of each slot as the user had it before Sfumato textured the object (None for an empty slot)."""
    record = json.loads(obj[ORIGINAL]) if ORIGINAL in obj else None
    out = []
    for i, slot in enumerate(obj.material_slots):
        was = record["slots"][i] if record and i < len(record["slots"]) else None
        if was is None:  # not recorded: as it is, unless it is the slot Sfumato added to a mesh without any
            out.append(None if record and record.get("added_slot") and i == 0 else slot.material)
        elif was["link"] == 'OBJECT':
            out.append(bpy.data.materials.get(was["object_material"]) if was["object_material"] else None)
        else:
            out.append(obj.data.materials[i] if i < len(obj.data.materials) else None)
    return out


def slot_names(obj: bpy.types.Object) -> list[str]:
    """The table's row names for ``obj``, in slot order, each once; a mesh without slots has one unnamed row."""
    names = [m.name if m is not None else NO_MATERIAL for m in original_materials(obj)]
    return list(dict.fromkeys(names)) or [NO_MATERIAL]


def in_sync(obj: bpy.types.Object) -> bool:
    return [row.name for row in obj.sfumato_slots] == slot_names(obj)


def sync(obj: bpy.types.Object) -> None:
    """Rows for the object's slots as they are now: edits of rows still there are kept, new slots get a row
    prefilled from their name, rows of slots that are gone are dropped."""
    if in_sync(obj):
        return
    kept = {row.name: (row.prompt, row.tile_size, row.enabled) for row in obj.sfumato_slots}
    obj.sfumato_slots.clear()
    for name in slot_names(obj):
        row = obj.sfumato_slots.add()
        row.name = name
        row.prompt, row.tile_size, row.enabled = kept.get(name, (schema.slot_prompt(name)
                                                                 if name != NO_MATERIAL else "", 0.0, True))


def used_names(obj: bpy.types.Object) -> set[str]:
    """The rows whose slots some face uses (a slot no face uses is not in the exported mesh)."""
    indices = [0] * len(obj.data.polygons)
    obj.data.polygons.foreach_get("material_index", indices)
    names = [m.name if m is not None else NO_MATERIAL for m in original_materials(obj)] or [NO_MATERIAL]
    return {names[min(i, len(names) - 1)] for i in set(indices)}


def entries(obj: bpy.types.Object) -> dict[str, tuple[str, ...]]:
    """The rows as the texture job's fields: ``slots`` (NAME=PROMPT for rows with a prompt), ``slot_tiles``
    (NAME=METRES for rows with a size) and ``only`` (the rows turned on, when some are off); rows of slots no face
    uses are left out."""
    used = used_names(obj)
    rows = [row for row in obj.sfumato_slots if row.name in used]
    on = [row.name for row in rows if row.enabled]
    return {"slots": tuple(f"{row.name}={row.prompt.strip()}" for row in rows if row.prompt.strip()),
            "slot_tiles": tuple(f"{row.name}={row.tile_size:g}" for row in rows if row.tile_size > 0),
            "only": tuple(on) if len(on) < len(rows) else ()}


class SFUMATO_UL_slots(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        row.prop(item, "enabled", text="")
        row.label(text=item.name, icon='MATERIAL')
        row.prop(item, "prompt", text="")
        row.prop(item, "tile_size", text="")
        redo = row.operator("sfumato.texture", text="", icon='FILE_REFRESH')
        redo.mode, redo.only = "material", item.name


class SFUMATO_OT_read_slots(bpy.types.Operator):
    """Read the active object's material slots into the slot table (edits of slots still there are kept)"""

    bl_idname = "sfumato.read_slots"
    bl_label = "Read slots"
    bl_options = {'UNDO'}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == 'MESH'

    def execute(self, context):
        sync(context.active_object)
        return {'FINISHED'}


def draw(layout, context) -> None:
    """The table of the active object, in the Texture section (material mode)."""
    obj = context.active_object
    if obj is None or obj.type != 'MESH':
        layout.label(text="Select a mesh to see its material slots", icon='INFO')
        return
    head = layout.row(align=True)
    head.label(text=f"Slots of {obj.name}")
    head.operator("sfumato.read_slots", text="", icon='FILE_REFRESH')
    if not in_sync(obj):
        layout.label(text="The slots changed: read them again (Texture reads them too)", icon='ERROR')
    if len(obj.sfumato_slots):
        layout.template_list("SFUMATO_UL_slots", "", obj, "sfumato_slots", obj, "sfumato_slot_index", rows=3)


classes = (SfumatoSlot, SFUMATO_UL_slots, SFUMATO_OT_read_slots)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Object.sfumato_slots = CollectionProperty(type=SfumatoSlot)
    bpy.types.Object.sfumato_slot_index = IntProperty(default=0)


def unregister() -> None:
    del bpy.types.Object.sfumato_slot_index
    del bpy.types.Object.sfumato_slots
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
