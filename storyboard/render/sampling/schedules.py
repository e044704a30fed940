"""Sigma schedules by WebUI's schedule-type names (``modules/sd_schedulers.py``), over the model's
discrete sigma table: k-diffusion's formulas, descending, ending in 0 (DDIM's own schedule excepted).
"""

from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import Tensor

from storyboard.errors import StoryboardError


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
