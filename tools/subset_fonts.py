"""Make the CJK and emoji subsets shipped in storyboard/data/fonts/ (run by hand, not at build time).

The sources are Google Fonts' TrueType (glyf) builds of Noto Sans JP/SC/TC/KR and Noto Emoji, as
published in the npm packages @expo-google-fonts/noto-sans-{jp,sc,tc,kr} and noto-emoji (SIL OFL 1.1).
reportlab can only embed TrueType outlines, which is why these builds and not the CFF Noto Sans CJK.

    python tools/subset_fonts.py SRC_DIR OUT_DIR

Coverage (what a story may use without naming its own font) is written to OUT_DIR/COVERAGE.txt.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from fontTools import subset
from fontTools.ttLib import TTFont


def double_byte(codec: str, lead: range, trail: range) -> set[str]:
    out = set()
    for a in lead:
        for b in trail:
            with contextlib.suppress(UnicodeDecodeError):
                out.add(bytes([a, b]).decode(codec))
    return {c for c in out if len(c) == 1}


def common() -> set[int]:
    cps: set[int] = set(range(0x20, 0x7F)) | set(range(0xA0, 0x180))
    cps |= set(range(0x2010, 0x2070))  # general punctuation: dashes, quotes, ellipsis, ‼ ⁉
    cps |= set(range(0x2190, 0x2200)) | set(range(0x2460, 0x24FF)) | set(range(0x25A0, 0x2700))
    cps |= set(range(0x3000, 0x3100))  # CJK symbols, hiragana, katakana
    cps |= set(range(0x31F0, 0x3200)) | set(range(0xFE10, 0xFE20)) | set(range(0xFE30, 0xFE50))
    cps |= set(range(0xFF00, 0xFFF0))  # full- and half-width forms
    return cps


def charsets() -> dict[str, set[int]]:
    hi = range(0xA1, 0xFF)
    jis = double_byte("cp932", range(0x81, 0xA0), range(0x40, 0xFD)) | double_byte(
        "cp932", range(0xE0, 0xF0), range(0x40, 0xFD)
    )  # JIS X 0208 levels 1+2 and the NEC/IBM extensions Windows users type (①, ㈱ ...)
    gb = double_byte("gb2312", hi, hi)
    big5 = double_byte("big5", range(0xA1, 0xFA), range(0x40, 0xFF))  # levels 1 and 2
    ksx = double_byte("euc_kr", hi, hi) | {chr(c) for c in range(0xAC00, 0xD7A4)}  # + all 11,172 syllables
    base = common()
    return {
        "NotoSansJP": base | {ord(c) for c in jis},
        "NotoSansSC": base | {ord(c) for c in gb},
        "NotoSansTC": base | {ord(c) for c in big5},
        "NotoSansKR": base | {ord(c) for c in ksx} | set(range(0x3130, 0x3190)),
    }


def emoji() -> set[int]:
    return (
        set(range(0x1F300, 0x1F650)) | set(range(0x1F680, 0x1F700)) | set(range(0x1F900, 0x1FA00))
        | set(range(0x2600, 0x27C0)) | {0x2764, 0xFE0F, 0x200D}
    )


def make(src: Path, out: Path, cps: set[int]) -> int:
    font = TTFont(src)
    cmap = font.getBestCmap()
    keep = sorted(cp for cp in cps if cp in cmap)
    opts = subset.Options()
    opts.layout_features = ["vert", "vrt2", "kern", "palt", "vpal"]
    opts.name_IDs = ["*"]
    opts.notdef_outline = True
    opts.hinting = False  # hints are most of a CJK font's size and do nothing at print resolution
    sub = subset.Subsetter(opts)
    sub.populate(unicodes=keep)
    sub.subset(font)
    font.save(out)
    return len(keep)


def main(src_dir: str, out_dir: str) -> None:
    src, out = Path(src_dir), Path(out_dir)
    report = []
    for name, cps in charsets().items():
        path = next(src.rglob(f"{name}_500Medium.ttf"))
        n = make(path, out / f"{name}-Medium-subset.ttf", cps)
        report.append(f"{name}-Medium-subset.ttf: {n} characters")
    # Sound effects are mostly kana: a heavy kana-only face, kanji fall back to the Medium subset.
    path = next(src.rglob("NotoSansJP_900Black.ttf"))
    n = make(path, out / "NotoSansJP-Black-kana.ttf", common())
    report.append(f"NotoSansJP-Black-kana.ttf: {n} characters")
    path = next(src.rglob("NotoEmoji_400Regular.ttf"))
    n = make(path, out / "NotoEmoji-Regular-subset.ttf", emoji())
    report.append(f"NotoEmoji-Regular-subset.ttf: {n} characters")
    (out / "COVERAGE.txt").write_text("\n".join(report) + "\n")
    print("\n".join(report))


if __name__ == "__main__":
    main(*sys.argv[1:3])
