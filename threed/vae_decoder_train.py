"""Teach the embedded VAE's decoder the colours of a scene: fine-tune it (the encoder frozen, so every latent the
U-Net knows keeps its meaning) on procedural buildings mixed with the bundle's material tiles, on the CPU (#19).

    sfumato train decoder [--work WORK] [--out FOLDER] [--steps N] [--budget-minutes M] [--threads T]

Why: the VAE was trained on material tiles alone, whose colours are muted; its decoder turns a blue sky beige and a
green lawn olive-brown (measured: a held-out building render comes back at 19-23 dB), so no U-Net, however well it
learns buildings, can show one in its colours. The encoder already tells those colours apart (their latents differ),
so the decoder alone is trained.

The main path (:func:`train`):

1. **Load** the bundle's VAE in fp32; the encoder frozen, the decoder trained (with an EMA copy, which is exported).
2. **Draw** step k's batch from a generator seeded by (seed, k): ``batch`` pictures, half buildings rendered at
   ``size``² (seeds below ``HELD_OUT``), half material tiles (seeds the bundle was trained on), each encoded by the
   frozen encoder (the latent mean, as generation decodes what the U-Net makes).
3. **Loss**: L1 + MSE + an FFT-amplitude term that keeps fine texture sharp, as the VAE was trained.
4. **Checkpoints** every ``checkpoint_every`` steps in ``work/`` (decoder, EMA, AdamW's moments, step), with PSNR on
   held-out buildings and held-out material tiles beside the starting decoder's.
5. **Export** the VAE (encoder unchanged, EMA decoder) in fp16 as ``out/vae``; ``building_train.install`` puts it
   into a bundle.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..core.bundle import embedded_dir, open_bundle
from ..core.train.bundle_train import ema_update, load_state, save_state
from .building_render import sample
from .depth_controlnet_train import HELD_OUT

CHECKPOINT = "decoder.safetensors"
MATERIAL_HELD_OUT = 5_000_000  # material tile seeds from here are scored, never trained on


@dataclass(frozen=True)
class DecoderTrainConfig:
    seed: int = 0
    steps: int = 1200
    batch: int = 8  # half buildings, half material tiles
    size: int = 128
    lr: float = 1e-4
    warmup: int = 50
    fft_weight: float = 0.05
    ema_decay: float = 0.995
    checkpoint_every: int = 100
    time_budget: float | None = 2700.0  # seconds of training over all runs; stop at the first checkpoint past it
    validation: int = 8  # held-out pictures of each kind
    threads: int = 1
    log_every: int = 20
    bundle: str | None = None

    def fingerprint(self) -> str:
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("time_budget", "log_every", "threads")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def load(cfg: DecoderTrainConfig) -> tuple[Any, Any]:
    """The bundle's VAE (decoder trainable) and an EMA copy of its decoder."""
    from ..core.loading import load_component

    bundle = open_bundle(Path(cfg.bundle) if cfg.bundle else embedded_dir() / "materials")
    vae = load_component(bundle, "vae", torch.device("cpu"), torch.float32)
    vae.requires_grad_(False).eval()
    trained = [vae.decoder, *([vae.post_quant_conv] if vae.post_quant_conv is not None else [])]
    for m in trained:
        m.requires_grad_(True).train()
    return vae, copy.deepcopy(vae).requires_grad_(False).eval()


def pictures(cfg: DecoderTrainConfig, buildings: list[int], tiles: list[int]) -> torch.Tensor:
    """(B, 3, s, s) in [-1, 1]: buildings rendered, then material tiles."""
    from ..core.train import materials

    images = [sample(s, cfg.size).image for s in buildings] + [materials.sample(s, cfg.size)[0] for s in tiles]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def draws(cfg: DecoderTrainConfig, step: int) -> tuple[list[int], list[int]]:
    rng = np.random.default_rng([cfg.seed, step, 4])
    half = cfg.batch // 2
    return ([int(s) for s in rng.integers(0, HELD_OUT, half)],
            [int(s) for s in rng.integers(0, 12000, cfg.batch - half) + cfg.seed * 1_000_000])


def reconstruct(vae: Any, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean
    return vae.decode(z).sample


def loss_of(cfg: DecoderTrainConfig, rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    fft = (torch.fft.rfft2(rec).abs() - torch.fft.rfft2(x).abs()).abs().mean() / x.shape[-1]
    return F.l1_loss(rec, x) + F.mse_loss(rec, x) + cfg.fft_weight * fft


@torch.no_grad()
def psnr(vae: Any, x: torch.Tensor) -> float:
    """Mean PSNR (dB, 8-bit) of the reconstructions of ``x``."""
    rec = ((reconstruct(vae, x).clamp(-1, 1) + 1) * 127.5).round()
    mse = ((rec - (x + 1) * 127.5) ** 2).mean(dim=(1, 2, 3))
    return float((10 * torch.log10(255**2 / mse.clamp(min=1e-6))).mean())


def validate(cfg: DecoderTrainConfig, vae: Any) -> dict[str, float]:
    n = cfg.validation
    held = pictures(cfg, [HELD_OUT + i for i in range(n)], [MATERIAL_HELD_OUT + i for i in range(n)])
    return {"psnr_buildings": round(psnr(vae, held[:n]), 2), "psnr_materials": round(psnr(vae, held[n:]), 2)}


def lr_at(cfg: DecoderTrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))))


