"""Steps 3-5 of a render, for one batch of panels that share every setting but prompt and seed, as
WebUI's ``processing.py`` runs txt2img::

    prepare timesteps   sigmas = sampler.sigmas(steps)
    prepare latents     x = noise(seed) * sigmas[0], one generator per image
    denoise             x = sample(CFG(D, cond, uncond), x, sigmas, ancestral noise from those generators)
    hires fix           upscale the latent (or decode -> Lanczos/ESRGAN -> encode); fresh generators
                        with the same seeds at the new size; an int(steps / d)-step schedule entered
                        so that `steps` steps remain
    decode              latents -> PIL, one image at a time

Known differences from WebUI: the Lanczos hires path encodes with the VAE posterior mean (WebUI
samples it with the global RNG, so it does not repeat); for SDXL an empty negative prompt is zeroed
per image (WebUI zeroes it only when the whole batch's negatives are empty).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor

from storyboard.models.load import ModelComponents
from storyboard.models.lora import LoraPatcher
from storyboard.render.conditioning import CondSchedule, PanelConds, merge_conds
from storyboard.render.decode import decode_latents, encode_images
from storyboard.render.denoiser import CFGDenoiser, CompVisDenoiser
from storyboard.render.hires import (
    hires_size,
    img2img_sigmas,
    is_latent_upscaler,
    noised_latent,
    upscale_image_lanczos,
    upscale_latent,
)
from storyboard.render.noise import ImageRNG, brownian_noise_sampler
from storyboard.render.progress import RenderProgress
from storyboard.render.resolve import ResolvedJob
from storyboard.render.sampling import SamplerSpec, sample
from storyboard.render.upscale import UpscalerModel, upscale_image

Stage = Callable[[str], AbstractContextManager[None]]


@dataclass
class LoadedModel:
    """One checkpoint in memory: its modules, the LoRA patcher over them, and the k-diffusion view."""

    components: ModelComponents
    patcher: LoraPatcher
    denoiser: CompVisDenoiser
    device: torch.device


def run_pass(
    model: LoadedModel,
    spec: SamplerSpec,
    x: Tensor,
    sigmas: Tensor,
    rng: ImageRNG,
    seeds: list[int],
    conds: tuple[list[CondSchedule], list[CondSchedule]],
    cfg_scale: float,
    progress: RenderProgress,
    label: str,
) -> Tensor:
    """Denoise x down `sigmas` with CFG; returns the latent to decode."""
    info = spec.info
    noise = brownian_noise_sampler(x, sigmas, seeds) if info.brownian_noise else rng.noise_sampler()
    # SDXL's size conditioning: original = target = this pass's pixel size, crop (0, 0) (WebUI).
    h, w = int(x.shape[-2]) * 8, int(x.shape[-1]) * 8
    time_ids = torch.tensor([h, w, 0, 0, h, w], dtype=torch.float32, device=x.device)
    cfg = CFGDenoiser(
        model.denoiser, merge_conds(conds[0], time_ids), merge_conds(conds[1], time_ids), cfg_scale
    )
    progress.start_pass(label, len(sigmas) - 1)
    out = sample(spec.sampler, cfg, x, sigmas, noise, callback=lambda _info: progress.step())
    return spec.final_latent(out, sigmas)


def render_batch(
    model: LoadedModel,
    batch: list[ResolvedJob],
    conds: list[PanelConds],
    progress: RenderProgress,
    stage: Stage,
    upscaler: UpscalerModel | None = None,
) -> list[Image.Image]:
    """Render a batch of resolved jobs that share all settings; one image per job, in order."""
    first = batch[0]
    s, spec, hr_spec = first.settings, first.spec, first.hr_spec
    den, device = model.denoiser, model.device
    seeds = [rj.job.seed for rj in batch]
    # Prepare timesteps and latents.
    rng = ImageRNG((4, s.height // 8, s.width // 8), seeds, s.noise_source, device)
    sigmas = spec.sigmas(s.steps, den.sigmas, device)
    x = spec.initial_latent(rng.next(), sigmas)
    ids = ", ".join(rj.job.panel_id for rj in batch)
    # Denoise.
    with stage("sample"):
        latent = run_pass(
            model, spec, x, sigmas, rng, seeds, ([c.cond for c in conds], [c.uncond for c in conds]),
            s.cfg_scale, progress, ids,
        )  # fmt: skip
    # Hires fix.
    hr = s.hires
    if hr is not None and hr_spec is not None:
        tw, th = hires_size(s.width, s.height, hr.scale)
        with stage("hires_upscale"):
            if is_latent_upscaler(hr.upscaler):
                up = upscale_latent(latent, (th, tw), hr.upscaler)
            else:
                vae = model.components.vae
                images = decode_latents(vae, latent)
                if upscaler is None:
                    pixels = [upscale_image_lanczos(im, tw, th) for im in images]
                else:
                    pixels = [upscale_image(upscaler, im, tw, th) for im in images]
                up = encode_images(vae, pixels, device)
        # WebUI: a fresh ImageRNG with the same seeds at the hires latent size.
        rng2 = ImageRNG(tuple(up.shape[1:]), seeds, s.noise_source, device)
        sigmas2 = img2img_sigmas(
            lambda n: hr_spec.sigmas(n, den.sigmas, device), hr.steps or s.steps, hr.denoising_strength
        )
        x2 = noised_latent(up, rng2.next(), sigmas2)
        hr_conds = ([c.hr_cond or c.cond for c in conds], [c.hr_uncond or c.uncond for c in conds])
        with stage("hires_sample"):
            latent = run_pass(
                model, hr_spec, x2, sigmas2, rng2, seeds, hr_conds, s.cfg_scale, progress, f"{ids} (hires)"
            )
    # Decode.
    with stage("decode"):
        return decode_latents(model.components.vae, latent)
