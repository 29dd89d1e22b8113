"""Score distillation: the injected gradient is the formula, and with an analytic denoiser whose
optimum is known (a Gaussian data distribution) SDS converges to it."""

from __future__ import annotations

import pytest
import torch

from sfumato.core.errors import BadParameter
from sfumato.threed.sds import SDSConfig, sds_step, weight

ALPHAS = torch.cumprod(1 - torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2, 0)


def gaussian_eps(mu: torch.Tensor, sigma: float):
    """The exact ε-prediction E[ε | z_t] for data ~ N(mu, σ² I): s·(z_t − a·mu) / (a²σ² + s²)."""

    def eps(z_t, t):
        ab = ALPHAS[t].view(-1, 1, 1, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        return s * (z_t - a * mu) / (a * a * sigma ** 2 + s * s)

    return eps


def test_injected_gradient_equals_the_formula():
    mu = torch.randn(1, 4, 8, 8)
    eps = gaussian_eps(mu, 0.5)
    z = torch.randn(2, 4, 8, 8, requires_grad=True)
    t = torch.tensor([100, 700])
    noise = torch.randn(2, 4, 8, 8)
    step = sds_step(eps, z, ALPHAS, SDSConfig(), t=t, noise=noise)
    step.loss.backward()
    ab = ALPHAS[t].view(-1, 1, 1, 1)
    expected = (1 - ab) * (eps(ab.sqrt() * z.detach() + (1 - ab).sqrt() * noise, t) - noise)
    # the loss averages over the batch, so each sample's gradient is g / B
    assert torch.allclose(z.grad * 2, expected, atol=1e-6)
    assert torch.allclose(step.grad, expected, atol=1e-6)


def test_sds_converges_to_the_gaussian_mode():
    torch.manual_seed(0)
    mu = torch.randn(1, 4, 8, 8)
    z = torch.zeros(1, 4, 8, 8, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.05)
    cfg = SDSConfig(t_min=0.02, t_max=0.98)
    g = torch.Generator().manual_seed(1)
    start = (z - mu).abs().mean().item()
    for i in range(600):
        opt.zero_grad()
        sds_step(gaussian_eps(mu, 0.3), z, ALPHAS, cfg, progress=i / 600, generator=g).loss.backward()
        opt.step()
    err = (z.detach() - mu).abs().mean().item()
    print(f"mean |z − μ|: {start:.3f} -> {err:.3f}")
    assert err < 0.1 * start


def test_weightings_and_annealing():
    t = torch.tensor([0, 500, 999])
    assert torch.allclose(weight(ALPHAS, t, "sds"), 1 - ALPHAS[t])
    assert torch.equal(weight(ALPHAS, t, "uniform"), torch.ones(3))
    cfg = SDSConfig(t_min=0.02, t_max=0.98, t_max_end=0.5)
    assert cfg.t_range(0.0) == (0.02, 0.98) and cfg.t_range(1.0) == (0.02, 0.5)


@pytest.mark.parametrize("kw,field", [({"t_min": 0.5, "t_max": 0.4}, "t_range"), ({"weighting": "x"}, "weighting"),
                                      ({"grad_clip": 0}, "grad_clip"), ({"guidance": -1}, "guidance")])
def test_bad_sds_settings(kw, field):
    with pytest.raises(BadParameter) as exc:
        SDSConfig(**kw).validate()
    assert exc.value.field == field


def test_sds_through_a_texture_and_the_embedded_bundle():
    """A texture seen through the rasterizer gets finite gradients from the shared denoiser via the VAE."""
    import trimesh

    from sfumato.core.bundle import resolve
    from sfumato.core.loading import load_models
    from sfumato.threed.cameras import rig
    from sfumato.threed.mesh import Mesh, ensure_uv
    from sfumato.threed.raster import rasterize, sample_texture
    from sfumato.threed.sds import alphas_cumprod, encode_with_grad, guided_eps

    models = load_models(resolve(None), torch.device("cpu"), torch.float32)
    models.vae.requires_grad_(False)
    tm = trimesh.creation.box((1.0, 1.0, 1.0))
    mesh = ensure_uv(Mesh(torch.tensor(tm.vertices, dtype=torch.float32), torch.tensor(tm.faces)), 64).normalised()
    cams = rig(torch.zeros(3), 1.0, 2, top=False)
    frags = rasterize(cams, mesh.vertices, mesh.faces, 64)
    uv = frags.interpolate(mesh.uv, mesh.faces)
    texture = torch.full((3, 64, 64), 0.5, requires_grad=True)
    eps = guided_eps(models, "red brick wall", "", 20.0)
    render = sample_texture(texture, uv, frags.mask) + 0.5 * (~frags.mask[:, None])
    step = sds_step(eps, encode_with_grad(models, render), alphas_cumprod(models), SDSConfig(guidance=20.0),
                    generator=torch.Generator().manual_seed(0))
    step.loss.backward()
    assert texture.grad is not None and torch.isfinite(texture.grad).all() and texture.grad.abs().sum() > 0
    assert torch.allclose(alphas_cumprod(models), ALPHAS, atol=1e-5)  # scaled_linear 0.00085..0.012


def test_weighted_negative_prompt_is_the_formula(sd15_models):
    """ε̂ = ε_∅ + s·(ε_p − ε_∅) − w·(ε_n − ε_∅), each ε the model's own prediction for that prompt."""
    from sfumato.threed.sds import guided_eps

    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([300, 300])
    own = lambda prompt: guided_eps(sd15_models, prompt, "", 1.0)(z, t)  # noqa: E731  guidance 1: no CFG
    e_p, e_0, e_n = own("red brick wall"), own(""), own("blurry, low quality")
    weighted = guided_eps(sd15_models, "red brick wall", "blurry, low quality", 7.5, negative_weight=2.0)(z, t)
    assert torch.allclose(weighted, e_0 + 7.5 * (e_p - e_0) - 2.0 * (e_n - e_0), atol=1e-4)
    # weight 0: the usual guidance, the negative prompt in place of the empty one
    usual = guided_eps(sd15_models, "red brick wall", "blurry, low quality", 7.5)(z, t)
    assert torch.allclose(usual, e_n + 7.5 * (e_p - e_n), atol=1e-4)
