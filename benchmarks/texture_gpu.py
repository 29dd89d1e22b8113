"""Texture head on a GPU: random-weight SD1.5 architecture + depth ControlNet, 8 views at 512², 20 steps.

    python benchmarks/texture_gpu.py        # needs CUDA; prints the time of two jobs on the house mesh

The first job includes CUDA-graph capture and cuDNN autotuning; the second (with fill views) shows the
warm cost per view. Speed does not depend on the weights, so random weights measure the real model.
"""
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from diffusers import ControlNetModel  # noqa: E402
from image import random_models  # noqa: E402
from texture import house  # noqa: E402

from sfumato.core.quiet import quiet_libraries  # noqa: E402
from sfumato.threed.mesh import load_mesh  # noqa: E402
from sfumato.threed.texture import TextureRequest, texture  # noqa: E402


def main() -> None:
    quiet_libraries()
    dev = torch.device("cuda")
    models = random_models("sd15", dev, torch.float16)
    with torch.device(dev):
        models.controlnet = ControlNetModel.from_unet(models.unet).to(torch.float16).eval()
    mesh_path = Path(tempfile.mkdtemp(prefix="sfumato-texture-gpu-")) / "house.glb"
    house().export(mesh_path)
    mesh = load_mesh(mesh_path)
    print(torch.cuda.get_device_name(), "faces", len(mesh.faces), flush=True)
    for fill in (0, 4):
        req = TextureRequest(mesh=str(mesh_path), prompt="weathered red brick house", views=8, resolution=512,
                             texture_size=1024, steps=20, seed=1, fill_views=fill)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        r = texture(req, models, mesh=mesh)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(f"8 views + up to {fill} fill views at 512², texture 1024: {dt:.1f} s total, {len(r.views)} views "
              f"({dt / len(r.views):.2f} s/view), conditioning {r.metadata['conditioning']}, "
              f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)


if __name__ == "__main__":
    main()
