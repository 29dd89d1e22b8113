"""Sfumato for Blender: offline diffusion images, textures, turntable videos and 3D assets.

A Blender 4.2+ extension (``blender_manifest.toml``) that also works as a legacy add-on. It never
imports torch or the engine: it starts ``python -m sfumato.worker`` with the engine's Python and
talks to it through ``client.py`` (standard library only). Importing this package does not import
``bpy``; ``register`` does, so the Blender-free modules (engine, request, depth, sheet) can be tested
anywhere.
"""

from __future__ import annotations

import sys

bl_info = {  # read only when enabled as a legacy add-on; the manifest is what extensions use
    "name": "Sfumato",
    "author": "Sfumato developers",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "3D Viewport > Sidebar > Sfumato",
    "description": "Offline diffusion: images, textures, turntables and 3D assets",
    "category": "Render",
}

API_ALIAS = "sfumato_api"  # scripts: `import sfumato_api` once the add-on is enabled


def _modules():
    from . import batch_ui, ops, prefs, props, runtime, slot_table, styles, ui, upscaling

    return (props, prefs, runtime, slot_table, ops, upscaling, styles, ui, batch_ui)


def register() -> None:
    for module in _modules():
        module.register()
    from . import api

    sys.modules[API_ALIAS] = api


def unregister() -> None:
    from . import api

    if sys.modules.get(API_ALIAS) is api:
        del sys.modules[API_ALIAS]
    for module in reversed(_modules()):
        module.unregister()
