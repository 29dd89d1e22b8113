"""Scene properties: the panel's settings (``scene.sfumato``) and the history list."""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)

from . import request

I, T, V, A = request.I, request.T, request.V, request.A  # the engine's request schema per kind


def _items(cls: type, name: str, words: dict[str, tuple[str, str]]) -> list[tuple[str, str, str]]:
    """An EnumProperty's items: the schema's choices for ``cls.name``, each with its label and tooltip."""
    return [(v, *words.get(v, (v.title(), ""))) for v in request.choices(cls, name)]


TEXTURE_MODE_WORDS = {
    "projection": ("Projection", "Paint the object's own UV map from views around it (a UV map is added with Smart "
                   "UV Project when it has none)"),
    "material": ("Material", "One seamless tile laid on the object with box projection at real-world scale"),
    "sds": ("Distil", "Score distillation: the object's UV texture itself optimised through renders of it, no view "
            "generated (slow: minutes; works with every bundle; a UV map is added when it has none)")}
VARIANT_WORDS = {
    "sequential": ("Sequential", "Views generated in turn, each keeping what earlier views painted"),
    "sync": ("Synchronised", "All views denoised at once, sharing one latent texture: more consistent seams, "
             "memory for every view at once")}
RENDER_WORDS = {
    "rgb": ("RGB", "Render the field in colour and score it through the VAE"),
    "latent": ("Latent", "Render at latent size straight into the bundle's latents: cheaper, coarser")}


def _bundle_search(self, context, edit_text):
    from . import runtime

    return [b for b in runtime.known_bundles() if edit_text.lower() in b.lower()]


_LORAS = request.schema.spec_of(next(f for f in request.dataclasses.fields(I) if f.name == "loras"))


class SfumatoStyle(bpy.types.PropertyGroup):
    """One LoRA of the bundle (a studio's style) in the Styles list."""

    name: StringProperty(name="Style", description="A LoRA in the bundle's loras/ folder")
    enabled: BoolProperty(name="Use", description="Add this style to every job", default=False)
    strength: FloatProperty(name="Strength", description="How strongly the style acts (1 = as trained; negative "
                            "pushes away from it)", default=1.0, min=_LORAS.lo, max=_LORAS.hi)


