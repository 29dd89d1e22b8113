"""Train the PBR map network (``core/maps.py``) on procedural materials, on the CPU, resumably.

1. **Data**, made at run time, never stored: ``sample_surface(seed, size)`` for a random training seed and a
   tile size from ``sizes`` (so a feature's size in pixels varies), its ground-truth normals from the true
   height, then a random wrapped crop of ``crop`` pixels. Training seeds are below ``HELD_OUT``; evaluation
   and the benchmark use seeds from ``HELD_OUT`` up, which training never sees.
2. **Loss** per pixel: normals ``|n - n*|_1 + (1 - n·n*)`` (the L1 term keeps a gradient at small angles,
   where ``1 - cos θ ~ θ²/2`` has none), height ``|h - h*|``, roughness ``|r - r*|``.
3. **Optimiser**: AdamW, linear warm-up then cosine decay; an EMA of the weights is what ships.
4. **Checkpoints** every ``checkpoint_every`` steps in ``work/`` (a rerun of the same command resumes);
   ``export`` writes the EMA net in fp16 into a bundle's ``maps/`` and re-hashes its manifest.

``sfumato train maps`` runs it (``sfumato/cli.py``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..maps import COMPONENT, MapNet, MapNetConfig, save_map_net
from .materials import DATA_VERSION
from .surfaces import sample_surface, surface_normals

HELD_OUT = 10_000_000  # seeds at or above this are never trained on


@dataclass(frozen=True)
class MapTrainConfig:
    seed: int = 0
    steps: int = 1800
    batch: int = 16
    crop: int = 64  # training crops, pixels (a multiple of 8)
    sizes: tuple[int, ...] = (96, 128, 160)  # tile sizes drawn for training samples
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 1e-4
    ema_decay: float = 0.998
    normal_weight: float = 2.0
    validation_tiles: int = 48  # held-out 128 px tiles scored at each checkpoint
    threads: int = 1
    checkpoint_every: int = 100
    budget_minutes: float | None = None  # stop at the first checkpoint past this much training time
    net: MapNetConfig = MapNetConfig()


def batch_of(rng: np.random.Generator, cfg: MapTrainConfig) -> tuple[torch.Tensor, ...]:
    """x (B, 3, crop, crop) in [-1, 1]; height (B, crop, crop), normal (B, 3, crop, crop), roughness."""
    xs, hs, ns, rs = [], [], [], []
    for _ in range(cfg.batch):
        size = int(rng.choice(cfg.sizes))
        rgb, h, r, _ = sample_surface(int(rng.integers(0, HELD_OUT)), size)
        n = surface_normals(h)
        oy, ox = rng.integers(0, size, 2)
        crop = [np.roll(a, (-oy, -ox), (0, 1))[:cfg.crop, :cfg.crop] for a in (rgb, h, n, r)]
        xs.append(crop[0]), hs.append(crop[1]), ns.append(crop[2]), rs.append(crop[3])
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return (x, torch.from_numpy(np.stack(hs)), torch.from_numpy(np.stack(ns)).permute(0, 3, 1, 2),
            torch.from_numpy(np.stack(rs)))


def losses(net: MapNet, batch: tuple[torch.Tensor, ...], normal_weight: float) -> dict[str, torch.Tensor]:
    x, h_gt, n_gt, r_gt = batch
    h, n, r = MapNet.maps(net(x))
    normal = (n - n_gt).abs().sum(1).mean() + (1 - (n * n_gt).sum(1)).mean()
    out = {"normal": normal, "height": (h - h_gt).abs().mean(), "roughness": (r - r_gt).abs().mean()}
    out["total"] = normal_weight * normal + out["height"] + out["roughness"]
    return out


@torch.inference_mode()
def evaluate(net: MapNet, tiles: int) -> dict[str, float]:
    """Mean angular normal error (degrees) and roughness / height MAE on held-out 128 px tiles."""
    ang, rough, height = [], [], []
    for k in range(tiles):
        rgb, h_gt, r_gt, _ = sample_surface(HELD_OUT + 1_000_000 + k, 128)
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1
        h, n, r = MapNet.maps(net(x))
        cos = (n[0].permute(1, 2, 0).numpy() * surface_normals(h_gt)).sum(-1)
        ang.append(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())
        rough.append(np.abs(r[0].numpy() - r_gt).mean())
        height.append(np.abs(h[0].numpy() - h_gt).mean())
    return {"normal_deg": float(np.mean(ang)), "roughness_mae": float(np.mean(rough)),
            "height_mae": float(np.mean(height))}


class MapTrainer:
    def __init__(self, cfg: MapTrainConfig, work: Path, log=print):
        self.cfg, self.work, self.log = cfg, Path(work), log
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.net = MapNet(cfg.net)
        self.ema = copy.deepcopy(self.net).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW(self.net.parameters(), cfg.lr, weight_decay=cfg.weight_decay)
        self.step, self.seconds, self.history = 0, 0.0, []
        self.ckpt = self.work / "maps_checkpoint.pt"
        if self.ckpt.is_file():
            state = torch.load(self.ckpt, weights_only=True)  # our own file, tensors and numbers only
            self.net.load_state_dict(state["net"])
            self.ema.load_state_dict(state["ema"])
            self.opt.load_state_dict(state["opt"])
            self.step, self.seconds = int(state["step"]), float(state["seconds"])
            self.history = json.loads(state["history"])
            self.log(f"resumed at step {self.step} ({self.seconds / 60:.1f} min trained)")

    def lr_at(self, step: int) -> float:
        c = self.cfg
        if step < c.warmup:
            return c.lr * (step + 1) / c.warmup
        return c.lr * 0.5 * (1 + math.cos(math.pi * (step - c.warmup) / max(1, c.steps - c.warmup)))

    def save(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        tmp = self.ckpt.with_suffix(".part")
        torch.save({"net": self.net.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                    "step": self.step, "seconds": self.seconds, "history": json.dumps(self.history)}, tmp)
        os.replace(tmp, self.ckpt)

    def run(self) -> dict:
        c = self.cfg
        rng = np.random.default_rng([c.seed, self.step])  # a resumed run draws fresh samples
        while self.step < c.steps:
            t0 = time.time()
            for group in self.opt.param_groups:
                group["lr"] = self.lr_at(self.step)
            loss = losses(self.net, batch_of(rng, c), c.normal_weight)
            self.opt.zero_grad(set_to_none=True)
            loss["total"].backward()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
            self.opt.step()
            with torch.no_grad():
                d = min(c.ema_decay, (1 + self.step) / (10 + self.step))
                for pe, p in zip(self.ema.parameters(), self.net.parameters()):
                    pe.lerp_(p, 1 - d)
            self.step += 1
            self.seconds += time.time() - t0
            if self.step % 25 == 0:
                self.log(f"step {self.step} loss {loss['total'].item():.4f} normal {loss['normal'].item():.4f} "
                         f"height {loss['height'].item():.4f} rough {loss['roughness'].item():.4f} "
                         f"({self.seconds / self.step:.2f} s/step)")
            if self.step % c.checkpoint_every == 0 or self.step == c.steps:
                score = evaluate(self.ema, c.validation_tiles)
                self.history.append({"step": self.step, "minutes": round(self.seconds / 60, 1), **score})
                self.log(f"validation at {self.step}: {score}")
                self.save()
                if c.budget_minutes is not None and self.seconds > 60 * c.budget_minutes:
                    self.log(f"budget of {c.budget_minutes} min reached")
                    break
        return self.history[-1] if self.history else {}

    def export(self, bundle_dir: Path) -> Path:
        """Write the EMA net into ``bundle_dir/maps/`` and re-hash the bundle's manifest."""
        from ..bundle import MANIFEST, write_manifest

        last = self.history[-1] if self.history else {}
        training = {"command": "sfumato train maps", "data_version": DATA_VERSION, "steps": self.step,
                    "seconds": round(self.seconds), "hardware": f"{platform.machine()}, {self.cfg.threads} CPU "
                    f"thread(s), torch {torch.__version__}", "date": time.strftime("%Y-%m-%d"),
                    "validation": {k: round(v, 4) for k, v in last.items() if k not in ("step", "minutes")},
                    "config": asdict(self.cfg)}
        path = save_map_net(self.ema, Path(bundle_dir) / COMPONENT, {"training": training})
        manifest = json.loads((Path(bundle_dir) / MANIFEST).read_text())
        base = {"format", "name", "family", "license", "description", "components", "files"}
        extra = {k: v for k, v in manifest.items() if k not in base}
        write_manifest(Path(bundle_dir), name=manifest["name"], family=manifest["family"],
                       license=manifest["license"], description=manifest.get("description", ""), extra=extra)
        return path


def train_and_export(cfg: MapTrainConfig, work: Path, out: Path | None, log=print) -> dict:
    """Train (resuming from ``work``) and, unless ``out`` is None, export into the bundle folder ``out``."""
    trainer = MapTrainer(cfg, work, log=log)
    final = trainer.run()
    log(f"final: {final}")
    if out is not None:
        log(f"exported {trainer.export(out)}")
    return final
