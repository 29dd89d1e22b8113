"""Train a style LoRA from a folder of reference images into a bundle, resumably.

    sfumato train style FOLDER --bundle NAME --name STYLE [--steps --rank --resolution --caption "... {trigger}"]

``train_style(cfg, work, progress=, cancelled=, log=)`` is the main path, a short story:

1. **Check** everything that needs no model (``check``): the name, the bundle (of an SD 1.x/2.x layout, that
   does not hold the name yet unless ``overwrite``; the embedded bundle's LoRAs go to the user's folder for it), the numbers against ``BOUNDS``, then the
   references and their captions (``style_data.read_style_set``: headers before pixels).
2. **Load** the bundle's networks on the device (CUDA in half precision with the LoRA in fp32 under autocast,
   and gradient checkpointing; else the CPU in fp32); the text encoder and the VAE stay frozen.
3. **Cache** what is frozen: each image (and its mirror image) encoded once by the VAE to its posterior mean
   ``z_0 = mean(E(x)) · scaling_factor``, each caption once by the text encoder, exactly as generation encodes
   prompts (``core.text.encode``).
4. **Add the LoRA**: peft's ``LoraConfig`` on the attention projections (``to_q, to_k, to_v, to_out.0``),
   ``unet.add_adapter``; only its matrices train (``B`` starts at zero, so step 0 is the bundle itself).
5. **Estimate** the time from two timed steps that change nothing; on a CPU, a run over ``cpu_limit_minutes`` is
   refused with the estimate unless ``force``.
6. **Train** with the bundle's own noise schedule (``DDPMScheduler`` from its scheduler folder): draw z_0, a
   timestep t and eps, x_t = sqrt(alpha_bar_t) z_0 + sqrt(1 - alpha_bar_t) eps, and regress the U-Net's output
   on the scheduler's target (eps, v or z_0, its ``prediction_type``) with min-SNR-γ weights (Hang et al. 2023,
   diffusers' ``compute_snr``). Every random draw comes from one CPU generator, so a run is a function of its
   config; every ``checkpoint_every`` steps the LoRA, AdamW's moments, the step and that generator's state are
   written atomically to ``work/``, and a rerun continues from there bit for bit (on the CPU). ``cancelled()`` is
   asked before every step and stops at once (``Cancelled``), leaving the last checkpoint.
7. **Save** with diffusers' ``StableDiffusionPipeline.save_lora_weights`` (what ``core/lora.py`` loads) and put it
   into the bundle with ``bundle_add.add_lora`` (checked to load, hashed into the manifest), so it is listed by
   ``sfumato bundle info`` and used as ``--lora STYLE[:SCALE]``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from .. import schema
from ..errors import BadParameter, Cancelled
from .style_data import DEFAULT_CAPTION, StyleSet, read_style_set

if TYPE_CHECKING:  # torch loads when training starts, not when the CLI builds its parser
    import torch

Progress = Callable[[int, int, float], None]  # (step, total steps, loss)
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # the attention projections, as diffusers' LoRA scripts train
CHECKPOINT = "style_checkpoint.safetensors"
_REQUEST = {f.name: f for f in schema.fields(schema.StyleRequest)}  # the job's fields: their bounds and defaults


def _bounds(name: str) -> tuple[float, float]:
    spec = schema.spec_of(_REQUEST[name])
    return spec.lo, spec.hi


# (lowest, highest) allowed; resolution and crop are multiples of RESOLUTION_STEP; the job's own fields from the schema
BOUNDS = {"steps": _bounds("steps"), "rank": _bounds("rank"), "resolution": _bounds("resolution"),
          "crop": _bounds("resolution"), "batch": (1, 64), "lr": (1e-6, 1e-1), "checkpoint_every": _bounds("steps")}
RESOLUTION_STEP = schema.spec_of(_REQUEST["resolution"]).multiple  # 8 latent pixels at a VAE factor of 8


@dataclass(frozen=True)
class StyleTrainConfig:
    """One style training run. Everything but ``steps``, ``checkpoint_every``, ``overwrite``, ``force`` and
    ``cpu_limit_minutes`` is part of the run's identity: a checkpoint made with other values is not resumed."""

    folder: str  # the reference images (and their sidecar .txt captions)
    name: str  # the LoRA's name in the bundle (``--lora NAME``)
    bundle: str | None = None  # a user bundle's name or folder; None: the default bundle
    steps: int = _REQUEST["steps"].default  # optimiser steps; more may be asked later: the learning rate is constant after warm-up
    rank: int = _REQUEST["rank"].default  # LoRA rank r (lora_alpha = r: the update's scale is 1)
    resolution: int | None = None  # references are squared to this; None: the bundle's native size
    crop: int | None = None  # train on random square crops of this many pixels (style is local); None: whole images
    batch: int = 4
    lr: float = 1e-4  # AdamW, on the LoRA matrices only
    warmup: int = 20  # steps of linear learning-rate warm-up
    snr_gamma: float | None = 5.0  # min-SNR-γ loss weighting; None: plain mean squared error
    offset_noise: float | None = None  # per-image, per-channel constant added to eps; None: the bundle's own training
    # value when its manifest records one (the embedded bundle's ``training.config.offset_noise``), else 0
    caption: str = DEFAULT_CAPTION  # template for images without a sidecar .txt
    trigger: str | None = None  # the word replacing {trigger}; None: the name
    seed: int = 0
    checkpoint_every: int = 50
    device: str = "auto"
    overwrite: bool = False  # replace a LoRA of that name
    force: bool = False  # train on a CPU even when the estimate passes cpu_limit_minutes
    cpu_limit_minutes: float = 60.0

    @property
    def trigger_word(self) -> str:
        return self.trigger if self.trigger is not None else self.name