class SfumatoSettings(bpy.types.PropertyGroup):
    prompt: StringProperty(name="Prompt", description="What to generate")
    negative: StringProperty(name="Negative", description="What to avoid")
    bundle: StringProperty(name="Bundle", description="Model bundle (name or folder); empty = the default bundle "
                           "from the add-on's preferences", search=_bundle_search, search_options={'SUGGESTION'})
    seed: IntProperty(name="Seed", **request.property_args(I, "seed", unset=0))
    random_seed: BoolProperty(name="Random", description="Draw a fresh seed for every job (the seed used is "
                              "recorded with the result)", default=False)
    steps: IntProperty(name="Steps", **request.property_args(I, "steps", unset=0))
    guidance: FloatProperty(name="Guidance", **request.property_args(I, "guidance"))
    scheduler: EnumProperty(name="Scheduler", items=[(s, s, "") for s in request.choices(I, "scheduler")],
                            default=I.scheduler)
    # no min/max on the size: a bad value must reach poll, which names what is allowed
    width: IntProperty(name="Width", default=request.PANEL_SIZE, description=request.property_args(I, "width")[
        "description"])
    height: IntProperty(name="Height", default=request.PANEL_SIZE, description=request.property_args(I, "height")[
        "description"])
    mode: EnumProperty(name="Mode", default="text", items=[
        ("text", "Text", "Text to image"),
        ("depth", "Depth", "Guided by Blender's exact depth of the scene from the active camera"),
        ("restyle", "Restyle", "Image to image from the camera's render")])
    strength: FloatProperty(name="Strength", description="Restyle: how much of the render is re-imagined "
                            "(1 = ignore it)", min=0.01, max=1.0, default=request.RESTYLE_STRENGTH)
    control_scale: FloatProperty(name="Depth weight", **request.property_args(
        I, "control_scale", description="Depth: how strongly the depth guides the image"))
    # depth mode: ControlNets fed from the scene's geometry (the panel shows the kinds the bundle has)
    depth_start: FloatProperty(name="Start", description="Share of the steps before depth starts guiding",
                               min=0.0, max=1.0, default=0.0, subtype='FACTOR')
    depth_end: FloatProperty(name="End", description="Share of the steps after which depth stops guiding",
                             min=0.0, max=1.0, default=1.0, subtype='FACTOR')
    use_normal: BoolProperty(name="Normals", description="Also guide by the scene's exact normals from the camera "
                             "(the bundle's normal ControlNet)", default=False)
    normal_weight: FloatProperty(name="Weight", **request.property_args(
        I, "control_scale", description="How strongly the normals guide the image"))
    normal_start: FloatProperty(name="Start", min=0.0, max=1.0, default=0.0, subtype='FACTOR')
    normal_end: FloatProperty(name="End", min=0.0, max=1.0, default=1.0, subtype='FACTOR')
    use_lineart: BoolProperty(name="Line art", description="Also guide by the scene's outlines and creases from the "
                              "camera (the bundle's line-art ControlNet)", default=False)
    lineart_weight: FloatProperty(name="Weight", **request.property_args(
        I, "control_scale", description="How strongly the line art guides the image"))
    lineart_start: FloatProperty(name="Start", min=0.0, max=1.0, default=0.0, subtype='FACTOR')
    lineart_end: FloatProperty(name="End", min=0.0, max=1.0, default=1.0, subtype='FACTOR')
    use_canny: BoolProperty(name="Edges", description="Also guide by the scene's edges (outlines and creases) "
                            "through the bundle's canny ControlNet", default=False)
    canny_weight: FloatProperty(name="Weight", **request.property_args(
        I, "control_scale", description="How strongly the edges guide the image"))
    canny_start: FloatProperty(name="Start", min=0.0, max=1.0, default=0.0, subtype='FACTOR')
    canny_end: FloatProperty(name="End", min=0.0, max=1.0, default=1.0, subtype='FACTOR')
    restyle_source: EnumProperty(name="Source", default="RENDER", items=[
        ("RENDER", "Render now", "Render the active camera with the scene's engine at the generation size"),
        ("RESULT", "Render Result", "The last render (F12) as it is")])
    set_background: BoolProperty(name="Camera background", description="Show the result as the active camera's "
                                 "background image", default=False)
    # the Texture section (the prompt, seed, steps, guidance, scheduler and bundle above are shared)
    texture_mode: EnumProperty(name="Texture", default=T.mode, items=_items(T, "mode", TEXTURE_MODE_WORDS))
    texture_variant: EnumProperty(name="Variant", default=T.variant, items=_items(T, "variant", VARIANT_WORDS))
    texture_views: IntProperty(name="Views", **request.property_args(T, "views"))
    texture_fill_views: IntProperty(name="Fill views", **request.property_args(T, "fill_views"))
    texture_iters: IntProperty(name="Iterations", **request.property_args(T, "iters", hard=False))
    texture_resolution: IntProperty(name="View size", **request.property_args(T, "resolution", unset=0, hard=False))
    texture_size: IntProperty(name="Texture size", **request.property_args(T, "texture_size", hard=False))
    tile_size: FloatProperty(name="Tile size", **request.property_args(T, "tile_size"), unit='LENGTH')
    # the Turntable section (prompt, negative, bundle, seed, steps, guidance and scheduler above are shared);
    # no hard limits on counts and sizes: a bad value must reach the check, which names what is allowed
    turntable_frames: IntProperty(name="Frames", **request.property_args(V, "frames", hard=False))
    turntable_fps: IntProperty(name="FPS", **request.property_args(V, "fps", hard=False))
    turntable_resolution: IntProperty(name="Frame size", **request.property_args(V, "resolution", unset=0,
                                                                                 hard=False))
    turntable_elevation: FloatProperty(name="Elevation", **request.property_args(V, "elevation"))
    turntable_temporal: EnumProperty(name="Temporal", default="auto", items=[
        ("auto", "Auto", "Frame attention from the bundle's motion module when it has one, else frame by frame"),
        ("on", "On", "Frame attention (fails when the bundle has no motion module)"),
        ("off", "Off", "Each frame on its own, tied to its neighbours only by the orbit and its noise")])
    turntable_format: EnumProperty(name="Format", default="mp4", items=[
        ("mp4", "MP4", "H.264 video (needs imageio-ffmpeg in the engine's environment)"),
        ("gif", "GIF", "Animated GIF (no extra dependency; 256 colours)")])
    # the Asset section (prompt, negative, bundle and seed above are shared)
    asset_iters: IntProperty(name="Iterations", **request.property_args(A, "iters", hard=False))
    asset_resolution: IntProperty(name="Render size", **request.property_args(A, "resolution", hard=False))
    asset_guidance: FloatProperty(name="Guidance", **request.property_args(A, "guidance"))
    asset_size: FloatProperty(name="Size", **request.property_args(A, "size"), unit='LENGTH')
    asset_render: EnumProperty(name="Render", default=A.render, items=_items(A, "render", RENDER_WORDS))

    # the Styles list: the bundle's LoRAs, each on or off with its strength (filled by "Refresh styles")
    styles: CollectionProperty(type=SfumatoStyle)
    styles_index: IntProperty(default=0)


