"""img2img and inpaint for one panel, as WebUI's ``StableDiffusionProcessingImg2Img`` runs them.

    prepare     the init picture (transparency over white, as WebUI flattens it) fitted to the panel by the
                resize mode; for an inpaint the mask binarised, blurred in x and y, and either
                fitted to the panel ("whole picture") or used to crop the picture around the masked
                area, padded and grown to the panel's aspect ("only masked", rendered at the panel's
                size); masked content "fill" repaints the masked pixels first     (prepare_init)
    encode      the VAE's posterior mean of that picture ("latent upscale": encoded at its own
                size, then the latent resized bilinearly); masked content "latent noise" /
                "latent nothing" replace the masked latent by the seed's noise / zeros
    sample      WebUI's step arithmetic: the `steps`-long schedule entered so that
                int(steps * denoising) + 1 steps run (``img2img_fix_steps``: exactly `steps` steps
                of a longer schedule); x = init latent + noise * sigma0; for an inpaint the guided
                denoiser's prediction is blended with the init latent after every model call,
                denoised * m + init * (1 - m) with m the rounded latent mask (WebUI's k-diffusion
                CFG denoiser, mask applied after denoising), and once more on the result
    decode      then, for an inpaint, the overlay (the original picture with alpha = 255 - mask)
                composited over the result (``apply_overlay``): outside the blurred mask the
                panel keeps its own bytes

There is no hires pass: WebUI's img2img has none. The mask, crop and paste-back steps are the pure
functions of ``render/inpaint_mask.py``. Known differences from WebUI: the VAE encode uses the
posterior mean (WebUI samples it with the global RNG, which does not repeat); an init image
inpainted "only masked" is first fitted to the panel's size (WebUI keeps the picture's own size,
which would not fill the panel's frame). An inpainting model (9-channel UNet) gets WebUI's image
conditioning (``render/inpaint_cond.py``: the rounded mask and the masked picture's latent) at every
UNet call, with ``inpainting_mask_weight`` at WebUI's default 1.0 (no story field); for "latent
upscale" its masked picture is encoded at the picture's size and resized like the init latent (WebUI
fails there). ControlNet units of an "only masked" inpaint read their map cut to the same crop
(``control/preprocess.crop_to_inpaint``), as the extension does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from storyboard.input_images import load_input_image
from storyboard.jobs import Img2ImgJob, InpaintJob, PanelJob
from storyboard.render import inpaint_mask as im
from storyboard.render.conditioning import PanelConds, RegionalConds
from storyboard.render.control.runtime import ControlNets
from storyboard.render.decode import decode_latents, encode_images
from storyboard.render.hires import img2img_sigmas, noised_latent
from storyboard.render.inpaint_cond import inpainting_conditioning
from storyboard.render.noise import ImageRNG
from storyboard.render.progress import RenderProgress
from storyboard.render.resolve import ResolvedJob
from storyboard.render.sampling.samplers import Denoiser
from storyboard.render.txt2img import LoadedModel, Stage, regional_guide, run_pass

MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")  # WebUI's inpainting_fill 0-3


@dataclass(frozen=True)
class PreparedInit:
    """What the sampler starts from, in pixels: the picture to encode and, for an inpaint, the
    mask at the processing size, the overlay pasted back, and where ("only masked")."""

    image: Image.Image
    latent_upscale: bool = False  # encode `image` at its own size, then resize the latent
    mask: Image.Image | None = None  # L, processing size: where the latent mask comes from
    overlay: Image.Image | None = None  # RGBA, the picture's own size
    paste_to: im.Region | None = None


def input_mask(job: PanelJob, size: tuple[int, int]) -> Image.Image:
    """The inpaint's binary mask at the picture's size (w, h): its mask image, else its box."""
    assert job.inpaint is not None
    if job.has_input("mask"):
        return im.binary_mask(load_input_image(job.input_image("mask").path, mode="RGBA"))
    assert job.inpaint.box is not None
    return im.box_mask(size, job.inpaint.box)


def fits_first(inpaint: InpaintJob, picture_size: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether an "only masked" picture (and its mask) is first fitted to the panel: WebUI keeps the
    picture's own size, but a panel must fill its frame, so it is fitted as the whole picture is."""
    return inpaint.full_res and not inpaint.keep_picture_size and picture_size != size


