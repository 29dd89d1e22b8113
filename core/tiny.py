"""Tiny random-weight bundles in the real diffusers layouts (SD 1.5-like and SDXL-like).

They are built from configs with ``save_pretrained`` in well under a megabyte, load through exactly
the code path real checkpoints take, and let the tests and a fresh install exercise every part of
the engine on a CPU. Their images are noise-like: they test plumbing, not quality.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch

from .bundle import save_component, write_manifest
from .tokenizer_build import train_merges, vocabulary, write_tokenizer

CORPUS = [
    "red brick wall running bond", "a wall of grey concrete", "white marble floor", "oak wood planks",
    "black slate roof tiles", "green grass lawn", "blue ceramic tiles", "beige stucco facade",
    "weathered terracotta brickwork", "polished concrete floor", "corrugated metal sheet",
    "a modern house at dusk", "glass and timber pavilion", "herringbone parquet", "gravel path",
]

SCHEDULER_SD15 = {
    "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "set_alpha_to_one": False,
    "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False, "prediction_type": "epsilon",
    "timestep_spacing": "leading",
}
SCHEDULER_SDXL = {
    "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "steps_offset": 1,
    "interpolation_type": "linear", "prediction_type": "epsilon", "timestep_spacing": "leading",
    "use_karras_sigmas": False,
}


def _text_encoder(vocab_size: int, hidden: int, projection: bool, pad_id: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                            projection_dim=hidden, hidden_act="quick_gelu", pad_token_id=pad_id,
                            bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def _vae(scaling: float):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 16, 32, 32),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         layers_per_block=1, norm_num_groups=8, sample_size=64, scaling_factor=scaling)


def build_tiny_bundle(folder: Path, family: Literal["sd15", "sdxl"] = "sd15", *, controlnet: bool = True,
                      seed: int = 0, name: str | None = None) -> Path:
    """Write a tiny random bundle of ``family``'s layout into ``folder`` and return the folder."""
    from diffusers import ControlNetModel, UNet2DConditionModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    merges = train_merges(CORPUS, num_merges=200)
    vocab_size = len(vocabulary(merges))
    end_id = vocab_size - 1
    write_tokenizer(folder / "tokenizer", merges)
    unet_kwargs = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                       block_out_channels=(32, 64), norm_num_groups=8, attention_head_dim=(2, 4),
                       down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    if family == "sd15":
        save_component(_text_encoder(vocab_size, 32, False, end_id), folder / "text_encoder")
        unet = UNet2DConditionModel(cross_attention_dim=32, **unet_kwargs)
        vae = _vae(0.18215)
        scheduler = SCHEDULER_SD15
    elif family == "sdxl":
        save_component(_text_encoder(vocab_size, 32, False, end_id), folder / "text_encoder")
        pad_id = vocabulary(merges)["!"]
        _text_encoder(vocab_size, 32, True, pad_id).save_pretrained(folder / "text_encoder_2")
        write_tokenizer(folder / "tokenizer_2", merges, pad_token="!")
        unet = UNet2DConditionModel(cross_attention_dim=64, addition_embed_type="text_time",
                                    addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8,
                                    transformer_layers_per_block=(1, 1), **unet_kwargs)
        vae = _vae(0.13025)
        scheduler = SCHEDULER_SDXL
    else:
        raise ValueError(f"family={family!r}; allowed: sd15, sdxl")
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    (folder / "scheduler").mkdir(exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
    if controlnet:
        net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
        with torch.no_grad():  # random zero-convs, so that depth visibly steers this untrained model
            for module in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
                module.weight.normal_(0, 0.3)
            for conv in net.controlnet_cond_embedding.modules():
                if isinstance(conv, torch.nn.Conv2d):  # He init without bias: the input pattern survives
                    conv.weight.normal_(0, (2.0 / conv.weight[0].numel()) ** 0.5)
                    conv.bias.zero_()
            net.controlnet_cond_embedding.conv_out.weight.mul_(8.0)
        net.save_pretrained(folder / "controlnet_depth")
    write_manifest(folder, name=name or folder.name, family="sdxl" if family == "sdxl" else "sd15",
                   license="CC0-1.0 (random weights, for tests)",
                   description=f"tiny random {family}-layout bundle for tests and smoke runs")
    return folder
