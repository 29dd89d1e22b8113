"""Speed, side by side in one process: diffusers' pipeline, our loop plain, our loop fast.

    python benchmarks/speed.py                      # CPU: the embedded bundle at 256² and the tiny bundle
    python benchmarks/speed.py --arch sd15          # GPU: random-weight SD1.5 architecture, 512², 20 steps
    python benchmarks/speed.py --arch sdxl          # GPU: random-weight SDXL architecture, 1024², 20 steps
    python benchmarks/speed.py --arch sd15 --profile auto   # where one image's time goes (any device)
    python benchmarks/speed.py --cpu-knobs          # CPU: plus threads, memory format, bfloat16 (--cpu-compile)
    python benchmarks/speed.py --arch sd15 --size 256 --unet-only   # CPU: the U-Net call rows for SD1.5

Rows: ``diffusers`` (StableDiffusionPipeline / StableDiffusionXLPipeline on the same modules), ``plain``
(our loop, ``fast="off"``), ``fast`` (our loop, CUDA graphs; on a CPU with native bfloat16 a bfloat16 U-Net
for U-Nets of 5 M parameters and more, else the same as plain). Columns:
seconds per image (median of ``--repeat`` after a warm-up), images per second for a batch of 4
variations, first-image latency of a fresh process-like state (graphs dropped first, so capture is
included), peak GPU memory, and the largest pixel difference to the plain path. Speed does not depend on
the weights, so random weights measure real architectures. ``--cpu-knobs`` adds what threads,
channels-last memory format and bfloat16 do on the CPU (``--cpu-compile``: and torch.compile).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from image import bundle_models, random_models  # noqa: E402  (one builder for every benchmark)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeat: int, device: torch.device) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeat):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run(models, size: int, steps: int, guidance: float, repeat: int, label: str, compile: bool = False) -> list[dict]:
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from sfumato.core.image import ImageRequest, generate
    from sfumato.core.schedulers import make_scheduler

    m, device = models, models.device
    prompt, seed = "a timber pavilion by a lake, dusk", 1
    scheduler = make_scheduler("dpmpp_2m", m.scheduler_config)
    common = dict(vae=m.vae, text_encoder=m.text_encoders[0], tokenizer=m.tokenizers[0], unet=m.unet, scheduler=scheduler)
    if m.is_sdxl:
        pipe = StableDiffusionXLPipeline(**common, text_encoder_2=m.text_encoders[1], tokenizer_2=m.tokenizers[1])
    else:
        pipe = StableDiffusionPipeline(**common, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def theirs(n: int = 1):
        return pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, width=size, height=size,
                    num_images_per_prompt=n, generator=[torch.Generator().manual_seed(seed + i) for i in range(n)]).images

    def ours(fast: str, n: int = 1):
        req = ImageRequest(prompt=prompt, seed=seed, steps=steps, guidance=guidance, width=size, height=size,
                           scheduler="dpmpp_2m", n=n, batch_size=n, fast=fast)
        return [g.image for g in generate(req, models)]

    rows = []
    reference = None
    candidates = [("diffusers pipeline", theirs), ("sfumato plain", lambda n=1: ours("off", n)),
                  ("sfumato fast", lambda n=1: ours("auto", n))]
    if compile:
        candidates.append(("sfumato fast+compile", lambda n=1: ours("compile", n)))
    for name, fn in candidates:
        models.extras.pop("graphs", None)  # first-image latency from a cold state: capture included
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        sync(device)
        t0 = time.perf_counter()
        first = fn()
        sync(device)
        latency = time.perf_counter() - t0
        per_image, images = timed(fn, repeat, device)
        per_batch, _ = timed(lambda fn=fn: fn(4), max(1, repeat // 2), device)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        image = np.asarray(images[0], np.float32)
        if name == "sfumato plain":
            reference = image
        rows.append({"row": name, "s_per_image": per_image, "images_per_s_batch4": 4 / per_batch,
                     "first_image_s": latency, "peak_gib": peak, "image": image})
        del first
    for r in rows:
        r["max_diff_vs_plain"] = float(np.abs(r.pop("image") - reference).max())
    graphs = models.extras.get("graphs")
    print(f"\n{label}")
    print(f"{'row':20} {'s/image':>8} {'img/s (batch 4)':>16} {'first image s':>14} {'peak GiB':>9} "
          f"{'max px diff vs plain':>21} {'speed-up':>9}")
    base = rows[0]["s_per_image"]
    for r in rows:
        print(f"{r['row']:20} {r['s_per_image']:8.3f} {r['images_per_s_batch4']:16.2f} {r['first_image_s']:14.2f} "
              f"{r['peak_gib']:9.2f} {r['max_diff_vs_plain']:21.0f} {base / r['s_per_image']:8.2f}x")
    if graphs is not None:
        for e in graphs.events:
            print(f"  captured {e['what']} {e['shape'][:60]}: {e}")
    return rows


def profile(models, size: int, steps: int, guidance: float, fast: str, repeat: int) -> None:
    """Where one image's time goes: text encoding, the denoiser calls (U-Net, guidance batch), the rest of the
    loop (scheduler steps, latents handling) and the VAE decode, timed around each call with the device
    synchronised; then the profiler's top operators over the same image."""
    from collections import Counter, defaultdict

    from sfumato.core import denoiser as dn
    from sfumato.core import latents, text
    from sfumato.core.image import ImageRequest, generate

    device = models.device
    seconds: dict[str, float] = defaultdict(float)
    calls: Counter = Counter()

    def wrap(owner, name: str, label: str):
        original = getattr(owner, name)

        def timed_call(*a, **k):
            sync(device)
            t0 = time.perf_counter()
            out = original(*a, **k)
            sync(device)
            seconds[label] += time.perf_counter() - t0
            calls[label] += 1
            return out

        setattr(owner, name, timed_call)
        return owner, name, original

    req = ImageRequest(prompt="a timber pavilion by a lake, dusk", seed=1, steps=steps, guidance=guidance,
                       width=size, height=size, scheduler="dpmpp_2m", fast=fast)
    generate(req, models)  # warm-up: capture, autotuning, compilation
    patches = [wrap(text, "encode_pair", "text encoders"), wrap(dn.Denoiser, "__call__", "denoiser (U-Net)"),
               wrap(latents, "decode", "VAE decode")]
    try:
        total = 0.0
        for _ in range(repeat):
            sync(device)
            t0 = time.perf_counter()
            generate(req, models)
            sync(device)
            total += time.perf_counter() - t0
    finally:
        for owner, name, original in patches:
            setattr(owner, name, original)
    total /= repeat
    print(f"\nprofile: fast={fast}, {size}², {steps} steps, mean of {repeat} images: {total:.3f} s/image")
    rest = total - sum(seconds.values()) / repeat
    for label, sec in [*seconds.items(), ("rest (scheduler, loop, image out)", rest * repeat)]:
        n = calls.get(label, 0) // repeat
        per = f"{sec / repeat / n * 1000:8.2f} ms × {n}" if n else " " * 15
        print(f"  {label:34} {sec / repeat:7.3f} s {100 * sec / repeat / total:5.1f}%  {per}")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        generate(req, models)
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=12, max_name_column_width=48))


