"""The reference images of a style and their captions, read and checked before any model loads.

``read_style_set(folder, resolution, caption, trigger)`` is the whole story:

1. **Find the images**: the folder's PNG, JPEG, WebP, TIFF and BMP files (not its subfolders), sorted by name so
   the same folder gives the same order, hence the same training run. None is an error; fewer than
   ``RECOMMENDED_IMAGES[0]`` is a warning (a single image is learnt as that one picture, not a style); more than
   ``MAX_IMAGES`` is refused (pick the best: more of the same teaches nothing a LoRA of this size can hold).
2. **Check each header before decoding**: a file that is not an image, or a decompression bomb (a few hundred
   bytes that claim 30000² pixels), is refused by ``core.image.check_image_file``; an image over ``MAX_PIXELS``
   is refused with its size, before its pixels are read.
3. **Caption each image**: its sidecar ``NAME.txt`` when there is one (used as it is: the user wrote it), else
   the template with ``{trigger}`` replaced by the trigger word (by default the style's name), so the style is
   called up by a word that means nothing else to the text encoder.
4. **Make them square**: every image is centre-cropped to a square and resized to ``resolution``² (Lanczos); when
   the images are not all that size already, a note says so, with the sizes found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import BadParameter
from ..schema import STYLE_CAPTION

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
RECOMMENDED_IMAGES = (5, 50)  # what the feature is made for: a style from a handful of references
MAX_IMAGES = RECOMMENDED_IMAGES[1]
MAX_PIXELS = 64 * 1024 * 1024  # per reference image (8192²): a reference is scaled down to a few hundred pixels
DEFAULT_CAPTION = STYLE_CAPTION  # the job's default (core/schema.py)
TRIGGER = "{trigger}"


@dataclass
class StyleSet:
    """The references, ready to encode: images (N, resolution, resolution, 3) uint8 and one caption each."""

    images: np.ndarray
    captions: list[str]
    paths: list[Path]
    notes: list[str] = field(default_factory=list)  # what was done to the input, said to the user


def find_images(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder``, by name; refuses a missing folder and one with no images."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise BadParameter("folder", str(folder), "an existing folder of reference images")
    found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)
    if not found:
        others = sorted(p.name for p in path.iterdir())[:5]
        raise BadParameter("folder", str(folder), f"a folder holding {RECOMMENDED_IMAGES[0]} to "
                           f"{RECOMMENDED_IMAGES[1]} reference images ({', '.join(EXTENSIONS)}); it holds "
                           + (f"no image files (e.g. {', '.join(others)})" if others else "nothing"))
    if len(found) > MAX_IMAGES:
        raise BadParameter("folder", str(folder), f"at most {MAX_IMAGES} reference images; it holds {len(found)}",
                           hint="keep the ones that show the style best in a folder of their own")
    return found


def check_header(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header alone; a non-image, a decompression bomb or an image over
    ``MAX_PIXELS`` is refused before a pixel is decoded."""
    from ..image import check_image_file

    check_image_file("folder", str(path))  # not an image, or over PIL's bomb limit: refused from the header
    with Image.open(path) as im:  # header only: PIL decodes on ``load``
        width, height = im.size
    if width * height > MAX_PIXELS:
        raise BadParameter("folder", str(path), f"reference images of at most {MAX_PIXELS // 2**20} megapixels "
                           f"({int(MAX_PIXELS ** 0.5)}²); this one is {width}×{height} "
                           f"({width * height / 2**20:.0f} megapixels)", hint="scale it down first")
    return width, height


def caption_for(path: Path, template: str, trigger: str) -> str:
    """The sidecar ``.txt`` beside the image when it has words in it, else the template with the trigger."""
    sidecar = path.with_suffix(".txt")
    if sidecar.is_file():
        text = " ".join(sidecar.read_text(encoding="utf-8", errors="replace").split())
        if text:
            return text
    return template.replace(TRIGGER, trigger)


def check_caption(template: str, trigger: str) -> None:
    if TRIGGER not in template:
        raise BadParameter("caption", template, f"a caption template holding {TRIGGER} (the word the style is "
                           f"called up by), e.g. {DEFAULT_CAPTION!r}")
    if not trigger.strip() or len(trigger.split()) != 1:
        raise BadParameter("trigger", trigger, "one word, e.g. the style's name")


def square(image: Image.Image, resolution: int) -> np.ndarray:
    """The largest centred square of ``image``, resized to ``resolution``² (Lanczos), as (R, R, 3) uint8."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    image = image.crop((left, top, left + side, top + side))
    if side != resolution:
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def read_style_set(folder: str | Path, resolution: int, caption: str = DEFAULT_CAPTION,
                   trigger: str = "style") -> StyleSet:
    """Steps 1-4 of the module docstring: the checked, captioned, squared references of ``folder``."""
    check_caption(caption, trigger)
    paths = find_images(folder)
    sizes = [check_header(p) for p in paths]  # every header before any image is decoded
    notes = []
    if len(paths) == 1:
        notes.append(f"only one reference image ({paths[0].name}): the LoRA will learn that picture more than a "
                     f"style; {RECOMMENDED_IMAGES[0]} to {RECOMMENDED_IMAGES[1]} images work best")
    elif len(paths) < RECOMMENDED_IMAGES[0]:
        notes.append(f"{len(paths)} reference images: {RECOMMENDED_IMAGES[0]} to {RECOMMENDED_IMAGES[1]} work best")
    odd = sorted({s for s in sizes if s != (resolution, resolution)})
    if odd:
        shown = ", ".join(f"{w}×{h}" for w, h in odd[:4]) + (f" and {len(odd) - 4} more" if len(odd) > 4 else "")
        notes.append(f"{sum(s != (resolution, resolution) for s in sizes)} of {len(paths)} images are not "
                     f"{resolution}×{resolution} ({shown}): each is centre-cropped to a square and resized to "
                     f"{resolution}×{resolution}")
    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                images.append(square(im.convert("RGB"), resolution))
        except (OSError, ValueError, SyntaxError) as exc:
            raise BadParameter("folder", str(p), f"a readable image file: PNG, JPEG, TIFF, WebP ({exc})") from None
    captions = [caption_for(p, caption, trigger) for p in paths]
    sidecars = sum(p.with_suffix(".txt").is_file() for p in paths)
    notes.append(f"captions: {sidecars} from sidecar .txt files, {len(paths) - sidecars} from the template "
                 f"{caption.replace(TRIGGER, trigger)!r}")
    return StyleSet(np.stack(images), captions, paths, notes)
