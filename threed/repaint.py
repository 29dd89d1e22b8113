"""Paint some faces again: a finished projection texture is kept except on the faces of a second mesh.

``texture_in`` is the texture the mesh wears (on the mesh's own UVs); ``repaint`` is a mesh holding only the faces
to paint again, with the same UVs (the add-on exports the Edit-Mode selection so). Their UV triangles, grown by a
two-texel gutter, are the texels to paint; every other texel starts the bake as known and seen head-on, so each
view holds it exactly (its latents are put back after every step, the projection head's *keep* region: masked
denoising) and only the repainted faces are generated, in the light of what surrounds them. Views that see no
repainted texel are skipped. At the end, kept texels are copied from ``texture_in`` byte for byte.

With an inpainting U-Net (9 input channels, e.g. an imported SD 1.5 inpainting checkpoint) each view is also told
what to paint: its mask is every pixel it does not keep, over its starting image with those pixels blanked
(``view_inpaint``, ``core/inpaint.py``); the kept latents are still put back after every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..core import inpaint as inpainting
from ..core.errors import BadParameter
from ..core.loading import Models
from ..core.schema import TextureRequest
from .mesh import Mesh, load_mesh
from .raster import rasterize_uv

GUTTER = 2  # texels grown around the repainted faces, so their borders blend into what is kept


@dataclass
class Repaint:
    original: torch.Tensor  # (3, T, T) texture_in, in [0, 1]
    redo: torch.Tensor  # (T, T) bool: texels painted again

    @property
    def keep(self) -> torch.Tensor:
        return ~self.redo


def load(req: TextureRequest, mesh: Mesh) -> Repaint:
    """The texture to keep and the texels to paint again, checked against ``mesh`` (before any model loads)."""
    from PIL import Image

    if mesh.uv is None:
        raise BadParameter("repaint", req.repaint, "a repaint of a mesh with UVs (texture_in lies on them); "
                           f"{mesh.source} has none")
    part = load_mesh(req.repaint, max_faces=req.max_faces)
    if part.uv is None:
        raise BadParameter("repaint", req.repaint, "a mesh with the same UVs as mesh; this one has none")
    size = req.texture_size
    try:
        with Image.open(req.texture_in) as image:
            image.draft("RGB", (size, size))
            rgb = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), np.float32) / 255
    except OSError as exc:
        raise BadParameter("texture_in", req.texture_in, f"a readable image ({exc})") from None
    redo = rasterize_uv(part.uv, part.faces, size).mask[0]
    redo = F.max_pool2d(redo.float()[None, None], 2 * GUTTER + 1, stride=1, padding=GUTTER)[0, 0] > 0
    if not bool(redo.any()):
        raise BadParameter("repaint", req.repaint, "faces that cover some of the texture; these cover no texel")
    return Repaint(torch.from_numpy(rgb).permute(2, 0, 1).contiguous(), redo)


def start(bake, repaint: Repaint) -> None:
    """Every kept texel known, with the colour of ``texture_in``, as if a view had seen it head-on."""
    keep = repaint.keep.float()
    bake.colour = repaint.original * keep
    bake.weight = keep.clone()
    bake.best = keep.clone()


def views_needed(texel_vis: torch.Tensor, repaint: Repaint) -> list[int]:
    """The views that see some texel to paint again."""
    return [i for i in range(len(texel_vis)) if bool((texel_vis[i] > 0)[repaint.redo].any())]


def finish(colour: torch.Tensor, repaint: Repaint) -> torch.Tensor:
    """The painted texture with every kept texel exactly as it was."""
    return torch.where(repaint.redo[None], colour, repaint.original)


def method(models: Models) -> str:
    """How kept pixels are held: with an inpainting U-Net that is shown them, or by masked denoising alone."""
    return "inpainting-unet" if inpainting.extra_channels(models) else "masked-denoising"


def view_inpaint(models: Models, base: torch.Tensor, keep: torch.Tensor,
                 generator: torch.Generator) -> inpainting.Inpaint | None:
    """An inpainting U-Net's condition for one view: paint every pixel of ``keep`` (R, R) that is False, over
    ``base`` (3, R, R), the view's starting image, with those pixels blanked; None for a plain U-Net."""
    if not inpainting.extra_channels(models):
        return None
    paint = (~keep)[None, None].float().to(models.device)
    return inpainting.condition(models, base[None].to(models.device), paint, [generator])
