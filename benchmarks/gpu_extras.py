"""GPU checks of the newer paths on random-weight SD1.5 (CUDA, fp16), each against the eager path in one process:

    python benchmarks/gpu_extras.py            # on a GPU machine (benchmarks/gpu_check.sh --extras runs it)
    python benchmarks/gpu_extras.py --dry      # any machine: tiny sizes, to check the script

* regional prompts (``core/regions.py``, per-slot projection texturing): the fast path's (CUDA graph) mixed noise
  prediction against eager, and the time of one regional call with K regions against one plain guided call;
* LoRA on the fast path: a peft LoRA loaded by ``core/lora.py``, graph against eager, and a re-scale re-captures
  (the output follows the new scale, not the captured one).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def _timed(fn, device, repeat: int = 20) -> float:
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def regional(models, size: int) -> None:
    from sfumato.core import text
    from sfumato.core.denoiser import Denoiser, make_conditioning
    from sfumato.core.regions import RegionalDenoiser

    device, f = models.device, models.vae_scale_factor
    r = size // f
    prompts = ["red brick wall", "dark grey slate roof", "green lawn"]
    conds = [make_conditioning(models, *text.encode_pair(models, p, ""), 1, 7.5, width=size, height=size)
             for p in prompts]
    g = torch.Generator(device="cpu").manual_seed(0)
    masks = torch.rand(len(prompts), 1, r, r, generator=g)
    masks = (masks / masks.sum(0, keepdim=True)).to(device, models.dtype)
    x = torch.randn(1, 4, r, r, generator=g).to(device, models.dtype)
    t = torch.tensor(500, device=device)
    eager, fast = Denoiser(models, fast="off"), Denoiser(models, fast="on")
    a = RegionalDenoiser(eager, conds, masks)(x, t)
    b = RegionalDenoiser(fast, conds, masks)(x, t)
    b = RegionalDenoiser(fast, conds, masks)(x, t)  # the captured graph's replay
    separate = sum(m * eager(x, t, c) for m, c in zip(masks, conds))  # K guided calls, mixed: the same thing
    print(f"regional ({len(prompts)} regions, {size}²): fast vs eager max |Δε| {float((a - b).abs().max()):.4f}; "
          f"vs {len(prompts)} separate guided calls mixed {float((a - separate).abs().max()):.4f}")
    plain = _timed(lambda: fast(x, t, conds[0]), device)
    mixed = _timed(lambda: RegionalDenoiser(fast, conds, masks)(x, t), device)
    print(f"  one call, fast path: plain guided {plain * 1e3:.1f} ms · regional K={len(prompts)} {mixed * 1e3:.1f} ms "
          f"({mixed / plain:.2f}x; K separate guided calls would be {len(prompts)}x)")


def lora(models, size: int, folder: Path) -> None:
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from sfumato.core import lora as loras
    from sfumato.core.image import ImageRequest, generate

    donor = models.unet.__class__.from_config(models.unet.config).to(models.device, models.dtype)
    donor.add_adapter(LoraConfig(r=8, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                 init_lora_weights="gaussian"))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in donor.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.05)
    StableDiffusionPipeline.save_lora_weights(folder / "style", unet_lora_layers=get_peft_model_state_dict(donor),
                                              safe_serialization=True)
    del donor
    steps = 6

    def image(fast: str, scale: float):
        req = ImageRequest(prompt="a house", seed=3, steps=steps, width=size, height=size, fast=fast,
                           loras=(f"{folder / 'style'}:{scale}",))
        loras.apply(models, req.loras)
        return torch.from_numpy(np.asarray(generate(req, models)[0].image).astype("float32"))

    none = ImageRequest(prompt="a house", seed=3, steps=steps, width=size, height=size, fast="on")
    loras.apply(models, ())
    base = torch.from_numpy(np.asarray(generate(none, models)[0].image).astype("float32"))
    rows = []
    for scale in (1.0, 0.5):
        eager, fast = image("off", scale), image("on", scale)
        rows.append((scale, float((eager - fast).abs().max()), float((fast - base).abs().mean())))
    for scale, diff, moved in rows:
        print(f"LoRA at scale {scale}: fast vs eager max |Δ| {diff:.0f}/255 · mean change from no LoRA {moved:.1f}/255")


def main() -> None:
    from image import random_models

    from sfumato.core.quiet import quiet_libraries

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry", action="store_true")
    args = p.parse_args()
    quiet_libraries()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.float16 if cuda else torch.float32
    if args.dry and not cuda:
        from image import bundle_models

        models = bundle_models(None, device, dtype)
        size = 64
    else:
        models, size = random_models("sd15", device, dtype), 512
    print(f"models: {'random SD1.5' if size == 512 else 'tiny'} on {device} {dtype}")
    for name, run in (("regional", lambda: regional(models, size)),
                      ("lora", lambda: lora(models, size, Path(tempfile.mkdtemp(prefix="sfumato-lora-"))))):
        try:
            run()
        except Exception as exc:  # one check failing must not hide the others' numbers
            print(f"{name}: FAILED {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
