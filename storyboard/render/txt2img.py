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
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from storyboard.jobs import RenderSettings
from storyboard.models.load import ModelComponents
from storyboard.models.lora import LoraPatcher
from storyboard.render.conditioning import CondSchedule, PanelConds, RegionalConds, merge_conds
from storyboard.render.control.hook import ControlPass
from storyboard.render.control.runtime import ControlNets
from storyboard.render.decode import decode_latents, encode_images
from storyboard.render.denoiser import (
    CFGDenoiser,
    CompVisDenoiser,
    CondEntry,
    rescale_zero_terminal_snr_abar,
)
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
from storyboard.render.regions import blend_weights
from storyboard.render.resolve import ResolvedJob
from storyboard.render.sampling import SamplerSpec, sample
from storyboard.render.sampling.samplers import Denoiser
from storyboard.render.upscale import UpscalerModel, upscale_image

Stage = Callable[[str], AbstractContextManager[None]]
# Builds a pass's guided denoiser from its starting latent and SDXL time ids (regional panels).
GuideFactory = Callable[[Tensor, Tensor], CFGDenoiser]


@dataclass
class LoadedModel:
    """One checkpoint in memory: its modules, the LoRA patcher over them, and the k-diffusion view."""

    components: ModelComponents
    patcher: LoraPatcher
    denoiser: CompVisDenoiser
    device: torch.device
    # k-diffusion views of other (prediction type, zero terminal SNR) choices, built on first use.
    variants: dict[tuple[str, bool], CompVisDenoiser] = field(default_factory=dict)

    def for_settings(self, s: RenderSettings) -> LoadedModel:
        """This model as a job's settings see it: v-prediction and the zero-terminal-SNR schedule
        forced by the story, else from the checkpoint's ``v_pred`` / ``ztsnr`` markers (WebUI)."""
        comps = self.components
        v_pred = s.v_pred if s.v_pred is not None else comps.prediction_type == "v_prediction"
        ztsnr = s.ztsnr if s.ztsnr is not None else comps.ztsnr
        key = ("v_prediction" if v_pred else "epsilon", ztsnr)
        # The loaded view is built from the stored schedule, never rescaled (engine._ensure_loaded).
        if key == (self.denoiser.prediction_type, False):
            return self  # every SD1 panel
        den = self.variants.get(key)
        if den is None:
            acp = comps.alphas_cumprod.float()
            if ztsnr:
                acp = rescale_zero_terminal_snr_abar(acp)
            den = CompVisDenoiser(comps.unet, acp, prediction_type=key[0])
            den.alphas_cumprod = den.alphas_cumprod.to(self.device)
            den.sigmas = den.sigmas.to(self.device)
            self.variants[key] = den
        return replace(self, denoiser=den)


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
    guide: GuideFactory | None = None,
    size: tuple[int, int] | None = None,
    cfg_rescale: float = 0.0,
    control: ControlPass | None = None,
    wrap: Callable[[Denoiser], Denoiser] | None = None,
    image_cond: Tensor | None = None,
) -> Tensor:
    """Denoise x down `sigmas` with CFG; returns the latent to decode.

    ``size`` is the pass's (width, height) in pixels (default: the latent's size * 8); ``wrap``
    wraps the guided denoiser (an inpaint's latent mask blend, render/img2img.py); ``image_cond``
    an inpainting model's extra UNet input (render/inpaint_cond.py)."""
    info = spec.info
    noise = brownian_noise_sampler(x, sigmas, seeds) if info.brownian_noise else rng.noise_sampler()
    time_ids = sdxl_time_ids(size or (int(x.shape[-1]) * 8, int(x.shape[-2]) * 8), x.device)
    if guide is not None:
        cfg = guide(x, time_ids)
    else:
        cfg = CFGDenoiser(
            model.denoiser,
            merge_conds(conds[0], time_ids),
            merge_conds(conds[1], time_ids),
            cfg_scale,
            cfg_rescale=cfg_rescale,
        )
    cfg.image_cond = image_cond
    if control is not None:
        # ControlNet residuals ride in the UNet calls of this pass (render/control/hook.py).
        cfg.model = control.bind(cfg.model, cfg.uncond_schedule, len(sigmas) - 1)  # type: ignore[arg-type]

    def on_step(info: dict[str, Any]) -> None:
        progress.step()
        if control is not None:
            control.at_step(info)

    progress.start_pass(label, len(sigmas) - 1)
    den: Denoiser = cfg if wrap is None else wrap(cfg)
    out = sample(spec.sampler, den, x, sigmas, noise, callback=on_step)
    return spec.final_latent(out, sigmas)


