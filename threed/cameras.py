"""Perspective cameras as batched tensors, and rigs that frame a mesh (orbit + top view).

World convention: right-handed, +Y up (glTF); a camera looks down its −Z axis (OpenGL). ``Cameras``
holds N world→camera matrices and one vertical field of view; pixels are square and images square
unless ``aspect`` says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.errors import BadParameter


@dataclass
class Cameras:
    world_to_cam: torch.Tensor  # (N, 4, 4)
    fov_y: float  # degrees
    azimuth: tuple[float, ...] = ()  # degrees, for view-dependent prompts and logs
    elevation: tuple[float, ...] = ()
    near: float = 1e-3

    def __len__(self) -> int:
        return self.world_to_cam.shape[0]

    def __getitem__(self, i) -> "Cameras":
        idx = [i] if isinstance(i, int) else list(i)
        return Cameras(self.world_to_cam[idx], self.fov_y, tuple(self.azimuth[j] for j in idx) if self.azimuth else (),
                       tuple(self.elevation[j] for j in idx) if self.elevation else (), self.near)

    @property
    def positions(self) -> torch.Tensor:
        """(N, 3) camera centres in world space."""
        r, t = self.world_to_cam[:, :3, :3], self.world_to_cam[:, :3, 3]
        return -(r.transpose(1, 2) @ t[..., None])[..., 0]

    @property
    def focal(self) -> float:
        """Focal length in units of half the image height."""
        return 1.0 / math.tan(math.radians(self.fov_y) / 2)


def look_at(eye: torch.Tensor, target: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """(N, 4, 4) world→camera matrices for cameras at ``eye`` (N, 3) looking at ``target`` (N, 3)."""
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.linalg.cross(forward, up.expand_as(forward))
    # looking straight along ``up``: any right vector will do
    degenerate = right.norm(dim=-1) < 1e-6
    if bool(degenerate.any()):
        alt = torch.tensor([0.0, 0.0, -1.0]).expand_as(forward)
        right = torch.where(degenerate[:, None], torch.linalg.cross(forward, alt), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    true_up = torch.linalg.cross(right, forward)
    m = torch.eye(4).repeat(eye.shape[0], 1, 1)
    m[:, 0, :3], m[:, 1, :3], m[:, 2, :3] = right, true_up, -forward
    m[:, :3, 3] = -(m[:, :3, :3] @ eye[..., None])[..., 0]
    return m


def orbit(center: torch.Tensor, distance: float, azimuths, elevations, fov_y: float) -> Cameras:
    """Cameras on a sphere around ``center``; azimuth 0 looks from +Z (the glTF front), elevation up."""
    az = torch.tensor([float(a) for a in azimuths])
    el = torch.tensor([float(e) for e in elevations])
    a, e = torch.deg2rad(az), torch.deg2rad(el)
    direction = torch.stack([torch.cos(e) * torch.sin(a), torch.sin(e), torch.cos(e) * torch.cos(a)], dim=-1)
    eye = center[None] + distance * direction
    m = look_at(eye, center[None].expand_as(eye), torch.tensor([0.0, 1.0, 0.0]))
    return Cameras(m, fov_y, tuple(az.tolist()), tuple(el.tolist()), near=distance * 1e-3)


def framing_distance(radius: float, fov_y: float, margin: float = 1.08) -> float:
    """Distance at which a bounding sphere of ``radius`` fills the view (with ``margin``)."""
    return margin * radius / math.sin(math.radians(fov_y) / 2)


def rig(center: torch.Tensor, radius: float, views: int = 8, *, elevations: tuple[float, ...] = (15.0, 40.0),
        top: bool = True, fov_y: float = 40.0, start_azimuth: float = 0.0) -> Cameras:
    """An orbit auto-framed on a bounding sphere: front first, then around, alternating elevations;
    the last view looks straight down when ``top`` (roofs and floors need it)."""
    if not 1 <= views <= 64:
        raise BadParameter("views", views, "an integer from 1 to 64")
    if not 10.0 <= fov_y <= 120.0:
        raise BadParameter("fov", fov_y, "a field of view from 10 to 120 degrees")
    n_orbit = views - 1 if top and views > 2 else views
    order = _around(n_orbit)
    az = [start_azimuth + 360.0 * k / n_orbit for k in order]
    el = [elevations[i % len(elevations)] for i in range(n_orbit)]
    if n_orbit < views:
        az.append(start_azimuth)
        el.append(89.9)
    return orbit(center, framing_distance(radius, fov_y), az, el, fov_y)


def _around(n: int) -> list[int]:
    """Orbit order front, right, left, further right, ...: each new view overlaps one already made."""
    out = [0]
    for k in range(1, n):
        out.append((k + 1) // 2 if k % 2 else n - k // 2)
    return out


def sphere(center: torch.Tensor, radius: float, n: int = 48, *, min_elevation: float = 0.0,
           fov_y: float = 40.0) -> Cameras:
    """``n`` cameras spread evenly (Fibonacci) over the sphere above ``min_elevation``: the set of
    "reasonable viewpoints" the coverage metric uses."""
    az, el = [], []
    lo = math.sin(math.radians(min_elevation))
    for i in range(n):
        z = lo + (1 - lo) * (i + 0.5) / n
        el.append(math.degrees(math.asin(min(z, 0.9999))))
        az.append((i * 137.50776405) % 360.0)
    return orbit(center, framing_distance(radius, fov_y), az, el, fov_y)


def view_prompt(prompt: str, azimuth: float, elevation: float) -> str:
    """The prompt with a view word (front / side / back / overhead view), for view-dependent prompting."""
    if elevation > 60:
        word = "overhead view"
    else:
        a = azimuth % 360
        word = "front view" if a < 45 or a >= 315 else "back view" if 135 <= a < 225 else "side view"
    return f"{prompt}, {word}"
