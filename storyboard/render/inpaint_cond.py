"""The extra UNet input of an inpainting model (9 input channels: sd-v1-5-inpainting and its merges),
as WebUI's ``processing.py`` builds it (``hybrid`` conditioning):

    inpaint / img2img   ``inpainting_image_conditioning``: the mask at the processing size, scaled to
                        0..1 and rounded; the picture (after "fill", in [-1, 1]) with the masked part
                        zeroed, ``lerp(picture, picture * (1 - mask), inpainting_mask_weight)``,
                        encoded by the VAE; the mask resized to the latent (nearest); [mask, latent]
                        -> 5 channels. A plain img2img has a mask of ones.
    txt2img (and hires) ``txt2img_image_conditioning``: a 0.5 grey picture (0 in [-1, 1]) encoded,
                        with a mask of ones before it.

The denoiser concatenates it after the latent at every UNet call, the unconditional half of CFG
included (``denoiser.CompVisDenoiser``). The VAE encode is the posterior mean, as for the init
latent (WebUI samples it). ``inpainting_mask_weight`` is WebUI's default, 1.0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from storyboard.render.decode import encode_pixels

MASK_WEIGHT = 1.0  # WebUI's inpainting_mask_weight default; written as "Conditional mask weight"


def pixels_tensor(image: Image.Image, device: torch.device) -> Tensor:
    """An RGB picture as (1, 3, H, W) float32 in [-1, 1], as WebUI hands it to the VAE."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None].to(device) * 2.0 - 1.0


def rounded_mask(mask: Image.Image | None, size: tuple[int, int], device: torch.device) -> Tensor:
    """(1, 1, H, W): the mask / 255 rounded to 0 or 1 (WebUI's mask_round), or ones without a mask.
    A mask of another size than the picture (latent upscale) is resized to it, nearest."""
    if mask is None:
        return torch.ones(1, 1, size[1], size[0], device=device)
    if mask.size != size:
        mask = mask.resize(size, Image.Resampling.NEAREST)
    arr = np.asarray(mask.convert("L"), dtype=np.float32) / 255.0
    return torch.round(torch.from_numpy(arr)[None, None]).to(device)


def inpainting_conditioning(
    vae: Any,
    picture: Image.Image,
    mask: Image.Image | None,
    latent_size: tuple[int, int],
    device: torch.device,
    weight: float = MASK_WEIGHT,
) -> Tensor:
    """(1, 5, h, w) for an img2img or inpaint panel: `picture` is what the init latent is encoded
    from, `mask` the processing-size mask (None: plain img2img), `latent_size` (h, w)."""
    src = pixels_tensor(picture, device)
    m = rounded_mask(mask, picture.size, device)
    masked = torch.lerp(src, src * (1.0 - m), weight)
    latent = encode_pixels(vae, masked)
    if tuple(latent.shape[-2:]) != latent_size:
        # "Just resize (latent upscale)": the picture is encoded at its own size; its latent is
        # resized as the init latent is (WebUI would fail on the size mismatch here).
        latent = F.interpolate(latent, size=latent_size, mode="bilinear")
    small = F.interpolate(m, size=latent_size)  # nearest, torch's default
    return torch.cat([small, latent], dim=1)


def txt2img_conditioning(vae: Any, batch: int, latent_size: tuple[int, int], device: torch.device) -> Tensor:
    """(batch, 5, h, w) for a txt2img (or hires) pass: the whole picture masked, i.e. a grey
    picture encoded, with a mask of ones."""
    h, w = latent_size
    latent = encode_pixels(vae, torch.zeros(1, 3, h * 8, w * 8, device=device))
    cond = F.pad(latent, (0, 0, 0, 0, 1, 0), value=1.0)
    return cond.expand(batch, -1, -1, -1).contiguous()
