"""Bundles: offline model folders, found on a search path, described by a small manifest.

A bundle is a folder with diffusers-format subfolders (``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``, optional ``text_encoder_2/``, ``tokenizer_2/``, ``controlnet_depth/``,
``motion_adapter/``) and a manifest ``sfumato.json``::

    {"format": 1, "name": "...", "family": "sd15|sd21|sdxl|mini", "license": "...",
     "components": {"unet": "unet", ...}, "files": {"unet/diffusion_pytorch_model.safetensors":
     {"sha256": "...", "bytes": 123}}, ...}

A plain diffusers folder with ``model_index.json`` is accepted too: its components come from the
model index and its family from the configs.

Search path: the embedded ``bundles/`` folder of this project, then the user folder
(``$SFUMATO_BUNDLES``, else ``$XDG_DATA_HOME/sfumato/bundles``, else ``~/.local/share/sfumato/bundles``).
A bundle is named by its folder name, or given as a path.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BundleCorrupt, BundleNotFound, PickleRefused
from .safetensors_check import is_pickle, read_header, sha256
from .schema import DEFAULT_STEPS, MAX_STEPS

MANIFEST = "sfumato.json"
MANIFEST_FORMAT = 1
DEFAULT_BUNDLE = "materials"
FAMILIES = ("sd15", "sd21", "sdxl", "mini")

# component name -> (library, class) as diffusers' model_index.json spells them
COMPONENT_CLASSES = {
    "unet": ("diffusers", "UNet2DConditionModel"),
    "vae": ("diffusers", "AutoencoderKL"),
    "text_encoder": ("transformers", "CLIPTextModel"),
    "text_encoder_2": ("transformers", "CLIPTextModelWithProjection"),
    "tokenizer": ("transformers", "CLIPTokenizer"),
    "tokenizer_2": ("transformers", "CLIPTokenizer"),
    "scheduler": ("diffusers", None),
    "controlnet_depth": ("diffusers", "ControlNetModel"),
    "motion_adapter": ("diffusers", "MotionAdapter"),
}
REQUIRED = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHT_NAMES = ("diffusion_pytorch_model", "model")


def embedded_dir() -> Path:
    """The project's own ``bundles/`` folder (also inside an installed wheel as ``sfumato/bundles``)."""
    import sfumato.bundles

    return Path(sfumato.bundles.__file__).parent


