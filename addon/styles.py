"""The Styles list: a bundle's LoRAs (a practice's own looks), each on or off with its strength, sent with every job.

The list is filled from what the engine says the bundle holds (``capabilities``' ``loras``, after Check engine or
"Refresh styles"); a row keeps its strength when the list is refreshed, and rows of LoRAs the bundle no longer has
are dropped so that no job asks for a missing file. The enabled rows become the jobs' ``loras`` entries (NAME:SCALE,
``props._read``), so images, textures, turntables and assets all wear the style; the provenance of each output
names each LoRA with its hash and scale (the engine's ``core/lora.py``).
"""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import engine, ops, prefs, request, runtime
from .imaging import Prepared, output_folder

S = request.S  # the engine's StyleRequest


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


# ---- training a style from a folder -----------------------------------------------------------------------------
def prepare(context, s: request.StyleSettings, *, folder: Path | None = None) -> Prepared:
    """The ``train_style`` job: params checked against the engine's schema, and a JSON summary as its output."""
    request.first_problem(s)
    out, _pack = (Path(folder), False) if folder is not None else output_folder(context)
    (out / "styles").mkdir(parents=True, exist_ok=True)
    params = request.params(s, seed=request.pick_seed(s), default_bundle=prefs.get(context).default_bundle)
    params["folder"] = bpy.path.abspath(params["folder"])
    stem = request.output_stem(out / "styles", s.name)
    return Prepared(params, f"{stem}.json", {"name": s.name, "scene": context.scene.name})


def finish(state: engine.JobState) -> str:
    """The new style in the scene's Styles list, turned on at strength 1; the engine's capabilities asked again
    next time (they changed)."""
    name = state.context["name"]
    scene = bpy.data.scenes.get(state.context["scene"]) or bpy.context.scene
    rows = scene.sfumato.styles
    row = next((r for r in rows if r.name == name), None) or rows.add()
    row.name, row.enabled, row.strength = name, True, 1.0
    runtime.CHECK.clear()
    return name


class SFUMATO_OT_train_style(bpy.types.Operator):
    """Train a style (a LoRA of the bundle) from a folder of 5 to 50 reference images: the practice's renders,
    boards, material photos; a NAME.txt beside an image is its caption. Runs in the engine with progress; cancel
    keeps its checkpoint and the same name trains on from there"""

    bl_idname = "sfumato.train_style"
    bl_label = "Train style from folder..."

    directory: StringProperty(name="Folder", subtype='DIR_PATH', description="The reference images")
    name: StringProperty(name="Name", description="The style's name: the Styles list and jobs use it")
    steps: IntProperty(name="Steps", **request.property_args(S, "steps"))
    rank: IntProperty(name="Rank", **request.property_args(S, "rank"))
    resolution: IntProperty(name="Resolution", **request.property_args(S, "resolution", unset=0))
    overwrite: BoolProperty(name="Replace", description="Replace a style of that name", default=False)
    blocking: EnumProperty(name="Wait", items=ops.BLOCKING, default="AUTO", options={'SKIP_SAVE'})

    @classmethod
    def poll(cls, context):
        if runtime.busy():
            cls.poll_message_set("a job is running: cancel it or wait for it")
            return False
        return context.scene is not None

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)  # pick the folder; the name and steps in the side panel
        return {'RUNNING_MODAL'}

    def execute(self, context):
        panel = context.scene.sfumato
        s = request.StyleSettings(bundle=panel.bundle, seed=panel.seed, random_seed=panel.random_seed,
                                  folder=self.directory, name=self.name or Path(self.directory.rstrip("/\\")).name,
                                  steps=self.steps, rank=self.rank, resolution=self.resolution,
                                  overwrite=self.overwrite)
        try:
            config = prefs.engine_config(context)
            engine.find_engine_python(config.python)
            job = prepare(context, s)
        except (request.BadSetting, engine.EngineUnavailable, OSError) as exc:
            runtime.LAST_MESSAGE = (str(exc), True)
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        if not ops._blocking(self.blocking):
            runtime.start_job(config, "train_style", job, f"style {s.name}", on_final=runtime.applying(
                finish, "style", lambda name: f"style {name} trained and turned on"))
            return {'FINISHED'}
        runtime.LAST_MESSAGE = None
        try:
            state = runtime.run_job(config, "train_style", job, f"style {s.name}")
        except engine.EngineError as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        self.report({'INFO'}, f"Sfumato: style {finish(state)} trained ({state.result.get('steps')} steps)")
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
    layout.operator(SFUMATO_OT_train_style.bl_idname, icon='BRUSH_DATA')


classes = (SFUMATO_UL_styles, SFUMATO_OT_styles_refresh, SFUMATO_OT_train_style)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)


def unregister() -> None:
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
