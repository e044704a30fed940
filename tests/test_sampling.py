"""Samplers and schedules, checked against k-diffusion 0.1.1 (loaded from its files, without its
package __init__, which needs torchvision) and against closed forms."""

from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from storyboard.errors import StoryboardError
from storyboard.render.denoiser import scaled_linear_alphas_cumprod
from storyboard.render.sampling import (
    SAMPLER_NAMES,
    SAMPLERS,
    ddim_sigmas,
    discrete_sigmas,
    get_sigmas,
    model_sigmas,
    parse_sampler_name,
    sample,
    table_sigma_to_t,
    table_t_to_sigma,
)

_PKG = "_kdiffusion_ref"


def load_kdiffusion() -> tuple[Any, Any] | None:
    if f"{_PKG}.sampling" in sys.modules:
        return sys.modules[f"{_PKG}.sampling"], sys.modules[f"{_PKG}.external"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    for dep in ("scipy", "torchsde", "tqdm"):
        if importlib.util.find_spec(dep) is None:
            return None
    root = Path(next(iter(spec.submodule_search_locations)))
    pkg = types.ModuleType(_PKG)
    pkg.__path__ = [str(root)]
    utils = types.ModuleType(f"{_PKG}.utils")

    def append_dims(x: torch.Tensor, target_dims: int) -> torch.Tensor:
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims  # type: ignore[attr-defined]
    sys.modules[_PKG] = pkg
    sys.modules[f"{_PKG}.utils"] = utils
    if importlib.util.find_spec("torchdiffeq") is None:
        stub = types.ModuleType("torchdiffeq")
        stub.odeint = None  # type: ignore[attr-defined]  # only the adaptive sampler uses it
        sys.modules["torchdiffeq"] = stub
    mods = []
    for name in ("sampling", "external"):
        mspec = importlib.util.spec_from_file_location(f"{_PKG}.{name}", root / f"{name}.py")
        assert mspec is not None and mspec.loader is not None
        mod = importlib.util.module_from_spec(mspec)
        sys.modules[f"{_PKG}.{name}"] = mod
        mspec.loader.exec_module(mod)
        mods.append(mod)
    return mods[0], mods[1]


REF = load_kdiffusion()
needs_kd = pytest.mark.skipif(REF is None, reason="k-diffusion reference (dev dependency) not installed")

C = 0.8  # data std of the toy Gaussian data


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Exact denoiser for N(0, C^2) data."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return x * C**2 / (s**2 + C**2)


def toy_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A nonlinear toy denoiser: every branch of a sampler changes its output."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return x * C**2 / (s**2 + C**2) + 0.3 * torch.tanh(x) * s / (1 + s)


def seq_noise(seed: int, shape: tuple[int, ...], dtype: torch.dtype):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)

    def draw(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)

    return draw


SD_TABLE = discrete_sigmas(scaled_linear_alphas_cumprod())

KD_NAMES = {
    "euler": "sample_euler",
    "euler_ancestral": "sample_euler_ancestral",
    "heun": "sample_heun",
    "dpm_2": "sample_dpm_2",
    "dpm_2_ancestral": "sample_dpm_2_ancestral",
    "dpmpp_2s_ancestral": "sample_dpmpp_2s_ancestral",
    "dpmpp_2m": "sample_dpmpp_2m",
    "dpmpp_sde": "sample_dpmpp_sde",
    "dpmpp_2m_sde": "sample_dpmpp_2m_sde",
    "lms": "sample_lms",
    "dpmpp_3m_sde": "sample_dpmpp_3m_sde",
}


@needs_kd
@pytest.mark.parametrize("name", sorted(KD_NAMES))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sampler_matches_kdiffusion(name: str, dtype: torch.dtype) -> None:
    assert REF is not None
    kd_sampling = REF[0]
    spec = parse_sampler_name(SAMPLERS[name].label, "Karras")
    sigmas = spec.sigmas(12, SD_TABLE).to(dtype)
    shape = (2, 4, 3, 3)
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
    x0 = x0 * sigmas[0]
    kwargs = {}
    if SAMPLERS[name].stochastic:
        kwargs["noise_sampler"] = seq_noise(7, shape, dtype)
    ref = getattr(kd_sampling, KD_NAMES[name])(toy_denoiser, x0.clone(), sigmas, disable=True, **kwargs)
    ours = sample(name, toy_denoiser, x0.clone(), sigmas, seq_noise(7, shape, dtype) if kwargs else None)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    assert ours.dtype == dtype
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)


