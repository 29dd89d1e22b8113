"""Train a depth ControlNet for the embedded bundle's U-Net on procedural buildings, on the CPU, resumably (#19).

    python -m sfumato.threed.depth_controlnet_train --work WORK [--out FOLDER] [--steps N] [--time-budget SECONDS]

Why: the embedded bundle draws materials only from a prompt; with a depth ControlNet it can put them on a massing
the user modelled (the ``--depth`` path of ``core/denoiser.py``). No data set is shipped: every training picture is
made on the fly by :mod:`.building_render` from a seed, so a run is a function of its config alone.

The main path (:func:`train`), a short story:

1. **Load** the bundle's U-Net, VAE, tokenizer and text encoder (all frozen, fp32 on the CPU) and derive the
   ControlNet from the U-Net (``ControlNetModel.from_unet``: its down blocks and middle block copied, every residual
   leaving through a zero-initialised 1×1 convolution, so step 0 is the bundle itself). The condition encoder has
   one stride-2 stage per VAE down-sampling (the embedded VAE shrinks by 4, so three channel widths).
2. **Draw** a batch for step k from a generator seeded by (seed, k): building seeds below ``HELD_OUT``, each rendered
   at ``size``²; the colour picture becomes z_0 = mean(E(x)) · scaling_factor, the depth (near = bright, as the engine
   feeds it) is the condition, the caption goes through the text encoder ('' for ``cond_dropout`` of them, so
   guidance keeps working). t and eps come from a torch generator seeded by (seed, k) too.
3. **Loss**: x_t = sqrt(alpha_bar_t) z_0 + sqrt(1 - alpha_bar_t) eps; the frozen U-Net, given the ControlNet's
   residuals, predicts eps; MSE with min-SNR-γ weights (Hang et al. 2023). AdamW with warm-up and cosine decay.
4. **Checkpoints** every ``checkpoint_every`` steps in ``work/`` (weights, AdamW's moments, step, log), written to a
   ``.part`` file and renamed, so a crash leaves the previous one whole. Because each step's draws depend only on
   (seed, step), a rerun resumes bit for bit. ``time_budget`` (seconds of training, over all runs) stops at the
   next checkpoint past it. Every line of progress is also appended to ``work/progress.log``.
5. **Export** (:func:`export`): the ControlNet in fp16 as a diffusers folder ``controlnet_depth/`` under a path
   given (not into a bundle: ``sfumato bundle add-controlnet`` does that once it is judged good).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..core.bundle import embedded_dir, open_bundle, save_component
from .building_render import sample

HELD_OUT = 10_000_000  # building seeds at or above this are never trained on (validation uses them)
CHECKPOINT = "depth_controlnet.safetensors"
COMPONENT = "controlnet_depth"
MAX_BYTES = 10_000_000  # the exported fp16 ControlNet's weights must fit in this (issue #19)


@dataclass(frozen=True)
class DepthTrainConfig:
    seed: int = 0
    steps: int = 2400  # optimiser steps of the run (the learning-rate schedule spans them): ~1.5 h at ~2.1 s a step
    batch: int = 8
    size: int = 128  # rendered picture side, pixels (a multiple of 16; latents are size / 4 on the embedded VAE)
    lr: float = 2e-4
    warmup: int = 100  # steps of linear learning-rate warm-up
    weight_decay: float = 1e-2
    cond_dropout: float = 0.1  # share of captions replaced by '' (guidance needs the unconditional branch)
    snr_gamma: float | None = 5.0  # min-SNR-γ loss weights; None: plain MSE
    conditioning_channels: tuple[int, ...] = (16, 32, 64)  # condition encoder widths: one stride-2 stage between each
    checkpoint_every: int = 100
    time_budget: float | None = 7000.0  # seconds of training over all runs; stop at the first checkpoint past it
    validation: int = 8  # held-out samples scored at each checkpoint
    threads: int = 1  # torch CPU threads: 1 leaves a core for other work (over-subscribed threads crawl); the bits of
    # a run depend on it, so resume with the same number
    log_every: int = 10
    bundle: str | None = None  # a bundle folder; None: the embedded one

    def fingerprint(self) -> str:
        """What makes two runs the same run (the budget and the logging do not)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("time_budget", "log_every", "threads")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class _Nets:
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    controlnet: Any


