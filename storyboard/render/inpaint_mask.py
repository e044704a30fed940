"""Inpaint masks and the picture around them, as WebUI's img2img prepares and pastes them back.

Pure functions over PIL images (no torch, no files), so a later step (a per-character detailer:
detect, crop with padding, inpaint at a higher resolution, paste back) reuses them as they are:

    binary_mask      WebUI ``create_binary_mask``: a mask picture -> L, 0 or 255 (alpha for RGBA)
    box_mask         a [x0, y0, x1, y1] panel-fraction box -> the same kind of mask
    dilate / erode   grow or shrink a mask by n pixels (square neighbourhood)
    blur_mask        ``cv2.GaussianBlur`` in x, then in y, kernel 2*int(2.5*blur+0.5)+1, as WebUI
    crop_region      the masked area's bounding box plus padding (``masking.get_crop_region_v2``)
    expand_crop_region  that box grown to the processing aspect ratio (``masking.expand_crop_region``)
    resize_image     WebUI ``images.resize_image`` modes 0-2 (Lanczos; no upscaler model)
    fill_masked      WebUI ``masking.fill`` ("Masked content: fill")
    overlay_image    the picture with alpha = 255 - mask: what is pasted over the result
    paste_back       WebUI ``apply_overlay``: the result (uncropped into place for "only masked")
                     under the overlay; where the overlay's mask is 0 the picture's own bytes stay
    latent_mask      the mask at latent size, as the sampler blends with it (0 keep, 1 repaint)

The blur is computed in float64 with cv2's kernel and border (reflect-101) and rounded half up;
OpenCV's 8-bit fixed-point path can differ from it by one level at some pixels. Where the blurred
mask is 0 (farther than the kernel's radius from the mask), the result is the picture's own pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps

Region = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive

RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill", "Just resize (latent upscale)")


def binary_mask(image: Image.Image) -> Image.Image:
    """WebUI's ``create_binary_mask`` (mask_round on): an RGBA picture with any transparency is
    masked by its alpha (> 128 = repaint); any other picture by its grey level, kept as it is."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        return image.getchannel("A").point(lambda v: 255 if v > 128 else 0)
    return image.convert("L")


def box_mask(size: tuple[int, int], box: Sequence[float]) -> Image.Image:
    """A box of panel fractions as a mask of `size` (w, h): 255 inside, 0 outside.

    >>> m = box_mask((10, 4), (0.5, 0, 1, 0.5))
    >>> m.getbbox()
    (5, 0, 10, 2)
    """
    w, h = size
    x0, y0, x1, y1 = (round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h))
    mask = Image.new("L", size, 0)
    if x1 > x0 and y1 > y0:
        ImageDraw.Draw(mask).rectangle([x0, y0, x1 - 1, y1 - 1], fill=255)
    return mask


def dilate(mask: Image.Image, pixels: int) -> Image.Image:
    """Grow the mask by `pixels` in every direction (a square neighbourhood); 0 = unchanged."""
    return mask.filter(ImageFilter.MaxFilter(2 * pixels + 1)) if pixels > 0 else mask


def erode(mask: Image.Image, pixels: int) -> Image.Image:
    """Shrink the mask by `pixels` (a square neighbourhood); 0 = unchanged."""
    return mask.filter(ImageFilter.MinFilter(2 * pixels + 1)) if pixels > 0 else mask


