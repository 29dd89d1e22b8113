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

A bundle is data from elsewhere, so nothing in it is taken on trust: every path its manifest names (a
component's folder, a listed file, a shard) and every file a loader opens must stay inside the bundle's folder
(no absolute path, no ``..``, no link leading out); each weight file must hash to the manifest's sha256 before
it is used (checked on first use, and again whenever its size or times change: the verified state is cached in
the user cache folder, so a warm start reads no weights twice); and each component's config must be a JSON
object whose sizes (layers, channels, heads, sample size, ...) are bounded, so a config cannot make a model
that takes all memory while being built, or send a loader to a model hub.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
    "controlnet_normal": ("diffusers", "ControlNetModel"),  # added with `sfumato bundle add` (core/bundle_add.py)
    "controlnet_lineart": ("diffusers", "ControlNetModel"),
    "controlnet_canny": ("diffusers", "ControlNetModel"),
    "motion_adapter": ("diffusers", "MotionAdapter"),
    "maps": ("sfumato", "MapNet"),  # colour -> height, normal, roughness (core/maps.py)
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


def is_embedded(path: Path) -> bool:
    return Path(path).resolve().is_relative_to(embedded_dir().resolve())


def loras_dir(bundle: "Bundle") -> Path:
    """Where a bundle's LoRAs are: its own ``loras/`` folder; for the embedded bundle, which the engine never changes
    (it ships with it), a folder in the user's data beside the user bundles: ``<data>/loras/<bundle name>/``, so a
    studio's styles trained on the default bundle are named in jobs just as any bundle's."""
    if is_embedded(bundle.path):
        return user_dir().parent / "loras" / bundle.name
    return bundle.path / "loras"


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
        """A component's folder, checked before anything reads it: its files inside the bundle, its weights
        as the manifest hashed them, its config bounded (``check_component``)."""
        if component not in self.components:
            raise BundleCorrupt(self.path, f"has no {component!r} component; present: "
                                f"{', '.join(sorted(self.components))}")
        return check_component(self, component)

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
        _check_listing(path, manifest.get("files", {}))
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
        inside(path, sub, path / MANIFEST)
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
            weight_map = _read_json(idx).get("weight_map", {})
            if not isinstance(weight_map, dict):
                raise BundleCorrupt(idx, "weight_map must map tensor names to shard file names")
            return [inside(folder.resolve(), s, idx) for s in sorted({str(v) for v in weight_map.values()})]
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
    """Check every file the bundle holds: paths inside it, weight headers and truncation, and (with
    ``check_hashes``) the sha256 of every file the manifest lists, hashed now whatever the cache says (the
    verified state is cached afterwards). Weight files of a bundle without a manifest have no hash to compare
    with: their sha256 is reported. Returns readable lines; raises ``BundleCorrupt`` on the first problem."""
    report = []
    listed = bundle.manifest.get("files") or {}
    for rel, meta in sorted(listed.items()):
        f = _listed_file(bundle.path, rel, meta)
        if check_hashes:
            _check_hash(f, meta["sha256"], trust_cache=False)
            report.append(f"{rel}: sha256 ok")
    for component in bundle.components:
        folder = bundle.component_dir(component)
        for entry in sorted(folder.iterdir()):
            inside(bundle.path, str(entry.relative_to(bundle.path)), entry)
        if component.startswith("tokenizer") or component == "scheduler":
            continue
        for f in component_weights(folder, allow_pickle=True):
            rel = str(f.relative_to(bundle.path))
            if f.suffix == ".safetensors":
                report.append(f"{rel}: {len(read_header(f))} tensors, header ok")
            if check_hashes and rel not in listed:
                report.append(f"{rel}: sha256 {sha256(f)} (no manifest entry to compare with)")
    return report


# ---- trust: paths inside the bundle, weights as hashed, configs bounded --------------------------------
_SHA256 = re.compile(r"[0-9a-f]{64}")


def inside(root: Path, rel: Any, where: Path) -> Path:
    """``root / rel`` when it names something inside ``root`` (a resolved folder): no absolute path, no
    ``..`` and no symbolic link that leads out. ``where`` is the file that named it, for the error."""
    root = Path(root).resolve()
    if not isinstance(rel, str) or not rel or "\0" in rel or len(rel) > 1024 or os.path.isabs(rel):
        shown = rel[:100] if isinstance(rel, str) else rel
        raise BundleCorrupt(where, f"path {shown!r} is not allowed: a relative path inside the bundle's folder")
    target = (root / rel).resolve()
    if not target.is_relative_to(root):
        named = Path(os.path.normpath(root / rel))
        if named.is_relative_to(root):  # the name stays inside: a link on the way leads out
            where, rel = named, str(named.relative_to(root))
        raise BundleCorrupt(where, f"path {rel!r} leads out of the bundle's folder (to {target})",
                            hint="a bundle's components and files must stay inside its folder; links are "
                            "followed and checked too")
    return root / rel


def _check_listing(path: Path, files: Any) -> None:
    """The manifest's ``files``: relative paths inside the bundle, each with a sha256 (and a size)."""
    where = path / MANIFEST
    if not isinstance(files, dict):
        raise BundleCorrupt(where, 'files must map relative paths to {"sha256": ..., "bytes": ...}')
    for rel, meta in files.items():
        inside(path, rel, where)
        if not (isinstance(meta, dict) and isinstance(meta.get("sha256"), str)
                and _SHA256.fullmatch(meta["sha256"])):
            raise BundleCorrupt(where, f"files[{rel!r}] needs a sha256 of 64 lowercase hex digits")
        size = meta.get("bytes")
        if size is not None and not (type(size) is int and size >= 0):
            raise BundleCorrupt(where, f"files[{rel!r}].bytes={size!r}; allowed: a whole number of bytes")


def _listed_file(root: Path, rel: str, meta: dict[str, Any]) -> Path:
    f = inside(root, rel, root / MANIFEST)
    if not f.is_file():
        raise BundleCorrupt(f, "file listed in the manifest is missing")
    size = f.stat().st_size
    if meta.get("bytes") is not None and size != meta["bytes"]:
        raise BundleCorrupt(f, f"size {size} bytes differs from the manifest's {meta['bytes']} (truncated or "
                            "replaced)")
    return f


def check_component(bundle: Bundle, component: str) -> Path:
    """The component's folder, after checking that its folder and every file in it stay inside the bundle,
    that its config is bounded (``check_config``) and that every weight file a loader would open is listed in
    the manifest (when it lists files) with the sha256 it has now. A pickle the manifest does not list is left
    to the loader, which refuses it unless the caller allows pickles."""
    folder = inside(bundle.path, bundle.components[component], bundle.path / MANIFEST)
    if not folder.is_dir():
        raise BundleCorrupt(folder, f"folder of component {component!r} is missing")
    for entry in folder.iterdir():
        inside(bundle.path, str(entry.relative_to(bundle.path.resolve())), entry)
    if component != "scheduler" and not component.startswith("tokenizer"):
        check_config(folder / "config.json")
    listed = bundle.manifest.get("files") or {}
    if not listed or component.startswith("tokenizer") or component == "scheduler":
        return folder
    for f in component_weights(folder, allow_pickle=True):
        rel = str(f.relative_to(bundle.path.resolve())).replace(os.sep, "/")
        if rel not in listed and is_pickle(f):
            continue  # unlisted pickles load only with allow_pickle, the user's own word that they trust them
        if rel not in listed:
            raise BundleCorrupt(f, "weight file is not listed in the bundle's manifest, so its sha256 cannot be "
                                "checked", hint="rebuild the manifest from files you trust, or remove the file")
        _check_hash(_listed_file(bundle.path, rel, listed[rel]), listed[rel]["sha256"])
    return folder


# the limits of what a config may ask a model to be: each at least 1, far above every Stable Diffusion model
# (SDXL: 10 transformer layers, 1280 channels, 2048-wide cross-attention, a 1024-pixel VAE sample size)
CONFIG_LIMITS = {
    "layers_per_block": 8, "transformer_layers_per_block": 16, "block_out_channels": 8192,
    "attention_head_dim": 4096, "num_attention_heads": 4096, "cross_attention_dim": 8192, "sample_size": 4096,
    "in_channels": 64, "out_channels": 64, "latent_channels": 64, "norm_num_groups": 512,
    "conditioning_channels": 64, "conditioning_embedding_out_channels": 8192,
    "projection_class_embeddings_input_dim": 16384, "addition_time_embed_dim": 8192, "time_embedding_dim": 16384,
    "encoder_hid_dim": 16384, "num_class_embeds": 100_000, "motion_layers_per_block": 8,
    "motion_transformer_layers_per_block": 16, "motion_num_attention_heads": 4096, "motion_max_seq_length": 4096,
    "motion_mid_block_layers_per_block": 8,
    "hidden_size": 16384, "intermediate_size": 65536, "num_hidden_layers": 128, "vocab_size": 1_000_000,
    "max_position_embeddings": 8192, "projection_dim": 16384,
}
_BLOCK_LISTS = ("down_block_types", "up_block_types")
MAX_BLOCKS = 8  # entries of a per-block list (block_out_channels, down_block_types, ...)


def check_config(path: Path) -> dict[str, Any]:
    """A component's ``config.json`` as a JSON object whose model-sizing values are whole numbers within
    ``CONFIG_LIMITS`` (lists of them, per block); raises ``BundleCorrupt`` naming the key and the limit."""
    config = _read_json(path)
    for key, hi in CONFIG_LIMITS.items():
        value = config.get(key)
        if value is None:
            continue
        items = value if isinstance(value, list) else [value]
        flat = [x for v in items for x in (v if isinstance(v, list) else [v])]
        if not (1 <= len(items) <= MAX_BLOCKS * 2 and len(flat) <= 64
                and all(type(x) is int and 1 <= x <= hi for x in flat)):
            shown = repr(value)[:80]
            raise BundleCorrupt(path, f"{key}={shown} is not allowed: a whole number 1..{hi} (or a list of up "
                                f"to {MAX_BLOCKS} per block)", hint="the config is damaged or not a Stable "
                                "Diffusion component's")
    for key in _BLOCK_LISTS:
        value = config.get(key)
        if value is not None and not (isinstance(value, list) and 1 <= len(value) <= MAX_BLOCKS
                                      and all(isinstance(v, str) and len(v) <= 100 for v in value)):
            raise BundleCorrupt(path, f"{key}={repr(value)[:80]} is not allowed: a list of 1..{MAX_BLOCKS} "
                                "block type names")
    return config


# ---- the verified state, cached per user: (size, mtime, ctime) -> sha256 ------------------------------
_VERIFIED: dict[str, list] = {}  # this process's, by resolved path: [bytes, mtime_ns, ctime_ns, sha256]
MAX_CACHED = 4096


def cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sfumato" / "verified.json"


def _stamp(path: Path) -> list:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _load_cache() -> dict[str, list]:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}  # no cache yet, or a damaged one: hash again
    return {k: v for k, v in data.items() if isinstance(v, list) and len(v) == 4} if isinstance(data, dict) else {}


