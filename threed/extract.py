"""Density field → mesh: marching tetrahedra, cleanup, colours from the field, GLB.

1. **Sample** the density on a regular grid of (n + 1)³ points over the field's box; the outermost
   layer is forced empty, so every surface closes inside the box.
2. **Marching tetrahedra.** Each grid cube is cut into six tetrahedra along its main diagonal (the
   Freudenthal subdivision: tetrahedron k visits 000 → e_a → e_a + e_b → 111 for the k-th ordering
   (a, b, c) of the axes). Neighbouring cubes cut their shared faces the same way, and a tetrahedron
   has no ambiguous cases: with a vertex inside (σ > level), it holds one triangle; with two, a quad
   (two triangles). Every surface vertex lies on a grid edge, at the linear zero of σ − level along it,
   and is keyed by that edge's two grid points, so the tetrahedra around an edge share its vertex:
   the result is closed and manifold (watertight) by construction. Each triangle is turned to face
   from the inside vertices towards the outside ones.
3. **Cleanup.** Faces that repeat a vertex go, connected components with less than ``min_component``
   of the faces go (floaters), unused vertices go.
4. **Colour.** The albedo is baked into a UV texture (xatlas unwrap, rasterized in UV space, every
   texel's surface point queried in the field, holes filled by push-pull), or stored per vertex.
5. **Scale.** The largest side becomes ``size`` metres, the base sits on y = 0, centred in x and z;
   glTF is +Y up and Blender's importer turns that into +Z up, so the asset stands on the floor at
   the 3-D cursor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import permutations
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..core.errors import SfumatoError
from ..core.schema import AssetRequest
from .mesh import Mesh


@dataclass
class ExtractConfig:
    resolution: int = 64  # grid cells per axis
    level: float = 2.0  # the density σ on the surface
    min_component: float = 0.05  # drop connected pieces with less than this share of the faces
    smooth: int = 1  # passes of a 3×3×3 box filter over the density grid first: an SDS field's noise would
    # otherwise make a porous surface of hundreds of thousands of faces
    colours: Literal["texture", "vertex"] = "texture"
    texture_size: int = AssetRequest.texture_size  # px, colours="texture"
    size: float = 1.0  # metres: the largest side of the result


# -------------------------------------------------------------------------- marching tetrahedra
# cube corner (x, y, z) ∈ {0, 1}³ has index x + 2y + 4z
TETS = torch.tensor([[0, 1 << a, (1 << a) | (1 << b), 7] for a, b, _ in permutations(range(3))])  # (6, 4)


def _case_table() -> tuple[torch.Tensor, torch.Tensor]:
    """For each of the 16 inside/outside patterns of a tetrahedron: up to two triangles, each as three
    tetrahedron edges (pairs of local vertices), and how many triangles."""
    table = torch.zeros(16, 2, 3, 2, dtype=torch.long)
    count = torch.zeros(16, dtype=torch.long)
    for code in range(16):
        inside = [k for k in range(4) if code >> k & 1]
        outside = [k for k in range(4) if not code >> k & 1]
        if len(inside) in (1, 3):
            k, others = (inside[0], outside) if len(inside) == 1 else (outside[0], inside)
            table[code, 0] = torch.tensor([[k, j] for j in others])
            count[code] = 1
        elif len(inside) == 2:
            (a, b), (c, d) = inside, outside
            # the quad ac → ad → bd → bc, cut along ac–bd
            table[code, 0] = torch.tensor([[a, c], [a, d], [b, d]])
            table[code, 1] = torch.tensor([[a, c], [b, d], [b, c]])
            count[code] = 2
    return table, count


CASES, CASE_COUNT = _case_table()


def marching_tetrahedra(values: torch.Tensor, level: float, origin: torch.Tensor,
                        step: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The surface values = level of a grid ``values`` (M, M, M) indexed [x, y, z], point (i, j, k) at
    origin + step·(i, j, k). Returns vertices (V, 3) and faces (F, 3), outward (towards lower values)."""
    m = values.shape[0]
    inside = values > level
    # cubes with corners on both sides of the level
    c = torch.stack([inside[x:m - 1 + x, y:m - 1 + y, z:m - 1 + z]
                     for z in (0, 1) for y in (0, 1) for x in (0, 1)], -1)  # (n, n, n, 8), corner order x+2y+4z
    cubes = torch.nonzero(c.any(-1) & ~c.all(-1))  # (A, 3)
    if cubes.shape[0] == 0:
        return torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.long)
    corner_offsets = torch.tensor([[x, y, z] for z in (0, 1) for y in (0, 1) for x in (0, 1)])  # (8, 3)
    corners = cubes[:, None] + corner_offsets[None]  # (A, 8, 3)
    flat = lambda ijk: (ijk[..., 0] * m + ijk[..., 1]) * m + ijk[..., 2]  # noqa: E731
    tet = flat(corners)[:, TETS].reshape(-1, 4)  # (A·6, 4) global grid indices
    vals = values.reshape(-1)[tet]  # (T, 4)
    code = ((vals > level).long() << torch.arange(4)).sum(1)
    keep = CASE_COUNT[code] > 0
    tet, vals, code = tet[keep], vals[keep], code[keep]
    tris, owner = [], []
    for slot in (0, 1):
        has = CASE_COUNT[code] > slot
        edges = CASES[code[has], slot]  # (K, 3, 2) local vertex pairs
        tris.append(torch.gather(tet[has][:, None].expand(-1, 3, -1), 2, edges))  # (K, 3, 2) global pairs
        owner.append(torch.nonzero(has)[:, 0])
    pairs, owner = torch.cat(tris), torch.cat(owner)
    # one vertex per grid edge: key (lo, hi)
    lo, hi = pairs.amin(-1), pairs.amax(-1)
    n_points = m ** 3
    keys, index = torch.unique(lo * n_points + hi, return_inverse=True)
    a, b = keys // n_points, keys % n_points
    va, vb = values.reshape(-1)[a], values.reshape(-1)[b]
    t = ((level - va) / (vb - va)).clamp(1e-3, 1 - 1e-3)  # clamped: no two vertices coincide
    point = lambda g: origin + step * torch.stack([g // (m * m), (g // m) % m, g % m], -1).to(origin)  # noqa: E731
    pa, pb = point(a), point(b)
    vertices = pa + t[:, None] * (pb - pa)
    faces = index.view(-1, 3)
    # outward: from the tetrahedron's inside vertices towards its outside ones
    tv = point(tet[owner])  # (F, 4, 3)
    ins = (vals[owner] > level).to(tv)[..., None]
    direction = (tv * (1 - ins)).sum(1) / (1 - ins).sum(1) - (tv * ins).sum(1) / ins.sum(1)
    tri = vertices[faces]
    normal = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    flip = (normal * direction).sum(1) < 0
    faces = torch.where(flip[:, None], faces[:, [0, 2, 1]], faces)
    return vertices, faces


# -------------------------------------------------------------------------------------- cleanup
def components(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """Connected-component label of every vertex (faces sharing a vertex are connected): minimum-label
    propagation with pointer jumping, vectorised."""
    labels = np.arange(n_vertices)
    while True:
        low = labels[faces].min(1)
        new = labels.copy()
        for k in range(3):
            np.minimum.at(new, faces[:, k], low)
        new = new[new]  # pointer jumping: follow labels to their labels
        if np.array_equal(new, labels):
            return labels
        labels = new


def clean(vertices: torch.Tensor, faces: torch.Tensor, min_component: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop faces repeating a vertex, connected pieces smaller than ``min_component`` of the faces
    (the largest always stays), and vertices no face uses."""
    f = faces.numpy()
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])]
    if len(f):
        label = components(f, len(vertices))[f[:, 0]]
        ids, counts = np.unique(label, return_counts=True)
        big = ids[(counts >= min_component * len(f)) | (counts == counts.max())]
        f = f[np.isin(label, big)]
    used = np.unique(f)
    remap = np.full(len(vertices), -1)
    remap[used] = np.arange(len(used))
    return vertices[torch.from_numpy(used)], torch.from_numpy(remap[f])


def to_metres(vertices: torch.Tensor, size: float) -> torch.Tensor:
    """Largest side → ``size`` m; base on y = 0 (glTF up), centred in x and z."""
    lo, hi = vertices.min(0).values, vertices.max(0).values
    scale = size / float((hi - lo).max().clamp_min(1e-12))
    centre = torch.stack([(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2])
    return (vertices - centre) * scale


# ----------------------------------------------------------------------------------------- main
def sample_grid(density: Callable[[torch.Tensor], torch.Tensor], bound: float, resolution: int, chunk: int = 1 << 16,
                check: Callable[[], None] = lambda: None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """density at (resolution + 1)³ points over [−bound, bound]³ (outer layer forced to 0):
    values (M, M, M) indexed [x, y, z], origin (3,), step. ``check`` runs before each chunk (a cancel)."""
    m = resolution + 1
    step = 2 * bound / resolution
    axis = torch.linspace(-bound, bound, m)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    with torch.no_grad():
        pieces = []
        for i in range(0, grid.shape[0], chunk):
            check()
            pieces.append(density(grid[i:i + chunk]).float())
        values = torch.cat(pieces).view(m, m, m)
    values[[0, -1]], values[:, [0, -1]], values[:, :, [0, -1]] = 0, 0, 0
    return values, torch.full((3,), -bound), step


def fill_cavities(values: torch.Tensor, level: float, check: Callable[[], None] = lambda: None) -> torch.Tensor:
    """``values`` with every empty cell that cannot be reached from the grid's border raised above
    ``level``: hollows sealed inside the object become solid, so only its outer shell is extracted (a field
    full of small bubbles would otherwise give a mesh of hundreds of thousands of hidden faces)."""
    empty = values <= level
    outside = torch.zeros_like(empty)
    outside[[0, -1]], outside[:, [0, -1]], outside[:, :, [0, -1]] = True, True, True
    outside &= empty
    while True:  # flood fill through empty cells, 6-connected, from the border (rolls wrap onto the border,
        grown = outside.clone()  # which is a seed already); up to one pass per cell of the grid's side
        check()
        for axis in range(3):
            grown |= outside.roll(1, axis) | outside.roll(-1, axis)
        grown &= empty
        if bool((grown == outside).all()):
            break
        outside = grown
    return torch.where(empty & ~outside, torch.full_like(values, level * 1.5 + 1e-3), values)


@dataclass
class Extracted:
    mesh: Mesh  # positions in metres (+Y up), with UVs when colours="texture"
    texture: object | None  # PIL image (colours="texture")
    vertex_colours: torch.Tensor | None  # (V, 3) in [0, 1] (colours="vertex")
    stats: dict


def extract(density: Callable[[torch.Tensor], torch.Tensor], albedo: Callable[[torch.Tensor], torch.Tensor] | None,
            bound: float, cfg: ExtractConfig | None = None, check: Callable[[], None] | None = None) -> Extracted:
    """A coloured, cleaned mesh of the surface density = cfg.level. ``density`` and ``albedo`` map points
    (P, 3) in field units to (P,) and (P, 3). ``check`` runs between the pieces of the work (grid chunks, flood
    fill passes, stages) and may raise ``Cancelled``."""
    cfg = cfg or ExtractConfig()
    check = check or (lambda: None)
    values, origin, step = sample_grid(density, bound, cfg.resolution, check=check)
    level, warnings = cfg.level, []
    peak = float(values.max())
    if peak <= level and peak > 1e-2:  # a faint field: take its own half-peak surface instead
        level = 0.5 * peak
        warnings.append(f"the field never reaches density {cfg.level} (its peak is {peak:.3g}): extracted the "
                        f"surface at half its peak, {level:.3g}; the object is faint, train longer or lower lr")
    for _ in range(cfg.smooth):
        values = torch.nn.functional.avg_pool3d(values[None, None], 3, stride=1, padding=1,
                                                count_include_pad=False)[0, 0]
    vertices, faces = marching_tetrahedra(fill_cavities(values, level, check), level, origin, step)
    check()
    if faces.shape[0] == 0:
        raise SfumatoError(f"the field has no surface at density {cfg.level} (its density ranges "
                           f"{float(values.min()):.3g}..{float(values.max()):.3g}); lower the level, or train longer")
    vertices, faces = clean(vertices, faces, cfg.min_component)
    check()
    field_vertices = vertices
    scale_mesh = Mesh(to_metres(vertices, cfg.size), faces, source="field")
    stats = {"vertices": int(vertices.shape[0]), "faces": int(faces.shape[0]), "grid": cfg.resolution,
             "level": level, **({"warnings": warnings} if warnings else {})}
    texture = colours = None
    if albedo is not None and cfg.colours == "vertex":
        with torch.no_grad():
            colours = albedo(field_vertices).float().clamp(0, 1)
    elif albedo is not None:
        scale_mesh, texture = bake(scale_mesh, field_vertices, albedo, cfg.texture_size)
    return Extracted(scale_mesh, texture, colours, stats)


def bake(mesh: Mesh, field_vertices: torch.Tensor, albedo, size: int):
    """UV-unwrap ``mesh`` and bake ``albedo`` at every texel's surface point (in field units) into a PIL image."""
    from ..core.latents import tensor_to_pil
    from .mesh import ensure_uv
    from .raster import rasterize_uv
    from .texture import push_pull

    # unwrap the field-space copy (xatlas splits vertices along seams; positions follow the split)
    unwrapped = ensure_uv(Mesh(field_vertices, mesh.faces), size)
    texels = rasterize_uv(unwrapped.uv, unwrapped.faces, size)
    points = texels.interpolate(unwrapped.vertices, unwrapped.faces)[0]  # (T, T, 3)
    known = texels.mask[0]
    colour = torch.zeros(size, size, 3)
    with torch.no_grad():
        if bool(known.any()):
            colour[known] = albedo(points[known]).float().clamp(0, 1)
    image = push_pull(colour.permute(2, 0, 1), known)
    lo, hi = mesh.vertices.min(0).values, mesh.vertices.max(0).values
    f_lo, f_hi = field_vertices.min(0).values, field_vertices.max(0).values
    scale = float((hi - lo).max() / (f_hi - f_lo).max())
    metres = (unwrapped.vertices - f_lo) * scale + lo  # the same affine map to_metres applied
    return replace(mesh, vertices=metres, faces=unwrapped.faces, uv=unwrapped.uv), tensor_to_pil(image[None])[0]


def save_vertex_colour_glb(mesh: Mesh, colours: torch.Tensor, path: str | Path, metadata: dict | None = None) -> Path:
    """A GLB with per-vertex colours (COLOR_0) and a plain material."""
    import trimesh

    from ..core.provenance import atomic_write

    rgba = np.concatenate([(colours.numpy() * 255).round(), np.full((len(colours), 1), 255)], 1).astype(np.uint8)
    tm = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), vertex_colors=rgba, process=False)
    scene = trimesh.Scene(tm)
    if metadata:
        scene.metadata["sfumato"] = metadata
    data = scene.export(file_type="glb")
    return atomic_write(Path(path), lambda tmp: Path(tmp).write_bytes(data))
