"""A motion module offered to ``sfumato bundle add --as motion``: read, checked against the bundle's U-Net, written.

``video/adapter.py`` reads both layouts (a diffusers ``MotionAdapter`` folder or file, an original AnimateDiff
file such as ``mm_sd_v15_v2``, v1/v2/v3) and checks every tensor against the config; here the adapter must also
fit the bundle's U-Net (``motion.check_fits`` on the U-Net built on the meta device). A diffusers folder is copied
as it is; a single file is written as a diffusers ``MotionAdapter`` folder in its own precision.
``core/bundle_add.add_component`` stages, hashes and commits what the returned writer writes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..core.bundle import Bundle, component_weights
from ..core.bundle_add import FAMILY_NAMES, Writer, meta_unet, source_path
from ..core.errors import BadParameter
from .adapter import build_stack, read_motion_adapter, save_motion_adapter


def motion_writer(b: Bundle, source: str | os.PathLike) -> Writer:
    """Read and check the adapter now; return what writes it into the staged ``motion_adapter`` folder."""
    path = source_path(source)
    try:
        weights = read_motion_adapter(path, unet=meta_unet(b))
    except BadParameter as exc:  # made for another U-Net: say it for this bundle
        raise BadParameter("file", str(path), f"a motion module for {FAMILY_NAMES.get(b.family, b.family)}, the "
                           f"family of bundle {b.name}: {exc.field}={exc.value!r} does not fit ({exc.allowed})",
                           hint="use a motion module made for the bundle's family (mm_sd_v15* for SD 1.5, mm_sdxl* "
                           "for SDXL)") from None
    if path.is_dir():
        files = [path / "config.json", *component_weights(path), *path.glob("*.safetensors.index.json")]

        def copy(folder: Path) -> None:
            for f in files:
                shutil.copyfile(f, folder / f.name)
        return copy
    dtypes = [v.dtype for v in weights.state.values() if v.is_floating_point()]
    dtype = max(set(dtypes), key=dtypes.count)  # the file's own precision (fp16 for the released modules)

    def write(folder: Path) -> None:
        save_motion_adapter(build_stack(weights).to(dtype), folder)
    return write
