"""The "Sfumato" tab in the 3D Viewport sidebar: shared settings, one section per head (Image, Texture,
Turntable, Asset, each a sub-panel with ``bl_parent_id = "SFUMATO_PT_main"``), progress, history.
"""

from __future__ import annotations

import time

import bpy

from . import engine, ops, prefs, props, request, runtime, slot_table, styles


class SfumatoPanel:
    bl_space_type = 'VIEW_3D'
    bl_region_type = 'UI'
    bl_category = "Sfumato"


class SFUMATO_PT_main(SfumatoPanel, bpy.types.Panel):
    bl_label = "Sfumato"

    def draw(self, context):
        layout = self.layout
        s = context.scene.sfumato
        col = layout.column(align=True)
        col.prop(s, "prompt", text="", icon='TEXT', placeholder="Prompt")
        col.prop(s, "negative", text="", icon='CANCEL', placeholder="Negative prompt")
        layout.prop(s, "bundle", icon='PACKAGE', placeholder="Default bundle")
        row = layout.row(align=True)
        sub = row.row(align=True)
        sub.enabled = not s.random_seed
        sub.prop(s, "seed")
        row.prop(s, "random_seed", text="", icon='FILE_REFRESH', toggle=True)
        col = layout.column(align=True)
        col.prop(s, "steps")
        col.prop(s, "guidance")
        layout.prop(s, "scheduler")
        row = layout.row(align=True)
        row.prop(s, "width")
        row.prop(s, "height")
        draw_progress(layout)
        row = layout.row()
        row.operator("sfumato.release", icon='TRASH')
        if runtime.LAST_MESSAGE:
            text, alert = runtime.LAST_MESSAGE
            for part in engine.wrap(text):
                line = layout.row()
                line.alert = alert
                line.label(text=part)


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) for the progress bar."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def timing(elapsed: float, fraction: float, estimate: float | None = None) -> str:
    """Elapsed time and, once some of the job is done, the time left at the pace so far (an estimate: the pace
    includes starting the engine and loading the models, so it errs long early on); before that, the engine's
    estimate from its warm-up step, when it sent one."""
    if fraction <= 0 and estimate:
        return f"{clock(elapsed)}, estimated {clock(estimate)} in all"
    if fraction <= 0 or fraction >= 1:
        return clock(elapsed)
    return f"{clock(elapsed)}, about {clock(elapsed * (1 - fraction) / fraction)} left"


def draw_progress(layout) -> None:
    state = runtime.CURRENT
    if state is None:
        return
    box = layout.box()
    if state.active:
        box.progress(factor=state.fraction, type='BAR', text=state.status_lines()[0][0])
        if state.status == "running":
            estimate = (state.estimate or {}).get("seconds")
            box.label(text=timing(time.monotonic() - state.started, state.fraction, estimate), icon='TIME')
        if state.estimate:
            box.label(text=f"Estimate: {state.estimate.get('text')}", icon='INFO')
        for part in engine.wrap(runtime.silence() or ""):  # a frozen engine: say so, Stop ends it
            line = box.row()
            line.alert = True
            line.label(text=part, icon='ERROR')
        icon = runtime.preview_icon(state.preview)
        if icon:
            box.template_icon(icon_value=icon, scale=8.0)
        box.operator("sfumato.stop", icon='CANCEL')
    else:
        for text, alert in state.status_lines():
            line = box.row()
            line.alert = alert
            line.label(text=text, icon='ERROR' if alert else 'INFO')


def _why_not(layout, reason: str) -> None:
    """The reason the section's button would not run, in red above it (nothing while a job runs)."""
    if reason and not runtime.busy():
        line = layout.row()
        line.alert = True
        line.label(text=reason, icon='ERROR')


def _draw_controls(layout, s, context) -> None:
    """Depth mode: the depth weight and range, then the other ControlNets the bundle has (after Check engine),
    each with its weight and share of the steps."""
    row = layout.row(align=True)
    row.prop(s, "control_scale")
    row.prop(s, "depth_start")
    row.prop(s, "depth_end")
    held = runtime.bundle_capability(s.bundle or prefs.get(context).default_bundle, "controlnets")
    if held is None:
        layout.label(text="Check engine to see the bundle's other ControlNets", icon='INFO')
        return
    for kind in request.GEOMETRY_CONDITIONS:
        if kind not in held:
            continue
        row = layout.row(align=True)
        row.prop(s, f"use_{kind}")
        sub = row.row(align=True)
        sub.active = getattr(s, f"use_{kind}")
        sub.prop(s, f"{kind}_weight")
        sub.prop(s, f"{kind}_start")
        sub.prop(s, f"{kind}_end")


