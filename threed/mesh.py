"""Meshes in: GLB / glTF / OBJ / PLY through trimesh, scenes flattened with their transforms, checked.

A ``Mesh`` is plain tensors: positions (V, 3), triangles (F, 3) and, when the file has them, one UV
per vertex (V, 2) in trimesh's convention (origin bottom-left, as Blender's UV editor shows it). The
texture a head writes for those UVs is an ordinary top-down image: texel row ``r`` holds
``v = 1 − (r + ½) / size``. glTF stores V flipped; trimesh flips it back on load and Blender's exporter
flipped it on the way out, so a texture made here lands on the object's own UV map unchanged.

Positions stay in the file's units (glTF: metres, +Y up). Heads that need a unit-size object use
``normalised()``; material mode keeps real units so ``tile_size`` means metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..core.errors import BadParameter
from ..core.schema import TextureRequest

FORMATS = (".glb", ".gltf", ".obj", ".ply")
DEFAULT_MAX_FACES = TextureRequest.max_faces  # the schema's default


@dataclass
class Mesh:
    vertices: torch.Tensor  # (V, 3) float32, file units
    faces: torch.Tensor  # (F, 3) int64
    uv: torch.Tensor | None = None  # (V, 2) float32, origin bottom-left
    source: str = ""
    warnings: list[str] = field(default_factory=list)
    groups: tuple[str, ...] = ()  # material names in the file, in order of first use ("" for faces without one)
    face_group: torch.Tensor | None = None  # (F,) int64 index into ``groups``

    @property
    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vertices.min(0).values, self.vertices.max(0).values

    @property
    def center(self) -> torch.Tensor:
        lo, hi = self.bounds
        return (lo + hi) / 2

    @property
    def radius(self) -> float:
        """Radius of the bounding sphere around the bounds' centre."""
        return float((self.vertices - self.center).norm(dim=1).max().clamp_min(1e-9))

    def normalised(self) -> "Mesh":
        """Centred on its bounds and scaled to a bounding-sphere radius of 1 (UVs unchanged)."""
        return replace(self, vertices=(self.vertices - self.center) / self.radius)

    def face_normals(self) -> torch.Tensor:
        tri = self.vertices[self.faces]
        n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        return torch.nn.functional.normalize(n, dim=1, eps=1e-12)

    def face_areas(self) -> torch.Tensor:
        tri = self.vertices[self.faces]
        return torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).norm(dim=1) / 2


def _flatten(loaded, path: str):
    """One ``trimesh.Trimesh`` from whatever trimesh loaded (scene graphs baked with their transforms)."""
    import trimesh

    if isinstance(loaded, trimesh.Scene):
        meshes = []
        order = {name: i for i, name in enumerate(loaded.geometry)}  # the file's order: slots keep their seeds
        nodes = sorted(loaded.graph.nodes_geometry, key=lambda node: order.get(loaded.graph[node][1], len(order)))
        for node in nodes:
            transform, name = loaded.graph[node]
            geom = loaded.geometry[name]
            if isinstance(geom, trimesh.Trimesh) and len(geom.faces):
                meshes.append(geom.copy().apply_transform(transform))
        if not meshes:
            raise BadParameter("mesh", path, "a file with at least one triangle mesh; this one has none")
        uv_ok = all(getattr(m.visual, "uv", None) is not None and len(m.visual.uv) == len(m.vertices)
                    for m in meshes)
        groups = list(dict.fromkeys(material_name(m) for m in meshes))
        face_group = np.concatenate([np.full(len(m.faces), groups.index(material_name(m))) for m in meshes])
        if len(meshes) == 1:
            meshes[0].metadata["groups"] = (groups, face_group)
            return meshes[0], uv_ok
        vertices, faces, uvs, offset = [], [], [], 0
        for m in meshes:
            vertices.append(np.asarray(m.vertices))
            faces.append(np.asarray(m.faces) + offset)
            if uv_ok:
                uvs.append(np.asarray(m.visual.uv))
            offset += len(m.vertices)
        out = trimesh.Trimesh(np.concatenate(vertices), np.concatenate(faces), process=False)
        out.metadata["uv"] = np.concatenate(uvs) if uv_ok else None
        out.metadata["groups"] = (groups, face_group)
        return out, uv_ok
    if isinstance(loaded, trimesh.Trimesh):
        uv = getattr(loaded.visual, "uv", None)
        loaded.metadata["groups"] = ([material_name(loaded)], np.zeros(len(loaded.faces)))
        return loaded, uv is not None and len(uv) == len(loaded.vertices)
    raise BadParameter("mesh", path, f"a triangle mesh; trimesh read a {type(loaded).__name__} (points or lines?)")


PLACEHOLDER_MATERIAL = "sfumato-default"  # given to glTF primitives with UVs but no material (see below)


