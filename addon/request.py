"""From the panel's settings to an image, texture, turntable or asset job, and back from a result to a
history record.

Blender-free: the operators turn Blender properties into an ``ImageSettings``, ``TextureSettings``,
``TurntableSettings`` or ``AssetSettings`` (plain data over one ``Settings`` base), and everything else here
is plain Python that tests reach without Blender. What a job field allows and defaults to is the engine's
request schema (``limits.schema``): ``problems`` checks the params a setting would send against it, so the
panel refuses a bad value with the same sentence as the engine's CLI and worker. Only what the panel adds
(the image mode, the video format, "0 = the engine's default") is checked here.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from .limits import schema

DEFAULT_BUNDLE = "materials"
IMAGE_MODES = ("text", "depth", "restyle")  # text-to-image, depth-guided, restyle the render (img2img)
VIDEO_FORMATS = ("mp4", "gif")
RESTYLE_STRENGTH = 0.6  # the panel's restyle keeps more of the render than the engine's image-to-image default
PANEL_SIZE = 512  # the panel's image size (the engine's default is the bundle's native size)
HISTORY_LIMIT = 50
# what the add-on writes only when a job starts (the exported mesh, the rendered depth or image): stand-ins
# for checking settings before that
INPUT_STAND_INS = {"mesh": "object.glb", "depth_image": "camera.depth.npy", "init_image": "camera.render.png",
                   "image": "source.png"}
INPUTS_ALLOWED = {"mesh": "the path of the mesh exported as GLB", "depth_image": "a depth file rendered from the "
                  "camera (depth mode)", "init_image": "a rendered image file (restyle mode)",
                  "image": "the image file to upscale", "controls": "condition images rendered from the camera "
                  "(depth mode with normals or line art)"}
# ControlNets the depth mode adds from the scene's geometry, besides depth itself (the engine's kinds, less depth)
GEOMETRY_CONDITIONS = tuple(k for k in schema.CONTROL_KINDS if k != "depth")

ImageMode = Literal["text", "depth", "restyle"]
I, T, V, A = schema.ImageRequest, schema.TextureRequest, schema.TurntableRequest, schema.AssetRequest
U = schema.UpscaleRequest
S = schema.StyleRequest


class BadSetting(ValueError):
    """A setting the engine would refuse, caught before anything is rendered or sent."""

    def __init__(self, field: str, value: Any, allowed: str):
        super().__init__(schema.message(field, value, allowed))
        self.field, self.value, self.allowed = field, value, allowed


@dataclass
class Settings:
    """What every job's settings share. A field named like the kind's schema field is sent under that name;
    0 or "" in a field the schema lets be none means "the engine's default" and is not sent."""

    kind: ClassVar[str]
    prompt: str = ""
    negative: str = ""
    bundle: str = ""  # "" = the preference's default bundle
    seed: int = 0
    random_seed: bool = False  # draw a fresh seed per job; the drawn seed is recorded
    loras: tuple[str, ...] = ()  # the Styles list's enabled LoRAs, NAME:STRENGTH (the schema's field)

    @classmethod
    def fields(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any):
        unknown = sorted(set(changes) - set(self.fields()))
        if unknown:
            raise BadSetting(unknown[0], changes[unknown[0]], "one of " + ", ".join(self.fields()))
        return dataclasses.replace(self, **changes)

    def unsent(self) -> set[str]:
        """Fields that do not apply to this job as set (the image mode's other controls)."""
        return set()

    def inputs(self) -> set[str]:
        """The schema's file fields the add-on fills when the job starts (the exported mesh, ...)."""
        return set()

    def stand_in(self, name: str) -> Any:
        """What an input field holds before the job's files exist (for checking the settings)."""
        return INPUT_STAND_INS[name]

    def own_problems(self) -> list[BadSetting]:
        """What only the panel checks (fields the engine does not have)."""
        return []


@dataclass
class ImageSettings(Settings):
    """The panel's settings for one image job (``scene.sfumato`` as plain data)."""

    kind: ClassVar[str] = "image"
    steps: int = 0  # 0 = the bundle's default (its manifest's default_steps); not sent
    guidance: float = I.guidance
    scheduler: str = I.scheduler
    width: int = PANEL_SIZE
    height: int = PANEL_SIZE
    mode: ImageMode = "text"
    strength: float = RESTYLE_STRENGTH  # restyle: share of the schedule re-run (1 = ignore the render)
    control_scale: float = I.control_scale  # depth: ControlNet strength
    conditions: tuple[str, ...] = ()  # depth mode: more ControlNets fed from the geometry (GEOMETRY_CONDITIONS)
    control_weights: tuple[str, ...] = ()  # depth mode: KIND=SCALE,START,END per ControlNet (the schema's field)
    seamless: str = I.seamless

    def unsent(self) -> set[str]:
        return {name for name, mode in (("strength", "restyle"), ("control_scale", "depth"),
                                        ("control_weights", "depth")) if self.mode != mode}

    def inputs(self) -> set[str]:
        if self.mode == "depth":
            return {"depth_image"} | ({"controls"} if self.conditions else set())
        return {"restyle": {"init_image"}}.get(self.mode, set())

    def stand_in(self, name: str) -> Any:
        if name == "controls":
            return tuple(f"{kind}=camera.{kind}.png" for kind in self.conditions)
        return super().stand_in(name)

    def own_problems(self) -> list[BadSetting]:
        if self.mode not in IMAGE_MODES:
            return [BadSetting("mode", self.mode, schema.one_of(IMAGE_MODES))]
        for kind in self.conditions:
            if kind not in GEOMETRY_CONDITIONS or self.conditions.count(kind) > 1:
                return [BadSetting("conditions", self.conditions, "each of " + ", ".join(GEOMETRY_CONDITIONS)
                                   + " at most once (depth is always used in depth mode)")]
        if self.mode != "restyle" and not (isinstance(self.prompt, str) and self.prompt.strip()):
            return [BadSetting("prompt", self.prompt, f"a text prompt ({self.mode} mode needs one)")]
        return []


def style_entries(rows: list[tuple[str, bool, float]]) -> tuple[str, ...]:
    """The schema's ``loras`` (NAME:SCALE) from the Styles list's rows (name, enabled, strength)."""
    return tuple(f"{name}:{_number(strength)}" for name, enabled, strength in rows if enabled and name)


def style_rows(loras: tuple[str, ...]) -> dict[str, float]:
    """Name -> strength of each LoRA a job used (history recall turns these rows on)."""
    out = {}
    for entry in loras:
        name, scale = schema.split_scaled(entry)
        out[name] = 1.0 if scale is None else scale
    return out


def geometry_controls(values: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(conditions, control_weights) from the panel's ControlNet properties: ``use_<kind>``, ``<kind>_weight`` (depth:
    ``control_scale``), ``<kind>_start`` and ``<kind>_end`` for each kind the panel shows."""
    conditions = tuple(k for k in GEOMETRY_CONDITIONS if values.get(f"use_{k}"))
    weights = []
    for kind in ("depth", *conditions):
        scale = values.get("control_scale" if kind == "depth" else f"{kind}_weight", I.control_scale)
        start, end = values.get(f"{kind}_start", 0.0), values.get(f"{kind}_end", 1.0)
        weights.append(f"{kind}={_number(scale)},{_number(start)},{_number(end)}")
    return conditions, tuple(weights)


def geometry_props(s: "ImageSettings") -> dict[str, Any]:
    """The panel's ControlNet properties that give back ``s.conditions`` and ``s.control_weights`` (history recall)."""
    out: dict[str, Any] = {f"use_{k}": k in s.conditions for k in GEOMETRY_CONDITIONS}
    for entry in s.control_weights:
        kind, _, text = entry.partition("=")
        scale, start, end = schema.control_weight(text) or (I.control_scale, 0.0, 1.0)
        out["control_scale" if kind == "depth" else f"{kind}_weight"] = scale
        out[f"{kind}_start"], out[f"{kind}_end"] = start, end
    return out


def _number(v: float) -> str:
    return f"{float(v):.4g}"


@dataclass
class TextureSettings(Settings):
    """One texture job on one mesh: the panel's shared settings plus its Texture section."""

    kind: ClassVar[str] = "texture"
    steps: int = 0  # 0 = the bundle's default; not sent
    guidance: float = T.guidance
    scheduler: str = T.scheduler
    mode: str = T.mode  # the panel offers every mode the engine has (the schema checks it)
    variant: str = T.variant  # projection: views in turn, or all at once sharing one UV latent
    views: int = T.views  # cameras around the mesh, each generated once
    fill_views: int = T.fill_views  # projection: extra views for what the camera rings missed
    iters: int = T.iters  # sds: optimisation steps of the texture
    resolution: int = 0  # per-view generation size in pixels; 0 = the bundle's native size
    texture_size: int = T.texture_size  # the texture PNG's side in pixels
    tile_size: float = T.tile_size  # material mode: metres one tile covers
    max_faces: int = T.max_faces  # the engine refuses meshes above this
    slots: tuple[str, ...] = ()  # material mode: NAME=PROMPT per slot (the object's slot table fills these)
    slot_tiles: tuple[str, ...] = ()  # material mode: NAME=METRES per slot
    only: tuple[str, ...] = ()  # material mode: regenerate these slots only
    maps: bool = T.maps  # material mode: normal, roughness and height maps

    def inputs(self) -> set[str]:
        return {"mesh"}


@dataclass
class TurntableSettings(Settings):
    """One turntable of one mesh: the panel's shared settings plus its Turntable section (``TurntableRequest``
    fields of the engine, less device and dtype, which the worker's preferences choose)."""

    kind: ClassVar[str] = "turntable"
    steps: int = 0  # 0 = the bundle's default; not sent
    guidance: float = V.guidance
    scheduler: str = V.scheduler
    frames: int = V.frames  # one full orbit; the video loops
    fps: int = V.fps
    resolution: int = 0  # frame side in pixels; 0 = the bundle's native size
    elevation: float = V.elevation  # degrees above the mesh's equator
    temporal: str = V.temporal
    motion: str = ""  # an AnimateDiff motion adapter (folder or .safetensors); "" = the bundle's own
    window: int = 0  # frames per frame-attention call; 0 = the motion module's length
    conditioning: str = V.conditioning
    strength: float = V.strength  # img2img: how far frames move from the orbit's shading
    relight: bool = V.relight  # img2img: the headlight's shading multiplied onto the surface
    control_scale: float = V.control_scale  # depth: ControlNet strength
    max_faces: int = V.max_faces  # the engine refuses meshes above this
    format: Literal["mp4", "gif"] = "mp4"  # the video file's container

    def inputs(self) -> set[str]:
        return {"mesh"}

    def own_problems(self) -> list[BadSetting]:
        if self.format not in VIDEO_FORMATS:
            return [BadSetting("format", self.format, schema.one_of(VIDEO_FORMATS))]
        return []


@dataclass
class AssetSettings(Settings):
    """One text-to-3-D job: the panel's shared prompt, negative, bundle and seed, plus its Asset section; the
    engine's other asset settings keep their defaults."""

    kind: ClassVar[str] = "asset"
    iters: int = A.iters  # optimisation steps of the field
    resolution: int = A.resolution  # side in pixels of the view rendered and scored each step
    guidance: float = A.guidance  # classifier-free guidance of the score (large for score distillation)
    size: float = A.size  # metres: the asset's largest side, as imported
    render: str = A.render  # rgb, or latent: renders at latent size (cheaper, coarser)


@dataclass
class UpscaleSettings(Settings):
    """One upscale of one image (``UpscaleRequest`` fields): the prompt "" takes the image's own from its
    provenance; the bundle and seed come from the panel."""

    kind: ClassVar[str] = "upscale"
    steps: int = 0  # 0 = the bundle's default; not sent
    guidance: float = U.guidance
    scheduler: str = U.scheduler
    scale: int = U.scale  # times larger on each side
    strength: float = U.strength  # image-to-image strength per tile
    tile: int = U.tile  # tile side in output pixels
    overlap: int = U.overlap  # pixels neighbouring tiles share
    fidelity: float = U.fidelity  # share of the difference to the input put back (back-projection)

    def inputs(self) -> set[str]:
        return {"image"}


@dataclass
class StyleSettings(Settings):
    """One style training job (``StyleRequest`` fields): a folder of references into a LoRA of the bundle."""

    kind: ClassVar[str] = "train_style"
    prompt: str = S.prompt  # the caption template of references without a sidecar .txt
    folder: str = ""
    name: str = ""
    steps: int = S.steps
    rank: int = S.rank
    resolution: int = 0  # 0 = the bundle's native size; not sent
    overwrite: bool = False

    def own_problems(self) -> list[BadSetting]:
        if not self.folder.strip():
            return [BadSetting("folder", self.folder, "a folder of 5 to 50 reference images")]
        return []


def params(s: Settings, *, seed: int, default_bundle: str = DEFAULT_BUNDLE, inputs: dict[str, str] | None = None,
           **extra: Any) -> dict[str, Any]:
    """The ``params`` of the engine job ``s`` describes: its fields the kind's schema has, less the unset ones,
    plus ``inputs`` (the files the add-on made: mesh, depth_image, init_image) and ``extra`` (such as ``n``).
    Raises the first problem."""
    first_problem(s, inputs)
    for name in sorted(s.inputs()):
        if not (inputs or {}).get(name):
            raise BadSetting(name, (inputs or {}).get(name), INPUTS_ALLOWED[name])
    return _params(s, seed, default_bundle, inputs or {}, extra)


def _params(s: Settings, seed: int, default_bundle: str, inputs: dict[str, str], extra: dict[str, Any]):
    cls = schema.KINDS[s.kind]
    hints = schema.field_types(cls)
    out: dict[str, Any] = {}
    for name in s.fields():
        value = getattr(s, name)
        if name not in hints or name in s.unsent() or name in ("seed", "bundle"):
            continue
        if schema.unwrap(hints[name])[1] and (value is None or value in (0, "")) and not isinstance(value, bool):
            continue  # 0 / "" / none: the engine's default
        if isinstance(value, tuple) and not value:
            continue  # no entries: the engine's default
        out[name] = float(value) if schema.unwrap(hints[name])[0] is float and isinstance(value, int) \
            and not isinstance(value, bool) else value
    out["seed"] = seed
    if s.bundle or default_bundle:
        out["bundle"] = s.bundle or default_bundle
    return {**out, **inputs, **extra}


def problems(s: Settings, inputs: dict[str, str] | None = None) -> list[BadSetting]:
    """Everything wrong with ``s``, the panel's own checks first, then the engine's schema on the params it would
    send (the first one is the reason shown in the UI). Before a job starts the files it reads do not exist yet:
    stand-ins take their place."""
    found = s.own_problems()
    cls = schema.KINDS[s.kind]
    stand_ins = {name: s.stand_in(name) for name in s.inputs()}
    req, bad = schema.parse(cls, _params(s, s.seed, "", {**stand_ins, **(inputs or {})}, {}))
    seen = {p.field for p in found}
    return found + [BadSetting(p.field, p.value, p.allowed) for p in (bad or schema.problems(req)) if p.field not in seen]


def first_problem(s: Settings, inputs: dict[str, str] | None = None) -> Settings:
    """``s`` when nothing is wrong with it, else raise its first problem (the one the UI shows)."""
    found = problems(s, inputs)
    if found:
        raise found[0]
    return s


def pick_seed(s: Settings, rng: random.Random | None = None) -> int:
    return schema.draw_seed(rng) if s.random_seed else s.seed


def property_args(cls: type, name: str, *, unset: Any = None, hard: bool = True, description: str = ""
                  ) -> dict[str, Any]:
    """A Blender property's default, limits and tooltip (unless ``description`` is given) from the schema's field
    ``name`` of ``cls``; ``unset`` is the panel's value for "the engine's default" where the schema's is none.
    Soft limits when not ``hard``, so a bad value still reaches the panel's check, which names what is allowed."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    spec, hint = schema.spec_of(field), schema.field_types(cls)[name]
    default = field.default if field.default is not None else unset
    tip = f"{spec.help[:1].upper()}{spec.help[1:]}: {schema.describe(field, hint)}"
    args: dict[str, Any] = {"description": description or tip + (f" ({unset} = the default)" if unset is not None
                                                                  else "")}
    if default is not None:
        args["default"] = default
    lo = unset if unset is not None else spec.lo
    for key, value in (("min", lo), ("max", spec.hi)):
        if value is not None:
            args[key if hard else "soft_" + key] = value
    return args


def choices(cls: type, name: str) -> tuple[str, ...]:
    """A choice field's values, as the schema lists them."""
    return tuple(schema.choices(schema.unwrap(schema.field_types(cls)[name])[0]) or ())


# ---- names -----------------------------------------------------------------------------------------
def _named(head: str, name: str) -> str:
    """``head + name`` within Blender's 63 bytes (the name shortened)."""
    while len((head + name).encode("utf-8")) > 63:
        name = name[:-1]
    return head + name


def material_name(object_name: str) -> str:
    """The texture material's name, "Sfumato texture <object>", within Blender's 63 bytes."""
    return _named("Sfumato texture ", object_name)


def slot_material_name(slot: str) -> str:
    """A slot's new material, "Sfumato <slot>", within Blender's 63 bytes."""
    return _named("Sfumato ", slot)


def tile_scale(tile_size: float, object_scale: tuple[float, float, float]) -> tuple[float, float, float]:
    """The Mapping node's scale for object coordinates so that one tile covers ``tile_size`` metres in the
    world: object coordinates are before the object's scale, so a unit of them is ``object_scale`` metres."""
    if not tile_size > 0:
        raise BadSetting("tile_size", tile_size, "a positive number of metres")
    return tuple(abs(float(k)) / float(tile_size) for k in object_scale)



def batch_collection_name(folder_name: str) -> str:
    """The collection a batch's meshes are imported into, "Sfumato batch <folder>"."""
    return _named("Sfumato batch ", folder_name)


def clip_name(object_name: str) -> str:
    """The turntable's movie clip name, "Sfumato turntable <object>"."""
    return _named("Sfumato turntable ", object_name)



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
    return ImageSettings(**{k: tuple(v) if isinstance(v, list) else v  # JSON turned the lists' tuples into lists
                            for k, v in record["settings"].items() if k in known})
