"""From the panel's settings to an image, texture, turntable or asset job, and back from a result to a
history record.

Blender-free: the operators turn Blender properties into an ``ImageSettings``, ``TextureSettings``,
``TurntableSettings`` or ``AssetSettings`` (plain data), and everything else here (validation with
messages that name the field, the value and what is allowed; the job's params; the datablock's name;
its provenance properties; history records) is plain Python that tests reach without Blender.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# The engine's scheduler names (core/schedulers.py; "bundle" = the bundle's own); a test keeps them equal.
SCHEDULERS = ("bundle", "ddim", "ddpm", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "unipc", "lcm")
DEFAULT_SCHEDULER = "dpmpp_2m"
DEFAULT_BUNDLE = "materials"
IMAGE_MODES = ("text", "depth", "restyle")  # text-to-image, depth-guided, restyle the render (img2img)
MAX_SEED = 2**31 - 1  # Blender's IntProperty is 32-bit
STEPS_ALLOWED = "an integer 1..500, or 0 (or none) for the bundle's default"
HISTORY_LIMIT = 50

ImageMode = Literal["text", "depth", "restyle"]


class BadSetting(ValueError):
    """A setting the engine would refuse, caught before anything is rendered or sent."""

    def __init__(self, field: str, value: Any, allowed: str):
        super().__init__(f"{field}={value!r} is not allowed: {allowed}")
        self.field, self.value, self.allowed = field, value, allowed


class _Settings:
    """What every settings dataclass here shares: its field names, and a checked ``replace``."""

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any):
        unknown = sorted(set(changes) - set(self.fields()))
        if unknown:
            raise BadSetting(unknown[0], changes[unknown[0]], "one of " + ", ".join(self.fields()))
        return dataclasses.replace(self, **changes)


@dataclass
class ImageSettings(_Settings):
    """The panel's settings for one image job (``scene.sfumato`` as plain data)."""

    prompt: str = ""
    negative: str = ""
    bundle: str = ""  # "" = the preference's default bundle
    seed: int = 0
    random_seed: bool = False  # draw a fresh seed per job; the drawn seed is recorded
    steps: int = 0  # 0 = the bundle's default (its manifest's default_steps, else 25); not sent
    guidance: float = 7.5  # classifier-free guidance scale
    scheduler: str = DEFAULT_SCHEDULER
    width: int = 512  # pixels, multiple of 8
    height: int = 512
    mode: ImageMode = "text"
    strength: float = 0.6  # restyle: share of the schedule re-run (1 = ignore the render)
    control_scale: float = 1.0  # depth: ControlNet strength
    seamless: Literal["none", "x", "y", "xy"] = "none"



