"""Add-on preferences: where the engine is, where extra bundles are, which device; "Check engine"."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import engine, request


class SfumatoPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    engine_python: StringProperty(
        name="Engine Python", subtype='FILE_PATH',
        description="The python of the environment where sfumato is installed (or that environment's folder); "
        "empty = auto-detect (Blender's own Python when it has sfumato, else the `sfumato` command on PATH)")
    bundle_folder: StringProperty(name="Extra bundle folder", subtype='DIR_PATH',
                                  description="A folder of model bundles searched besides the engine's own")
    device: EnumProperty(name="Device", default="auto", items=[
        ("auto", "Auto", "The GPU when there is one, else the CPU"),
        ("cpu", "CPU", "Always the CPU (slow, but needs no GPU)"),
        ("cuda", "CUDA", "The NVIDIA GPU")])
    default_bundle: StringProperty(name="Default bundle", default=request.DEFAULT_BUNDLE,
                                   description="The bundle used when the panel's bundle field is empty")
    output_folder: StringProperty(name="Output folder", subtype='DIR_PATH',
                                  description="Where results are written; empty = a 'sfumato' folder next to the "
                                  ".blend file, or a temporary folder (results packed) for an unsaved file")
    threads: IntProperty(name="CPU threads", min=0, max=512, default=0,
                         description="Threads for the engine on the CPU; 0 = its default")
    pack_results: BoolProperty(name="Pack results into the .blend", default=False,
                               description="Pack every result image into the .blend file, so that it travels "
                               "without its files (videos cannot be packed; results are always kept in the .blend "
                               "with a fake user, and packed anyway while their files are in a temporary folder)")

    def draw(self, context):
        from . import runtime

        layout = self.layout
        layout.prop(self, "engine_python")
        if not self.engine_python:
            try:
                python, how = engine.find_engine_python("")
                hint, alert = f"Auto: {python} ({how})", False
            except engine.EngineUnavailable as exc:
                hint, alert = str(exc), True
            for part in engine.wrap(hint, 100):
                line = layout.row()
                line.alert = alert
                line.label(text=part)
        layout.prop(self, "bundle_folder")
        row = layout.row()
        row.prop(self, "device")
        row.prop(self, "threads")
        layout.prop(self, "default_bundle")
        layout.prop(self, "output_folder")
        layout.prop(self, "pack_results")
        box = layout.box()
        box.operator("sfumato.check_engine", icon='CHECKMARK')
        for text, alert in runtime.engine_check_lines():
            line = box.row()
            line.alert = alert
            line.label(text=text)


classes = (SfumatoPreferences,)


def get(context=None) -> SfumatoPreferences:
    """This add-on's preferences; a clear error when it is not enabled (preferences exist only then).

    A script that enabled the add-on with ``addon_utils.enable(name)`` alone (no ``default_set=True``) has it
    running without the preferences entry Blender keeps for enabled add-ons: the entry is made here, as
    ``default_set=True`` would have made it, so the API and the operators work right after enabling."""
    context = context or bpy.context
    addon = context.preferences.addons.get(__package__)
    if addon is None and SfumatoPreferences.is_registered:
        addon = context.preferences.addons.new()
        addon.module = __package__
    if addon is None or addon.preferences is None:
        raise engine.EngineUnavailable(f"the add-on {__package__!r} is not enabled: enable it in Preferences > "
                                       "Add-ons (preferences exist only then)")
    return addon.preferences


def engine_config(context=None) -> engine.EngineConfig:
    p = get(context)
    return engine.EngineConfig(python=bpy.path.abspath(p.engine_python) if p.engine_python else "",
                               bundle_folder=bpy.path.abspath(p.bundle_folder) if p.bundle_folder else "",
                               device=p.device, threads=p.threads)


register, unregister = bpy.utils.register_classes_factory(classes)  # unregister runs in reverse
