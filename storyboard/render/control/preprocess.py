"""From a control image to the map a ControlNet reads, as the WebUI ControlNet extension does:

1. the preprocessor (``module``) at its resolution: ``processor_res``, or with ``pixel_perfect`` the
   extension's estimate from the first pass's size and the resize mode;
2. for an inpaint "only masked", the control image first cut to the inpaint's crop: fitted to the
   picture's size by the unit's resize mode, cropped to the region the inpaint renders, and that
   crop fitted to the pass's size by WebUI's "resize and fill" (the extension's A1111-mask step,
   so the map lines up with the cropped picture; ``crop_to_inpaint``);
3. the map resized to each pass's size (the first pass's, and the hires pass's target) by the
   ``resize_mode``: Just Resize (stretch), Crop and Resize (cover, centre crop), Resize and Fill
   (fit, centred on the median colour of the map's border);
4. as a (1, 3, H, W) float tensor in [0, 1].

The extension's resizing is OpenCV's (area down, cubic up, nearest for maps of few colours; binary
edge maps re-binarised); here PIL's box/bicubic/nearest filters and a 128 threshold stand in, so maps
match in shape and placement, not bit for bit. Preprocessors needing downloaded weights (``annotators/``)
run here too, on the same padded image; their files are checked before anything loads
(``render/control/files.py``), so the render and the review page's map preview share one path.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage

from storyboard.jobs import ControlUnit
from storyboard.render import inpaint_mask as im
from storyboard.render.control.annotators import RUN as ANNOTATED
from storyboard.render.control.annotators import run_annotator
from storyboard.render.control.canny import canny

Map = NDArray[np.uint8]  # (H, W, 3)

# The unit's resize mode as WebUI's ``images.resize_image`` mode (the extension's int_value).
RESIZE_INT = {"Just Resize": 0, "Crop and Resize": 1, "Resize and Fill": 2}


def pixel_perfect_resolution(size: tuple[int, int], target: tuple[int, int], resize_mode: str) -> int:
    """The extension's ``pixel_perfect_resolution``: the preprocessor resolution at which the map's
    shorter side lands on the target's pixels after the resize mode (size and target are (W, H))."""
    (w, h), (tw, th) = size, target
    k0, k1 = th / h, tw / w
    k = min(k0, k1) if resize_mode == "Resize and Fill" else max(k0, k1)
    return int(np.round(k * min(w, h)))


def _resize(arr: Map, w: int, h: int, filt: Image.Resampling | None = None) -> Map:
    if (arr.shape[1], arr.shape[0]) == (w, h):
        return arr
    if filt is None:
        filt = Image.Resampling.BOX if w * h < arr.shape[0] * arr.shape[1] else Image.Resampling.BICUBIC
    return np.asarray(Image.fromarray(arr).resize((w, h), filt))


def _at_resolution(arr: Map, res: int) -> tuple[Map, tuple[int, int]]:
    """``resize_image_with_pad``: the shorter side scaled to `res`, edge-padded to multiples of 64
    (what the annotators see); the (W, H) to crop back to comes with it."""
    h0, w0 = arr.shape[:2]
    k = res / min(h0, w0)
    h, w = int(np.round(h0 * k)), int(np.round(w0 * k))
    img = _resize(arr, w, h, Image.Resampling.BICUBIC if k > 1 else Image.Resampling.BOX)
    ph, pw = -h % 64, -w % 64
    return np.pad(img, [[0, ph], [0, pw], [0, 0]], mode="edge"), (w, h)


