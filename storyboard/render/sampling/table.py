"""WebUI's sampler table: names, default ("Automatic") schedules, and each sampler's special cases
as fields of its row (second order, discarded penultimate sigma, DDIM's own timestep schedule and VP
latents), so callers never test for a sampler by name.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from storyboard.errors import StoryboardError
from storyboard.render.sampling.samplers import (
    Denoiser,
    NoiseSampler,
    SamplerFn,
    StepCallback,
    _ddim,
    _dpm_2,
    _dpm_2_ancestral,
    _dpmpp_2m,
    _dpmpp_2s_ancestral,
    _dpmpp_3m_sde,
    _dpmpp_sde,
    _euler,
    _euler_ancestral,
    _heun,
    _lms,
    _make_dpmpp_2m_sde,
)
from storyboard.render.sampling.schedules import (
    SCHEDULE_LABELS,
    _norm,
    _schedule_key,
    ddim_sigmas,
    get_sigmas,
)


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
    # A timestep sampler's own schedule (sigmas_table, steps) -> sigmas; it ignores the schedule type,
    # ends above 0 and so takes one model call fewer than its steps (DDIM, see the package doc).
    own_sigmas: Callable[[Tensor, int], Tensor] | None = None
    vp_latents: bool = False  # starts from unit noise in VP space, x = noise * sqrt(sigma0^2 + 1)


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
        SamplerInfo("ddim", "DDIM", _ddim, own_sigmas=ddim_sigmas, vp_latents=True),
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
        if self.info.own_sigmas is not None:
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
        own = self.info.own_sigmas
        if own is not None:
            return own(sigmas_table, steps).to(device)
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
        if self.info.vp_latents:
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
        if self.info.own_sigmas is not None:
            return max(steps - 1, 0)
        return 2 * steps - 1 if self.info.second_order else steps


# WebUI samplers this engine does not implement: named so, rather than as typos.
WEBUI_ONLY_SAMPLERS = ("DPM fast", "DPM adaptive", "Restart", "DDIM CFG++", "PLMS", "UniPC", "LCM")


def _webui_only(norm: str) -> bool:
    """A (normalised) name that is one of WebUI_ONLY_SAMPLERS, with or without a schedule suffix."""
    names = {_norm(n) for n in WEBUI_ONLY_SAMPLERS}
    return norm in names or any(norm.removesuffix(" " + _norm(x)) in names for x in _SUFFIXES)


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
    if key is None and _webui_only(norm):
        raise StoryboardError(
            f"Sampler {text!r} is a WebUI sampler storyboard does not render yet.",
            hint="use one of " + ", ".join(SAMPLER_NAMES),
        )
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
