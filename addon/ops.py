"""Operators: thin wrappers over ``imaging`` and ``engine``; every failure is a report, never a traceback."""

from __future__ import annotations

import json

import bpy
from bpy.props import EnumProperty, IntProperty

from . import engine, imaging, prefs, props, request, runtime, scene_io

BLOCKING = [("AUTO", "Auto", "Wait for the result in background mode (timers never run there), else run "
             "in the background and apply the result when it arrives"),
            ("ON", "Wait", "Wait for the result"),
            ("OFF", "Queue", "Return at once; a timer applies the result (in background mode something must "
             "call the add-on's runtime.tick)")]


def _blocking(choice: str) -> bool:
    return choice == "ON" or (choice == "AUTO" and bpy.app.background)


class SFUMATO_OT_image(bpy.types.Operator):
    """Generate an image from the active camera with the panel's settings"""

    bl_idname = "sfumato.image"
    bl_label = "Generate"
    bl_options = {'REGISTER'}

    mode: EnumProperty(name="Mode", default="scene", items=[
        ("scene", "Panel", "The mode chosen in the panel"),
        ("text", "Text", "Text to image"),
        ("depth", "Depth", "Guided by Blender's depth of the scene from the active camera"),
        ("restyle", "Restyle", "Image to image from the camera's render")])
    blocking: EnumProperty(name="Wait", items=BLOCKING, default="AUTO", options={'SKIP_SAVE'})

    @classmethod
    def poll(cls, context):
        if context.scene is None:
            return False
        if runtime.busy():
            cls.poll_message_set("a job is running: cancel it or wait for it")
            return False
        reason = _reason(context, props.settings_from(context.scene.sfumato))
        if reason:
            cls.poll_message_set(reason)
            return False
        return True

    def invoke(self, context, event):
        return self.execute(context)

    def execute(self, context):
        s = props.settings_from(context.scene.sfumato)
        if self.mode != "scene":
            s = s.replace(mode=self.mode)
        reason = _reason(context, s)
        if reason:
            self.report({'ERROR'}, reason)
            return {'CANCELLED'}
        try:
            config = prefs.engine_config(context)
            engine.find_engine_python(config.python)  # before anything is rendered
            job = imaging.prepare(context, s, set_background=context.scene.sfumato.set_background,
                                  restyle_source=context.scene.sfumato.restyle_source)
        except (request.BadSetting, scene_io.SceneProblem, engine.EngineUnavailable, OSError) as exc:
            runtime.LAST_MESSAGE = (str(exc), True)  # the panel shows it too
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        state = engine.JobState(tag="image", context=job.context)
        runtime.CURRENT, runtime.LAST_MESSAGE = state, None
        if not _blocking(self.blocking):
            runtime.track(state)
            runtime.SESSION.start(config, state, "image", job.params, job.output, preview_every=1)
            return {'FINISHED'}
        try:
            state.result = runtime.SESSION.run(config, state, "image", job.params, job.output,
                                               on_event=_print_progress)
        except engine.EngineError as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        images = imaging.finish(state, context)
        self.report({'INFO'}, "Sfumato: " + ", ".join(img.name for img in images))
        return {'FINISHED'}


def _reason(context, s: request.ImageSettings) -> str:
    found = request.problems(s)
    if found:
        return str(found[0])
    try:
        scene_io.active_camera(context.scene)
    except scene_io.SceneProblem as exc:
        return str(exc)
    return ""


def _print_progress(state: engine.JobState, event: dict) -> None:
    if event.get("event") == "progress" and event.get("stage") == "denoising" and \
            event.get("step") == event.get("total"):
        print(f"sfumato: image {state.image + 1}/{state.images} denoised", flush=True)


class SFUMATO_OT_cancel(bpy.types.Operator):
    """Stop the running job (within one denoising step)"""

    bl_idname = "sfumato.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return runtime.busy()

    def execute(self, context):
        runtime.SESSION.cancel(runtime.CURRENT)
        return {'FINISHED'}


