"""Text → 3-D asset: a radiance field (``nerf.py``) optimised by score distillation (``sds.py``) with the
shared denoiser, then extracted to a coloured mesh (``extract.py``).

One iteration (DreamFusion, Poole et al. 2022, §3):

1. a random camera around the object and a point light near it (``nerf.sample_cameras``);
2. a shading: albedo for the first ``albedo_warmup`` of the run, then albedo / lambertian / textureless
   at random, so both the colour and the geometry must explain what the model wants to see;
3. render the field; encode the render through the VAE with gradients (``render="rgb"``), or render at the
   latent resolution and map colours to latents with a linear fit of the VAE encoder (``render="latent"``,
   much cheaper, coarser);
4. the SDS gradient w(t)·(ε̂ − ε) of the view's prompt ("…, front view", "…, side view", …), injected by
   ``sds.sds_step``, plus the orientation and opacity-entropy regularisers;
5. one Adam step on the field.

The run saves its state (field, optimiser moments, random generator, loss history) as safetensors when
cancelled or stopped by a non-finite loss, and resumes from it when started again with the same state
file: a cancelled and resumed run ends where an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..core.errors import BadParameter, Cancelled, SfumatoError
from ..core.loading import Models
from ..core.schema import AssetRequest
from .cameras import orbit, view_prompt
from .extract import ExtractConfig, Extracted, extract
from .nerf import CameraRange, FieldConfig, RadianceField, opacity_entropy, render, sample_cameras
from .sds import SDSConfig, alphas_cumprod, encode_with_grad, guided_eps, sds_step

@dataclass
class Settings:
    """What the loop needs beyond the request; defaults follow DreamFusion where it gives numbers."""

    sds: SDSConfig
    field: FieldConfig
    cameras: CameraRange
    albedo_warmup: float = 0.1  # share of the run rendered with albedo shading only
    shading_probs: tuple[float, float, float] = (0.2, 0.4, 0.4)  # albedo, lambertian, textureless after it
    orientation_weight: float = 10.0
    entropy_weight: float = 1.0
    coarse_to_fine: float = 0.5  # grid levels switch on one by one over this share of the run (0: all at once)
    probe_views: int = 4  # fixed (view, t, ε) draws for the probe loss measured at the start and the end
    checkpoint_seconds: float = 60.0  # the state is saved this often while running, so a crash loses at most
    # this much work (0: saved only on cancel or a non-finite loss); saving changes nothing the run computes


def settings_for(req: AssetRequest) -> Settings:
    return Settings(sds=SDSConfig(guidance=float(req.guidance), t_min=0.02, t_max=0.98, t_max_end=0.5).validate(),
                    field=FieldConfig(samples=req.samples), cameras=CameraRange())


@dataclass
class AssetStep:
    step: int  # iterations done
    total: int
    loss: float  # the SDS loss ½‖g‖² of this iteration
    preview: Image.Image | None  # a fixed-view render, every preview_every iterations


@dataclass
class AssetResult:
    field: RadianceField
    extracted: Extracted
    preview: Image.Image  # four views side by side
    metadata: dict[str, Any]
    metrics: dict[str, Any]


# ----------------------------------------------------------------------------------- the renders
def check_resolution(models: Models, req: AssetRequest) -> int:
    """The latent size the bundle sees; the U-Net must be able to halve it down to its deepest block."""
    f = models.vae_scale_factor
    depth = 2 ** (len(models.unet.config.block_out_channels) - 1)
    if req.resolution % (f * depth):
        raise BadParameter("resolution", req.resolution, f"a multiple of {f * depth} for bundle {models.bundle.name} "
                           f"(VAE factor {f} × U-Net depth {depth})")
    return req.resolution // f


def latent_map(models: Models, samples: int = 8, size: int = 64) -> torch.Tensor:
    """Least-squares M (4, C) with z ≈ [rgb, 1] @ M, fitted on the VAE's own encodings of smooth colour
    fields (the reverse of ``core.latents.fit_preview_map``): the cheap encoder of ``render="latent"``."""
    if "rgb_to_latent" in models.extras:
        return models.extras["rgb_to_latent"]
    g = torch.Generator().manual_seed(0)
    fields = torch.nn.functional.interpolate(torch.rand(samples, 3, 4, 4, generator=g), size=(size, size),
                                             mode="bilinear", align_corners=False)
    with torch.no_grad():
        z = models.vae.encode((fields * 2 - 1).to(models.device, models.vae.dtype)).latent_dist.mean.float().cpu()
    z = z * models.vae.config.scaling_factor
    rgb = torch.nn.functional.adaptive_avg_pool2d(fields, z.shape[-2:])
    a = torch.cat([rgb, torch.ones_like(rgb[:, :1])], 1).permute(0, 2, 3, 1).reshape(-1, 4)
    b = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    models.extras["rgb_to_latent"] = torch.linalg.lstsq(a.double(), b.double()).solution.float()
    return models.extras["rgb_to_latent"]


def to_latents(models: Models, image: torch.Tensor, mode: str) -> torch.Tensor:
    """Render (B, 3, H, W) → latents (B, C, h, w) with gradients, through the VAE or the linear map."""
    if mode == "latent":
        m = latent_map(models).to(image)
        rgb1 = torch.cat([image, torch.ones_like(image[:, :1])], 1)
        return torch.einsum("bkhw,kc->bchw", rgb1, m)
    return encode_with_grad(models, image.to(models.device)).float()


def preview_views(field: RadianceField, size: int, views: int = 4) -> Image.Image:
    """``views`` renders around the object (albedo), side by side."""
    from ..core.latents import tensor_to_pil

    cams = orbit(torch.zeros(3), 3.2, [360.0 * k / views + 30.0 for k in range(views)], [15.0] * views, 40.0)
    with torch.no_grad():
        image = render(field, cams, size).image
    return tensor_to_pil(torch.cat(list(image), dim=2)[None])[0]


# ---------------------------------------------------------------------------------------- state
def save_state(path: Path, field: RadianceField, optim: torch.optim.Optimizer, generator: torch.Generator,
               iteration: int, info: dict[str, Any]) -> None:
    """Field, Adam moments, random generator and ``info`` (JSON) in one safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors = {f"field.{k}": v.detach().contiguous() for k, v in field.state_dict().items()}
    for idx, state in optim.state_dict()["state"].items():
        for k, v in state.items():
            tensors[f"optim.{idx}.{k}"] = torch.as_tensor(v).detach().contiguous()
    tensors["rng"] = generator.get_state()
    tmp = path.with_name(path.name + ".part")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(tmp), metadata={"iteration": str(iteration), "info": json.dumps(info)})
    tmp.replace(path)


