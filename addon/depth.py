"""Depth from Blender's Z pass, in the engine's convention; pure numpy, Blender-free.

Blender's Z pass (Cycles, one sample with a near-zero pixel filter) holds for each pixel the planar
depth of the surface seen through the pixel centre: the distance along the camera's view axis,
z = (P - O) · f with O the camera position and f its unit forward vector. Pixels that hit nothing
hold a huge value (1e10). Blender stores pixel rows bottom-up.

The engine takes a ``.npy`` of distances with ``inf`` for the background and normalises the whole
frame with one near/far (core/image.py ``load_depth``), so the exact depth travels unchanged.
"""

from __future__ import annotations

import numpy as np

BACKGROUND = 1e9  # Z values at or above this are "hit nothing"


def distances_from_zpass(pixels: np.ndarray, width: int, height: int, channels: int) -> np.ndarray:
    """(height, width) float32 distances, top row first, ``inf`` where the camera sees no surface.

    ``pixels``: the flat float pixels of the loaded Z-pass image (bottom row first, as Blender
    stores them), ``channels`` values per pixel; depth is in the first channel."""
    z = np.asarray(pixels, dtype=np.float32).reshape(height, width, channels)[::-1, :, 0]
    return np.where((z >= BACKGROUND) | ~np.isfinite(z) | (z <= 0), np.inf, z).astype(np.float32)


def summary(d: np.ndarray) -> dict[str, float]:
    """Near, far and the share of pixels that see geometry (for logs and provenance)."""
    valid = np.isfinite(d)
    if not valid.any():
        return {"near": 0.0, "far": 0.0, "coverage": 0.0}
    return {"near": float(d[valid].min()), "far": float(d[valid].max()), "coverage": float(valid.mean())}