def run_module(image: Image.Image, unit: ControlUnit, res: int) -> Map:
    """The detected map of `image` (RGB) under the unit's preprocessor, as (H, W, 3) uint8."""
    arr: Map = np.asarray(image.convert("RGB"), dtype=np.uint8)
    a, b = unit.thresholds
    m = unit.module
    if m == "none":
        return arr
    if m == "invert":
        return (255 - arr).astype(np.uint8)
    if m == "tile_resample":
        rate = float(a or 1.0)
        if rate < 1.1:
            return arr
        h, w = arr.shape[:2]
        return _resize(arr, int(w / rate), int(h / rate), Image.Resampling.BOX)
    img, (w, h) = _at_resolution(arr, res)
    if m == "canny":
        edges = canny(img, float(a if a is not None else 100), float(b if b is not None else 200))
        out = np.repeat(edges[:, :, None], 3, axis=2)
    elif m == "threshold":
        out = np.where((img.min(axis=2) > float(a if a is not None else 127))[:, :, None], 255, 0)
    elif m in ANNOTATED:
        out = run_annotator(m, img)
        out = out if out.ndim == 3 else out[:, :, None]
    elif m == "scribble_xdog":
        f = img.astype(np.float32)
        g1 = ndimage.gaussian_filter(f, sigma=(0.5, 0.5, 0), truncate=4.0)
        g2 = ndimage.gaussian_filter(f, sigma=(5.0, 5.0, 0), truncate=4.0)
        dog = np.clip(255 - np.min(g2 - g1, axis=2), 0, 255).astype(np.uint8)
        edge = 2 * (255 - dog.astype(np.int32)) > float(a if a is not None else 32)
        out = np.where(edge[:, :, None], 255, 0)
    else:
        raise ValueError(f"preprocessor {m!r} is not built in")
    out = np.broadcast_to(out, img.shape)  # one-channel masks as RGB maps
    return np.ascontiguousarray(out[:h, :w].astype(np.uint8))


def fit_map(detected: Map, size: tuple[int, int], resize_mode: str) -> Map:
    """The map at a pass's (W, H) by the unit's resize mode (the extension's ``detectmap_proc``)."""
    w, h = size
    oh, ow = detected.shape[:2]
    colours = len(np.unique(detected.reshape(-1, 3), axis=0))
    binary = colours == 2 and detected.min() < 16 and detected.max() > 240
    filt = Image.Resampling.NEAREST if 2 < colours < 200 else None

    def resized(nw: int, nh: int) -> Map:
        out = _resize(detected, nw, nh, filt)
        if binary and (nw, nh) != (ow, oh):
            grey = out.astype(np.float32).mean(axis=2)
            out = np.repeat(np.where(grey > 127, 255, 0).astype(np.uint8)[:, :, None], 3, axis=2)
        return out

    if resize_mode == "Just Resize":
        return resized(w, h)
    k0, k1 = h / oh, w / ow
    if resize_mode == "Crop and Resize":
        k = max(k0, k1)
        big = resized(int(np.round(ow * k)), int(np.round(oh * k)))
        top, left = max(0, (big.shape[0] - h) // 2), max(0, (big.shape[1] - w) // 2)
        return np.ascontiguousarray(big[top : top + h, left : left + w])
    k = min(k0, k1)
    border = np.concatenate([detected[0], detected[-1], detected[:, 0], detected[:, -1]], axis=0)
    fill = np.median(border, axis=0).astype(np.uint8)
    canvas = np.tile(fill[None, None], (h, w, 1))
    small = resized(int(np.round(ow * k)), int(np.round(oh * k)))
    top, left = max(0, (h - small.shape[0]) // 2), max(0, (w - small.shape[1]) // 2)
    canvas[top : top + small.shape[0], left : left + small.shape[1]] = small[:h, :w]
    return canvas


def crop_to_inpaint(
    image: Image.Image,
    resize_mode: str,
    picture_size: tuple[int, int],
    region: im.Region,
    size: tuple[int, int],
) -> Image.Image:
    """The control image as the extension hands it on for an "only masked" inpaint: fitted to the
    inpainted picture's (W, H) by the unit's resize mode, cut to `region` (the inpaint's crop, grown
    to the processing aspect), then fitted to the processing (W, H) by "resize and fill". The
    extension does this channel by channel; PIL resamples each channel alike, so RGB at once is
    the same pixels."""
    fitted = im.resize_image(RESIZE_INT[resize_mode], image.convert("RGB"), *picture_size)
    return im.resize_image(2, fitted.crop(region), *size)


def hint_tensor(fitted: Map) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1], as the extension hands a map to the ControlNet."""
    return torch.from_numpy(fitted.copy()).float().div(255.0).permute(2, 0, 1)[None]


def detect(image: Image.Image, unit: ControlUnit, first_pass: tuple[int, int]) -> Map:
    """The unit's detected map, at the resolution the extension would run its preprocessor at."""
    res = unit.processor_res
    if unit.pixel_perfect:
        res = pixel_perfect_resolution(image.size, first_pass, unit.resize_mode)
    return run_module(image, unit, res)
