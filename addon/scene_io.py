"""The Blender edge: render what the engine needs from the camera, turn result files into datablocks.

Everything here runs on Blender's main thread. Renders happen in a temporary copy of the scene
(objects shared, settings its own), so the user's render settings and compositor are never
touched. Headless Blender has no Render Result pixels, so renders go through files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy
import numpy as np

from . import engine, prefs, request, sheet


class SceneProblem(RuntimeError):
    """The scene cannot give what a mode needs (no camera, no render yet, ...)."""


def active_camera(scene) -> bpy.types.Object:
    camera = scene.camera
    if camera is None:
        raise SceneProblem(f"scene {scene.name!r} has no active camera: add one and make it active "
                           "(image mode generates from the active camera)")
    if camera.type != 'CAMERA':
        raise SceneProblem(f"the active camera {camera.name!r} is a {camera.type.lower()}, not a camera object")
    return camera


def render_copy(scene, width: int, height: int):
    """A temporary copy of ``scene`` framing its camera at width x height; remove it with bpy.data.scenes.remove."""
    tmp = scene.copy()
    tmp.name = ".sfumato render"
    tmp.camera = scene.camera
    r = tmp.render
    r.resolution_x, r.resolution_y, r.resolution_percentage = width, height, 100
    r.pixel_aspect_x = r.pixel_aspect_y = 1.0
    r.use_border = False
    r.use_motion_blur = False
    r.use_sequencer = False
    return tmp


# ---- restyle source ---------------------------------------------------------------------------------
def render_image(scene, width: int, height: int, png_path: Path, source: str = "RENDER") -> Path:
    """The picture to restyle: the camera rendered now with the scene's own engine, or the last
    Render Result (``source="RESULT"``), written to ``png_path``."""
    png_path.parent.mkdir(parents=True, exist_ok=True)
    if source == "RESULT":
        result = bpy.data.images.get("Render Result")
        try:
            if result is None:
                raise RuntimeError("no Render Result")
            result.save_render(str(png_path))
        except RuntimeError:
            raise SceneProblem("there is no render to restyle yet: render the camera (F12) first, or set the "
                               "restyle source to 'Render now'") from None
        return png_path
    active_camera(scene)
    tmp = render_copy(scene, width, height)
    try:
        tmp.render.filepath = str(png_path)
        tmp.render.use_file_extension = False
        settings = tmp.render.image_settings
        settings.media_type = 'IMAGE'
        settings.file_format = 'PNG'
        settings.color_mode = 'RGB'
        settings.color_depth = '8'
        bpy.ops.render.render(write_still=True, scene=tmp.name)
    finally:
        bpy.data.scenes.remove(tmp)
    if not png_path.is_file():
        raise SceneProblem(f"the render of {scene.name!r} wrote no image to {png_path}")
    return png_path


# ---- results ----------------------------------------------------------------------------------------
def keep(datablock, *, pack: bool = False):
    """Keep a result in the .blend: Blender drops datablocks without users when it saves, so every result
    gets a fake user. An image is also packed into the file when ``pack`` asks, the "Pack results"
    preference is on, or its file is in Blender's temporary folder (gone at exit); movie clips cannot be
    packed and stay files. Returns ``datablock``."""
    datablock.use_fake_user = True
    if isinstance(datablock, bpy.types.Image) and datablock.packed_file is None and (
            pack or _pack_preferred() or _temporary(datablock.filepath)):
        datablock.pack()
    return datablock


def _pack_preferred() -> bool:
    try:
        return bool(prefs.get().pack_results)
    except engine.EngineUnavailable:  # the add-on is not enabled (scripts that import its modules)
        return False


def _temporary(filepath: str) -> bool:
    temp = bpy.app.tempdir
    return bool(filepath and temp) and Path(bpy.path.abspath(filepath)).resolve().is_relative_to(
        Path(temp).resolve())


def load_result(path: str, name: str, provenance: dict[str, Any], *, pack: bool) -> bpy.types.Image:
    """The result file ``path`` as an image datablock named ``name`` with its provenance, kept (``keep``)."""
    image = bpy.data.images.load(path, check_existing=False)
    image.name = name
    image["sfumato"] = provenance
    if bpy.data.filepath and not pack:
        try:
            image.filepath = bpy.path.relpath(path)
        except ValueError:  # another drive on Windows
            pass
    return keep(image, pack=pack)


def show_in_image_editors(image: bpy.types.Image) -> int:
    """Show ``image`` in every open Image Editor; returns how many (none in background mode)."""
    shown = 0
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == 'IMAGE_EDITOR':
                area.spaces.active.image = image
                shown += 1
    return shown


def set_camera_background(camera: bpy.types.Object, image: bpy.types.Image) -> None:
    """Use ``image`` as the camera's background, replacing an earlier Sfumato background."""
    data = camera.data
    data.show_background_images = True
    for bg in data.background_images:
        if bg.image is not None and "sfumato" in bg.image:
            bg.image = image
            return
    bg = data.background_images.new()
    bg.image = image
    bg.alpha = 1.0


def add_history(scene, record: dict[str, Any], limit: int) -> None:
    import json

    history = scene.sfumato_history
    item = history.add()
    item.label, item.image, item.record = record["label"], record["image"], json.dumps(record)
    while len(history) > limit:
        history.remove(0)
    scene.sfumato_history_index = len(history) - 1


def history_image(item) -> bpy.types.Image | None:
    """The image a history entry made: the datablock it names, else the result loaded from the entry's
    file, else that file loaded again (kept like any result, and the entry updated); None when neither is
    there any more."""
    import json

    record = json.loads(item.record)
    file = record.get("file") or ""
    image = bpy.data.images.get(item.image)
    if image is None and file:
        image = next((i for i in bpy.data.images if "sfumato" in i and i["sfumato"].get("file") == file), None)
    if image is None and file and Path(bpy.path.abspath(file)).is_file():
        provenance = request.id_properties(record.get("settings") or {}, {"file": file})
        image = load_result(bpy.path.abspath(file), item.image, provenance, pack=False)
    if image is not None and item.image != image.name:
        item.image = image.name
    return image


def image_pixels(image: bpy.types.Image) -> np.ndarray:
    """(h, w, 4) float RGBA, top row first."""
    w, h = image.size
    px = np.empty(w * h * image.channels, dtype=np.float32)
    image.pixels.foreach_get(px)
    px = px.reshape(h, w, image.channels)[::-1]
    if image.channels == 4:
        return px
    rgb = px[..., :3] if image.channels >= 3 else np.repeat(px[..., :1], 3, axis=2)
    return np.dstack([rgb, np.ones((h, w, 1), np.float32)])


def contact_sheet(images: list[bpy.types.Image], path: Path, name: str, columns: int | None = None
                  ) -> bpy.types.Image:
    """The images in a grid, saved as PNG at ``path`` and kept as an image datablock."""
    grid = sheet.compose([image_pixels(img) for img in images], columns)
    h, w = grid.shape[:2]
    out = bpy.data.images.new(name, w, h, alpha=True)
    out.pixels.foreach_set(np.ascontiguousarray(grid[::-1]).ravel())
    path.parent.mkdir(parents=True, exist_ok=True)
    out.filepath_raw = str(path)
    out.file_format = 'PNG'
    out.save()  # from now on the image is that file (a generated image would come back blank)
    return keep(out)


def redraw() -> None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type in {'VIEW_3D', 'IMAGE_EDITOR', 'PREFERENCES'}:
                area.tag_redraw()
