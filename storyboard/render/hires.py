"""Hires fix arithmetic as WebUI does it (``processing.py`` txt2img hires pass, ``images.py``).

- Target size: ``int(width * scale)`` x ``int(height * scale)``, or an explicit size with WebUI's
  aspect rule (``hires_size_to``).
- Latent upscalers: ``F.interpolate`` of the first-pass latent to (target_h // 8, target_w // 8)
  with the mode/antialias WebUI names map to.
- Pixel upscale without a model: PIL LANCZOS resize (``images.resize_image`` mode 0).
- Second pass schedule: ``setup_img2img_steps`` when steps are given (WebUI always passes them
  for hires): a longer schedule entered part-way, so exactly `steps` steps are run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from storyboard.errors import StoryboardError

LATENT_SCALE = 8  # SD's VAE downsampling factor (WebUI's opt_f)

LATENT_UPSCALERS: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}

PIXEL_UPSCALERS_WITHOUT_MODEL = ("Lanczos", "None")


def img2img_steps(steps: int, denoising_strength: float, *, fix_steps: bool = True) -> tuple[int, int]:
    """WebUI ``setup_img2img_steps``: (schedule length, t_enc); the pass runs t_enc + 1 steps.

    With explicit steps (the hires pass) or WebUI's img2img_fix_steps option, a longer schedule is
    entered so that exactly `steps` steps run; otherwise (img2img's default) the `steps`-long
    schedule is entered so that int(steps * d) + 1 steps run.

    >>> img2img_steps(20, 0.75, fix_steps=False), img2img_steps(20, 0.75)
    ((20, 15), (26, 19))
    """
    if fix_steps and not 0 < denoising_strength <= 1:
        raise StoryboardError(
            f"Denoising strength {denoising_strength} is out of range.",
            hint="use a value above 0 and at most 1 (WebUI's hires default is 0.7)",
        )
    if not fix_steps:
        return steps, int(min(denoising_strength, 0.999) * steps)
    total = int(steps / min(denoising_strength, 0.999))
    return total, steps - 1


def img2img_sigmas(
    schedule_fn: Callable[[int], Tensor], steps: int, denoising_strength: float, *, fix_steps: bool = True
) -> Tensor:
    """The img2img (and hires) pass's sigmas: schedule_fn(n) gives an n-step schedule (n+1 sigmas
    ending in 0), entered at index n - t_enc - 1 as WebUI's ``sample_img2img`` does."""
    total, t_enc = img2img_steps(steps, denoising_strength, fix_steps=fix_steps)
    sigmas = schedule_fn(total)
    return sigmas[total - t_enc - 1 :]


def hires_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """Hires target size for an upscale factor (WebUI hr_upscale_to_x/y)."""
    return int(width * scale), int(height * scale)


def hires_size_to(width: int, height: int, resize_x: int, resize_y: int) -> tuple[int, int, int, int]:
    """Hires size for an explicit "resize width/height to" (0 = follow aspect): returns
    (upscale_w, upscale_h, truncate_x, truncate_y) where truncate_* are latent columns/rows WebUI
    crops after the pass to reach the requested size."""
    if resize_x == 0 and resize_y == 0:
        raise ValueError("give resize_x or resize_y, or use hires_size with a scale")
    if resize_y == 0:
        return resize_x, resize_x * height // width, 0, 0
    if resize_x == 0:
        return resize_y * width // height, resize_y, 0, 0
    if width / height < resize_x / resize_y:
        up_w, up_h = resize_x, resize_x * height // width
    else:
        up_w, up_h = resize_y * width // height, resize_y
    return up_w, up_h, (up_w - resize_x) // LATENT_SCALE, (up_h - resize_y) // LATENT_SCALE


def is_latent_upscaler(name: str) -> bool:
    return name in LATENT_UPSCALERS


def upscale_latent(latent: Tensor, size: float | tuple[int, int], upscaler_name: str = "Latent") -> Tensor:
    """Resize a (B, 4, h, w) latent like WebUI's latent hires fix.

    `size` is a scale factor (applied to the pixel size h*8, w*8 with int() as WebUI does) or a
    target pixel size (height, width); the latent becomes (height // 8, width // 8).
    """
    if upscaler_name not in LATENT_UPSCALERS:
        raise StoryboardError(
            f"Unknown latent upscaler {upscaler_name!r}.", hint="use one of: " + ", ".join(LATENT_UPSCALERS)
        )
    mode, antialias = LATENT_UPSCALERS[upscaler_name]
    if isinstance(size, tuple):
        target_h, target_w = size
    else:
        target_w, target_h = hires_size(
            latent.shape[-1] * LATENT_SCALE, latent.shape[-2] * LATENT_SCALE, size
        )
    out_size = (target_h // LATENT_SCALE, target_w // LATENT_SCALE)
    return F.interpolate(latent, size=out_size, mode=mode, antialias=antialias)


def upscale_image_lanczos(img: Image.Image, width: int, height: int) -> Image.Image:
    """WebUI ``images.resize_image(0, img, w, h)`` with no upscaler model: one LANCZOS resize."""
    return img.resize((width, height), resample=Image.Resampling.LANCZOS)


def noised_latent(latent: Tensor, noise: Tensor, sigmas: Tensor) -> Tensor:
    """Start of the second pass: x = latent + noise * sigma_sched[0] (WebUI sample_img2img)."""
    return latent + noise * sigmas[0].to(latent.dtype)


__all__ = [
    "LATENT_UPSCALERS",
    "hires_size",
    "hires_size_to",
    "img2img_sigmas",
    "img2img_steps",
    "is_latent_upscaler",
    "noised_latent",
    "upscale_image_lanczos",
    "upscale_latent",
]
