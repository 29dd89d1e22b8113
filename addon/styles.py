"""The Styles list: a bundle's LoRAs (a practice's own looks), each on or off with its strength, sent with every job.

The list is filled from what the engine says the bundle holds (``capabilities``' ``loras``, after Check engine or
"Refresh styles"); a row keeps its strength when the list is refreshed, and rows of LoRAs the bundle no longer has
are dropped so that no job asks for a missing file. The enabled rows become the jobs' ``loras`` entries (NAME:SCALE,
``props._read``), so images, textures, turntables and assets all wear the style; the provenance of each output
names each LoRA with its hash and scale (the engine's ``core/lora.py``).
"""

from __future__ import annotations

import bpy

from . import engine, prefs, runtime


def bundle_name(context) -> str:
    s = context.scene.sfumato
    return s.bundle or prefs.get(context).default_bundle


def sync(rows, names: list[str]) -> None:
    """Make ``rows`` (the Styles collection) list exactly ``names``, keeping the on/off and strength of the rows
    that stay."""
    for index in reversed(range(len(rows))):
        if rows[index].name not in names:
            rows.remove(index)
    have = {row.name for row in rows}
    for name in names:
        if name not in have:
            rows.add().name = name


class SFUMATO_UL_styles(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        row.prop(item, "enabled", text="")
        row.label(text=item.name, icon='BRUSH_DATA')
        sub = row.row(align=True)
        sub.active = item.enabled
        sub.prop(item, "strength", text="")


class SFUMATO_OT_styles_refresh(bpy.types.Operator):
    """List the bundle's styles (its LoRAs) as the engine sees them"""

    bl_idname = "sfumato.styles_refresh"
    bl_label = "Refresh styles"

    def execute(self, context):
        name = bundle_name(context)
        names = runtime.bundle_capability(name, "loras")
        if names is None:  # not known yet: ask the engine (it starts if it is not running)
            try:
                config = prefs.engine_config(context)
                engine.find_engine_python(config.python)
                runtime.CHECK.clear()
                runtime.CHECK["info"] = runtime.SESSION.info(config)
            except (engine.EngineUnavailable, engine.EngineError) as exc:
                self.report({'ERROR'}, str(exc))
                return {'CANCELLED'}
            names = runtime.bundle_capability(name, "loras")
        if names is None:
            self.report({'ERROR'}, f"the engine has no bundle named {name!r}")
            return {'CANCELLED'}
        sync(context.scene.sfumato.styles, names)
        self.report({'INFO'}, f"{name}: {len(names)} style(s)")
        return {'FINISHED'}


def draw(layout, context) -> None:
    """The Styles section: the list, refresh, and training a new style."""
    s = context.scene.sfumato
    row = layout.row()
    row.template_list("SFUMATO_UL_styles", "", s, "styles", s, "styles_index", rows=3)
    col = row.column(align=True)
    col.operator(SFUMATO_OT_styles_refresh.bl_idname, text="", icon='FILE_REFRESH')
    if not len(s.styles):
        layout.label(text="No styles listed: Refresh, or train one from a folder of references", icon='INFO')


classes = (SFUMATO_UL_styles, SFUMATO_OT_styles_refresh)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
