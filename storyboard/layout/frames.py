"""Renders shaped to their frames: what the planner needs to know about the page before rendering.

The planner asks `page_frames` for each panel's frame (in points) and `choose_render_size` for a
render of that shape at the model's pixel budget, so layout crops almost nothing; `print_warnings`
says when a panel will print soft (under 150 dpi) or lose much of itself to the crop (a panel that
fixes its own size). All pure arithmetic: no images, no fonts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from storyboard.layout.geometry import panel_rects
from storyboard.layout.pagesize import MM, page_geometry
from storyboard.layout.templates import Template, choose_template, get_template
from storyboard.layout.types import LayoutSettings

MIN_DPI = 150.0
MAX_CROP = 0.15


def page_frames(settings: LayoutSettings, template: Template) -> list[tuple[float, float]]:
    """(width, height) in points of each panel frame of template on a page, in reading order."""
    geo = page_geometry(settings)
    rects = panel_rects(template, geo, settings.gutter_mm * MM, settings.reading_direction == "rtl")
    return [(r.w, r.h) for r in rects]


def plan_template(
    settings: LayoutSettings,
    n_panels: int,
    template_name: str | None,
    aspects: Sequence[float],
    templates: dict[str, Template],
) -> Template:
    """The template a page will use, decided before rendering: the named one, or the best match for
    the aspects the panels will be rendered at (the budget's aspect where a panel fixes no size).
    Layout later matches the finished images, which then have these frames' shapes, so it picks the
    same template."""
    if template_name is not None:
        return get_template(template_name, templates)
    geo = page_geometry(settings)
    return choose_template(n_panels, list(aspects), templates, live_aspect=geo.live.w / geo.live.h)


def choose_render_size(
    frame_w: float, frame_h: float, budget_w: int, budget_h: int, multiple: int = 8
) -> tuple[int, int]:
    """A render size of the frame's aspect with about budget_w * budget_h pixels, both sides multiples
    of `multiple` (8 for the SD VAE, 64 where a model needs it).

    Among the multiples next to the ideal size, the one with the smallest aspect error whose pixel
    count stays within 10% of the budget wins; ties go to the count closest to the budget.
    """
    if frame_w <= 0 or frame_h <= 0 or budget_w <= 0 or budget_h <= 0 or multiple <= 0:
        raise ValueError("frame and budget sizes must be positive")
    area = budget_w * budget_h
    aspect = frame_w / frame_h
    ideal_w, ideal_h = math.sqrt(area * aspect), math.sqrt(area / aspect)
    best: tuple[float, float, tuple[int, int]] | None = None
    for dw in range(-3, 4):
        for dh in range(-3, 4):
            w = max(multiple, (round(ideal_w / multiple) + dw) * multiple)
            h = max(multiple, (round(ideal_h / multiple) + dh) * multiple)
            size_err = abs(w * h - area) / area
            if size_err > 0.10:
                continue
            key = (abs(math.log((w / h) / aspect)), size_err, (w, h))
            if best is None or key < best:
                best = key
    if best is None:  # only for frames thinner than a few multiples: keep the budget, nearest shape
        w = max(multiple, round(ideal_w / multiple) * multiple)
        return w, max(multiple, round(area / w / multiple) * multiple)
    return best[2]


def final_pixels(render_w: int, render_h: int, hires_scale: float | None) -> tuple[int, int]:
    """The size of the finished image: hires fix scales the render (WebUI rounds down to 8)."""
    if not hires_scale or hires_scale == 1:
        return render_w, render_h
    return int(render_w * hires_scale) // 8 * 8, int(render_h * hires_scale) // 8 * 8


def crop_fraction(img_w: float, img_h: float, frame_w: float, frame_h: float) -> float:
    """Share of the image that cropping to the frame's aspect cuts away."""
    img_aspect, frame_aspect = img_w / img_h, frame_w / frame_h
    return 1 - min(img_aspect, frame_aspect) / max(img_aspect, frame_aspect)


def print_dpi(img_w: float, img_h: float, frame_w: float, frame_h: float) -> float:
    """Resolution the image prints at when cropped to fill the frame (points: 72 per inch)."""
    return min(img_w / (frame_w / 72), img_h / (frame_h / 72))


@dataclass(frozen=True)
class FrameCheck:
    panel_id: str
    dpi: float
    crop: float
    warnings: tuple[str, ...]


def print_warnings(
    panel_id: str, img_w: int, img_h: int, frame_w: float, frame_h: float, *, fit: str = "crop"
) -> FrameCheck:
    """Warnings for one panel's final image in its frame: under 150 dpi, or over 15% cropped away."""
    crop = 0.0 if fit == "letterbox" else crop_fraction(img_w, img_h, frame_w, frame_h)
    if fit == "letterbox":
        scale = min(frame_w / img_w, frame_h / img_h)
        dpi = 72 / scale
    else:
        dpi = print_dpi(img_w, img_h, frame_w, frame_h)
    warnings = []
    if dpi < MIN_DPI:
        warnings.append(
            f"panel {panel_id}: its {img_w}x{img_h} image prints at {dpi:.0f} dpi in its "
            f"{frame_w / MM:.0f}x{frame_h / MM:.0f} mm frame (under {MIN_DPI:.0f} dpi looks soft); "
            "raise hires scale or the render size"
        )
    if crop > MAX_CROP:
        warnings.append(
            f"panel {panel_id}: its fixed {img_w}x{img_h} size loses {crop:.0%} of the image to the crop "
            f"in its {frame_w / MM:.0f}x{frame_h / MM:.0f} mm frame; drop the panel's width/height to "
            "render it in the frame's shape"
        )
    return FrameCheck(panel_id, dpi, crop, tuple(warnings))