def blur_kernel(blur: int) -> np.ndarray:
    """cv2.getGaussianKernel(2*int(2.5*blur+0.5)+1, blur): WebUI's kernel size for a mask blur."""
    radius = int(2.5 * blur + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k: np.ndarray = np.exp(-(x * x) / (2.0 * blur * blur))
    normalised: np.ndarray = k / k.sum()
    return normalised


def _blur_axis(arr: np.ndarray, blur: int, axis: int) -> np.ndarray:
    from scipy.ndimage import correlate1d

    # scipy's "mirror" is OpenCV's default border, reflect-101 (d c b | a b c d).
    out: np.ndarray = correlate1d(arr.astype(np.float64), blur_kernel(blur), axis=axis, mode="mirror")
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def blur_mask(mask: Image.Image, blur_x: int, blur_y: int | None = None) -> Image.Image:
    """WebUI's mask blur: a Gaussian along x, rounded to 8 bits, then along y (two cv2 calls)."""
    blur_y = blur_x if blur_y is None else blur_y
    arr = np.asarray(mask.convert("L"))
    if blur_x > 0:
        arr = _blur_axis(arr, blur_x, axis=1)
    if blur_y > 0:
        arr = _blur_axis(arr, blur_y, axis=0)
    return Image.fromarray(arr, mode="L")


def crop_region(mask: Image.Image, padding: int) -> Region | None:
    """The masked area's bounding box grown by `padding` and kept inside the picture; None when
    nothing is masked (WebUI then falls back to the whole picture)."""
    box = mask.convert("L").getbbox()
    if box is None:
        return None
    x0, y0, x1, y1 = box
    w, h = mask.size
    return max(x0 - padding, 0), max(y0 - padding, 0), min(x1 + padding, w), min(y1 + padding, h)


def expand_crop_region(region: Region, proc_w: int, proc_h: int, img_w: int, img_h: int) -> Region:
    """Grow the region (centred, then shifted back inside the picture) to the aspect ratio of the
    size it is rendered at, as WebUI's ``expand_crop_region``.

    >>> expand_crop_region((10, 10, 42, 18), 64, 64, 100, 100)
    (10, 0, 42, 32)
    """
    x0, y0, x1, y1 = region
    ratio = (x1 - x0) / (y1 - y0)
    target = proc_w / proc_h
    if ratio > target:
        grow = int((x1 - x0) / target - (y1 - y0))
        y0 -= grow // 2
        y1 += grow - grow // 2
        y0, y1 = _inside(y0, y1, img_h)
    else:
        grow = int((y1 - y0) * target - (x1 - x0))
        x0 -= grow // 2
        x1 += grow - grow // 2
        x0, x1 = _inside(x0, x1, img_w)
    return x0, y0, x1, y1


def _inside(a: int, b: int, size: int) -> tuple[int, int]:
    """WebUI's shift of a grown span back inside [0, size]; a span longer than the picture is cut
    to it (the crop is then fitted to the processing size by "resize and fill")."""
    if b >= size:
        a, b = a - (b - size), size
    if a < 0:
        a, b = 0, b - a
    return a, min(b, size)


def resize_image(mode: int, image: Image.Image, width: int, height: int) -> Image.Image:
    """WebUI ``images.resize_image`` without an upscaler model: 0 just resize, 1 crop and resize
    (cover, centred), 2 resize and fill (fit, centred, the gaps filled by stretching the edge rows or
    columns). Every resize is Lanczos."""

    def lanczos(im: Image.Image, w: int, h: int) -> Image.Image:
        return im if im.size == (w, h) else im.resize((w, h), resample=Image.Resampling.LANCZOS)

    if mode == 0:
        return lanczos(image, width, height)
    ratio, src_ratio = width / height, image.width / image.height
    if mode == 1:
        src_w = width if ratio > src_ratio else image.width * height // image.height
        src_h = height if ratio <= src_ratio else image.height * width // image.width
    else:
        src_w = width if ratio < src_ratio else image.width * height // image.height
        src_h = height if ratio >= src_ratio else image.height * width // image.width
    resized = lanczos(image, src_w, src_h)
    out = Image.new(image.mode if image.mode in ("L", "RGB") else "RGB", (width, height))
    out.paste(resized, (width // 2 - src_w // 2, height // 2 - src_h // 2))
    if mode == 2 and ratio < src_ratio:
        gap = height // 2 - src_h // 2
        out.paste(resized.resize((width, gap), box=(0, 0, width, 0)), (0, 0))
        out.paste(resized.resize((width, gap), box=(0, src_h, width, src_h)), (0, gap + src_h))
    elif mode == 2 and ratio > src_ratio:
        gap = width // 2 - src_w // 2
        out.paste(resized.resize((gap, height), box=(0, 0, 0, height)), (0, 0))
        out.paste(resized.resize((gap, height), box=(src_w, 0, src_w, height)), (gap + src_w, 0))
    return out


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """WebUI ``masking.fill``: the masked area filled with colours of the picture around it, by
    compositing ever less blurred copies of the unmasked picture."""
    filled = Image.new("RGBA", image.size)
    unmasked = Image.new("RGBa", image.size)
    unmasked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = unmasked.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            filled.alpha_composite(blurred)
    return filled.convert("RGB")


def overlay_image(image: Image.Image, mask: Image.Image) -> Image.Image:
    """The picture as WebUI pastes it over the result: alpha 255 - mask (premultiplied on the way,
    as WebUI's RGBa paste), so where the mask is 0 it is the picture itself."""
    over = Image.new("RGBa", image.size)
    over.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    return over.convert("RGBA")


def overlay_mask(mask: Image.Image) -> Image.Image:
    """The whole-picture overlay mask: the blurred mask doubled and clipped (WebUI), so the
    repainted area shows fully well before the blur's middle."""
    arr = np.asarray(mask.convert("L"), dtype=np.float32) * 2
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), mode="L")


def paste_back(result: Image.Image, overlay: Image.Image, paste_to: Region | None = None) -> Image.Image:
    """WebUI ``apply_overlay``: for "only masked", the result resized (crop and resize) into its
    region of a transparent picture of the overlay's size; then the overlay composited on top."""
    if paste_to is not None:
        x0, y0, x1, y1 = paste_to
        placed = Image.new("RGBA", overlay.size)
        placed.paste(resize_image(1, result.convert("RGB"), x1 - x0, y1 - y0), (x0, y0))
        result = placed
    out = result.convert("RGBA")
    out.alpha_composite(overlay)
    return out.convert("RGB")


def latent_mask(mask: Image.Image, latent_w: int, latent_h: int) -> np.ndarray:
    """The mask as the sampler blends with it: resized to the latent (PIL's default bicubic, as
    WebUI's ``init_mask.convert('RGB').resize(...)``), scaled to 0..1 and rounded: 1 = repaint."""
    small = mask.convert("RGB").resize((latent_w, latent_h))
    arr = np.asarray(small, dtype=np.float32)[..., 0] / 255.0
    return np.around(arr).astype(np.float32)


__all__ = [
    "RESIZE_MODES",
    "Region",
    "binary_mask",
    "blur_kernel",
    "blur_mask",
    "box_mask",
    "crop_region",
    "dilate",
    "erode",
    "expand_crop_region",
    "fill_masked",
    "latent_mask",
    "overlay_image",
    "overlay_mask",
    "paste_back",
    "resize_image",
]
