"""The built-in preprocessors and resize modes against hand-computed expectations."""

from __future__ import annotations

import numpy as np
from PIL import Image

from storyboard.jobs import ControlUnit
from storyboard.render.control.canny import canny
from storyboard.render.control.preprocess import detect, fit_map, hint_tensor, pixel_perfect_resolution


def unit(**kw: object) -> ControlUnit:
    return ControlUnit.model_validate({"image": "x.png", "model": "m", **kw})


def test_canny_traces_a_squares_outline_one_pixel_wide() -> None:
    img = np.zeros((32, 32), dtype=np.uint8)
    img[8:24, 8:24] = 255
    edges = canny(img, 100, 200)
    on = np.argwhere(edges == 255)
    assert set(np.unique(edges)) == {0, 255}
    # Every edge pixel lies on the square's boundary (the row/column just inside or outside it).
    assert all(min(abs(r - 8), abs(r - 23), abs(r - 7), abs(r - 24)) == 0 or
               min(abs(c - 8), abs(c - 23), abs(c - 7), abs(c - 24)) == 0 for r, c in on)  # fmt: skip
    # The left side: exactly one edge pixel per row along the middle of that side.
    assert all(int((edges[r, 4:12] == 255).sum()) == 1 for r in range(12, 20))
    assert canny(np.full((16, 16), 80, np.uint8), 100, 200).max() == 0  # flat: nothing
    # Hysteresis: a faint step (gradient 4 * 60 = 240 per Sobel) passes high=200, fails high=250.
    faint = np.zeros((16, 16), np.uint8)
    faint[:, 8:] = 60
    assert canny(faint, 100, 200).max() == 255 and canny(faint, 100, 250).max() == 0


def test_pixel_perfect_follows_the_extensions_estimate() -> None:
    # A 512x768 map for a 448x640 panel: cover scale max(640/768, 448/512) = 0.875 -> 448.
    assert pixel_perfect_resolution((512, 768), (448, 640), "Crop and Resize") == 448
    # Fit scale min(...) = 0.8333 -> 427.
    assert pixel_perfect_resolution((512, 768), (448, 640), "Resize and Fill") == 427


def test_resize_modes_place_the_map_as_the_extension_does() -> None:
    m = np.zeros((40, 20, 3), np.uint8)  # tall map, a white top half
    m[:20] = 255
    assert fit_map(m, (20, 20), "Just Resize").shape == (20, 20, 3)
    crop = fit_map(m, (20, 20), "Crop and Resize")  # cover: 20x40, centre rows 10..30
    assert crop.shape == (20, 20, 3) and crop[:10].min() == 255 and crop[10:].max() == 0
    fill = fit_map(m, (20, 20), "Resize and Fill")  # fit: 10x20 centred on the border's median colour
    # The border is 80 white and 80 black pixels: np.median gives 127.5, stored as 127.
    assert fill.shape == (20, 20, 3) and fill[0, 5:15].min() == 255 and (fill[:, :5] == 127).all()


def test_modules() -> None:
    im = Image.new("RGB", (16, 16), (200, 100, 50))
    assert (detect(im, unit(), (16, 16)) == np.asarray(im)).all()  # none: the image itself
    assert (detect(im, unit(module="invert"), (16, 16)) == 255 - np.asarray(im)).all()
    th = detect(im, unit(module="threshold", threshold_a=40, processor_res=64), (16, 16))
    assert th.shape == (64, 64, 3) and th.min() == 255  # at processor_res; every channel above 40
    tile = detect(im, unit(module="tile_resample", threshold_a=2.0), (16, 16))
    assert tile.shape == (8, 8, 3)
    t = hint_tensor(np.full((8, 8, 3), 255, np.uint8))
    assert tuple(t.shape) == (1, 3, 8, 8) and float(t.max()) == 1.0