def _nearest8(v: int) -> str:
    lo = min(4088, max(64, (v // 8) * 8))
    return f"{lo} or {lo + 8}"


def problems(s: ImageSettings) -> list[BadSetting]:
    """Everything wrong with ``s``, in field order (the first one is the reason shown in the UI)."""
    found: list[BadSetting] = []

    def check(name: str, ok: bool, allowed: str) -> None:
        if not ok:
            found.append(BadSetting(name, getattr(s, name), allowed))

    check("mode", s.mode in IMAGE_MODES, ", ".join(IMAGE_MODES))
    check("prompt", isinstance(s.prompt, str) and (bool(s.prompt.strip()) or s.mode == "restyle"),
          f"a text prompt ({s.mode} mode needs one)")
    check("seed", isinstance(s.seed, int) and 0 <= s.seed <= MAX_SEED, f"an integer 0..{MAX_SEED}")
    check("steps", s.steps is None or (_integer(s.steps) and 0 <= s.steps <= 500), STEPS_ALLOWED)
    check("guidance", isinstance(s.guidance, (int, float)) and 0 <= s.guidance <= 50, "a number 0..50")
    check("scheduler", s.scheduler in SCHEDULERS, ", ".join(SCHEDULERS))
    for dim in ("width", "height"):
        v = getattr(s, dim)
        check(dim, isinstance(v, int) and 64 <= v <= 4096 and v % 8 == 0,
              "a multiple of 8 from 64 to 4096" + (f" (nearest: {_nearest8(v)})" if isinstance(v, int) else ""))
    check("strength", isinstance(s.strength, (int, float)) and 0 < s.strength <= 1, "a number in (0, 1]")
    if s.mode == "restyle" and isinstance(s.steps, int) and isinstance(s.strength, (int, float)) and s.steps:
        check("strength", int(s.steps * s.strength) >= 1,
              f"at least 1/steps = {1 / s.steps:.3g} with steps={s.steps}, so that one step runs")
    check("control_scale", isinstance(s.control_scale, (int, float)) and 0 <= s.control_scale <= 4, "a number 0..4")
    check("seamless", s.seamless in ("none", "x", "y", "xy"), "none, x, y or xy")
    return found


def validate(s: ImageSettings) -> ImageSettings:
    return _first_problem(problems(s), s)


def _first_problem(found: list[BadSetting], s):
    """``s`` when ``found`` is empty, else raise its first problem (the one the UI shows)."""
    if found:
        raise found[0]
    return s


def _with_bundle(params: dict[str, Any], s: _Settings, default_bundle: str) -> dict[str, Any]:
    """``params`` plus the job's bundle (the settings', else the preference's default; none: the engine's)
    and its step count where one is set (0: the engine takes the bundle's own default)."""
    bundle = s.bundle or default_bundle
    if bundle:
        params["bundle"] = bundle
    if getattr(s, "steps", 0):
        params["steps"] = s.steps
    return params


def pick_seed(s: ImageSettings, rng: random.Random | None = None) -> int:
    return (rng or random).randint(0, MAX_SEED) if s.random_seed else s.seed


def image_params(s: ImageSettings, *, seed: int, default_bundle: str = DEFAULT_BUNDLE, n: int = 1,
                 depth_image: str | None = None, init_image: str | None = None) -> dict[str, Any]:
    """The ``params`` of an engine "image" job (``ImageRequest`` fields)."""
    validate(s)
    if s.mode == "depth" and not depth_image:
        raise BadSetting("depth_image", depth_image, "a depth file rendered from the camera (depth mode)")
    if s.mode == "restyle" and not init_image:
        raise BadSetting("init_image", init_image, "a rendered image file (restyle mode)")
    params: dict[str, Any] = {
        "prompt": s.prompt, "negative": s.negative, "seed": int(seed),
        "guidance": float(s.guidance), "scheduler": s.scheduler, "width": s.width, "height": s.height,
        "seamless": s.seamless, "n": n,
    }
    _with_bundle(params, s, default_bundle)
    if s.mode == "depth":
        params.update(depth_image=depth_image, control_scale=float(s.control_scale))
    elif s.mode == "restyle":
        params.update(init_image=init_image, strength=float(s.strength))
    return params


# ---- texture jobs ----------------------------------------------------------------------------------
TEXTURE_MODES = ("projection", "material")  # paint the mesh's own UV map | one seamless tile, box-projected
MAX_TEXTURE_SIZE = 8192
MAX_VIEW_SIZE = 2048  # the engine's limit for one generated view
TextureMode = Literal["projection", "material"]


@dataclass
class TextureSettings(_Settings):
    """One texture job on one mesh: the panel's shared settings plus its Texture section."""

    prompt: str = ""
    negative: str = ""
    bundle: str = ""  # "" = the preference's default bundle
    seed: int = 0
    random_seed: bool = False
    steps: int = 0  # 0 = the bundle's default (its manifest's default_steps, else 25); not sent
    guidance: float = 7.5
    scheduler: str = DEFAULT_SCHEDULER
    mode: TextureMode = "projection"
    views: int = 8  # cameras around the mesh, each generated once
    resolution: int = 0  # per-view generation size in pixels, a multiple of 8; 0 = the bundle's native size
    texture_size: int = 1024  # the texture PNG's side in pixels
    tile_size: float = 1.0  # material mode: metres one tile covers
    max_faces: int = 200_000  # the engine refuses meshes above this



def texture_problems(s: TextureSettings) -> list[BadSetting]:
    """Everything wrong with ``s``, in field order (the first one is the reason shown in the UI)."""
    found: list[BadSetting] = []

    def check(name: str, ok: bool, allowed: str) -> None:
        if not ok:
            found.append(BadSetting(name, getattr(s, name), allowed))

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    check("prompt", isinstance(s.prompt, str) and bool(s.prompt.strip()), "a text prompt (texture mode needs one)")
    check("seed", isinstance(s.seed, int) and 0 <= s.seed <= MAX_SEED, f"an integer 0..{MAX_SEED}")
    check("steps", s.steps is None or (_integer(s.steps) and 0 <= s.steps <= 500), STEPS_ALLOWED)
    check("guidance", number(s.guidance) and 0 <= s.guidance <= 50, "a number 0..50")
    check("scheduler", s.scheduler in SCHEDULERS, ", ".join(SCHEDULERS))
    check("mode", s.mode in TEXTURE_MODES, ", ".join(TEXTURE_MODES))
    check("views", isinstance(s.views, int) and 1 <= s.views <= 64, "an integer 1..64")
    r = s.resolution
    check("resolution", isinstance(r, int) and (r == 0 or (64 <= r <= MAX_VIEW_SIZE and r % 8 == 0)),
          f"0 (the bundle's native size) or a multiple of 8 from 64 to {MAX_VIEW_SIZE}"
          + (f" (nearest: {_nearest8(min(r, MAX_VIEW_SIZE))})" if isinstance(r, int) and r > 0 else ""))
    check("texture_size", isinstance(s.texture_size, int) and 16 <= s.texture_size <= MAX_TEXTURE_SIZE,
          f"an integer 16..{MAX_TEXTURE_SIZE} (pixels)")
    check("tile_size", number(s.tile_size) and 0 < s.tile_size <= 1000, "a positive number of metres (at most 1000)")
    check("max_faces", isinstance(s.max_faces, int) and s.max_faces >= 1, "a positive integer")
    return found


def validate_texture(s: TextureSettings) -> TextureSettings:
    return _first_problem(texture_problems(s), s)


def texture_params(s: TextureSettings, *, mesh: str, seed: int, default_bundle: str = DEFAULT_BUNDLE
                   ) -> dict[str, Any]:
    """The ``params`` of an engine "texture" job; ``mesh`` is the exported GLB."""
    validate_texture(s)
    if not mesh:
        raise BadSetting("mesh", mesh, "the path of the mesh exported as GLB")
    params: dict[str, Any] = {
        "mesh": mesh, "prompt": s.prompt, "negative": s.negative, "mode": s.mode, "views": s.views,
        "texture_size": s.texture_size, "tile_size": float(s.tile_size), "seed": int(seed),
        "guidance": float(s.guidance), "scheduler": s.scheduler, "max_faces": s.max_faces,
    }
    if s.resolution:
        params["resolution"] = s.resolution
    return _with_bundle(params, s, default_bundle)


def _named(head: str, name: str) -> str:
    """``head + name`` within Blender's 63 bytes (the name shortened)."""
    while len((head + name).encode("utf-8")) > 63:
        name = name[:-1]
    return head + name


def material_name(object_name: str) -> str:
    """The texture material's name, "Sfumato texture <object>", within Blender's 63 bytes."""
    return _named("Sfumato texture ", object_name)


def tile_scale(tile_size: float, object_scale: tuple[float, float, float]) -> tuple[float, float, float]:
    """The Mapping node's scale for object coordinates so that one tile covers ``tile_size`` metres in the
    world: object coordinates are before the object's scale, so a unit of them is ``object_scale`` metres."""
    if not tile_size > 0:
        raise BadSetting("tile_size", tile_size, "a positive number of metres")
    return tuple(abs(float(k)) / float(tile_size) for k in object_scale)


# ---- turntable jobs --------------------------------------------------------------------------------
MAX_FRAMES = 720  # the engine's limit (video/turntable.py); a test keeps them equal
TEMPORAL = ("auto", "on", "off")  # the bundle's motion module when it has one | always (or fail) | per frame
CONDITIONING = ("auto", "depth", "img2img")  # depth ControlNet when the bundle has one | always | shaded orbit
VIDEO_FORMATS = ("mp4", "gif")


@dataclass
class TurntableSettings(_Settings):
    """One turntable of one mesh: the panel's shared settings plus its Turntable section (``VideoRequest``
    fields of the engine, less device and dtype, which the worker's preferences choose)."""

    prompt: str = ""
    negative: str = ""
    bundle: str = ""  # "" = the preference's default bundle
    seed: int = 0
    random_seed: bool = False
    steps: int = 0  # 0 = the bundle's default (its manifest's default_steps, else 25); not sent
    guidance: float = 7.5
    scheduler: str = DEFAULT_SCHEDULER
    frames: int = 24  # one full orbit; the video loops
    fps: int = 12
    resolution: int = 0  # frame side in pixels, a multiple of 8; 0 = the bundle's native size
    elevation: float = 20.0  # degrees above the mesh's equator
    temporal: Literal["auto", "on", "off"] = "auto"
    motion: str = ""  # an AnimateDiff motion adapter (folder or .safetensors); "" = the bundle's own
    window: int = 0  # frames per frame-attention call; 0 = the motion module's length
    conditioning: Literal["auto", "depth", "img2img"] = "auto"
    strength: float = 0.8  # img2img: how far frames move from the orbit's shading
    relight: bool = True  # img2img: the headlight's shading multiplied onto the surface
    control_scale: float = 1.0  # depth: ControlNet strength
    max_faces: int = 200_000  # the engine refuses meshes above this
    format: Literal["mp4", "gif"] = "mp4"  # the video file's container


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def turntable_problems(s: TurntableSettings) -> list[BadSetting]:
    """Everything wrong with ``s``, in field order (the first one is the reason shown in the UI); the
    limits are the engine's ``VideoRequest.validate``."""
    found: list[BadSetting] = []

    def check(name: str, ok: bool, allowed: str) -> None:
        if not ok:
            found.append(BadSetting(name, getattr(s, name), allowed))

    check("prompt", isinstance(s.prompt, str) and bool(s.prompt.strip()), "a text prompt (a turntable needs one)")
    check("seed", _integer(s.seed) and 0 <= s.seed <= MAX_SEED, f"an integer 0..{MAX_SEED}")
    check("steps", s.steps is None or (_integer(s.steps) and 0 <= s.steps <= 500), STEPS_ALLOWED)
    check("guidance", _number(s.guidance) and 0 <= s.guidance <= 50, "a number 0..50")
    check("scheduler", s.scheduler in SCHEDULERS, ", ".join(SCHEDULERS))
    check("frames", _integer(s.frames) and 2 <= s.frames <= MAX_FRAMES, f"an integer from 2 to {MAX_FRAMES}")
    check("fps", _integer(s.fps) and 1 <= s.fps <= 120, "an integer from 1 to 120 (frames per second)")
    r = s.resolution
    check("resolution", _integer(r) and (r == 0 or (64 <= r <= MAX_VIEW_SIZE and r % 8 == 0)),
          f"0 (the bundle's native size) or a multiple of 8 from 64 to {MAX_VIEW_SIZE}"
          + (f" (nearest: {_nearest8(min(r, MAX_VIEW_SIZE))})" if _integer(r) and r > 0 else ""))
    check("elevation", _number(s.elevation) and -89 <= s.elevation <= 89, "an angle from -89 to 89 degrees")
    check("temporal", s.temporal in TEMPORAL, ", ".join(TEMPORAL))
    check("motion", isinstance(s.motion, str), "a motion adapter folder or .safetensors file, or '' for the bundle's")
    check("window", _integer(s.window) and 0 <= s.window <= 64, "an integer 1..64, or 0 for the motion module's length")
    check("conditioning", s.conditioning in CONDITIONING, ", ".join(CONDITIONING))
    check("strength", _number(s.strength) and 0 < s.strength <= 1, "a number in (0, 1]")
    check("relight", isinstance(s.relight, bool), "True or False")
    check("control_scale", _number(s.control_scale) and 0 <= s.control_scale <= 4, "a number 0..4")
    check("max_faces", _integer(s.max_faces) and s.max_faces >= 1, "a positive integer")
    check("format", s.format in VIDEO_FORMATS, ", ".join(VIDEO_FORMATS))
    return found


def validate_turntable(s: TurntableSettings) -> TurntableSettings:
    return _first_problem(turntable_problems(s), s)


def turntable_params(s: TurntableSettings, *, mesh: str, seed: int, default_bundle: str = DEFAULT_BUNDLE
                     ) -> dict[str, Any]:
    """The ``params`` of an engine "turntable" job (``VideoRequest`` fields); ``mesh`` is the exported GLB.
    Settings left at "the engine's default" (resolution 0, window 0, motion "") are not sent."""
    validate_turntable(s)
    if not mesh:
        raise BadSetting("mesh", mesh, "the path of the mesh exported as GLB")
    params: dict[str, Any] = {
        "prompt": s.prompt, "mesh": mesh, "negative": s.negative, "frames": s.frames, "fps": s.fps,
        "guidance": float(s.guidance), "seed": int(seed), "scheduler": s.scheduler,
        "elevation": float(s.elevation), "temporal": s.temporal, "conditioning": s.conditioning,
        "strength": float(s.strength), "relight": bool(s.relight), "control_scale": float(s.control_scale),
        "max_faces": s.max_faces,
    }
    if s.resolution:
        params["resolution"] = s.resolution
    if s.window:
        params["window"] = s.window
    if s.motion:
        params["motion"] = s.motion
    return _with_bundle(params, s, default_bundle)


def clip_name(object_name: str) -> str:
    """The turntable's movie clip name, "Sfumato turntable <object>"."""
    return _named("Sfumato turntable ", object_name)


# ---- asset jobs (text to a 3-D asset) --------------------------------------------------------------
# the engine's asset job (threed/jobs.py ``asset_job``, ``AssetRequest``): score distillation into a radiance
# field, then a mesh; its other settings (learning rate, mesh extraction, colours, size) keep the engine's defaults
MAX_ASSET_ITERS = 100_000
ASSET_RESOLUTION = (32, 512, 16)  # the render the bundle scores: min, max, multiple of
MAX_ASSET_GUIDANCE = 200.0  # score distillation wants a large guidance scale (DreamFusion: 100)


@dataclass
class AssetSettings(_Settings):
    """One text-to-3-D job: the panel's shared prompt, negative, bundle and seed, plus its Asset section."""

    prompt: str = ""
    negative: str = ""
    bundle: str = ""  # "" = the preference's default bundle
    seed: int = 0
    random_seed: bool = False
    iters: int = 600  # optimisation steps of the field
    resolution: int = 64  # side in pixels of the view rendered and scored each step, a multiple of 16
    guidance: float = 50.0  # classifier-free guidance scale of the score (large for score distillation)



def asset_problems(s: AssetSettings) -> list[BadSetting]:
    """Everything wrong with ``s``, in field order (the first one is the reason shown in the UI)."""
    found: list[BadSetting] = []

    def check(name: str, ok: bool, allowed: str) -> None:
        if not ok:
            found.append(BadSetting(name, getattr(s, name), allowed))

    check("prompt", isinstance(s.prompt, str) and bool(s.prompt.strip()), "a text prompt (an asset needs one)")
    check("seed", _integer(s.seed) and 0 <= s.seed <= MAX_SEED, f"an integer 0..{MAX_SEED}")
    check("iters", _integer(s.iters) and 1 <= s.iters <= MAX_ASSET_ITERS, f"an integer 1..{MAX_ASSET_ITERS}")
    r, (lo, hi, k) = s.resolution, ASSET_RESOLUTION
    near = min(hi - k, max(lo, r // k * k)) if _integer(r) else 0
    check("resolution", _integer(r) and lo <= r <= hi and r % k == 0,
          f"a multiple of {k} from {lo} to {hi} (pixels)" + (f" (nearest: {near} or {near + k})" if near else ""))
    check("guidance", _number(s.guidance) and 0 <= s.guidance <= MAX_ASSET_GUIDANCE,
          f"a number 0..{MAX_ASSET_GUIDANCE:g}")
    return found


def validate_asset(s: AssetSettings) -> AssetSettings:
    return _first_problem(asset_problems(s), s)


def asset_params(s: AssetSettings, *, seed: int, default_bundle: str = DEFAULT_BUNDLE) -> dict[str, Any]:
    """The ``params`` of an engine "asset" job."""
    validate_asset(s)
    params: dict[str, Any] = {"prompt": s.prompt, "negative": s.negative, "iters": s.iters,
                              "resolution": s.resolution, "seed": int(seed), "guidance": float(s.guidance)}
    return _with_bundle(params, s, default_bundle)


# ---- names and files -------------------------------------------------------------------------------
def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe short form of a prompt."""
    words = re.sub(r"[^A-Za-z0-9]+", "-", text.strip().lower()).strip("-")
    return (words[:limit].rstrip("-") or "untitled")


def result_name(prompt: str, seed: int) -> str:
    """The image datablock's name: the prompt (shortened) and the seed, within Blender's 63 bytes."""
    tail = f" s{seed}"
    text = " ".join(prompt.split()) or "untitled"
    room = 63 - len(tail.encode("utf-8"))
    if len(text.encode("utf-8")) > room:
        while len(text.encode("utf-8")) > room - 3:  # 3 bytes for the ellipsis
            text = text[:-1]
        text = text.rstrip() + "…"
    return text + tail


def output_stem(folder: Path, prompt: str, stamp: float | None = None) -> Path:
    """A fresh ``<folder>/<time>_<prompt-slug>`` stem; results, depth and init files share it."""
    t = time.localtime(stamp if stamp is not None else time.time())
    base = f"{time.strftime('%Y%m%d-%H%M%S', t)}_{slug(prompt)}"
    stem, k = folder / base, 1
    while list(folder.glob(stem.name + "*")):
        k += 1
        stem = folder / f"{base}-{k}"
    return stem


# ---- provenance and history ------------------------------------------------------------------------
def id_properties(meta: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Provenance as Blender custom-property values: str, float, or int within 32 bits."""
    out: dict[str, Any] = {}
    for key, value in {**meta, **(extra or {})}.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, int) and not -2**31 <= value < 2**31:
            value = str(value)
        elif not isinstance(value, (int, float, str)):
            value = json.dumps(value, default=str)
        out[str(key)] = value
    return out


def history_record(s: ImageSettings, meta: dict[str, Any], image_name: str, file: str) -> dict[str, Any]:
    """What the history list keeps of one result: its settings as run (seed included) and where it is."""
    settings = dataclasses.asdict(s)
    settings.update(seed=int(meta.get("seed", s.seed)), random_seed=False)
    for key in ("steps", "guidance", "scheduler", "width", "height", "negative", "prompt"):
        if key in meta:
            settings[key] = meta[key]
    if meta.get("bundle") and s.bundle:
        settings["bundle"] = s.bundle
    return {"settings": settings, "image": image_name, "file": file, "bundle": meta.get("bundle", ""),
            "label": f"{result_name(settings['prompt'] or s.mode, settings['seed'])}  [{s.mode}]"}


def settings_from_record(record: dict[str, Any] | str) -> ImageSettings:
    """The settings a history record was made with, ready to put back into the panel."""
    if isinstance(record, str):
        record = json.loads(record)
    known = set(ImageSettings.fields())
    return ImageSettings(**{k: v for k, v in record["settings"].items() if k in known})
