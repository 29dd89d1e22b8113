"""Prompt encoding with the bundle's CLIP tokenizer(s) and text encoder(s).

SD 1.x/2.x: the last hidden state of one CLIP text model, shape (B, 77, D).
SDXL: the penultimate hidden states of both encoders concatenated, (B, 77, D1 + D2), plus the
pooled, projected output of the second encoder, (B, P), which the U-Net takes with the size
"time ids". An empty negative prompt is all zeros for SDXL (its ``force_zeros_for_empty_prompt``).
Prompts longer than the tokenizer's 77 tokens are truncated with a warning naming what was cut.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .loading import Models

log = logging.getLogger("sfumato")


@dataclass
class TextEmbeddings:
    tokens: torch.Tensor  # (B, 77, D) per-token embeddings for cross-attention
    pooled: torch.Tensor | None  # (B, P) SDXL only
    truncated: str = ""  # the words cut off a long prompt, if any


def _tokenize(tokenizer, prompt: str) -> tuple[torch.Tensor, str]:
    max_len = tokenizer.model_max_length
    ids = tokenizer(prompt, padding="max_length", max_length=max_len, truncation=True,
                    return_tensors="pt").input_ids
    full = tokenizer(prompt, padding="longest", return_tensors="pt").input_ids
    cut = ""
    if full.shape[-1] > max_len:
        cut = tokenizer.batch_decode(full[:, max_len - 1 : -1])[0]
    return ids, cut


@torch.no_grad()
def encode(models: Models, prompt: str) -> TextEmbeddings:
    """Embed one prompt. Empty-prompt zeroing for SDXL is done by ``encode_pair``."""
    device = models.device
    if not models.is_sdxl:
        ids, cut = _tokenize(models.tokenizers[0], prompt)
        hidden = models.text_encoders[0](ids.to(device))[0]
        return TextEmbeddings(hidden.to(models.dtype), None, cut)
    per_encoder, pooled, cut = [], None, ""
    for tokenizer, encoder in zip(models.tokenizers, models.text_encoders):
        ids, cut_i = _tokenize(tokenizer, prompt)
        cut = cut or cut_i
        out = encoder(ids.to(device), output_hidden_states=True)
        if out[0].ndim == 2:  # the projected pooled output of CLIPTextModelWithProjection
            pooled = out[0]
        per_encoder.append(out.hidden_states[-2])
    return TextEmbeddings(torch.cat(per_encoder, dim=-1).to(models.dtype), pooled.to(models.dtype), cut)


def encode_pair(models: Models, prompt: str, negative: str) -> tuple[TextEmbeddings, TextEmbeddings]:
    """(positive, negative) embeddings, warning once if the positive prompt was truncated."""
    positive = encode(models, prompt)
    if positive.truncated:
        log.warning("prompt is longer than %d tokens; this part was ignored: %r",
                    models.tokenizers[0].model_max_length, positive.truncated)
    if models.is_sdxl and not negative:
        assert positive.pooled is not None
        return positive, TextEmbeddings(torch.zeros_like(positive.tokens), torch.zeros_like(positive.pooled))
    return positive, encode(models, negative)
