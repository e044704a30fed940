"""Vertical Japanese lettering (tategaki): columns top to bottom, set right to left.

reportlab draws no OpenType `vert` substitutions, so the vertical glyphs are chosen here:
- punctuation and brackets with a Unicode vertical presentation form are drawn as that form (︒ for 。,
  ﹁ for 「); the embedded font's ToUnicode maps it back (pdffont.register_extract_alias), so the PDF
  still extracts the character the story wrote;
- the prolonged sound mark, wave dashes and runs of three or more Latin letters are turned 90°
  clockwise, as letterers set them;
- one or two half-width digits or !? sit upright side by side in one cell (tate-chu-yoko, "!?");
- small kana move toward the upper right of their cell, where vertical fonts put them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

from storyboard.layout.drawing import TextOp
from storyboard.layout.fonts import FontStack, font_width, is_cjk_char
from storyboard.layout.pdffont import register_extract_alias
from storyboard.layout.textfit import tokenize, wrap_measured
from storyboard.layout.types import Rect, TextLine

VERTICAL_FORMS = {
    "，": "︐", "、": "︑", "。": "︒", "：": "︓", "；": "︔", "〖": "︗", "〗": "︘", "…": "︙",
    "‥": "︰", "—": "︱", "―": "︱", "–": "︲",
    "（": "︵", "）": "︶", "｛": "︷", "｝": "︸", "〔": "︹", "〕": "︺", "【": "︻", "】": "︼",
    "《": "︽", "》": "︾", "〈": "︿", "〉": "﹀", "「": "﹁", "」": "﹂", "『": "﹃", "』": "﹄",
    "［": "﹇", "］": "﹈",
}  # fmt: skip
for _written, _drawn in VERTICAL_FORMS.items():
    if _written not in "―–":  # ︱/︲ extract as the em dash / en dash
        register_extract_alias(_drawn, _written)
ROTATED = set("ー～〜~ｰ＝=→←⇒")
SMALL_KANA = set("ぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶ")
TCY_CHARS = set("0123456789!?")
COLUMN_GAP = 0.4  # space between columns, in ems
SMALL_SHIFT = 0.1  # small kana offset toward the upper right, in ems

CellKind = Literal["upright", "rotated", "tcy", "space"]


@dataclass(frozen=True)
class Cell:
    text: str  # as drawn (a vertical form where one exists)
    kind: CellKind
    advance: float  # along the column, in ems


def _ascii_runs(line: str) -> list[str]:
    out: list[str] = []
    for ch in line:
        latin = ch.isascii() and ch not in " \n"
        if out and latin and out[-1][:1].isascii() and out[-1][:1] not in " \n":
            out[-1] += ch
        else:
            out.append(ch)
    return out


def cells(line: str, stack: FontStack, size: float) -> list[Cell]:
    out: list[Cell] = []
    for piece in _ascii_runs(line):
        if piece == " ":
            out.append(Cell(piece, "space", 0.5))
        elif piece == "\u3000":
            out.append(Cell(piece, "space", 1.0))
        elif piece.isascii() and len(piece) <= 2 and set(piece) <= TCY_CHARS:
            out.append(Cell(piece, "tcy", 1.0))
        elif piece.isascii() and len(piece) > 1:
            w = sum(font_width(run, f, size) for f, run in stack.runs(piece)) / size
            out.append(Cell(piece, "rotated", w))
        elif piece in ROTATED or (piece.isascii() and not is_cjk_char(piece)):
            out.append(Cell(piece, "rotated", max(font_width(piece, stack.font_of(piece), 1.0), 0.5)))
        else:
            form = VERTICAL_FORMS.get(piece)
            drawn = form if form is not None and _covered(stack, form) else piece
            out.append(Cell(drawn, "upright", 1.0))
    return out


def _covered(stack: FontStack, ch: str) -> bool:
    try:
        stack.font_of(ch)
    except Exception:
        return False
    return True


def column_length(line: str, stack: FontStack, size: float) -> float:
    return sum(c.advance for c in cells(line, stack, size)) * size


def _length(line: str, *, stack: FontStack, size: float) -> float:
    return column_length(line, stack, size)


@dataclass(frozen=True)
class VerticalText:
    size: float
    columns: tuple[str, ...]
    lengths: tuple[float, ...]
    width: float  # of the whole block
    height: float


def fit_vertical(
    text: str,
    stack: FontStack,
    size: float,
    max_width: float,
    max_height: float,
    *,
    min_size: float = 4.0,
    shape: float = 2.5,
    language: str = "ja",
) -> VerticalText | None:
    """Largest size <= size at which the columns fit; columns are cut to make a block about `shape`
    times taller than wide (at least 4 ems), so a long line becomes a tall oval balloon."""
    s = size
    while s >= min_size - 1e-9:
        pitch = s * (1 + COLUMN_GAP)
        total = column_length(text.replace("\n", ""), stack, s)
        # Never shorter than the longest phrase, so the shape alone never splits a word.
        longest = max((column_length(p, stack, s) for p in tokenize(text, language)), default=0.0)
        target = max(math.sqrt(total * pitch * shape), longest, 4 * s)
        for height in dict.fromkeys((min(max_height, target), max_height)):
            cols = wrap_measured(text, functools.partial(_length, stack=stack, size=s), height, language)
            lengths = tuple(column_length(c, stack, s) for c in cols)
            width = len(cols) * pitch - COLUMN_GAP * s
            if width <= max_width and max(lengths, default=0) <= max_height:
                return VerticalText(s, tuple(cols), lengths, width, max(lengths, default=0.0))
        s -= 0.25
    return None


def _descent(font_name: str, size: float) -> float:
    from reportlab.pdfbase import pdfmetrics

    return -pdfmetrics.getAscentDescent(font_name, size)[1]


def vertical_ops(
    vt: VerticalText,
    block: Rect,
    stack: FontStack,
    fill: tuple[float, float, float] = (0.0, 0.0, 0.0),
    outline: tuple[float, float, float] | None = None,
    outline_width: float = 0.0,
) -> tuple[list[TextOp], tuple[TextLine, ...]]:
    """Drawing ops for the columns, the first column at the right edge of block, each from its top.

    TextLine here is a column: x is its left edge, baseline its top, width its length.
    """
    s = vt.size
    ops: list[TextOp] = []
    lines = []
    pitch = s * (1 + COLUMN_GAP)
    style = (fill, outline, outline_width)
    for i, col in enumerate(vt.columns):
        cx = block.x1 - i * pitch - s / 2
        top = block.y1
        lines.append(TextLine(col, cx - s / 2, top, vt.lengths[i]))
        for cell in cells(col, stack, s):
            ops += _cell_ops(cell, cx, top, stack, s, style)
            top -= cell.advance * s
    return ops, tuple(lines)


def _cell_ops(
    cell: Cell,
    cx: float,
    top: float,
    stack: FontStack,
    s: float,
    style: tuple[tuple[float, float, float], tuple[float, float, float] | None, float],
) -> list[TextOp]:
    if cell.kind == "space":
        return []
    ops = []
    runs = stack.runs(cell.text)
    if cell.kind == "rotated":
        for font, run in runs:
            # Turned clockwise about its origin, the glyph's em box (descent below the baseline, one em
            # tall) lands centred on the column with the advance running down the cell.
            ops.append(TextOp(cx - s / 2 + _descent(font.name, s), top, run, font, s, *style, angle=-90.0))
            top -= font_width(run, font, s)
        return ops
    size = s
    total = sum(font_width(run, font, s) for font, run in runs)
    if cell.kind == "tcy" and total > s:
        size = s * s / total  # "!?" or two digits squeezed into one em
        total = s
    x = cx - total / 2
    shift = SMALL_SHIFT * s if cell.text in SMALL_KANA else 0.0
    for font, run in runs:
        # Centre the (possibly squeezed) em box in the cell: its box runs from the descent up one em.
        base = top - s / 2 - size / 2 + _descent(font.name, size) + shift
        ops.append(TextOp(x + shift, base, run, font, size, *style))
        x += font_width(run, font, size)
    return ops
