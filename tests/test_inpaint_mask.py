"""The inpaint primitives (render/inpaint_mask.py), each against numbers worked out here from
WebUI's definitions: blur kernel and reach, crop box, aspect growth, resize modes, paste-back."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from storyboard.render import inpaint_mask as im


def noise_image(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), mode="RGB")


def rect_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    arr = np.zeros((size[1], size[0]), dtype=np.uint8)
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = 255
    return Image.fromarray(arr, mode="L")


@pytest.mark.parametrize("blur", [1, 4, 7])
def test_blur_kernel_is_webuis_size_and_gaussian(blur: int) -> None:
    k = im.blur_kernel(blur)
    size = 2 * int(2.5 * blur + 0.5) + 1  # WebUI's kernel_size for mask_blur
    assert len(k) == size
    r = size // 2
    raw = [math.exp(-((i - r) ** 2) / (2 * blur * blur)) for i in range(size)]
    assert np.allclose(k, [v / sum(raw) for v in raw], rtol=0, atol=1e-15)


@pytest.mark.parametrize("blur", [2, 4])
def test_blur_reaches_exactly_its_radius_and_keeps_the_inside(blur: int) -> None:
    box = (20, 20, 44, 50)  # wider than two radii: its middle stays 255
    blurred = np.asarray(im.blur_mask(rect_mask((72, 80), box), blur))
    r = int(2.5 * blur + 0.5)
    reach = np.zeros_like(blurred, dtype=bool)
    reach[box[1] - r : box[3] + r, box[0] - r : box[2] + r] = True
    assert (blurred[~reach] == 0).all()  # nothing beyond the kernel's radius (x and y separately)
    assert blurred[box[1] + r, box[0] + r] == 255 and blurred[box[1] - r, box[0] - r] == 0
    # The x pass alone, computed here: the column profile across the left edge of the box.
    k = im.blur_kernel(blur)
    row = np.zeros(72)
    row[box[0] : box[2]] = 255.0
    expected = np.floor(np.convolve(row, k, mode="same") + 0.5)
    got = np.asarray(im.blur_mask(rect_mask((72, 80), box), blur, 0))[30]
    assert (got == expected).all()


def test_crop_region_pads_and_stays_inside() -> None:
    mask = rect_mask((100, 80), (10, 60, 30, 75))
    assert im.crop_region(mask, 8) == (2, 52, 38, 80)
    assert im.crop_region(Image.new("L", (10, 10)), 4) is None


def test_expand_crop_region_to_the_processing_aspect() -> None:
    # 36x28 region, rendered at 64x64: grown to 36 tall, centred (4 each side) -> y 48..84, then
    # shifted back inside the 80-high picture: y 44..80.
    assert im.expand_crop_region((2, 52, 38, 80), 64, 64, 100, 80) == (2, 44, 38, 80)
    # Wider processing: the width grows (by int(28 * 2 - 36) = 20, 10 each side).
    assert im.expand_crop_region((2, 52, 38, 80), 128, 64, 100, 80) == (0, 52, 56, 80)


def test_resize_modes() -> None:
    src = Image.new("RGB", (40, 20), (0, 0, 255))
    src.paste((255, 0, 0), (0, 0, 40, 1))  # a red top row
    just = im.resize_image(0, src, 32, 32)
    crop = im.resize_image(1, src, 32, 32)
    fill = im.resize_image(2, src, 32, 32)
    assert just.size == crop.size == fill.size == (32, 32)
    # Crop and resize: scaled to cover (64x32), centred: no black bars anywhere.
    assert np.asarray(crop).astype(int).sum(-1).min() > 200
    # Resize and fill: fitted (32x16) at y 8..24; the rows above repeat the top (red) edge.
    arr = np.asarray(fill).astype(int)
    assert (arr[:8, :, 0] > 150).all() and (arr[:8, :, 2] < 100).all()
    assert (arr[26:, :, 2] > 200).all()


def test_paste_back_keeps_the_picture_bytes_outside_the_mask() -> None:
    picture, result = noise_image(48, 40, 1), noise_image(48, 40, 2)
    mask = im.blur_mask(rect_mask((48, 40), (10, 10, 20, 30)), 3)
    overlay_mask = im.overlay_mask(mask)
    out = np.asarray(im.paste_back(result, im.overlay_image(picture, overlay_mask)))
    m = np.asarray(overlay_mask)
    assert (out[m == 0] == np.asarray(picture)[m == 0]).all()
    assert (out[m == 255] == np.asarray(result)[m == 255]).all()


def test_only_masked_paste_back_places_the_result_in_its_region() -> None:
    picture = noise_image(64, 48, 3)
    region = (16, 8, 48, 40)  # 32x32, rendered at 64x64
    result = Image.new("RGB", (64, 64), (10, 200, 30))
    mask = rect_mask((64, 48), (24, 16, 40, 32))
    out = np.asarray(im.paste_back(result, im.overlay_image(picture, mask), region))
    m = np.asarray(mask)
    assert (out[m == 0] == np.asarray(picture)[m == 0]).all()
    assert (out[m == 255] == (10, 200, 30)).all()


def test_fill_keeps_the_unmasked_pixels() -> None:
    picture = noise_image(32, 32, 4)
    mask = rect_mask((32, 32), (8, 8, 24, 24))
    filled = np.asarray(im.fill_masked(picture, mask))
    m = np.asarray(mask) == 0
    assert (filled[m] == np.asarray(picture)[m]).all()
    # Inside: colours from around (blurred), not the picture's own noise.
    assert np.abs(filled[12:20, 12:20].astype(int) - 128).max() < 100


def test_latent_mask_is_rounded_at_latent_size() -> None:
    lm = im.latent_mask(rect_mask((64, 64), (0, 0, 32, 64)), 8, 8)
    assert lm.shape == (8, 8) and set(np.unique(lm)) == {0.0, 1.0}
    assert (lm[:, :4] == 1).all() and (lm[:, 4:] == 0).all()


def test_binary_mask_reads_alpha_when_transparent() -> None:
    rgba = Image.new("RGBA", (4, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 200))
    rgba.putpixel((2, 0), (0, 0, 0, 100))
    assert np.asarray(im.binary_mask(rgba)).tolist() == [[0, 255, 0, 0]]
    grey = Image.new("L", (2, 1), 77)
    assert np.asarray(im.binary_mask(grey)).tolist() == [[77, 77]]


def test_dilate_and_erode() -> None:
    m = rect_mask((20, 20), (8, 8, 12, 12))
    assert im.dilate(m, 2).getbbox() == (6, 6, 14, 14)
    assert im.erode(im.dilate(m, 2), 2).getbbox() == (8, 8, 12, 12)
