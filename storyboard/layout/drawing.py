"""A small display list: the page described once, drawn by the PDF writer and the PIL fallback alike.

Coordinates are PDF points, origin bottom-left. Colours are RGB floats 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from storyboard.errors import StoryboardError
from storyboard.layout.fonts import FontSpec
from storyboard.layout.types import Rect

Color = tuple[float, float, float]
Point = tuple[float, float]
BLACK: Color = (0.0, 0.0, 0.0)
WHITE: Color = (1.0, 1.0, 1.0)


def open_panel_image(path: Path, where: str) -> Image.Image:
    """The panel file opened lazily (header read, pixels not yet decoded); the caller closes it.
    A missing or unreadable file is an error naming the page and panel."""
    try:
        return Image.open(path)
    except FileNotFoundError as exc:
        raise StoryboardError(
            f"{where}: panel image {path} does not exist",
            hint="render the panels first (`storyboard build` or `storyboard render`)",
        ) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise StoryboardError(f"{where}: {path} is not a readable image ({exc})") from exc


@dataclass(frozen=True)
class ImageOp:
    """A panel image placed on the page: the file, the part of it shown and its size in print pixels.

    The pixels are read only when the page is drawn (`placed()`), so a book's page drawings hold no
    images and a layout holds one page's panels at a time, however long the book.
    """

    rect: Rect
    source: Path
    crop: tuple[int, int, int, int]
    size: tuple[int, int]  # print pixels: the crop resampled to the layout's dpi
    where: str  # "page N, panel ID", for errors

    def placed(self) -> Image.Image:
        with open_panel_image(self.source, self.where) as img:
            try:
                rgb = img.convert("RGB")
            except OSError as exc:  # a truncated file fails only when its pixels are decoded
                raise StoryboardError(f"{self.where}: {self.source} is not a readable image ({exc})") from exc
        return rgb.crop(self.crop).resize(self.size, Image.Resampling.LANCZOS)


@dataclass(frozen=True)
class PathOp:
    points: tuple[Point, ...]
    fill: Color | None
    stroke: Color | None
    width: float = 1.0


@dataclass(frozen=True)
class RectOp:
    rect: Rect
    fill: Color | None
    stroke: Color | None
    width: float = 1.0


@dataclass(frozen=True)
class LineOp:
    p0: Point
    p1: Point
    width: float
    color: Color = BLACK


@dataclass(frozen=True)
class TextOp:
    x: float
    baseline: float
    text: str
    font: FontSpec
    size: float
    fill: Color = BLACK
    outline: Color | None = None  # sound effects get a contrasting outline
    outline_width: float = 0.0
    angle: float = 0.0  # degrees counter-clockwise about (x, baseline): -90 turns tategaki dashes


Op = ImageOp | PathOp | RectOp | LineOp | TextOp


@dataclass
class PageDrawing:
    width: float
    height: float
    trim: Rect
    bleed: Rect
    ops: list[Op] = field(default_factory=list)