@needs_kd
def test_dpmpp_2m_sde_heun_matches_kdiffusion() -> None:
    assert REF is not None
    sigmas = parse_sampler_name("DPM++ 2M SDE Heun").sigmas(10, SD_TABLE).double()
    shape = (1, 4, 2, 2)
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * sigmas[0]
    ref = REF[0].sample_dpmpp_2m_sde(
        toy_denoiser,
        x0,
        sigmas,
        disable=True,
        noise_sampler=seq_noise(5, shape, torch.float64),
        solver_type="heun",
    )
    ours = sample("dpmpp_2m_sde_heun", toy_denoiser, x0, sigmas, seq_noise(5, shape, torch.float64))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("name", "rtol"), [("euler", 1e-2), ("heun", 1e-4), ("dpm_2", 1e-4), ("dpmpp_2m", 1e-4), ("lms", 1e-4)]
)
def test_deterministic_samplers_follow_gaussian_ode(name: str, rtol: float) -> None:
    # For N(0, C^2) data the probability-flow ODE is solved by x(s) = x(s0) * sqrt(s^2+C^2)/sqrt(s0^2+C^2);
    # with sigma_min > 0 removed, a fine schedule must land on it.
    sigmas = get_sigmas("karras", 200, 0.05, 10.0).double()[:-1]
    x0 = torch.randn((1, 4, 2, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 10.0
    out = sample(name, gaussian_denoiser, x0, sigmas)
    exact = x0 * math.sqrt(0.05**2 + C**2) / math.sqrt(10.0**2 + C**2)
    torch.testing.assert_close(out, exact, rtol=rtol, atol=0)


def test_karras_closed_form_sd1() -> None:
    n = 20
    sig = get_sigmas("karras", n, 0.0292, 14.6146)
    assert sig.shape == (n + 1,) and sig[-1] == 0
    lo, hi = 0.0292 ** (1 / 7), 14.6146 ** (1 / 7)
    expected = torch.tensor([(hi + i / (n - 1) * (lo - hi)) ** 7 for i in range(n)])
    torch.testing.assert_close(sig[:-1], expected.float(), rtol=1e-6, atol=0)
    assert sig[0].item() == pytest.approx(14.6146, rel=1e-6)
    assert sig[-2].item() == pytest.approx(0.0292, rel=1e-6)


def test_exponential_schedule() -> None:
    sig = get_sigmas("exponential", 5, 0.1, 10.0).double()
    torch.testing.assert_close(
        sig[:-1], torch.tensor([10.0, 10**0.5, 1.0, 10**-0.5, 0.1], dtype=torch.float64)
    )


def test_sd_sigma_table_endpoints() -> None:
    # Known SD1 values: sigma_min 0.0292, sigma_max 14.6146.
    assert SD_TABLE[0].item() == pytest.approx(0.029168, abs=1e-5)
    assert SD_TABLE[-1].item() == pytest.approx(14.614642, abs=1e-5)


def test_t_sigma_roundtrip() -> None:
    t = torch.tensor([0.0, 0.5, 10.25, 500.0, 998.7, 999.0])
    torch.testing.assert_close(
        table_sigma_to_t(SD_TABLE, table_t_to_sigma(SD_TABLE, t)), t, atol=2e-3, rtol=0
    )
    ints = torch.arange(0, 1000, 37).float()
    torch.testing.assert_close(table_t_to_sigma(SD_TABLE, ints), SD_TABLE[ints.long()])


@needs_kd
def test_schedules_match_kdiffusion_and_webui() -> None:
    assert REF is not None
    kd_sampling, kd_external = REF

    class Inner(torch.nn.Module):
        alphas_cumprod = scaled_linear_alphas_cumprod()

    wrap = kd_external.CompVisDenoiser(Inner())
    smin, smax = wrap.sigmas[0].item(), wrap.sigmas[-1].item()
    # Automatic for DPM++ 2S a = Karras over the model's sigma range.
    torch.testing.assert_close(
        parse_sampler_name("DPM++ 2S a").sigmas(20, SD_TABLE),
        kd_sampling.get_sigmas_karras(20, smin, smax),
        rtol=0,
        atol=0,
    )
    # Automatic for Euler a = the model's own (Uniform) schedule.
    torch.testing.assert_close(
        parse_sampler_name("Euler a").sigmas(20, SD_TABLE), wrap.get_sigmas(20), rtol=0, atol=0
    )
    torch.testing.assert_close(model_sigmas(SD_TABLE, 7), wrap.get_sigmas(7), rtol=0, atol=0)
    torch.testing.assert_close(
        parse_sampler_name("DPM++ 2M SDE").sigmas(15, SD_TABLE),
        kd_sampling.get_sigmas_exponential(15, smin, smax),
        rtol=0,
        atol=0,
    )
    # DPM2 drops the penultimate sigma of a one-step-longer schedule.
    dpm2 = parse_sampler_name("DPM2").sigmas(20, SD_TABLE)
    k21 = kd_sampling.get_sigmas_karras(21, smin, smax)
    torch.testing.assert_close(dpm2, torch.cat([k21[:-2], k21[-1:]]), rtol=0, atol=0)
    assert len(dpm2) == 21
    # sigma_to_t agrees with k-diffusion's continuous rule.
    s = torch.tensor([0.05, 0.7, 3.3, 14.0])
    torch.testing.assert_close(table_sigma_to_t(SD_TABLE, s), wrap.sigma_to_t(s))


def test_sgm_uniform_schedule() -> None:
    sig = get_sigmas("SGM Uniform", 4, SD_TABLE[0].item(), SD_TABLE[-1].item(), sigmas_table=SD_TABLE)
    # linspace(999, 0, 5)[:-1] = 999, 749.25, 499.5, 249.75 -> log-sigma interpolation
    expected = table_t_to_sigma(SD_TABLE, torch.tensor([999.0, 749.25, 499.5, 249.75]))
    torch.testing.assert_close(sig[:-1], expected, rtol=1e-6, atol=1e-6)
    assert sig[-1] == 0


def test_ddim_schedule_is_webui_timesteps() -> None:
    sig = ddim_sigmas(SD_TABLE, 20)
    assert len(sig) == 20
    assert sig[0] == SD_TABLE[951] and sig[-1] == SD_TABLE[1]
    spec = parse_sampler_name("DDIM")
    calls = []

    def counting(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        calls.append(s)
        return gaussian_denoiser(x, s)

    sample("ddim", counting, torch.ones(1, 4, 1, 1), sig)
    assert len(calls) == spec.model_evals(20) == 19


def test_ddim_equals_vp_ddim_update() -> None:
    # One DDIM (eta 0) step in VP space equals our sigma-space step.
    acp = scaled_linear_alphas_cumprod().double()
    table = discrete_sigmas(acp)
    t, t_prev = 951, 901
    x_vp = torch.randn((1, 4, 2, 2), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sig = table[[t, t_prev]]
    x_sig = x_vp / acp[t].sqrt()
    out = sample("ddim", gaussian_denoiser, x_sig, sig) * acp[t_prev].sqrt()
    x0 = gaussian_denoiser(x_sig, sig[:1])
    eps = (x_vp - acp[t].sqrt() * x0) / (1 - acp[t]).sqrt()
    ref = acp[t_prev].sqrt() * x0 + (1 - acp[t_prev]).sqrt() * eps
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("text", "sampler", "schedule", "infotext", "label"),
    [
        ("Euler a", "euler_ancestral", "automatic", "Euler a", None),
        ("euler", "euler", "automatic", "Euler", None),
        ("DPM++ 2S a Karras", "dpmpp_2s_ancestral", "karras", "DPM++ 2S a", "Karras"),
        ("DPM++ 2S a", "dpmpp_2s_ancestral", "automatic", "DPM++ 2S a", "Karras"),
        ("dpm++ 2m karras", "dpmpp_2m", "karras", "DPM++ 2M", "Karras"),
        ("DPM++ 2M", "dpmpp_2m", "automatic", "DPM++ 2M", "Karras"),
        ("DPM++ SDE Karras", "dpmpp_sde", "karras", "DPM++ SDE", "Karras"),
        ("DPM++ 2M SDE Exponential", "dpmpp_2m_sde", "exponential", "DPM++ 2M SDE", "Exponential"),
        ("DPM++ 2M SDE Heun", "dpmpp_2m_sde_heun", "automatic", "DPM++ 2M SDE Heun", "Exponential"),
        ("DPM2 a", "dpm_2_ancestral", "automatic", "DPM2 a", "Karras"),
        ("LMS", "lms", "automatic", "LMS", None),
        ("Heun", "heun", "automatic", "Heun", None),
        ("DDIM", "ddim", "automatic", "DDIM", None),
        ("k_dpmpp_2s_a", "dpmpp_2s_ancestral", "automatic", "DPM++ 2S a", "Karras"),
    ],
)
def test_parse_sampler_name(text: str, sampler: str, schedule: str, infotext: str, label: str | None) -> None:
    spec = parse_sampler_name(text)
    assert (spec.sampler, spec.schedule, spec.infotext_name, spec.schedule_label) == (
        sampler,
        schedule,
        infotext,
        label,
    )


def test_parse_separate_schedule() -> None:
    spec = parse_sampler_name("Euler a", "Karras")
    assert spec.schedule == "karras" and spec.schedule_label == "Karras"
    assert parse_sampler_name("Euler", "uniform").schedule_label == "Uniform"
    assert parse_sampler_name("DPM++ 2M Karras", "Automatic").schedule == "karras"
    with pytest.raises(StoryboardError, match="names schedule"):
        parse_sampler_name("DPM++ 2M Karras", "Exponential")
    with pytest.raises(StoryboardError, match="schedule type"):
        parse_sampler_name("Euler", "Fancy")


def test_unknown_sampler_suggests_close_names() -> None:
    with pytest.raises(StoryboardError) as err:
        parse_sampler_name("DPM++ 2S b")
    assert "DPM++ 2S a" in str(err.value)
    assert "Euler a" in str(err.value)  # lists the known names


def test_sampler_names_list() -> None:
    assert SAMPLER_NAMES[:2] == ["DPM++ 2M", "DPM++ SDE"]
    assert {"Euler a", "Euler", "DPM++ 2S a", "DPM2 a", "LMS", "Heun", "DDIM"} <= set(SAMPLER_NAMES)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_model_evals_counts_real_calls(name: str) -> None:
    spec = parse_sampler_name(name)
    steps = 20
    sigmas = spec.sigmas(steps, SD_TABLE).double()
    calls = 0

    def counting(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return gaussian_denoiser(x, s)

    noise = seq_noise(0, (1, 1, 1, 1), torch.float64)
    sample(name, counting, torch.ones(1, 1, 1, 1, dtype=torch.float64) * sigmas[0], sigmas, noise)
    assert calls == spec.model_evals(steps)
    if name == "dpmpp_2s_ancestral":
        assert calls == 39


def test_schedule_steps_doubles_for_second_order() -> None:
    assert parse_sampler_name("DPM++ 2S a").schedule_steps(20) == 40
    assert parse_sampler_name("Euler a").schedule_steps(20) == 20


def test_stochastic_sampler_without_noise_fails() -> None:
    with pytest.raises(ValueError, match="noise_sampler"):
        sample("euler_ancestral", gaussian_denoiser, torch.ones(1, 1, 1, 1), torch.tensor([1.0, 0.5, 0.0]))


def test_callback_gets_each_step() -> None:
    seen: list[int] = []
    sigmas = get_sigmas("karras", 5, 0.1, 10.0)
    sample(
        "dpmpp_2m", gaussian_denoiser, torch.ones(1, 1, 1, 1), sigmas, callback=lambda d: seen.append(d["i"])
    )
    assert seen == [0, 1, 2, 3, 4]


@needs_kd
@pytest.mark.filterwarnings("ignore:Should have")
def test_brownian_noise_matches_kdiffusion() -> None:
    assert REF is not None
    from storyboard.render.noise import brownian_noise_sampler

    sigmas = parse_sampler_name("DPM++ SDE").sigmas(8, SD_TABLE)
    x = torch.zeros(2, 4, 3, 3)
    smin, smax = sigmas[sigmas > 0].min(), sigmas.max()
    ref = REF[0].BrownianTreeNoiseSampler(x, smin, smax, seed=[11, 12])
    ours = brownian_noise_sampler(x, sigmas, [11, 12])
    for a, b in [(sigmas[0], sigmas[1]), (sigmas[3], sigmas[4]), (sigmas[1], sigmas[6])]:
        torch.testing.assert_close(ours(a, b), ref(a, b), rtol=0, atol=0)


def test_ddim_matches_webui_timestep_loop() -> None:
    # WebUI's sd_samplers_timesteps_impl.ddim (eta 0), written out in VP space with an eps model.
    acp = scaled_linear_alphas_cumprod().double()
    table = discrete_sigmas(acp)
    steps = 10
    ts = torch.clip(torch.arange(0, 1000, 1000 // steps) + 1, 0, 999)
    alphas = acp[ts]
    alphas_prev = acp[torch.nn.functional.pad(ts[:-1], pad=(1, 0))]

    def eps_model(x_vp: torch.Tensor, t: int) -> torch.Tensor:
        a = acp[t]
        x0 = toy_denoiser(x_vp / a.sqrt(), table[t].reshape(1))
        return (x_vp - a.sqrt() * x0) / (1 - a).sqrt()

    noise = torch.randn((1, 4, 2, 2), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    x = noise.clone()
    for i in range(len(ts) - 1):
        index = len(ts) - 1 - i
        e_t = eps_model(x, int(ts[index]))
        a_t, a_prev = alphas[index], alphas_prev[index]
        pred_x0 = (x - (1 - a_t).sqrt() * e_t) / a_t.sqrt()
        x = a_prev.sqrt() * pred_x0 + (1 - a_prev).sqrt() * e_t

    spec = parse_sampler_name("DDIM")
    sig = spec.sigmas(steps, table)
    ours = spec.final_latent(sample("ddim", toy_denoiser, spec.initial_latent(noise, sig), sig), sig)
    torch.testing.assert_close(ours, x, rtol=1e-10, atol=1e-10)


@needs_kd
@pytest.mark.parametrize("name", ["DPM++ 2S a Karras", "Euler a", "DPM++ 2M Karras"])
def test_unet_render_matches_kdiffusion_webui_path(name: str) -> None:
    """Full path on a tiny UNet: our CompVisDenoiser + CFG + sampler + ImageRNG against
    k-diffusion's CompVisDenoiser with a WebUI-style CFG wrapper and the same generators."""
    assert REF is not None
    kd_sampling, kd_external = REF
    from diffusers import UNet2DConditionModel

    from storyboard.render.denoiser import CFGDenoiser, CompVisDenoiser
    from storyboard.render.noise import ImageRNG

    torch.manual_seed(0)
    unet: Any = UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    unet.eval()
    cond = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(1))
    uncond = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(2))
    spec = parse_sampler_name(name)
    steps, seeds = 4, [100, 101]

    ours_den = CompVisDenoiser(unet)
    sigmas = spec.sigmas(steps, ours_den.sigmas)
    rng = ImageRNG((4, 8, 8), seeds, source="cpu")
    x = spec.initial_latent(rng.next(), sigmas)
    ours = sample(spec.sampler, CFGDenoiser(ours_den, cond, uncond, 7.0), x, sigmas, rng.noise_sampler())

    class Shim(torch.nn.Module):
        alphas_cumprod = scaled_linear_alphas_cumprod()

        def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
            return unet(x, t, encoder_hidden_states=cond).sample

    kd_den = kd_external.CompVisDenoiser(Shim())

    def kd_cfg(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = kd_den(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=torch.cat([cond, uncond]))
        d_c, d_u = out[:2], out[2:]
        return d_u + (d_c - d_u) * 7.0

    kd_sigmas = kd_sampling.get_sigmas_karras(steps, kd_den.sigmas[0].item(), kd_den.sigmas[-1].item())
    if spec.effective_schedule is None:
        kd_sigmas = kd_den.get_sigmas(steps)
    gens = [torch.Generator().manual_seed(s) for s in seeds]

    def kd_noise(*_: Any) -> torch.Tensor:
        return torch.stack([torch.randn((4, 8, 8), generator=g) for g in gens])

    x_ref = kd_noise() * kd_sigmas[0]
    with torch.no_grad():
        ref = getattr(kd_sampling, "sample_" + spec.sampler)(
            kd_cfg,
            x_ref,
            kd_sigmas,
            disable=True,
            **({"noise_sampler": kd_noise} if spec.info.stochastic else {}),
        )
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_webui_samplers_not_implemented_are_named_so_by_the_parser() -> None:
    # The build path and validate share this one parser, so both say the same thing.
    for name in ("UniPC", "LCM", "DPM adaptive", "Restart Karras"):
        with pytest.raises(StoryboardError, match="WebUI sampler storyboard does not render yet"):
            parse_sampler_name(name)
    with pytest.raises(StoryboardError, match="did you mean 'Euler a'"):
        parse_sampler_name("Eular a")
