"""Operators: thin wrappers over ``imaging`` and ``engine``; every failure is a report, never a traceback."""

from __future__ import annotations

import json

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import asset, engine, imaging, prefs, props, request, runtime, scene_io, texturing, turntable

BLOCKING = [("AUTO", "Auto", "Wait for the result in background mode (timers never run there), else run "
             "in the background and apply the result when it arrives"),
            ("ON", "Wait", "Wait for the result"),
            ("OFF", "Queue", "Return at once; a timer applies the result (in background mode something must "
             "call the add-on's runtime.tick)")]
I, T, V, A = request.I, request.T, request.V, request.A  # the engine's request schema per kind
SEED = request.property_args(I, "seed", unset=0, description="Unset = the panel's seed (or a random one when the "
                             "panel says so)")
STEPS = request.property_args(I, "steps", unset=0, description="Unset = the panel's steps; 0 = the bundle's own "
                              "default")


def _free(cls, context, need_scene: bool = True) -> bool:
    """The operators' shared poll: a scene to work in and no job running (saying so when one is)."""
    if need_scene and context.scene is None:
        return False
    if runtime.busy():
        cls.poll_message_set("a job is running: cancel it or wait for it")
        return False
    return True


def _blocking(choice: str) -> bool:
    return choice == "ON" or (choice == "AUTO" and bpy.app.background)


class _JobOperator:
    """What the mesh and asset job operators share: available while no job runs; invoked, they just run."""

    @classmethod
    def poll(cls, context):
        return _free(cls, context)

    def invoke(self, context, event):
        return self.execute(context)


class _Common:
    """The properties every job operator takes (image, texture, turntable, asset); one left unset takes the
    panel's value (``_overlay``)."""

    prompt: StringProperty(name="Prompt", description="What to generate; unset = the panel's prompt",
                           options={'SKIP_SAVE'})
    negative: StringProperty(name="Negative", description="What to avoid; unset = the panel's negative prompt",
                             options={'SKIP_SAVE'})
    bundle: StringProperty(name="Bundle", description="Bundle name or folder; unset = the panel's (and empty there "
                           "= the preferences' default bundle)", options={'SKIP_SAVE'})
    seed: IntProperty(name="Seed", **SEED, options={'SKIP_SAVE'})
    blocking: EnumProperty(name="Wait", items=BLOCKING, default="AUTO", options={'SKIP_SAVE'})


class _Sampled(_Common):
    """The common properties of the jobs that run the sampling loop (all but the asset's)."""

    steps: IntProperty(name="Steps", **STEPS, options={'SKIP_SAVE'})


COMMON = ("prompt", "negative", "bundle", "seed", "guidance")  # every operator also declares its kind's guidance
SAMPLED = (*COMMON, "steps")


class SFUMATO_OT_image(_Sampled, bpy.types.Operator):
    """Generate an image from the active camera with the panel's settings; a property left unset takes the
    panel's value"""

    bl_idname = "sfumato.image"
    bl_label = "Generate"
    bl_options = {'REGISTER'}

    mode: EnumProperty(name="Mode", default="scene", items=[
        ("scene", "Panel", "The mode chosen in the panel"),
        ("text", "Text", "Text to image"),
        ("depth", "Depth", "Guided by Blender's depth of the scene from the active camera"),
        ("restyle", "Restyle", "Image to image from the camera's render")])
    guidance: FloatProperty(name="Guidance", **request.property_args(I, "guidance", hard=False),
                            options={'SKIP_SAVE'})

    @classmethod
    def poll(cls, context):
        if not _free(cls, context):
            return False
        reason = _reason(context, props.settings_from(context.scene.sfumato))
        if reason:
            cls.poll_message_set(reason)
            return False
        return True

    def invoke(self, context, event):
        return self.execute(context)

    def settings(self, context) -> request.ImageSettings:
        """The panel's settings with the properties this call set."""
        return _overlay(self, props.settings_from(context.scene.sfumato), SAMPLED)

    def execute(self, context):
        s = self.settings(context)
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
        state.on_final = runtime.applying(imaging.finish, "result", lambda _images: imaging.warnings_note(state))
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
        for warning in state.result.get("warnings", []):
            self.report({'WARNING'}, f"Sfumato: {warning}")
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


def _texture_reason(context, s: request.TextureSettings) -> str:
    """Why the Texture button would do nothing or fail, for the panel ("" = ready)."""
    found = request.problems(s)
    if found:
        return str(found[0])
    if not texturing.selected_meshes(context):
        return "select one or more mesh objects to texture"
    return ""


def _turntable_reason(context, s: request.TurntableSettings) -> str:
    """Why the Turntable button would do nothing or fail, for the panel ("" = ready)."""
    found = request.problems(s)
    return str(found[0]) if found else turntable.why_no_target(context)


