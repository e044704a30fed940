"""A small display list: the page described once, drawn by the PDF writer and the PIL fallback alike.

Coordinates are PDF points, origin bottom-left. Colours are RGB floats 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image

from storyboard.layout.fonts import FontSpec
from storyboard.layout.types import Rect

Color = tuple[float, float, float]
Point = tuple[float, float]
BLACK: Color = (0.0, 0.0, 0.0)
WHITE: Color = (1.0, 1.0, 1.0)


@dataclass(frozen=True, eq=False)
class ImageOp:
    rect: Rect
    image: Image.Image  # already cropped and resampled to print resolution


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