class SFUMATO_OT_release(bpy.types.Operator):
    """Drop the engine's loaded models and free their GPU memory (the next job loads them again)"""

    bl_idname = "sfumato.release"
    bl_label = "Release GPU memory"

    blocking: EnumProperty(name="Wait", items=BLOCKING, default="AUTO", options={'SKIP_SAVE'})

    @classmethod
    def poll(cls, context):
        if runtime.busy():
            cls.poll_message_set("a job is running: cancel it or wait for it")
            return False
        return True

    def execute(self, context):
        if not runtime.SESSION.alive:
            runtime.LAST_MESSAGE = ("The engine is not running: nothing to release", False)
            return {'FINISHED'}
        if not _blocking(self.blocking):
            state = runtime.track(engine.JobState(tag="release"))
            config = runtime.SESSION.config or prefs.engine_config(context)
            runtime.SESSION.call(state, _release, config)
            return {'FINISHED'}
        try:
            runtime.SESSION.release()
        except engine.EngineUnavailable as exc:
            runtime.LAST_MESSAGE = (str(exc), True)
            self.report({'WARNING'}, str(exc))
            return {'CANCELLED'}
        runtime.LAST_MESSAGE = ("GPU memory released", False)
        return {'FINISHED'}


def _release(client) -> dict:
    client.release(60)
    return {}


class SFUMATO_OT_check_engine(bpy.types.Operator):
    """Start the engine and show its device, dtype and bundles, or why it cannot start"""

    bl_idname = "sfumato.check_engine"
    bl_label = "Check engine"

    blocking: EnumProperty(name="Wait", items=BLOCKING, default="AUTO", options={'SKIP_SAVE'})

    def execute(self, context):
        runtime.CHECK.clear()
        try:
            config = prefs.engine_config(context)
            engine.find_engine_python(config.python)
        except engine.EngineUnavailable as exc:
            runtime.CHECK["error"] = str(exc)
            self.report({'WARNING'}, str(exc))
            return {'FINISHED'}
        if not _blocking(self.blocking):
            runtime.CHECK["running"] = True
            runtime.SESSION.call(runtime.track(engine.JobState(tag="check")), lambda c: c.info(120), config)
            return {'FINISHED'}
        try:
            runtime.CHECK["info"] = runtime.SESSION.info(config)
        except engine.EngineUnavailable as exc:
            runtime.CHECK["error"] = str(exc)
            self.report({'WARNING'}, str(exc))
            return {'FINISHED'}
        for line, _alert in runtime.engine_check_lines():
            self.report({'INFO'}, line)
        return {'FINISHED'}


class SFUMATO_OT_recall(bpy.types.Operator):
    """Put a past result's settings (seed included) back into the panel"""

    bl_idname = "sfumato.recall"
    bl_label = "Recall settings"
    bl_options = {'REGISTER', 'UNDO'}

    index: IntProperty(name="Index", default=-1, description="History entry; -1 = the selected one")

    def execute(self, context):
        scene = context.scene
        index = self.index if self.index >= 0 else scene.sfumato_history_index
        if not 0 <= index < len(scene.sfumato_history):
            self.report({'ERROR'}, f"index={index} is not allowed: 0..{len(scene.sfumato_history) - 1}")
            return {'CANCELLED'}
        item = scene.sfumato_history[index]
        props.apply_settings(scene.sfumato, request.settings_from_record(json.loads(item.record)))
        scene.sfumato_history_index = index
        image = bpy.data.images.get(item.image)
        if image is not None:
            scene_io.show_in_image_editors(image)
        return {'FINISHED'}


classes = (SFUMATO_OT_image, SFUMATO_OT_cancel, SFUMATO_OT_release, SFUMATO_OT_check_engine, SFUMATO_OT_recall)


register, unregister = bpy.utils.register_classes_factory(classes)  # unregister runs in reverse
