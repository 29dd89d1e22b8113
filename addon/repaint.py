"""Paint the selected faces again: what a projection texture job needs besides the object itself.

The object wears a Sfumato projection texture (the material ``texturing.finish`` made, with its provenance); the
faces selected in Edit Mode are exported alone, with modifiers and the same UV map, as the engine's ``repaint``
mesh, and the texture's file as ``texture_in``. The engine keeps every other texel exactly (threed/repaint.py).
"""

from __future__ import annotations

from pathlib import Path

import bpy

from . import scene_io


def current_texture(obj: bpy.types.Object) -> tuple[str, str]:
    """(the texture file, its UV map) of the projection texture ``obj`` wears; raises ``SceneProblem`` when it wears
    none. A packed image whose file is gone is written out beside the results first."""
    for slot in obj.material_slots:
        material = slot.material
        record = dict(material["sfumato"]) if material is not None and "sfumato" in material else {}
        if record.get("texture_mode") != "projection":
            continue
        image = next((node.image for node in material.node_tree.nodes
                      if node.type == 'TEX_IMAGE' and node.image is not None), None)
        path = Path(bpy.path.abspath(image.filepath_raw)) if image is not None and image.filepath_raw else None
        if path is None or not path.is_file():
            if image is None:
                break
            path = Path(str(record.get("file") or "")).with_suffix(".repaint-source.png")
            image.save(filepath=str(path))  # a packed texture whose file is gone
        return str(path), str(record.get("uv_map") or "")
    raise scene_io.SceneProblem(f"{obj.name!r} wears no Sfumato projection texture to paint again: texture it in "
                                "projection mode first")


def selected_faces(obj: bpy.types.Object) -> int:
    """How many faces of ``obj`` are selected (Edit Mode's selection, as the mesh holds it in Object Mode)."""
    return sum(1 for p in obj.data.polygons if p.select)


def export_selection(obj: bpy.types.Object, path: Path, export) -> int:
    """The selected faces of ``obj`` alone, exported like ``obj`` itself (``export``: ``texturing.export_glb``), to
    ``path``; returns how many faces were selected."""
    import bmesh

    count = selected_faces(obj)
    if count == 0:
        raise scene_io.SceneProblem(f"select the faces of {obj.name!r} to paint again (Edit Mode, face select)")
    part = obj.copy()
    part.data = obj.data.copy()
    part.name = f".sfumato repaint {obj.name}"
    bm = bmesh.new()
    try:
        bm.from_mesh(part.data)
        bmesh.ops.delete(bm, geom=[f for f in bm.faces if not f.select], context='FACES')
        bm.to_mesh(part.data)
    finally:
        bm.free()
    bpy.context.scene.collection.objects.link(part)
    try:
        export(part, path)
    finally:
        mesh = part.data
        bpy.data.objects.remove(part)
        bpy.data.meshes.remove(mesh)
    return count
