"""Typed data for the layout stage.

`LayoutSettings` is what a user writes under `layout:` in a story file (pydantic, strict). Everything
else is built by code (the lead maps a Story onto LayoutPage/LayoutPanel) and is a frozen dataclass.
All geometry is in PDF points with the origin at the bottom-left of the page (reportlab's convention),
so the PDF writer, the PIL fallback and the tests share one coordinate system.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PageSizeName = Literal["A4", "B5", "US comic", "Letter"]
OutputFormat = Literal["pdf", "cbz", "png"]
BalloonKind = Literal["speech", "thought", "sfx", "caption"]


# Bounds that keep a page in memory: A0 at 300 dpi is ~140 megapixels.
MIN_PAGE_MM = 50.0
MAX_PAGE_MM = 1200.0
MAX_PAGE_PIXELS = 200_000_000


class LayoutSettings(BaseModel):
    """Page, print and lettering settings (the `layout:` block of a story file)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    page_size: PageSizeName | tuple[float, float] = "A4"
    dpi: int = Field(
        default=300, ge=10, le=1200, description="print resolution of placed images and PNG pages"
    )
    margin_mm: float = Field(default=10.0, ge=0, le=60)
    gutter_mm: float = Field(default=4.0, ge=0, le=30)
    bleed_mm: float = Field(default=0.0, ge=0, le=20)
    trim_marks: bool = False
    border_width_pt: float = Field(default=1.5, ge=0, le=12)
    reading_direction: Literal["ltr", "rtl"] = "ltr"
    fit: Literal["crop", "letterbox"] = "crop"
    # Panel art is embedded in the PDF as JPEG at this quality (5x smaller than lossless for
    # rendered art); null keeps it lossless (Flate).
    jpeg_quality: int | None = Field(default=92, ge=50, le=100)
    # Lettering fonts: TrueType files (relative to the story's folder) or installed family names.
    # Unset uses the shipped faces (Comic Neue, Bangers, Noto Sans JP/SC/TC/KR, Noto Emoji).
    font: str | None = Field(default=None, description="Latin lettering face (default: Comic Neue)")
    cjk_font: str | None = Field(default=None, description="CJK face tried before the shipped Noto ones")
    fonts: tuple[str, ...] = Field(
        default=(), description="more fonts tried for characters the others lack (e.g. rare kanji)"
    )
    vertical: bool | None = Field(
        default=None,
        description="vertical (tategaki) lettering: unset = Japanese lines of a `language: ja` book; "
        "true = Japanese and Chinese lines; false = always horizontal",
    )
    font_size_pt: float = Field(default=9.0, ge=4, le=36)
    title_page: bool = False
    page_numbers: bool = True
    formats: tuple[OutputFormat, ...] = ("pdf", "cbz", "png")

    @field_validator("page_size", mode="before")
    @classmethod
    def _page_size(cls, value: object) -> object:
        if isinstance(value, str):
            # Accept the spellings people actually type: "a4", "us-comic", "letter".
            canon = {"a4": "A4", "b5": "B5", "uscomic": "US comic", "letter": "Letter"}
            key = value.lower().replace(" ", "").replace("-", "").replace("_", "")
            if key not in canon:
                raise ValueError(
                    f"unknown page size {value!r}: use A4, B5, US comic, Letter or [width_mm, height_mm]"
                )
            return canon[key]
        if isinstance(value, list | tuple):
            if len(value) != 2 or not all(isinstance(v, int | float) and v > 0 for v in value):
                raise ValueError("a custom page size is [width_mm, height_mm] with two positive numbers")
            if not all(MIN_PAGE_MM <= v <= MAX_PAGE_MM for v in value):
                raise ValueError(
                    f"a custom page size must be between {MIN_PAGE_MM:g} and {MAX_PAGE_MM:g} mm a side "
                    "(A0 is 841 x 1189 mm)"
                )
            return tuple(float(v) for v in value)
        return value

    @field_validator("cjk_font", "font")
    @classmethod
    def _no_cid(cls, value: str | None) -> str | None:
        if value is not None and value.lower() == "cid":
            raise ValueError(
                "CID fonts are no longer used: they are not embedded, so readers without them show "
                "blanks; leave the font unset to use the shipped Noto CJK faces, or give a .ttf file"
            )
        return value

    @field_validator("fonts", mode="before")
    @classmethod
    def _fonts(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    @field_validator("formats", mode="before")
    @classmethod
    def _formats(cls, value: object) -> object:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            if not value:
                raise ValueError("formats must name at least one of pdf, cbz, png")
            return tuple(dict.fromkeys(value))  # drop duplicates, keep order
        return value

    @model_validator(mode="after")
    def _live_area(self) -> LayoutSettings:
        from storyboard.layout.pagesize import trim_size_mm

        w, h = trim_size_mm(self.page_size)
        if 2 * self.margin_mm >= min(w, h) * 0.8:
            raise ValueError(f"margin_mm={self.margin_mm} leaves no room on a {w:g} x {h:g} mm page")
        pixels = (w + 2 * self.bleed_mm) * (h + 2 * self.bleed_mm) * (self.dpi / 25.4) ** 2
        if pixels > MAX_PAGE_PIXELS:
            raise ValueError(
                f"a {w:g} x {h:g} mm page at {self.dpi} dpi is {pixels / 1e6:.0f} megapixels, more than "
                f"the {MAX_PAGE_PIXELS // 1_000_000} a page may have; lower dpi or the page size"
            )
        return self


@dataclass(frozen=True)
class Balloon:
    """One piece of lettering in a panel.

    speaker_at is the speaker's position in panel coordinates: x from the left, y from the top, both
    0..1 of the panel image. The tail points there; None picks a default spread across the panel.
    """

    text: str
    speaker: str | None = None
    kind: BalloonKind = "speech"
    speaker_at: tuple[float, float] | None = None
    vertical: bool | None = None  # per-line override of LayoutSettings.vertical


@dataclass(frozen=True)
class LayoutPanel:
    id: str
    image: Path
    caption: str | None = None
    balloons: tuple[Balloon, ...] | list[Balloon] = ()
    # Where to keep the subject when cropping: fractions of the image, x from left, y from top.
    focus: tuple[float, float] = (0.5, 0.4)


@dataclass(frozen=True)
class LayoutPage:
    number: int
    panels: tuple[LayoutPanel, ...] | list[LayoutPanel]
    template: str | None = None


@dataclass(frozen=True)
class LayoutMeta:
    title: str
    author: str | None = None
    language: str = "en"
    summary: str | None = None


@dataclass(frozen=True)
class Rect:
    """Axis-aligned rectangle in PDF points (x, y is the bottom-left corner)."""

    x: float
    y: float
    w: float
    h: float

    @property
    def x1(self) -> float:
        return self.x + self.w

    @property
    def y1(self) -> float:
        return self.y + self.h

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    def contains(self, other: Rect, tol: float = 1e-6) -> bool:
        return (
            other.x >= self.x - tol
            and other.y >= self.y - tol
            and other.x1 <= self.x1 + tol
            and other.y1 <= self.y1 + tol
        )

    def overlaps(self, other: Rect) -> bool:
        return not (other.x >= self.x1 or other.x1 <= self.x or other.y >= self.y1 or other.y1 <= self.y)

    def inset(self, d: float) -> Rect:
        return Rect(self.x + d, self.y + d, self.w - 2 * d, self.h - 2 * d)


@dataclass(frozen=True)
class TextLine:
    text: str
    x: float  # left end of the baseline
    baseline: float
    width: float


@dataclass(frozen=True)
class BalloonPlacement:
    text: str
    kind: BalloonKind
    rect: Rect  # bounding box of the balloon shape (or of the sfx letters)
    text_rect: Rect  # every glyph box lies inside this; for speech it is inscribed in the ellipse
    font: str
    font_size: float
    lines: tuple[TextLine, ...]
    tail_tip: tuple[float, float] | None = None
    speaker_point: tuple[float, float] | None = None


@dataclass(frozen=True)
class PanelPlacement:
    page: int  # the story page number
    pdf_page_index: int  # 0-based page in the PDF (the title page shifts it)
    panel_id: str
    rect: Rect  # the panel frame
    image_rect: Rect  # where the image is drawn (inside rect; smaller when letterboxed)
    balloons: tuple[BalloonPlacement, ...] = ()


@dataclass(frozen=True)
class LayoutOutputs:
    pdf: Path | None
    cbz: Path | None
    pages_png: list[Path] = field(default_factory=list)
    placements: list[PanelPlacement] = field(default_factory=list)
