"""Train the embedded bundle's motion module on synthetic clips of its own procedural materials.

    sfumato train motion [--bundle materials] [--steps 4000] [--budget-minutes 100] [--work DIR]

The image U-Net, VAE and text encoder stay frozen; only the frame-attention stack learns. A clip is
one tileable material texture (``core/train/materials.py``) seen through a moving virtual camera:
a pan, a rotation, a zoom, a pan with rotation, or no motion at all. Every frame is sampled from
the same periodic texture (coordinates taken modulo its size), so frames differ only by the
motion, as a surface does when the camera orbits a building. The objective is the image model's:
the noise of each frame, one timestep per clip, min-SNR-γ weighted. What the stack must learn is
what an image model cannot know: that the frames are one surface moving.

The validation figure printed at every checkpoint is the denoising loss on fixed held-out clips
with the stack on, next to the same loss with it off (the image model alone, which is what the
stack starts as): the stack helps exactly when the first is lower.

Checkpoints are safetensors in the work folder (no pickles); rerunning the command resumes.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

Log = Callable[[str], None]

DATA_VERSION = "motion-clips-v1"
KINDS = ("pan", "rotate", "zoom", "pan+rotate", "static")
KIND_WEIGHTS = (0.4, 0.2, 0.15, 0.15, 0.1)


@dataclass
class MotionTrainConfig:
    seed: int = 0
    frames: int = 8  # F per clip = the stack's positional length (windows cover longer videos)
    size: int = 64  # clip frames, pixels (16² latents, as the image U-Net was trained)
    texture: int = 128  # the tileable texture the camera moves over
    max_pan: float = 3.0  # pixels per frame
    max_turn: float = 4.0  # degrees per frame
    max_zoom: float = 0.04  # relative scale change per frame
    heads: int = 8
    steps: int = 4000
    batch: int = 3  # clips per step
    lr: float = 3e-4
    cond_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    offset_noise: float = 0.1
    ema_decay: float = 0.998
    validation_clips: int = 12
    threads: int = 2
    checkpoint_every: int = 250
    budget_minutes: float | None = None


def camera_path(rng: np.random.Generator, cfg: MotionTrainConfig) -> tuple[str, np.ndarray]:
    """Per-frame 2×3 maps from centred output pixels to texture pixels, and the motion's name."""
    kind = str(rng.choice(KINDS, p=KIND_WEIGHTS))
    scale = float(rng.uniform(0.75, 1.3))
    angle0 = math.radians(90 * int(rng.integers(4)) + rng.uniform(-10, 10))  # near the image model's axes
    centre = rng.uniform(0, cfg.texture, size=2)
    speed = rng.uniform(0.5, 1.0) * cfg.max_pan * (kind in ("pan", "pan+rotate"))
    heading = rng.uniform(0, 2 * math.pi)
    velocity = speed * np.array([math.cos(heading), math.sin(heading)])
    turn = math.radians(rng.uniform(0.3, 1.0) * cfg.max_turn * rng.choice([-1, 1])) * (kind in ("rotate", "pan+rotate"))
    zoom = rng.uniform(0.3, 1.0) * cfg.max_zoom * rng.choice([-1, 1]) * (kind == "zoom")
    maps = []
    for f in range(cfg.frames):
        a, s = angle0 + turn * f, scale * (1 + zoom) ** f
        rot = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        maps.append(np.concatenate([rot, (centre + velocity * f)[:, None]], axis=1))
    return kind, np.stack(maps)


def render_clip(texture: np.ndarray, maps: np.ndarray, size: int) -> torch.Tensor:
    """Frames (F, 3, size, size) in [-1, 1]: the periodic ``texture`` (T, T, 3) uint8 seen through ``maps``."""
    t = texture.shape[0]
    tex = torch.from_numpy(texture.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)
    tex = F.pad(tex[None], (1, 1, 1, 1), mode="circular")  # one wrapped texel each side for bilinear
    c = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    p = torch.stack([xx, yy, torch.ones_like(xx)], -1).reshape(-1, 3)  # (P, 3)
    q = torch.einsum("fij,pj->fpi", torch.from_numpy(maps).float(), p) % t  # texture pixels, wrapped
    grid = (q + 1.0) / (t + 1) * 2 - 1  # padded texture, align_corners=True: texel k+1 sits at k
    grid = grid.reshape(len(maps), size, size, 2)
    return F.grid_sample(tex.expand(len(maps), -1, -1, -1), grid, mode="bilinear", align_corners=True)


def make_clip(seed: int, cfg: MotionTrainConfig) -> tuple[torch.Tensor, dict, str]:
    from ..core.train import materials

    rng = np.random.default_rng(seed)
    texture, labels = materials.sample(seed, cfg.texture)
    kind, maps = camera_path(rng, cfg)
    return render_clip(texture, maps, cfg.size), labels, kind


