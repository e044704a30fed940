"""The samplers: each a short loop over a denoiser ``model(x, sigma, **extra_args) -> denoised`` in
the k-diffusion convention, with the step formulas of k-diffusion 0.1.1 ``k_diffusion/sampling.py``
(the code WebUI runs), so that with the same noise a render here matches a WebUI render. Randomness
comes only from ``noise_sampler(sigma, sigma_next)``, so the caller owns the RNG.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

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


def _euler(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise_sampler: NoiseSampler | None,
    extra_args: Mapping[str, Any],
    callback: StepCallback | None,
) -> Tensor:
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        _report(callback, x, i, sigmas[i], denoised)
        x = x + _to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
    return x


def _euler_ancestral(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise_sampler: NoiseSampler | None,
    extra_args: Mapping[str, Any],
    callback: StepCallback | None,
) -> Tensor:
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


def _heun(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise_sampler: NoiseSampler | None,
    extra_args: Mapping[str, Any],
    callback: StepCallback | None,
) -> Tensor:
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


def _dpm_2(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise_sampler: NoiseSampler | None,
    extra_args: Mapping[str, Any],
    callback: StepCallback | None,
) -> Tensor:
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


def _dpm_2_ancestral(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise_sampler: NoiseSampler | None,
    extra_args: Mapping[str, Any],
    callback: StepCallback | None,
) -> Tensor:
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


def _lms(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise_sampler: NoiseSampler | None,
    extra_args: Mapping[str, Any],
    callback: StepCallback | None,
    order: int = 4,
) -> Tensor:
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


def _dpmpp_2s_ancestral(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise_sampler: NoiseSampler | None,
    extra_args: Mapping[str, Any],
    callback: StepCallback | None,
) -> Tensor:
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


def _dpmpp_sde(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise_sampler: NoiseSampler | None,
    extra_args: Mapping[str, Any],
    callback: StepCallback | None,
) -> Tensor:
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


def _dpmpp_2m(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise_sampler: NoiseSampler | None,
    extra_args: Mapping[str, Any],
    callback: StepCallback | None,
) -> Tensor:
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
    def run(
        model: Denoiser,
        x: Tensor,
        sigmas: Tensor,
        noise_sampler: NoiseSampler | None,
        extra_args: Mapping[str, Any],
        callback: StepCallback | None,
    ) -> Tensor:
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
                if old_denoised is not None and h_last is not None:
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


def _dpmpp_3m_sde(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise_sampler: NoiseSampler | None,
    extra_args: Mapping[str, Any],
    callback: StepCallback | None,
) -> Tensor:
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
            if h_1 is not None and h_2 is not None and denoised_1 is not None and denoised_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                phi_3 = phi_2 / h_eta - 0.5
                x = x + phi_2 * d1 - phi_3 * d2
            elif h_1 is not None and denoised_1 is not None:
                phi_2 = h_eta.neg().expm1() / h_eta + 1
                x = x + phi_2 * ((denoised - denoised_1) / (h_1 / h))
            x = x + noise(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h).expm1().neg().sqrt()
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


def _ddim(
    model: Denoiser,
    x: Tensor,
    sigmas: Tensor,
    noise_sampler: NoiseSampler | None,
    extra_args: Mapping[str, Any],
    callback: StepCallback | None,
) -> Tensor:
    # DDIM with eta 0 is Euler in sigma space; see the module docstring for WebUI's schedule.
    return _euler(model, x, sigmas, noise_sampler, extra_args, callback)