def user_dir() -> Path:
    if os.environ.get("SFUMATO_BUNDLES"):
        return Path(os.environ["SFUMATO_BUNDLES"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "sfumato" / "bundles"


def search_path() -> list[Path]:
    return [embedded_dir(), user_dir()]


@dataclass
class Bundle:
    """A bundle found on disk; nothing loaded yet."""

    path: Path
    name: str
    family: str
    components: dict[str, str]  # component -> subfolder
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def has_manifest(self) -> bool:
        return bool(self.manifest)

    def component_dir(self, component: str) -> Path:
        if component not in self.components:
            raise BundleCorrupt(self.path, f"has no {component!r} component; present: "
                                f"{', '.join(sorted(self.components))}")
        return self.path / self.components[component]

    @property
    def default_steps(self) -> int:
        """Sampling steps for a job that names none: the manifest's ``default_steps`` (what the bundle was
        measured to need, e.g. 4 for a distilled model), else ``DEFAULT_STEPS``."""
        return int(self.manifest.get("default_steps") or DEFAULT_STEPS)

    def identity(self) -> str:
        """A short hash naming these exact weights, for provenance."""
        files = self.manifest.get("files")
        if files:
            digest = hashlib.sha256(json.dumps({k: v["sha256"] for k, v in sorted(files.items())}).encode())
        else:
            digest = hashlib.sha256()
            for f in sorted(weight_files(self)):
                st = f.stat()
                digest.update(f"{f.relative_to(self.path)}:{st.st_size}:{st.st_mtime_ns}".encode())
        return digest.hexdigest()[:12]

    def summary(self) -> dict[str, Any]:
        size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
        return {
            "name": self.name,
            "path": str(self.path),
            "family": self.family,
            "components": sorted(self.components),
            "license": self.manifest.get("license", "unknown"),
            "description": self.manifest.get("description", ""),
            "bytes": size,
            "hash": self.identity(),
            "manifest": self.has_manifest,
            "training": self.manifest.get("training"),
            "default_steps": self.default_steps,
        }


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleCorrupt(path, "file is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleCorrupt(path, f"is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BundleCorrupt(path, "is not a JSON object")
    return data


def infer_family(path: Path, components: dict[str, str]) -> str:
    if "text_encoder_2" in components:
        return "sdxl"
    cfg = path / components.get("text_encoder", "text_encoder") / "config.json"
    if cfg.is_file():
        hidden = _read_json(cfg).get("hidden_size")
        if hidden == 1024:
            return "sd21"
        if hidden == 768:
            return "sd15"
    return "mini"


def open_bundle(path: Path) -> Bundle:
    """Read a bundle folder's manifest (or model index) and check its required components exist."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise BundleNotFound(f"bundle folder {path} does not exist")
    if (path / MANIFEST).is_file():
        manifest = _read_json(path / MANIFEST)
        if manifest.get("format") != MANIFEST_FORMAT:
            raise BundleCorrupt(path / MANIFEST, f"format={manifest.get('format')!r}; this sfumato reads "
                                f"format {MANIFEST_FORMAT}")
        components = manifest.get("components") or {}
        if not isinstance(components, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                       for k, v in components.items()):
            raise BundleCorrupt(path / MANIFEST, "components must map component names to subfolder names, "
                                'e.g. {"unet": "unet"}')
        family = manifest.get("family") or infer_family(path, components)
        name = manifest.get("name") or path.name
        steps = manifest.get("default_steps")
        if steps is not None and not (type(steps) is int and 1 <= steps <= MAX_STEPS):
            raise BundleCorrupt(path / MANIFEST, f"default_steps={steps!r}; allowed: an integer 1..{MAX_STEPS}")
        if not isinstance(name, str) or not isinstance(family, str):
            raise BundleCorrupt(path / MANIFEST, "name and family must be strings")
    elif (path / "model_index.json").is_file():
        index = _read_json(path / "model_index.json")
        # only the components we use: feature_extractor, safety_checker and the like are ignored
        components = {k: k for k, v in index.items()
                      if k in COMPONENT_CLASSES and isinstance(v, list) and v and v[0] is not None}
        if (path / "controlnet_depth").is_dir():
            components["controlnet_depth"] = "controlnet_depth"
        manifest, family, name = {}, infer_family(path, components), path.name
    else:
        raise BundleNotFound(f"{path} is not a bundle: it has neither {MANIFEST} nor model_index.json")
    if family not in FAMILIES:
        raise BundleCorrupt(path / MANIFEST, f"family={family!r}; allowed: {', '.join(FAMILIES)}")
    for component in REQUIRED:
        if component not in components:
            raise BundleCorrupt(path, f"component {component!r} is not listed",
                                hint=f"a bundle needs {', '.join(REQUIRED)}")
    for component, sub in components.items():
        if not (path / sub).is_dir():
            raise BundleCorrupt(path / sub, f"folder of component {component!r} is missing")
        if component != "tokenizer" and not component.startswith("tokenizer") and \
                not (path / sub / "config.json").is_file() and not (path / sub / "scheduler_config.json").is_file():
            raise BundleCorrupt(path / sub, "has no config.json")
    return Bundle(path=path, name=name, family=family, components=components, manifest=manifest)


def find_bundles() -> list[Bundle]:
    """Every readable bundle on the search path, embedded first; broken ones are skipped here."""
    found, seen = [], set()
    for root in search_path():
        if not root.is_dir():
            continue
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            if not ((sub / MANIFEST).is_file() or (sub / "model_index.json").is_file()):
                continue
            try:
                bundle = open_bundle(sub)
            except (BundleCorrupt, BundleNotFound, OSError):
                continue
            if bundle.name not in seen:
                seen.add(bundle.name)
                found.append(bundle)
    return found


def resolve(name_or_path: str | os.PathLike | None) -> Bundle:
    """A bundle by name on the search path, or by folder path; ``None`` gives the default bundle."""
    if name_or_path is None or name_or_path == "":
        name_or_path = os.environ.get("SFUMATO_DEFAULT_BUNDLE") or DEFAULT_BUNDLE
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir() and (os.sep in str(name_or_path) or candidate.is_absolute()
                               or (candidate / MANIFEST).is_file() or (candidate / "model_index.json").is_file()):
        return open_bundle(candidate)
    for root in search_path():
        if (root / str(name_or_path)).is_dir():
            return open_bundle(root / str(name_or_path))
    names = [b.name for b in find_bundles()]
    for bundle in find_bundles():
        if bundle.name == name_or_path:
            return bundle
    where = " or ".join(str(p) for p in search_path())
    raise BundleNotFound(
        f"bundle={str(name_or_path)!r} was not found in {where}; available: "
        f"{', '.join(names) if names else 'none'}",
        hint="list them with `sfumato bundle list`, build a tiny one with `sfumato bundle make-tiny`, or "
        "import a checkpoint with `sfumato bundle import FILE --family sd15`",
    )


def weight_files(bundle: Bundle) -> list[Path]:
    files = []
    for sub in bundle.components.values():
        for f in sorted((bundle.path / sub).iterdir()):
            if f.suffix == ".safetensors" or is_pickle(f):
                files.append(f)
    return files


def component_weights(folder: Path, *, allow_pickle: bool = False) -> list[Path]:
    """The weight files of one component folder, safetensors preferred; refuse a pickle-only one."""
    folder = Path(folder)
    index = [folder / f"{n}.safetensors.index.json" for n in WEIGHT_NAMES]
    for idx in index:
        if idx.is_file():
            shards = sorted(set(_read_json(idx).get("weight_map", {}).values()))
            return [folder / s for s in shards]
    plain = [folder / f"{n}.safetensors" for n in WEIGHT_NAMES if (folder / f"{n}.safetensors").is_file()]
    if plain:  # the plain file wins over variants (fp16, non_ema, ...), as in diffusers
        return plain[:1]
    safe = sorted(f for f in folder.glob("*.safetensors"))
    if len(safe) == 1:
        return safe
    if safe:
        raise BundleCorrupt(folder, f"several weight variants and no plain file: "
                            f"{', '.join(f.name for f in safe)}", hint="keep one, or rename the one to use to "
                            "diffusion_pytorch_model.safetensors (model.safetensors for text encoders)")
    pickles = sorted(f for f in folder.iterdir() if is_pickle(f))
    if pickles:
        if not allow_pickle:
            raise PickleRefused(pickles[0])
        return pickles
    raise BundleCorrupt(folder, "has no weight file (expected *.safetensors)")


def verify(bundle: Bundle, *, check_hashes: bool = True) -> list[str]:
    """Check every weight file: header, truncation and (with a manifest) size and sha256.

    Returns a list of human-readable lines of what was checked; raises ``BundleCorrupt`` on the first
    problem.
    """
    report = []
    listed = bundle.manifest.get("files", {})
    for rel, meta in sorted(listed.items()):
        f = bundle.path / rel
        if not f.is_file():
            raise BundleCorrupt(f, "file listed in the manifest is missing")
        if f.stat().st_size != meta.get("bytes", f.stat().st_size):
            raise BundleCorrupt(f, f"size {f.stat().st_size} bytes differs from the manifest's "
                                f"{meta['bytes']} (truncated or replaced)")
    for component in bundle.components:
        if component.startswith("tokenizer") or component == "scheduler":
            continue
        for f in component_weights(bundle.component_dir(component)):
            if f.suffix == ".safetensors":
                tensors = read_header(f)
                report.append(f"{f.relative_to(bundle.path)}: {len(tensors)} tensors, header ok")
            rel = str(f.relative_to(bundle.path))
            if check_hashes and rel in listed:
                digest = sha256(f)
                if digest != listed[rel]["sha256"]:
                    raise BundleCorrupt(f, f"sha256 {digest[:16]}… differs from the manifest's "
                                        f"{listed[rel]['sha256'][:16]}… (file changed or corrupt)")
                report.append(f"{rel}: sha256 ok")
    return report


def write_manifest(folder: Path, *, name: str, family: str, license: str, description: str = "",
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``sfumato.json`` for a folder of diffusers subfolders, hashing every weight file."""
    folder = Path(folder)
    components = {c: c for c in COMPONENT_CLASSES if (folder / c).is_dir()}
    files = {}
    for sub in components.values():
        for f in sorted((folder / sub).glob("*.safetensors")):
            files[str(f.relative_to(folder))] = {"sha256": sha256(f), "bytes": f.stat().st_size}
    manifest = {"format": MANIFEST_FORMAT, "name": name, "family": family, "license": license,
                "description": description, "components": components, "files": files, **(extra or {})}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def save_component(model: Any, folder: Path) -> None:
    """``save_pretrained`` in safetensors, with a CLIP text model's tensors named as on the hub.

    transformers 5 saves ``CLIPTextModel`` without its ``text_model.`` level; older transformers (and
    other tools) need it, and transformers 5 reads either. So we write the widely readable layout.
    """
    from safetensors.torch import load_file, save_file

    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    if type(model).__name__ != "CLIPTextModel":
        return
    for f in folder.glob("*.safetensors"):
        tensors = load_file(str(f))
        if any(not k.startswith("text_model.") for k in tensors):
            renamed = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in tensors.items()}
            save_file(renamed, str(f), metadata={"format": "pt"})
