"""Procedural architectural massings on a site, from a seed: training data for a depth ControlNet (issue #19).

Why it exists: the embedded bundle knows materials, not buildings. A depth ControlNet for it needs thousands of
(picture, depth, caption) triples of buildings; they are made here at training time from a seed and never committed.

What a scene is: a list of :class:`Part`, each one triangle soup of one *kind* (walls, roof, windows, ...) wearing
one procedural material family of :mod:`..core.train.materials` in one colour (glass wears none). Lengths are metres,
+Y is up and the main building's front faces +Z before it is turned (glTF, as :mod:`.cameras`). Every triangle
carries UVs in metres in its own plane: u runs level along a wall or a roof's eave, v up the wall or the slope, so a
brick tile's courses stay level and a shingle tile's courses run along the eaves (the renderer divides by the tile's
real size). Horizontal faces (flat roofs, the ground) are mapped on world x, z.

The main path (:func:`generate`): draw a building type and its proportions, build it in its own frame (footprint
centred on the origin, front towards +Z), turn it, then lay out the site around it: ground, a path to the door,
trees and benches where nothing else stands. :class:`Building` records what the caption says about it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..core.train.captions import FAMILIES

KINDS = ("background", "ground", "path", "plinth", "walls", "roof", "windows", "frames", "door", "balcony",
         "columns", "tree", "bench")  # a part's kind; its index is the label in the renderer's mask
BUILDINGS = ("house", "block", "tower", "pavilion")
ROOFS = ("gable", "hip", "flat", "shed")
GROUNDS = ("lawn", "gravel", "paving")

# Material families (and their colours) that each kind of part may wear; colours are the families' own words.
WALLS = {"running_bond_brick": None, "stack_bond_brick": None, "stucco": None, "board_formed_concrete": None,
         "wood_planks": ("brown", "beige", "grey", "black", "white", "red"), "corrugated_metal": None,
         "square_tiles": ("white", "grey", "blue", "green", "beige")}
PITCHED = {"roof_shingles": None, "slate": ("grey", "black", "blue", "green"),
           "standing_seam_metal": None, "corrugated_metal": ("grey", "black", "red", "green", "blue")}
FLAT = {"gravel": ("grey", "beige", "white", "black"), "polished_concrete": ("grey", "white", "black"),
        "slate": ("grey", "black")}
PLINTH = {"board_formed_concrete": None, "polished_concrete": None, "slate": ("grey", "black"),
          "running_bond_brick": ("red", "brown", "black", "grey"), "marble": ("white", "grey", "black", "beige")}
FRAMES = {"wood_planks": ("white", "black", "brown", "grey"), "standing_seam_metal": ("white", "black", "grey")}
DOORS = {"wood_planks": None, "standing_seam_metal": ("black", "grey", "blue", "green", "red")}
BALCONY = {"board_formed_concrete": ("grey", "white"), "standing_seam_metal": ("black", "grey", "white"),
           "corrugated_metal": ("grey", "black", "white")}
COLUMNS = {"board_formed_concrete": None, "polished_concrete": ("white", "grey"), "marble": ("white", "grey"),
           "wood_planks": ("brown", "beige", "black")}
# (a lawn is mostly watered: green three times in four)
GROUND = {"lawn": {"grass": ("green", "green", "green", "brown")}, "gravel": {"gravel": ("grey", "beige", "white")},
          "paving": {"square_tiles": ("grey", "beige", "white"), "hex_tiles": ("grey", "beige"),
                     "slate": ("grey",), "polished_concrete": ("grey",)}}
PATHS = {"gravel": ("grey", "beige", "white", "red"), "square_tiles": ("grey", "beige", "red", "white"),
         "hex_tiles": ("grey", "beige", "red"), "slate": ("grey", "black"), "wood_planks": ("brown", "grey"),
         "running_bond_brick": ("red", "brown", "grey")}
UP = np.array([0.0, 1.0, 0.0])


@dataclass
class Part:
    """One material on one object: a triangle soup with shading normals and planar UVs in metres."""

    kind: str  # one of KINDS
    vertices: np.ndarray  # (V, 3) float32, metres
    faces: np.ndarray  # (F, 3) int64 into vertices
    normals: np.ndarray  # (V, 3) float32 unit shading normals (flat parts: the face's own)
    uv: np.ndarray  # (F, 3, 2) float32, metres in each face's plane
    family: str | None  # a materials family; None = glass
    colour: str  # the family's colour word ("red"); glass: "glass"
    tile_seed: int  # seed of the material tile it wears
    smooth: bool = False  # closed rounded solid (tree crown, trunk): normals are not flipped towards the camera

    @property
    def label(self) -> int:
        return KINDS.index(self.kind)


@dataclass
class Building:
    """What a caption says about one building, and where it stands."""

    type: str  # one of BUILDINGS
    roof: str  # one of ROOFS
    storeys: int
    center: np.ndarray  # (3,) middle of its bounding box, world
    radius: float  # of its bounding sphere, metres
    height: float  # top of the roof, metres
    materials: dict[str, tuple[str | None, str]]  # kind -> (family, colour) of its parts
    reach: float  # half the diagonal of its footprint (eaves included), metres
    balconies: bool = False
    door: np.ndarray | None = None  # (3,) foot of the front door, world


@dataclass
class Scene:
    parts: list[Part]
    main: Building
    ground: str  # one of GROUNDS
    ground_material: tuple[str, str]  # (family, colour)
    extent: float  # half the side of the ground square, metres
    trees: int = 0
    benches: int = 0
    path: tuple[str, str] | None = None  # (family, colour) of the path to the door
    seed: int = 0


# ----------------------------------------------------------------------------- triangle soups


class _Soup:
    """Triangles being collected for one part (corners (F, 3, 3) and corner normals)."""

    def __init__(self) -> None:
        self.tris: list[np.ndarray] = []
        self.norms: list[np.ndarray] = []

    def poly(self, *pts) -> "_Soup":
        """A convex planar polygon, corners in order (either winding: the renderer draws both sides)."""
        p = np.asarray(pts, dtype=np.float64)
        n = np.cross(p[1] - p[0], p[2] - p[0])
        if np.linalg.norm(n) < 1e-12 and len(p) > 3:
            n = np.cross(p[2] - p[0], p[3] - p[0])
        n = n / max(np.linalg.norm(n), 1e-12)
        for i in range(1, len(p) - 1):
            self.tris.append(np.stack([p[0], p[i], p[i + 1]]))
            self.norms.append(np.stack([n, n, n]))
        return self

    def box(self, lo, hi, skip: tuple[str, ...] = ("bottom",)) -> "_Soup":
        """An axis-aligned box from corner ``lo`` to ``hi`` (its hidden faces in ``skip`` left out)."""
        (x0, y0, z0), (x1, y1, z1) = lo, hi
        faces = {"bottom": [(x0, y0, z0), (x1, y0, z0), (x1, y0, z1), (x0, y0, z1)],
                 "top": [(x0, y1, z0), (x0, y1, z1), (x1, y1, z1), (x1, y1, z0)],
                 "front": [(x0, y0, z1), (x1, y0, z1), (x1, y1, z1), (x0, y1, z1)],
                 "back": [(x0, y0, z0), (x0, y1, z0), (x1, y1, z0), (x1, y0, z0)],
                 "left": [(x0, y0, z0), (x0, y0, z1), (x0, y1, z1), (x0, y1, z0)],
                 "right": [(x1, y0, z0), (x1, y1, z0), (x1, y1, z1), (x1, y0, z1)]}
        for name, pts in faces.items():
            if name not in skip:
                self.poly(*pts)
        return self

    def slab(self, pts, thickness: float) -> "_Soup":
        """A planar polygon given a thickness straight down: a roof plane with its soffit and edges."""
        top = np.asarray(pts, dtype=np.float64)
        bottom = top - UP * thickness
        self.poly(*top)
        self.poly(*bottom)
        for i in range(len(top)):
            j = (i + 1) % len(top)
            self.poly(top[i], top[j], bottom[j], bottom[i])
        return self

    def prism(self, center, radius: float, y0: float, y1: float, sides: int, smooth: bool = False) -> "_Soup":
        """An upright prism (a column, a trunk); ``smooth`` gives it radial normals (it reads round)."""
        a = np.linspace(0, 2 * np.pi, sides + 1)[:-1] + np.pi / sides
        ring = np.stack([np.cos(a), np.zeros_like(a), np.sin(a)], -1)
        c = np.asarray(center, dtype=np.float64)
        for i in range(sides):
            j = (i + 1) % sides
            p = [c + ring[i] * radius + UP * y0, c + ring[j] * radius + UP * y0,
                 c + ring[j] * radius + UP * y1, c + ring[i] * radius + UP * y1]
            if smooth:
                self.tris += [np.stack([p[0], p[1], p[2]]), np.stack([p[0], p[2], p[3]])]
                self.norms += [np.stack([ring[i], ring[j], ring[j]]), np.stack([ring[i], ring[j], ring[i]])]
            else:
                self.poly(*p)
        self.poly(*[c + ring[i] * radius + UP * y1 for i in range(sides)])
        return self

    def blob(self, center, radii, rng: np.random.Generator, bumps: float = 0.12) -> "_Soup":
        """A lumpy ellipsoid (a tree crown): a subdivided octahedron pushed in and out, with smooth normals."""
        verts, tris = _icosphere(2)
        r = 1.0 + bumps * _lumps(verts, rng)
        p = verts * r[:, None] * np.asarray(radii)[None] + np.asarray(center)[None]
        # normals of the lumpy surface, averaged over the faces around each vertex
        fn = np.cross(p[tris[:, 1]] - p[tris[:, 0]], p[tris[:, 2]] - p[tris[:, 0]])
        vn = np.zeros_like(p)
        for k in range(3):
            np.add.at(vn, tris[:, k], fn)
        vn /= np.linalg.norm(vn, axis=1, keepdims=True)
        self.tris += list(p[tris])
        self.norms += list(vn[tris])
        return self

    def extend(self, other: "_Soup", yaw: float, offset: np.ndarray) -> None:
        """Add ``other``'s triangles turned about +Y by ``yaw`` and moved by ``offset`` (a wing joining a house)."""
        c, s = math.cos(yaw), math.sin(yaw)
        r = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
        self.tris += [t @ r.T + offset for t in other.tris]
        self.norms += [n @ r.T for n in other.norms]

    def part(self, kind: str, material: tuple[str | None, str], rng: np.random.Generator,
             smooth: bool = False) -> Part:
        corners = np.asarray(self.tris, dtype=np.float32).reshape(-1, 3, 3)
        norms = np.asarray(self.norms, dtype=np.float32).reshape(-1, 3, 3)
        f = len(corners)
        return Part(kind, corners.reshape(-1, 3), np.arange(3 * f, dtype=np.int64).reshape(f, 3),
                    norms.reshape(-1, 3), np.zeros((f, 3, 2), np.float32), material[0], material[1],
                    int(rng.integers(2**31)), smooth)