def material_name(geometry) -> str:
    """The name of a trimesh geometry's material (OBJ ``usemtl`` with its .mtl, glTF material name); ``""`` when it
    has none or no name."""
    material = getattr(geometry.visual, "material", None)
    name = str(getattr(material, "name", None) or "")
    return "" if name == PLACEHOLDER_MATERIAL else name


def _glb_keeping_uvs(path: str) -> bytes | None:
    """The GLB with a plain material added to primitives that have UVs but no material, or None when
    none lacks one. trimesh reads TEXCOORD_0 only for primitives with a material, so without this a
    GLB exported without materials would silently lose its UVs."""
    import json
    import struct

    data = Path(path).read_bytes()
    if len(data) < 20 or data[:4] != b"glTF":
        return None
    length, kind = struct.unpack_from("<II", data, 12)
    if kind != 0x4E4F534A:  # "JSON"
        return None
    doc = json.loads(data[20:20 + length])
    missing = [p for m in doc.get("meshes", []) for p in m.get("primitives", [])
               if "TEXCOORD_0" in p.get("attributes", {}) and "material" not in p]
    if not missing:
        return None
    doc.setdefault("materials", []).append({"name": PLACEHOLDER_MATERIAL})
    for p in missing:
        p["material"] = len(doc["materials"]) - 1
    chunk = json.dumps(doc, separators=(",", ":")).encode()
    chunk += b" " * (-len(chunk) % 4)
    rest = data[20 + length:]
    body = struct.pack("<II", len(chunk), 0x4E4F534A) + chunk + rest
    return b"glTF" + struct.pack("<II", 2, 12 + len(body)) + body


def load_mesh(path: str | Path, *, max_faces: int = DEFAULT_MAX_FACES) -> Mesh:
    """Read, flatten and check a mesh file; problems are ``BadParameter`` errors on the field ``mesh``."""
    import trimesh

    path = str(path)
    if Path(path).suffix.lower() not in FORMATS:
        raise BadParameter("mesh", path, f"a mesh file ending in one of {', '.join(FORMATS)}")
    if not Path(path).is_file():
        raise BadParameter("mesh", path, "an existing mesh file")
    try:
        patched = _glb_keeping_uvs(path) if path.lower().endswith(".glb") else None
        if patched is not None:
            import io

            loaded = trimesh.load(io.BytesIO(patched), file_type="glb", process=False, maintain_order=True)
        else:
            loaded = trimesh.load(path, process=False, maintain_order=True)
    except Exception as exc:  # trimesh raises many types for broken files
        raise BadParameter("mesh", path, f"a readable {Path(path).suffix} file ({type(exc).__name__}: {exc})") from None
    tm, has_uv = _flatten(loaded, path)
    faces = np.asarray(tm.faces, dtype=np.int64)
    if len(faces) == 0:
        raise BadParameter("mesh", path, "a mesh with at least one face; this one has none")
    if len(faces) > max_faces:
        raise BadParameter("mesh", path, f"at most {max_faces} faces (max_faces); it has {len(faces)}: decimate "
                           "it (Blender: Decimate modifier) or raise max_faces")
    vertices = np.asarray(tm.vertices, dtype=np.float32)
    if faces.min() < 0 or faces.max() >= len(vertices):
        bad = int(faces.max() if faces.max() >= len(vertices) else faces.min())
        raise BadParameter("mesh", path, f"a mesh whose faces name its own vertices (0..{len(vertices) - 1}); a face "
                           f"names vertex {bad}: the file is damaged")
    if not np.isfinite(vertices).all():
        raise BadParameter("mesh", path, "finite vertex positions; some are NaN or infinite")
    uv = tm.metadata.get("uv") if "uv" in tm.metadata else (np.asarray(tm.visual.uv) if has_uv else None)
    groups, face_group = tm.metadata.get("groups") or ([""], np.zeros(len(faces)))
    mesh = Mesh(torch.from_numpy(vertices), torch.from_numpy(faces),
                None if uv is None else torch.from_numpy(np.asarray(uv, dtype=np.float32)), source=path,
                groups=tuple(groups), face_group=torch.from_numpy(np.asarray(face_group, dtype=np.int64)))
    return check(mesh, path, trimesh_mesh=tm)


def check(mesh: Mesh, path: str = "", *, trimesh_mesh=None) -> Mesh:
    """Drop degenerate triangles (with a warning), refuse meshes with no area, note non-manifold edges."""
    areas = mesh.face_areas()
    scale = float((mesh.vertices.max(0).values - mesh.vertices.min(0).values).max())
    if scale <= 0:
        raise BadParameter("mesh", path, "a mesh with extent; all its vertices are at one point")
    good = areas > (scale * 1e-7) ** 2
    if not bool(good.any()):
        raise BadParameter("mesh", path, "a mesh with at least one triangle of non-zero area; all are degenerate")
    warnings = list(mesh.warnings)
    if not bool(good.all()):
        warnings.append(f"dropped {int((~good).sum())} degenerate (zero-area) triangles")
        mesh = replace(mesh, faces=mesh.faces[good],
                       face_group=None if mesh.face_group is None else mesh.face_group[good])
    edges = torch.sort(mesh.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), dim=1).values
    _, counts = torch.unique(edges, dim=0, return_counts=True)
    if bool((counts > 2).any()):
        warnings.append(f"{int((counts > 2).sum())} non-manifold edges (shared by more than two faces); "
                        "texturing works, but those surfaces may get colour from both sides")
    return replace(mesh, warnings=warnings)