class SfumatoHistoryItem(bpy.types.PropertyGroup):
    label: StringProperty(name="Label")
    image: StringProperty(name="Image")
    record: StringProperty(name="Record", description="The result's settings as JSON")


classes = (SfumatoStyle, SfumatoSettings, SfumatoHistoryItem)


CONTROL_PROPS = ("control_scale", "depth_start", "depth_end") + tuple(
    f"{prefix}{kind}{suffix}" for kind in request.GEOMETRY_CONDITIONS
    for prefix, suffix in (("use_", ""), ("", "_weight"), ("", "_start"), ("", "_end")))
SHARED_FIELDS = ("prompt", "negative", "bundle", "seed", "random_seed", "steps", "guidance", "scheduler")
# per settings class: its field -> the property that holds it (the panel's shared fields keep their names)
SECTIONS = {
    request.TextureSettings: {"mode": "texture_mode", "variant": "texture_variant", "views": "texture_views",
                              "fill_views": "texture_fill_views", "iters": "texture_iters",
                              "resolution": "texture_resolution", "texture_size": "texture_size",
                              "tile_size": "tile_size"},
    request.TurntableSettings: {"frames": "turntable_frames", "fps": "turntable_fps",
                                "resolution": "turntable_resolution", "elevation": "turntable_elevation",
                                "temporal": "turntable_temporal", "format": "turntable_format"},
    request.AssetSettings: {"iters": "asset_iters", "resolution": "asset_resolution", "guidance": "asset_guidance",
                            "size": "asset_size", "render": "asset_render"},
}


def _read(props: SfumatoSettings, cls: type) -> request.Settings:
    """The panel's shared settings and ``cls``'s section as plain data; fields the panel does not show (a
    turntable's conditioning, ...) keep their defaults, which scripts and the operators can change."""
    loras = request.style_entries([(row.name, row.enabled, row.strength) for row in props.styles])
    if cls is request.ImageSettings:
        s = cls(**{name: getattr(props, name) for name in cls.fields() if hasattr(props, name)})
        values = {name: getattr(props, name) for name in CONTROL_PROPS}
        conditions, weights = request.geometry_controls(values)
        return s.replace(conditions=conditions, control_weights=weights, loras=loras)
    section = SECTIONS[cls]
    names = {name: name for name in SHARED_FIELDS if name in cls.fields()} | section
    return cls(**{name: getattr(props, prop) for name, prop in names.items()}, loras=loras)


def settings_from(props: SfumatoSettings) -> request.ImageSettings:
    return _read(props, request.ImageSettings)


def texture_settings_from(props: SfumatoSettings) -> request.TextureSettings:
    return _read(props, request.TextureSettings)


def turntable_settings_from(props: SfumatoSettings) -> request.TurntableSettings:
    return _read(props, request.TurntableSettings)


def asset_settings_from(props: SfumatoSettings) -> request.AssetSettings:
    return _read(props, request.AssetSettings)


def apply_settings(props: SfumatoSettings, s: request.ImageSettings) -> None:
    for name in request.ImageSettings.fields():
        if hasattr(props, name):
            setattr(props, name, getattr(s, name))
    for name, value in request.geometry_props(s).items():
        setattr(props, name, value)
    used = request.style_rows(s.loras)
    for row in props.styles:
        row.enabled = row.name in used
        row.strength = used.get(row.name, row.strength)
    for name in used.keys() - {row.name for row in props.styles}:
        row = props.styles.add()
        row.name, row.enabled, row.strength = name, True, used[name]


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