def _asset_reason(s: request.AssetSettings) -> str:
    """Why the Asset button would fail, for the panel ("" = ready)."""
    found = request.problems(s)
    return str(found[0]) if found else ""


def _overlay(op, s, names: tuple[str, ...]):
    """The panel's settings ``s`` with the operator properties among ``names`` that this call set; a seed
    set here is used as given (not randomised)."""
    changes = {name: getattr(op, name) for name in names if op.properties.is_property_set(name)}
    if "seed" in changes:
        changes["random_seed"] = False
    return s.replace(**changes)


def _print_progress(state: engine.JobState, event: dict) -> None:
    if event.get("event") == "estimate":  # blocking scripts see the engine's estimate before the long work
        print(f"sfumato: {state.title + ' ' if state.title else ''}estimated {event.get('text')}", flush=True)
    if event.get("event") != "progress" or event.get("step") != event.get("total") or not event.get("total"):
        return
    title = state.title + " " if state.title else ""
    if event.get("stage") in ("denoising", "texture"):
        print(f"sfumato: {title}{state.unit} {state.image + 1}/{state.images} denoised", flush=True)
    elif event.get("stage") == "video":
        print(f"sfumato: {title}{event.get('frames', '')} frames denoised", flush=True)
    elif event.get("stage") == "asset":
        print(f"sfumato: {title}{event['total']} iterations done", flush=True)
    elif event.get("stage") == "extracting":
        print(f"sfumato: {title}extracting the mesh", flush=True)


class SFUMATO_OT_texture(_JobOperator, _Sampled, bpy.types.Operator):
    """Texture the selected meshes from the prompt (one engine job per object); a property left unset
    takes the panel's value"""

    bl_idname = "sfumato.texture"
    bl_label = "Texture selected"
    bl_options = {'UNDO'}  # an undo step for the UV map it may add; no redo panel, which would rerun the job

    mode: EnumProperty(name="Mode", items=props._items(T, "mode", props.TEXTURE_MODE_WORDS), options={'SKIP_SAVE'})
    variant: EnumProperty(name="Variant", items=props._items(T, "variant", props.VARIANT_WORDS),
                          options={'SKIP_SAVE'})
    views: IntProperty(name="Views", **request.property_args(T, "views"), options={'SKIP_SAVE'})
    fill_views: IntProperty(name="Fill views", **request.property_args(T, "fill_views"), options={'SKIP_SAVE'})
    iters: IntProperty(name="Iterations", **request.property_args(T, "iters", hard=False), options={'SKIP_SAVE'})
    resolution: IntProperty(name="View size", **request.property_args(T, "resolution", unset=0, hard=False),
                            options={'SKIP_SAVE'})
    texture_size: IntProperty(name="Texture size", **request.property_args(T, "texture_size", hard=False),
                              options={'SKIP_SAVE'})
    tile_size: FloatProperty(name="Tile size", **request.property_args(T, "tile_size", hard=False), unit='LENGTH',
                             options={'SKIP_SAVE'})
    guidance: FloatProperty(name="Guidance", **request.property_args(T, "guidance", hard=False),
                            options={'SKIP_SAVE'})
    only: StringProperty(name="Only slot", description="Material mode: regenerate this slot of the active object "
                         "only (the slot table's row button)", options={'SKIP_SAVE'})
    repaint: BoolProperty(name="Repaint selected faces", description="Paint the faces selected in Edit Mode again "
                          "(projection), keeping the rest of the texture the active object wears",
                          options={'SKIP_SAVE'})

    def settings(self, context) -> request.TextureSettings:
        """The panel's settings with the properties this call set."""
        s = _overlay(self, props.texture_settings_from(context.scene.sfumato),
                     (*SAMPLED, "mode", "variant", "views", "fill_views", "iters", "resolution", "texture_size",
                      "tile_size"))
        return s.replace(only=(self.only,)) if self.only else s

    def execute(self, context):
        objects = texturing.selected_meshes(context)
        if self.only or self.repaint:  # a slot table row, or faces of the active object
            objects = [o for o in [context.active_object] if o is not None and o.type == 'MESH']
        if not objects:  # nothing to do is not an error: a warning, no exception from scripts
            self.report({'WARNING'}, "Select one or more mesh objects to texture")
            return {'CANCELLED'}
        s = self.settings(context)
        try:
            texturing.leave_edit_mode()
            for obj in objects:
                texturing.check(obj, s)
            config = prefs.engine_config(context)
            engine.find_engine_python(config.python)
            jobs = [texturing.prepare(context, obj, s, repaint=self.repaint) for obj in objects]
        except (request.BadSetting, scene_io.SceneProblem, engine.EngineUnavailable, OSError) as exc:
            runtime.LAST_MESSAGE = (str(exc), True)
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        for job in jobs:
            if job.context["uv_added"]:
                self.report({'INFO'}, f"Sfumato: {job.context['object']} had no UV map; added "
                            f"{job.context['uv_map']!r} to it with Smart UV Project")
        if not _blocking(self.blocking):
            texturing.start(config, jobs)
            return {'FINISHED'}
        runtime.LAST_MESSAGE = None
        for index, job in enumerate(jobs):
            try:
                done = texturing.run(config, job, index=index, count=len(jobs), on_event=_print_progress)
            except (engine.EngineError, scene_io.SceneProblem) as exc:
                left = [j.context["object"] for j in jobs[index + 1:]]
                self.report({'ERROR'}, f"{job.context['object']}: {exc}"
                            + (f"; not textured: {', '.join(left)}" if left else ""))
                return {'CANCELLED'}
            for warning in done.warnings:
                self.report({'WARNING'}, f"Sfumato: {done.object.name}: {warning}")
            self.report({'INFO'}, f"Sfumato: {done.object.name} -> {done.material.name}")
        return {'FINISHED'}


