"""Shared fixtures: tiny bundles built once per session with ``save_pretrained``, offline, 1 thread."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def bundle_root(tmp_path_factory) -> Path:
    """A user bundle folder holding tiny-sd15 and tiny-sdxl; SFUMATO_BUNDLES points at it."""
    from sfumato.core.tiny import build_tiny_bundle

    root = tmp_path_factory.mktemp("bundles")
    build_tiny_bundle(root / "tiny-sd15", "sd15")
    build_tiny_bundle(root / "tiny-sdxl", "sdxl")
    os.environ["SFUMATO_BUNDLES"] = str(root)
    return root


@pytest.fixture(scope="session")
def sd15(bundle_root) -> Path:
    return bundle_root / "tiny-sd15"


@pytest.fixture(scope="session")
def sdxl(bundle_root) -> Path:
    return bundle_root / "tiny-sdxl"


@pytest.fixture(scope="session")
def sd15_models(sd15):
    from sfumato.core.bundle import open_bundle
    from sfumato.core.loading import load_models

    return load_models(open_bundle(sd15), torch.device("cpu"), torch.float32, need_controlnet=True)


@pytest.fixture(scope="session")
def sdxl_models(sdxl):
    from sfumato.core.bundle import open_bundle
    from sfumato.core.loading import load_models

    return load_models(open_bundle(sdxl), torch.device("cpu"), torch.float32, need_controlnet=True)


def load_client():
    """The stdlib-only worker client, imported by file path as Blender would (no package __init__)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("sfumato_client", ROOT / "addon" / "client.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sfumato_client"] = module
    spec.loader.exec_module(module)
    return module