class MotionTrainer:
    def __init__(self, cfg: MotionTrainConfig, bundle: str | None, work: Path, log: Log = print):
        from ..core import bundle as bundles
        from ..core.loading import load_models
        from .motion import MotionConfig, MotionStack, inflate

        self.cfg, self.work, self.log = cfg, Path(work), log
        self.work.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(cfg.threads)
        self.bundle = bundles.resolve(bundle)
        self.models = load_models(self.bundle, torch.device("cpu"), torch.float32)
        unet = self.models.unet.eval().requires_grad_(False)
        self.models.vae.requires_grad_(False)
        for encoder in self.models.text_encoders:
            encoder.requires_grad_(False)
        config = MotionConfig.for_unet(unet.config, num_attention_heads=cfg.heads, max_frames=cfg.frames)
        self.motion = inflate(unet, config)
        self.ema = MotionStack(config)
        self.ema.load_state_dict(self.motion.motion.state_dict())
        self.log_file = open(self.work / "train_log.jsonl", "a")
        self.started = time.time()
        timer = self.work / "time.json"
        self.seconds = json.loads(timer.read_text())["seconds"] if timer.is_file() else 0.0

    def elapsed(self) -> float:
        return self.seconds + time.time() - self.started

    def record(self, **fields: Any) -> None:
        self.log_file.write(json.dumps({"time": round(time.time(), 1), **fields}) + "\n")
        self.log_file.flush()

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        vae = self.models.vae
        return vae.encode(frames).latent_dist.mean * vae.config.scaling_factor

    @torch.no_grad()
    def embed(self, captions: list[str]) -> torch.Tensor:
        from ..core import text

        return torch.cat([text.encode(self.models, c).tokens for c in captions])

    def batch(self, seeds: list[int], rng: np.random.Generator, dropout: float):
        from ..core.train import materials

        clips, captions = [], []
        for s in seeds:
            frames, labels, _ = make_clip(s, self.cfg)
            clips.append(self.encode(frames))
            captions.append(materials.caption(labels, rng) if rng.random() >= dropout else "")
        return torch.stack(clips), self.embed(captions)  # (B, F, 4, h, w), (B, 77, D)

    def loss(self, z0: torch.Tensor, emb: torch.Tensor, gen: torch.Tensor | torch.Generator, *,
             temporal: bool = True, t: torch.Tensor | None = None, eps: torch.Tensor | None = None) -> torch.Tensor:
        b, f = z0.shape[:2]
        sched = self.sched
        if eps is None:
            eps = torch.randn(z0.shape, generator=gen) + self.cfg.offset_noise * torch.randn(
                (b, 1, z0.shape[2], 1, 1), generator=gen)
        if t is None:
            t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=gen)
        x_t = sched.add_noise(z0.flatten(0, 1), eps.flatten(0, 1), t.repeat_interleave(f))
        cond = emb.repeat_interleave(f, dim=0)
        if temporal:
            with self.motion.video(f):
                pred = self.models.unet(x_t, t.repeat_interleave(f), encoder_hidden_states=cond).sample
        else:
            pred = self.models.unet(x_t, t.repeat_interleave(f), encoder_hidden_states=cond).sample
        err = ((pred - eps.flatten(0, 1)) ** 2).mean(dim=(1, 2, 3)).view(b, f).mean(1)
        snr = self.snr[t]
        return (torch.clamp(snr, max=self.cfg.min_snr_gamma) / snr * err).mean()

    @torch.no_grad()
    def validate(self, stack: torch.nn.Module) -> tuple[float, float]:
        """Mean loss on the fixed held-out clips: (stack on, image model alone)."""
        live = {k: v.clone() for k, v in self.motion.motion.state_dict().items()}
        self.motion.motion.load_state_dict(stack.state_dict())
        on = off = 0.0
        for z0, emb, t, eps in self.val:
            on += self.loss(z0, emb, None, t=t, eps=eps).item()
            off += self.loss(z0, emb, None, t=t, eps=eps, temporal=False).item()
        self.motion.motion.load_state_dict(live)
        return on / len(self.val), off / len(self.val)

    def run(self) -> dict[str, Any]:
        from diffusers import DDPMScheduler

        from ..core.train.bundle_train import load_state, save_state, ema_update

        cfg = self.cfg
        self.sched = DDPMScheduler.from_config(self.models.scheduler_config)
        self.snr = self.sched.alphas_cumprod / (1 - self.sched.alphas_cumprod)
        vrng = np.random.default_rng(10_000 + cfg.seed)
        vgen = torch.Generator().manual_seed(10_001 + cfg.seed)
        self.val = []
        for k in range(cfg.validation_clips):  # seeds far outside the training range
            z0, emb = self.batch([2_000_000_000 + k], vrng, 0.0)
            t = torch.tensor([int(1000 * (k + 0.5) / cfg.validation_clips)])
            eps = torch.randn(z0.shape, generator=vgen)
            self.val.append((z0, emb, t, eps))
        stack = self.motion.motion
        params = [p for p in stack.parameters()]
        for p in params:
            p.requires_grad_(True)
        stack.train()
        optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
        ckpt = self.work / "motion.safetensors"
        modules = {"motion": stack, "ema": self.ema}
        step = load_state(ckpt, modules, optim)["step"] if ckpt.is_file() else 0
        n_params = sum(p.numel() for p in params)
        self.log(f"motion: {n_params / 1e6:.2f} M parameters over {self.bundle.name}'s frozen U-Net; "
                 f"{cfg.frames}-frame clips at {cfg.size}px, starting at step {step}")
        if step == 0:
            on, off = self.validate(self.ema)
            self.log(f"motion: validation loss {on:.4f} with the stack, {off:.4f} image model alone")
            self.record(stage="motion", step=0, val_on=on, val_off=off)
        rng = np.random.default_rng(cfg.seed + 7 + step)
        gen = torch.Generator().manual_seed(cfg.seed + 8 + step)
        t0 = time.time()
        while step < cfg.steps:
            lr = cfg.lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
            for group in optim.param_groups:
                group["lr"] = lr
            seeds = [int(s) for s in rng.integers(0, 1_000_000_000, size=cfg.batch)]
            z0, emb = self.batch(seeds, rng, cfg.cond_dropout)
            loss = self.loss(z0, emb, gen)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            step += 1
            ema_update(list(self.ema.parameters()), params, step, cfg.ema_decay)
            if step % 25 == 0:
                rate = (time.time() - t0) / 25
                t0 = time.time()
                self.log(f"motion: step {step}/{cfg.steps} loss {loss.item():.4f} {rate:.2f} s/step "
                         f"eta {rate * (cfg.steps - step) / 60:.0f} min")
                self.record(stage="motion", step=step, loss=loss.item())
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                save_state(ckpt, modules, optim, {"step": step})
                (self.work / "time.json").write_text(json.dumps({"seconds": self.elapsed()}))
                on, off = self.validate(self.ema)
                self.log(f"motion: validation loss {on:.4f} with the stack, {off:.4f} image model alone")
                self.record(stage="motion", step=step, val_on=on, val_off=off)
                if cfg.budget_minutes is not None and self.elapsed() > cfg.budget_minutes * 60:
                    self.log(f"motion: time budget reached at step {step}; exporting what we have")
                    break
        on, off = self.validate(self.ema)
        return {"steps": step, "val_on": on, "val_off": off}

    def export(self, summary: dict[str, Any], out: Path | None = None) -> Path:
        """Write the EMA stack into the bundle (``motion_adapter/``, fp16) and re-hash its manifest.

        ``out``: another folder (a copy of the bundle is made there first) instead of the bundle itself.
        """
        import shutil

        from ..core.bundle import MANIFEST, write_manifest
        from .adapter import save_motion_adapter

        folder = Path(out) if out is not None else self.bundle.path
        if not (folder / MANIFEST).is_file():  # a new folder: a copy of the bundle, plus the module
            shutil.copytree(self.bundle.path, folder, dirs_exist_ok=True, ignore=shutil.ignore_patterns("motion_adapter"))
        tmp = folder / ".motion_adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        save_motion_adapter(self.ema.to(torch.float16), tmp)
        self.ema.float()
        target = folder / "motion_adapter"
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        manifest = json.loads((folder / MANIFEST).read_text())
        base = {"format", "name", "family", "license", "description", "components", "files"}
        extra = {k: v for k, v in manifest.items() if k not in base}
        extra["motion_training"] = {
            "command": "sfumato train motion", "data_version": DATA_VERSION, "seconds": round(self.elapsed()),
            "hardware": f"{platform.processor() or platform.machine()}, {self.cfg.threads} CPU threads, "
                        f"torch {torch.__version__}", "date": time.strftime("%Y-%m-%d"),
            "validation_loss": {"temporal": round(summary["val_on"], 5), "image_model": round(summary["val_off"], 5)},
            "steps": summary["steps"], "config": asdict(self.cfg)}
        write_manifest(folder, name=manifest["name"], family=manifest["family"], license=manifest["license"],
                       description=manifest.get("description", ""), extra=extra)
        return target
