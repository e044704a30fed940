"""Lettering fonts: shipped, embedded TrueType faces arranged in fallback stacks.

Every glyph in the PDF comes from an embedded subset of a TrueType file, and the PIL painter draws the
same files, so a comic looks the same on a machine with no fonts installed. The faces ship in
storyboard/data/fonts (see the README there for coverage and licences); a story may put its own fonts
in front of them. A line is split into runs, each drawn with the first font of its stack that has the
character; a character no font has is an error naming it, never a blank or a box.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError

from storyboard.errors import StoryboardError
from storyboard.layout.pdffont import EmbeddedTTFont

FONT_DIR = Path(__file__).resolve().parent.parent / "data" / "fonts"
SHIPPED = {
    "comic": "ComicNeue-Regular.ttf",
    "comic-bold": "ComicNeue-Bold.ttf",
    "sfx": "Bangers-Regular.ttf",
    "ja": "NotoSansJP-Medium-subset.ttf",
    "ja-sfx": "NotoSansJP-Black-kana.ttf",
    "zh": "NotoSansSC-Medium-subset.ttf",
    "zh-hant": "NotoSansTC-Medium-subset.ttf",
    "ko": "NotoSansKR-Medium-subset.ttf",
    "emoji": "NotoEmoji-Regular-subset.ttf",
}
# Which CJK face to try first for each script/language; Han glyph shapes differ between them.
CJK_ORDER = {
    "ja": ("ja", "zh-hant", "zh", "ko"),
    "zh": ("zh", "zh-hant", "ja", "ko"),
    "zh-hant": ("zh-hant", "zh", "ja", "ko"),
    "ko": ("ko", "ja", "zh-hant", "zh"),
}
# Characters that never need a glyph of their own (layout handles them).
INVISIBLE = frozenset("\n\r\t\u200b\u200d\ufe0e\ufe0f")


@dataclass(frozen=True)
class FontSpec:
    name: str  # reportlab font name
    path: Path  # the TrueType file, drawn by the PIL painter too


@functools.lru_cache(maxsize=64)
def _register(path: Path) -> str:
    name = f"SB-{path.stem}"
    if name not in pdfmetrics.getRegisteredFontNames():
        try:
            pdfmetrics.registerFont(EmbeddedTTFont(name, str(path), subfontIndex=0))
        except (TTFError, OSError) as exc:
            raise StoryboardError(
                f"cannot use font file {path}: {exc}",
                hint="give a TrueType (.ttf/.ttc) font; OpenType fonts with PostScript (CFF) outlines "
                "cannot be embedded",
            ) from exc
    return name


def load_font(path: Path) -> FontSpec:
    return FontSpec(_register(path), path)


def shipped(key: str) -> FontSpec:
    return load_font(FONT_DIR / SHIPPED[key])


@functools.lru_cache(maxsize=64)
def _cmap(name: str) -> frozenset[int]:
    font = pdfmetrics.getFont(name)
    return frozenset(font.face.charToGlyph)


def has_char(font: FontSpec, ch: str) -> bool:
    return ord(ch) in _cmap(font.name)


class MissingGlyph(Exception):
    def __init__(self, ch: str) -> None:
        super().__init__(ch)
        self.ch = ch


@dataclass(frozen=True)
class FontStack:
    """Fonts tried in order for each character."""

    fonts: tuple[FontSpec, ...]

    @property
    def primary(self) -> FontSpec:
        return self.fonts[0]

    def font_of(self, ch: str) -> FontSpec:
        if ch in INVISIBLE or ch == " ":
            return self.fonts[0]
        for font in self.fonts:
            if has_char(font, ch):
                return font
        raise MissingGlyph(ch)

    def runs(self, text: str) -> list[tuple[FontSpec, str]]:
        """Maximal runs of text drawn with one font (variation selectors dropped: no font draws them)."""
        out: list[tuple[FontSpec, str]] = []
        for ch in text:
            if ch in INVISIBLE:
                continue
            font = self.font_of(ch)
            if out and out[-1][0] == font:
                out[-1] = (font, out[-1][1] + ch)
            else:
                out.append((font, ch))
        return out


def check_coverage(text: str, stack: FontStack, where: str) -> None:
    """Raise a StoryboardError naming the first character no font of the stack has."""
    try:
        stack.runs(text)
    except MissingGlyph as exc:
        ch = exc.ch
        raise StoryboardError(
            f"{where}: no lettering font has the character {ch!r} (U+{ord(ch):04X}) in the text "
            f"{text[:40]!r}{'...' if len(text) > 40 else ''}",
            hint="add a TrueType font that has it under layout.fonts, or write the character another way",
        ) from None


def _fc_family(family: str) -> Path | None:
    """A TrueType file of exactly this family, only when a story names one (never a silent default)."""
    exe = shutil.which("fc-match")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "-f", "%{family}\t%{file}\n", family],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        fams, _, file = line.partition("\t")
        if family.lower() in [f.strip().lower() for f in fams.split(",")] and file.lower().endswith(
            (".ttf", ".ttc")
        ):
            return Path(file)
    return None


def resolve_named(value: str, field: str) -> FontSpec:
    path = Path(value).expanduser()
    if path.suffix.lower() in (".ttf", ".ttc", ".otf"):
        if not path.is_file():
            raise StoryboardError(f"layout.{field}: font file {path} does not exist")
        return load_font(path)
    found = _fc_family(value)
    if found is None:
        raise StoryboardError(
            f"layout.{field}: font {value!r} is not installed",
            hint="give a path to a .ttf file (relative paths are taken from the story's folder), "
            "a family name that `fc-list` shows, or leave it unset to use the shipped fonts",
        )
    return load_font(found)


@dataclass(frozen=True)
class FontSet:
    """Every stack the lettering uses, by role and script."""

    latin: FontStack  # balloons and captions without CJK
    latin_sfx: FontStack
    title: FontStack
    cjk: dict[str, FontStack]  # by CJK_ORDER key
    cjk_sfx: dict[str, FontStack]

    @property
    def regular(self) -> FontSpec:
        return self.latin.primary

    def all_fonts(self) -> set[FontSpec]:
        stacks = [self.latin, self.latin_sfx, self.title, *self.cjk.values(), *self.cjk_sfx.values()]
        return {f for s in stacks for f in s.fonts}


def resolve_fonts(font: str | None = None, cjk_font: str | None = None, extra: Sequence[str] = ()) -> FontSet:
    """The lettering fonts: a story's own (font for Latin, cjk_font for CJK, extra in front of every
    stack as fallbacks the story needs, e.g. a face with rare kanji) before the shipped ones."""
    own = tuple(resolve_named(v, "fonts") for v in extra)
    emoji = shipped("emoji")
    latin_face = resolve_named(font, "font") if font else shipped("comic")
    cjk_face = (resolve_named(cjk_font, "cjk_font"),) if cjk_font else ()
    cjk_all = {key: shipped(key) for key in CJK_ORDER}

    def stack(*fonts: FontSpec) -> FontStack:
        return FontStack(tuple(dict.fromkeys(fonts)))  # drop repeats, keep order

    cjk = {
        k: stack(*cjk_face, *[cjk_all[o] for o in order], *own, latin_face, emoji)
        for k, order in CJK_ORDER.items()
    }
    cjk_sfx = {k: stack(*((shipped("ja-sfx"),) if k == "ja" else ()), *s.fonts) for k, s in cjk.items()}
    sfx_face = latin_face if font else shipped("sfx")
    bold = latin_face if font else shipped("comic-bold")
    cjk_fallback = [cjk_all[o] for o in CJK_ORDER["ja"]]
    return FontSet(
        latin=stack(latin_face, *own, *cjk_fallback, emoji),
        latin_sfx=stack(sfx_face, latin_face, *own, *cjk_fallback, emoji),
        title=stack(bold, *own, *cjk_fallback, emoji),
        cjk=cjk,
        cjk_sfx=cjk_sfx,
    )


def _in(cp: int, *ranges: tuple[int, int]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


HANGUL = ((0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3130, 0x318F))
KANA = ((0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))
HAN = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))
CJK_PUNCT = ((0x3000, 0x303F), (0xFF00, 0xFF65), (0xFFA0, 0xFFEF), (0xFE10, 0xFE1F), (0xFE30, 0xFE4F))


def is_cjk_char(ch: str) -> bool:
    return _in(ord(ch), *HANGUL, *KANA, *HAN, *CJK_PUNCT)


def _encodable(text: str, codec: str) -> bool:
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def cjk_language(text: str, language: str) -> str | None:
    """Which CJK stack a string needs, or None for text without CJK characters.

    Kana means Japanese and Hangul Korean whatever the book's language; Han alone follows the book's
    language (a Japanese book's kanji-only line stays in the Japanese font), defaulting to Chinese.
    """
    cps = [ord(c) for c in text]
    if any(_in(cp, *HANGUL) for cp in cps):
        return "ko"
    if any(_in(cp, *KANA) for cp in cps):
        return "ja"
    if not any(_in(cp, *HAN, *CJK_PUNCT) for cp in cps):
        return None
    lang = language.lower()
    # A Japanese face lacks most simplified Chinese characters: a line cp932 cannot encode is Chinese
    # even in a Japanese book (the stacks would find the glyphs anyway; this picks the right shapes).
    if lang.startswith("ja") and _encodable(text, "cp932"):
        return "ja"
    if lang.startswith("ko") and _encodable(text, "cp949"):
        return "ko"
    if lang in ("zh-tw", "zh-hk", "zh-hant", "zh-mo"):
        return "zh-hant"
    return "zh"


def stack_for(
    text: str, fonts: FontSet, language: str, *, sfx: bool = False, title: bool = False
) -> FontStack:
    lang = cjk_language(text, language)
    if lang is not None:
        return (fonts.cjk_sfx if sfx else fonts.cjk)[lang]
    if title:
        return fonts.title
    return fonts.latin_sfx if sfx else fonts.latin


def font_width(text: str, font: FontSpec, size: float) -> float:
    return float(pdfmetrics.stringWidth(text, font.name, size))


def string_width(text: str, stack: FontStack | FontSpec, size: float) -> float:
    if isinstance(stack, FontSpec):
        return font_width(text, stack, size)
    return sum(font_width(run, font, size) for font, run in stack.runs(text))


def ascent_descent(stack: FontStack | FontSpec, size: float) -> tuple[float, float]:
    """Ascent above and descent below the baseline (descent positive): the largest over the stack's
    fonts, and at least a 0.8/0.2 em box. PDF readers put a glyph box from the descent to one em above
    it, and the line box must cover that for every font a run may use, so no glyph leaves its balloon."""
    fonts = stack.fonts if isinstance(stack, FontStack) else (stack,)
    asc, below = 0.8, 0.2
    for font in fonts:
        a, d = pdfmetrics.getAscentDescent(font.name, 1000)
        asc, below = max(asc, a / 1000, 1 + d / 1000), max(below, -d / 1000)
    return asc * size, below * size
