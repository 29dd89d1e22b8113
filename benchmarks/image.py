"""Our sampling loop against diffusers' StableDiffusionPipeline: same models, same seed, one process.

    python benchmarks/image.py                        # tiny random bundle on the CPU (built in a temp dir)
    python benchmarks/image.py --bundle NAME          # any bundle
    python benchmarks/image.py --full                 # random-weight SD1.5 architecture (for a GPU):
                                                      # 512², 20 steps, guidance 7.5, fp16 on CUDA

Both paths share the loaded modules, so the numbers compare the loops, not the loading. Each is run
``--repeat`` times after one warm-up; the table shows the median seconds per image, the ratio, and the
largest pixel difference between the two images (they should agree to within 1/255 in fp32).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch



def random_models(arch: str, device: torch.device, dtype: torch.dtype):
    """SD1.5 or SDXL architecture with random weights, from the family configs this project ships."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from sfumato.core.bundle import Bundle
    from sfumato.core.loading import Models
    from sfumato.core.tokenizer_build import clip_merges, write_tokenizer

    families = Path(__file__).resolve().parent.parent / "core" / "families" / arch
    cfg = lambda name: json.loads((families / name).read_text())  # noqa: E731
    tmp = Path(tempfile.mkdtemp(prefix="sfumato-bench-"))
    tokenizer = CLIPTokenizer.from_pretrained(str(write_tokenizer(tmp / "tokenizer", clip_merges())))
    with torch.device(device):
        unet = UNet2DConditionModel.from_config(cfg("unet.json")).to(dtype)
        vae = AutoencoderKL.from_config(cfg("vae.json")).to(dtype)
        encoders = [CLIPTextModel(CLIPTextConfig(**cfg("text_encoder.json"))).to(dtype)]
        tokenizers = [tokenizer]
        if arch == "sdxl":
            encoders.append(CLIPTextModelWithProjection(CLIPTextConfig(**cfg("text_encoder_2.json"))).to(dtype))
            tokenizers.append(tokenizer)
    bundle = Bundle(path=tmp, name=f"random-{arch}", family=arch, components={}, manifest={"files": {}})
    return Models(bundle=bundle, device=device, dtype=dtype, unet=unet.eval(), vae=vae.eval(),
                  text_encoders=[e.eval() for e in encoders], tokenizers=tokenizers,
                  scheduler_config=cfg("scheduler.json"))


def bundle_models(name: str | None, device: torch.device, dtype: torch.dtype):
    from sfumato.core.bundle import resolve
    from sfumato.core.loading import load_models
    from sfumato.core.tiny import build_tiny_bundle

    if name is None:
        path = build_tiny_bundle(Path(tempfile.mkdtemp(prefix="sfumato-bench-")) / "tiny-sd15", "sd15")
        return load_models(resolve(str(path)), device, dtype)
    return load_models(resolve(name), device, dtype)


def timed(fns: dict, repeat: int, device: torch.device) -> dict[str, tuple[float, object]]:
    """Median seconds of each function, runs interleaved (a, b, a, b, ...) after one warm-up each, so a
    noisy neighbour on a shared machine slows both alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    outs = {k: fn() for k, fn in fns.items()}  # warm-up
    for _ in range(repeat):
        for name, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            outs[name] = fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {k: (statistics.median(times[k]), outs[k]) for k in fns}


def main() -> None:
    from diffusers import StableDiffusionPipeline

    from sfumato.core.quiet import quiet_libraries
    from sfumato.core.device import pick_device, pick_dtype
    from sfumato.core.image import ImageRequest, generate
    from sfumato.core.schedulers import make_scheduler

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=None)
    p.add_argument("--full", action="store_true", help="random-weight SD1.5 architecture")
    p.add_argument("--size", type=int, default=None)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--scheduler", default="dpmpp_2m")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    dtype = pick_dtype(device, args.dtype)
    models = random_models("sd15", device, dtype) if args.full else bundle_models(args.bundle, device, dtype)
    size = args.size or (512 if args.full else int(models.unet.config.sample_size) * models.vae_scale_factor)
    prompt, seed = "a timber pavilion by a lake, dusk", 1
    m = models
    pipe = StableDiffusionPipeline(vae=m.vae, text_encoder=m.text_encoders[0], tokenizer=m.tokenizers[0],
                                   unet=m.unet, scheduler=make_scheduler(args.scheduler, m.scheduler_config),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    def theirs():
        return pipe(prompt, num_inference_steps=args.steps, guidance_scale=args.guidance, width=size,
                    height=size, generator=torch.Generator().manual_seed(seed)).images[0]

    def ours():
        req = ImageRequest(prompt=prompt, seed=seed, steps=args.steps, guidance=args.guidance, width=size,
                           height=size, scheduler=args.scheduler)
        return generate(req, models)[0].image

    results = timed({"theirs": theirs, "ours": ours}, args.repeat, device)
    (t_theirs, img_theirs), (t_ours, img_ours) = results["theirs"], results["ours"]
    diff = np.abs(np.asarray(img_theirs, np.float32) - np.asarray(img_ours, np.float32)).max()
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"bundle {models.bundle.name} · {size}x{size} · {args.steps} steps · guidance {args.guidance} · "
          f"{args.scheduler} · {card} · {str(dtype).replace('torch.', '')} · median of {args.repeat}")
    print(f"{'path':34} {'s/image':>8} {'vs diffusers':>13}")
    print(f"{'diffusers StableDiffusionPipeline':34} {t_theirs:8.3f} {1.0:12.2f}x")
    print(f"{'sfumato loop':34} {t_ours:8.3f} {t_theirs / t_ours:12.2f}x")
    print(f"max pixel difference between the two images: {diff:.0f}/255")


if __name__ == "__main__":
    main()