# ---- 1. check ----------------------------------------------------------------------------------------------------
def _in_bounds(field: str, value: Any, multiple: int | None = None) -> None:
    lo, hi = BOUNDS[field]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and lo <= value <= hi
    if ok and multiple is not None:
        ok = isinstance(value, int) and value % multiple == 0
    if not ok:
        raise BadParameter(field, value, f"{lo} to {hi}" + (f", a multiple of {multiple}" if multiple else ""))


def native_resolution(bundle) -> int:
    """The bundle's default image size (as generation picks it), rounded down to ``RESOLUTION_STEP``."""
    from ..capabilities import native_size

    return max(RESOLUTION_STEP, native_size(bundle) // RESOLUTION_STEP * RESOLUTION_STEP)


def check(cfg: StyleTrainConfig) -> tuple[Any, StyleTrainConfig, StyleSet]:
    """(bundle, ``cfg`` with its resolution filled in, the references), or the first bad field as a
    ``BadParameter``; nothing loads a model."""
    from ..bundle import is_embedded, loras_dir, resolve
    from ..bundle_add import NAME, writable

    if not isinstance(cfg.name, str) or not NAME.fullmatch(cfg.name):
        raise BadParameter("name", cfg.name, "letters, digits, '_', '.' and '-', starting with a letter or digit "
                           "(the LoRA is named in jobs as NAME[:SCALE])")
    bundle = resolve(cfg.bundle)
    if not is_embedded(bundle.path):  # the embedded bundle is never changed: its LoRAs live in the user's folder
        bundle = writable(bundle)
    if bundle.family == "sdxl" or "text_encoder_2" in bundle.components:
        raise BadParameter("bundle", bundle.name, "a bundle of the SD 1.x/2.x layout (one text encoder), such as a "
                           "copy of the embedded materials bundle or an imported SD 1.5 checkpoint; style training "
                           "of SDXL bundles is not supported yet")
    target = loras_dir(bundle) / f"{cfg.name}.safetensors"
    if target.exists() and not cfg.overwrite:
        raise BadParameter("name", cfg.name, f"a LoRA name bundle {bundle.name} does not hold yet "
                           f"({target.name} exists in {target.parent})",
                           hint="choose another --name, or pass --overwrite to replace it")
    cfg = dataclasses.replace(cfg, resolution=cfg.resolution or native_resolution(bundle))
    for field in ("steps", "rank", "batch", "checkpoint_every"):
        _in_bounds(field, getattr(cfg, field), 1)
    _in_bounds("lr", cfg.lr)
    _in_bounds("resolution", cfg.resolution, RESOLUTION_STEP)
    if cfg.crop is not None:
        _in_bounds("crop", cfg.crop, RESOLUTION_STEP)
        if cfg.crop > cfg.resolution:
            raise BadParameter("crop", cfg.crop, f"at most the resolution, {cfg.resolution}")
    if not isinstance(cfg.warmup, int) or cfg.warmup < 0:
        raise BadParameter("warmup", cfg.warmup, "0 or more steps")
    if cfg.offset_noise is None:
        trained = (bundle.manifest.get("training") or {}).get("config") or {}
        cfg = dataclasses.replace(cfg, offset_noise=float(trained.get("offset_noise") or 0.0))
    if not isinstance(cfg.offset_noise, (int, float)) or not 0 <= cfg.offset_noise <= 1:
        raise BadParameter("offset_noise", cfg.offset_noise, "0 to 1 (0: none)")
    if cfg.snr_gamma is not None and not (isinstance(cfg.snr_gamma, (int, float)) and cfg.snr_gamma > 0):
        raise BadParameter("snr_gamma", cfg.snr_gamma, "a positive number, or none for plain mean squared error")
    data = read_style_set(cfg.folder, cfg.resolution, cfg.caption, cfg.trigger_word)
    return bundle, cfg, data


# ---- 2-4. models, caches, the LoRA ---------------------------------------------------------------------------------
@dataclass
class Setup:
    """What the loop needs: the U-Net with its LoRA, the frozen caches and the noise schedule."""

    unet: Any
    latents: torch.Tensor  # (2N, C, h, w) z_0 of each image and of its mirror image, fp32 on the device
    tokens: torch.Tensor  # (2N, 77, D) caption embeddings, in the U-Net's dtype
    scheduler: Any  # the bundle's DDPMScheduler
    device: torch.device
    autocast: torch.dtype | None  # CUDA: the base weights' half dtype under autocast
    params: list[torch.nn.Parameter]  # the LoRA matrices, fp32


def setup(bundle, cfg: StyleTrainConfig, data: StyleSet, log: Callable[[str], None]) -> Setup:
    import torch
    from diffusers import DDPMScheduler
    from diffusers.training_utils import cast_training_params
    from peft import LoraConfig

    from .. import text
    from ..device import pick_device
    from ..loading import load_models

    device = pick_device(cfg.device)
    half = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float16
    dtype = half if device.type == "cuda" else torch.float32
    models = load_models(bundle, device, dtype)
    scheduler = DDPMScheduler.from_pretrained(str(bundle.component_dir("scheduler")), local_files_only=True)
    with torch.no_grad():
        x = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 127.5 - 1  # (N, 3, R, R) in [-1, 1]
        x = torch.cat([x, x.flip(-1)])  # mirror images: twice the data for one encoding
        vae = models.vae
        z = torch.cat([vae.encode(x[i:i + 8].to(device, vae.dtype)).latent_dist.mean for i in range(0, len(x), 8)])
        latents = z.float() * vae.config.scaling_factor
        tokens = torch.cat([text.encode(models, c).tokens for c in data.captions])
        tokens = torch.cat([tokens, tokens])
    unet = models.unet
    with torch.random.fork_rng(devices=[]):  # peft draws A ~ N(0, 1/r) from the global generator: seed it, locally
        torch.manual_seed(cfg.seed)
        unet.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.rank, init_lora_weights="gaussian",
                                    target_modules=TARGETS))
    cast_training_params(unet, dtype=torch.float32)  # the LoRA trains in fp32, over half-precision base weights
    params = [p for p in unet.parameters() if p.requires_grad]
    if device.type == "cuda":
        unet.enable_gradient_checkpointing()
    unet.train()
    log(f"style: {len(data.paths)} images at {cfg.resolution}² → latents {tuple(latents.shape[1:])}, LoRA rank "
        f"{cfg.rank} on {len(TARGETS)} projections ({sum(p.numel() for p in params) / 1e6:.2f} M parameters), "
        f"{device.type}" + (f" with {str(half).removeprefix('torch.')} autocast" if device.type == "cuda" else ""))
    return Setup(unet, latents, tokens, scheduler, device, half if device.type == "cuda" else None, params)


