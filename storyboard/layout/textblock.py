"""A fitted block of lettering, horizontal or vertical, that can be drawn at any position.

The balloon code sizes shapes around `width` x `height` and then asks the block for its drawing ops
at the rectangle it was given; it never needs to know which way the text runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from storyboard.errors import StoryboardError
from storyboard.layout.drawing import BLACK, Color, TextOp
from storyboard.layout.fonts import FontSet, FontStack, check_coverage, cjk_language, font_width, stack_for
from storyboard.layout.textfit import FittedText, fit_text
from storyboard.layout.types import Rect, TextLine
from storyboard.layout.vertical import SMALL_SHIFT, VerticalText, fit_vertical, vertical_ops


def run_ops(
    x: float,
    baseline: float,
    text: str,
    stack: FontStack,
    size: float,
    fill: Color = BLACK,
    outline: Color | None = None,
    outline_width: float = 0.0,
) -> list[TextOp]:
    """One TextOp per font run, each starting where the previous one's advance ends."""
    ops = []
    for font, run in stack.runs(text):
        ops.append(TextOp(x, baseline, run, font, size, fill, outline, outline_width))
        x += font_width(run, font, size)
    return ops


@dataclass(frozen=True)
class Block:
    text: str
    stack: FontStack
    fitted: FittedText | VerticalText

    @property
    def vertical(self) -> bool:
        return isinstance(self.fitted, VerticalText)

    @property
    def size(self) -> float:
        return self.fitted.size

    @property
    def width(self) -> float:
        return self.fitted.width

    @property
    def height(self) -> float:
        return self.fitted.height

    def draw(
        self, rect: Rect, align: str, fill: Color = BLACK, outline: Color | None = None, ow: float = 0.0
    ) -> tuple[list[TextOp], tuple[TextLine, ...]]:
        """Ops and lines for the block placed in rect (rect is width x height)."""
        f = self.fitted
        if isinstance(f, VerticalText):
            return vertical_ops(f, rect, self.stack, fill, outline, ow)
        ops: list[TextOp] = []
        lines = []
        for i, (line, w) in enumerate(zip(f.lines, f.widths, strict=True)):
            x = rect.x if align == "left" else rect.cx - w / 2
            base = rect.y1 - f.ascent - i * f.line_height
            lines.append(TextLine(line, x, base, w))
            ops += run_ops(x, base, line, self.stack, f.size, fill, outline, ow)
        return ops, tuple(lines)

    def ink_rect(self, rect: Rect) -> Rect:
        """Where glyph boxes may lie when drawn in rect: small kana in columns sit a little up and right."""
        if not self.vertical:
            return rect
        d = SMALL_SHIFT * self.size
        return Rect(rect.x, rect.y, rect.w + d, rect.h + d)


def wants_vertical(text: str, language: str, book_vertical: bool | None, line_vertical: bool | None) -> bool:
    """Vertical lettering for Japanese lines of a Japanese book unless turned off; `vertical: true`
    (book or line) extends it to Chinese. Korean and Latin text stay horizontal."""
    lang = cjk_language(text, language)
    if lang is None or lang == "ko":
        return False
    choice = line_vertical if line_vertical is not None else book_vertical
    if choice is None:
        return lang == "ja" and language.lower().startswith("ja")
    return choice


def fit_block(
    text: str,
    fonts: FontSet,
    language: str,
    size: float,
    max_w: float,
    max_h: float,
    where: str,
    *,
    vertical: bool = False,
    sfx: bool = False,
    shape: float | None = 2.6,
    title: bool = False,
) -> Block | None:
    stack = stack_for(text, fonts, language, sfx=sfx, title=title)
    check_coverage(text, stack, where)
    lang = cjk_language(text, language) or language.lower()
    fitted: FittedText | VerticalText | None
    if vertical:
        fitted = fit_vertical(text, stack, size, max_w, max_h, language=lang)
    else:
        fitted = fit_text(text, stack, size, max_w, max_h, shape=shape, language=lang)
    return None if fitted is None else Block(text, stack, fitted)


def must_fit(block: Block | None, text: str, where: str) -> Block:
    if block is None:
        raise StoryboardError(
            f"{where}: the text {text[:40]!r}{'...' if len(text) > 40 else ''} does not fit its panel "
            "even at 4 pt",
            hint="shorten the line, split it into two balloons, or give the panel more room",
        )
    return block
