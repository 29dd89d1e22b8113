"""The panel's Batch section: run a spec file (CSV, JSON Lines or JSON) with the engine's batch runner, watch it,
stop it (finished jobs stay; running it again goes on), and find the results in Blender when it ends."""

from __future__ import annotations

import threading
from pathlib import Path

import bpy
from bpy.props import EnumProperty, IntProperty, PointerProperty, StringProperty

from . import api, batch, batch_results, engine, prefs, request, runtime
from .ui import SfumatoPanel

RUNNING: dict[str, batch.BatchRun] = {}  # the interactive batch, while it runs


class SfumatoBatchSettings(bpy.types.PropertyGroup):
    spec: StringProperty(name="Spec", subtype='FILE_PATH', description="A .csv, .jsonl or .json file: one job per "
                         "row, columns named like the jobs' settings (prompt, seed, steps, ...) plus kind and name")
    workers: IntProperty(name="Workers", default=1, min=1, soft_max=8, description="Worker processes (one per GPU; "
                         "on a CPU the cores are split between them)")


def _loaded_note(loaded: batch_results.Loaded, result: batch.BatchResult) -> str:
    made = f"{len(loaded.images)} images, {len(loaded.clips)} clips, {len(loaded.objects)} objects"
    return made + (f"; {len(result.failed)} failed: {result.failed[0][0]}: {result.failed[0][1]}" if result.failed
                   else "") + f" (in {result.folder})"


def _start(context, spec, folder: Path, pack: bool, workers: int) -> engine.JobState:
    """Run the batch in the background; its events reach the panel through the session's queue, and its results
    are loaded on the main thread when it ends."""
    def on_final(state: engine.JobState, kind: str) -> None:
        RUNNING.pop("run", None)
        if kind == "result":
            loaded = batch_results.load(state.result["batch"], pack=pack)
            runtime.LAST_MESSAGE = (_loaded_note(loaded, state.result["batch"]), bool(state.result["batch"].failed))

    state = engine.JobState(tag="batch", title=f"batch {folder.name}", on_final=on_final)
    runtime.CURRENT, runtime.LAST_MESSAGE = state, None
    runtime.track(state)
    events = runtime.SESSION.events

    def on_event(event: dict) -> None:
        if event.get("event") == "job":
            events.put((state, {"event": "progress", "stage": "batch", "step": event["finished"],
                                "total": event["total"]}))

    spec_path = batch.write_rows(spec, folder) if isinstance(spec, list) else spec
    run = batch.BatchRun(prefs.engine_config(context), spec_path, folder, workers=workers, on_event=on_event)
    RUNNING["run"] = run

    def wait() -> None:
        try:
            result = run.wait()
        except engine.EngineError as exc:
            events.put((state, {"event": "failed", "message": str(exc)}))
        else:
            events.put((state, {"event": "result", "batch": result, "seconds": 0}))

    threading.Thread(target=wait, name="sfumato-batch", daemon=True).start()
    return state


class SFUMATO_OT_batch(bpy.types.Operator):
    """Run a batch spec with the engine's batch runner; finished jobs are kept, so running it again goes on"""

    bl_idname = "sfumato.batch"
    bl_label = "Run batch"

    spec: StringProperty(name="Spec", subtype='FILE_PATH', options={'SKIP_SAVE'},
                         description="Unset = the panel's spec file")
    workers: IntProperty(name="Workers", default=0, min=0, options={'SKIP_SAVE'},
                         description="Unset (0) = the panel's")
    blocking: EnumProperty(name="Wait", items=[("AUTO", "Auto", "Wait in background mode"), ("ON", "Wait", ""),
                                               ("OFF", "Queue", "")], default="AUTO", options={'SKIP_SAVE'})

    @classmethod
    def poll(cls, context):
        return context.scene is not None and "run" not in RUNNING and not runtime.busy()

    def execute(self, context):
        panel = context.scene.sfumato_batch
        workers = self.workers or panel.workers
        try:
            spec, folder, pack = api.batch_target(context, self.spec or panel.spec, None)
            engine.find_engine_python(prefs.engine_config(context).python)
            if self.blocking == "ON" or (self.blocking == "AUTO" and bpy.app.background):
                out = api.batch(spec, folder=folder, workers=workers, scene=context.scene)
                self.report({'INFO'}, "Sfumato: " + _loaded_note(batch_results.Loaded(out.images, out.clips,
                                                                                      out.objects), out))
                return {'FINISHED'}
            _start(context, spec, folder, pack, workers)
        except (request.BadSetting, engine.EngineError, OSError) as exc:
            runtime.LAST_MESSAGE = (str(exc), True)
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        return {'FINISHED'}


class SFUMATO_OT_batch_stop(bpy.types.Operator):
    """Stop the running batch; its finished jobs stay, and running the same batch again goes on from there"""

    bl_idname = "sfumato.batch_stop"
    bl_label = "Stop batch"

    @classmethod
    def poll(cls, context):
        return "run" in RUNNING

    def execute(self, context):
        RUNNING["run"].cancel()
        runtime.LAST_MESSAGE = ("Batch stopped: the finished jobs are kept; Run batch again to go on", False)
        return {'FINISHED'}


class SFUMATO_PT_batch(SfumatoPanel, bpy.types.Panel):
    bl_label = "Batch"
    bl_parent_id = "SFUMATO_PT_main"
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context):
        layout, b = self.layout, context.scene.sfumato_batch
        layout.prop(b, "spec")
        layout.prop(b, "workers")
        row = layout.row(align=True)
        row.operator("sfumato.batch", icon='SEQ_SEQUENCER')
        row.operator("sfumato.batch_stop", text="", icon='CANCEL')


classes = (SfumatoBatchSettings, SFUMATO_OT_batch, SFUMATO_OT_batch_stop, SFUMATO_PT_batch)


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.sfumato_batch = PointerProperty(type=SfumatoBatchSettings)


def unregister() -> None:
    run = RUNNING.pop("run", None)
    if run is not None:
        run.cancel()
    del bpy.types.Scene.sfumato_batch
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
