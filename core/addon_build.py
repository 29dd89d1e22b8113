"""Build the Blender add-on's installable extension zip (``sfumato addon build``).

Blender's own extension builder (``blender --command extension build``) is a standard-library
script that ships inside Blender and inside the ``bpy`` wheel; when it is found it builds and
validates the zip exactly as Blender would, with Blender's list of valid tags. Without Blender the
zip is written here: the manifest and the add-on's files at the archive root, caches left out,
after checking the manifest fields Blender requires.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

from .errors import SfumatoError

ADDON_DIR = Path(__file__).resolve().parent.parent / "addon"
SCHEMA = Path(__file__).resolve().parent / "schema.py"  # standard library only: the add-on loads it in Blender
MANIFEST = "blender_manifest.toml"
REQUIRED = ("schema_version", "id", "version", "name", "tagline", "maintainer", "type", "blender_version_min",
            "license")
ALWAYS_EXCLUDED = ("__pycache__", "*.pyc", ".*", "*.zip")


class AddonBuildError(SfumatoError):
    code = "addon_build"


def read_manifest(source: Path = ADDON_DIR) -> dict:
    path = Path(source) / MANIFEST
    try:
        with open(path, "rb") as fh:
            manifest = tomllib.load(fh)
    except FileNotFoundError:
        raise AddonBuildError(f"{path} does not exist", hint="build from a checkout that has addon/") from None
    except tomllib.TOMLDecodeError as exc:
        raise AddonBuildError(f"{path} is not valid TOML: {exc}") from None
    missing = [key for key in REQUIRED if key not in manifest]
    if missing:
        raise AddonBuildError(f"{path} lacks {', '.join(missing)}", hint="Blender requires these manifest fields")
    return manifest


def blender_builder() -> tuple[Path, Path] | None:
    """(blender_ext.py, tags.py) from an installed ``bpy`` wheel, found without importing bpy."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.origin:
        return None
    root = Path(spec.origin).parent
    for script in sorted(root.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"), reverse=True):
        tags = script.parents[3] / "modules" / "_bpy_internal" / "extensions" / "tags.py"
        return script, tags
    return None


def _output_path(output: Path, manifest: dict) -> Path:
    output = Path(output)
    if output.suffix.lower() == ".zip":
        return output
    return output / f"{manifest['id']}-{manifest['version']}.zip"


def build_addon(output: Path, source: Path = ADDON_DIR, *, use_blender: bool = True) -> Path:
    """Build the extension zip from ``source`` (the add-on folder) and the engine's request schema (as
    ``schema.py``, which the add-on reads its limits and defaults from) at ``output`` (a .zip path, or a folder
    to put ``<id>-<version>.zip`` in); returns the zip's path."""
    source = Path(source).resolve()
    manifest = read_manifest(source)
    target = _output_path(output, manifest).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target.unlink()
    with tempfile.TemporaryDirectory(prefix="sfumato-addon-") as staging:
        staged = Path(staging) / source.name
        shutil.copytree(source, staged, ignore=shutil.ignore_patterns(*ALWAYS_EXCLUDED))
        shutil.copyfile(SCHEMA, staged / "schema.py")
        return _build(staged, target, manifest, use_blender)


def _build(source: Path, target: Path, manifest: dict, use_blender: bool) -> Path:
    builder = blender_builder() if use_blender else None
    if builder is not None:
        script, tags = builder
        cmd = [sys.executable, str(script), "build", "--source-dir", str(source), "--output-filepath", str(target)]
        if tags.is_file():
            cmd += ["--valid-tags", str(tags)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=source)
        if proc.returncode != 0 or not target.is_file():
            detail = (proc.stdout + proc.stderr).strip().splitlines()
            raise AddonBuildError(f"Blender's extension build failed: {detail[-1] if detail else proc.returncode}",
                                  hint=f"ran {' '.join(cmd)}")
        return target
    return _zip(source, target, manifest)


def _zip(source: Path, target: Path, manifest: dict) -> Path:
    """The manifest and every file of the add-on at the archive root, as Blender's builder lays it out."""
    patterns = list(ALWAYS_EXCLUDED) + list(manifest.get("build", {}).get("paths_exclude_pattern", []))

    def excluded(rel: Path) -> bool:
        return any(fnmatch.fnmatch(part, pat.strip("/")) for part in rel.parts for pat in patterns)

    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(source / MANIFEST, MANIFEST)
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source)
            if path.is_file() and rel.as_posix() != MANIFEST and not excluded(rel):
                zf.write(path, rel.as_posix())
    os.replace(tmp, target)
    return target
