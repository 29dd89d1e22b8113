"""Train the embedded "materials" bundle from scratch: data, tokenizer, VAE, U-Net + text encoder.

    sfumato train bundle --preset materials [--out bundles/materials] [--work DIR] [--budget-minutes 120]

Stages, each resumable from its last checkpoint in the work folder (safetensors + JSON, no pickles):

1. data      procedural tileable textures (``materials.sample``), seeds 0..N-1, kept as uint8 arrays;
2. tokenizer byte-level BPE merges learned from the caption corpus;
3. vae       an ``AutoencoderKL`` (factor 4, 4 latent channels) on random crops; loss
             L1 + MSE + a small KL term + an FFT-amplitude term that keeps fine texture sharp;
4. latents   every image encoded once with circular padding, so latents of tileable images are
             periodic and random rolls are exact augmentations; scaling factor = 1 / std;
5. unet      a ``UNet2DConditionModel`` and a ``CLIPTextModel`` trained jointly with the epsilon
             objective, min-SNR-γ weighting (Hang et al. 2023), 10% empty captions for classifier-
             free guidance, EMA weights;
6. export    fp16 safetensors in the diffusers layout + ``model_index.json`` (diffusers loads it)
             + our manifest with what trained it, how long and on what data version.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import materials
from .captions import augment

Log = Callable[[str], None]


@dataclass
class TrainConfig:
    seed: int = 0
    image_size: int = 128  # training images, pixels (generation runs at 256+; the nets are convolutional)
    samples: int = 12000  # procedural images generated once
    # VAE: 3 blocks = downsampling by 4
    vae_channels: tuple[int, ...] = (32, 64, 96)
    vae_steps: int = 1800
    vae_batch: int = 12
    vae_crop: int = 64
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6
    fft_weight: float = 0.05
    # text encoder (trained with the U-Net)
    merges: int = 1200
    text_hidden: int = 128
    text_layers: int = 3
    # U-Net
    unet_channels: tuple[int, ...] = (64, 128, 192)
    unet_steps: int = 9000
    unet_batch: int = 32
    latent_crop: int = 16  # U-Net trains on random crops of the periodic latents (64 px of image)
    unet_lr: float = 4e-4
    text_lr: float = 2e-4
    cond_dropout: float = 0.1  # share of empty captions (classifier-free guidance)
    caption_augment: float = 0.5  # share of captions reworded by ``captions.augment``
    min_snr_gamma: float = 5.0
    offset_noise: float = 0.1  # per-image, per-channel constant added to eps: lets the model set mean colour
    ema_decay: float = 0.999
    # running
    threads: int = 2
    checkpoint_every: int = 250
    budget_minutes: float | None = None  # stop the U-Net stage early (at a checkpoint) past this


SCHEDULER = {"_class_name": "DPMSolverMultistepScheduler", "beta_start": 0.00085, "beta_end": 0.012,
             "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
             "timestep_spacing": "trailing", "steps_offset": 0, "algorithm_type": "dpmsolver++", "solver_order": 2}


# ---------------------------------------------------------------- checkpoints (safetensors, no pickle)
def save_state(path: Path, modules: dict[str, torch.nn.Module], optim: torch.optim.Optimizer | None,
                meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors = {f"{name}.{k}": v.detach().contiguous().cpu() for name, m in modules.items()
               for k, v in m.state_dict().items()}
    if optim is not None:
        for i, state in optim.state_dict()["state"].items():
            for k, v in state.items():
                tensors[f"optim.{i}.{k}"] = torch.as_tensor(v).contiguous().cpu()
    tmp = path.with_suffix(".part")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(meta))


def load_state(path: Path, modules: dict[str, torch.nn.Module], optim: torch.optim.Optimizer | None) -> dict:
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    for name, m in modules.items():
        m.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
    if optim is not None:
        sd = optim.state_dict()
        for key, v in tensors.items():
            if key.startswith("optim."):
                _, i, k = key.split(".", 2)
                sd["state"].setdefault(int(i), {})[k] = v
        optim.load_state_dict(sd)
    return json.loads(path.with_suffix(".json").read_text())


@torch.no_grad()
def ema_update(ema: list[torch.Tensor], live: list[torch.Tensor], step: int, decay: float) -> None:
    """Move the EMA weights toward the live ones; the decay ramps up over the first steps (warm-up)."""
    rate = 1 - min(decay, (1 + step) / (10 + step))
    for pe, pl in zip(ema, live, strict=True):
        pe.lerp_(pl, rate)


class Trainer:
    def __init__(self, cfg: TrainConfig, work: Path, out: Path, log: Log = print):
        self.cfg, self.work, self.out, self.log = cfg, Path(work), Path(out), log
        self.work.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.work / "train_log.jsonl", "a")
        torch.set_num_threads(cfg.threads)
        self.started = time.time()
        self.seconds = json.loads((self.work / "time.json").read_text())["seconds"] \
            if (self.work / "time.json").is_file() else 0.0

    def record(self, **fields: Any) -> None:
        self.log_file.write(json.dumps({"time": round(time.time(), 1), **fields}) + "\n")
        self.log_file.flush()

    def elapsed(self) -> float:
        return self.seconds + time.time() - self.started

    def checkpoint_time(self) -> None:
        (self.work / "time.json").write_text(json.dumps({"seconds": self.elapsed()}))

    # ---- 1. data -------------------------------------------------------------------------------
    def data(self) -> tuple[np.ndarray, list[dict]]:
        path = self.work / f"data_{materials.DATA_VERSION}_{self.cfg.samples}_{self.cfg.image_size}.npz"
        if path.is_file():
            z = np.load(path, allow_pickle=False)
            return z["images"], json.loads(str(z["labels"]))
        self.log(f"data: generating {self.cfg.samples} textures at {self.cfg.image_size}px")
        images = np.empty((self.cfg.samples, self.cfg.image_size, self.cfg.image_size, 3), np.uint8)
        labels = []
        for i in range(self.cfg.samples):
            images[i], lab = materials.sample(self.cfg.seed * 1_000_000 + i, self.cfg.image_size)
            labels.append({k: v for k, v in lab.items() if k in ("family", "colour", "weathered")})
            if (i + 1) % 2000 == 0:
                self.log(f"data: {i + 1}/{self.cfg.samples}")
        np.savez(path, images=images, labels=np.array(json.dumps(labels)))
        self.checkpoint_time()
        return images, labels

    # ---- 2. tokenizer --------------------------------------------------------------------------
    def tokenizer(self):
        from transformers import CLIPTokenizer

        from ..tokenizer_build import train_merges, write_tokenizer

        folder = self.work / "tokenizer"
        if not (folder / "vocab.json").is_file():
            corpus = materials.corpus(20000, seed=self.cfg.seed)
            write_tokenizer(folder, train_merges(corpus, num_merges=self.cfg.merges))
        return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)

    # ---- 3. VAE --------------------------------------------------------------------------------
    def make_vae(self):
        from diffusers import AutoencoderKL

        n = len(self.cfg.vae_channels)
        return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                             block_out_channels=self.cfg.vae_channels, layers_per_block=1,
                             down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
                             norm_num_groups=16, sample_size=self.cfg.image_size, mid_block_add_attention=False)

    def crops(self, images: np.ndarray, rng: np.random.Generator, batch: int, size: int) -> torch.Tensor:
        """Random crops of tileable images: roll anywhere (exact on a torus), flip, take the corner."""
        idx = rng.integers(len(images), size=batch)
        out = []
        for i in idx:
            img = np.roll(images[i], (int(rng.integers(images.shape[1])), int(rng.integers(images.shape[2]))), (0, 1))
            img = img[:size, :size]
            if rng.random() < 0.5:
                img = img[:, ::-1]
            out.append(img)
        x = torch.from_numpy(np.stack(out).astype(np.float32) / 127.5 - 1.0)
        return x.permute(0, 3, 1, 2).contiguous()

    def vae(self, images: np.ndarray):
        cfg, vae = self.cfg, self.make_vae()
        ckpt = self.work / "vae.safetensors"
        optim = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
        step = load_state(ckpt, {"vae": vae}, optim)["step"] if ckpt.is_file() else 0
        rng = np.random.default_rng(cfg.seed + 1 + step)
        vae.train()
        t0 = time.time()
        while step < cfg.vae_steps:
            lr = cfg.vae_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.vae_steps)))
            for group in optim.param_groups:
                group["lr"] = lr
            x = self.crops(images, rng, cfg.vae_batch, cfg.vae_crop)
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
            fft = (torch.fft.rfft2(rec).abs() - torch.fft.rfft2(x).abs()).abs().mean() / cfg.vae_crop
            loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + cfg.kl_weight * post.kl().mean() + cfg.fft_weight * fft
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optim.step()
            step += 1
            if step % 50 == 0:
                psnr = -10 * math.log10(max(F.mse_loss(rec, x).item() / 4, 1e-10))
                rate = (time.time() - t0) / 50
                t0 = time.time()
                self.log(f"vae: step {step}/{cfg.vae_steps} loss {loss.item():.4f} psnr {psnr:.1f} dB "
                         f"{rate:.2f} s/step eta {rate * (cfg.vae_steps - step) / 60:.0f} min")
                self.record(stage="vae", step=step, loss=loss.item(), psnr=psnr)
            if step % cfg.checkpoint_every == 0 or step == cfg.vae_steps:
                save_state(ckpt, {"vae": vae}, optim, {"step": step})
                self.checkpoint_time()
        return vae.eval().requires_grad_(False)

    # ---- 4. latents ----------------------------------------------------------------------------
    @torch.no_grad()
    def latents(self, vae, images: np.ndarray) -> tuple[torch.Tensor, float]:
        from ..seamless import seamless

        path = self.work / "latents.safetensors"
        if path.is_file():
            from safetensors.torch import load_file

            z = load_file(str(path))
            return z["latents"].float(), float(z["scale"])
        self.log(f"latents: encoding {len(images)} images")
        out = []
        with seamless([vae], "xy"):
            for i in range(0, len(images), 64):
                x = torch.from_numpy(images[i:i + 64].astype(np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2)
                out.append(vae.encode(x).latent_dist.mean.half())
        z = torch.cat(out)
        scale = float(1.0 / z.float().std())
        from safetensors.torch import save_file

        save_file({"latents": z, "scale": torch.tensor(scale)}, str(path))
        self.checkpoint_time()
        return z.float(), scale

    # ---- 5. U-Net + text encoder ---------------------------------------------------------------
    def make_unet(self, cross_dim: int):
        from diffusers import UNet2DConditionModel

        ch = self.cfg.unet_channels
        return UNet2DConditionModel(
            sample_size=self.cfg.image_size // 4, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=ch, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cross_dim,
            attention_head_dim=tuple(max(1, c // 32) for c in ch), norm_num_groups=32)

    def make_text_encoder(self, tokenizer):
        from transformers import CLIPTextConfig, CLIPTextModel

        vocab = len(tokenizer)
        h = self.cfg.text_hidden
        return CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=h, intermediate_size=4 * h,
                                            num_hidden_layers=self.cfg.text_layers, num_attention_heads=4,
                                            max_position_embeddings=77, projection_dim=h, hidden_act="quick_gelu",
                                            pad_token_id=vocab - 1, bos_token_id=vocab - 2, eos_token_id=vocab - 1))

    def caption(self, labels: dict, rng: np.random.Generator) -> str:
        text = materials.caption(labels, rng)
        return augment(text, rng) if rng.random() < self.cfg.caption_augment else text

    def unet(self, tokenizer, latents: torch.Tensor, labels: list[dict]):
        from diffusers import DDPMScheduler

        cfg = self.cfg
        text, unet = self.make_text_encoder(tokenizer), self.make_unet(cfg.text_hidden)
        ema_text, ema_unet = self.make_text_encoder(tokenizer), self.make_unet(cfg.text_hidden)
        ema_text.load_state_dict(text.state_dict())
        ema_unet.load_state_dict(unet.state_dict())
        optim = torch.optim.AdamW([{"params": unet.parameters(), "lr": cfg.unet_lr},
                                   {"params": text.parameters(), "lr": cfg.text_lr}], weight_decay=0.01)
        ckpt = self.work / "unet.safetensors"
        modules = {"unet": unet, "text": text, "ema_unet": ema_unet, "ema_text": ema_text}
        step = load_state(ckpt, modules, optim)["step"] if ckpt.is_file() else 0
        self.log(f"unet: {sum(p.numel() for p in unet.parameters()) / 1e6:.1f} M parameters, text encoder "
                 f"{sum(p.numel() for p in text.parameters()) / 1e6:.1f} M; starting at step {step}")
        sched = DDPMScheduler(**{k: v for k, v in SCHEDULER.items() if k in ("beta_start", "beta_end",
                                                                             "beta_schedule", "num_train_timesteps")})
        alpha_bar = sched.alphas_cumprod
        snr = alpha_bar / (1 - alpha_bar)
        rng = np.random.default_rng(cfg.seed + 2 + step)
        gen = torch.Generator().manual_seed(cfg.seed + 3 + step)
        unet.train(), text.train()
        t0 = time.time()
        while step < cfg.unet_steps:
            lr_scale = min(1.0, (step + 1) / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.unet_steps)))
            optim.param_groups[0]["lr"], optim.param_groups[1]["lr"] = cfg.unet_lr * lr_scale, cfg.text_lr * lr_scale
            idx = rng.integers(len(latents), size=cfg.unet_batch)
            z0 = latents[idx]
            shifts = rng.integers(z0.shape[-1], size=2)
            z0 = torch.roll(z0, (int(shifts[0]), int(shifts[1])), (-2, -1))  # periodic latents: exact
            z0 = z0[..., :cfg.latent_crop, :cfg.latent_crop]
            if rng.random() < 0.5:
                z0 = z0.flip(-1)
            captions = [self.caption(labels[i], rng) if rng.random() >= cfg.cond_dropout else "" for i in idx]
            ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True,
                            return_tensors="pt").input_ids
            # offset noise (Guttenberg 2023): the schedule never fully hides an image's mean, so without
            # it a model learns to keep the noise's mean and cannot make clearly dark or light textures
            eps = torch.randn(z0.shape, generator=gen) + cfg.offset_noise * torch.randn(
                (*z0.shape[:2], 1, 1), generator=gen)
            t = torch.randint(0, 1000, (len(idx),), generator=gen)
            x_t = sched.add_noise(z0, eps, t)
            pred = unet(x_t, t, encoder_hidden_states=text(ids)[0]).sample
            weight = torch.clamp(snr[t], max=cfg.min_snr_gamma) / snr[t]  # min-SNR-γ for eps prediction
            loss = (weight * ((pred - eps) ** 2).mean(dim=(1, 2, 3))).mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([*unet.parameters(), *text.parameters()], 1.0)
            optim.step()
            step += 1
            ema_update([*ema_unet.parameters(), *ema_text.parameters()], [*unet.parameters(), *text.parameters()],
                       step, cfg.ema_decay)
            if step % 50 == 0:
                rate = (time.time() - t0) / 50
                t0 = time.time()
                self.log(f"unet: step {step}/{cfg.unet_steps} loss {loss.item():.4f} {rate:.2f} s/step "
                         f"eta {rate * (cfg.unet_steps - step) / 60:.0f} min")
                self.record(stage="unet", step=step, loss=loss.item())
            if step % cfg.checkpoint_every == 0 or step == cfg.unet_steps:
                save_state(ckpt, modules, optim, {"step": step})
                self.checkpoint_time()
                if cfg.budget_minutes is not None and self.elapsed() > cfg.budget_minutes * 60:
                    self.log(f"unet: time budget reached at step {step}; exporting what we have")
                    break
        return ema_unet.eval(), ema_text.eval(), step

    # ---- 6. export -----------------------------------------------------------------------------
    def export(self, vae, scale: float, unet, text, tokenizer, unet_steps: int) -> Path:
        import shutil

        from ..bundle import save_component, write_manifest

        out = self.out
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        vae.register_to_config(scaling_factor=scale)
        for name, model in (("vae", vae), ("unet", unet), ("text_encoder", text)):
            save_component(model.to(torch.float16), tmp / name)
        tokenizer.save_pretrained(tmp / "tokenizer")
        shutil.copy(self.work / "tokenizer" / "vocab.json", tmp / "tokenizer" / "vocab.json")
        shutil.copy(self.work / "tokenizer" / "merges.txt", tmp / "tokenizer" / "merges.txt")
        (tmp / "scheduler").mkdir(parents=True, exist_ok=True)
        (tmp / "scheduler" / "scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=2))
        index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
                 "feature_extractor": [None, None], "safety_checker": [None, None], "requires_safety_checker": False,
                 "scheduler": ["diffusers", SCHEDULER["_class_name"]], "text_encoder": ["transformers", "CLIPTextModel"],
                 "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
                 "vae": ["diffusers", "AutoencoderKL"]}
        (tmp / "model_index.json").write_text(json.dumps(index, indent=2))
        training = {"command": "sfumato train bundle --preset materials", "data_version": materials.DATA_VERSION,
                    "seconds": round(self.elapsed()), "hardware": f"{platform.processor() or platform.machine()}, "
                    f"{self.cfg.threads} CPU threads, torch {torch.__version__}", "unet_steps": unet_steps,
                    "date": time.strftime("%Y-%m-%d"), "config": dataclasses.asdict(self.cfg)}
        write_manifest(tmp, name=out.name, family="mini", license="CC0-1.0 (trained by the sfumato project on "
                       "procedural data)", description="architectural material textures (tileable with --seamless "
                       "xy), trained from scratch on procedural data; native 128 px, generate at 256+",
                       extra={"training": training, "default_size": 256})
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
        return out

    def run(self) -> Path:
        self.log(f"training the materials bundle into {self.out} (work folder {self.work}); rerun the same "
                 "command to resume")
        images, labels = self.data()
        tokenizer = self.tokenizer()
        vae = self.vae(images)
        latents, scale = self.latents(vae, images)
        unet, text, steps = self.unet(tokenizer, latents * scale, labels)
        path = self.export(vae, scale, unet, text, tokenizer, steps)
        self.log(f"exported {path} after {self.elapsed() / 60:.0f} min")
        return path
