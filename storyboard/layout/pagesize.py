"""Page geometry: trim size, bleed, the slug for trim marks, and the live area."""

from __future__ import annotations

from dataclasses import dataclass

from storyboard.layout.types import LayoutSettings, Rect

MM = 72.0 / 25.4  # points per millimetre

# B5 is the JIS size Japanese manga tankobon are printed at (ISO B5 is 176 x 250 mm).
PAGE_SIZES_MM: dict[str, tuple[float, float]] = {
    "A4": (210.0, 297.0),
    "B5": (182.0, 257.0),
    "US comic": (6.625 * 25.4, 10.25 * 25.4),
    "Letter": (8.5 * 25.4, 11.0 * 25.4),
}

# Trim marks need room outside the bleed; this much is added around the bleed box when they are on.
SLUG_MM = 8.0


def trim_size_mm(page_size: str | tuple[float, float]) -> tuple[float, float]:
    if isinstance(page_size, str):
        return PAGE_SIZES_MM[page_size]
    return (float(page_size[0]), float(page_size[1]))


@dataclass(frozen=True)
class PageGeometry:
    media_w: float
    media_h: float
    trim: Rect  # the finished page after cutting
    bleed: Rect  # trim grown by the bleed
    live: Rect  # trim less the margins: panels go here

    @property
    def slug(self) -> float:
        return self.bleed.x


def page_geometry(settings: LayoutSettings) -> PageGeometry:
    tw, th = (v * MM for v in trim_size_mm(settings.page_size))
    bleed = settings.bleed_mm * MM
    slug = SLUG_MM * MM if settings.trim_marks else 0.0
    off = slug + bleed
    trim = Rect(off, off, tw, th)
    margin = settings.margin_mm * MM
    return PageGeometry(
        media_w=tw + 2 * off,
        media_h=th + 2 * off,
        trim=trim,
        bleed=Rect(slug, slug, tw + 2 * bleed, th + 2 * bleed),
        live=trim.inset(margin),
    )