def _icosphere(level: int) -> tuple[np.ndarray, np.ndarray]:
    """A unit sphere: an octahedron split ``level`` times (vertices (V, 3), triangles (F, 3))."""
    v = [np.array(x, dtype=np.float64) for x in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))]
    t = [(0, 2, 4), (2, 1, 4), (1, 3, 4), (3, 0, 4), (2, 0, 5), (1, 2, 5), (3, 1, 5), (0, 3, 5)]
    for _ in range(level):
        cache: dict[tuple[int, int], int] = {}

        def mid(a: int, b: int) -> int:
            key = (min(a, b), max(a, b))
            if key not in cache:
                m = v[a] + v[b]
                v.append(m / np.linalg.norm(m))
                cache[key] = len(v) - 1
            return cache[key]

        t = [f for a, b, c in t for f in ((a, mid(a, b), mid(c, a)), (b, mid(b, c), mid(a, b)),
                                           (c, mid(c, a), mid(b, c)), (mid(a, b), mid(b, c), mid(c, a)))]
    return np.array(v), np.array(t, dtype=np.int64)


def _lumps(dirs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smooth random function on the sphere (a few random plane waves), about zero-mean, unit range."""
    k = rng.normal(size=(4, 3)) * 2.5
    phase = rng.uniform(0, 2 * np.pi, 4)
    return np.sin(dirs @ k.T + phase).mean(1) * 1.6


def planar_uv(corners: np.ndarray) -> np.ndarray:
    """UVs in metres (F, 3, 2) for triangle corners (F, 3, 3): level u and upward v in each face's plane; faces
    within ~25° of horizontal use world x, z (a flat roof, the ground)."""
    n = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    flat = np.abs(n[:, 1]) > 0.9
    u_axis = np.cross(UP[None], n)
    u_axis /= np.maximum(np.linalg.norm(u_axis, axis=1, keepdims=True), 1e-12)
    v_axis = np.cross(n, u_axis)
    v_axis *= np.where(v_axis[:, 1:2] < 0, -1.0, 1.0)  # v runs uphill whichever way the face was wound
    u_axis = np.where(flat[:, None], np.array([1.0, 0.0, 0.0]), u_axis)
    v_axis = np.where(flat[:, None], np.array([0.0, 0.0, 1.0]), v_axis)
    return np.stack([np.einsum("fkc,fc->fk", corners, u_axis), np.einsum("fkc,fc->fk", corners, v_axis)], -1)


def _place(part: Part, yaw: float, offset: np.ndarray) -> Part:
    """Turn a part about +Y by ``yaw`` (radians) and move it by ``offset``; its UVs are taken afresh."""
    c, s = math.cos(yaw), math.sin(yaw)
    r = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float32)
    part.vertices = part.vertices @ r.T + np.asarray(offset, dtype=np.float32)
    part.normals = part.normals @ r.T
    part.uv = planar_uv(part.vertices[part.faces].astype(np.float64)).astype(np.float32)
    return part


def _material(rng: np.random.Generator, options: dict[str, tuple[str, ...] | None],
              avoid: str | None = None) -> tuple[str, str]:
    """A (family, colour) from ``options`` (None: any of the family's colours), not ``avoid`` when possible."""
    names = [f for f in options if f != avoid] or list(options)
    family = names[int(rng.integers(len(names)))]
    colours = options[family] or FAMILIES[family].colours
    return family, colours[int(rng.integers(len(colours)))]


# ----------------------------------------------------------------------------- facades and openings


@dataclass
class _Facade:
    """One wall face: ``origin`` its bottom-left corner seen from outside, ``u`` along it, ``n`` outwards."""

    origin: np.ndarray
    u: np.ndarray
    n: np.ndarray
    length: float

    def rect(self, s0: float, s1: float, y0: float, y1: float, off: float) -> list[np.ndarray]:
        o = self.origin + self.n * off
        return [o + self.u * s0 + UP * y0, o + self.u * s1 + UP * y0, o + self.u * s1 + UP * y1,
                o + self.u * s0 + UP * y1]


def _facades(w: float, d: float) -> list[_Facade]:
    """Front (+Z), right (+X), back, left of a footprint w × d centred on the origin."""
    x, z = w / 2, d / 2
    return [_Facade(np.array([-x, 0, z]), np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), w),
            _Facade(np.array([x, 0, z]), np.array([0, 0, -1.0]), np.array([1.0, 0, 0]), d),
            _Facade(np.array([x, 0, -z]), np.array([-1.0, 0, 0]), np.array([0, 0, -1.0]), w),
            _Facade(np.array([-x, 0, -z]), np.array([0, 0, 1.0]), np.array([-1.0, 0, 0]), d)]


@dataclass
class _Openings:
    """Windows, their frames and doors being collected for one building."""

    glass: _Soup = field(default_factory=_Soup)
    frames: _Soup = field(default_factory=_Soup)
    doors: _Soup = field(default_factory=_Soup)

    def window(self, f: _Facade, s: float, y: float, w: float, h: float, frame: float, panes: int) -> None:
        """A window centred at ``s`` along the facade, sill at ``y``: a frame just proud of the wall and
        ``panes`` dark panes just proud of the frame, the frame showing between them (mullions)."""
        self.frames.poly(*f.rect(s - w / 2, s + w / 2, y, y + h, 0.03))
        sill = f.rect(s - w / 2 - 0.05, s + w / 2 + 0.05, y - 0.06, y, 0.14)  # a sill a hand's breadth proud
        self.frames.poly(*sill)
        self.frames.poly(sill[3], sill[2], sill[2] - f.n * 0.14, sill[3] - f.n * 0.14)
        pw = (w - frame * (panes + 1)) / panes
        for k in range(panes):
            a = s - w / 2 + frame + k * (pw + frame)
            self.glass.poly(*f.rect(a, a + pw, y + frame, y + h - frame, 0.05))

    def door(self, f: _Facade, s: float, y: float, w: float, h: float, frame: float) -> None:
        self.frames.poly(*f.rect(s - w / 2 - frame, s + w / 2 + frame, y, y + h + frame, 0.03))
        self.doors.poly(*f.rect(s - w / 2, s + w / 2, y, y + h, 0.05))


def _bays(length: float, bay: float, margin: float) -> np.ndarray:
    """Centres of equal bays (about ``bay`` wide) along a facade, ``margin`` kept clear at each end."""
    n = max(1, int((length - 2 * margin) // bay))
    step = (length - 2 * margin) / n
    return margin + step * (np.arange(n) + 0.5)


def _window_grid(op: _Openings, f: _Facade, floors: list[float], rng: np.random.Generator, *, bay: float,
                 width: float, height: float, sill: float, frame: float, panes: int,
                 skip: set[tuple[int, int]] = frozenset()) -> np.ndarray:
    """A window in every bay of every floor (floor levels ``floors``) but those in ``skip`` (floor, bay)."""
    centres = _bays(f.length, bay, margin=max(0.6, width * 0.6))
    w = min(width, (centres[1] - centres[0]) * 0.85) if len(centres) > 1 else min(width, f.length * 0.5)
    for i, y in enumerate(floors):
        for j, s in enumerate(centres):
            if (i, j) not in skip:
                op.window(f, s, y + sill, w, height, frame, panes)
    return centres


# ----------------------------------------------------------------------------- roofs


def _roof(kind: str, roof: _Soup, walls: _Soup, w: float, d: float, top: float, rng: np.random.Generator, *,
          pitch: float, overhang: float, thickness: float, parapet: float) -> float:
    """A roof over a w × d footprint whose walls stop at ``top``; returns the height of its highest point.

    Gable and hip ridges run along x (callers make w ≥ d); the gable ends and the shed's high walls are
    walls. Pitched planes are slabs of ``thickness`` whose eaves overhang by ``overhang``."""
    x, z, o, t = w / 2, d / 2, overhang, thickness
    slope = math.tan(pitch)
    if kind == "flat":
        if parapet > 0:  # walls carried up round a membrane laid just above the top of the walls
            k, y1 = 0.25, top + parapet
            walls.box((-x, top, -z), (x, y1, z), skip=("bottom", "top"))
            _parapet_inner(walls, x - k, z - k, top + 0.1, y1)
            for sz in (1, -1):  # the coping: a ring of four flat quads
                walls.poly((-x, y1, sz * z), (x, y1, sz * z), (x - k, y1, sz * (z - k)), (-x + k, y1, sz * (z - k)))
                walls.poly((sz * x, y1, -z), (sz * x, y1, z), (sz * (x - k), y1, z - k), (sz * (x - k), y1, -z + k))
            roof.poly((-x + k, top + 0.1, -z + k), (x - k, top + 0.1, -z + k), (x - k, top + 0.1, z - k),
                      (-x + k, top + 0.1, z - k))
            return y1
        roof.box((-x - o, top, -z - o), (x + o, top + t, z + o), skip=())  # a slab cantilevered all round
        return top + t
    eave = top - o * slope  # the eave line, lowered by the overhang's run
    if kind == "gable":
        rise = z * slope
        ridge = top + rise
        ox = rng.uniform(0.15, 0.5)
        for sgn in (1, -1):
            roof.slab([(-x - ox, eave + t, sgn * (z + o)), (x + ox, eave + t, sgn * (z + o)),
                       (x + ox, ridge + t, 0), (-x - ox, ridge + t, 0)], t)
            walls.poly((sgn * x, top, -z), (sgn * x, top, z), (sgn * x, ridge, 0))
        return ridge + t
    if kind == "hip":
        rise = z * slope
        ridge = top + rise
        rx = max(x - z, 0.0)
        e = (x + o, z + o)
        for sgn in (1, -1):
            roof.slab([(-e[0], eave + t, sgn * e[1]), (e[0], eave + t, sgn * e[1]), (rx, ridge + t, 0),
                       (-rx, ridge + t, 0)], t)
            roof.slab([(sgn * e[0], eave + t, -e[1]), (sgn * e[0], eave + t, e[1]), (sgn * rx, ridge + t, 0)], t)
        return ridge + t
    if kind == "shed":  # low at the front (+Z), high at the back
        rise = d * slope
        hi = top + rise
        for sgn in (1, -1):
            walls.poly((sgn * x, top, z), (sgn * x, top, -z), (sgn * x, hi, -z))
        walls.poly((-x, top, -z), (x, top, -z), (x, hi, -z), (-x, hi, -z))
        lo_y, hi_y = top - o * slope, hi + o * slope
        roof.slab([(-x - o, lo_y + t, z + o), (x + o, lo_y + t, z + o), (x + o, hi_y + t, -z - o),
                   (-x - o, hi_y + t, -z - o)], t)
        return hi_y + t
    raise ValueError(f"roof kind {kind!r}; expected one of {ROOFS}")


def _parapet_inner(walls: _Soup, x: float, z: float, y0: float, y1: float) -> None:
    """The inner faces of a parapet (seen from above, they frame the roof)."""
    walls.poly((-x, y0, z), (x, y0, z), (x, y1, z), (-x, y1, z))
    walls.poly((-x, y0, -z), (x, y0, -z), (x, y1, -z), (-x, y1, -z))
    walls.poly((x, y0, -z), (x, y0, z), (x, y1, z), (x, y1, -z))
    walls.poly((-x, y0, -z), (-x, y0, z), (-x, y1, z), (-x, y1, -z))


# ----------------------------------------------------------------------------- buildings


@dataclass
class _Shell:
    """A building in its own frame before it is turned and placed."""

    soups: dict[str, _Soup]
    materials: dict[str, tuple[str | None, str]]
    roof: str
    storeys: int
    height: float
    w: float
    d: float
    door: np.ndarray | None
    balconies: bool = False
    smooth: tuple[str, ...] = ()


def _storeyed(rng: np.random.Generator, kind: str, w: float, d: float, storeys: int, storey: float,
              roof_kind: str, *, plinth: float, balconies: bool, materials: dict) -> _Shell:
    """Walls of ``storeys`` storeys on a plinth, windows on every facade, a front door, a roof: the common
    body of houses, blocks and towers."""
    walls, roof, plinth_s, balc = _Soup(), _Soup(), _Soup(), _Soup()
    op = _Openings()
    top = plinth + storeys * storey
    plinth_s.box((-w / 2 - 0.08, 0, -d / 2 - 0.08), (w / 2 + 0.08, plinth, d / 2 + 0.08))
    walls.box((-w / 2, plinth, -d / 2), (w / 2, top, d / 2), skip=("bottom", "top"))
    floors = [plinth + i * storey for i in range(storeys)]
    tall = kind in ("block", "tower")
    bay = rng.uniform(2.2, 3.4) if tall else rng.uniform(2.4, 3.6)
    ribbon = tall and rng.random() < 0.35  # office-like bands of glass
    width = bay * (rng.uniform(0.8, 0.92) if ribbon else rng.uniform(0.35, 0.6))
    height = min(storey - 0.9, rng.uniform(1.3, 1.9) if not ribbon else storey * 0.62)
    sill = min(rng.uniform(0.8, 1.0), storey - height - 0.25)
    frame = rng.uniform(0.05, 0.1)
    panes = int(rng.choice([1, 2, 2, 3] if width > 1.5 else [1, 2]))
    front, *others = _facades(w, d)
    centres = _bays(front.length, bay, margin=max(0.6, width * 0.6))
    door_bay = int(rng.integers(len(centres))) if kind == "house" else len(centres) // 2
    skip = {(0, door_bay)}
    balcony_bays: set[int] = set()
    if balconies and storeys > 1:
        balcony_bays = {j for j in range(len(centres)) if rng.random() < 0.6} or {door_bay}
    _window_grid(op, front, floors, rng, bay=bay, width=width, height=height, sill=sill, frame=frame,
                 panes=panes, skip=skip)
    for f in others:
        if f.length > 2.4 or rng.random() < 0.5:
            _window_grid(op, f, floors, rng, bay=bay, width=width, height=height, sill=sill, frame=frame,
                         panes=panes)
    dw, dh = (rng.uniform(0.95, 1.2), rng.uniform(2.1, 2.3)) if not tall else (rng.uniform(1.8, 2.6), 2.5)
    s = float(centres[door_bay])
    op.door(front, s, plinth, dw, min(dh, storey - 0.3), frame)
    for i in range(1, storeys):
        for j in balcony_bays:
            _balcony(balc, front, float(centres[j]), floors[i], min(bay * 0.9, 3.2), rng)
    peak = _roof(roof_kind, roof, walls, w, d, top, rng, pitch=math.radians(rng.uniform(25, 48) if roof_kind != "shed"
                                                                               else rng.uniform(8, 18)),
                 overhang=rng.uniform(0.25, 0.6), thickness=rng.uniform(0.15, 0.28),
                 parapet=0.0 if kind == "house" and rng.random() < 0.4 else rng.uniform(0.4, 1.0))
    if kind == "house" and roof_kind in ("gable", "hip") and rng.random() < 0.4:  # a chimney through the slope
        cx, cz, half = rng.uniform(-0.3, 0.3) * w, rng.uniform(-0.25, 0.25) * d, rng.uniform(0.25, 0.4)
        walls.box((cx - half, top, cz - half), (cx + half, peak + rng.uniform(0.3, 0.9), cz + half), skip=("bottom",))
    soups = {"walls": walls, "roof": roof, "plinth": plinth_s, "windows": op.glass, "frames": op.frames,
             "door": op.doors, "balcony": balc}
    door = front.origin + front.u * s + front.n * 0.1
    return _Shell(soups, materials, roof_kind, storeys, peak, w, d, door, bool(balcony_bays))


def _balcony(b: _Soup, f: _Facade, s: float, y: float, w: float, rng: np.random.Generator) -> None:
    """A cantilevered slab with a solid balustrade on its three open sides (facades run along x or z, so
    each piece is an axis-aligned box spanned by two points)."""
    deep, slab, rail, t = rng.uniform(1.1, 1.6), 0.2, 1.0, 0.06

    def box(p: np.ndarray, q: np.ndarray) -> None:
        b.box(np.minimum(p, q), np.maximum(p, q), skip=())

    a = f.origin + f.u * (s - w / 2) + UP * y  # inner left corner at floor level
    c = f.origin + f.u * (s + w / 2) + UP * y + f.n * deep  # outer right corner
    box(a - UP * slab, c)
    box(a + f.n * (deep - t), c + UP * rail)  # the front balustrade
    box(a, a + f.n * deep + f.u * t + UP * rail)  # the two sides
    box(c - f.n * deep - f.u * t, c + UP * rail)


def _house(rng: np.random.Generator, roof: str | None) -> _Shell:
    w = rng.uniform(7.0, 13.0)
    d = min(w, rng.uniform(6.0, 10.0))
    storeys = int(rng.choice([1, 2, 2, 3]))
    drawn = ROOFS[int(rng.choice(len(ROOFS), p=[0.35, 0.25, 0.2, 0.2]))]
    roof = roof or drawn
    storey, plinth, mats = rng.uniform(2.7, 3.1), rng.uniform(0.3, 0.7), _materials(rng, roof)
    house = _storeyed(rng, "house", w, d, storeys, storey, roof, plinth=plinth, balconies=rng.random() < 0.3,
                      materials=mats)
    if rng.random() < 0.35:  # an L or T plan: a narrower wing out of the back, its ridge across the main one
        length, width = rng.uniform(4.0, 8.0), rng.uniform(4.5, min(d, 7.5))
        wing = _storeyed(rng, "house", length + 0.5, width, storeys, storey, roof, plinth=plinth, balconies=False,
                         materials=mats)
        end = (w - width) / 2
        x = float(rng.choice([-end, end, 0.0]))
        for k, soup in wing.soups.items():
            house.soups[k].extend(soup, math.pi / 2, np.array([x, 0.0, -(d + length) / 2]))
        house.height = max(house.height, wing.height)
    return house


def _block(rng: np.random.Generator, roof: str | None) -> _Shell:
    w = rng.uniform(16.0, 34.0)
    d = rng.uniform(10.0, 15.0)
    storeys = int(rng.integers(3, 9))
    drawn = "flat" if rng.random() < 0.7 else ("hip", "gable")[int(rng.integers(2))]
    roof = roof or drawn
    return _storeyed(rng, "block", w, d, storeys, rng.uniform(2.9, 3.3), roof, plinth=rng.uniform(0.4, 0.9),
                     balconies=rng.random() < 0.6, materials=_materials(rng, roof))


def _tower(rng: np.random.Generator, roof: str | None) -> _Shell:
    w = rng.uniform(13.0, 22.0)
    d = min(w, w * rng.uniform(0.7, 1.0))
    storeys = int(rng.integers(9, 21))
    roof = roof or "flat"
    return _storeyed(rng, "tower", w, d, storeys, rng.uniform(3.2, 3.7), roof, plinth=rng.uniform(0.5, 1.0),
                     balconies=rng.random() < 0.3, materials=_materials(rng, roof))


def _pavilion(rng: np.random.Generator, roof: str | None) -> _Shell:
    """A roof on columns over a raised platform, sometimes round a glass room."""
    w = rng.uniform(8.0, 16.0)
    d = min(w, rng.uniform(6.0, 11.0))
    base = rng.uniform(0.3, 0.6)
    clear = rng.uniform(2.8, 3.8)
    roof_kind = roof or ("flat", "flat", "hip", "gable", "shed")[int(rng.integers(5))]
    walls, roof, plinth, columns = _Soup(), _Soup(), _Soup(), _Soup()
    op = _Openings()
    plinth.box((-w / 2 - 0.6, 0, -d / 2 - 0.6), (w / 2 + 0.6, base, d / 2 + 0.6))
    square = rng.random() < 0.5
    r = rng.uniform(0.12, 0.2) if square else rng.uniform(0.1, 0.18)
    nx = max(2, int(round(w / rng.uniform(2.8, 4.2))) + 1)
    nz = max(2, int(round(d / rng.uniform(2.8, 4.2))) + 1)
    xs, zs = np.linspace(-w / 2 + r, w / 2 - r, nx), np.linspace(-d / 2 + r, d / 2 - r, nz)
    for i, x in enumerate(xs):
        for j, z in enumerate(zs):
            if i in (0, nx - 1) or j in (0, nz - 1):
                columns.prism((x, 0, z), r * (math.sqrt(2) if square else 1), base, base + clear, 4 if square else 10,
                              smooth=not square)
    top = base + clear
    if rng.random() < 0.5:  # a glazed room inside the colonnade
        gx, gz = w / 2 - rng.uniform(1.2, 2.5), d / 2 - rng.uniform(1.2, 2.5)
        room = _Soup().box((-gx, base, -gz), (gx, top, gz), skip=("bottom", "top"))
        op.glass.tris += room.tris
        op.glass.norms += room.norms
        for f in _facades(2 * gx, 2 * gz):  # mullions as frames a hand's breadth proud of the glass
            for s in np.linspace(0, f.length, max(2, int(f.length // 1.5) + 1)):
                op.frames.poly(*f.rect(s - 0.04, s + 0.04, base, top, 0.02))
    mats = _materials(rng, roof_kind)
    mats["columns"] = _material(rng, COLUMNS)
    peak = _roof(roof_kind, roof, walls, w, d, top, rng,
                 pitch=math.radians(rng.uniform(18, 35)), overhang=rng.uniform(0.4, 1.2),
                 thickness=rng.uniform(0.25, 0.5), parapet=0.0)
    if roof_kind != "flat":  # a beam round the top of the columns carries the pitched roof
        roof.box((-w / 2, top - 0.3, -d / 2), (w / 2, top, d / 2), skip=())
    mats["walls"] = mats["roof"]  # open gable ends: the roof's own material
    soups = {"walls": walls, "roof": roof, "plinth": plinth, "columns": columns, "windows": op.glass,
             "frames": op.frames}
    return _Shell(soups, mats, roof_kind, 1, peak, w, d, np.array([0.0, base, d / 2 + 0.6]), smooth=("columns",))


def _materials(rng: np.random.Generator, roof: str) -> dict[str, tuple[str | None, str]]:
    walls = _material(rng, WALLS)
    return {"walls": walls, "roof": _material(rng, FLAT if roof == "flat" else PITCHED, avoid=walls[0]),
            "plinth": _material(rng, PLINTH, avoid=walls[0]), "windows": (None, "glass"),
            "frames": _material(rng, FRAMES), "door": _material(rng, DOORS), "balcony": _material(rng, BALCONY)}


_MAKERS = {"house": _house, "block": _block, "tower": _tower, "pavilion": _pavilion}
_WEIGHTS = np.array([0.5, 0.2, 0.12, 0.18])


def _building(rng: np.random.Generator, kind: str, roof: str | None, yaw: float,
              offset: np.ndarray) -> tuple[list[Part], Building]:
    shell = _MAKERS[kind](rng, roof)
    parts = [_place(soup.part(k, shell.materials[k], rng, smooth=k in shell.smooth), yaw, offset)
             for k, soup in shell.soups.items() if soup.tris]
    pts = np.concatenate([p.vertices for p in parts])
    lo, hi = pts.min(0), pts.max(0)
    center = (lo + hi) / 2
    c, s = math.cos(yaw), math.sin(yaw)
    door = None
    if shell.door is not None:
        door = np.array([c * shell.door[0] + s * shell.door[2], 0.0, -s * shell.door[0] + c * shell.door[2]]) + offset
    used = {p.kind: (p.family, p.colour) for p in parts}
    reach = float(np.hypot(hi[0] - lo[0], hi[2] - lo[2]) / 2)
    return parts, Building(kind, shell.roof, shell.storeys, center, float(np.linalg.norm(hi - lo) / 2),
                           float(hi[1]), used, reach, shell.balconies, door)


# ----------------------------------------------------------------------------- the site


def _tree(rng: np.random.Generator, x: float, z: float, trunk_mat, crown_mat) -> list[Part]:
    h = rng.uniform(1.6, 3.2)
    r = rng.uniform(1.2, 2.8)
    trunk = _Soup().prism((x, 0, z), rng.uniform(0.1, 0.22), 0.0, h + r * 0.5, 7, smooth=True)
    crown = _Soup().blob((x, h + r * rng.uniform(0.7, 0.9), z), (r, r * rng.uniform(0.8, 1.3), r), rng)
    return [trunk.part("tree", trunk_mat, rng, smooth=True), crown.part("tree", crown_mat, rng, smooth=True)]


def _bench(rng: np.random.Generator, x: float, z: float, yaw: float, wood, metal) -> list[Part]:
    length = rng.uniform(1.5, 2.2)
    seat, legs = _Soup(), _Soup()
    seat.box((-length / 2, 0.42, -0.22), (length / 2, 0.47, 0.22), skip=())
    seat.box((-length / 2, 0.55, -0.24), (length / 2, 0.85, -0.2), skip=())
    for sx in (-length / 2 + 0.15, length / 2 - 0.15):
        legs.box((sx - 0.03, 0, -0.22), (sx + 0.03, 0.42, 0.2), skip=("bottom",))
        legs.box((sx - 0.03, 0.42, -0.25), (sx + 0.03, 0.85, -0.2), skip=("bottom",))
    return [_place(seat.part("bench", wood, rng), yaw, np.array([x, 0, z])),
            _place(legs.part("bench", metal, rng), yaw, np.array([x, 0, z]))]


def _free(x: float, z: float, r: float, taken: list[tuple[float, float, float]]) -> bool:
    return all((x - a) ** 2 + (z - b) ** 2 > (r + c) ** 2 for a, b, c in taken)


def generate(seed: int, building: str | None = None, roof: str | None = None) -> Scene:
    """A building on a site, the same for the same arguments. ``building`` (one of BUILDINGS) and ``roof`` (one
    of ROOFS, for a house) fix what is otherwise drawn from ``seed``."""
    if building is not None and building not in BUILDINGS:
        raise ValueError(f"building={building!r} is not allowed: one of {BUILDINGS}")
    if roof is not None and roof not in ROOFS:
        raise ValueError(f"roof={roof!r} is not allowed: one of {ROOFS}")
    rng = np.random.default_rng(seed)
    kind = building or BUILDINGS[int(rng.choice(len(BUILDINGS), p=_WEIGHTS))]
    yaw = float(rng.uniform(0, 2 * np.pi))
    parts, main = _building(np.random.default_rng(rng.integers(2**63)), kind, roof, yaw, np.zeros(3))
    taken = [(float(main.center[0]), float(main.center[2]), main.reach)]

    extent = max(30.0, main.reach * rng.uniform(2.5, 4.0), main.height * 1.5)
    ground = GROUNDS[int(rng.choice(3, p=[0.55, 0.2, 0.25]))]
    ground_mat = _material(rng, GROUND[ground])
    g = _Soup().poly((-extent, 0, -extent), (-extent, 0, extent), (extent, 0, extent), (extent, 0, -extent))
    parts.append(_place(g.part("ground", ground_mat, rng), 0.0, np.zeros(3)))

    scene = Scene(parts, main, ground, ground_mat, extent, seed=seed)
    if main.door is not None and rng.random() < 0.8:  # a straight path from the door to the edge of the site
        scene.path = _material(rng, PATHS, avoid=ground_mat[0])
        out = np.array([math.sin(yaw), 0.0, math.cos(yaw)])
        side = np.cross(UP, out)
        half = rng.uniform(0.6, 1.3)
        a, b = main.door, main.door + out * (extent - 1.0 - float(out @ main.door))
        p = _Soup().poly(a - side * half + UP * 0.03, b - side * half + UP * 0.03, b + side * half + UP * 0.03,
                         a + side * half + UP * 0.03)
        parts.append(_place(p.part("path", scene.path, rng), 0.0, np.zeros(3)))
        for t in np.linspace(0.1, 1.0, 8):
            q = a + (b - a) * t
            taken.append((float(q[0]), float(q[2]), half + 0.5))

    trunk_mat = ("wood_planks", ("brown", "black", "grey")[int(rng.integers(3))])
    crown_mat = ("grass", "green" if rng.random() < 0.85 else "brown")
    for _ in range(int(rng.integers(0, 9))):
        for _try in range(20):
            x, z = rng.uniform(-extent * 0.8, extent * 0.8, 2)
            if _free(x, z, 3.0, taken):
                parts += _tree(rng, float(x), float(z), trunk_mat, crown_mat)
                taken.append((float(x), float(z), 2.5))
                scene.trees += 1
                break
    wood = ("wood_planks", ("brown", "beige", "grey")[int(rng.integers(3))])
    metal = ("standing_seam_metal", ("black", "grey")[int(rng.integers(2))])
    for _ in range(int(rng.integers(0, 4))):
        for _try in range(20):
            x, z = rng.uniform(-extent * 0.6, extent * 0.6, 2)
            if _free(x, z, 1.2, taken):
                parts += _bench(rng, float(x), float(z), float(rng.uniform(0, 2 * np.pi)), wood, metal)
                taken.append((float(x), float(z), 1.2))
                scene.benches += 1
                break
    return scene
