"""Where panels go on the page and how an image is fitted into its panel (pure arithmetic)."""

from __future__ import annotations

from dataclasses import dataclass

from storyboard.layout.pagesize import PageGeometry
from storyboard.layout.templates import Template
from storyboard.layout.types import Rect

_EDGE = 1e-6


def bleeds(template: Template, page: PageGeometry) -> bool:
    return template.bleed and page.bleed != page.trim


def panel_rects(template: Template, page: PageGeometry, gutter: float, rtl: bool) -> list[Rect]:
    """Panel frames in PDF points, in reading order.

    Each interior edge gives up half a gutter, so two neighbours end up exactly one gutter apart while
    edges on the live-area boundary stay on the margin. RTL mirrors x so panel 1 sits on the right.
    A bleed template pushes edges that touch the live area out to the bleed box when the page has a
    bleed; without one (screen reading, home printers) it stays inside the margins like any panel.
    """
    live = page.live
    rects = []
    for fx, fy, fw, fh in template.panels:
        if rtl:
            fx = 1.0 - fx - fw
        left = live.x + fx * live.w
        right = live.x + (fx + fw) * live.w
        top = live.y1 - fy * live.h
        bottom = live.y1 - (fy + fh) * live.h
        half = gutter / 2
        on_left, on_right = fx <= _EDGE, fx + fw >= 1 - _EDGE
        on_top, on_bottom = fy <= _EDGE, fy + fh >= 1 - _EDGE
        left += 0 if on_left else half
        right -= 0 if on_right else half
        top -= 0 if on_top else half
        bottom += 0 if on_bottom else half
        if bleeds(template, page):
            bleed = page.bleed
            left = bleed.x if on_left else left
            right = bleed.x1 if on_right else right
            top = bleed.y1 if on_top else top
            bottom = bleed.y if on_bottom else bottom
        rects.append(Rect(left, bottom, right - left, top - bottom))
    return rects


@dataclass(frozen=True)
class Fit:
    """A crop box in source pixels (left, top, right, bottom) and the rectangle it is drawn into."""

    crop: tuple[int, int, int, int]
    dest: Rect


def fit_image(img_w: int, img_h: int, panel: Rect, mode: str, focus: tuple[float, float]) -> Fit:
    """Crop around the focus point to the panel's aspect, or letterbox the whole image.

    Cropping keeps the focus point as close to the centre as the image edges allow: the crop window is
    centred on it, then slid back inside the image.
    """
    panel_aspect = panel.w / panel.h
    img_aspect = img_w / img_h
    if mode == "letterbox":
        if img_aspect > panel_aspect:
            w, h = panel.w, panel.w / img_aspect
        else:
            w, h = panel.h * img_aspect, panel.h
        dest = Rect(panel.cx - w / 2, panel.cy - h / 2, w, h)
        return Fit((0, 0, img_w, img_h), dest)
    if img_aspect > panel_aspect:
        cw, ch = max(1, round(img_h * panel_aspect)), img_h
    else:
        cw, ch = img_w, max(1, round(img_w / panel_aspect))
    fx = min(max(focus[0], 0.0), 1.0) * img_w
    fy = min(max(focus[1], 0.0), 1.0) * img_h
    left = round(min(max(fx - cw / 2, 0), img_w - cw))
    top = round(min(max(fy - ch / 2, 0), img_h - ch))
    return Fit((left, top, left + cw, top + ch), panel)


def print_pixels(rect: Rect, dpi: int) -> tuple[int, int]:
    """Pixel size that places an image in rect at dpi."""
    return (max(1, round(rect.w / 72 * dpi)), max(1, round(rect.h / 72 * dpi)))