def inpaint_region(
    i2i: Img2ImgJob, size: tuple[int, int], inpaint: InpaintJob, mask: Image.Image
) -> tuple[Image.Image, im.Region | None]:
    """The blurred mask (at the picture's size, fitted first where ``fits_first``) and, for "only
    masked", the region rendered and pasted back: the mask's box padded, grown to the aspect of
    `size` (None: "whole picture", or a blank mask). The picture changes only inside that region,
    so the face detailer batches faces whose regions do not meet (render/detail.py)."""
    w, h = size
    if fits_first(inpaint, mask.size, size):
        mask = im.resize_image(min(im.RESIZE_MODES.index(i2i.resize_mode), 2), mask, w, h)
    blurred = im.blur_mask(mask, inpaint.mask_blur)
    region = im.crop_region(blurred, inpaint.padding) if inpaint.full_res else None
    if region is not None:
        region = im.expand_crop_region(region, w, h, *blurred.size)
    return blurred, region


def prepare_init(
    picture: Image.Image,
    i2i: Img2ImgJob,
    size: tuple[int, int],
    inpaint: InpaintJob | None = None,
    mask: Image.Image | None = None,
) -> PreparedInit:
    """WebUI's img2img ``init`` in pixels, for a panel rendered at `size` (w, h); `mask` is the
    binary mask at the picture's size (``input_mask``)."""
    w, h = size
    mode = im.RESIZE_MODES.index(i2i.resize_mode)
    image = picture.convert("RGB")  # transparency is already over white (load_input_image)
    if inpaint is None or mask is None:
        if mode == 3:
            return PreparedInit(image, latent_upscale=True)
        return PreparedInit(im.resize_image(mode, image, w, h))
    if fits_first(inpaint, image.size, size):
        image = im.resize_image(min(mode, 2), image, w, h)
    blurred, region = inpaint_region(i2i, size, inpaint, mask)
    if inpaint.full_res and region is None:
        # WebUI: "Unable to perform Inpaint Only mask because mask is blank, switch to img2img".
        return prepare_init(picture, i2i, size)
    # WebUI's resize_image treats mode 3 (latent upscale) as "resize and fill" for the mask.
    fit = min(mode, 2)
    if region is not None:
        proc_mask = im.resize_image(2, blurred.crop(region), w, h)
        overlay = im.overlay_image(image, blurred)
        work = im.resize_image(2, image.crop(region), w, h)
    else:
        proc_mask = im.resize_image(fit, blurred, w, h)
        if mode != 3:
            image = im.resize_image(mode, image, w, h)
        over_mask = im.overlay_mask(proc_mask)
        if over_mask.size != image.size:
            over_mask = im.resize_image(fit, over_mask, *image.size)
        overlay = im.overlay_image(image, over_mask)
        work = image
    if inpaint.masked_content != "original":
        work = im.fill_masked(work, proc_mask)
    return PreparedInit(work, mode == 3 and region is None, proc_mask, overlay, region)


def mask_blend(init_latent: Tensor, nmask: Tensor) -> Callable[[Denoiser], Denoiser]:
    """Wraps a guided denoiser so each prediction keeps the init latent outside the mask."""
    keep = 1.0 - nmask

    def wrap(den: Denoiser) -> Denoiser:
        def blended(x: Tensor, sigma: Tensor) -> Tensor:
            out: Tensor = den(x, sigma) * nmask + init_latent * keep
            return out

        return blended

    return wrap


def init_picture(job: PanelJob) -> Image.Image:
    """The picture the panel starts from: its init image, or the stored base render."""
    assert job.img2img is not None
    if job.has_input("init"):
        return load_input_image(job.input_image("init").path, mode="RGB")
    if job.img2img.base_render is None:
        raise RuntimeError(f"panel {job.panel_id}: the base render was not handed to the renderer")
    return load_input_image(job.img2img.base_render, mode="RGB")


def render_img2img(
    model: LoadedModel,
    rj: ResolvedJob,
    conds: PanelConds,
    progress: RenderProgress,
    stage: Stage,
    regional: RegionalConds | None = None,
    controls: ControlNets | None = None,
    picture: Image.Image | None = None,
) -> Image.Image:
    """One img2img or inpaint panel (see the module docstring); returns the finished picture.
    `picture`: the picture to start from when it is not a file (the face detailer's panel)."""
    return render_img2img_batch(model, [rj], [conds], progress, stage, regional, controls, picture)[0]


def batchable(rjs: list[ResolvedJob], conds: list[PanelConds]) -> bool:
    """Whether jobs can share one sampling loop: one settings, one img2img and masked-content
    choice, prompts of equal token counts (a batch pads shorter prompts, which changes them)."""
    first, i2i = rjs[0], rjs[0].job.img2img

    def content(rj: ResolvedJob) -> str | None:
        return None if rj.job.inpaint is None else rj.job.inpaint.masked_content

    return len({c.shape_key for c in conds}) == 1 and all(
        r.settings == first.settings and r.job.img2img == i2i and content(r) == content(first) for r in rjs
    )


