"""ControlNet condition images from the scene's exact geometry: normals and line art; pure numpy, Blender-free.

Both come from Blender's passes of the camera view (``passes.render_passes``), not from a picture:

- **normals**: the Normal pass holds world-space shading normals; turned into the camera's frame (x right, y up,
  z towards the viewer) and written in the colours normal ControlNets were trained on (ControlNet 1.1's
  ``normalbae`` follows ScanNet's protocol: red = left, green = up, blue = towards the viewer), so a wall facing the
  camera is (128, 128, 255) and one facing left is red. Pixels that see nothing face the viewer, as the ControlNet's
  training maps do for distant background.
- **line art**: white lines on black (what line-art and canny ControlNets take): silhouettes and occlusion
  boundaries where depth jumps between neighbouring pixels, and creases where the surface turns by more than
  ``CREASE_DEGREES``. A flat wall has none; a box has its outline and its visible edges.
"""

from __future__ import annotations

import numpy as np

CREASE_DEGREES = 30.0  # a fold sharper than this between neighbouring pixels is drawn
DEPTH_JUMP = 0.03  # relative depth step between neighbours that marks an occlusion boundary


def camera_normals(world: np.ndarray, camera_rotation: np.ndarray) -> np.ndarray:
    """(H, W, 3) world-space normals -> the camera's frame, unit length; zero where ``world`` is zero (no
    surface). ``camera_rotation`` is the 3x3 rotation of the camera's matrix_world (its columns are the camera's
    x, y, z axes in the world)."""
    r = np.asarray(camera_rotation, dtype=np.float64)
    r = r / np.maximum(np.linalg.norm(r, axis=0, keepdims=True), 1e-12)  # a scaled camera keeps its axes
    n = np.asarray(world, dtype=np.float64) @ r  # n_cam = R^T n_world, row-wise
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(length > 1e-6, n / np.maximum(length, 1e-12), 0.0).astype(np.float32)


def normal_image(normals: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 normal map (ScanNet colours, see above) from camera-frame normals; ``mask``: pixels that
    see a surface."""
    rgb = np.stack([-normals[..., 0], normals[..., 1], normals[..., 2]], axis=-1)
    rgb = np.where(mask[..., None], rgb, np.array([0.0, 0.0, 1.0], np.float32))
    return np.round((rgb + 1.0) * 127.5).clip(0, 255).astype(np.uint8)


def line_art(distances: np.ndarray, normals: np.ndarray, *, width: int = 1) -> np.ndarray:
    """(H, W) uint8 line art, white (255) lines on black, from planar distances (``inf`` = background) and
    camera-frame normals; ``width`` thickens lines to about that many pixels (larger images read better with
    2)."""
    hit = np.isfinite(distances)
    d = np.where(hit, distances, 0.0).astype(np.float64)
    lines = np.zeros(d.shape, dtype=bool)
    cos_crease = np.cos(np.radians(CREASE_DEGREES))
    for axis in (0, 1):
        a = [slice(None)] * 2
        b = [slice(None)] * 2
        a[axis], b[axis] = slice(None, -1), slice(1, None)
        da, db, ha, hb = d[tuple(a)], d[tuple(b)], hit[tuple(a)], hit[tuple(b)]
        both = ha & hb
        near = np.where(both, np.minimum(da, db), 1.0)
        jump = both & (np.abs(da - db) > DEPTH_JUMP * near)
        fold = both & ((normals[tuple(a)] * normals[tuple(b)]).sum(-1) < cos_crease)
        edge = (ha != hb) | jump | fold
        # mark the nearer pixel of a pair (the one on the occluding surface), both for folds and outlines
        nearer_a = np.where(both, da <= db, ha)
        lines[tuple(a)] |= edge & nearer_a
        lines[tuple(b)] |= edge & ~nearer_a
    for _ in range(max(0, width - 1)):
        grown = lines.copy()
        grown[1:] |= lines[:-1]
        grown[:, 1:] |= lines[:, :-1]
        lines = grown
    return np.where(lines, 255, 0).astype(np.uint8)


def line_width(width: int, height: int) -> int:
    """Line thickness for an image of this size: 1 pixel up to 512, then about one per 512 pixels."""
    return max(1, round(max(width, height) / 512))