# ---- 6. one step -------------------------------------------------------------------------------------------------
def draw(s: Setup, cfg: StyleTrainConfig, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """A batch from the caches: z_0 (B, C, c, c) (random crops when ``cfg.crop``), tokens, t (B,), eps."""
    import torch

    idx = torch.randint(0, len(s.latents), (cfg.batch,), generator=gen)
    z0 = s.latents[idx.to(s.device)]
    side = z0.shape[-1]
    c = side if cfg.crop is None else side * cfg.crop // cfg.resolution
    offsets = torch.randint(0, side - c + 1, (cfg.batch, 2), generator=gen)
    z0 = torch.stack([z[:, int(y):int(y) + c, int(x):int(x) + c] for z, (y, x) in zip(z0, offsets)])
    t = torch.randint(0, s.scheduler.config.num_train_timesteps, (cfg.batch,), generator=gen)
    eps = torch.randn(z0.shape, generator=gen)
    if cfg.offset_noise:  # offset noise (Guttenberg 2023): the schedule never hides an image's mean colour fully;
        # a bundle trained with it (the embedded one is) moves its mean colour only when taught with it too
        eps = eps + cfg.offset_noise * torch.randn((*z0.shape[:2], 1, 1), generator=gen)
    return z0, s.tokens[idx.to(s.device)], t.to(s.device), eps.to(s.device)


def loss_of(s: Setup, cfg: StyleTrainConfig, z0: torch.Tensor, tokens: torch.Tensor, t: torch.Tensor,
            eps: torch.Tensor) -> torch.Tensor:
    """The diffusion loss on one batch: the scheduler's target, min-SNR-γ weighted per sample."""
    import torch
    import torch.nn.functional as F
    from diffusers.training_utils import compute_snr

    sched = s.scheduler
    x_t = sched.add_noise(z0, eps, t)
    kind = sched.config.prediction_type
    target = {"epsilon": eps, "sample": z0}.get(kind)
    if target is None:
        target = sched.get_velocity(z0, eps, t)  # v_prediction
    with torch.autocast(s.device.type, dtype=s.autocast, enabled=s.autocast is not None):
        pred = s.unet(x_t.to(s.unet.dtype), t, encoder_hidden_states=tokens).sample
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    if cfg.snr_gamma is None:
        return per_sample.mean()
    snr = compute_snr(sched, t)
    weight = torch.clamp(snr, max=cfg.snr_gamma) / snr  # eps target; v and z_0 targets scale it as diffusers does
    if kind == "v_prediction":
        weight = torch.clamp(snr, max=cfg.snr_gamma) / (snr + 1)
    elif kind == "sample":
        weight = torch.clamp(snr, max=cfg.snr_gamma)
    return (per_sample * weight).mean()


# ---- 5. the time it will take ------------------------------------------------------------------------------------
def seconds_per_step(s: Setup, cfg: StyleTrainConfig) -> float:
    """Two timed forward and backward passes after a warm-up one, on a generator of their own and with the
    gradients thrown away: they change neither the LoRA nor the run's random draws."""
    import torch

    gen = torch.Generator().manual_seed(cfg.seed + 1)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        loss_of(s, cfg, *draw(s, cfg, gen)).backward()
        if s.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    for p in s.params:
        p.grad = None
    return float(np.mean(times[1:]))


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} hours" if seconds >= 5400 else f"{seconds / 60:.1f} minutes"


