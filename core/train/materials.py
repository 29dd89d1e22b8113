"""Procedural, seamlessly tileable textures of architectural materials (training data, numpy only).

Everything is built on a torus, so every sample tiles: its left/right and top/bottom edges continue.

* Noise is white noise filtered in the Fourier domain (``irfft2`` of random coefficients times a
  Gaussian gain): it is periodic with the image size by construction, may be
  anisotropic (wood grain, grass blades, slate laminations), and costs one FFT.
* Patterns are laid out by *counts*, not sizes: n bricks per course, an even number of courses
  when alternate courses are offset, n tiles per side, a herringbone period of 2n block widths.
  Coordinates are continuous (pixel centres), so periods equal the image size exactly even when
  a brick is not a whole number of pixels. Hexagons are slightly anisotropic so that an integer
  number of columns and of row pairs fits both ways.
* Per-element variation (a brick's tone, a board's grain offset) is looked up by element index
  taken modulo the counts; cellular noise (gravel) uses a jittered grid with wrapped neighbours.
* Long straight joints are placed half an element away from the image border, so a seam never
  coincides with a joint (the wrap-around is then statistically like any interior column).

``sample(seed, size, family, colour)`` returns an ``(size, size, 3)`` uint8 image and its labels;
``render(..., fields={})`` the same, plus the painters' joint distances and relief fields, from which
:mod:`.surfaces` makes height and roughness. Captions, prompt sets and the tokenizer corpus come from
:mod:`.captions`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial

import numpy as np

from .captions import FAMILIES, FamilySpec, caption, colour_words, corpus, prompt_set

__all__ = ["COLOURS", "DATA_VERSION", "FAMILIES", "FamilySpec", "caption", "colour_words",
           "corpus", "prompt_set", "render", "sample"]

DATA_VERSION = "materials-v1"

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (165, 52, 40), "brown": (112, 72, 42), "white": (226, 223, 216),
    "grey": (128, 128, 126), "black": (36, 36, 38), "beige": (206, 186, 150),
    "green": (58, 122, 56), "blue": (46, 86, 162),
}

# Where a family's "red" (or ...) is a different shade from the generic one.
_FAMILY_RGB: dict[tuple[str, str], tuple[int, int, int]] = {
    ("running_bond_brick", "red"): (158, 64, 44), ("stack_bond_brick", "red"): (158, 64, 44),
    ("running_bond_brick", "brown"): (105, 68, 45), ("stack_bond_brick", "brown"): (105, 68, 45),
    ("herringbone_parquet", "red"): (128, 52, 34), ("wood_planks", "red"): (128, 52, 34),
    ("herringbone_parquet", "brown"): (120, 78, 44), ("wood_planks", "brown"): (120, 78, 44),
    ("herringbone_parquet", "beige"): (208, 176, 130), ("wood_planks", "beige"): (208, 176, 130),
    ("board_formed_concrete", "grey"): (135, 135, 131), ("polished_concrete", "grey"): (128, 128, 125),
    ("marble", "green"): (36, 82, 52), ("marble", "red"): (135, 40, 36),
    ("slate", "grey"): (100, 104, 108), ("slate", "black"): (40, 42, 45),
    ("slate", "green"): (62, 92, 66), ("slate", "blue"): (54, 72, 118),
    ("slate", "red"): (130, 50, 44), ("slate", "brown"): (106, 76, 52),
    ("roof_shingles", "green"): (52, 96, 58), ("roof_shingles", "blue"): (46, 70, 120),
    ("grass", "green"): (68, 122, 42), ("grass", "brown"): (128, 98, 56),
    ("gravel", "grey"): (132, 132, 130), ("gravel", "red"): (150, 66, 48),
}

Painter = Callable[..., tuple[np.ndarray, dict]]  # (rng, size, rgb, out=None) -> (image, params)


# ----------------------------------------------------------------------------- periodic primitives


@lru_cache(maxsize=8)
def _freqs(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Frequencies in cycles per image: fy (size, 1) full, fx (1, size//2+1) non-negative."""
    fy = np.fft.fftfreq(size, 1.0 / size).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(size, 1.0 / size).astype(np.float32)[None, :]
    return fy, fx


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre coordinates X, Y (float) and integer indices Xi, Yi, read-only."""
    yi, xi = np.mgrid[0:size, 0:size]
    out = ((xi + 0.5).astype(np.float32), (yi + 0.5).astype(np.float32), xi, yi)
    for a in out:
        a.setflags(write=False)
    return out


def _spectral(rng: np.random.Generator, size: int, gain: np.ndarray) -> np.ndarray:
    """Random Fourier coefficients shaped by ``gain``, back to a zero-mean, unit-std field."""
    spec = np.empty(gain.shape, np.complex64)
    spec.real = rng.standard_normal(gain.shape, dtype=np.float32)
    spec.imag = rng.standard_normal(gain.shape, dtype=np.float32)
    spec *= gain
    spec[0, 0] = 0
    field = np.fft.irfft2(spec, s=(size, size))
    std = float(field.std())
    return (field / std if std > 0 else field).astype(np.float32)


def noise(rng: np.random.Generator, size: int, sigma: float, sigma_across: float | None = None,
          angle: float = 0.0) -> np.ndarray:
    """Gaussian-blurred white noise on the torus; blur radii are fractions of the image size.

    ``sigma`` is the blur along ``angle`` (radians, 0 = x, pi/2 = y), ``sigma_across`` across it:
    a long ``sigma`` and a short ``sigma_across`` give streaks along ``angle``."""
    fy, fx = _freqs(size)
    across = sigma if sigma_across is None else sigma_across
    ca, sa = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    fu, fv = fx * ca + fy * sa, fy * ca - fx * sa
    gain = np.exp(np.float32(-2 * np.pi**2) * ((sigma * fu) ** 2 + (across * fv) ** 2))
    return _spectral(rng, size, gain)


def _shade(height: np.ndarray, strength: float) -> np.ndarray:
    """Relief lighting from the top-left with wrapped finite differences (stays periodic)."""
    dx = np.roll(height, -1, 1) - np.roll(height, 1, 1)
    dy = np.roll(height, -1, 0) - np.roll(height, 1, 0)
    return 1.0 - strength * (dx + dy)


def _joint(dist: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased joint mask: 1 within ``width``/2 pixels of an edge, 0 further away."""
    return np.clip(width / 2 + 0.5 - dist, 0.0, 1.0)