# ---- 1. load -------------------------------------------------------------------------------------------------------
def load(cfg: DepthTrainConfig) -> _Nets:
    from diffusers import ControlNetModel, DDPMScheduler

    from ..core.loading import load_models

    bundle = open_bundle(Path(cfg.bundle) if cfg.bundle else embedded_dir() / "materials")
    models = load_models(bundle, torch.device("cpu"), torch.float32)
    for m in (models.unet, models.vae, models.text_encoders[0]):
        m.requires_grad_(False).eval()
    factor = models.vae_scale_factor
    if 2 ** (len(cfg.conditioning_channels) - 1) != factor:
        raise ValueError(f"conditioning_channels={cfg.conditioning_channels} is not allowed: the VAE shrinks by "
                         f"{factor}, so give {int(math.log2(factor)) + 1} widths")
    if cfg.size % (4 * factor):
        raise ValueError(f"size={cfg.size} is not allowed: a multiple of {4 * factor}")
    with torch.random.fork_rng(devices=[]):  # from_unet draws the condition encoder's weights: seed it, locally
        torch.manual_seed(cfg.seed)
        net = ControlNetModel.from_unet(models.unet, conditioning_embedding_out_channels=cfg.conditioning_channels)
    scheduler = DDPMScheduler.from_pretrained(str(bundle.component_dir("scheduler")), local_files_only=True)
    return _Nets(models.unet, models.vae, models.text_encoders[0], models.tokenizers[0], scheduler, net.train())


# ---- 2. a batch ----------------------------------------------------------------------------------------------------
@torch.no_grad()
def batch(nets: _Nets, cfg: DepthTrainConfig, seeds: list[int], keep_caption: list[bool]):
    """z_0 (B, C, s/f, s/f), depth condition (B, 3, s, s) in [0, 1], text states (B, 77, D), captions."""
    samples = [sample(s, cfg.size) for s in seeds]
    x = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 127.5 - 1
    z0 = nets.vae.encode(x).latent_dist.mean * nets.vae.config.scaling_factor
    depth = torch.from_numpy(np.stack([s.depth for s in samples]))[:, None].repeat(1, 3, 1, 1)
    captions = [s.caption if keep else "" for s, keep in zip(samples, keep_caption)]
    ids = nets.tokenizer(captions, padding="max_length", max_length=nets.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    return z0, depth, nets.text_encoder(ids)[0], captions


def _draws(cfg: DepthTrainConfig, step: int) -> tuple[list[int], list[bool], torch.Generator]:
    """Everything random in step ``step``, from (seed, step) alone: building seeds, kept captions, a generator."""
    rng = np.random.default_rng([cfg.seed, step])
    seeds = [int(s) for s in rng.integers(0, HELD_OUT, cfg.batch)]
    keep = [bool(k) for k in rng.random(cfg.batch) >= cfg.cond_dropout]
    return seeds, keep, torch.Generator().manual_seed(int(rng.integers(2**62)))


# ---- 3. the loss ---------------------------------------------------------------------------------------------------
def loss_of(nets: _Nets, cfg: DepthTrainConfig, z0: torch.Tensor, depth: torch.Tensor, text: torch.Tensor,
            t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The frozen U-Net's eps prediction error with the ControlNet's residuals added (min-SNR-γ weighted)."""
    x_t = nets.scheduler.add_noise(z0, eps, t)
    down, mid = nets.controlnet(x_t, t, encoder_hidden_states=text, controlnet_cond=depth, return_dict=False)
    pred = nets.unet(x_t, t, encoder_hidden_states=text, down_block_additional_residuals=down,
                     mid_block_additional_residual=mid).sample
    per_sample = F.mse_loss(pred, eps, reduction="none").mean(dim=(1, 2, 3))
    if cfg.snr_gamma is None:
        return per_sample.mean()
    alpha_bar = nets.scheduler.alphas_cumprod[t]
    snr = alpha_bar / (1 - alpha_bar)
    return (per_sample * torch.clamp(snr, max=cfg.snr_gamma) / snr).mean()


@torch.no_grad()
def validate(nets: _Nets, cfg: DepthTrainConfig) -> dict[str, float]:
    """Loss on held-out buildings at fixed timesteps and noise, with the ControlNet and without it (the U-Net alone):
    the gap is what the depth adds."""
    n = cfg.validation
    seeds = [HELD_OUT + i for i in range(n)]
    z0, depth, text, _ = batch(nets, dataclasses.replace(cfg, batch=n), seeds, [True] * n)
    gen = torch.Generator().manual_seed(HELD_OUT)
    t = torch.linspace(50, 950, n).long()
    eps = torch.randn(z0.shape, generator=gen)
    with_control = loss_of(nets, dataclasses.replace(cfg, snr_gamma=None), z0, depth, text, t, eps)
    x_t = nets.scheduler.add_noise(z0, eps, t)
    alone = F.mse_loss(nets.unet(x_t, t, encoder_hidden_states=text).sample, eps)
    return {"val_loss": float(with_control), "val_loss_unet_alone": float(alone)}


# ---- 4. checkpoints ------------------------------------------------------------------------------------------------
def save_checkpoint(path: Path, net: torch.nn.Module, optim: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    """Weights, AdamW's moments and ``meta`` in one safetensors file, replaced atomically."""
    from safetensors.torch import save_file

    tensors = {f"net.{k}": v.detach().contiguous() for k, v in net.state_dict().items()}
    for i, state in optim.state_dict()["state"].items():
        for k, v in state.items():
            tensors[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})
    os.replace(tmp, path)


def load_checkpoint(path: Path, net: torch.nn.Module, optim: torch.optim.Optimizer, fingerprint: str) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["meta"])
        if meta.get("fingerprint") != fingerprint:
            raise ValueError(f"work={str(path.parent)!r} holds a checkpoint of another run (other settings); "
                             "choose another work folder, or delete that one to start again")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    state = optim.state_dict()
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, i, k = key.split(".", 2)
            state["state"].setdefault(int(i), {})[k] = v
    optim.load_state_dict(state)
    return meta


