"""k-diffusion-style samplers and sigma schedules, keyed by the names Stable Diffusion WebUI uses.

Every sampler is a short loop over a denoiser ``model(x, sigma, **extra_args) -> denoised`` in the
k-diffusion convention (x = x0 + sigma * eps, sigmas descending and ending in 0). The step formulas
follow k-diffusion 0.1.1 ``k_diffusion/sampling.py`` (the code WebUI runs) so that, with the same
noise, a render here matches a WebUI render. Randomness comes only from ``noise_sampler(sigma,
sigma_next)`` so the caller owns the RNG (see ``storyboard.render.noise``).

Sampler names, their default ("Automatic") schedules and the discard-penultimate-sigma rule follow
WebUI 1.9+ ``modules/sd_samplers_kdiffusion.py`` and ``modules/sd_schedulers.py``.

DDIM: WebUI runs DDIM as a timestep sampler (``sd_samplers_timesteps_impl.ddim``, eta 0) over the
timesteps ``range(0, 1000, 1000 // steps) + 1``. With eta 0 a DDIM step is exactly an Euler step in
sigma space, so ``sample("ddim", ...)`` is Euler over ``ddim_sigmas(table, steps)``: the sigmas of
those timesteps from the last down to the first, *not* ending in 0, because WebUI's loop stops one
short (20 steps = 19 UNet calls, final latent left at timestep 1). WebUI starts DDIM from unit noise
in VP space, i.e. x_sigma = noise * sqrt(sigma0^2 + 1), and returns a VP latent, i.e. x_sigma /
sqrt(sigma_last^2 + 1): ``SamplerSpec.initial_latent`` and ``SamplerSpec.final_latent`` do those two
scalings (identity for the k-diffusion samplers except noise * sigma0). The img2img/hires path of
WebUI's DDIM (noised at one timestep, first evaluated at the next lower one) is not reproduced; our
hires pass uses the k-diffusion arithmetic for every sampler.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from storyboard.errors import StoryboardError

Denoiser = Callable[..., Tensor]
NoiseSampler = Callable[[Tensor, Tensor], Tensor]
StepCallback = Callable[[dict[str, Any]], None]


class SamplerFn(Protocol):
    def __call__(
        self,
        model: Denoiser,
        x: Tensor,
        sigmas: Tensor,
        noise_sampler: NoiseSampler | None,
        extra_args: Mapping[str, Any],
        callback: StepCallback | None,
    ) -> Tensor: ...


# --------------------------------------------------------------------------------------------------
# Sigma schedules


def discrete_sigmas(alphas_cumprod: Tensor) -> Tensor:
    """The model's discrete sigma table, ascending (index = DDPM timestep)."""
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def table_t_to_sigma(sigmas_table: Tensor, t: Tensor) -> Tensor:
    """Continuous timestep -> sigma by log-sigma interpolation between table entries."""
    log_sigmas = sigmas_table.log()
    t = t.float()
    low, high, w = t.floor().long(), t.ceil().long(), t.frac()
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()


def table_sigma_to_t(sigmas_table: Tensor, sigma: Tensor) -> Tensor:
    """Sigma -> continuous timestep, inverse of :func:`table_t_to_sigma` (k-diffusion's rule)."""
    log_sigmas = sigmas_table.log()
    log_sigma = sigma.log()
    dists = log_sigma - log_sigmas[:, None]
    low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
    high_idx = low_idx + 1
    low, high = log_sigmas[low_idx], log_sigmas[high_idx]
    w = ((low - log_sigma) / (low - high)).clamp(0, 1)
    return ((1 - w) * low_idx + w * high_idx).view(sigma.shape)


def _append_zero(x: Tensor) -> Tensor:
    return torch.cat([x, x.new_zeros([1])])


def model_sigmas(sigmas_table: Tensor, n: int) -> Tensor:
    """k-diffusion's ``DiscreteSchedule.get_sigmas(n)``: n timesteps evenly from the last to 0."""
    t = torch.linspace(len(sigmas_table) - 1, 0, n, device=sigmas_table.device)
    return _append_zero(table_t_to_sigma(sigmas_table, t))


