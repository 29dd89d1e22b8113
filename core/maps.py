"""PBR maps from a colour texture: height, tangent-space normal and roughness, tileable like the colour.

Two predictors with one return shape, ``{"height": (H, W) float32 0..1, "normal": (H, W, 3) uint8,
"roughness": (H, W) float32 0..1}``:

* :func:`predict_maps`: a small fully convolutional network (:class:`MapNet`, circular padding everywhere,
  so its maps tile when the colour does) trained on the procedural materials, whose generator knows the
  height and roughness of what it draws (``core/train/surfaces.py``, ``core/train/maps_train.py``). It
  ships in the embedded bundle as the ``maps`` component (fp16 safetensors, hashed in the manifest) and
  serves the output of any bundle.
* :func:`baseline_maps`: what free tools do by default (NormalMap-Online, GIMP's normal map filter):
  height = luminance, normals from its Sobel gradients (wrapped), and roughness = 1 - normalised luminance,
  the "smoothness from the diffuse" of tools like Materialize (bright reads glossy, dark reads rough).

Normals are encoded as glTF and Blender's Normal Map node expect: OpenGL convention (+X right, +Y up,
+Z out of the surface), ``n * 0.5 + 0.5`` in 0..255. With image rows going down, a height rising
downwards tilts the normal up: ``n ∝ (-s ∂h/∂x, +s ∂h/∂y_down, 1)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["BASELINE_STRENGTH", "RELIEF_PX", "MapNet", "MapNetConfig", "baseline_maps", "decode_normals",
           "encode_normals", "load_map_net", "normals_from_height", "predict_maps"]

RELIEF_PX = 3.0  # ground truth: a height step of 1 is 3 pixels deep at 128 px (scaled with the tile's size)
BASELINE_STRENGTH = 1.5  # the baseline's slope gain on luminance: the best of 0.5-6 on training seeds 500-595
COMPONENT = "maps"
WEIGHTS = "model.safetensors"


# ----------------------------------------------------------------------------- normals


def normals_from_height(height: np.ndarray, strength: float) -> np.ndarray:
    """Unit normals (H, W, 3) float32 of ``height`` (H, W) with wrapped central differences: the surface
    z = strength * height, in pixels."""
    h = height.astype(np.float32)
    dx = (np.roll(h, -1, 1) - np.roll(h, 1, 1)) / 2
    dy = (np.roll(h, -1, 0) - np.roll(h, 1, 0)) / 2  # rows go down
    n = np.stack([-strength * dx, strength * dy, np.ones_like(h)], -1)
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


def encode_normals(n: np.ndarray) -> np.ndarray:
    """Unit normals (H, W, 3) -> uint8 (H, W, 3), 128 = 0 (glTF normalTexture encoding)."""
    return np.clip(np.rint((n * 0.5 + 0.5) * 255), 0, 255).astype(np.uint8)


def decode_normals(img: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> unit normals float32 (H, W, 3)."""
    n = img.astype(np.float32) / 255 * 2 - 1
    return n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return (rgb.astype(np.float32) / 255) @ np.array([0.2126, 0.7152, 0.0722], np.float32)


