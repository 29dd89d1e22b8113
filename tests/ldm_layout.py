"""Diffusers / transformers state dicts -> the original single-file layout (CompVis, Stability, OpenCLIP).

Test helper only: it writes the checkpoints that ``sfumato.core.convert`` must read back, so that an
import can be checked tensor by tensor against the model it came from. Written from the layouts
themselves (see the docstring of ``core/convert.py``), independently of diffusers' converters.
"""

from __future__ import annotations

import re

import torch

# UNet resnet sub-modules: diffusers name -> LDM name
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_UNET_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
               "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
               "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_RESNET[head]}.{tail}"


def unet_key(key: str, config: dict) -> str:
    """One diffusers UNet2DConditionModel key -> its name under ``model.diffusion_model.``."""
    per = config["layers_per_block"] + 1  # LDM counts the down/up-sampler as one more layer
    for new, old in _UNET_FIXED.items():
        if key.startswith(new + "."):
            return old + key[len(new):]
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        i = 1 + int(m[1]) * per + int(m[3])
        return f"input_blocks.{i}.0.{_resnet(m[4])}" if m[2] == "resnets" else f"input_blocks.{i}.1.{m[4]}"
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{1 + int(m[1]) * per + per - 1}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        i = int(m[1]) * per + int(m[3])
        return f"output_blocks.{i}.0.{_resnet(m[4])}" if m[2] == "resnets" else f"output_blocks.{i}.1.{m[4]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        slot = 2 if "CrossAttn" in config["up_block_types"][int(m[1])] else 1  # after the attention, if any
        return f"output_blocks.{int(m[1]) * per + per - 1}.{slot}.conv.{m[2]}"
    raise KeyError(f"no LDM name for UNet key {key}")


def vae_key(key: str, config: dict) -> tuple[str, bool]:
    """One diffusers AutoencoderKL key -> (LDM name under ``first_stage_model.``, is a 1x1-conv weight)."""
    n = len(config["up_block_types"])
    key = key.replace("conv_norm_out", "norm_out")
    if m := re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)"
                         r"\.(weight|bias)", key):
        return f"{m[1]}.mid.attn_1.{_VAE_ATTN[m[2]]}.{m[3]}", m[2] != "group_norm" and m[3] == "weight"
    key = re.sub(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.",
                 lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}.", key)
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", key)
    key = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", key)
    key = re.sub(r"decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{n - 1 - int(m[1])}.block.", key)
    key = re.sub(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                 lambda m: f"decoder.up.{n - 1 - int(m[1])}.upsample.", key)
    return key.replace("conv_shortcut", "nin_shortcut"), False


def unet_to_ldm(state: dict, config: dict, prefix: str = "model.diffusion_model.") -> dict:
    return {prefix + unet_key(k, config): v for k, v in state.items()}


def vae_to_ldm(state: dict, config: dict, prefix: str = "first_stage_model.") -> dict:
    out = {}
    for k, v in state.items():
        name, conv = vae_key(k, config)
        out[prefix + name] = v[:, :, None, None] if conv else v
    return out


def clip_to_ldm(state: dict, prefix: str) -> dict:
    """OpenAI CLIP as SD 1.x / SDXL store it: the transformers names, ``text_model.`` level included."""
    out = {f"{prefix}text_model.{k.removeprefix('text_model.')}": v for k, v in state.items()}
    positions = out[f"{prefix}text_model.embeddings.position_embedding.weight"].shape[0]
    out[f"{prefix}text_model.embeddings.position_ids"] = torch.arange(positions)[None]  # old checkpoints have it
    return out


def openclip_to_ldm(state: dict, prefix: str) -> dict:
    """A CLIP text model in OpenCLIP's names: q/k/v stacked in ``in_proj``, projection as a matrix."""
    out, qkv = {}, {}
    for k, v in state.items():
        k = k.removeprefix("text_model.")
        if k == "text_projection.weight":
            out["text_projection"] = v.T.contiguous()  # OpenCLIP computes x @ P
        elif k == "embeddings.token_embedding.weight":
            out["token_embedding.weight"] = v
        elif k == "embeddings.position_embedding.weight":
            out["positional_embedding"] = v
        elif k.startswith("final_layer_norm."):
            out["ln_final." + k.split(".")[-1]] = v
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)", k):
            qkv.setdefault((m[1], m[3]), {})[m[2]] = v
        elif m := re.fullmatch(r"encoder\.layers\.(\d+)\.(.+)", k):
            rest = (m[2].replace("layer_norm1", "ln_1").replace("layer_norm2", "ln_2").replace("mlp.fc1", "mlp.c_fc")
                    .replace("mlp.fc2", "mlp.c_proj").replace("self_attn.out_proj", "attn.out_proj"))
            out[f"transformer.resblocks.{m[1]}.{rest}"] = v
        else:
            raise KeyError(f"no OpenCLIP name for {k}")
    for (layer, kind), parts in qkv.items():
        out[f"transformer.resblocks.{layer}.attn.in_proj_{kind}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    out["logit_scale"] = torch.tensor(4.6052)  # present in real checkpoints, unused
    return {prefix + k: v for k, v in out.items()}