def train(cfg: DecoderTrainConfig, work: Path, *, until: int | None = None,
          log: Callable[[str], None] = print) -> tuple[Any, dict[str, Any]]:
    """Train (resuming from ``work``) up to ``cfg.steps`` or step ``until``; returns the VAE with the EMA decoder
    and the run's record."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:
        log(line)
        with open(work / "progress.log", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    torch.set_num_threads(cfg.threads)
    vae, ema = load(cfg)
    params = [p for p in vae.parameters() if p.requires_grad]
    ema_params = [p for p, q in zip(ema.parameters(), vae.parameters()) if q.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    ckpt = work / CHECKPOINT
    if ckpt.is_file():
        meta = load_state(ckpt, {"vae": vae, "ema": ema}, optim)
        if meta.get("fingerprint") != cfg.fingerprint():
            raise ValueError(f"work={str(work)!r} holds a checkpoint of another run (other settings); choose another "
                             "work folder, or delete that one to start again")
        say(f"resumed at step {meta['step']}")
    else:
        meta = {"fingerprint": cfg.fingerprint(), "step": 0, "seconds": 0.0, "history": [],
                "config": dataclasses.asdict(cfg), "start": validate(cfg, vae) if cfg.validation else {}}
        say(f"decoder: {sum(p.numel() for p in params) / 1e6:.2f} M parameters, batch {cfg.batch} at {cfg.size}², "
            f"{cfg.steps} steps; the starting decoder scores {meta['start']}")
    stop = cfg.steps if until is None else min(until, cfg.steps)
    step, losses, t_log = meta["step"], [], time.time()
    while step < stop:
        t0 = time.time()
        for group in optim.param_groups:
            group["lr"] = lr_at(cfg, step)
        x = pictures(cfg, *draws(cfg, step))
        loss = loss_of(cfg, reconstruct(vae, x), x)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        step += 1
        ema_update(ema_params, params, step, cfg.ema_decay)
        meta["seconds"] += time.time() - t0
        losses.append(float(loss.detach()))
        if step % cfg.log_every == 0:
            rate = (time.time() - t_log) / len(losses)
            say(f"step {step}/{cfg.steps} loss {np.mean(losses):.4f} {rate:.2f} s/step "
                f"eta {rate * (cfg.steps - step) / 60:.0f} min")
            t_log, losses = time.time(), []
        over = cfg.time_budget is not None and meta["seconds"] > cfg.time_budget
        if step % cfg.checkpoint_every == 0 or step == stop or over:
            if cfg.validation:
                score = validate(cfg, ema)
                meta["history"].append({"step": step, "minutes": round(meta["seconds"] / 60, 1), **score})
                say(f"validation at {step} (EMA): {score}; at the start: {meta['start']}")
            meta["step"] = step
            save_state(ckpt, {"vae": vae, "ema": ema}, optim, meta)
            if over:
                say(f"time budget of {cfg.time_budget:.0f} s reached at step {step}")
                break
    meta["step"] = step
    return ema, meta


def export(vae: Any, out: Path, record: dict[str, Any] | None = None) -> Path:
    """The VAE (its encoder as the bundle had it, the trained decoder) in fp16 as ``out/vae``, with
    ``training.json``, written beside and renamed."""
    import os
    import shutil

    from ..core.bundle import save_component

    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    save_component(copy.deepcopy(vae).to(torch.float16), tmp / "vae")
    if record is not None:
        (tmp / "training.json").write_text(json.dumps({k: record[k] for k in ("step", "seconds", "history", "start",
                                                                               "config") if k in record}, indent=1))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True)
    p.add_argument("--out")
    p.add_argument("--steps", type=int, default=DecoderTrainConfig.steps)
    p.add_argument("--time-budget", type=float, default=DecoderTrainConfig.time_budget)
    p.add_argument("--threads", type=int, default=DecoderTrainConfig.threads)
    a = p.parse_args(argv)
    cfg = DecoderTrainConfig(steps=a.steps, time_budget=a.time_budget, threads=a.threads)
    vae, record = train(cfg, Path(a.work))
    if a.out:
        print(f"exported {export(vae, Path(a.out), record)}")


if __name__ == "__main__":
    main()
