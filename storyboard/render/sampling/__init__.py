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

from storyboard.render.sampling.samplers import (
    Denoiser,
    NoiseSampler,
    SamplerFn,
    StepCallback,
    ancestral_step,
    lms_coefficient,
)
from storyboard.render.sampling.schedules import (
    SCHEDULE_LABELS,
    ddim_sigmas,
    ddim_timesteps,
    discrete_sigmas,
    exponential_sigmas,
    get_sigmas,
    karras_sigmas,
    model_sigmas,
    sgm_uniform_sigmas,
    table_sigma_to_t,
    table_t_to_sigma,
)
from storyboard.render.sampling.table import (
    SAMPLER_NAMES,
    SAMPLERS,
    SamplerInfo,
    SamplerSpec,
    parse_sampler_name,
    sample,
)

__all__ = [
    "SAMPLERS",
    "SAMPLER_NAMES",
    "SCHEDULE_LABELS",
    "Denoiser",
    "NoiseSampler",
    "SamplerFn",
    "SamplerInfo",
    "SamplerSpec",
    "StepCallback",
    "ancestral_step",
    "ddim_sigmas",
    "ddim_timesteps",
    "discrete_sigmas",
    "exponential_sigmas",
    "get_sigmas",
    "karras_sigmas",
    "lms_coefficient",
    "model_sigmas",
    "parse_sampler_name",
    "sample",
    "sgm_uniform_sigmas",
    "table_sigma_to_t",
    "table_t_to_sigma",
]
