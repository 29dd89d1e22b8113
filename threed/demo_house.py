"""A small house with five named material slots, built in code (metres, +Y up as glTF): brick walls, a tiled
hip roof, window frames, a concrete plinth and a lawn. Tests, ``benchmarks/slots.py`` and the docs' pictures use it,
so they all texture the same model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SLOTS = ("Brick facade", "Roof_tiles.001", "Window frames", "Concrete plinth", "Lawn")


def house_parts():
    """``[(trimesh.Trimesh, slot name)]``, one part per slot."""
    import trimesh

    walls = trimesh.creation.box((6.0, 3.0, 4.0))
    walls.apply_translation((0, 1.8, 0))
    roof = trimesh.creation.cone(4.2, 2.0, sections=4)
    roof.apply_transform(trimesh.transformations.rotation_matrix(-np.pi / 2, (1, 0, 0)))
    roof.apply_transform(trimesh.transformations.rotation_matrix(np.pi / 4, (0, 1, 0)))
    roof.apply_translation((0, 3.3, 0))
    frames = trimesh.util.concatenate([trimesh.creation.box((1.0, 1.2, 0.1)).apply_translation((x, 1.8, 2.02))
                                       for x in (-1.8, 0.0, 1.8)])
    plinth = trimesh.creation.box((6.3, 0.3, 4.3))
    plinth.apply_translation((0, 0.15, 0))
    lawn = trimesh.creation.box((14.0, 0.02, 12.0))
    return list(zip((walls, roof, frames, plinth, lawn), SLOTS))


def write_house(path: str | Path, names=SLOTS) -> Path:
    """The house as a GLB at ``path``, its parts' materials named ``names`` (``None``: no material), without UVs."""
    import trimesh
    from trimesh.visual.material import PBRMaterial
    from trimesh.visual.texture import TextureVisuals

    parts = []
    for (mesh, _), name in zip(house_parts(), names):
        if name is not None:  # a named material and no UVs (projection unwraps, material mode box-maps)
            mesh.visual = TextureVisuals(material=PBRMaterial(name=name))
        parts.append(mesh)
    path = Path(path)
    path.write_bytes(trimesh.Scene(parts).export(file_type="glb"))
    return path
