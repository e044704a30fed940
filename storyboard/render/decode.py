"""Latents <-> PIL images through the VAE, the way WebUI converts them.

Decoding: ``x = vae.decode(latent / scaling_factor)``, ``clamp((x + 1) / 2, 0, 1)``, then
``(255 * x).astype(uint8)`` (truncation, as WebUI's ``sample_to_image`` path). Images are decoded one
at a time: a batch then decodes to exactly the pixels each image gets alone, and peak memory stays
that of one image. Large images decode tiled on CUDA (diffusers' ``enable_tiling``), every image
with ``render.low_memory`` (``set_always_tiled``), and a
half-precision VAE that produces NaNs is retried in float32, as WebUI's "revert VAE to 32-bit" does.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

# A full SD VAE decode in half precision peaks near 10 GB at 1024x1024; scale that by pixel count.
DECODE_BYTES_PER_PIXEL = 10 * 2**30 / (1024 * 1024)


def _scaling(vae: Any) -> tuple[float, float]:
    cfg = vae.config
    shift = getattr(cfg, "shift_factor", None)
    return float(cfg.scaling_factor), float(shift) if shift is not None else 0.0


def _vae_dtype(vae: Any) -> torch.dtype:
    dtype: torch.dtype = next(vae.parameters()).dtype
    return dtype


# VAEs that always decode tiled (render.low_memory); weak, so a dropped model leaves no entry.
_ALWAYS_TILED: weakref.WeakSet[Any] = weakref.WeakSet()


def set_always_tiled(vae: Any, on: bool) -> None:
    """Tile every decode and encode of this VAE (render.low_memory; changes pixels slightly)."""
    if on:
        _ALWAYS_TILED.add(vae)
    else:
        _ALWAYS_TILED.discard(vae)


def _set_tiling(vae: Any, pixels: int) -> None:
    device = next(vae.parameters()).device
    tiled = vae in _ALWAYS_TILED
    if device.type == "cuda" and not tiled:
        # Tiling costs 2-3x the time (896x1280: 0.25 s against 0.10 s on an H200), so it is used only
        # when a whole decode would not fit in the free memory.
        free, _ = torch.cuda.mem_get_info(device)
        tiled = pixels * DECODE_BYTES_PER_PIXEL > 0.8 * free
    if hasattr(vae, "enable_tiling"):
        if tiled:
            vae.enable_tiling()
        else:
            vae.disable_tiling()


@torch.no_grad()
def _decode_one(vae: AutoencoderKL, latent: Tensor) -> Tensor:
    scale, shift = _scaling(vae)
    z = latent.unsqueeze(0) / scale + shift
    dtype = _vae_dtype(vae)
    out: Tensor = vae.decode(z.to(dtype)).sample.float()
    if dtype != torch.float32 and not torch.isfinite(out).all():
        # fp16 SD VAEs overflow on some images; WebUI then reruns the decode in float32.
        torch.nn.Module.to(vae, dtype=torch.float32)
        try:
            out = vae.decode(z.float()).sample.float()
        finally:
            torch.nn.Module.to(vae, dtype=dtype)
    return out[0]


# Set in an image's .info when its latent or decode held NaN/inf: the picture is black, not a render.
NONFINITE = "storyboard_nonfinite"


def decode_latents(vae: Any, latents: Tensor) -> list[Image.Image]:
    """(B, 4, h, w) latents -> B RGB images of (8w, 8h) pixels."""
    _set_tiling(vae, int(latents.shape[-1] * latents.shape[-2] * 64))
    images: list[Image.Image] = []
    for latent in latents:
        x = _decode_one(vae, latent)
        finite = bool(torch.isfinite(latent).all()) and bool(torch.isfinite(x).all())
        # A NaN decode (broken weights, fp16 overflow even in fp32) becomes black, as WebUI shows it.
        x = torch.nan_to_num(torch.clamp((x + 1.0) / 2.0, 0.0, 1.0), nan=0.0)
        arr = (255.0 * x.permute(1, 2, 0).cpu().numpy()).astype(np.uint8)
        image = Image.fromarray(arr, mode="RGB")
        if not finite:
            image.info[NONFINITE] = True  # the build refuses to keep it, naming the panel
        images.append(image)
    return images


@torch.no_grad()
def encode_images(vae: Any, images: list[Image.Image], device: torch.device) -> Tensor:
    """RGB images -> (B, 4, h, w) float32 latents (the posterior mean, scaled).

    WebUI samples the VAE posterior with the global torch RNG here, so its Lanczos hires pass is not
    reproducible run to run; the mean keeps ours deterministic.
    """
    out = []
    for img in images:
        arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).to(device) * 2.0 - 1.0
        out.append(encode_pixels(vae, x))
    return torch.cat(out)


@torch.no_grad()
def encode_pixels(vae: Any, x: Tensor) -> Tensor:
    """(1, 3, H, W) pixels in [-1, 1] -> (1, 4, H/8, W/8) float32 latent (posterior mean, scaled):
    for pictures that are no 8-bit image, such as an inpainting model's masked picture."""
    scale, shift = _scaling(vae)
    _set_tiling(vae, int(x.shape[-1] * x.shape[-2]))
    mean = vae.encode(x.to(_vae_dtype(vae))).latent_dist.mode().float()
    out: Tensor = (mean - shift) * scale
    return out