def lr_at(cfg: DepthTrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))))


# ---- the main path -------------------------------------------------------------------------------------------------
def train(cfg: DepthTrainConfig, work: Path, *, until: int | None = None,
          log: Callable[[str], None] = print) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train (resuming from ``work``) up to ``cfg.steps``, or to step ``until`` (a checkpoint is written there);
    returns the ControlNet and the run's record (step, seconds, history of validation scores)."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)

    def say(line: str) -> None:
        log(line)
        with open(work / "progress.log", "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    torch.set_num_threads(cfg.threads)
    nets = load(cfg)
    params = list(nets.controlnet.parameters())
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt = work / CHECKPOINT
    meta = {"fingerprint": cfg.fingerprint(), "step": 0, "seconds": 0.0, "history": [],
            "config": dataclasses.asdict(cfg)}
    if ckpt.is_file():
        meta = load_checkpoint(ckpt, nets.controlnet, optim, cfg.fingerprint())
        say(f"resumed at step {meta['step']} ({meta['seconds'] / 60:.1f} min trained)")
    else:
        n = sum(p.numel() for p in params)
        say(f"depth ControlNet: {n / 1e6:.2f} M parameters ({2 * n / 1e6:.1f} MB in fp16), batch {cfg.batch} "
            f"at {cfg.size}², {cfg.steps} steps")
    stop = cfg.steps if until is None else min(until, cfg.steps)
    step, t_log, losses = meta["step"], time.time(), []
    while step < stop:
        t0 = time.time()
        for group in optim.param_groups:
            group["lr"] = lr_at(cfg, step)
        seeds, keep, gen = _draws(cfg, step)
        z0, depth, text, _ = batch(nets, cfg, seeds, keep)
        t = torch.randint(0, nets.scheduler.config.num_train_timesteps, (cfg.batch,), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        loss = loss_of(nets, cfg, z0, depth, text, t, eps)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optim.step()
        step += 1
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
                nets.controlnet.eval()
                score = validate(nets, cfg)
                nets.controlnet.train()
                meta["history"].append({"step": step, "minutes": round(meta["seconds"] / 60, 1), **score})
                say(f"validation at {step}: {score}")
            meta["step"] = step
            save_checkpoint(ckpt, nets.controlnet, optim, meta)
            if over:
                say(f"time budget of {cfg.time_budget:.0f} s reached at step {step}")
                break
    meta["step"] = step
    return nets.controlnet.eval(), meta


# ---- 5. export -----------------------------------------------------------------------------------------------------
def export(net: torch.nn.Module, out: Path, record: dict[str, Any] | None = None) -> Path:
    """The ControlNet in fp16 as a diffusers folder ``out/controlnet_depth`` (written beside, then renamed); refused
    when its weights pass ``MAX_BYTES``."""
    import shutil

    out = Path(out)
    final, tmp = out / COMPONENT, out / (COMPONENT + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    half = type(net).from_config(net.config).to(torch.float16)
    half.load_state_dict({k: v.to(torch.float16) for k, v in net.state_dict().items()})
    save_component(half, tmp)
    size = sum(f.stat().st_size for f in tmp.glob("*.safetensors"))
    if size > MAX_BYTES:
        shutil.rmtree(tmp)
        raise ValueError(f"the ControlNet's weights are {size / 1e6:.1f} MB in fp16: at most {MAX_BYTES / 1e6:.0f} MB "
                         "is allowed; give narrower conditioning_channels or a smaller U-Net")
    if record is not None:  # how it was made, beside the weights (the manifest reads it when it is added)
        (tmp / "training.json").write_text(json.dumps({k: record[k] for k in ("step", "seconds", "history", "config")
                                                       if k in record}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def install(exported: Path, bundle_dir: Path) -> Path:
    """Put an exported ``controlnet_depth/`` into a bundle folder as a maintainer does for the embedded bundle
    (``sfumato bundle add`` refuses that one): the folder moved in whole, the manifest rewritten with every weight's
    hash and a ``depth_training`` record from its ``training.json``."""
    import platform
    import shutil

    from ..core.bundle import MANIFEST, write_manifest

    exported, bundle_dir = Path(exported), Path(bundle_dir)
    record = json.loads((exported / "training.json").read_text()) if (exported / "training.json").is_file() else {}
    tmp, target = bundle_dir / f".{COMPONENT}.tmp", bundle_dir / COMPONENT
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(exported, tmp, ignore=shutil.ignore_patterns("training.json"))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    manifest = json.loads((bundle_dir / MANIFEST).read_text())
    base = {"format", "name", "family", "license", "description", "components", "files"}
    extra = {k: v for k, v in manifest.items() if k not in base}
    history = record.get("history") or [{}]
    extra["depth_training"] = {
        "command": "sfumato train depth", "steps": record.get("step"), "seconds": round(record.get("seconds", 0)),
        "hardware": f"{platform.processor() or platform.machine()}, {record.get('config', {}).get('threads')} CPU "
                    f"thread(s), torch {torch.__version__}", "date": time.strftime("%Y-%m-%d"),
        "validation": history[-1], "config": record.get("config", {})}
    write_manifest(bundle_dir, name=manifest["name"], family=manifest["family"], license=manifest["license"],
                   description=manifest.get("description", ""), extra=extra)
    return target


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="checkpoints and progress.log (a rerun resumes)")
    p.add_argument("--out", help="export controlnet_depth/ under this folder when done")
    p.add_argument("--steps", type=int, default=DepthTrainConfig.steps)
    p.add_argument("--batch", type=int, default=DepthTrainConfig.batch)
    p.add_argument("--size", type=int, default=DepthTrainConfig.size)
    p.add_argument("--time-budget", type=float, default=DepthTrainConfig.time_budget,
                   help="seconds of training, over all runs (a rerun may give more)")
    p.add_argument("--threads", type=int, default=DepthTrainConfig.threads)
    a = p.parse_args(argv)
    cfg = DepthTrainConfig(steps=a.steps, batch=a.batch, size=a.size, time_budget=a.time_budget, threads=a.threads)
    net, record = train(cfg, Path(a.work))
    if a.out:
        print(f"exported {export(net, Path(a.out), record)}")


if __name__ == "__main__":
    main()