def ensure_uv(mesh: Mesh, texture_size: int = TextureRequest.texture_size, padding: int = 4) -> Mesh:
    """UVs from xatlas when the mesh has none (vertices are split along the new seams), packed for a
    ``texture_size`` texture with ``padding`` texels between charts, so the gutters grown around
    islands when baking do not run into each other."""
    if mesh.uv is not None:
        return mesh
    try:
        import xatlas
    except ImportError:
        raise BadParameter("mesh", mesh.source, "a mesh with UVs (unwrap it in Blender), or install xatlas "
                           "(pip install xatlas) to unwrap here") from None
    atlas = xatlas.Atlas()
    atlas.add_mesh(mesh.vertices.numpy(), mesh.faces.numpy().astype(np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution, pack.padding, pack.bilinear = texture_size, padding, True
    atlas.generate(pack_options=pack)
    vmap, faces, uv = atlas[0]
    return replace(mesh, vertices=mesh.vertices[torch.from_numpy(vmap.astype(np.int64))],
                   faces=torch.from_numpy(faces.astype(np.int64)), uv=torch.from_numpy(uv.astype(np.float32)),
                   warnings=[*mesh.warnings, "the mesh had no UVs: unwrapped with xatlas"])


def save_glb(mesh: Mesh, texture, path: str | Path, metadata: dict | None = None) -> Path:
    """The mesh with ``texture`` (a PIL image) as its base colour on its UVs, as one GLB file."""
    import trimesh
    from trimesh.visual.material import PBRMaterial
    from trimesh.visual.texture import TextureVisuals

    from ..core.provenance import atomic_write

    material = PBRMaterial(baseColorTexture=texture, metallicFactor=0.0, roughnessFactor=0.8)
    tm = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=False,
                         visual=TextureVisuals(uv=mesh.uv.numpy(), material=material))
    scene = trimesh.Scene(tm)
    if metadata:
        scene.metadata["sfumato"] = metadata
    data = scene.export(file_type="glb")
    return atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(data))


def save_slots_glb(mesh: Mesh, slots: list, tiles: list, path: str | Path, metadata: dict | None = None) -> Path:
    """The mesh as one GLB primitive per material slot, each a glTF PBR material named after the slot: base colour,
    ``normalTexture`` and ``metallicRoughnessTexture`` (roughness in G, metallic 0 in B) where the slot was
    generated (``tiles``: ``slots.SlotTile``), a plain material where it was not. ``mesh`` has box UVs (three
    vertices per face) and ``face_group``."""
    import trimesh
    from PIL import Image
    from trimesh.visual.material import PBRMaterial
    from trimesh.visual.texture import TextureVisuals

    from ..core.provenance import atomic_write

    made = {t.slot.index: t for t in tiles}
    scene = trimesh.Scene()
    for slot in slots:
        faces = torch.nonzero(mesh.face_group == slot.index).flatten()
        if not len(faces):
            continue
        corners = mesh.faces[faces].reshape(-1)
        name = f"Sfumato {slot.name}" if slot.name else "Sfumato"
        tile = made.get(slot.index)
        if tile is None:
            material = PBRMaterial(name=slot.name or "no material", metallicFactor=0.0, roughnessFactor=0.8)
        else:
            extra = {}
            if "normal" in tile.maps:
                extra["normalTexture"] = tile.maps["normal"]
            if "roughness" in tile.maps:
                rough = np.asarray(tile.maps["roughness"])
                mr = np.stack([np.zeros_like(rough), rough, np.zeros_like(rough)], -1)
                extra["metallicRoughnessTexture"] = Image.fromarray(mr, "RGB")
            material = PBRMaterial(name=name, baseColorTexture=tile.tile, metallicFactor=0.0,
                                   roughnessFactor=1.0 if "roughness" in tile.maps else 0.8, **extra)
        part = trimesh.Trimesh(mesh.vertices[corners].numpy(), np.arange(len(corners)).reshape(-1, 3), process=False,
                               visual=TextureVisuals(uv=mesh.uv[corners].numpy(), material=material))
        scene.add_geometry(part, geom_name=name)
    if metadata:
        scene.metadata["sfumato"] = metadata
    data = scene.export(file_type="glb")
    return atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(data))
