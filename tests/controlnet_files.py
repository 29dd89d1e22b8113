"""Test helper: tiny diffusers ControlNets made from a tiny bundle's U-Net, and the same written in the original
single-file layout (``control_model.*``) by renaming diffusers' keys back, so that ``sfumato bundle add`` and
diffusers' own single-file loader both have a file no one wrote by hand to read."""

from __future__ import annotations

import re

import torch

from ldm_layout import unet_key


def controlnet_to_original(state: dict, config: dict) -> dict:
    """A diffusers ControlNet state dict in the original single-file layout (``control_model.*``)."""
    out = {}
    for k, v in state.items():
        if m := re.fullmatch(r"controlnet_cond_embedding\.blocks\.(\d+)\.(weight|bias)", k):
            name = f"input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"
        elif m := re.fullmatch(r"controlnet_cond_embedding\.conv_(in|out)\.(weight|bias)", k):
            name = f"input_hint_block.{0 if m[1] == 'in' else 14}.{m[2]}"
        elif m := re.fullmatch(r"controlnet_down_blocks\.(\d+)\.(weight|bias)", k):
            name = f"zero_convs.{m[1]}.0.{m[2]}"
        elif m := re.fullmatch(r"controlnet_mid_block\.(weight|bias)", k):
            name = f"middle_block_out.0.{m[1]}"
        else:
            name = unet_key(k, config)
        out[f"control_model.{name}"] = v.contiguous()
    return out


def tiny_controlnet(unet_dir, seed: int):
    from diffusers import ControlNetModel, UNet2DConditionModel

    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(UNet2DConditionModel.from_pretrained(unet_dir),
                                    conditioning_embedding_out_channels=(8, 8, 16, 16))
    with torch.no_grad():  # zero convs start at zero: give them weights, so the outputs tell models apart
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net.eval()
