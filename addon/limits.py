"""The engine's request schema, the one place where every job field's type, default, bounds and help live.

The extension zip carries the engine's ``core/schema.py`` as ``schema.py`` beside this file (``sfumato addon
build`` copies it in); a development checkout, where this folder sits beside the engine's ``core/``, reads it
from there. It is standard-library Python with no imports from the engine, so Blender's Python loads it
without torch.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _load():
    try:
        from . import schema  # the extension zip's copy
        return schema
    except ImportError:
        pass
    source = Path(__file__).resolve().parent.parent / "core" / "schema.py"
    if not source.is_file():
        raise ImportError("the add-on's schema.py is missing: install the zip built by `sfumato addon build`")
    name = f"{__package__}.schema"
    spec = importlib.util.spec_from_file_location(name, source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their field types through sys.modules
    spec.loader.exec_module(module)
    return module


schema = _load()
