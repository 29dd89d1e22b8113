"""Score distillation, measured: seconds per SDS step through our path next to a naive loop that calls
the VAE and the U-Net directly, and iterations per second of the whole asset loop (radiance field
render + SDS + Adam), with each row's peak memory.

    python benchmarks/sds.py                        # CPU, the embedded bundle, 32² and 64² renders
    python benchmarks/sds.py --gpu                  # random-weight SD1.5 architecture, 512² (64² latents),
                                                    # fp16 on CUDA (--device/--dtype override)

Rows:
  * ``sds step, sfumato``: ``encode_with_grad`` → ``sds_step`` with ``guided_eps`` (the shared Denoiser, CFG
    inside) → backward into a learnable image;
  * ``sds step, naive``: the same maths written the plain way: ``vae.encode``, ``DDPMScheduler.add_noise``,
    one ``unet`` call on the doubled batch, CFG, ``z.backward(gradient=w·(ε̂ − ε))``;
  * ``asset iteration``: ``threed.asset.optimise`` (render, SDS, regularisers, Adam), rgb and latent renders.

On the CPU each row runs in its own process, so its peak resident memory (``ru_maxrss``, model loading
included) is its own; on CUDA the peak is ``torch.cuda.max_memory_allocated`` per row.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def load(args):
    device = torch.device(args.device)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    if args.gpu:
        from image import random_models  # benchmarks/image.py

        return random_models("sd15", device, dtype)
    from sfumato.core.bundle import resolve
    from sfumato.core.loading import load_models

    return load_models(resolve(args.bundle), device, dtype)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeat: int, device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sds_ours(models, size: int, guidance: float):
    from sfumato.threed.sds import SDSConfig, alphas_cumprod, encode_with_grad, guided_eps, sds_step

    models.unet.requires_grad_(False)
    models.vae.requires_grad_(False)
    image = torch.rand(1, 3, size, size, device=models.device, requires_grad=True)
    eps = guided_eps(models, "red brick wall", "", guidance)
    alphas, cfg, g = alphas_cumprod(models), SDSConfig(guidance=guidance), torch.Generator().manual_seed(0)

    def step():
        image.grad = None
        z = encode_with_grad(models, image.to(models.dtype)).float()
        sds_step(eps, z, alphas, cfg, generator=g).loss.backward()

    return step


def sds_naive(models, size: int, guidance: float):
    """The plain way: tokenizer, text encoder, VAE and U-Net called directly, CFG on a doubled batch."""
    from diffusers import DDPMScheduler

    unet, vae = models.unet.requires_grad_(False), models.vae.requires_grad_(False)
    tok, enc = models.tokenizers[0], models.text_encoders[0]
    sched = DDPMScheduler(**{k: v for k, v in models.scheduler_config.items()
                             if k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")})
    with torch.no_grad():
        ids = tok(["", "red brick wall"], padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids.to(models.device)
        context = enc(ids)[0].to(models.dtype)
    image = torch.rand(1, 3, size, size, device=models.device, requires_grad=True)
    ab = sched.alphas_cumprod.to(models.device)
    g = torch.Generator().manual_seed(0)

    def step():
        image.grad = None
        z = vae.encode((image * 2 - 1).to(vae.dtype)).latent_dist.mean * vae.config.scaling_factor
        t = torch.randint(20, 980, (1,), generator=g)
        noise = torch.randn(z.shape, generator=g).to(z)
        with torch.no_grad():
            z_t = sched.add_noise(z.detach(), noise, t.to(z.device))
            out = unet(torch.cat([z_t] * 2), t.to(z.device), encoder_hidden_states=context).sample
            uncond, cond = out.chunk(2)
            grad = (1 - ab[t]).to(z.dtype) * (uncond + guidance * (cond - uncond) - noise)
        z.backward(gradient=grad)

    return step


def asset_rate(models, size: int, render: str, iters: int) -> float:
    from sfumato.core.checks import checked
    from sfumato.threed.asset import AssetRequest, optimise

    req = checked(AssetRequest(prompt="red brick wall", iters=iters, resolution=size, seed=0, render=render,
                               preview_every=0))
    optimise(AssetRequest(**{**req.__dict__, "iters": 2}), models, seed=0)  # warm-up
    sync(models.device)
    start = time.perf_counter()
    optimise(req, models, seed=0)
    sync(models.device)
    return (time.perf_counter() - start) / iters


def run_row(args) -> dict:
    torch.set_num_threads(args.threads)
    models = load(args)
    device = models.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    kind, size = args.row.split(":")
    size = int(size)
    with torch.enable_grad():
        if kind == "ours":
            sec = timed(sds_ours(models, size, args.guidance), args.repeat, device)
        elif kind == "naive":
            sec = timed(sds_naive(models, size, args.guidance), args.repeat, device)
        else:
            sec = asset_rate(models, size, kind.split("-")[1], args.iters)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"row": args.row, "seconds": sec, "peak_mib": peak, "device": str(device), "dtype": args.dtype,
            "bundle": models.bundle.name}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--gpu", action="store_true", help="random-weight SD1.5 at 512² on CUDA in fp16")
    p.add_argument("--bundle", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--sizes", default=None, help="render sizes, px (default 32,64 on the CPU; 512 with --gpu)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--iters", type=int, default=10, help="asset iterations timed per row")
    p.add_argument("--guidance", type=float, default=50.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--row", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    args.device = args.device or ("cuda" if args.gpu else "cpu")
    args.dtype = args.dtype or ("fp16" if args.gpu else "fp32")
    if args.row:
        print("ROW " + json.dumps(run_row(args)), flush=True)
        return
    sizes = [int(s) for s in (args.sizes or ("512" if args.gpu else "32,64")).split(",")]
    rows = [f"{k}:{s}" for s in sizes for k in ("ours", "naive", "asset-rgb", "asset-latent")]
    passthrough = [a for a in sys.argv[1:]]
    results = []
    for row in rows:
        if torch.device(args.device).type == "cuda":  # one process: the peak is reset per row
            args.row = row
            results.append(run_row(args))
            args.row = None
            continue
        r = subprocess.run([sys.executable, __file__, *passthrough, "--row", row], capture_output=True, text=True)
        line = [x for x in r.stdout.splitlines() if x.startswith("ROW ")]
        if not line:
            sys.exit(f"row {row} failed:\n{r.stderr[-3000:]}")
        results.append(json.loads(line[0][4:]))
    first = results[0]
    print(f"\nSDS on {first['device']} ({first['dtype']}, {args.threads} thread(s)), bundle {first['bundle']}, "
          f"guidance {args.guidance}, torch {torch.__version__}\n")
    print("| render | row | s / iteration | it/s | peak MiB |")
    print("|---:|---|---:|---:|---:|")
    names = {"ours": "SDS step, sfumato (VAE encode + U-Net, CFG)", "naive": "SDS step, naive diffusers calls",
             "asset-rgb": "asset iteration, rgb render (NeRF + SDS + Adam)",
             "asset-latent": "asset iteration, latent render"}
    for r in results:
        kind, size = r["row"].split(":")
        print(f"| {size}² | {names[kind]} | {r['seconds']:.4f} | {1 / r['seconds']:.2f} | {r['peak_mib']:.0f} |")


if __name__ == "__main__":
    main()
