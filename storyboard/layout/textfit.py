"""Line breaking and font-size fitting for lettering.

Latin and Korean text breaks at spaces. Japanese and Chinese break between phrases found by BudouX
(so "ごめん、/道に/迷った。" never becomes "ごめん、道に迷っ/た。"), and inside a phrase only when the
phrase alone is longer than a line. Every break obeys the kinsoku rules of JIS X 4051: no line starts
with closing brackets, punctuation, prolonged sound marks, small kana or iteration marks, none ends
with an opening bracket, and ……/——/‥‥ are never split.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from storyboard.layout.fonts import FontStack, ascent_descent, is_cjk_char, string_width

# JIS X 4051 classes cl-02 (closing brackets), cl-03 (hyphens), cl-04 (?!), cl-05 (middle dots),
# cl-06 (full stops), cl-07 (commas), cl-09 (small kana, iteration marks, prolonged sound mark).
NO_LINE_START = set("’”）〕］｝〉》」』】〙〗〟｠»)]}")
NO_LINE_START |= set("‐゠–〜～")
NO_LINE_START |= set("？！‼⁇⁈⁉?!")
NO_LINE_START |= set("・：；:;")
NO_LINE_START |= set("。．.")
NO_LINE_START |= set("、，,")
NO_LINE_START |= set("ヽヾゝゞ々〻ー")
NO_LINE_START |= set("ァィゥェォッャュョヮヵヶぁぃぅぇぉっゃゅょゎゕゖ")
NO_LINE_START |= set("ㇰㇱㇲㇳㇴㇵㇶㇷㇸㇹㇺㇻㇼㇽㇾㇿ")
NO_LINE_START |= set("%‰℃°′″")
NO_LINE_START |= set("…‥")  # cl-08 may not start a line either (UAX #14 LB22: never break before IN)
# cl-01 opening brackets.
NO_LINE_END = set("‘“（〔［｛〈《「『【〘〖〝｟«([{")
# cl-08: never split between two of these.
INSEPARABLE = set("…‥—―")
LEADING = 0.12  # extra space between lines, in ems
Measure = Callable[[str], float]


@functools.lru_cache(maxsize=4)
def _budoux(language: str) -> Any:
    import budoux  # imported lazily: loading a model costs ~50 ms and Latin-only books never need it

    if language == "zh-hant":
        return budoux.load_default_traditional_chinese_parser()
    if language == "zh":
        return budoux.load_default_simplified_chinese_parser()
    return budoux.load_default_japanese_parser()


def _script_chunks(text: str) -> list[tuple[bool, str]]:
    """(is_cjk, chunk) runs; Latin chunks keep their spaces."""
    out: list[tuple[bool, str]] = []
    for ch in text:
        cjk = is_cjk_char(ch)
        if out and out[-1][0] == cjk:
            out[-1] = (cjk, out[-1][1] + ch)
        else:
            out.append((cjk, ch))
    return out


def _words(text: str) -> list[str]:
    """Latin (and Korean) words with their trailing spaces."""
    units: list[str] = []
    word = ""
    for ch in text:
        if ch == " ":
            units.append(word + ch)
            word = ""
        elif word.endswith(" "):
            units.append(word)
            word = ch
        else:
            word += ch
    if word:
        units.append(word)
    return units


def glue(units: list[str]) -> list[str]:
    """Kinsoku: join a unit to the one before when a break between them would be forbidden."""
    out: list[str] = []
    for u in units:
        if not u:
            continue
        if out and (
            u[0] in NO_LINE_START
            or out[-1].rstrip()[-1:] in NO_LINE_END
            or (u[0] in INSEPARABLE and out[-1][-1] == u[0])
        ):
            out[-1] += u
        else:
            out.append(u)
    return out


def tokenize(text: str, language: str = "ja") -> list[str]:
    """Unbreakable units in order: words, or BudouX phrases for Japanese and Chinese."""
    units: list[str] = []
    for cjk, chunk in _script_chunks(text):
        if not cjk:
            units += _words(chunk)
        elif language == "ko" or any(0xAC00 <= ord(c) <= 0xD7AF for c in chunk):
            units += _words(chunk)  # Korean is written with spaces between words (keep-all)
        else:
            units += _budoux(language if language in ("zh", "zh-hant") else "ja").parse(chunk)
    return glue(units)


def char_units(text: str) -> list[str]:
    """The finest breakable units: single characters with kinsoku applied."""
    return glue(list(text))


def _pack(units: list[str], measure: Measure, max_len: float) -> list[str]:
    """Greedy filling. A unit longer than a whole line is broken into kinsoku-glued characters (or,
    last resort, bare characters) that flow on into the following text like any other unit."""
    lines: list[str] = []
    cur = ""
    queue = list(units)
    while queue:
        unit = queue.pop(0)
        if not cur and len(unit) > 1 and measure(unit.rstrip()) > max_len:
            parts = char_units(unit)
            queue[0:0] = parts if len(parts) > 1 else list(unit)
            continue
        if not cur or measure((cur + unit).rstrip()) <= max_len:
            cur += unit
        else:
            lines.append(cur.rstrip())
            cur = ""
            queue.insert(0, unit)
    if cur.strip() or not lines:
        lines.append(cur.rstrip())
    return lines


def wrap_measured(text: str, measure: Measure, max_len: float, language: str = "ja") -> list[str]:
    lines: list[str] = []
    for para in text.split("\n"):
        lines += _pack(tokenize(para.strip(), language), measure, max_len)
    return lines


def wrap(text: str, stack: FontStack, size: float, max_width: float, language: str = "ja") -> list[str]:
    return wrap_measured(text, lambda s: string_width(s, stack, size), max_width, language)


@dataclass(frozen=True)
class FittedText:
    size: float
    lines: tuple[str, ...]
    widths: tuple[float, ...]
    width: float
    height: float
    ascent: float
    line_height: float


def measure(lines: list[str], stack: FontStack, size: float) -> FittedText:
    asc, desc = ascent_descent(stack, size)
    line_h = asc + desc + LEADING * size
    widths = tuple(string_width(line, stack, size) for line in lines)
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
    stack: FontStack,
    size: float,
    max_width: float,
    max_height: float,
    *,
    min_size: float = 4.0,
    shape: float | None = 2.6,
    language: str = "ja",
) -> FittedText | None:
    """The largest size <= size (in 0.25 pt steps) at which text fits max_width x max_height.

    Lines are wrapped to a width that gives a block about `shape` times wider than tall (but never
    narrower than 9 ems), so a long line becomes a rounded balloon instead of a thin strip; shape=None
    fills max_width. None when even min_size does not fit.
    """
    s = size
    while s >= min_size - 1e-9:
        total = string_width(text.replace("\n", " "), stack, s)
        asc, desc = ascent_descent(stack, s)
        target = max_width if shape is None else math.sqrt(total * (asc + desc) * shape)
        # Never narrower than the longest word or phrase, so the shape alone never splits one.
        longest = max((string_width(u.rstrip(), stack, s) for u in tokenize(text, language)), default=0.0)
        for width in dict.fromkeys((min(max_width, max(target, s * 9, longest)), max_width)):
            fitted = measure(wrap(text, stack, s, width, language), stack, s)
            if fitted.height <= max_height and fitted.width <= max_width:
                return fitted
        s -= 0.25
    return None