# ---- checkpoints (safetensors: tensors and numbers, no pickle) ------------------------------------------------------
def fingerprint(bundle, cfg: StyleTrainConfig, data: StyleSet) -> str:
    """What makes two runs the same run: the references' pixels and captions, the bundle and the settings that
    change any step (not ``steps``: a finished run may be continued)."""
    digest = hashlib.sha256(data.images.tobytes())
    keep = {k: v for k, v in dataclasses.asdict(cfg).items()
            if k not in ("steps", "checkpoint_every", "overwrite", "force", "cpu_limit_minutes", "folder", "device",
                         "bundle")}
    digest.update(json.dumps([data.captions, keep, bundle.identity()], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def save_checkpoint(path: Path, s: Setup, optim: torch.optim.Optimizer, gen: torch.Generator,
                    meta: dict[str, Any]) -> None:
    """The LoRA, AdamW's state, the generator's state, and ``meta`` (step, losses, ...) in one file, replaced
    atomically: a crash or a cancel leaves the previous checkpoint whole."""
    import torch
    from safetensors.torch import save_file

    tensors = {f"lora.{i}": p.detach().cpu().contiguous() for i, p in enumerate(s.params)}
    for i, state in optim.state_dict()["state"].items():
        for k, v in state.items():
            tensors[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    tensors["rng"] = gen.get_state()
    tmp = path.with_name(path.name + ".part")
    save_file(tensors, str(tmp), metadata={"meta": json.dumps(meta)})
    os.replace(tmp, path)


def load_checkpoint(path: Path, s: Setup, optim: torch.optim.Optimizer, gen: torch.Generator,
                    fingerprint: str) -> dict[str, Any]:
    """The checkpoint's state put back into the LoRA, AdamW and the generator, if it is one of the run
    ``fingerprint`` names (else ``BadParameter``); returns its meta."""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["meta"])
        if meta.get("fingerprint") != fingerprint:
            raise BadParameter("work", str(path.parent), "a work folder holding a checkpoint of this same training "
                               "(other images, captions, bundle or settings made the one there)",
                               hint="choose another work folder, or delete that one to start again")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    with torch.no_grad():
        for i, p in enumerate(s.params):
            p.copy_(tensors[f"lora.{i}"])
    state = optim.state_dict()
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, i, k = key.split(".", 2)
            state["state"].setdefault(int(i), {})[k] = v  # load_state_dict moves the moments to the device
    optim.load_state_dict(state)
    gen.set_state(tensors["rng"])
    return meta


# ---- the main path -----------------------------------------------------------------------------------------------
def train_style(cfg: StyleTrainConfig, work: Path, *, progress: Progress | None = None,
                cancelled: Callable[[], bool] | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (resuming from ``work``) and put the LoRA into the bundle; returns a summary: ``lora`` (its path),
    ``name``, ``bundle``, ``hash`` (sha256, 12 digits, as outputs record it), ``steps``, ``seconds`` (training
    time over all runs), ``loss`` (mean of the last steps), ``losses`` (per step), ``notes``."""
    import torch
    from peft.utils import get_peft_model_state_dict

    from ..bundle_add import add_lora
    from ..lora import file_hash

    bundle, cfg, data = check(cfg)  # 1
    for note in data.notes:
        log(f"style: {note}")
    s = setup(bundle, cfg, data, log)  # 2-4
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    optim = torch.optim.AdamW(s.params, lr=cfg.lr, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(cfg.seed)
    ckpt, key = work / CHECKPOINT, fingerprint(bundle, cfg, data)
    step, seconds, losses = 0, 0.0, []
    if ckpt.is_file():
        meta = load_checkpoint(ckpt, s, optim, gen, key)
        step, seconds, losses = int(meta["step"]), float(meta["seconds"]), list(meta["losses"])
        log(f"style: resuming at step {step} of {cfg.steps} from {ckpt}")

    rate = seconds_per_step(s, cfg)  # 5
    left = rate * max(0, cfg.steps - step)
    log(f"style: about {_duration(left)} for {cfg.steps - step} steps ({rate:.2f} s a step on {s.device.type})")
    if s.device.type == "cpu" and left > 60 * cfg.cpu_limit_minutes and not cfg.force:
        raise BadParameter("device", "cpu", f"a device that trains these {cfg.steps - step} steps within "
                           f"{cfg.cpu_limit_minutes:g} minutes; on this CPU they would take about {_duration(left)} "
                           f"({rate:.1f} s a step, measured)", hint="run it where a GPU is (it is used by itself), "
                           "lower --steps, --resolution or --rank, or pass --force to train on the CPU anyway")

    def checkpoint() -> None:
        save_checkpoint(ckpt, s, optim, gen, {"step": step, "seconds": seconds, "losses": losses,
                                              "fingerprint": key, "config": dataclasses.asdict(cfg)})

    scaler = torch.amp.GradScaler("cuda", enabled=s.autocast == torch.float16)
    while step < cfg.steps:  # 6
        if cancelled is not None and cancelled():
            if step and step % cfg.checkpoint_every:
                checkpoint()  # nothing trained is lost: the next run starts at this very step
            raise Cancelled(f"style training cancelled before step {step + 1} of {cfg.steps}; the checkpoint in "
                            f"{work} resumes it (the same command, or train_style with the same work folder)")
        started = time.perf_counter()
        for group in optim.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / (cfg.warmup + 1))
        loss = loss_of(s, cfg, *draw(s, cfg, gen))
        optim.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optim)
        torch.nn.utils.clip_grad_norm_(s.params, 1.0)
        scaler.step(optim)
        scaler.update()
        step += 1
        seconds += time.perf_counter() - started
        losses.append(round(loss.item(), 6))
        if progress is not None:
            progress(step, cfg.steps, losses[-1])
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            checkpoint()

    with tempfile.TemporaryDirectory(dir=work) as tmp:  # 7
        from diffusers import StableDiffusionPipeline

        layers = {k: v.detach().float().cpu() for k, v in get_peft_model_state_dict(s.unet).items()}
        StableDiffusionPipeline.save_lora_weights(tmp, unet_lora_layers=layers, safe_serialization=True)
        path = add_lora(bundle, tmp, cfg.name, replace=cfg.overwrite, replace_flag="--overwrite")
    tail = losses[-max(1, min(50, len(losses) // 5)):]
    summary = {"lora": str(path), "name": cfg.name, "bundle": bundle.name, "hash": file_hash(path), "steps": step,
               "seconds": round(seconds, 1), "loss": float(np.mean(tail)) if tail else float("nan"),
               "losses": losses, "images": len(data.paths), "resolution": cfg.resolution, "notes": data.notes}
    log(f"style: wrote {path} (sha256 {summary['hash']}) after {step} steps, {_duration(seconds)} of training; use "
        f"it with --lora {cfg.name}[:SCALE] --bundle {bundle.name}")
    return summary


def default_work(bundle_name: str | None, name: str) -> Path:
    """Where the CLI keeps a style's checkpoints: the user data folder, one per bundle and style."""
    from ..bundle import DEFAULT_BUNDLE, user_dir

    folder = Path(bundle_name).name if bundle_name else DEFAULT_BUNDLE
    return user_dir().parent / "training" / "style" / f"{folder}-{name}"