def cpu_knobs(models, size: int, steps: int, repeat: int, compile: bool = False, unet_only: bool = False) -> None:
    """What threads, memory format and bfloat16 do on the CPU: for a whole image (plain float32 contiguous,
    float32 channels-last, and the fast path: bfloat16 U-Net) and for the guided U-Net call alone;
    ``compile``: also ``torch.compile`` of that call, float32 and under bfloat16 autocast (minutes)."""
    import copy

    from sfumato.core import fast as fastpath
    from sfumato.core.image import ImageRequest, generate

    def image(fast: str):
        return generate(ImageRequest(prompt="red brick wall", seed=1, steps=steps, width=size, height=size,
                                     fast=fast), models)[0].image

    def formats(mf) -> None:
        models.unet.to(memory_format=mf)
        models.vae.to(memory_format=mf)
        models.unet.__dict__.pop("_sfumato_channels_last", None)  # the fast path converts it again (core/fast.py)

    print(f"\nCPU knobs, {size}² image, {steps} steps (median of {repeat}); bfloat16 probe: "
          f"{'on' if fastpath.cpu_bf16_helps() else 'off'} ({fastpath._cpu_bf16['speedup']:.1f}× on a conv + linear)")
    threads0 = torch.get_num_threads()
    reference = None
    for threads in sorted({1, threads0}) if not unet_only else []:
        torch.set_num_threads(threads)
        for label, mf, fast in (("float32 contiguous", torch.contiguous_format, "off"),
                                ("float32 channels-last", torch.channels_last, "off"),
                                ("fast path (auto)", torch.contiguous_format, "auto")):
            formats(mf)
            t, out = timed(lambda fast=fast: image(fast), repeat, models.device)
            out = np.asarray(out, np.float32)
            reference = out if reference is None else reference
            diff = np.abs(out - reference)
            print(f"  threads {threads}  {label:22} {t:7.2f} s/image   px diff vs first row: max {diff.max():3.0f}, "
                  f"mean {diff.mean():.2f}")
    formats(torch.contiguous_format)

    # the guided U-Net call alone (batch 2: unconditional + conditional), all threads
    torch.set_num_threads(threads0)
    unet = models.unet
    f = models.vae_scale_factor
    x = torch.randn(2, unet.config.in_channels, size // f, size // f)
    t = torch.tensor(500)
    text = torch.randn(2, 77, unet.config.cross_attention_dim)

    def call(module, bf16: bool, mf=torch.contiguous_format):
        xi = x.contiguous(memory_format=mf)

        def run():
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                return module(xi, t, encoder_hidden_states=text, return_dict=False)[0].float()
        return run

    cl = copy.deepcopy(unet).to(memory_format=torch.channels_last)

    def fast_path():  # what Denoiser runs on such a CPU: bfloat16 weight copies, channels-last, autocast
        xi = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            return fastpath.bf16_call(cl, xi, t, encoder_hidden_states=text, return_dict=False)[0].float()

    rows = [("float32", call(unet, False)), ("bfloat16 autocast (weights cast every call)", call(unet, True)),
            ("bfloat16 autocast, channels-last", call(cl, True, torch.channels_last)),
            ("bfloat16 weight copies, channels-last (fast path)", fast_path)]
    if compile:
        for label, bf16 in (("float32, torch.compile", False), ("bfloat16 autocast, torch.compile", True)):
            module = torch.compile(copy.deepcopy(unet), dynamic=False)
            started = time.perf_counter()
            call(module, bf16)()
            rows.append((f"{label} (compiled in {time.perf_counter() - started:.0f} s)", call(module, bf16)))
    print(f"  guided U-Net call alone, batch 2 at {size // f}² latents, {threads0} threads (median of {repeat * 3}):")
    base, ref = None, None
    for label, fn in rows:
        sec, out = timed(fn, repeat * 3, models.device)
        base, ref = base or sec, ref if ref is not None else out
        rel = float((out - ref).abs().max() / ref.abs().max())
        print(f"    {label:48} {sec * 1000:8.1f} ms  {base / sec:5.2f}×   max |diff| / max |out| {rel:.4f}")


def main() -> None:
    from sfumato.core.quiet import quiet_libraries
    from sfumato.core.device import pick_device, pick_dtype

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default=None, choices=["sd15", "sdxl"], help="random-weight architecture (GPU)")
    p.add_argument("--bundle", default=None, help="default on the CPU: the embedded bundle, then the tiny one")
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--cpu-knobs", action="store_true", help="threads, memory format, bfloat16 on the CPU")
    p.add_argument("--cpu-compile", action="store_true", help="with --cpu-knobs: torch.compile rows too (minutes)")
    p.add_argument("--unet-only", action="store_true", help="CPU: only the guided U-Net call rows of --cpu-knobs "
                   "(e.g. --arch sd15 --size 256, whose whole images take minutes on a CPU)")
    p.add_argument("--compile", action="store_true", help="add a row with fast='compile' (torch.compile too)")
    p.add_argument("--profile", default=None, choices=["off", "auto", "compile"],
                   help="instead of the table: where one image's time goes with this fast mode")
    args = p.parse_args()
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{time.strftime('%Y-%m-%d')} · {card} · torch {torch.__version__} · {str(dtype).replace('torch.', '')} · "
          f"{args.steps} steps · guidance {args.guidance} · dpmpp_2m")
    if args.arch:
        size = args.size or (1024 if args.arch == "sdxl" else 512)
        models = random_models(args.arch, device, dtype)
        if args.profile:
            profile(models, size, args.steps, args.guidance, args.profile, args.repeat)
            return
        if not args.unet_only:
            run(models, size, args.steps, args.guidance, args.repeat, f"random-weight {args.arch} at {size}²",
                compile=args.compile)
        if (args.cpu_knobs or args.unet_only) and device.type == "cpu":
            cpu_knobs(models, size, args.steps, args.repeat, compile=args.cpu_compile, unet_only=args.unet_only)
        return
    for name in ([args.bundle] if args.bundle else ["materials", None]):
        models = bundle_models(name, device, dtype)
        size = args.size or (256 if name == "materials" else int(models.unet.config.sample_size) * models.vae_scale_factor)
        if args.profile:
            profile(models, size, args.steps, args.guidance, args.profile, args.repeat)
            continue
        if not args.unet_only:
            run(models, size, args.steps, args.guidance, args.repeat, f"bundle {models.bundle.name} at {size}²")
        if (args.cpu_knobs or args.unet_only) and device.type == "cpu":
            cpu_knobs(models, size, args.steps, args.repeat, compile=args.cpu_compile, unet_only=args.unet_only)


if __name__ == "__main__":
    main()