def _shifted(field: np.ndarray, ids: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """``field`` read with a random integer offset per element id: breaks continuity across joints."""
    size = field.shape[0]
    _, _, xi, yi = _grid(size)
    ox, oy = rng.integers(0, size, n), rng.integers(0, size, n)
    return field[(yi + oy[ids]) % size, (xi + ox[ids]) % size]


def _segments(rng: np.random.Generator, u: np.ndarray, rows: np.ndarray, n_rows: int,
              counts: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Cut each row (u in [0, 1) wraps) into a random number of segments of random length.

    Returns the segment id per pixel, the distance to the nearest cut (fraction of the row) and
    the segment counts. Cuts avoid u=0, so the wrapped-around segment is one piece."""
    kmax = max(counts)
    nseg = rng.choice(counts, n_rows)
    k = np.arange(kmax)[None, :]
    cuts = (k + rng.uniform(0.25, 0.75, (n_rows, kmax))) / nseg[:, None]
    cuts = np.where(k < nseg[:, None], cuts, 9.0).astype(np.float32)  # inactive cuts: never hit
    c = cuts[rows]  # (S, S, kmax)
    index = (u[..., None] > c).sum(-1) % nseg[rows]
    dist = np.abs(u[..., None] - c).min(-1)
    dist = np.minimum(dist, 1.0 - dist)
    return rows * kmax + index, dist, [int(v) for v in nseg]


def _worley(rng: np.random.Generator, size: int, cells: int):
    """Cellular noise on a jittered grid with wrapped neighbours: F1, F2 (pixels), nearest id and
    the offset (dx, dy) from the nearest point."""
    X, Y, _, _ = _grid(size)
    cw = size / cells
    jit = rng.uniform(0.1, 0.9, (2, cells, cells)).astype(np.float32)
    X, Y = X + rng.uniform(0, cw), Y + rng.uniform(0, cw)  # grid lines anywhere, not on the border
    cx, cy = np.floor(X / cw).astype(int), np.floor(Y / cw).astype(int)
    f1 = np.full(X.shape, np.inf, np.float32)
    f2 = f1.copy()
    ids = np.zeros(X.shape, int)
    ddx, ddy = np.zeros_like(X), np.zeros_like(X)
    for oy in (-1, 0, 1):
        for ox in (-1, 0, 1):
            gx, gy = cx + ox, cy + oy
            wx, wy = gx % cells, gy % cells
            px = (gx + jit[0, wy, wx]) * cw
            py = (gy + jit[1, wy, wx]) * cw
            dx, dy = X - px, Y - py
            d = np.sqrt(dx * dx + dy * dy)
            closer = d < f1
            f2 = np.where(closer, f1, np.minimum(f2, d))
            f1 = np.where(closer, d, f1)
            ids = np.where(closer, wy * cells + wx, ids)
            ddx, ddy = np.where(closer, dx, ddx), np.where(closer, dy, ddy)
    return f1, f2, ids, ddx, ddy


def _keep(out: dict | None, **fields) -> None:
    """Hand a painter's intermediate fields (joint distances, relief noise) to :mod:`.surfaces`, which
    turns them into height and roughness; drawing nothing, so the image stays what it was."""
    if out is not None:
        out.update(fields)


def _px(size: int, v: float) -> float:
    """A length given in pixels at 128 px, at ``size``."""
    return v * size / 128.0


def _rgb(values: np.ndarray, tone: np.ndarray) -> np.ndarray:
    """Colour (3,) times a tone field (S, S) -> (S, S, 3)."""
    return tone[..., None] * values[None, None, :]


def _mix(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> np.ndarray:
    m = m[..., None]
    return a * (1.0 - m) + b * m


def _warmth(rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
    """Per-element colour factors (n, 3): a warm/cool shift, nearly neutral in lightness."""
    shift = rng.normal(0, spread, (n, 1)) * np.array([1.0, 0.1, -1.0])
    return (1 + shift + rng.normal(0, spread / 4, (n, 3))).astype(np.float32)


def _lum(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.3, 0.59, 0.11]))


def _wood(rng: np.random.Generator, size: int, angle: float) -> np.ndarray:
    """Wood grain along ``angle``: long streaks plus ring-like bands, zero mean, std ~1."""
    streak = noise(rng, size, 0.25, 0.005, angle)
    rings = np.sin(3.0 * noise(rng, size, 0.3, 0.03, angle))
    return 0.6 * streak + 0.8 * rings


# ----------------------------------------------------------------------------- masonry and tiles

_MORTARS = {
    "light grey": (0.72, 0.71, 0.68), "dark grey": (0.32, 0.32, 0.31), "white": (0.88, 0.87, 0.84),
    "beige": (0.78, 0.72, 0.60), "black": (0.11, 0.11, 0.11),
}


def _contrasting(rng: np.random.Generator, rgb: np.ndarray, options: dict) -> tuple[str, np.ndarray]:
    """A joint colour that differs clearly in lightness from the material."""
    lum = _lum(rgb)
    names = [k for k, v in options.items() if abs(_lum(np.array(v)) - lum) > 0.2]
    name = names[int(rng.integers(len(names)))]
    return name, np.array(options[name], np.float32)


def _bricks(rng: np.random.Generator, size: int, rgb: np.ndarray, stack: bool, out: dict | None = None):
    X, Y, _, _ = _grid(size)
    rows = int(rng.choice([8, 10, 12, 14, 16]))
    per_row = max(2, int(round(rows / rng.uniform(2.5, 3.4))))
    bw, bh = size / per_row, size / rows
    joint = min(_px(size, rng.uniform(1.0, 3.0)), 0.22 * bh)
    u = (X - bw * rng.uniform(0.2, 0.3)) / bw
    v = (Y - bh * rng.uniform(0.4, 0.6)) / bh
    r = np.floor(v)
    if not stack:
        u = u + 0.5 * (r % 2)
    c = np.floor(u)
    fu, fv = u - c, v - r
    d = np.minimum(np.minimum(fu, 1 - fu) * bw, np.minimum(fv, 1 - fv) * bh)
    ids = ((r % rows) * per_row + c % per_row).astype(int)
    spread = rng.uniform(0.04, 0.12)
    tone = 1 + rng.normal(0, spread, rows * per_row).astype(np.float32)[ids]
    fine = noise(rng, size, 0.004)
    tone = tone + 0.05 * fine + 0.04 * noise(rng, size, 0.02)
    tone = tone * (1 - 0.18 * np.exp(-np.maximum(d - joint / 2, 0) / _px(size, 1.5)))
    brick = _rgb(rgb, tone) * _warmth(rng, rows * per_row, spread / 3)[ids]
    mortar_name, mortar = _contrasting(rng, rgb, _MORTARS)
    shadow = np.where(fv < 0.5, 0.75, 1.0)  # the joint's upper half lies under the brick above
    mtone = (1 + 0.06 * noise(rng, size, 0.003)) * shadow
    img = _mix(brick, _rgb(mortar, mtone), _joint(d, joint))
    _keep(out, d=d, joint=joint, fine=fine)
    return img, {"courses": rows, "bricks_per_course": per_row, "joint_px": round(joint, 2),
                 "mortar": mortar_name, "bond": "stack" if stack else "running"}


def _square_tiles(rng: np.random.Generator, size: int, rgb: np.ndarray, out: dict | None = None):
    X, Y, _, _ = _grid(size)
    n = int(rng.choice([3, 4, 5, 6, 8]))
    tw = size / n
    u, v = X / tw + 0.5, Y / tw + 0.5  # grout lines half a tile away from the border
    cu, cv = np.floor(u), np.floor(v)
    fu, fv = u - cu, v - cv
    d = np.minimum(np.minimum(fu, 1 - fu), np.minimum(fv, 1 - fv)) * tw
    grout = min(_px(size, rng.uniform(1.2, 3.2)), 0.12 * tw)
    ids = ((cv % n) * n + cu % n).astype(int)
    tone = 1 + rng.normal(0, rng.uniform(0.01, 0.05), n * n).astype(np.float32)[ids]
    tone = tone + 0.08 * (0.5 - fu) * (1 - fu) + 0.08 * (0.5 - fv) * (1 - fv)  # glaze sheen
    tone = tone * (1 - 0.2 * np.exp(-np.maximum(d - grout / 2, 0) / _px(size, 1.2)))
    tone = tone + 0.015 * noise(rng, size, 0.01)
    name, gcol = _contrasting(rng, rgb, _MORTARS)
    img = _mix(_rgb(rgb, tone), _rgb(gcol, 1 + 0.05 * noise(rng, size, 0.003)), _joint(d, grout))
    _keep(out, d=d, joint=grout)
    return img, {"tiles_per_side": n, "grout_px": round(grout, 2), "grout": name}


_HEX_COUNTS = ((5, 3), (7, 4), (9, 5), (12, 7))  # columns, row pairs: nearly regular hexagons


def _hex_tiles(rng: np.random.Generator, size: int, rgb: np.ndarray, out: dict | None = None):
    X, Y, _, _ = _grid(size)
    kx, ky = _HEX_COUNTS[int(rng.integers(len(_HEX_COUNTS)))]
    w, h = size / kx, size / (2 * ky)  # column pitch, row pitch (pointy-top hexagons)
    a = (w * np.sqrt(3) / 2) / h  # y stretch that makes the hexagons regular
    x0, y0 = X + w / 4, Y  # vertical edges off the border, a row of centres on it
    j0 = np.floor(y0 / h)
    best = np.full(X.shape, np.inf, np.float32)
    ids = np.zeros(X.shape, int)
    dx = np.zeros_like(X)
    dy = np.zeros_like(X)
    for j in (j0, j0 + 1):
        off = (j % 2) * w / 2
        i = np.round((x0 - off) / w)
        ex, ey = x0 - (i * w + off), (y0 - j * h) * a
        dist = ex * ex + ey * ey
        closer = dist < best
        best = np.where(closer, dist, best)
        ids = np.where(closer, ((j % (2 * ky)) * kx + i % kx).astype(int), ids)
        dx, dy = np.where(closer, ex, dx), np.where(closer, ey, dy)
    s3 = np.float32(np.sqrt(3) / 2)
    edge = np.maximum(np.abs(dx), np.maximum(np.abs(0.5 * dx + s3 * dy), np.abs(0.5 * dx - s3 * dy)))
    d = w / 2 - edge
    grout = min(_px(size, rng.uniform(1.2, 3.0)), 0.12 * w)
    n = 2 * ky * kx
    tone = 1 + rng.normal(0, rng.uniform(0.01, 0.06), n).astype(np.float32)[ids]
    tone = tone - 0.06 * (dx + dy) / w  # glaze sheen
    tone = tone * (1 - 0.2 * np.exp(-np.maximum(d - grout / 2, 0) / _px(size, 1.2)))
    name, gcol = _contrasting(rng, rgb, _MORTARS)
    img = _mix(_rgb(rgb, tone), _rgb(gcol, 1 + 0.05 * noise(rng, size, 0.003)), _joint(d, grout))
    _keep(out, d=d, joint=grout)
    return img, {"hex_columns": kx, "hex_rows": 2 * ky, "grout_px": round(grout, 2), "grout": name}


# ----------------------------------------------------------------------------- wood


def _parquet(rng: np.random.Generator, size: int, rgb: np.ndarray, out: dict | None = None):
    """Herringbone of n:1 blocks: a cell (i, j) of the unit grid lies in a horizontal block when
    (i - j) mod 2n < n, otherwise in a vertical one; the pattern repeats every 2n units."""
    X, Y, _, _ = _grid(size)
    n, m = [(2, 2), (2, 3), (3, 2), (4, 2), (2, 4)][int(rng.integers(5))]
    units = 2 * n * m
    b = size / units
    ux, uy = X / b + 0.5, Y / b + 0.5
    i, j = np.floor(ux), np.floor(uy)
    e = (i - j) % (2 * n)
    base = i - j - e
    horiz = e < n
    k_v = i - base - 2 * n  # vertical block index within its band
    along = np.where(horiz, ux - (j + base), uy - (k_v + 1))
    across = np.where(horiz, uy - j, ux - i)
    d = np.minimum(np.minimum(along, n - along), np.minimum(across, 1 - across)) * b
    band = np.where(horiz, base, base + 2 * n) // (2 * n) % m
    key = np.where(horiz, j, k_v) % units
    ids = ((horiz * units + key) * m + band).astype(int)
    count = 2 * units * m
    grain = np.where(horiz, _shifted(_wood(rng, size, 0.0), ids, rng, count),
                     _shifted(_wood(rng, size, np.pi / 2), ids, rng, count))
    spread = rng.uniform(0.05, 0.14)
    tone = 1 + rng.normal(0, spread, count).astype(np.float32)[ids] + 0.07 * grain
    joint = _px(size, rng.uniform(0.6, 1.3))
    tone = tone * (1 - 0.6 * _joint(d, joint))
    _keep(out, d=d, joint=joint, grain=grain)
    return _rgb(rgb, tone), {"block_ratio": n, "units": units, "joint_px": round(joint, 2)}


def _planks(rng: np.random.Generator, size: int, rgb: np.ndarray, out: dict | None = None):
    X, Y, _, _ = _grid(size)
    rows = int(rng.choice([4, 5, 6, 7, 8]))
    bh = size / rows
    v = Y / bh + 0.5
    r = np.floor(v).astype(int) % rows
    fv = v - np.floor(v)
    counts = (1,) if rows < 6 else (1, 2)  # boards at least ~3x as long as wide
    ids, cut, nseg = _segments(rng, X / size, r, rows, counts)
    d = np.minimum(cut * size, np.minimum(fv, 1 - fv) * bh)
    count = rows * 3
    grain = _shifted(_wood(rng, size, 0.0), ids, rng, count)
    spread = rng.uniform(0.04, 0.12)
    tone = 1 + rng.normal(0, spread, count).astype(np.float32)[ids] + 0.08 * grain
    knots = np.clip(noise(rng, size, 0.012, 0.006) - 3.2, 0, 1)  # rare dark knots
    joint = _px(size, rng.uniform(0.8, 1.8))
    tone = tone * (1 - 0.5 * knots) * (1 - 0.6 * _joint(d, joint))
    tone = tone * (1 - 0.08 * np.exp(-np.minimum(fv, 1 - fv) * bh / _px(size, 2)))
    _keep(out, d=d, joint=joint, grain=grain, knots=knots, edge=np.minimum(fv, 1 - fv) * bh)
    return _rgb(rgb, tone), {"planks_across": rows, "boards_per_row": nseg,
                             "joint_px": round(joint, 2)}


# ----------------------------------------------------------------------------- concrete and stone


def _board_concrete(rng: np.random.Generator, size: int, rgb: np.ndarray, out: dict | None = None):
    X, Y, _, _ = _grid(size)
    rows = int(rng.choice([4, 5, 6, 7, 8]))
    bh = size / rows
    v = Y / bh + 0.5
    r = np.floor(v).astype(int) % rows
    fv = v - np.floor(v)
    ids, cut, _ = _segments(rng, X / size, r, rows, (1, 2))
    grain = _shifted(_wood(rng, size, 0.0), ids, rng, rows * 2)
    tone = 1 + rng.normal(0, 0.04, rows * 2).astype(np.float32)[ids] + 0.05 * grain
    broad = noise(rng, size, 0.08)
    tone = tone + 0.05 * broad + 0.03 * noise(rng, size, 0.004)
    d = np.minimum(np.minimum(fv, 1 - fv) * bh, cut * size)
    tone = tone * (1 - 0.22 * np.exp(-d / _px(size, 0.8)))
    pores = np.clip(noise(rng, size, 0.006) - 2.4, 0, 1)
    tone = tone * (1 - 0.5 * pores)
    tx = int(rng.choice([2, 3]))
    py = 2 * bh if rows % 2 == 0 else bh  # a row of form-tie holes every board or every other
    hx = ((X * tx / size) % 1 - 0.5) * size / tx
    hole = np.hypot(hx, ((Y / py + 0.5) % 1 - 0.5) * py)
    rad = _px(size, rng.uniform(2.0, 3.2))
    tone = tone * (1 - 0.45 * _joint(hole, 2 * rad)) * (1 + 0.1 * _joint(np.abs(hole - rad - 1), 1.2))
    _keep(out, d=d, grain=grain, broad=broad, pores=pores, hole=_joint(hole, 2 * rad))
    return _rgb(rgb, tone), {"boards": rows, "tie_holes_across": tx}


def _polished_concrete(rng: np.random.Generator, size: int, rgb: np.ndarray, out: dict | None = None):
    tone = 1 + 0.06 * noise(rng, size, 0.06) + 0.03 * noise(rng, size, 0.015)
    grit = rng.uniform(0.004, 0.01)
    light = np.clip(noise(rng, size, grit) - 1.7, 0, 1)
    dark = np.clip(noise(rng, size, grit) - 1.9, 0, 1)
    tone = tone * (1 + 0.5 * light) * (1 - 0.45 * dark)
    img = _rgb(rgb, tone)
    sheen = np.clip(noise(rng, size, 0.12), 0, None) * rng.uniform(0.03, 0.08)
    img = img + sheen[..., None]
    joints = int(rng.choice([0, 0, 1, 2]))
    if joints:
        X, Y, _, _ = _grid(size)
        pw = size / joints
        fu, fv = (X / pw + 0.5) % 1, (Y / pw + 0.5) % 1
        d = np.minimum(np.minimum(fu, 1 - fu), np.minimum(fv, 1 - fv)) * pw
        img = img * (1 - 0.45 * _joint(d, _px(size, 1.0)))[..., None]
        _keep(out, cut=_joint(d, _px(size, 1.0)))
    _keep(out, grit=light + dark)
    return img, {"grit": round(float(grit), 4), "saw_cuts": joints}


def _marble(rng: np.random.Generator, size: int, rgb: np.ndarray, out: dict | None = None):
    """Veins along integer-frequency stripes (periodic) warped by smooth noise, plus a faint
    network of thin veins on a noise level set."""
    X, Y, _, _ = _grid(size)
    light = _lum(rgb) > 0.45
    vein_rgb = rgb * 0.4 + 0.1 if light else np.array([0.9, 0.89, 0.86], np.float32)
    vein_layer = _rgb(vein_rgb, np.ones_like(X))
    img = _rgb(rgb, 1 + 0.05 * noise(rng, size, 0.08) + 0.015 * noise(rng, size, 0.01))
    params = {"veins": []}
    for strength, width in [(0.9, 0.05), (0.6, 0.03)]:
        kx, ky = [(1, 1), (1, -1), (2, 1), (1, 2), (2, -1), (1, -2)][int(rng.integers(6))]
        warp = rng.uniform(0.5, 1.0) * noise(rng, size, 0.1) + 0.15 * noise(rng, size, 0.02)
        phase = np.pi * (kx * X + ky * Y) / size + warp + rng.uniform(0, 6.3)
        dist = np.abs(np.sin(phase))
        vein = np.exp(-dist / width) + 0.2 * np.exp(-dist / (6 * width))
        fade = np.clip(0.7 + 0.6 * noise(rng, size, 0.08), 0, 1)
        img = _mix(img, vein_layer, np.minimum(strength * vein * fade, 1))
        params["veins"].append([kx, ky])
    web = np.exp(-np.abs(noise(rng, size, 0.03)) / 0.06) * np.clip(noise(rng, size, 0.06), 0, 1)
    return _mix(img, vein_layer, 0.5 * web), params  # polished flat: surfaces.py needs no field


def _slate(rng: np.random.Generator, size: int, rgb: np.ndarray, out: dict | None = None):
    """Cleft slate: terraces of a laminated height field, step edges lit, facets toned apart."""
    angle = float(rng.uniform(-0.4, 0.4))
    h = noise(rng, size, 0.2, 0.06, angle) + 0.3 * noise(rng, size, 0.06, 0.02, angle)
    levels = int(rng.integers(3, 7))
    q = np.floor(h * levels / 5)
    n = 4 * levels + 8
    facet = rng.normal(0, 0.09, n).astype(np.float32)[(q.astype(int) + n // 2) % n]
    grain = noise(rng, size, 0.004)  # fine, isotropic: stone, not wood
    tone = 1 + facet + 0.06 * noise(rng, size, 0.04) + 0.035 * grain
    tone = tone * _shade(q + 0.05 * h + 0.04 * grain, 0.3)
    _keep(out, relief=q + 0.05 * h + 0.04 * grain)
    return _rgb(rgb, tone), {"cleft_levels": levels, "lamination_angle": round(angle, 3)}


def _stucco(rng: np.random.Generator, size: int, rgb: np.ndarray, out: dict | None = None):
    finish = ["fine", "coarse", "trowelled"][int(rng.integers(3))]
    grain = {"fine": 0.004, "coarse": 0.008, "trowelled": 0.005}[finish]
    h = noise(rng, size, grain) + 0.5 * noise(rng, size, grain * 2.5)
    if finish == "trowelled":
        t = noise(rng, size, 0.05, 0.02, float(rng.uniform(0, np.pi)))
        h = 0.5 * h + 2.5 * np.clip(t, -0.3, 0.6)
    tone = (1 + 0.04 * noise(rng, size, 0.1)) * _shade(h, 0.12 if finish != "coarse" else 0.16)
    _keep(out, relief=h, finish=finish)
    return _rgb(rgb, tone), {"finish": finish}


def _gravel(rng: np.random.Generator, size: int, rgb: np.ndarray, out: dict | None = None):
    """Rounded stones on a jittered grid (cellular noise), dark gaps between them."""
    cells = int(rng.choice([10, 12, 14, 16]))
    f1, f2, ids, dx, dy = _worley(rng, size, cells)
    cw = size / cells
    n = cells * cells
    radius = (cw * rng.uniform(0.45, 0.7, n)).astype(np.float32)[ids]
    lum = 1 + rng.normal(0, 0.16, n).astype(np.float32)[ids]
    dome = np.sqrt(np.clip(1 - (f1 / radius) ** 2, 0, 1))
    lit = 1 + 0.4 * (-(dx + dy) / radius) * dome
    inside = np.clip((radius - f1) / _px(size, 1.0), 0, 1) * np.clip((f2 - f1) / _px(size, 1.5), 0, 1)
    tone = lum * lit * (0.5 + 0.5 * dome) * (1 + 0.06 * noise(rng, size, 0.004))
    stones = _rgb(rgb, tone) * _warmth(rng, n, 0.03)[ids]
    gaps = _rgb(rgb * 0.35, 1 + 0.1 * noise(rng, size, 0.01))
    _keep(out, dome=dome, inside=inside)
    return _mix(gaps, stones, inside), {"stones_per_side": cells}


def _grass(rng: np.random.Generator, size: int, rgb: np.ndarray, out: dict | None = None):
    blades = np.zeros((size, size), np.float32)
    for _ in range(3):
        angle = np.pi / 2 + float(rng.uniform(-0.4, 0.4))
        blades = np.maximum(blades, noise(rng, size, 0.04, 0.004, angle))
    height = np.clip(blades, -1.5, 2.5)
    tone = 0.55 + 0.22 * height
    patches = noise(rng, size, 0.1)
    img = _rgb(rgb, tone * (1 + 0.08 * patches))
    tips = np.clip(height - 1.2, 0, 1)[..., None] * np.array([0.12, 0.1, -0.02], np.float32)
    dry = np.clip(patches - 0.8, 0, 1)[..., None] * np.array([0.05, 0.02, -0.03], np.float32)
    _keep(out, blades=height, dry=np.clip(patches - 0.8, 0, 1))
    return img + tips + dry, {"blade_layers": 3}


# ----------------------------------------------------------------------------- roofs and metal


def _shingles(rng: np.random.Generator, size: int, rgb: np.ndarray, out: dict | None = None):
    X, Y, _, _ = _grid(size)
    rows = int(rng.choice([6, 8, 10, 12]))
    bh = size / rows
    v = Y / bh + 0.5
    r = np.floor(v).astype(int) % rows
    fv = v - np.floor(v)
    style = "three-tab" if rng.random() < 0.55 else "shake"
    if style == "three-tab":
        tabs = int(rng.choice([3, 4, 5, 6]))
        u = X / size * tabs + 0.25 + 0.5 * (r % 2)
        ids = (r * tabs + np.floor(u) % tabs).astype(int)
        slot = np.minimum(u % 1, 1 - u % 1) * size / tabs
        count = rows * tabs
        texture = noise(rng, size, 0.003)
        amp = 0.12
    else:
        ids, cut, _ = _segments(rng, X / size, r, rows, (4, 5, 6, 7))
        slot, count = cut * size, rows * 7
        texture = _shifted(noise(rng, size, 0.1, 0.004, np.pi / 2), ids, rng, count)
        amp = 0.1
    tone = 1 + rng.normal(0, rng.uniform(0.05, 0.12), count).astype(np.float32)[ids]
    tone = tone + amp * texture
    tone = tone * (1 - 0.7 * _joint(slot, _px(size, 1.2)))
    tone = tone * (1 - 0.55 * np.exp(-fv * bh / _px(size, 2.0)))  # shadow of the course above
    tone = tone * (1 + 0.12 * np.exp(-(1 - fv) * bh / _px(size, 1.0)))  # lit butt edge
    _keep(out, fv=fv, slot=_joint(slot, _px(size, 1.2)), texture=texture, style=style)
    return _rgb(rgb, tone), {"courses": rows, "style": style}


def _corrugated(rng: np.random.Generator, size: int, rgb: np.ndarray, out: dict | None = None):
    X, Y, _, _ = _grid(size)
    ribs = int(rng.choice([8, 10, 12, 16, 20]))
    phi = 2 * np.pi * ribs * X / size + 1.5 * np.pi + rng.uniform(-0.3, 0.3)  # trough on the border
    slope = np.sin(phi)
    tone = 0.85 + 0.25 * slope + 0.03 * noise(rng, size, 0.1, 0.02)
    spec = np.clip(np.sin(phi + 0.5), 0, 1) ** 12 * 0.25
    img = _rgb(rgb, tone) + spec[..., None]
    if rng.random() < 0.5:  # a horizontal end lap between two sheets
        y = size * rng.uniform(0.3, 0.7)
        d = np.abs(Y - y)
        img = img * (1 - 0.4 * _joint(d, _px(size, 1.5)))[..., None]
        _keep(out, lap=_joint(d, _px(size, 1.5)))
    _keep(out, phi=phi, ribs=ribs)
    return img, {"ribs": ribs}


def _standing_seam(rng: np.random.Generator, size: int, rgb: np.ndarray, out: dict | None = None):
    X, _, _, _ = _grid(size)
    pans = int(rng.choice([3, 4, 5, 6]))
    pw = size / pans
    u = X / pw + 0.5
    fu = u - np.floor(u)
    s = np.where(fu < 0.5, fu, fu - 1) * pw  # signed distance to the seam, pixels
    sw = _px(size, rng.uniform(2.0, 3.5))
    rib = np.exp(-((s + 0.25 * sw) / (0.35 * sw)) ** 2)
    shadow = np.exp(-((s - 0.7 * sw) / (0.6 * sw)) ** 2)
    tone = 1 + 0.35 * rib - 0.35 * shadow
    tone = tone + 0.03 * noise(rng, size, 0.06, 0.02, np.pi / 2)  # oil canning
    striated = rng.random() < 0.4
    if striated:
        tone = tone - 0.05 * np.exp(-((np.abs(fu - 0.5) - 0.18) * pw / _px(size, 0.7)) ** 2)
    _keep(out, s=s, sw=sw, fu=fu, pw=pw, striated=striated)
    return _rgb(rgb, tone), {"pans": pans, "seam_px": round(sw, 2), "striated": striated}


_PAINTERS: dict[str, Painter] = {
    "running_bond_brick": partial(_bricks, stack=False),
    "stack_bond_brick": partial(_bricks, stack=True),
    "herringbone_parquet": _parquet,
    "wood_planks": _planks,
    "board_formed_concrete": _board_concrete,
    "polished_concrete": _polished_concrete,
    "marble": _marble,
    "slate": _slate,
    "square_tiles": _square_tiles,
    "hex_tiles": _hex_tiles,
    "roof_shingles": _shingles,
    "corrugated_metal": _corrugated,
    "standing_seam_metal": _standing_seam,
    "stucco": _stucco,
    "gravel": _gravel,
    "grass": _grass,
}


# ----------------------------------------------------------------------------- sampling


def _base_rgb(family: str, colour: str, rng: np.random.Generator) -> np.ndarray:
    """The family's shade of ``colour``, jittered a little in lightness and tint."""
    rgb = np.array(_FAMILY_RGB.get((family, colour), COLOURS[colour]), np.float32) / 255
    chroma = float(rgb.max() - rgb.min())  # neutral colours get less tint, so white stays white
    tint = rng.normal(0, 0.01 + 0.04 * chroma, 3)
    rgb = rgb * rng.uniform(0.9, 1.1) * (1 + tint).astype(np.float32)
    return np.clip(rgb, 0.02, 0.95).astype(np.float32)


def _exposure(img: np.ndarray, rgb: np.ndarray) -> float:
    """Gain that brings the median lightness back to the base colour's, so that shading, joints
    and shadows do not turn a named colour into another (white into grey, beige into brown)."""
    lum = img @ np.array([0.3, 0.59, 0.11], np.float32)
    median = float(np.median(lum))
    return float(np.clip(_lum(rgb) / max(median, 1e-3), 0.85, 1.4))


def _weather(rng: np.random.Generator, img: np.ndarray, amount: float, surface: str,
             out: dict | None = None) -> np.ndarray:
    """Dirt, streaks or stains and colour drift, all periodic; ``amount`` in [0, 1]."""
    size = img.shape[0]
    dirt = np.clip(0.5 * noise(rng, size, 0.05) + 0.3, 0, 1) * 0.28
    if surface in ("wall", "roof"):
        dirt = dirt + 0.2 * np.clip(noise(rng, size, 0.2, 0.008, np.pi / 2), 0, 1.5)
    else:
        dirt = dirt + 0.25 * np.clip(noise(rng, size, 0.025) - 1.0, 0, 1)
    grime = np.array([0.26, 0.23, 0.19], np.float32)
    img = _mix(img, grime[None, None, :] * (0.6 + img.mean(-1, keepdims=True)), amount * dirt)
    _keep(out, dirt=amount * dirt)
    warm = 0.04 * amount * np.clip(noise(rng, size, 0.1), 0, 2)  # rusty / yellowed patches
    return img * (1 + warm[..., None] * np.array([1.0, 0.2, -1.0], np.float32))


def sample(seed: int, size: int = 128, family: str | None = None,
           colour: str | None = None) -> tuple[np.ndarray, dict]:
    """One tileable texture, ``(size, size, 3)`` uint8, and its labels.

    Family and colour are drawn from ``seed`` when not given (the colour among the family's).
    The same arguments give the same image. ``size`` must be a multiple of 16 (32+)."""
    return render(seed, size, family, colour)


def render(seed: int, size: int = 128, family: str | None = None, colour: str | None = None,
           fields: dict | None = None) -> tuple[np.ndarray, dict]:
    """``sample``, and when ``fields`` is a dict, the painter's and the weathering's intermediate fields
    put into it (for :mod:`.surfaces`); the image is the same either way."""
    if size < 32 or size % 16:
        raise ValueError(f"size must be a multiple of 16 and at least 32, got {size}")
    rng = np.random.default_rng(seed)
    name = family if family is not None else list(FAMILIES)[int(rng.integers(len(FAMILIES)))]
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; expected one of {sorted(FAMILIES)}")
    spec = FAMILIES[name]
    col = colour if colour is not None else spec.colours[int(rng.integers(len(spec.colours)))]
    if col not in spec.colours:
        raise ValueError(f"{name} comes in {spec.colours}, not {col!r}")
    rgb = _base_rgb(name, col, rng)
    img, params = _PAINTERS[name](rng, size, rgb, out=fields)
    img = img * _exposure(img, rgb)
    amount = 0.0 if rng.random() < 0.5 else float(rng.uniform(0.35, 1.0))
    if amount:
        img = _weather(rng, img, amount, spec.surface, out=fields)
    out = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    labels = {"family": name, "colour": col, "weathered": amount > 0,
              "weathering": round(amount, 3), **params}
    return out, labels