def karras_sigmas(
    n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device: Any = "cpu"
) -> Tensor:
    ramp = torch.linspace(0, 1, n, device=device)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return _append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential_sigmas(n: int, sigma_min: float, sigma_max: float, device: Any = "cpu") -> Tensor:
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, device=device).exp())


def sgm_uniform_sigmas(sigmas_table: Tensor, n: int, sigma_min: float, sigma_max: float) -> Tensor:
    start = table_sigma_to_t(sigmas_table, torch.tensor(sigma_max))
    end = table_sigma_to_t(sigmas_table, torch.tensor(sigma_min))
    ts = torch.linspace(float(start), float(end), n + 1)[:-1]
    sigs = [float(table_t_to_sigma(sigmas_table, t)) for t in ts] + [0.0]
    return torch.tensor(sigs, dtype=torch.float32)


def ddim_timesteps(steps: int) -> Tensor:
    """WebUI's DDIM timesteps (``CompVisSampler.get_timesteps``), ascending."""
    return torch.clip(torch.arange(0, 1000, 1000 // steps) + 1, 0, 999)


def ddim_sigmas(sigmas_table: Tensor, steps: int) -> Tensor:
    """Sigmas DDIM visits in WebUI, descending; ends at sigma(timestep 1), not 0 (see module doc)."""
    return sigmas_table[ddim_timesteps(steps).flip(0)].clone()


SCHEDULE_LABELS: dict[str, str] = {
    "automatic": "Automatic",
    "uniform": "Uniform",
    "karras": "Karras",
    "exponential": "Exponential",
    "sgm_uniform": "SGM Uniform",
}


def get_sigmas(
    schedule: str,
    n: int,
    sigma_min: float,
    sigma_max: float,
    *,
    sigmas_table: Tensor | None = None,
    device: Any = "cpu",
    rho: float = 7.0,
) -> Tensor:
    """n+1 sigmas ending in 0. "automatic" here means the model's own schedule (k-diffusion's
    default); use :meth:`SamplerSpec.sigmas` to resolve Automatic per sampler as WebUI does."""
    key = _schedule_key(schedule)
    if key == "karras":
        return karras_sigmas(n, sigma_min, sigma_max, rho, device=device)
    if key == "exponential":
        return exponential_sigmas(n, sigma_min, sigma_max, device=device)
    if sigmas_table is None:
        raise ValueError(f"schedule {schedule!r} needs the model's sigma table (sigmas_table=...)")
    if key in ("uniform", "automatic"):
        return model_sigmas(sigmas_table, n).to(device)
    return sgm_uniform_sigmas(sigmas_table, n, sigma_min, sigma_max).to(device)


def _norm(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", text.strip().lower())


_SCHEDULE_ALIASES: dict[str, str] = {
    **{_norm(k): k for k in SCHEDULE_LABELS},
    **{_norm(v): k for k, v in SCHEDULE_LABELS.items()},
    "sgmuniform": "sgm_uniform",
}


def _schedule_key(schedule: str) -> str:
    key = _SCHEDULE_ALIASES.get(_norm(schedule))
    if key is None:
        choices = ", ".join(SCHEDULE_LABELS.values())
        raise StoryboardError(f"Unknown schedule type {schedule!r}.", hint=f"use one of: {choices}")
    return key


# --------------------------------------------------------------------------------------------------
# Samplers (step formulas as in k-diffusion 0.1.1)


def ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float = 1.0) -> tuple[Tensor, Tensor]:
    """(sigma_down, sigma_up) of an ancestral step."""
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    sigma_up = torch.minimum(
        sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5
    )
    sigma_down = (sigma_to**2 - sigma_up**2) ** 0.5
    return sigma_down, sigma_up


def _to_d(x: Tensor, sigma: Tensor, denoised: Tensor) -> Tensor:
    return (x - denoised) / sigma


def _need_noise(noise_sampler: NoiseSampler | None, name: str) -> NoiseSampler:
    if noise_sampler is None:
        raise ValueError(f"sampler {name!r} is stochastic and needs a noise_sampler")
    return noise_sampler


def _report(callback: StepCallback | None, x: Tensor, i: int, sigma: Tensor, denoised: Tensor) -> None:
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma, "denoised": denoised})


