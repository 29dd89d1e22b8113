"""Seamless tiling: circular padding in every convolution, along x, y or both.

A convolution with zero padding sees a border; with circular padding the left edge's neighbours are
the right edge's pixels, so what the network produces continues across the edge and the image tiles.
Applied to the U-Net, the VAE decoder and the ControlNet for the duration of a job, then undone
(models are cached between jobs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

Axes = Literal["none", "x", "y", "xy"]


def _padded_forward(conv: nn.Conv2d, axes: str):
    py, px = conv.padding if isinstance(conv.padding, tuple) else (conv.padding, conv.padding)

    def forward(x: torch.Tensor) -> torch.Tensor:
        # F.pad takes (left, right, top, bottom)
        x = F.pad(x, (px, px, 0, 0), mode="circular" if "x" in axes else "constant")
        x = F.pad(x, (0, 0, py, py), mode="circular" if "y" in axes else "constant")
        return F.conv2d(x, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)

    return forward


@contextlib.contextmanager
def seamless(modules: list[nn.Module | None], axes: Axes) -> Iterator[None]:
    """Within the block, every padded Conv2d of ``modules`` wraps around along ``axes``."""
    patched: list[nn.Conv2d] = []
    if axes != "none":
        for module in modules:
            if module is None:
                continue
            for conv in module.modules():
                if isinstance(conv, nn.Conv2d) and conv.padding not in (0, (0, 0), "valid"):
                    conv.forward = _padded_forward(conv, axes)
                    conv._sfumato_axes = axes  # read by the fast path: graphs are recorded per padding mode
                    patched.append(conv)
    try:
        yield
    finally:
        for conv in patched:
            del conv.forward  # back to the class's forward
            del conv._sfumato_axes