def _save_cache(entries: dict[str, list]) -> None:
    path = cache_file()
    data = _load_cache()
    data.update(entries)
    data = dict(list(data.items())[-MAX_CACHED:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home: the next process hashes again


def _check_hash(f: Path, expected: str, *, trust_cache: bool = True) -> None:
    """``f``'s sha256 is ``expected``: taken from the cache while the file's size and times are those it was
    verified with, else hashed (and the result cached)."""
    key = str(f.resolve())
    stamp = _stamp(f)
    if trust_cache:
        known = _VERIFIED.get(key) or _load_cache().get(key)
        if known is not None and known[:3] == stamp and known[3] == expected:
            _VERIFIED[key] = known
            return
    digest = sha256(f)
    if digest != expected:
        _VERIFIED.pop(key, None)
        raise BundleCorrupt(f, f"sha256 {digest[:16]}… differs from the manifest's {expected[:16]}… (file changed "
                            "or corrupt); it was not loaded", hint="copy the bundle again from its source")
    _VERIFIED[key] = [*stamp, digest]
    _save_cache({key: _VERIFIED[key]})


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
    config = folder / "config.json"
    if config.is_file():  # diffusers writes where the model was loaded from: a path of this machine, not of the bundle
        settings = json.loads(config.read_text())
        if settings.pop("_name_or_path", None) is not None:
            config.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    if type(model).__name__ != "CLIPTextModel":
        return
    for f in folder.glob("*.safetensors"):
        tensors = load_file(str(f))
        if any(not k.startswith("text_model.") for k in tensors):
            renamed = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in tensors.items()}
            save_file(renamed, str(f), metadata={"format": "pt"})