def _euler(model, x, sigmas, noise_sampler, extra_args, callback):  # type: ignore[no-untyped-def]
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        x = x + _to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


def _euler_ancestral(model, x, sigmas, noise_sampler, extra_args, callback):  # type: ignore[no-untyped-def]
    noise = _need_noise(noise_sampler, "euler_ancestral")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1])
        _report(callback, x, i, sigmas[i], denoised)
        x = x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def _heun(model, x, sigmas, noise_sampler, extra_args, callback):  # type: ignore[no-untyped-def]
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = _to_d(x, sigmas[i], denoised)
        _report(callback, x, i, sigmas[i], denoised)
        dt = sigmas[i + 1] - sigmas[i]
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = _to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * s_in, **extra_args))
            x = x + (d + d_2) / 2 * dt
    return x


def _dpm_2(model, x, sigmas, noise_sampler, extra_args, callback):  # type: ignore[no-untyped-def]
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        d = _to_d(x, sigmas[i], denoised)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = _to_d(x_2, sigma_mid, model(x_2, sigma_mid * s_in, **extra_args))
            x = x + d_2 * (sigmas[i + 1] - sigmas[i])
    return x


def _dpm_2_ancestral(model, x, sigmas, noise_sampler, extra_args, callback):  # type: ignore[no-untyped-def]
    noise = _need_noise(noise_sampler, "dpm_2_ancestral")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1])
        _report(callback, x, i, sigmas[i], denoised)
        d = _to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(sigma_down.log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = _to_d(x_2, sigma_mid, model(x_2, sigma_mid * s_in, **extra_args))
            x = x + d_2 * (sigma_down - sigmas[i])
            # k-diffusion adds noise only on the second-order branch (never on the last step).
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def lms_coefficient(order: int, t: np.ndarray, i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the Lagrange basis polynomial j on the last `order` points.

    k-diffusion integrates numerically (scipy quad); the integrand is a polynomial, so integrating
    it exactly gives the same number to float precision without scipy.
    """
    poly = np.poly1d([1.0])
    for k in range(order):
        if k == j:
            continue
        poly *= np.poly1d([1.0, -t[i - k]]) / (t[i - j] - t[i - k])
    antiderivative = poly.integ()
    return float(antiderivative(t[i + 1]) - antiderivative(t[i]))


def _lms(model, x, sigmas, noise_sampler, extra_args, callback, order: int = 4):  # type: ignore[no-untyped-def]
    s_in = x.new_ones([x.shape[0]])
    sigmas_np = sigmas.detach().cpu().numpy().astype(np.float64)
    ds: list[Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        ds.append(_to_d(x, sigmas[i], denoised))
        if len(ds) > order:
            ds.pop(0)
        _report(callback, x, i, sigmas[i], denoised)
        cur_order = min(i + 1, order)
        coeffs = [lms_coefficient(cur_order, sigmas_np, i, j) for j in range(cur_order)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds), strict=True))
    return x


def _sigma_fn(t: Tensor) -> Tensor:
    return t.neg().exp()


def _t_fn(sigma: Tensor) -> Tensor:
    return sigma.log().neg()


def _dpmpp_2s_ancestral(model, x, sigmas, noise_sampler, extra_args, callback):  # type: ignore[no-untyped-def]
    noise = _need_noise(noise_sampler, "dpmpp_2s_ancestral")
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = ancestral_step(sigmas[i], sigmas[i + 1])
        _report(callback, x, i, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + _to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t_fn(sigmas[i]), _t_fn(sigma_down)
            h = t_next - t
            s = t + 0.5 * h
            x_2 = (_sigma_fn(s) / _sigma_fn(t)) * x - (-h * 0.5).expm1() * denoised
            denoised_2 = model(x_2, _sigma_fn(s) * s_in, **extra_args)
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def _dpmpp_sde(model, x, sigmas, noise_sampler, extra_args, callback):  # type: ignore[no-untyped-def]
    noise = _need_noise(noise_sampler, "dpmpp_sde")
    s_in = x.new_ones([x.shape[0]])
    r = 0.5
    fac = 1 / (2 * r)
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = x + _to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t_fn(sigmas[i]), _t_fn(sigmas[i + 1])
        h = t_next - t
        s = t + h * r
        sd, su = ancestral_step(_sigma_fn(t), _sigma_fn(s))
        s_ = _t_fn(sd)
        x_2 = (_sigma_fn(s_) / _sigma_fn(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + noise(_sigma_fn(t), _sigma_fn(s)) * su
        denoised_2 = model(x_2, _sigma_fn(s) * s_in, **extra_args)
        sd, su = ancestral_step(_sigma_fn(t), _sigma_fn(t_next))
        t_next_ = _t_fn(sd)
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (_sigma_fn(t_next_) / _sigma_fn(t)) * x - (t - t_next_).expm1() * denoised_d
        x = x + noise(_sigma_fn(t), _sigma_fn(t_next)) * su
    return x


def _dpmpp_2m(model, x, sigmas, noise_sampler, extra_args, callback):  # type: ignore[no-untyped-def]
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        t, t_next = _t_fn(sigmas[i]), _t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised
        else:
            r = (t - _t_fn(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


def _make_dpmpp_2m_sde(solver_type: str) -> SamplerFn:
    def run(model, x, sigmas, noise_sampler, extra_args, callback):  # type: ignore[no-untyped-def]
        noise = _need_noise(noise_sampler, "dpmpp_2m_sde")
        s_in = x.new_ones([x.shape[0]])
        old_denoised = None
        h_last = None
        h = None
        for i in range(len(sigmas) - 1):
            denoised = model(x, sigmas[i] * s_in, **extra_args)
            _report(callback, x, i, sigmas[i], denoised)
            if sigmas[i + 1] == 0:
                x = denoised
            else:
                t, s = -sigmas[i].log(), -sigmas[i + 1].log()
                h = s - t
                eta_h = h  # eta = 1
                x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
                if old_denoised is not None:
                    r = h_last / h
                    if solver_type == "heun":
                        coeff = (-h - eta_h).expm1().neg() / (-h - eta_h) + 1
                        x = x + coeff * (1 / r) * (denoised - old_denoised)
                    else:
                        x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)
                x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt()
            old_denoised = denoised
            h_last = h
        return x

    return run


def _dpmpp_3m_sde(model, x, sigmas, noise_sampler, extra_args, callback):  # type: ignore[no-untyped-def]
    noise = _need_noise(noise_sampler, "dpmpp_3m_sde")
    s_in = x.new_ones([x.shape[0]])
    denoised_1: Tensor | None = None
    denoised_2: Tensor | None = None
    h = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            h_eta = h * 2  # eta = 1
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            if h_2 is not None and denoised_1 is not None and denoised_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None:
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * ((denoised - denoised_1) / (h_1 / h))
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h).expm1().neg().sqrt()
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def _ddim(model, x, sigmas, noise_sampler, extra_args, callback):  # type: ignore[no-untyped-def]
    # DDIM with eta 0 is Euler in sigma space; see the module docstring for WebUI's schedule.
    return _euler(model, x, sigmas, noise_sampler, extra_args, callback)


# --------------------------------------------------------------------------------------------------
# WebUI sampler table


@dataclass(frozen=True)
class SamplerInfo:
    key: str
    label: str  # as WebUI writes it in "Sampler: ..."
    fn: SamplerFn
    default_schedule: str | None = None  # what "Automatic" means; None = the model's own schedule
    discard_penultimate: bool = False
    second_order: bool = False
    stochastic: bool = False
    brownian_noise: bool = False  # WebUI seeds a Brownian tree per image for these


SAMPLERS: dict[str, SamplerInfo] = {
    s.key: s
    for s in [
        SamplerInfo("dpmpp_2m", "DPM++ 2M", _dpmpp_2m, "karras"),
        SamplerInfo(
            "dpmpp_sde",
            "DPM++ SDE",
            _dpmpp_sde,
            "karras",
            second_order=True,
            stochastic=True,
            brownian_noise=True,
        ),
        SamplerInfo(
            "dpmpp_2m_sde",
            "DPM++ 2M SDE",
            _make_dpmpp_2m_sde("midpoint"),
            "exponential",
            stochastic=True,
            brownian_noise=True,
        ),
        SamplerInfo(
            "dpmpp_2m_sde_heun",
            "DPM++ 2M SDE Heun",
            _make_dpmpp_2m_sde("heun"),
            "exponential",
            stochastic=True,
            brownian_noise=True,
        ),
        SamplerInfo(
            "dpmpp_2s_ancestral",
            "DPM++ 2S a",
            _dpmpp_2s_ancestral,
            "karras",
            second_order=True,
            stochastic=True,
        ),
        SamplerInfo(
            "dpmpp_3m_sde",
            "DPM++ 3M SDE",
            _dpmpp_3m_sde,
            "exponential",
            discard_penultimate=True,
            stochastic=True,
            brownian_noise=True,
        ),
        SamplerInfo("euler_ancestral", "Euler a", _euler_ancestral, stochastic=True),
        SamplerInfo("euler", "Euler", _euler),
        SamplerInfo("lms", "LMS", _lms),
        SamplerInfo("heun", "Heun", _heun, second_order=True),
        SamplerInfo("dpm_2", "DPM2", _dpm_2, "karras", discard_penultimate=True, second_order=True),
        SamplerInfo(
            "dpm_2_ancestral",
            "DPM2 a",
            _dpm_2_ancestral,
            "karras",
            discard_penultimate=True,
            second_order=True,
            stochastic=True,
        ),
        SamplerInfo("ddim", "DDIM", _ddim),
    ]
}

SAMPLER_NAMES: list[str] = [s.label for s in SAMPLERS.values()]

_SAMPLER_ALIASES: dict[str, str] = {}
for _info in SAMPLERS.values():
    _SAMPLER_ALIASES[_norm(_info.label)] = _info.key
    _SAMPLER_ALIASES[_norm(_info.key)] = _info.key
    _SAMPLER_ALIASES[_norm("k_" + _info.key)] = _info.key
_SAMPLER_ALIASES.update({_norm("k_euler_a"): "euler_ancestral", _norm("k_dpm_2_a"): "dpm_2_ancestral"})
_SAMPLER_ALIASES[_norm("k_dpmpp_2s_a")] = "dpmpp_2s_ancestral"

# Longest first, so "SGM Uniform" wins over "Uniform" as a name suffix.
_SUFFIXES = sorted(SCHEDULE_LABELS.values(), key=len, reverse=True)


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler plus a schedule, as chosen by the user (schedule "automatic" when not given)."""

    sampler: str  # key into SAMPLERS, e.g. "dpmpp_2s_ancestral"
    schedule: str  # key into SCHEDULE_LABELS, e.g. "karras" or "automatic"
    label: str  # the text the user gave, e.g. "DPM++ 2S a Karras"

    @property
    def info(self) -> SamplerInfo:
        return SAMPLERS[self.sampler]

    @property
    def infotext_name(self) -> str:
        return self.info.label

    @property
    def effective_schedule(self) -> str | None:
        """The schedule WebUI uses; None = the model's own (k-diffusion default) schedule."""
        if self.sampler == "ddim":
            return None
        if self.schedule == "automatic":
            return self.info.default_schedule
        return self.schedule

    @property
    def schedule_label(self) -> str | None:
        """The "Schedule type" WebUI writes it in infotext; None when WebUI writes none."""
        eff = self.effective_schedule
        return None if eff is None else SCHEDULE_LABELS[eff]

    def sigmas(self, steps: int, sigmas_table: Tensor, device: Any = "cpu") -> Tensor:
        """WebUI's ``KDiffusionSampler.get_sigmas``: the schedule for `steps` steps, Automatic
        resolved per sampler, penultimate sigma discarded for DPM2 (a)."""
        if self.sampler == "ddim":
            return ddim_sigmas(sigmas_table, steps).to(device)
        discard = self.info.discard_penultimate
        n = steps + 1 if discard else steps
        sigma_min, sigma_max = float(sigmas_table[0]), float(sigmas_table[-1])
        sigmas = get_sigmas(
            self.effective_schedule or "automatic", n, sigma_min, sigma_max, sigmas_table=sigmas_table
        )
        if discard:
            sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
        return sigmas.to(device)

    def initial_latent(self, noise: Tensor, sigmas: Tensor) -> Tensor:
        """txt2img start latent from unit noise (noise * sigma0; DDIM: WebUI's VP start)."""
        if self.sampler == "ddim":
            return noise * (sigmas[0] ** 2 + 1) ** 0.5
        return noise * sigmas[0]

    def final_latent(self, x: Tensor, sigmas: Tensor) -> Tensor:
        """Latent to decode after sampling (DDIM ends at sigma > 0 in VP space, see module doc)."""
        if sigmas[-1] > 0:
            return x / (sigmas[-1] ** 2 + 1) ** 0.5
        return x

    def schedule_steps(self, steps: int) -> int:
        """Steps WebUI plans prompt editing over (``SamplerData.total_steps``): doubled for
        second-order samplers, because WebUI's CFG denoiser counts model calls, not steps."""
        return 2 * steps if self.info.second_order else steps

    def model_evals(self, steps: int) -> int:
        """UNet (CFG) evaluations for `steps` steps, e.g. DPM++ 2S a at 20 steps = 39."""
        if self.sampler == "ddim":
            return max(steps - 1, 0)
        return 2 * steps - 1 if self.info.second_order else steps


def parse_sampler_name(text: str, schedule: str | None = None) -> SamplerSpec:
    """Parse a WebUI sampler name ("DPM++ 2S a Karras", "Euler a", "k_dpmpp_2m") and an optional
    separate schedule type ("Karras", "Automatic", ...). Case-insensitive."""
    norm = _norm(text)
    key = _SAMPLER_ALIASES.get(norm)
    suffix_schedule: str | None = None
    if key is None:
        for suffix in _SUFFIXES:
            s = _norm(suffix)
            if norm.endswith(" " + s) and _SAMPLER_ALIASES.get(norm[: -len(s) - 1]) is not None:
                key = _SAMPLER_ALIASES[norm[: -len(s) - 1]]
                suffix_schedule = _schedule_key(suffix)
                break
    if key is None:
        candidates = [*SAMPLER_NAMES, *(f"{n} Karras" for n in SAMPLER_NAMES)]
        close = difflib.get_close_matches(text, candidates, n=3, cutoff=0.5)
        close += [
            c for c in difflib.get_close_matches(norm, [_norm(c) for c in candidates], n=3) if c not in close
        ]
        hint = "did you mean " + " or ".join(repr(c) for c in close[:3]) + "?" if close else ""
        raise StoryboardError(
            f"Unknown sampler {text!r}.",
            hint=(hint + " " if hint else "") + "Known samplers: " + ", ".join(SAMPLER_NAMES),
        )
    sched = "automatic"
    if schedule is not None:
        sched = _schedule_key(schedule)
    if suffix_schedule is not None:
        if schedule is not None and sched not in ("automatic", suffix_schedule):
            raise StoryboardError(
                f"Sampler {text!r} names schedule {SCHEDULE_LABELS[suffix_schedule]!r} but the schedule "
                f"type is {schedule!r}.",
                hint="drop the schedule from the sampler name or make the two agree",
            )
        sched = suffix_schedule
    return SamplerSpec(sampler=key, schedule=sched, label=text)


def sample(
    name: str,
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise_sampler: NoiseSampler | None = None,
    *,
    extra_args: Mapping[str, Any] | None = None,
    callback: StepCallback | None = None,
) -> Tensor:
    """Run sampler `name` (a key of SAMPLERS or a WebUI label) from x at sigmas[0] down the schedule.

    `callback` gets k-diffusion's dict {x, i, sigma, sigma_hat, denoised} once per step, after the
    step's first model call (for previews and progress)."""
    key = name if name in SAMPLERS else parse_sampler_name(name).sampler
    with torch.no_grad():
        return SAMPLERS[key].fn(model, x, sigmas, noise_sampler, dict(extra_args or {}), callback)
