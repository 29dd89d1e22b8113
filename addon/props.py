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
    steps: IntProperty(name="Steps", min=1, max=500, default=25)
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