def render_img2img_batch(
    model: LoadedModel,
    rjs: list[ResolvedJob],
    conds: list[PanelConds],
    progress: RenderProgress,
    stage: Stage,
    regional: RegionalConds | None = None,
    controls: ControlNets | None = None,
    picture: Image.Image | None = None,
) -> list[Image.Image]:
    """Jobs of one settings over one picture in one sampling loop, each with its own seed, mask and
    prompts (of equal token counts: a batch pads nobody); one finished picture per job. A batch of
    one is ``render_img2img``; regional and ControlNet panels render alone."""
    rj = rjs[0]
    job, s, spec = rj.job, rj.settings, rj.spec
    i2i, inpaint = job.img2img, job.inpaint
    assert i2i is not None
    assert len(rjs) == 1 or (batchable(rjs, conds) and regional is None and not job.control)
    model = model.for_settings(s)
    den, device, vae = model.denoiser, model.device, model.components.vae
    picture = init_picture(job) if picture is None else picture
    preps = []
    for r in rjs:
        mask = input_mask(r.job, picture.size) if r.job.inpaint is not None else None
        preps.append(prepare_init(picture, i2i, (s.width, s.height), r.job.inpaint, mask))
    latent_size = (s.height // 8, s.width // 8)
    with stage("encode_image"):
        init = torch.cat([encode_images(vae, [p.image], device) for p in preps])
        if preps[0].latent_upscale:
            init = F.interpolate(init, size=latent_size, mode="bilinear")
    seeds = [r.job.seed for r in rjs]
    rng = ImageRNG((int(init.shape[1]), *latent_size), seeds, s.noise_source, device)
    nmask: Tensor | None = None
    if any(p.mask is not None for p in preps):
        # A job whose "only masked" mask is blank repaints everything: a mask of ones blends exactly.
        ms = [np.ones(latent_size, np.float32) if p.mask is None else
              im.latent_mask(p.mask, latent_size[1], latent_size[0]) for p in preps]  # fmt: skip
        nmask = torch.from_numpy(np.ascontiguousarray(np.stack(ms)))[:, None]
        nmask = nmask.to(device=device, dtype=init.dtype)
        assert inpaint is not None
        if inpaint.masked_content == "latent noise":
            # WebUI draws it with fresh generators of the same seeds: the same numbers as x's noise.
            fresh = ImageRNG(tuple(init.shape[1:]), seeds, s.noise_source, device).next()
            init = init * (1 - nmask) + fresh * nmask
        elif inpaint.masked_content == "latent nothing":
            init = init * (1 - nmask)
    image_cond = None
    if model.components.inpainting:
        with stage("encode_image"):
            image_cond = torch.cat(
                [inpainting_conditioning(vae, p.image, p.mask, latent_size, device) for p in preps]
            )
    sigmas = img2img_sigmas(
        lambda n: spec.sigmas(n, den.sigmas, device), s.steps, i2i.denoising_strength, fix_steps=i2i.fix_steps
    )
    x = noised_latent(init, rng.next(), sigmas)
    # ControlNet units steer the one pass; their guidance range counts the steps it runs (the
    # extension reads WebUI's sampling_steps, which img2img sets to t_enc + 1).
    control = None
    if controls is not None and job.control:
        # "Only masked": the control map is cut to the same crop as the picture (the extension).
        crop, prep = None, preps[0]  # a ControlNet panel renders alone
        if prep.overlay is not None and prep.paste_to is not None:
            crop = (prep.overlay.size, prep.paste_to)
        control = controls.passes(rj, model.components.unet, (len(sigmas) - 1, None), None, crop)[0]
    with stage("sample"):
        latent = run_pass(
            model, spec, x, sigmas, rng, seeds, ([c.cond for c in conds], [c.uncond for c in conds]),
            s.cfg_scale, progress, ", ".join(r.job.panel_id for r in rjs),
            regional_guide(model, rj, regional, hires=False), (s.width, s.height), s.cfg_rescale,
            control=control, wrap=mask_blend(init, nmask) if nmask is not None else None,
            image_cond=image_cond,
        )  # fmt: skip
    if nmask is not None:
        latent = latent * nmask + init * (1 - nmask)
    with stage("decode"):
        images = decode_latents(vae, latent)
    out = []
    for image, prep in zip(images, preps, strict=True):
        if prep.overlay is not None:
            info = dict(image.info)
            image = im.paste_back(image, prep.overlay, prep.paste_to)
            image.info.update(info)  # keeps the NaN marker of a black decode
        out.append(image)
    return out
