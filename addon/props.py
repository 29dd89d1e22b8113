"""Scene properties: the panel's settings (``scene.sfumato``) and the history list."""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)

from . import request


def _bundle_search(self, context, edit_text):
    from . import runtime

    return [b for b in runtime.known_bundles() if edit_text.lower() in b.lower()]


class SfumatoSettings(bpy.types.PropertyGroup):
    prompt: StringProperty(name="Prompt", description="What to generate")
    negative: StringProperty(name="Negative", description="What to avoid")
    bundle: StringProperty(name="Bundle", description="Model bundle (name or folder); empty = the default bundle "
                           "from the add-on's preferences", search=_bundle_search, search_options={'SUGGESTION'})
    seed: IntProperty(name="Seed", min=0, max=request.MAX_SEED, default=0)
    random_seed: BoolProperty(name="Random", description="Draw a fresh seed for every job (the seed used is "
                              "recorded with the result)", default=False)
    steps: IntProperty(name="Steps", min=0, max=500, default=0,
                       description="Sampling steps; 0 = the bundle's own default (its manifest's default_steps, "
                       "else 25)")
    guidance: FloatProperty(name="Guidance", description="Classifier-free guidance scale", min=0.0, max=50.0,
                            default=7.5)
    scheduler: EnumProperty(name="Scheduler", items=[(s, s, "") for s in request.SCHEDULERS],
                            default=request.DEFAULT_SCHEDULER)
    # no min/max on the size: a bad value must reach poll, which names what is allowed
    width: IntProperty(name="Width", default=512, description="Pixels, a multiple of 8 from 64 to 4096")
    height: IntProperty(name="Height", default=512, description="Pixels, a multiple of 8 from 64 to 4096")
    mode: EnumProperty(name="Mode", default="text", items=[
        ("text", "Text", "Text to image"),
        ("depth", "Depth", "Guided by Blender's exact depth of the scene from the active camera"),
        ("restyle", "Restyle", "Image to image from the camera's render")])
    strength: FloatProperty(name="Strength", description="Restyle: how much of the render is re-imagined "
                            "(1 = ignore it)", min=0.01, max=1.0, default=0.6)
    control_scale: FloatProperty(name="Depth weight", description="Depth: how strongly the depth guides the image",
                                 min=0.0, max=4.0, default=1.0)
    restyle_source: EnumProperty(name="Source", default="RENDER", items=[
        ("RENDER", "Render now", "Render the active camera with the scene's engine at the generation size"),
        ("RESULT", "Render Result", "The last render (F12) as it is")])
    set_background: BoolProperty(name="Camera background", description="Show the result as the active camera's "
                                 "background image", default=False)
    # the Texture section (the prompt, seed, steps, guidance, scheduler and bundle above are shared)
    texture_mode: EnumProperty(name="Texture", default="projection", items=[
        ("projection", "Projection", "Paint the object's own UV map from views around it (a UV map is added "
         "with Smart UV Project when it has none)"),
        ("material", "Material", "One seamless tile laid on the object with box projection at real-world scale")])
    texture_views: IntProperty(name="Views", min=1, max=64, default=8,
                               description="Cameras around the object, each generated once")
    texture_resolution: IntProperty(name="View size", default=0, description="Pixels per generated view, a "
                                    "multiple of 8 from 64 to 2048; 0 = the bundle's native size")
    texture_size: IntProperty(name="Texture size", default=1024, description="The texture's side in pixels, "
                              "16 to 8192")
    tile_size: FloatProperty(name="Tile size", default=1.0, min=0.001, max=1000.0, soft_max=100.0, unit='LENGTH',
                             description="Material: how much of the object one tile of the texture covers")
    # the Turntable section (prompt, negative, bundle, seed, steps, guidance and scheduler above are shared);
    # no hard limits on counts and sizes: a bad value must reach the check, which names what is allowed
    turntable_frames: IntProperty(name="Frames", default=24, soft_min=2, soft_max=request.MAX_FRAMES,
                                  description="Frames of one full orbit (the video loops), 2 to "
                                  f"{request.MAX_FRAMES}")
    turntable_fps: IntProperty(name="FPS", default=12, soft_min=1, soft_max=120,
                               description="Frames per second of the video, 1 to 120")
    turntable_resolution: IntProperty(name="Frame size", default=0, description="Pixels per side of each frame, "
                                      "a multiple of 8 from 64 to 2048; 0 = the bundle's native size")
    turntable_elevation: FloatProperty(name="Elevation", default=20.0, min=-89.0, max=89.0,
                                       description="Degrees the orbit's camera looks down on the object")
    turntable_temporal: EnumProperty(name="Temporal", default="auto", items=[
        ("auto", "Auto", "Frame attention from the bundle's motion module when it has one, else frame by frame"),
        ("on", "On", "Frame attention (fails when the bundle has no motion module)"),
        ("off", "Off", "Each frame on its own, tied to its neighbours only by the orbit and its noise")])
    turntable_format: EnumProperty(name="Format", default="mp4", items=[
        ("mp4", "MP4", "H.264 video (needs imageio-ffmpeg in the engine's environment)"),
        ("gif", "GIF", "Animated GIF (no extra dependency; 256 colours)")])
    # the Asset section (prompt, negative, bundle and seed above are shared)
    asset_iters: IntProperty(name="Iterations", default=600, soft_min=1, soft_max=request.MAX_ASSET_ITERS,
                             description="Optimisation steps of the asset's field")
    asset_resolution: IntProperty(name="Render size", default=64, description="Pixels per side of the view "
                                  "scored each iteration, a multiple of 16 from 32 to 512")
    asset_guidance: FloatProperty(name="Guidance", default=50.0, min=0.0, max=request.MAX_ASSET_GUIDANCE,
                                  description="Classifier-free guidance of score distillation (it wants a large one)")


