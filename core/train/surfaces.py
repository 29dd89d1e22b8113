"""Ground-truth surfaces for the procedural materials: height and roughness of what each painter draws.

The painters of :mod:`.materials` already compute the geometry they shade: the distance to a joint, a
bevel, a cleft slate's terraces, a stone's dome, a corrugation's phase. ``render(..., fields=...)`` hands
those fields over without drawing anything more from the painter's generator, so the colour image is
bit-identical to ``sample``'s; this module turns them into

* **height** ``h`` in [0, 1]: joints, grout and gaps low (0.05-0.3), faces of bricks and tiles high
  (0.75-0.95), with the painter's own relief noise on top;
* **roughness** ``r`` in [0, 1] (glTF's perceptual roughness): polished marble 0.08, glazed tile 0.12,
  polished concrete 0.2, metal 0.3-0.4, varnished wood 0.35-0.5, slate 0.7, brick 0.8, stucco, gravel and
  grass 0.85-0.95, mortar rougher than the face it joins; weathering dirt pulls it towards 0.95;
* **normal**: the tangent-space normal of the true height, :func:`core.maps.normals_from_height` at
  ``RELIEF_PX`` pixels of relief per unit of height at 128 px (scaled with the tile's size, so a tile drawn
  at 256 px is the same surface, finer).

Everything is periodic like the image: the fields come from periodic painters, and derivatives wrap.
"""

from __future__ import annotations

import numpy as np

from ..maps import RELIEF_PX, normals_from_height
from .materials import _joint, _px, render

__all__ = ["RELIEF_PX", "sample_surface", "surface_normals"]


def _bevel(d: np.ndarray, joint: float, size: int, px: float) -> np.ndarray:
    """0 at the edge of a joint, rising to 1 about ``px`` pixels (at 128 px) inside the element."""
    return 1 - np.exp(-np.maximum(d - joint / 2, 0) / _px(size, px))


def _masonry(f: dict, size: int, face_r: float, joint_r: float, low: float, px: float):
    """Bricks and tiles: a bevelled face above a recessed joint of mortar or grout."""
    m = _joint(f["d"], f["joint"])
    fine = f.get("fine", 0.0)
    face = 0.75 + 0.2 * _bevel(f["d"], f["joint"], size, px) + 0.03 * fine
    h = face * (1 - m) + (low + 0.02 * fine) * m
    return h, face_r * (1 - m) + joint_r * m + 0.03 * fine


def _bricks(f, size):
    return _masonry(f, size, 0.8, 0.95, 0.2, 1.5)


def _tiles(f, size):
    return _masonry(f, size, 0.12, 0.85, 0.3, 1.2)


def _parquet(f, size):
    m = _joint(f["d"], f["joint"])
    return 0.85 + 0.02 * f["grain"] - 0.3 * m, 0.35 + 0.03 * f["grain"] + 0.25 * m


def _planks(f, size):
    m = _joint(f["d"], f["joint"])
    round_edge = np.exp(-f["edge"] / _px(size, 2))
    h = 0.85 - 0.15 * round_edge + 0.02 * f["grain"] - 0.05 * f["knots"] - 0.3 * m
    return h, 0.5 + 0.04 * f["grain"] + 0.15 * m + 0.1 * f["knots"]


def _board_concrete(f, size):
    seam = np.exp(-f["d"] / _px(size, 0.8))
    h = 0.6 + 0.04 * f["grain"] + 0.04 * f["broad"] - 0.15 * seam - 0.35 * f["pores"] - 0.45 * f["hole"]
    return h, 0.8 + 0.1 * f["pores"] + 0.02 * f["broad"]


def _polished_concrete(f, size):
    cut = f.get("cut", 0.0)
    return 0.5 - 0.3 * cut, 0.2 + 0.1 * f["grit"] + 0.5 * cut


def _marble(f, size):
    return np.full((size, size), 0.5, np.float32), np.full((size, size), 0.08, np.float32)


def _slate(f, size):
    return 0.5 + 0.1 * f["relief"], np.full((size, size), 0.7, np.float32)


def _stucco(f, size):
    r = {"fine": 0.85, "coarse": 0.9, "trowelled": 0.6}[f["finish"]]
    return 0.5 + 0.07 * f["relief"], r + 0.02 * f["relief"]


def _gravel(f, size):
    inside = f["inside"]
    h = 0.05 + (0.1 + 0.75 * f["dome"]) * inside
    return h, 0.7 * inside + 0.95 * (1 - inside)


def _grass(f, size):
    return (f["blades"] + 1.5) / 4, 0.9 + 0.05 * f["dry"]


def _shingles(f, size):
    """Each course rises from under the butt of the course above (fv = 0) to its own butt (fv = 1)."""
    h = (0.3 + 0.55 * f["fv"] + 0.03 * f["texture"]) * (1 - f["slot"]) + 0.2 * f["slot"]
    return h, (0.9 if f["style"] == "three-tab" else 0.8) + 0.02 * f["texture"]


def _corrugated(f, size):
    """The painter shades the sheet as brightness ~ sin(phi), dark in the troughs (one on the border) and a
    highlight near the crests: a height of sin(phi)."""
    lap = f.get("lap", 0.0)
    return 0.5 + 0.4 * np.sin(f["phi"]) - 0.15 * lap, 0.4 + 0.2 * lap


def _standing_seam(f, size):
    s, sw = f["s"], f["sw"]
    seam = np.exp(-(s / (0.45 * sw)) ** 2)
    h = 0.3 + 0.55 * seam
    if f["striated"]:
        h = h - 0.04 * np.exp(-((np.abs(f["fu"] - 0.5) - 0.18) * f["pw"] / _px(size, 0.7)) ** 2)
    return h, 0.3 + 0.05 * seam


_SURFACES = {
    "running_bond_brick": _bricks, "stack_bond_brick": _bricks, "herringbone_parquet": _parquet,
    "wood_planks": _planks, "board_formed_concrete": _board_concrete,
    "polished_concrete": _polished_concrete, "marble": _marble, "slate": _slate, "square_tiles": _tiles,
    "hex_tiles": _tiles, "roof_shingles": _shingles, "corrugated_metal": _corrugated,
    "standing_seam_metal": _standing_seam, "stucco": _stucco, "gravel": _gravel, "grass": _grass,
}


def sample_surface(seed: int, size: int = 128, family: str | None = None, colour: str | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """``sample``'s image and, for the same surface, its height and roughness.

    Returns ``rgb`` (size, size, 3) uint8 (bit-identical to ``sample(seed, size, family, colour)[0]``),
    ``height`` (size, size) float32 in [0, 1], ``roughness`` (size, size) float32 in [0, 1], and the labels."""
    fields: dict = {}
    rgb, labels = render(seed, size, family, colour, fields=fields)
    h, r = _SURFACES[labels["family"]](fields, size)
    dirt = fields.get("dirt")
    if dirt is not None:  # grime fills the pores: rougher, never smoother
        r = r + (0.95 - r) * np.clip(2 * dirt, 0, 1)
    height = np.clip(np.broadcast_to(h, (size, size)), 0, 1).astype(np.float32)
    rough = np.clip(np.broadcast_to(r, (size, size)), 0, 1).astype(np.float32)
    return rgb, height, rough, labels


def surface_normals(height: np.ndarray) -> np.ndarray:
    """The ground-truth normals (size, size, 3) float32, unit, OpenGL (+Y up) of a tile's ``height``."""
    return normals_from_height(height, RELIEF_PX * height.shape[0] / 128)
