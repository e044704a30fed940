"""Fonts for lettering: a comic-style Latin font when installed, CJK via a system TrueType font or
reportlab's built-in CID fonts (which need no font file and keep the text extractable).

Every font is registered with reportlab under a stable name; `FontSpec.path` is the file the PIL
fallback renderer uses for the same text (None where no file exists, e.g. CID fonts).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.cidfonts import UnicodeCIDFont
from reportlab.pdfbase.ttfonts import TTFError, TTFont

from storyboard.errors import StoryboardError

# Lettering faces people actually install, best first.
COMIC_FAMILIES = (
    "Komika Text",
    "Anime Ace 2.0 BB",
    "Anime Ace",
    "CC Wild Words",
    "Wild Words",
    "Bangers",
    "Comic Neue",
    "Comic Sans MS",
    "Patrick Hand",
)
CID_BY_LANG = {
    "zh": "STSong-Light",
    "zh-hant": "MSung-Light",
    "ja": "HeiseiKakuGo-W5",
    "ko": "HYGothic-Medium",
}
CID_FONTS = frozenset({*CID_BY_LANG.values(), "HeiseiMin-W3"})


@dataclass(frozen=True)
class FontSpec:
    name: str  # reportlab font name
    path: Path | None  # TrueType file for the PIL renderer, when there is one
    cid: bool = False


@dataclass(frozen=True)
class FontSet:
    regular: FontSpec
    bold: FontSpec  # sound effects and titles
    cjk: dict[str, FontSpec]  # by language key of CID_BY_LANG


def _fc(args: list[str]) -> list[str]:
    exe = shutil.which(args[0])
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, *args[1:]], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


@functools.lru_cache(maxsize=64)
def find_family(family: str, bold: bool = False) -> Path | None:
    """A TrueType file of exactly this family (fc-match substitutes silently, so check the answer)."""
    pattern = f"{family}:style=Bold" if bold else family
    lines = _fc(["fc-match", "-f", "%{family}\t%{file}\n", pattern])
    for line in lines:
        fams, _, file = line.partition("\t")
        names = [f.strip().lower() for f in fams.split(",")]
        if family.lower() in names and file.lower().endswith((".ttf", ".ttc")):
            return Path(file)
    return None


@functools.lru_cache(maxsize=8)
def find_cjk_truetype(lang: str) -> Path | None:
    """A system CJK font with TrueType outlines (reportlab cannot embed CFF/OpenType-PS fonts)."""
    fc_lang = {"zh": "zh-cn", "zh-hant": "zh-tw"}.get(lang, lang)
    for file in sorted(_fc(["fc-list", f":lang={fc_lang}", "file"])):
        path = Path(file.rstrip(":").strip())
        if path.suffix.lower() in (".ttf", ".ttc"):
            try:
                _register_ttf(path)
            except StoryboardError:
                continue
            return path
    return None


@functools.lru_cache(maxsize=64)
def _register_ttf(path: Path) -> str:
    name = f"SB-{path.stem}"
    if name in pdfmetrics.getRegisteredFontNames():
        return name
    try:
        pdfmetrics.registerFont(TTFont(name, str(path), subfontIndex=0))
    except (TTFError, OSError) as exc:
        raise StoryboardError(
            f"cannot use font file {path}: {exc}",
            hint="give a TrueType (.ttf/.ttc) font; OpenType fonts with PostScript outlines do not work",
        ) from exc
    return name


def _register_cid(name: str) -> FontSpec:
    if name not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(name))
    return FontSpec(name, None, cid=True)


def _ttf_spec(path: Path) -> FontSpec:
    return FontSpec(_register_ttf(path), path)


def _resolve_named(value: str, field: str) -> FontSpec:
    path = Path(value).expanduser()
    if path.suffix.lower() in (".ttf", ".ttc", ".otf"):
        if not path.is_file():
            raise StoryboardError(f"layout.{field}: font file {path} does not exist")
        return _ttf_spec(path)
    if value in pdfmetrics.standardFonts:
        return FontSpec(value, find_family("DejaVu Sans"))
    if value in CID_FONTS:
        return _register_cid(value)
    found = find_family(value)
    if found is None:
        raise StoryboardError(
            f"layout.{field}: font {value!r} is not installed",
            hint="give a path to a .ttf file, a family name that `fc-list` shows, or leave it unset",
        )
    return _ttf_spec(found)


def resolve_fonts(font: str | None, cjk_font: str | None) -> FontSet:
    """Pick the lettering fonts.

    font: a path, a family name or a PDF standard font; unset picks the first installed comic face,
    then DejaVu Sans (wide Unicode coverage), then Helvetica.
    cjk_font: "cid" forces reportlab's CID fonts; a path/family/CID name uses that for every CJK
    language; unset uses a system TrueType CJK font where one exists (it embeds, so PNG pages show
    the glyphs too) and CID fonts otherwise.
    """
    if font:
        regular = _resolve_named(font, "font")
        bold = regular
    else:
        regular = bold = FontSpec("Helvetica", None)
        for fam in COMIC_FAMILIES:
            path = find_family(fam)
            if path is not None:
                regular = bold = _ttf_spec(path)
                break
        else:
            dejavu = find_family("DejaVu Sans")
            dejavu_bold = find_family("DejaVu Sans", bold=True)
            if dejavu is not None:
                regular = _ttf_spec(dejavu)
                bold = _ttf_spec(dejavu_bold) if dejavu_bold else regular
            else:
                bold = FontSpec("Helvetica-Bold", None)
    cjk: dict[str, FontSpec] = {}
    for lang, cid_name in CID_BY_LANG.items():
        if cjk_font and cjk_font.lower() != "cid":
            cjk[lang] = _resolve_named(cjk_font, "cjk_font")
        elif cjk_font is None and (path := find_cjk_truetype(lang)) is not None:
            cjk[lang] = _ttf_spec(path)
        else:
            cjk[lang] = _register_cid(cid_name)
    return FontSet(regular, bold, cjk)


def _in(cp: int, *ranges: tuple[int, int]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


HANGUL = ((0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3130, 0x318F))
KANA = ((0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF66, 0xFF9F))
HAN = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0xF900, 0xFAFF), (0x20000, 0x2FA1F))
CJK_PUNCT = ((0x3000, 0x303F), (0xFF00, 0xFF65), (0xFFA0, 0xFFEF))


def is_cjk_char(ch: str) -> bool:
    return _in(ord(ch), *HANGUL, *KANA, *HAN, *CJK_PUNCT)


def _encodable(text: str, codec: str) -> bool:
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def cjk_language(text: str, language: str) -> str | None:
    """Which CJK font a string needs, or None for text without CJK characters.

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
    # Japanese and Korean fonts lack most simplified Chinese characters: a line they cannot encode
    # (cp932 / cp949 approximate their character sets) is Chinese even in a Japanese book.
    if lang.startswith("ja") and _encodable(text, "cp932"):
        return "ja"
    if lang.startswith("ko") and _encodable(text, "cp949"):
        return "ko"
    if lang in ("zh-tw", "zh-hk", "zh-hant", "zh-mo"):
        return "zh-hant"
    return "zh"


def font_for(text: str, fonts: FontSet, language: str, *, bold: bool = False) -> FontSpec:
    lang = cjk_language(text, language)
    if lang is not None:
        return fonts.cjk[lang]
    return fonts.bold if bold else fonts.regular


def string_width(text: str, font: FontSpec, size: float) -> float:
    return float(pdfmetrics.stringWidth(text, font.name, size))


def ascent_descent(font: FontSpec, size: float) -> tuple[float, float]:
    """Ascent above and descent below the baseline (descent as a positive number)."""
    asc, desc = pdfmetrics.getAscentDescent(font.name, size)
    below = -float(desc)
    # PDF readers put a glyph box from the descent to one em above it; the line box must cover that
    # as well as the font's own ascent so no glyph pokes out of its balloon.
    return max(float(asc), size - below, 0.8 * size), max(below, 0.2 * size)
