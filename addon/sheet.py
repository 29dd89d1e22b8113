"""Contact sheets: tiles in a grid, pure numpy, Blender-free.

Tiles are (h, w, 4) float RGBA arrays, top row first. Blender reads and writes the files (its own
image API, no PIL); this module only places the tiles.
"""

from __future__ import annotations

import math

import numpy as np


def grid_shape(count: int, columns: int | None = None) -> tuple[int, int]:
    """(rows, columns) for ``count`` tiles; a near-square grid unless ``columns`` is given."""
    if count < 1:
        raise ValueError(f"count={count} is not allowed: at least one tile")
    cols = max(1, min(columns or math.ceil(math.sqrt(count)), count))
    return math.ceil(count / cols), cols


def compose(tiles: list[np.ndarray], columns: int | None = None, pad: int = 4,
            background: tuple[float, float, float, float] = (0.12, 0.12, 0.12, 1.0)) -> np.ndarray:
    """One (H, W, 4) array with the tiles row by row, each centred in a cell of the largest tile's size."""
    rows, cols = grid_shape(len(tiles), columns)
    cell_h = max(t.shape[0] for t in tiles)
    cell_w = max(t.shape[1] for t in tiles)
    sheet = np.empty((pad + rows * (cell_h + pad), pad + cols * (cell_w + pad), 4), dtype=np.float32)
    sheet[:] = background
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        h, w = tile.shape[:2]
        y = pad + r * (cell_h + pad) + (cell_h - h) // 2
        x = pad + c * (cell_w + pad) + (cell_w - w) // 2
        sheet[y:y + h, x:x + w] = tile[..., :4] if tile.shape[2] >= 4 else np.dstack(
            [tile[..., :3], np.ones((h, w, 1), np.float32)])
    return sheet
