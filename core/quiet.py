"""Keep diffusers' and transformers' chatter (progress bars, advisories) out of our output."""

from __future__ import annotations

import os


def quiet_libraries() -> None:
    """Offline, errors only, no progress bars: set before the libraries load their models."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