class SfumatoHistoryItem(bpy.types.PropertyGroup):
    label: StringProperty(name="Label")
    image: StringProperty(name="Image")
    record: StringProperty(name="Record", description="The result's settings as JSON")


classes = (SfumatoSettings, SfumatoHistoryItem)


def settings_from(props: SfumatoSettings) -> request.ImageSettings:
    return request.ImageSettings(**{name: getattr(props, name) for name in request.ImageSettings.fields()
                                    if hasattr(props, name)})


TEXTURE_FIELDS = {"mode": "texture_mode", "views": "texture_views", "resolution": "texture_resolution",
                  "texture_size": "texture_size", "tile_size": "tile_size"}  # TextureSettings field: property


def texture_settings_from(props: SfumatoSettings) -> request.TextureSettings:
    """The shared settings (prompt, seed, ...) and the Texture section's as plain data."""
    values = {name: getattr(props, TEXTURE_FIELDS.get(name, name)) for name in request.TextureSettings.fields()
              if hasattr(props, TEXTURE_FIELDS.get(name, name))}
    return request.TextureSettings(**values)


SHARED_FIELDS = ("prompt", "negative", "bundle", "seed", "random_seed", "steps", "guidance", "scheduler")
TURNTABLE_FIELDS = {"frames": "turntable_frames", "fps": "turntable_fps", "resolution": "turntable_resolution",
                    "elevation": "turntable_elevation", "temporal": "turntable_temporal",
                    "format": "turntable_format"}  # TurntableSettings field: property
ASSET_FIELDS = {"iters": "asset_iters", "resolution": "asset_resolution",
                "guidance": "asset_guidance"}  # AssetSettings field: property


def turntable_settings_from(props: SfumatoSettings) -> request.TurntableSettings:
    """The shared settings and the Turntable section's; the rest (conditioning, strength, ...) keep their
    defaults, which scripts and the operator can change."""
    values = {name: getattr(props, name) for name in SHARED_FIELDS}
    values.update({name: getattr(props, prop) for name, prop in TURNTABLE_FIELDS.items()})
    return request.TurntableSettings(**values)


def asset_settings_from(props: SfumatoSettings) -> request.AssetSettings:
    """The shared prompt, negative, bundle and seed, and the Asset section's settings."""
    values = {name: getattr(props, name) for name in ("prompt", "negative", "bundle", "seed", "random_seed")}
    values.update({name: getattr(props, prop) for name, prop in ASSET_FIELDS.items()})
    return request.AssetSettings(**values)


def apply_settings(props: SfumatoSettings, s: request.ImageSettings) -> None:
    for name in request.ImageSettings.fields():
        if hasattr(props, name):
            setattr(props, name, getattr(s, name))


def register() -> None:
    for cls in classes:
        bpy.utils.register_class(cls)
    bpy.types.Scene.sfumato = PointerProperty(type=SfumatoSettings)
    bpy.types.Scene.sfumato_history = CollectionProperty(type=SfumatoHistoryItem)
    bpy.types.Scene.sfumato_history_index = IntProperty(default=0)


def unregister() -> None:
    del bpy.types.Scene.sfumato_history_index
    del bpy.types.Scene.sfumato_history
    del bpy.types.Scene.sfumato
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
