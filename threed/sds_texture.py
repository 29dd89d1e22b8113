"""SDS texturing of a fixed mesh: the UV texture is optimised through the rasterizer from random views.

The route for "paint my massing model" with bundles that have no depth ControlNet: no view is ever
generated; instead the texture (kept as logits, so colours stay in [0, 1]) is rendered from a random
viewpoint each iteration, encoded through the VAE with gradients, and pushed by the SDS gradient of the
shared denoiser (``sds.py``). Sampling the texture at the rasterizer's per-pixel UVs is differentiable
in the texture, so the gradient lands on exactly the texels each view sees.

The run saves its state (texture logits, optimiser moments, iteration) when cancelled or stopped by a
non-finite loss, and resumes from it when started again with the same state file.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ..core.errors import Cancelled, SfumatoError
from .cameras import orbit, view_prompt
from .mesh import Mesh, ensure_uv
from .raster import rasterize, sample_texture
from .sds import SDSConfig, alphas_cumprod, encode_with_grad, guided_eps, sds_step

OnIter = Callable[[int, int, float], None]  # (iteration, total, loss); may raise Cancelled


def _save_state(path: Path, logits: torch.Tensor, optim: torch.optim.Optimizer, iteration: int) -> None:
    from safetensors.torch import save_file

    state = optim.state[logits] if logits in optim.state else {}
    tensors = {"logits": logits.detach().contiguous()}
    for k in ("exp_avg", "exp_avg_sq"):
        if k in state:
            tensors[k] = state[k].contiguous()
    tmp = path.with_name(path.name + ".part")
    save_file(tensors, str(tmp), metadata={"iteration": str(iteration),
                                           "step": str(int(state["step"])) if "step" in state else "0"})
    tmp.replace(path)


def _load_state(path: Path, logits: torch.Tensor, optim: torch.optim.Optimizer) -> int:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        saved = f.get_tensor("logits")
        if saved.shape != logits.shape:
            raise SfumatoError(f"the saved SDS state {path} is for a {list(saved.shape)} texture, not "
                               f"{list(logits.shape)}; delete it or keep the same texture_size")
        with torch.no_grad():
            logits.copy_(saved)
        if "exp_avg" in f.keys():
            optim.state[logits] = {"step": torch.tensor(float(meta.get("step", 0))),
                                   "exp_avg": f.get_tensor("exp_avg"), "exp_avg_sq": f.get_tensor("exp_avg_sq")}
    return int(meta.get("iteration", 0))


def sds_texture(models, mesh: Mesh, prompt: str, negative: str = "", *, iters: int, resolution: int = 128,
                texture_size: int, lr: float, seed: int = 0, cfg: SDSConfig | None = None,
                view_prompts: bool = True, state_path: Path | None = None,
                on_iter: OnIter | None = None) -> tuple[torch.Tensor, dict]:
    """Optimise a (3, T, T) texture for ``mesh`` (with UVs); returns it with run statistics."""
    cfg = (cfg or SDSConfig(guidance=20.0)).validate()
    mesh = ensure_uv(mesh, texture_size).normalised()
    models.unet.requires_grad_(False)
    models.vae.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    logits = (0.1 * torch.randn(3, texture_size, texture_size, generator=g)).requires_grad_(True)
    optim = torch.optim.Adam([logits], lr=lr)
    start = _load_state(state_path, logits, optim) if state_path is not None and state_path.is_file() else 0
    alphas = alphas_cumprod(models)
    eps_by_prompt: dict[str, object] = {}
    losses: list[float] = []
    last_good = logits.detach().clone()
    started = time.perf_counter()
    i = start
    try:
        for i in range(start, iters):
            az = float(torch.rand((), generator=g)) * 360.0
            el = float(torch.rand((), generator=g)) * 60.0
            cam = orbit(torch.zeros(3), 1.08 / math.sin(math.radians(20.0)), [az], [el], 40.0)
            frags = rasterize(cam, mesh.vertices, mesh.faces, resolution)
            uv = frags.interpolate(mesh.uv, mesh.faces)
            text = view_prompt(prompt, az, el) if view_prompts else prompt
            if text not in eps_by_prompt:
                eps_by_prompt[text] = guided_eps(models, text, negative, cfg.guidance)
            background = torch.rand(3, generator=g).view(1, 3, 1, 1)  # random: the texture cannot lean on it
            render = torch.where(frags.mask[:, None], sample_texture(torch.sigmoid(logits), uv), background)
            z = encode_with_grad(models, render.to(models.device))
            step = sds_step(eps_by_prompt[text], z.float(), alphas, cfg, progress=i / max(iters - 1, 1), generator=g)
            loss = float(step.loss.detach())
            if not math.isfinite(loss):
                with torch.no_grad():
                    logits.copy_(last_good)
                if state_path is not None:
                    _save_state(state_path, logits, optim, i)
                raise SfumatoError(f"the SDS loss became {loss} at iteration {i}; stopped and kept the last good "
                                   "texture (lower lr or guidance, or set grad_clip)")
            optim.zero_grad(set_to_none=True)
            step.loss.backward()
            optim.step()
            losses.append(loss)
            if i % 10 == 0:
                last_good = logits.detach().clone()
            if on_iter is not None:
                on_iter(i + 1, iters, loss)
    except Cancelled:
        if state_path is not None:
            _save_state(state_path, logits, optim, i + 1)
        raise
    if state_path is not None and state_path.is_file():
        state_path.unlink()  # finished: nothing to resume
    stats = {"iters": iters, "resumed_from": start, "seconds": round(time.perf_counter() - started, 2),
             "loss_first": round(sum(losses[:20]) / max(len(losses[:20]), 1), 4) if losses else None,
             "loss_last": round(sum(losses[-20:]) / max(len(losses[-20:]), 1), 4) if losses else None}
    return torch.sigmoid(logits.detach()), stats