def baseline_maps(rgb: np.ndarray, strength: float = BASELINE_STRENGTH) -> dict[str, np.ndarray]:
    """The free-tool recipe on ``rgb`` (H, W, 3) uint8: height = luminance (stretched to 0..1), normals
    from its 3x3 Sobel gradients with wrap-around (divided by 8: a slope per pixel) times ``strength``,
    roughness = 1 - that stretched luminance."""
    lum = _luminance(rgb)
    lo, hi = float(lum.min()), float(lum.max())
    h = (lum - lo) / max(hi - lo, 1e-6)
    smooth_y = np.roll(h, 1, 0) + 2 * h + np.roll(h, -1, 0)
    smooth_x = np.roll(h, 1, 1) + 2 * h + np.roll(h, -1, 1)
    gx = (np.roll(smooth_y, -1, 1) - np.roll(smooth_y, 1, 1)) / 8
    gy = (np.roll(smooth_x, -1, 0) - np.roll(smooth_x, 1, 0)) / 8
    n = np.stack([-strength * gx, strength * gy, np.ones_like(h)], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    return {"height": h.astype(np.float32), "normal": encode_normals(n), "roughness": (1 - h).astype(np.float32)}


# ----------------------------------------------------------------------------- the network


@dataclass(frozen=True)
class MapNetConfig:
    channels: tuple[int, ...] = (24, 48, 96, 128)  # per level; each level after the first halves H and W
    groups: int = 8  # GroupNorm groups


def _conv(c_in: int, c_out: int, groups: int, stride: int = 1) -> nn.Sequential:
    """3x3 circular conv, GroupNorm, SiLU: circular padding makes the output periodic like the input."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, padding_mode="circular"),
                         nn.GroupNorm(groups, c_out), nn.SiLU())


class MapNet(nn.Module):
    """A small U-Net: rgb (B, 3, H, W) in [-1, 1] -> (B, 5, H, W) raw outputs (height logit, normal xyz
    before normalising, roughness logit); :meth:`maps` turns them into the maps. H, W multiples of
    2^(levels-1)."""

    def __init__(self, cfg: MapNetConfig = MapNetConfig()):
        super().__init__()
        self.cfg = cfg
        c, g = cfg.channels, cfg.groups
        self.stem = nn.Sequential(_conv(3, c[0], g), _conv(c[0], c[0], g))
        self.down = nn.ModuleList(
            nn.Sequential(_conv(c[i - 1], c[i], g, stride=2), _conv(c[i], c[i], g)) for i in range(1, len(c)))
        self.up = nn.ModuleList(
            nn.Sequential(_conv(c[i] + c[i - 1], c[i - 1], g), _conv(c[i - 1], c[i - 1], g))
            for i in range(len(c) - 1, 0, -1))
        self.head = nn.Conv2d(c[0], 5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for block in self.down:
            skips.append(block(skips[-1]))
        y = skips.pop()
        for block in self.up:
            y = F.interpolate(y, scale_factor=2, mode="nearest")  # nearest keeps the period exactly
            y = block(torch.cat([y, skips.pop()], 1))
        return self.head(y)

    @staticmethod
    def maps(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """raw (B, 5, H, W) -> height (B, H, W) 0..1, unit normal (B, 3, H, W) with z > 0, roughness (B, H, W)."""
        n = torch.cat([raw[:, 1:3], F.softplus(raw[:, 3:4]) + 1e-3], 1)
        return torch.sigmoid(raw[:, 0]), F.normalize(n, dim=1), torch.sigmoid(raw[:, 4])

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.cfg.channels) - 1)


def save_map_net(net: MapNet, folder: Path, extra: dict | None = None) -> Path:
    """Write ``folder/model.safetensors`` (fp16) and ``folder/config.json``; returns the weights' path."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    cfg = {"model": "sfumato-mapnet", "channels": list(net.cfg.channels), "groups": net.cfg.groups,
           "normal_convention": "OpenGL (+Y up)", "relief_px_at_128": RELIEF_PX, **(extra or {})}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return folder / WEIGHTS


def load_map_net(bundle=None) -> MapNet:
    """The map network of ``bundle`` (a ``Bundle``, a bundle folder or name; default: the embedded
    ``materials`` bundle, whatever bundle made the colour), its weights checked against the manifest's
    sha256 before loading (safetensors only). Cached per folder."""
    from .bundle import Bundle, embedded_dir, open_bundle, resolve

    if bundle is None:
        bundle = open_bundle(embedded_dir() / "materials")
    elif not isinstance(bundle, Bundle):
        bundle = resolve(bundle)
    folder = bundle.component_dir(COMPONENT)  # raises BundleCorrupt when absent or not as hashed
    return _load(str(folder.resolve()))


@lru_cache(maxsize=4)
def _load(folder: str) -> MapNet:
    from safetensors.torch import load_file

    cfg_json = json.loads((Path(folder) / "config.json").read_text())
    net = MapNet(MapNetConfig(channels=tuple(cfg_json["channels"]), groups=int(cfg_json["groups"])))
    state = load_file(str(Path(folder) / WEIGHTS))
    net.load_state_dict({k: v.float() for k, v in state.items()})
    return net.eval()


def predict_maps(rgb: np.ndarray, net: MapNet | None = None) -> dict[str, np.ndarray]:
    """Maps of a colour texture ``rgb`` (H, W, 3) uint8 sRGB, any size: padded by wrapping to a multiple of
    ``net.multiple`` (a tileable texture's maps tile exactly when H and W are multiples already).

    Returns height (H, W) float32 0..1, normal (H, W, 3) uint8 (OpenGL, glTF encoding), roughness (H, W)
    float32 0..1."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be an (H, W, 3) uint8 image, got {rgb.dtype} {rgb.shape}")
    net = net if net is not None else load_map_net()
    h, w = rgb.shape[:2]
    m = net.multiple
    padded = np.pad(rgb, ((0, -h % m), (0, -w % m), (0, 0)), mode="wrap")
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.inference_mode():
        height, normal, rough = MapNet.maps(net(x))
    n = normal[0].permute(1, 2, 0).numpy()[:h, :w]
    return {"height": height[0].numpy()[:h, :w].astype(np.float32), "normal": encode_normals(n),
            "roughness": rough[0].numpy()[:h, :w].astype(np.float32)}