def _refused(op: bpy.types.Operator, exc: Exception) -> set[str]:
    """A job that cannot start: the reason in the panel and as the operator's error report."""
    runtime.LAST_MESSAGE = (str(exc), True)
    op.report({'ERROR'}, str(exc))
    return {'CANCELLED'}


class SFUMATO_OT_turntable(_JobOperator, _Sampled, bpy.types.Operator):
    """Make a looping video orbiting the active mesh, generated from the prompt; a property left unset takes
    the panel's value"""

    bl_idname = "sfumato.turntable"
    bl_label = "Turntable"
    bl_options = {'REGISTER'}

    # no hard limits: a bad value must reach the check, which names what is allowed
    frames: IntProperty(name="Frames", **request.property_args(V, "frames", hard=False), options={'SKIP_SAVE'})
    fps: IntProperty(name="FPS", **request.property_args(V, "fps", hard=False), options={'SKIP_SAVE'})
    resolution: IntProperty(name="Frame size", **request.property_args(V, "resolution", unset=0, hard=False),
                            options={'SKIP_SAVE'})
    elevation: FloatProperty(name="Elevation", **request.property_args(V, "elevation", hard=False),
                             options={'SKIP_SAVE'})
    temporal: EnumProperty(name="Temporal", items=[(t, t.title(), "") for t in request.choices(V, "temporal")],
                           options={'SKIP_SAVE'})
    conditioning: EnumProperty(name="Conditioning", items=[
        ("auto", "Auto", "The depth ControlNet when the bundle has one, else image-to-image from the shaded orbit"),
        ("depth", "Depth", "The orbit's depth through the bundle's depth ControlNet"),
        ("img2img", "Image to image", "Each frame re-imagined from the orbit's shading")], options={'SKIP_SAVE'})
    format: EnumProperty(name="Format", items=[(f, f.upper(), "") for f in request.VIDEO_FORMATS],
                         options={'SKIP_SAVE'})
    guidance: FloatProperty(name="Guidance", **request.property_args(V, "guidance", hard=False),
                            options={'SKIP_SAVE'})

    def settings(self, context) -> request.TurntableSettings:
        """The panel's settings with the properties this call set."""
        return _overlay(self, props.turntable_settings_from(context.scene.sfumato),
                        (*SAMPLED, "frames", "fps", "resolution", "elevation", "temporal", "conditioning", "format"))

    def execute(self, context):
        obj = turntable.target(context)
        if obj is None:  # nothing to do is not an error: a warning, no exception from scripts
            self.report({'WARNING'}, "Sfumato: " + turntable.why_no_target(context))
            return {'CANCELLED'}
        try:
            s = self.settings(context)
            texturing.leave_edit_mode()
            turntable.check(obj, s)
            config = prefs.engine_config(context)
            engine.find_engine_python(config.python)
            job = turntable.prepare(context, obj, s)
        except (request.BadSetting, scene_io.SceneProblem, engine.EngineUnavailable, OSError) as exc:
            return _refused(self, exc)
        if not _blocking(self.blocking):
            turntable.start(config, job)
            return {'FINISHED'}
        runtime.LAST_MESSAGE = None
        try:
            done = turntable.run(config, job, on_event=_print_progress)
        except (engine.EngineError, scene_io.SceneProblem) as exc:
            self.report({'ERROR'}, f"{job.context['object']}: {exc}")
            return {'CANCELLED'}
        for warning in done.warnings:
            self.report({'WARNING'}, f"Sfumato: {warning}")
        self.report({'INFO'}, f"Sfumato: {done.object} -> movie clip {done.clip.name!r} ({done.frames} frames, "
                    f"{done.video})")
        return {'FINISHED'}


