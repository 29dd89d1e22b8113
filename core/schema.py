"""The request schema: every job's parameters declared once, with type, default, bounds and help.

One dataclass per job kind over a shared common block (``JobRequest``, and ``SampledRequest`` for the
kinds that run the sampling loop). Each field's ``Spec`` (in the dataclass field's metadata) says what is
allowed; everything else is derived from it:

- the engine's door (``core/jobs.py``) parses a job's params with ``parse``, checks them once with
  ``field_problems``, fills what depends on the bundle or on chance with ``complete`` (the bundle's
  ``default_steps``, a random seed) and then runs the checks that need those with ``cross_problems``;
- the CLI (``sfumato/cli.py``) builds its flags from the fields;
- the Blender add-on reads its limits, defaults and help texts from this file, which
  ``sfumato addon build`` ships inside the extension zip.

Standard library only, and no imports from the engine: the add-on loads this file without torch.
Problems come back as ``Problem(field, value, allowed)``; the engine raises them as ``BadParameter``,
the add-on as ``BadSetting``, both with ``message`` below, so every client says the same sentence.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import random
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

VERSION = 2  # of this schema; the worker reports it in ``info``
MAX_SEED = 2**31 - 1  # seeds fit Blender's 32-bit integer properties, so any seed can be recalled there
MAX_STEPS = 500
DEFAULT_STEPS = 25  # a bundle whose manifest names no default_steps
MAX_FRAMES = 720
MAX_PROMPT_CHARS = 10_000  # far beyond what a text encoder reads (77 tokens), far below what exhausts memory
LCM_MAX_STEPS = 50  # the lcm scheduler's original_inference_steps

Scheduler = Literal["bundle", "ddim", "ddpm", "euler", "euler_a", "dpmpp_2m", "dpmpp_2m_karras", "unipc", "lcm"]
DType = Literal["auto", "fp16", "bf16", "fp32"]
Fast = Literal["auto", "on", "off", "compile"]
Seamless = Literal["none", "x", "y", "xy"]
Conditioning = Literal["auto", "depth", "img2img"]
MESH_FILES = "a path to a .glb, .gltf, .obj or .ply file"
CONTROL_KINDS = ("depth", "normal", "lineart", "canny")  # a bundle's ControlNets: components controlnet_<kind>
CONTROLS = ", ".join(CONTROL_KINDS)
CONTROL_SCALE_MAX = 4.0
MAX_SLOTS = 256  # material slots one texture job takes
NO_MATERIAL = "(no material)"  # the slot name of faces without a material
REQUIRED = ""  # the placeholder default of a required text field (``parse`` insists on it being given)


@dataclass(frozen=True)
class Spec:
    """What a field allows, beyond its annotated type."""

    help: str
    lo: float | None = None  # smallest allowed value (or element, for a list)
    hi: float | None = None
    lo_open: bool = False  # the lower bound itself is not allowed
    multiple: int | None = None  # integers: a multiple of this
    nonempty: bool = False  # text: not blank
    required: bool = False  # must be given (a job's params, a CLI positional)
    none: str = ""  # what None means ("for the bundle's default"), shown in messages
    allowed: str = ""  # replaces the generated description of what is allowed
    path: bool = False  # a file the job reads: it must exist when the job starts
    suffixes: tuple[str, ...] = ()  # text: must end with one of these
    flag: str = ""  # the CLI flag when not --field-name
    max_chars: int = 4096  # text: longest allowed
    max_items: int = 16  # lists: most entries
    pairs: bool = False  # a list of text: each entry NAME=VALUE with a non-empty NAME


def param(default: Any, help: str, **limits: Any) -> Any:
    """A request field: its default and its ``Spec``."""
    return field(default=default, metadata={"spec": Spec(help=help, **limits)})


def spec_of(f: dataclasses.Field) -> Spec:
    return f.metadata.get("spec") or Spec(help="")


# ---- the common block ------------------------------------------------------------------------------
@dataclass
class JobRequest:
    """What every job takes."""

    prompt: str = field(metadata={"spec": Spec("what to generate", required=True, max_chars=MAX_PROMPT_CHARS)})
    negative: str = param("", "what to avoid (the unconditional prompt of guidance)", max_chars=MAX_PROMPT_CHARS)
    bundle: str | None = param(None, "bundle name or folder", none="for the default bundle")
    seed: int | None = param(None, "random seed (recorded with the result)", lo=0, hi=MAX_SEED, none="for random")
    guidance: float = param(7.5, "classifier-free guidance scale w; 1 or less turns guidance off", lo=0, hi=50)
    device: str = param("auto", "where the job runs", nonempty=True, max_chars=32,
                        allowed="auto, cuda, cuda:N, mps or cpu")
    dtype: DType = param("auto", "weights' precision (auto: fp16 on CUDA, fp32 elsewhere)")
    loras: tuple[str, ...] = param((), "LoRA: a .safetensors file (or folder) or the name of one in the bundle's "
                                   "loras/, with :SCALE (default 1); repeat for several", lo=-4, hi=4, max_items=8,
                                   flag="lora", allowed="LoRA files or names, each with an optional :scale from -4 "
                                   "to 4, at most 8")


@dataclass
class SampledRequest(JobRequest):
    """Jobs that run the sampling loop."""

    steps: int | None = param(None, "sampling steps", lo=1, hi=MAX_STEPS, none="for the bundle's default")
    scheduler: Scheduler = param("dpmpp_2m", "sampler; bundle: the bundle's own")
    fast: Fast = param("auto", "auto/on: CUDA graphs on a GPU, a bfloat16 U-Net on a CPU that does bfloat16 "
                       "natively; compile: plus torch.compile on a GPU; off: eager, the models' precision")


# ---- the kinds -------------------------------------------------------------------------------------
def _size(what: str, hi: int) -> Any:
    return param(None, f"{what}, pixels", lo=64, hi=hi, multiple=8, none="for the bundle's native size")


@dataclass
class ImageRequest(SampledRequest):
    """Images from a prompt: text-to-image, image-to-image, depth-guided, seamless, N variations."""

    width: int | None = _size("image width", 4096)
    height: int | None = _size("image height", 4096)
    init_image: str | None = param(None, "image-to-image source", path=True, flag="init", none="for text-to-image")
    strength: float = param(0.75, "image-to-image: share of the schedule re-run (1 ignores the init image)",
                            lo=0, hi=1, lo_open=True)
    depth_image: str | None = param(None, "depth map (near = bright, or .npy distances) for a depth ControlNet",
                                    path=True, flag="depth", none="for no depth guidance")
    control_scale: float = param(1.0, "ControlNet residual scale", lo=0, hi=CONTROL_SCALE_MAX)
    controls: tuple[str, ...] = param((), "condition images for the bundle's ControlNets, KIND=IMAGE (normal, line "
                                      "art, canny, depth), several at once", pairs=True, max_items=len(CONTROL_KINDS),
                                      flag="control", allowed=f"KIND=IMAGE entries, KIND one of {CONTROLS}")
    control_weights: tuple[str, ...] = param((), "a control's scale and the share of the steps it acts on, "
                                             "KIND=SCALE[,START,END] (START, END fractions 0..1)", pairs=True,
                                             max_items=len(CONTROL_KINDS), flag="control-weight",
                                             allowed="KIND=SCALE or KIND=SCALE,START,END entries")
    seamless: Seamless = param("none", "tileable along x, y or both")
    n: int = param(1, "variations with seeds seed, seed+1, ..., seed+n-1", lo=1, hi=256)
    batch_size: int = param(4, "images per network batch (memory only: results do not change)", lo=1, hi=64)

    @property
    def mode(self) -> str:
        if self.controls:
            return "controlnet"
        return "depth" if self.depth_image else "img2img" if self.init_image else "txt2img"

    def cross(self) -> list[Problem]:
        found = _strength_problems(self, "strength", self.init_image is not None)
        if self.seed is not None and self.seed + self.n - 1 > MAX_SEED:
            found.append(Problem("seed", self.seed, f"at most {MAX_SEED} - (n - 1) = {MAX_SEED - self.n + 1} with "
                                 f"n={self.n}, so every variation's seed can be replayed"))
        if self.scheduler == "lcm" and self.steps is not None and self.steps > LCM_MAX_STEPS:
            found.append(Problem("steps", self.steps, f"1..{LCM_MAX_STEPS} with the lcm scheduler (its "
                                 "original_inference_steps)"))
        return found + control_problems(self)


@dataclass
class TextureRequest(SampledRequest):
    """A mesh textured from a prompt: views projected into its UVs, a box-mapped tile per material slot, or SDS."""

    prompt: str = field(metadata={"spec": Spec("what to generate; material mode: the style added to every slot's "
                                               "prompt", required=True, max_chars=MAX_PROMPT_CHARS)})
    mesh: str = param(REQUIRED, "the mesh to texture", required=True, path=True, allowed=MESH_FILES)
    mode: Literal["projection", "material", "sds"] = param(
        "projection", "projection: views painted into the UVs; material: a seamless tile, box-mapped; sds: the "
        "texture optimised by score distillation (resumes after a cancel)")
    variant: Literal["sequential", "sync"] = param("sequential", "projection: views in turn, or all at once "
                                                   "sharing one UV latent")
    views: int = param(8, "projection: cameras around the mesh", lo=1, hi=64)
    resolution: int | None = _size("per view (projection) or tile (material)", 2048)
    texture_size: int = param(1024, "the UV texture's side, pixels", lo=16, hi=8192)
    tile_size: float = param(1.0, "material: metres one tile covers (a slot's own size comes first: --slot-tile, "
                             "else a default for the material its name says)", lo=0, hi=1000, lo_open=True)
    slots: tuple[str, ...] = param((), "a material slot's prompt: NAME=PROMPT (NAME is the slot's material); the main "
                                   "prompt is added to each as a shared style", pairs=True, max_items=MAX_SLOTS,
                                   flag="slot", allowed=f"NAME=PROMPT entries, at most {MAX_SLOTS}")
    slot_tiles: tuple[str, ...] = param((), "material: metres one tile covers on a slot, NAME=METRES", pairs=True,
                                        max_items=MAX_SLOTS, flag="slot-tile",
                                        allowed=f"NAME=METRES entries, at most {MAX_SLOTS}")
    slots_file: str | None = param(None, "a JSON slot table: {NAME: PROMPT} or {NAME: {prompt, tile_size, enabled}}",
                                   path=True, suffixes=(".json",), flag="slots", none="for no table")
    only: tuple[str, ...] = param((), "regenerate only these slots (material names); the others are left as they are",
                                  max_items=MAX_SLOTS, allowed=f"slot names, at most {MAX_SLOTS}")
    maps: bool = param(True, "material: normal, roughness and height maps predicted for each tile")
    texture_in: str | None = param(None, "projection: the texture to start from (on the mesh's own UVs); it is kept "
                                   "except on repaint's faces", path=True, flag="texture-in",
                                   none="for a new texture")
    repaint: str | None = param(None, "projection: a mesh of only the faces to paint again (the same UVs as mesh); "
                                "everything else keeps texture_in", path=True, allowed=MESH_FILES,
                                none="to paint every face")
    control_scale: float = param(1.0, "ControlNet residual scale", lo=0, hi=CONTROL_SCALE_MAX)
    conditioning: Conditioning = param("auto", "auto: the bundle's depth ControlNet when it has one, else "
                                       "image-to-image from the view's shading")
    view_prompts: bool = param(True, "add 'front view', 'side view', ... to each view's prompt")
    iters: int = param(300, "sds: optimisation steps", lo=1, hi=100_000)
    lr: float = param(0.05, "sds: learning rate", lo=0, hi=10, lo_open=True)
    state: str | None = param(None, "sds: where a cancelled run saves its state, and resumes from",
                              suffixes=(".safetensors",), none="for beside the output")
    elevations: tuple[float, ...] = param((15.0, 40.0), "projection: camera rings, degrees above the horizon",
                                          lo=-89, hi=89)
    top: bool = param(True, "projection: one view straight down (roofs)")
    fill_views: int = param(8, "projection: extra views chosen for what the rings missed", lo=0, hi=16)
    max_faces: int = param(200_000, "meshes with more faces are refused", lo=1)
    keep_threshold: float = param(0.8, "a texel is kept when an earlier view saw it at least this x this view's "
                                  "cosine", lo=0, hi=1, lo_open=True)
    refine_until: float = param(0.4, "share of the steps that hold refined regions", lo=0, hi=1)
    img2img_strength: float = param(0.9, "bundles without a depth ControlNet: how far views move from the "
                                    "shading", lo=0, hi=1, lo_open=True)

    def cross(self) -> list[Problem]:
        found = _strength_problems(self, "img2img_strength",
                                   self.mode == "projection" and self.conditioning == "img2img")
        most = spec_of(TextureRequest.__dataclass_fields__["tile_size"]).hi
        for entry in self.slot_tiles:
            metres = _float_or_none(entry.partition("=")[2])
            if metres is None or not 0 < metres <= most:
                found.append(Problem("slot_tiles", entry, f"NAME=METRES with METRES a number in (0, {_num(most)}]"))
        if (self.repaint is None) != (self.texture_in is None):
            missing = "texture_in" if self.texture_in is None else "repaint"
            found.append(Problem(missing, None, "given with " + ("repaint" if missing == "texture_in" else "texture_in")
                                 + ": the texture to keep and the faces to paint again go together"))
        elif self.repaint is not None and (self.mode, self.variant) != ("projection", "sequential"):
            found.append(Problem("repaint", self.repaint, "a repaint in projection mode, sequential variant (the "
                                 f"mode is {self.mode}, the variant {self.variant}); material mode redoes slots: only"))
        if not self.prompt.strip() and self.mode != "material":
            found.append(Problem("prompt", self.prompt, f"a non-empty text prompt in {self.mode} mode (material mode "
                                 "may leave it empty when every slot has a prompt)"))
        return found


@dataclass
class VideoRequest(SampledRequest):
    """A looping video from a prompt (a turntable when ``mesh`` is given)."""

    prompt: str = field(metadata={"spec": Spec("what to generate", required=True, nonempty=True,
                                               allowed="a non-empty text prompt", max_chars=MAX_PROMPT_CHARS)})
    mesh: str | None = param(None, "orbit this mesh (a turntable)", path=True, allowed=MESH_FILES,
                             none="for text-to-video")
    frames: int = param(24, "frames of the loop", lo=2, hi=MAX_FRAMES)
    fps: int = param(12, "frames per second", lo=1, hi=120)
    resolution: int | None = _size("frame side", 2048)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] | None = param(
        None, "override the bundle's noise schedule (AnimateDiff motion modules expect linear)",
        none="for the bundle's")
    elevation: float = param(20.0, "turntable: degrees the camera looks down on the mesh", lo=-89, hi=89)
    temporal: Literal["auto", "on", "off"] = param("auto", "frame attention (the bundle's motion module or "
                                                   "motion); off: each frame on its own")
    motion: str | None = param(None, "AnimateDiff motion adapter: diffusers folder or .safetensors",
                               none="for the bundle's")
    window: int | None = param(None, "frames per frame-attention call", lo=1, hi=64,
                               none="for the motion module's length")
    conditioning: Conditioning = param("auto", "turntable: auto = the depth ControlNet when the bundle has one, "
                                       "else image-to-image from the orbit's shading")
    strength: float = param(0.8, "turntable with img2img: how far frames move from the shading", lo=0, hi=1,
                            lo_open=True)
    relight: bool = param(True, "turntable with img2img: the headlight's shading multiplied onto the surface")
    anchored_noise: bool = param(True, "turntable: the mesh's pixels start from noise fixed on its surface")
    sync: float = param(0.0, "turntable: pull each bit of surface's latents toward their mean over the frames "
                        "that see it", lo=0, hi=1)
    sync_until: float = param(0.5, "turntable: share of the steps that sync", lo=0, hi=1)
    control_scale: float = param(1.0, "ControlNet residual scale", lo=0, hi=CONTROL_SCALE_MAX)
    max_faces: int = param(200_000, "meshes with more faces are refused", lo=1)

    def cross(self) -> list[Problem]:
        return _strength_problems(self, "strength", self.mesh is not None and self.conditioning == "img2img")


@dataclass
class TurntableRequest(VideoRequest):
    """A looping orbit of a mesh."""

    mesh: str = param(REQUIRED, "the mesh to orbit", required=True, path=True, allowed=MESH_FILES)


@dataclass
class AssetRequest(JobRequest):
    """A 3-D asset from a prompt: score distillation into a radiance field, then a mesh."""

    prompt: str = field(metadata={"spec": Spec("what to generate", required=True, nonempty=True,
                                               allowed="a non-empty text prompt", max_chars=MAX_PROMPT_CHARS)})
    guidance: float = param(50.0, "classifier-free guidance (score distillation wants a large one)", lo=0, hi=200)
    negative_weight: float = param(0.0, "> 0: push away from the negative prompt with this weight instead of "
                                   "using it as the unconditional", lo=0, hi=200)
    iters: int = param(600, "SDS iterations", lo=1, hi=100_000)
    resolution: int = param(64, "pixels of the renders the bundle scores", lo=32, hi=512, multiple=16)
    lr: float = param(0.01, "learning rate of the field", lo=0, hi=1, lo_open=True)
    preview_every: int = param(50, "a preview render every this many iterations (0: none)", lo=0)
    render: Literal["rgb", "latent"] = param("rgb", "latent: render at latent size, linear map to latents "
                                             "(cheaper, coarser)")
    view_prompts: bool = param(True, "add 'front view', 'side view', ... to the prompt per view")
    samples: int = param(48, "samples per ray", lo=8, hi=512)
    mesh_resolution: int = param(64, "extraction grid cells per axis", lo=16, hi=256)
    mesh_level: float = param(2.0, "density on the extracted surface", lo=0, lo_open=True)
    mesh_smooth: int = param(1, "passes of a box filter over the density before extraction", lo=0, hi=8)
    colours: Literal["texture", "vertex"] = param("vertex", "vertex colours, or a UV texture baked after "
                                                  "unwrapping the mesh (slower: minutes)")
    background: Literal["random", "learned"] = param("random", "random: a new solid colour each iteration, so "
                                                     "only the object can match the prompt")
    texture_size: int = param(512, "colours=texture: the texture's side, pixels", lo=64, hi=4096)
    size: float = param(1.0, "metres: the asset's largest side", lo=0, hi=1000, lo_open=True)
    state: str | None = param(None, "where a cancelled run saves its state, and resumes from",
                              suffixes=(".safetensors",), none="for beside the output")


@dataclass
class UpscaleRequest(SampledRequest):
    """An image made larger for presentation boards: resized (bicubic, or a super-resolution network), then given
    detail tile by tile with image-to-image of the same bundle, the tiles blended over their overlaps."""

    prompt: str = param("", "what the picture shows; empty: the prompt in the input PNG's provenance, else a "
                        "neutral detail prompt", max_chars=MAX_PROMPT_CHARS)
    image: str = param(REQUIRED, "the image to upscale (its PNG provenance is kept and extended)", required=True,
                       path=True)
    scale: int = param(2, "times larger on each side", lo=2, hi=4, multiple=2, allowed="2 or 4")
    strength: float = param(0.35, "image-to-image strength per tile: share of the schedule re-run (low keeps the "
                            "picture, high invents detail)", lo=0, hi=1, lo_open=True)
    tile: int = param(512, "tile side in output pixels (at least the bundle's native size)", lo=64, hi=2048,
                      multiple=8)
    overlap: int = param(64, "output pixels neighbouring tiles share, blended with a raised-cosine ramp", lo=0,
                         hi=1024)
    fidelity: float = param(1.0, "share of the difference to the input put back after the tiles (back-projection: "
                            "the result shrunk to the input's size matches it); 0 leaves the tiles as the bundle "
                            "drew them", lo=0, hi=1)
    sr_model: str | None = param(None, "a super-resolution network (.safetensors, loaded with spandrel) as the "
                                 "first pass", path=True, suffixes=(".safetensors",), none="for bicubic")

    def cross(self) -> list[Problem]:
        found = _strength_problems(self, "strength", True)
        if 2 * self.overlap > self.tile:
            found.append(Problem("overlap", self.overlap, f"at most half the tile, {self.tile // 2} with "
                                 f"tile={self.tile}, so each tile's ramps meet only its neighbours'"))
        return found


MAX_UPSCALE_SIDE = 16384  # pixels a side of an upscaled result (a 16k PNG is already ~0.8 GB of pixels)

STYLE_CAPTION = "a surface in the {trigger} style"  # for references without a sidecar .txt


@dataclass
class StyleRequest(JobRequest):
    """A style: a LoRA trained on 5 to 50 reference images (a practice's renders, boards, material photos) into the
    bundle, where jobs name it as a LoRA (``sfumato train style``; the add-on's "Train style from folder")."""

    prompt: str = param(STYLE_CAPTION, "the caption of references without a sidecar NAME.txt; {trigger} becomes the "
                        "trigger word", nonempty=True, max_chars=MAX_PROMPT_CHARS)
    folder: str = param(REQUIRED, "the folder of reference images", required=True, nonempty=True)
    name: str = param(REQUIRED, "the style's name in the bundle (jobs use it as a LoRA: NAME[:SCALE])", required=True,
                      nonempty=True, max_chars=100)
    trigger: str | None = param(None, "the word for {trigger} in captions", max_chars=100, none="for the name")
    steps: int = param(600, "optimiser steps", lo=1, hi=20_000)
    rank: int = param(8, "LoRA rank", lo=1, hi=128)
    resolution: int | None = param(None, "references are centre-cropped and resized to this square, pixels", lo=64,
                                   hi=1024, multiple=64, none="for the bundle's native size")
    overwrite: bool = param(False, "replace a style of that name")
    force: bool = param(False, "train on a CPU even when the measured estimate passes an hour")

    def cross(self) -> list[Problem]:
        found = [Problem("loras", self.loras, "none: a style is trained on the bundle itself")] if self.loras else []
        if "{trigger}" not in self.prompt:
            found.append(Problem("prompt", self.prompt, "a caption template holding {trigger}, the word that calls "
                                 f"the style up, e.g. {STYLE_CAPTION!r}"))
        return found


KINDS: dict[str, type] = {"image": ImageRequest, "texture": TextureRequest, "video": VideoRequest,
                          "turntable": TurntableRequest, "asset": AssetRequest, "upscale": UpscaleRequest,
                          "train_style": StyleRequest}
TRAINING_KINDS = ("train_style",)  # kinds the CLI runs as ``sfumato train ...``, not as job commands


# ---- problems --------------------------------------------------------------------------------------
def message(field_name: str, value: Any, allowed: str) -> str:
    """The one sentence every client says about a bad value."""
    shown = repr(value)
    if len(shown) > 120:
        shown = shown[:100] + f"... ({len(shown)} characters)"
    return f"{field_name}={shown} is not allowed: {allowed}"


@dataclass(frozen=True)
class Problem:
    field: str
    value: Any
    allowed: str

    def __str__(self) -> str:
        return message(self.field, self.value, self.allowed)


def strength_allowed(steps: int) -> str:
    """What an image-to-image strength may be with ``steps``: at least one step must run."""
    return f"at least 1/steps = {1 / max(steps, 1):.3g} with steps={steps}, so that one step runs"


def _strength_problems(req: Any, name: str, applies: bool) -> list[Problem]:
    strength = getattr(req, name)
    if applies and req.steps is not None and int(req.steps * strength) < 1:
        return [Problem(name, strength, strength_allowed(req.steps))]
    return []


def fields(cls: type) -> list[dataclasses.Field]:
    return list(dataclasses.fields(cls))


@functools.lru_cache(maxsize=None)  # checks run on every panel redraw: resolve each class's annotations once
def field_types(cls: type) -> dict[str, Any]:
    """Each field's annotated type, resolved."""
    return typing.get_type_hints(cls)


def unwrap(t: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    args = typing.get_args(t)
    if typing.get_origin(t) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return t, False


def choices(t: Any) -> tuple[Any, ...] | None:
    """A ``Literal``'s values, else None."""
    return typing.get_args(t) if typing.get_origin(t) is Literal else None


def one_of(values: Any) -> str:
    """``a, b or c``."""
    words = [str(v) for v in values]
    return ", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else "".join(words)


def _num(v: float) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def describe(f: dataclasses.Field, t: Any) -> str:
    """What a field allows, in words."""
    s = spec_of(f)
    base, optional = unwrap(t)
    tail = f", or none {s.none}" if optional and s.none else ", or none" if optional else ""
    if s.allowed:
        return s.allowed + tail
    values = choices(base)
    if values is not None:
        return one_of(values) + tail
    if base is bool:
        return "true or false"
    if base is str:
        what = "a non-empty text" if s.nonempty else "a text"
        if s.suffixes:
            what = f"a path ending in {' or '.join(s.suffixes)}"
        return what + tail
    if typing.get_origin(base) is tuple:
        return f"a list of one or more numbers {_num(s.lo)}..{_num(s.hi)}" + tail
    noun = "an integer" if base is int else "a number"
    if s.multiple and s.lo is not None and s.hi is not None:
        return f"a multiple of {s.multiple} from {_num(s.lo)} to {_num(s.hi)}" + tail
    if s.lo is not None and s.hi is not None:
        span = f" in ({_num(s.lo)}, {_num(s.hi)}]" if s.lo_open else f" {_num(s.lo)}..{_num(s.hi)}"
        return noun + span + tail
    if s.lo is not None:
        return (f"{noun} greater than {_num(s.lo)}" if s.lo_open else
                "a positive integer" if base is int and s.lo == 1 else f"{noun} ≥ {_num(s.lo)}") + tail
    return noun + tail


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _in_range(v: float, s: Spec) -> bool:
    if s.lo is not None and (v < s.lo or (s.lo_open and v == s.lo)):
        return False
    return s.hi is None or v <= s.hi


def value_ok(f: dataclasses.Field, t: Any, v: Any) -> bool:
    """Whether ``v`` is an allowed value of field ``f`` of type ``t`` (files are checked apart)."""
    s = spec_of(f)
    base, optional = unwrap(t)
    if v is None:
        return optional
    values = choices(base)
    if values is not None:
        return isinstance(v, str) and v in values
    if base is bool:
        return isinstance(v, bool)
    if base is str:
        return (isinstance(v, str) and len(v) <= s.max_chars and "\0" not in v and _encodable(v)
                and (not s.nonempty or bool(v.strip())) and (not s.suffixes or v.lower().endswith(s.suffixes)))
    if typing.get_origin(base) is tuple and typing.get_args(base)[0] is str:
        entry_ok = _pair_ok if s.pairs else _scaled_ok
        return isinstance(v, tuple) and len(v) <= s.max_items and all(entry_ok(e, s) for e in v)
    if typing.get_origin(base) is tuple:
        return (isinstance(v, tuple) and 1 <= len(v) <= s.max_items
                and all(_is_number(e) and _in_range(e, s) for e in v))
    if base is int:
        return _is_int(v) and _in_range(v, s) and (not s.multiple or v % s.multiple == 0)
    if base is float:
        return _is_number(v) and _in_range(v, s)
    raise AssertionError(f"no check for type {base!r}")


def _encodable(text: str) -> bool:
    """Text a file system and a tokenizer can take (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class ControlUse:
    """One ControlNet of a request: its kind, condition image, residual scale, and the share of the steps it acts
    on (diffusers' ``control_guidance_start`` / ``_end``: step i of n runs it when start <= i/n and (i+1)/n <= end)."""

    kind: str
    image: str
    scale: float = 1.0
    start: float = 0.0
    end: float = 1.0


def control_weight(text: str) -> tuple[float, float, float] | None:
    """``"0.8"`` -> (0.8, 0, 1), ``"0.8,0.2,0.6"`` -> (0.8, 0.2, 0.6): a ``control_weights`` entry's value as
    (scale, start, end); None when it is not one."""
    parts = [_float_or_none(p.strip()) for p in text.split(",")]
    if len(parts) not in (1, 3) or any(p is None for p in parts):
        return None
    scale, start, end = (parts + [0.0, 1.0])[:3] if len(parts) == 1 else parts
    if not (0 <= scale <= CONTROL_SCALE_MAX and 0 <= start < end <= 1):
        return None
    return scale, start, end


def control_uses(req: Any) -> list[ControlUse]:
    """A request's ControlNets in a fixed order (depth, normal, line art, canny): ``depth_image`` with
    ``control_scale``, then each ``controls`` entry with its ``control_weights`` (default: ``control_scale`` over
    every step). Assumes ``control_problems`` found nothing."""
    images = dict(e.partition("=")[::2] for e in req.controls)
    weights = {k: control_weight(v) for k, v in (e.partition("=")[::2] for e in req.control_weights)}
    if req.depth_image:
        images["depth"] = req.depth_image
    return [ControlUse(k, images[k], *(weights.get(k) or (req.control_scale, 0.0, 1.0)))
            for k in CONTROL_KINDS if k in images]


def control_problems(req: Any) -> list[Problem]:
    """``controls`` and ``control_weights`` entries that name no known kind, repeat one, clash with
    ``depth_image``, or give weights out of range or for a kind without an image."""
    found, seen = [], set()
    for entry in req.controls:
        kind, _, image = entry.partition("=")
        if kind not in CONTROL_KINDS:
            found.append(Problem("controls", entry, f"KIND=IMAGE with KIND one of {CONTROLS}"))
        elif kind in seen or (kind == "depth" and req.depth_image):
            found.append(Problem("controls", entry, f"one image per kind ({kind} is given twice"
                                 + (", here and as depth_image)" if kind == "depth" and req.depth_image else ")")))
        elif not image.strip():
            found.append(Problem("controls", entry, "KIND=IMAGE with the path of an image after the ="))
        seen.add(kind)
    if req.depth_image:
        seen.add("depth")
    weighed: set[str] = set()
    for entry in req.control_weights:
        kind, _, text = entry.partition("=")
        if kind in weighed:
            found.append(Problem("control_weights", entry, f"one entry per kind ({kind} is given twice)"))
        weighed.add(kind)
        if kind not in seen:
            found.append(Problem("control_weights", entry, "weights of a control the request has: "
                                 + (", ".join(k for k in CONTROL_KINDS if k in seen) or "it has none")))
        elif control_weight(text) is None:
            found.append(Problem("control_weights", entry, f"KIND=SCALE or KIND=SCALE,START,END with SCALE in "
                                 f"0..{_num(CONTROL_SCALE_MAX)} and 0 <= START < END <= 1"))
    return found


def split_scaled(entry: str) -> tuple[str, float | None]:
    """``"style.safetensors:0.8"`` -> ``("style.safetensors", 0.8)``; no number after the last colon: no scale (a
    Windows path's drive colon stays in the name)."""
    name, colon, tail = entry.rpartition(":")
    if colon and name:
        try:
            return name, float(tail)
        except ValueError:
            pass
    return entry, None


def _scaled_ok(entry: Any, s: Spec) -> bool:
    if not (isinstance(entry, str) and entry.strip() and len(entry) <= s.max_chars and "\0" not in entry
            and _encodable(entry)):
        return False
    _, scale = split_scaled(entry)
    return scale is None or (math.isfinite(scale) and _in_range(scale, s))


def _pair_ok(entry: Any, s: Spec) -> bool:
    return (isinstance(entry, str) and len(entry) <= s.max_chars and "\0" not in entry and _encodable(entry)
            and "=" in entry and bool(entry.partition("=")[0].strip()))


def _float_or_none(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def nearest(f: dataclasses.Field, v: Any) -> str:
    """For a multiple-of field: the nearest allowed values, as a hint."""
    s = spec_of(f)
    if not (s.multiple and _is_int(v) and s.lo is not None and s.hi is not None):
        return ""
    lo = int(min(s.hi - s.multiple, max(s.lo, v // s.multiple * s.multiple)))
    return f" (nearest: {lo} or {lo + s.multiple})"


def field_problems(req: Any, *, files: bool = False) -> list[Problem]:
    """Every field of ``req`` outside what its spec allows, in declaration order; with ``files``, the files
    a job reads must exist (the engine checks them, the add-on has not written them yet)."""
    hints = field_types(type(req))
    found = []
    for f in fields(type(req)):
        v, s = getattr(req, f.name), spec_of(f)
        if not value_ok(f, hints[f.name], v):
            found.append(Problem(f.name, v, describe(f, hints[f.name]) + nearest(f, v)))
        elif files and s.path and v is not None and not os.path.isfile(v):
            what = describe(f, hints[f.name])
            kind = f" ({what})" if s.suffixes else ""
            there = "a folder is there" if os.path.isdir(v) else "nothing is there"
            found.append(Problem(f.name, v, f"an existing file{kind}; {there}"))
    return found


def cross_problems(req: Any) -> list[Problem]:
    """The checks that tie fields together (image-to-image strength against the step count, ...); run them
    once the step count is known, after ``complete``."""
    cross = getattr(req, "cross", None)
    return cross() if cross is not None else []


def problems(req: Any, *, files: bool = False) -> list[Problem]:
    """Everything wrong with ``req``; the first is the one a user interface shows."""
    return field_problems(req, files=files) or cross_problems(req)


def parse(cls: type, data: Any) -> tuple[Any, list[Problem]]:
    """``(request, [])`` from a JSON object of ``cls``'s fields, or ``(None, problems)``: not an object, an unknown
    field (with the closest known name), or a required field missing. Lists become tuples where the field is a
    tuple; values are checked by ``field_problems``."""
    if not isinstance(data, dict):
        return None, [Problem("params", data, "a JSON object of settings")]
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            return None, [Problem(str(key), data[key], f"unknown field; {hint}allowed: {', '.join(known)}")]
    for name, f in known.items():
        if spec_of(f).required and name not in data:
            return None, [Problem(name, None, f"required: {describe(f, field_types(cls)[name])}")]
    hints = field_types(cls)
    values = {k: tuple(v) if isinstance(v, list) and typing.get_origin(unwrap(hints[k])[0]) is tuple else v
              for k, v in data.items()}
    return cls(**values), []


def draw_seed(rng: random.Random | None = None) -> int:
    """A random seed: the one range every client draws from."""
    return (rng or random).randint(0, MAX_SEED)


def complete(req: Any, default_steps: int, rng: random.Random | None = None) -> Any:
    """``req`` with what it left to the bundle or to chance filled in: ``steps`` (the bundle's
    ``default_steps``) and ``seed`` (random, then recorded)."""
    changes: dict[str, Any] = {}
    if getattr(req, "steps", 0) is None:
        changes["steps"] = default_steps
    if req.seed is None:
        changes["seed"] = draw_seed(rng)
    return dataclasses.replace(req, **changes) if changes else req


def defaults(cls: type) -> dict[str, Any]:
    """Each field's default (required fields left out)."""
    return {f.name: f.default for f in fields(cls) if not spec_of(f).required}


def limits(cls: type) -> dict[str, dict[str, Any]]:
    """Each field as plain data (for ``info`` and for clients that cannot import this file)."""
    hints = field_types(cls)
    out = {}
    for f in fields(cls):
        s, (base, optional) = spec_of(f), unwrap(hints[f.name])
        entry = {"default": None if s.required else f.default, "help": s.help, "allowed": describe(f, hints[f.name]),
                 "optional": optional, "required": s.required}
        entry.update({k: getattr(s, k) for k in ("lo", "hi", "multiple") if getattr(s, k) is not None})
        if choices(base) is not None:
            entry["choices"] = list(choices(base))
        out[f.name] = entry
    return out


# ---- material slots: a slot's name made into a prompt, and its tile's real size -------------------------
_EMPTY_WORDS = frozenset({"material", "materials", "mat", "mtl", "m", "default", "sfumato", "none", "untitled",
                          "new", "slot", "surface", "base", "no", "name", "unnamed", "object", "mesh"})
_PREFIXES = frozenset({"m", "mat", "mtl"})  # naming conventions' material prefixes: "M_Brick"
_SLOT_TILE_METRES = (  # words in a slot's name or prompt -> metres one tile covers (about a tile of the trained data)
    (("shingle", "roof tile", "roofing tile", "pantile"), 2.5),  # ~9 rows of ~0.28 m tiles
    (("standing seam", "seam"), 2.2),  # ~4 pans of 0.5 m
    (("corrugated",), 0.9),  # ~12 ribs of 76 mm
    (("brick", "masonry"), 0.9),  # ~12 courses of 75 mm
    (("plank", "board", "cladding", "timber", "wood", "deck", "siding"), 0.9),  # ~6 boards of 0.15 m
    (("parquet", "herringbone"), 1.0),
    (("slate",), 1.0),
    (("tile", "tiles"), 1.5),  # ~5 tiles of 0.3 m
    (("gravel", "pebble"), 1.0),
    (("marble", "stone"), 1.5),
    (("concrete", "plinth"), 2.0),
    (("stucco", "plaster", "render"), 2.0),
    (("grass", "lawn", "turf"), 2.0),
)


def slot_prompt(name: str) -> str:
    """A material slot's name as a prompt ("Roof_tiles.001" -> "roof tiles", "M_BrickFacade" -> "brick facade");
    ``""`` when the name says nothing ("Material.001", "sfumato-default"), so the main prompt stands in."""
    import re

    text = re.sub(r"\.\d+$", "", name.strip())  # Blender's duplicate suffix
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)  # camelCase
    words = [w for w in re.split(r"[\s_\-.:/\\|#,;()\[\]{}]+", text.lower())
             if w and not w.isdigit() and w not in _PREFIXES]
    return "" if all(w in _EMPTY_WORDS for w in words) else " ".join(words)


def slot_tile_metres(text: str) -> float | None:
    """Metres one tile of a slot's material covers at real scale, from the words of its name or prompt; None when
    no word names a material this knows (the request's ``tile_size`` then)."""
    import re

    low = " " + re.sub(r"[^a-z]+", " ", text.lower()) + " "
    for words, metres in _SLOT_TILE_METRES:
        if any(f" {w}" in low for w in words):
            return metres
    return None
