"""A quick look at a textured GLB: every primitive with its base-colour texture, lit by a sun, from one camera.

For pictures in docs and benchmarks (not a renderer for users: no normal maps, no shadows). Uses the project's own
rasterizer, so it runs anywhere torch does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .cameras import framing_distance, orbit
from .raster import rasterize, sample_texture

SUN = (0.45, 0.8, 0.4)  # direction towards the sun, glTF axes (+Y up)
SKY = (0.86, 0.89, 0.93)


def render_glb(path: str | Path, size: int = 384, azimuth: float = 35.0, elevation: float = 22.0,
               fov_y: float = 35.0) -> Image.Image:
    """``path`` seen from ``azimuth``/``elevation`` degrees (0 = the glTF front, +Z), framed on its bounds."""
    import trimesh

    scene = trimesh.load(str(path), process=False)
    parts = []
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        geom = scene.geometry[name]
        if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
            parts.append(geom.copy().apply_transform(transform))
    vertices = torch.from_numpy(np.concatenate([p.vertices for p in parts])).float()
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts])
    faces = torch.from_numpy(np.concatenate([p.faces + o for p, o in zip(parts, offsets)])).long()
    part_of_face = torch.from_numpy(np.concatenate([np.full(len(p.faces), k) for k, p in enumerate(parts)]))
    lo, hi = vertices.min(0).values, vertices.max(0).values
    centre, radius = (lo + hi) / 2, float((hi - lo).norm() / 2)
    cams = orbit(centre, framing_distance(radius, fov_y), [azimuth], [elevation], fov_y)
    frags = rasterize(cams, vertices, faces, size)
    face = frags.face[0]
    tri = vertices[faces]
    normals = F.normalize(torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), dim=1)
    eye = cams.world_to_cam[0].inverse()[:3, 3]
    points = frags.interpolate(vertices, faces)[0]
    n = normals[face.clamp_min(0)]
    n = torch.where(((eye - points) * n).sum(-1, keepdim=True) < 0, -n, n)  # lit from the side the camera sees
    light = 0.35 + 0.65 * (n @ F.normalize(torch.tensor(SUN), dim=0)).clamp_min(0)
    out = torch.tensor(SKY)[:, None, None].expand(3, size, size).clone()
    for k, part in enumerate(parts):
        mine = (face >= 0) & (part_of_face[face.clamp_min(0)] == k)
        if not bool(mine.any()):
            continue
        material = getattr(part.visual, "material", None)
        texture = getattr(material, "baseColorTexture", None)
        uv = getattr(part.visual, "uv", None)
        if texture is not None and uv is not None:
            tex = torch.from_numpy(np.asarray(texture.convert("RGB"), np.float32) / 255).permute(2, 0, 1)
            all_uv = torch.zeros(len(vertices), 2)
            all_uv[offsets[k]:offsets[k + 1]] = torch.from_numpy(np.asarray(uv, np.float32))
            pixel_uv = frags.interpolate(all_uv, faces)
            colour = sample_texture(tex, pixel_uv)[0]
        else:
            colour = torch.full((3, size, size), 0.7)
        out = torch.where(mine[None], colour * light[None], out)
    return Image.fromarray((out.clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8))