class SFUMATO_OT_asset(_JobOperator, _Common, bpy.types.Operator):
    """Make a 3D asset from the prompt and put it at the 3D cursor; a property left unset takes the
    panel's value"""

    bl_idname = "sfumato.asset"
    bl_label = "Generate asset"
    bl_options = {'UNDO'}  # an undo step for the import; no redo panel, which would rerun the job

    iters: IntProperty(name="Iterations", **request.property_args(A, "iters", hard=False), options={'SKIP_SAVE'})
    resolution: IntProperty(name="Render size", **request.property_args(A, "resolution", hard=False),
                            options={'SKIP_SAVE'})
    guidance: FloatProperty(name="Guidance", **request.property_args(A, "guidance", hard=False),
                            options={'SKIP_SAVE'})
    size: FloatProperty(name="Size", **request.property_args(A, "size", hard=False), unit='LENGTH',
                        options={'SKIP_SAVE'})
    render: EnumProperty(name="Render", items=props._items(A, "render", props.RENDER_WORDS), options={'SKIP_SAVE'})

    def settings(self, context) -> request.AssetSettings:
        """The panel's settings with the properties this call set."""
        return _overlay(self, props.asset_settings_from(context.scene.sfumato),
                        (*COMMON, "iters", "resolution", "size", "render"))

    def execute(self, context):
        try:
            config = prefs.engine_config(context)
            engine.find_engine_python(config.python)
            job = asset.prepare(context, self.settings(context))
        except (request.BadSetting, engine.EngineUnavailable, OSError) as exc:
            return _refused(self, exc)
        if not _blocking(self.blocking):
            asset.start(config, job)
            return {'FINISHED'}
        runtime.LAST_MESSAGE = None
        try:
            done = asset.run(config, job, on_event=_print_progress)
        except (engine.EngineError, scene_io.SceneProblem) as exc:
            self.report({'ERROR'}, str(exc))
            return {'CANCELLED'}
        self.report({'INFO'}, f"Sfumato: {', '.join(o.name for o in done.roots)} at the 3D cursor ({done.glb})")
        return {'FINISHED'}


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


class SFUMATO_OT_stop(bpy.types.Operator):
    """Stop the running job for sure: cancel it, and if the engine has not ended it after a few seconds (frozen, or
    in one long operation), end the engine; finished files are kept and the next job starts a fresh engine"""

    bl_idname = "sfumato.stop"
    bl_label = "Stop"

    @classmethod
    def poll(cls, context):
        return runtime.busy()

    def execute(self, context):
        runtime.stop()
        return {'FINISHED'}


class SFUMATO_OT_revert_materials(bpy.types.Operator):
    """Put back the materials the selected meshes had before Sfumato textured them (the textures stay in the
    file)"""

    bl_idname = "sfumato.revert_materials"
    bl_label = "Revert materials"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context):
        return any(texturing.ORIGINAL in o for o in texturing.selected_meshes(context))

    def execute(self, context):
        done = [o.name for o in texturing.selected_meshes(context) if texturing.revert(o)]
        self.report({'INFO'}, f"Sfumato: original materials back on {', '.join(done)}")
        return {'FINISHED'}


class SFUMATO_OT_release(bpy.types.Operator):
    """Drop the engine's loaded models and free their GPU memory (the next job loads them again)"""

    bl_idname = "sfumato.release"
    bl_label = "Release GPU memory"

    blocking: EnumProperty(name="Wait", items=BLOCKING, default="AUTO", options={'SKIP_SAVE'})

    @classmethod
    def poll(cls, context):
        return _free(cls, context, need_scene=False)

    def execute(self, context):
        if not runtime.SESSION.alive:
            runtime.LAST_MESSAGE = ("The engine is not running: nothing to release", False)
            return {'FINISHED'}
        if not _blocking(self.blocking):
            state = runtime.track(engine.JobState(tag="release", on_final=runtime.release_done))
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
            runtime.SESSION.call(runtime.track(engine.JobState(tag="check", on_final=runtime.check_done)),
                                 lambda c: c.info(120), config)
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
        image = scene_io.history_image(item)  # reloaded from its file if the datablock is gone
        if image is not None:
            scene_io.show_in_image_editors(image)
        else:
            self.report({'WARNING'}, f"the image of {item.label!r} is gone, and so is its file")
        return {'FINISHED'}


classes = (SFUMATO_OT_image, SFUMATO_OT_texture, SFUMATO_OT_turntable, SFUMATO_OT_asset, SFUMATO_OT_cancel,
           SFUMATO_OT_stop, SFUMATO_OT_revert_materials, SFUMATO_OT_release, SFUMATO_OT_check_engine, SFUMATO_OT_recall)


register, unregister = bpy.utils.register_classes_factory(classes)  # unregister runs in reverse