def sdxl_time_ids(size: tuple[int, int], device: torch.device) -> Tensor:
    """SDXL's size conditioning as WebUI's ``sd_models_xl.get_learned_conditioning`` builds it:
    original size and target size both the pass's (height, width), crop (top, left) = (0, 0)
    (WebUI's sdxl_crop_top/left defaults). The hires pass gets its own size, hr_upscale_to_x/y,
    which need not be a multiple of 8, so it is passed in, not read off the latent."""
    w, h = size
    return torch.tensor([h, w, 0, 0, h, w], dtype=torch.float32, device=device)


def render_batch(
    model: LoadedModel,
    batch: list[ResolvedJob],
    conds: list[PanelConds],
    progress: RenderProgress,
    stage: Stage,
    upscaler: UpscalerModel | None = None,
    regional: RegionalConds | None = None,
    controls: ControlNets | None = None,
) -> list[Image.Image]:
    """Render a batch of resolved jobs that share all settings; one image per job, in order.

    With ``regional`` (a batch of one regional job), each pass is guided by the job's regions."""
    first = batch[0]
    if first.job.img2img is not None:
        from storyboard.render.img2img import render_img2img

        # img2img and inpaint panels render one by one (each its own picture) with no hires pass.
        pairs = zip(batch, conds, strict=True)
        return [render_img2img(model, rj, c, progress, stage, regional, controls) for rj, c in pairs]
    s, spec, hr_spec = first.settings, first.spec, first.hr_spec
    model = model.for_settings(s)
    den, device = model.denoiser, model.device
    seeds = [rj.job.seed for rj in batch]
    # Prepare timesteps and latents.
    rng = ImageRNG((4, s.height // 8, s.width // 8), seeds, s.noise_source, device)
    sigmas = spec.sigmas(s.steps, den.sigmas, device)
    x = spec.initial_latent(rng.next(), sigmas)
    ids = ", ".join(rj.job.panel_id for rj in batch)
    hr = s.hires
    ctl: tuple[ControlPass | None, ControlPass | None] = (None, None)
    if controls is not None and first.job.control:
        hr_size = hires_size(s.width, s.height, hr.scale) if hr is not None else None
        hr_total = len(hires_sigmas(model, first)) - 1 if hr is not None else None
        ctl = controls.passes(first, model.components.unet, (len(sigmas) - 1, hr_total), hr_size)
    # Denoise.
    with stage("sample"):
        latent = run_pass(
            model, spec, x, sigmas, rng, seeds, ([c.cond for c in conds], [c.uncond for c in conds]),
            s.cfg_scale, progress, ids, regional_guide(model, first, regional, hires=False),
            (s.width, s.height), s.cfg_rescale, ctl[0], image_cond=grey_cond(model, x),
        )  # fmt: skip
    # Hires fix.
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
        sigmas2 = hires_sigmas(model, first)
        x2 = noised_latent(up, rng2.next(), sigmas2)
        hr_conds = ([c.hr_cond or c.cond for c in conds], [c.hr_uncond or c.uncond for c in conds])
        with stage("hires_sample"):
            latent = run_pass(
                model, hr_spec, x2, sigmas2, rng2, seeds, hr_conds, s.cfg_scale, progress, f"{ids} (hires)",
                regional_guide(model, first, regional, hires=True), (tw, th), s.cfg_rescale, ctl[1],
                image_cond=grey_cond(model, x2),
            )  # fmt: skip
    # Decode.
    with stage("decode"):
        return decode_latents(model.components.vae, latent)


def grey_cond(model: LoadedModel, x: Tensor) -> Tensor | None:
    """An inpainting model's txt2img conditioning for latent `x` (WebUI's weight 1.0 makes the hires
    pass's the same: the whole picture masked); None for an ordinary model."""
    if not model.components.inpainting:
        return None
    from storyboard.render.inpaint_cond import txt2img_conditioning

    size = (int(x.shape[-2]), int(x.shape[-1]))
    return txt2img_conditioning(model.components.vae, int(x.shape[0]), size, x.device)


def hires_sigmas(model: LoadedModel, rj: ResolvedJob) -> Tensor:
    """The hires pass's sigmas: an int(steps / d)-step schedule entered so `steps` steps remain."""
    s, hr, hr_spec = rj.settings, rj.settings.hires, rj.hr_spec
    assert hr is not None and hr_spec is not None
    den, device = model.denoiser, model.device
    return img2img_sigmas(
        lambda n: hr_spec.sigmas(n, den.sigmas, device), hr.steps or s.steps, hr.denoising_strength
    )


def regional_guide(
    model: LoadedModel, rj: ResolvedJob, rc: RegionalConds | None, *, hires: bool
) -> GuideFactory | None:
    """The guided denoiser of one pass of a regional job: one entry per region under its LoRA set
    (with the negative prompt encoded under that set, unless ``negative_loras: shared``), masks made
    at the pass's own latent size (so the hires pass gets sharp, not resized, masks), the shared
    prompt as one more entry only where some weight falls to it."""
    if rc is None:
        return None
    s, spec = rj.settings, (rj.hr_spec if hires else rj.spec)
    assert spec is not None
    rs = s.regional
    stop = rs.hires_lora_stop_step if hires else rs.lora_stop_step
    # The denoiser counts model calls; a second-order sampler makes two per step.
    stop_calls = spec.schedule_steps(stop) if stop > 0 else None

    def build(x: Tensor, time_ids: Tensor) -> CFGDenoiser:
        h, w = int(x.shape[-2]), int(x.shape[-1])
        weights, base = blend_weights(
            [r.box for r in rj.job.regions], h, w, feather=rs.feather, base_ratio=rs.base_ratio
        )

        def mask(m: object) -> Tensor:
            return torch.as_tensor(m).to(device=x.device, dtype=x.dtype)[None, None]

        def pick(first: CondSchedule, hr: CondSchedule | None) -> CondSchedule:
            return (hr or first) if hires else first

        # Each region's own negative (negative_loras: region), merged once per schedule: regions of
        # one LoRA set share it, and the denoiser evaluates one schedule once.
        negatives: dict[int, CondSchedule] = {}
        for first, hr in rc.negatives or []:
            negatives.setdefault(id(pick(first, hr)), merge_conds([pick(first, hr)], time_ids))
        entries = []
        for n, ((key, cond, hr_cond), m) in enumerate(zip(rc.regions, weights, strict=True)):
            own = None if rc.negatives is None else negatives[id(pick(*rc.negatives[n]))]
            entries.append(
                CondEntry(merge_conds([pick(cond, hr_cond)], time_ids), mask(m), key, stop_calls, own)
            )
        if base.max() > 0:
            if rc.shared is None:
                raise RuntimeError("the shared prompt is needed here but was not encoded")
            entries.append(CondEntry(merge_conds([pick(*rc.shared)], time_ids), mask(base)))
        uncond = pick(rc.panel.uncond, rc.panel.hr_uncond)
        return CFGDenoiser(
            model.denoiser,
            entries,
            merge_conds([uncond], time_ids),
            s.cfg_scale,
            switch_loras=rc.switch,
            cfg_rescale=s.cfg_rescale,
        )

    return build


def needs_shared_prompt(rj: ResolvedJob) -> bool:
    """Whether any pass gives weight to the shared prompt (a base ratio, or area no region covers)."""
    s = rj.settings
    sizes = [(s.height // 8, s.width // 8)]
    if s.hires is not None:
        w, h = hires_size(s.width, s.height, s.hires.scale)
        sizes.append((h // 8, w // 8))
    boxes = [r.box for r in rj.job.regions]
    rs = s.regional
    weights = [blend_weights(boxes, h, w, feather=rs.feather, base_ratio=rs.base_ratio) for h, w in sizes]
    return any(base.max() > 0 for _, base in weights)