class SFUMATO_PT_image(SfumatoPanel, bpy.types.Panel):
    bl_label = "Image"
    bl_parent_id = "SFUMATO_PT_main"

    def draw(self, context):
        layout = self.layout
        s = context.scene.sfumato
        layout.row().prop(s, "mode", expand=True)
        if s.mode == "depth":
            _draw_controls(layout, s, context)
        elif s.mode == "restyle":
            layout.prop(s, "restyle_source")
            layout.prop(s, "strength")
        layout.prop(s, "set_background")
        _why_not(layout, ops._reason(context, props.settings_from(s)))
        layout.operator("sfumato.image", icon='RENDER_STILL').mode = "scene"
        layout.operator("sfumato.upscale", icon='FULLSCREEN_ENTER')


class SFUMATO_PT_texture(SfumatoPanel, bpy.types.Panel):
    bl_label = "Texture"
    bl_parent_id = "SFUMATO_PT_main"

    def draw(self, context):
        layout = self.layout
        s = context.scene.sfumato
        layout.row().prop(s, "texture_mode", expand=True)
        if s.texture_mode == "projection":
            layout.row().prop(s, "texture_variant", expand=True)
        col = layout.column(align=True)
        if s.texture_mode == "projection":
            col.prop(s, "texture_views")
            col.prop(s, "texture_fill_views")
        elif s.texture_mode == "sds":
            col.prop(s, "texture_iters")
        col.prop(s, "texture_resolution")
        col.prop(s, "texture_size")
        if s.texture_mode == "material":
            layout.prop(s, "tile_size")
            slot_table.draw(layout.box(), context)
        _why_not(layout, ops._texture_reason(context, props.texture_settings_from(s)))
        row = layout.row(align=True)
        row.operator("sfumato.texture", icon='TEXTURE')
        row.operator("sfumato.revert_materials", text="", icon='LOOP_BACK')
        if s.texture_mode == "projection":
            layout.operator("sfumato.texture", text="Repaint selected faces", icon='BRUSH_DATA').repaint = True


class SFUMATO_PT_turntable(SfumatoPanel, bpy.types.Panel):
    bl_label = "Turntable"
    bl_parent_id = "SFUMATO_PT_main"
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context):
        layout = self.layout
        s = context.scene.sfumato
        col = layout.column(align=True)
        col.prop(s, "turntable_frames")
        col.prop(s, "turntable_fps")
        col.prop(s, "turntable_resolution")
        layout.prop(s, "turntable_elevation")
        layout.row().prop(s, "turntable_temporal", expand=True)
        layout.row().prop(s, "turntable_format", expand=True)
        _why_not(layout, ops._turntable_reason(context, props.turntable_settings_from(s)))
        layout.operator("sfumato.turntable", icon='FILE_MOVIE')


class SFUMATO_PT_asset(SfumatoPanel, bpy.types.Panel):
    bl_label = "Asset"
    bl_parent_id = "SFUMATO_PT_main"
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context):
        layout = self.layout
        s = context.scene.sfumato
        col = layout.column(align=True)
        col.prop(s, "asset_iters")
        col.prop(s, "asset_resolution")
        layout.prop(s, "asset_guidance")
        layout.prop(s, "asset_size")
        layout.row().prop(s, "asset_render", expand=True)
        _why_not(layout, ops._asset_reason(props.asset_settings_from(s)))
        layout.operator("sfumato.asset", icon='MESH_MONKEY')


class SFUMATO_PT_styles(SfumatoPanel, bpy.types.Panel):
    bl_label = "Styles"
    bl_parent_id = "SFUMATO_PT_main"
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context):
        styles.draw(self.layout, context)


class SFUMATO_UL_history(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        row.label(text=item.label, icon='IMAGE_DATA')
        row.operator("sfumato.recall", text="", icon='RECOVER_LAST').index = index


class SFUMATO_PT_history(SfumatoPanel, bpy.types.Panel):
    bl_label = "History"
    bl_parent_id = "SFUMATO_PT_main"
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context):
        scene = context.scene
        self.layout.template_list("SFUMATO_UL_history", "", scene, "sfumato_history", scene,
                                  "sfumato_history_index", rows=4)


classes = (SFUMATO_PT_main, SFUMATO_PT_styles, SFUMATO_PT_image, SFUMATO_PT_texture, SFUMATO_PT_turntable,
           SFUMATO_PT_asset, SFUMATO_UL_history, SFUMATO_PT_history)


register, unregister = bpy.utils.register_classes_factory(classes)  # unregister runs in reverse