def load_state(path: Path, field: RadianceField, optim: torch.optim.Optimizer, generator: torch.Generator,
               expect: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Restore what ``save_state`` wrote; a state made with other settings (``expect``) is refused, and a file
    that is not such a state (damaged, cut short, another file) is a ``BadParameter`` on ``state``."""
    try:
        return _load_state(path, field, optim, generator, expect)
    except SfumatoError:
        raise
    except Exception as exc:  # safetensors, json and torch raise assorted types for a damaged file
        raise BadParameter("state", str(path), f"a state file saved by a cancelled asset run ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'}); delete it to start "
                           "over") from None


def _load_state(path: Path, field: RadianceField, optim: torch.optim.Optimizer, generator: torch.Generator,
                expect: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
        info = json.loads(meta.get("info", "{}"))
        differs = {k: (info.get("settings", {}).get(k), v) for k, v in expect.items()
                   if info.get("settings", {}).get(k) != v}
        if differs:
            raise SfumatoError(f"the saved asset state {path} was made with other settings "
                               f"({', '.join(f'{k}: {a} then, {b} now' for k, (a, b) in differs.items())}); "
                               "delete it to start over, or run with the same settings to resume")
        field.load_state_dict({k[len("field."):]: f.get_tensor(k) for k in f.keys() if k.startswith("field.")})
        optim_state: dict[int, dict[str, torch.Tensor]] = {}
        for k in f.keys():
            if k.startswith("optim."):
                _, idx, name = k.split(".", 2)
                optim_state.setdefault(int(idx), {})[name] = f.get_tensor(k)
        optim.load_state_dict({"state": optim_state, "param_groups": optim.state_dict()["param_groups"]})
        generator.set_state(f.get_tensor("rng"))
    return int(meta.get("iteration", 0)), info


# ------------------------------------------------------------------------------------------ loop
def probe_loss(field: RadianceField, models: Models, eps, alphas: torch.Tensor, st: Settings, req: AssetRequest,
               size: int, seed: int) -> float:
    """The SDS loss on ``probe_views`` fixed draws of (view, t, ε) with albedo shading: the same draws at
    the start and at the end, so the two numbers compare the field, not the luck of the draw."""
    g = torch.Generator().manual_seed(seed + 7919)
    total = 0.0
    with torch.no_grad():
        for _ in range(st.probe_views):
            cams, _ = sample_cameras(1, g, st.cameras)
            image = render(field, cams, size).image
            z = to_latents(models, image, req.render)
            t = torch.full((1,), int(0.5 * (alphas.shape[0] - 1)))
            text = view_prompt(req.prompt, cams.azimuth[0], cams.elevation[0]) if req.view_prompts else req.prompt
            total += float(sds_step(eps(text), z, alphas, st.sds, t=t, generator=g).loss)
    return total / st.probe_views


def optimise(req: AssetRequest, models: Models, *, seed: int, settings: Settings | None = None,
             on_step: Callable[[AssetStep], None] | None = None,
             keep_state: bool = False) -> tuple[RadianceField, dict[str, Any]]:
    """Run the SDS loop (module doc); returns the field and run statistics. ``on_step`` may raise
    ``Cancelled``: the state is saved (when ``req.state``) and the exception goes on. A finished run removes its
    state, or with ``keep_state`` saves it as finished (the caller removes it once the mesh is out)."""
    st = settings or settings_for(req)
    latent_size = check_resolution(models, req)
    size = latent_size if req.render == "latent" else req.resolution
    models.unet.requires_grad_(False)
    models.vae.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    field = RadianceField(st.field, generator=g)
    optim = torch.optim.Adam(field.parameters(), lr=req.lr, betas=(0.9, 0.99), eps=1e-15)
    alphas = alphas_cumprod(models)
    eps_by_prompt: dict[str, Any] = {}

    def eps(text: str):
        if text not in eps_by_prompt:
            eps_by_prompt[text] = guided_eps(models, text, req.negative, st.sds.guidance, req.negative_weight)
        return eps_by_prompt[text]

    state_path = Path(req.state) if req.state else None
    expect = {"resolution": req.resolution, "render": req.render, "samples": req.samples, "seed": seed,
              "iters": req.iters, "lr": req.lr, "guidance": float(req.guidance), "prompt": req.prompt,
              "background": req.background, "field": asdict(st.field)}
    expect["field"] = json.loads(json.dumps(expect["field"]))  # tuples → lists, as they come back from JSON
    start, info = 0, {}
    if state_path is not None and state_path.is_file():
        start, info = load_state(state_path, field, optim, g, expect)
    losses: list[float] = info.get("losses", [])
    probe_first = info.get("probe_first")
    if probe_first is None:
        probe_first = probe_loss(field, models, eps, alphas, st, req, size, seed)

    def save(iteration: int) -> None:
        if state_path is not None:
            save_state(state_path, field, optim, g, iteration,
                       {"settings": expect, "losses": losses, "probe_first": probe_first})

    last_good = {k: v.detach().clone() for k, v in field.state_dict().items()}
    started = saved_at = time.perf_counter()
    shadings = ("albedo", "lambertian", "textureless")
    i = start
    try:
        for i in range(start, req.iters):
            progress = i / max(req.iters - 1, 1)
            if st.coarse_to_fine > 0:
                field.active_levels = min(st.field.levels, 1 + int(st.field.levels * progress / st.coarse_to_fine))
            # 1. a camera, a light, a shading
            cams, light = sample_cameras(1, g, st.cameras)
            pick = float(torch.rand((), generator=g))
            shading = "albedo" if progress < st.albedo_warmup else \
                shadings[0 if pick < st.shading_probs[0] else 1 if pick < sum(st.shading_probs[:2]) else 2]
            # 2. render, to latents
            backdrop = torch.rand((1, 3), generator=g) if req.background == "random" else None
            out = render(field, cams, size, shading=shading, light=light, normals=True, generator=g, background=backdrop)
            z = to_latents(models, out.image, req.render)
            # 3. SDS gradient of the view's prompt, plus the regularisers
            text = view_prompt(req.prompt, cams.azimuth[0], cams.elevation[0]) if req.view_prompts else req.prompt
            step = sds_step(eps(text), z, alphas, st.sds, progress=progress, generator=g)
            total = step.loss + st.orientation_weight * out.orientation + st.entropy_weight * opacity_entropy(out.opacity)
            loss = float(step.loss.detach())
            if not (math.isfinite(loss) and math.isfinite(float(total.detach()))):
                field.load_state_dict(last_good)
                save(i)
                raise SfumatoError(f"the SDS loss became {loss} at iteration {i}; stopped and kept the last good "
                                   f"field{f' in {state_path}' if state_path else ''} (lower lr or guidance)")
            # 4. one Adam step
            optim.zero_grad(set_to_none=True)
            total.backward()
            optim.step()
            losses.append(round(loss, 5))
            last_good = {k: v.detach().clone() for k, v in field.state_dict().items()}
            if st.checkpoint_seconds and time.perf_counter() - saved_at >= st.checkpoint_seconds:
                save(i + 1)  # a checkpoint: a crash (killed worker, power cut) resumes from here
                saved_at = time.perf_counter()
            if on_step is not None:
                every = req.preview_every
                show = every > 0 and ((i + 1) % every == 0 or i + 1 == req.iters)
                on_step(AssetStep(i + 1, req.iters, loss, preview_views(field, max(size, 64), 1) if show else None))
    except Cancelled:
        save(i + 1)
        raise
    if keep_state:
        save(req.iters)  # a cancel while the mesh is extracted resumes with no iteration left
    elif state_path is not None and state_path.is_file():
        state_path.unlink()  # finished: nothing to resume
    field.active_levels = st.field.levels
    tenth = max(1, len(losses) // 10)
    stats = {"iters": req.iters, "resumed_from": start, "seconds": round(time.perf_counter() - started, 2),
             "iters_per_second": round((req.iters - start) / max(time.perf_counter() - started, 1e-9), 3),
             "loss_first": round(sum(losses[:tenth]) / tenth, 4) if losses else None,
             "loss_last": round(sum(losses[-tenth:]) / tenth, 4) if losses else None,
             "probe_first": round(probe_first, 4),
             "probe_last": round(probe_loss(field, models, eps, alphas, st, req, size, seed), 4),
             "losses": losses}
    return field, stats


def make_asset(req: AssetRequest, models: Models, *, on_step: Callable[[AssetStep], None] | None = None,
               settings: Settings | None = None, on_stage: Callable[[str], None] | None = None,
               check: Callable[[], None] | None = None) -> AssetResult:
    """Optimise the field for ``req`` (checked once, where it starts: a job's door or here), extract the mesh; the
    caller saves (``save_result``). ``on_stage`` hears when the stage after the iterations starts ("extracting");
    ``check`` is called between the extraction's pieces and may raise ``Cancelled`` (the state stays, finished)."""
    from ..core import lora
    from ..core.checks import ensure_checked
    from ..core.provenance import version

    req = ensure_checked(req, models.bundle)
    provenance = lora.apply(models, req.loras)
    seed = req.seed
    st = settings or settings_for(req)
    with torch.enable_grad():
        field, stats = optimise(req, models, seed=seed, settings=st, on_step=on_step, keep_state=True)
    field.eval()
    if on_stage is not None:
        on_stage("extracting")
    with torch.no_grad():
        extracted = extract(field.density, lambda x: field.query(x)[1], st.field.bound,
                            ExtractConfig(resolution=req.mesh_resolution, level=req.mesh_level, colours=req.colours,
                                          smooth=req.mesh_smooth,
                                          texture_size=req.texture_size, size=req.size), check=check)
        preview = preview_views(field, max(req.resolution, 128))
    if req.state and Path(req.state).is_file():
        Path(req.state).unlink()  # the mesh is out: nothing to resume
    meta = {"prompt": req.prompt, "negative": req.negative, "negative_weight": req.negative_weight, "seed": seed, "bundle": models.bundle.name,
            "bundle_hash": models.bundle.identity(), "guidance": req.guidance, "iters": req.iters,
            "resolution": req.resolution, "lr": req.lr, "render": req.render, "view_prompts": req.view_prompts,
            "samples": req.samples, "mesh_resolution": req.mesh_resolution, "mesh_level": req.mesh_level,
            "mesh_smooth": req.mesh_smooth,
            "colours": req.colours, "background": req.background, "size_m": req.size,
            "t_range": [st.sds.t_min, st.sds.t_max, st.sds.t_max_end],
            "device": str(models.device), "dtype": str(models.dtype).replace("torch.", ""),
            "sfumato_version": version(), "head": "asset", **({"loras": provenance} if provenance else {})}
    metrics = {k: v for k, v in stats.items() if k != "losses"}
    metrics.update(extracted.stats)
    return AssetResult(field, extracted, preview, meta, {**metrics, "loss_curve": stats["losses"]})


def save_result(result: AssetResult, output: Path) -> dict[str, str]:
    """``out.glb``, ``out.png`` (four views, provenance in its text chunk) and ``out.json`` (provenance,
    metrics, the loss curve) beside it. Returns the paths written."""
    from ..core.provenance import atomic_write, save_png
    from .extract import save_vertex_colour_glb
    from .mesh import save_glb

    output = Path(output)
    ex = result.extracted
    if ex.texture is not None:
        glb = save_glb(ex.mesh, ex.texture, output, result.metadata)
    else:
        colours = ex.vertex_colours if ex.vertex_colours is not None else torch.full((len(ex.mesh.vertices), 3), 0.8)
        glb = save_vertex_colour_glb(ex.mesh, colours, output, result.metadata)
    png = save_png(result.preview, output.with_suffix(".png"), result.metadata)
    sidecar = {"metadata": result.metadata, "metrics": result.metrics}
    js = atomic_write(output.with_suffix(".json"),
                      lambda tmp: Path(tmp).write_text(json.dumps(sidecar, indent=2, default=str)))
    return {"glb": str(glb), "preview": str(png), "sidecar": str(js)}
