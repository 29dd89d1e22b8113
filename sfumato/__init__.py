"""Sfumato: an offline diffusion engine for Blender.

The engine lives in ``sfumato.core``; the heads in ``sfumato.video`` and ``sfumato.threed``.
This top package only carries the version so that nothing installs a top-level ``core``.
"""

__version__ = "0.1.0"
