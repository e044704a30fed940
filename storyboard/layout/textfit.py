"""Line breaking and font-size fitting for lettering.

Latin text breaks at spaces; CJK text may break between any two characters except before closing
punctuation or after opening punctuation (basic kinsoku), so a line never starts with 。 or ends with 「.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from storyboard.layout.fonts import FontSpec, ascent_descent, is_cjk_char, string_width

NO_LINE_START = set("、。，．・：；？！ー）」』】〕〉》〗〙〛’”％‰)]},.:;!?…‥〜～")
NO_LINE_START |= set("ァィゥェォッャュョヮヵヶぁぃぅぇぉっゃゅょゎ")  # small kana
NO_LINE_END = set("（「『【〔〈《〖〘〚‘“([{")
LEADING = 0.12  # extra space between lines, in ems


def tokenize(text: str) -> list[str]:
    """Unbreakable units in order; Latin words keep their trailing space."""
    units: list[str] = []
    word = ""
    for ch in text:
        if is_cjk_char(ch):
            if word:
                units.append(word)
                word = ""
            units.append(ch)
        elif ch == " ":
            word += ch
            units.append(word)
            word = ""
        else:
            if word.endswith(" "):
                units.append(word)
                word = ""
            word += ch
    if word:
        units.append(word)
    # Kinsoku: glue closing punctuation to what precedes it and opening punctuation to what follows.
    glued: list[str] = []
    for u in units:
        if glued and (u[0] in NO_LINE_START or glued[-1][-1] in NO_LINE_END):
            glued[-1] += u
        else:
            glued.append(u)
    return glued


def _split_long(unit: str, font: FontSpec, size: float, max_width: float) -> list[str]:
    """Break a single word wider than the line, character by character (last resort)."""
    parts, cur = [], ""
    for ch in unit:
        if cur and string_width(cur + ch, font, size) > max_width:
            parts.append(cur)
            cur = ch
        else:
            cur += ch
    return [*parts, cur] if cur else parts


def wrap(text: str, font: FontSpec, size: float, max_width: float) -> list[str]:
    lines: list[str] = []
    for para in text.split("\n"):
        cur = ""
        for unit in tokenize(para.strip()):
            trial = cur + unit
            if not cur or string_width(trial.rstrip(), font, size) <= max_width:
                cur = trial
                continue
            lines.append(cur.rstrip())
            cur = unit
        if cur.strip() or not lines:
            lines.append(cur.rstrip())
        # A leading unit wider than the line is split hard so nothing overflows.
        fixed: list[str] = []
        for line in lines:
            if string_width(line, font, size) > max_width:
                fixed.extend(_split_long(line, font, size, max_width))
            else:
                fixed.append(line)
        lines = fixed
    return lines


@dataclass(frozen=True)
class FittedText:
    size: float
    lines: tuple[str, ...]
    widths: tuple[float, ...]
    width: float
    height: float
    ascent: float
    line_height: float


def measure(lines: list[str], font: FontSpec, size: float) -> FittedText:
    asc, desc = ascent_descent(font, size)
    line_h = asc + desc + LEADING * size
    widths = tuple(string_width(line, font, size) for line in lines)
    return FittedText(
        size=size,
        lines=tuple(lines),
        widths=widths,
        width=max(widths, default=0.0),
        height=len(lines) * line_h - LEADING * size,
        ascent=asc,
        line_height=line_h,
    )


def fit_text(
    text: str,
    font: FontSpec,
    size: float,
    max_width: float,
    max_height: float,
    *,
    min_size: float = 4.0,
    shape: float | None = 2.6,
) -> FittedText | None:
    """The largest size <= size (in 0.25 pt steps) at which text fits max_width x max_height.

    Lines are wrapped to a width that gives a block about `shape` times wider than tall (but never
    narrower than 9 ems), so a long line becomes a rounded balloon instead of a thin strip; shape=None
    fills max_width. None when even min_size does not fit.
    """
    s = size
    while s >= min_size - 1e-9:
        total = string_width(text.replace("\n", " "), font, s)
        asc, desc = ascent_descent(font, s)
        target = max_width if shape is None else math.sqrt(total * (asc + desc) * shape)
        width = min(max_width, max(target, s * 9))
        fitted = measure(wrap(text, font, s, width), font, s)
        if fitted.width > width:  # only a hard split can cause this; retry at full width
            fitted = measure(wrap(text, font, s, max_width), font, s)
        if fitted.height <= max_height and fitted.width <= max_width:
            return fitted
        if width < max_width:
            fitted = measure(wrap(text, font, s, max_width), font, s)
            if fitted.height <= max_height and fitted.width <= max_width:
                return fitted
        s -= 0.25
    return None
