"""CJK lettering that prints: embedded fonts, vertical Japanese, kinsoku, extraction, ink in balloons.

The PDF is rasterised with pypdfium2 (Chrome's PDF engine), and with poppler where pdftoppm exists,
and every balloon and caption box must hold dark pixels; every font must be an embedded subset.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pypdf
import pypdfium2 as pdfium
import pytest
from PIL import Image

from storyboard.errors import StoryboardError
from storyboard.layout import Balloon, LayoutMeta, LayoutPage, LayoutPanel, LayoutSettings, render_comic
from storyboard.layout.fonts import FONT_DIR, resolve_fonts
from storyboard.layout.textfit import NO_LINE_END, NO_LINE_START, tokenize, wrap
from storyboard.layout.types import LayoutOutputs
from storyboard.layout.vertical import cells

EMOJI_LINE = "Hi 😀 there!"
LINES = {
    "en": "Is someone playing a guitar?",
    "ja-v": "ごめん、道に迷った。どこにいるんだろう…",
    "ja-h": "ラーメン食べたい！「はい」",
    "zh": "我们走吧！快点，天要黑了。",
    "zh-hant": "這個週末我們去看電影吧。",
    "ko": "안녕하세요, 반갑습니다!",
}


def _img(tmp: Path, name: str, size: tuple[int, int]) -> Path:
    path = tmp / f"{name}.png"
    Image.new("RGB", size, (235, 235, 235)).save(path)  # light art: text ink stands out
    return path


def _build(tmp: Path, rtl: bool, formats: tuple[str, ...] = ("pdf",)) -> LayoutOutputs:
    panels = [
        LayoutPanel(
            "p-en",
            _img(tmp, "a", (640, 448)),
            caption=EMOJI_LINE,
            balloons=[Balloon(LINES["en"], "Iku", speaker_at=(0.3, 0.6))],
        ),
        LayoutPanel(
            "p-ja",
            _img(tmp, "b", (448, 640)),
            caption="放課後。",
            balloons=[
                Balloon(LINES["ja-v"], "Haru", speaker_at=(0.6, 0.7)),
                Balloon(LINES["ja-h"], "Iku", vertical=False, speaker_at=(0.2, 0.8)),
                Balloon("ドキドキ", kind="sfx", speaker_at=(0.5, 0.9)),
            ],
        ),
        LayoutPanel(
            "p-zh",
            _img(tmp, "c", (448, 640)),
            balloons=[Balloon(LINES["zh"], "Li"), Balloon(LINES["zh-hant"], "Mei")],
        ),
        LayoutPanel("p-ko", _img(tmp, "d", (640, 448)), balloons=[Balloon(LINES["ko"], "Min")]),
    ]
    settings = LayoutSettings(dpi=60, reading_direction="rtl" if rtl else "ltr", formats=formats)
    meta = LayoutMeta("多言語 test", None, "ja" if rtl else "en")
    return render_comic(meta, [LayoutPage(1, panels, template="2x2")], settings, tmp / "out")


@pytest.fixture(scope="module")
def ja_book(tmp_path_factory: pytest.TempPathFactory) -> LayoutOutputs:
    return _build(tmp_path_factory.mktemp("ja"), rtl=True)


@pytest.fixture(scope="module")
def en_book(tmp_path_factory: pytest.TempPathFactory) -> LayoutOutputs:
    return _build(tmp_path_factory.mktemp("en"), rtl=False)


def _ink_boxes(out: LayoutOutputs, page: np.ndarray, scale: float) -> None:
    h = page.shape[0]
    for pl in out.placements:
        for bal in pl.balloons:
            r = bal.text_rect
            box = page[
                round(h - r.y1 * scale) : round(h - r.y * scale), round(r.x * scale) : round(r.x1 * scale)
            ]
            dark = (box.min(axis=2) < 110).mean()
            assert dark > 0.005, (pl.panel_id, bal.text, dark)  # glyphs, not a blank or empty box


def _pdfium_page(pdf: Path, scale: float) -> np.ndarray:
    doc = pdfium.PdfDocument(str(pdf))
    return np.asarray(doc[0].render(scale=scale).to_pil().convert("RGB"))


@pytest.mark.parametrize("book", ["ja_book", "en_book"])
def test_ink_in_every_balloon_pdfium(book: str, request: pytest.FixtureRequest) -> None:
    out: LayoutOutputs = request.getfixturevalue(book)
    assert out.pdf is not None
    _ink_boxes(out, _pdfium_page(out.pdf, 2.0), 2.0)


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler's pdftoppm is not installed")
def test_ink_in_every_balloon_poppler(ja_book: LayoutOutputs, tmp_path: Path) -> None:
    assert ja_book.pdf is not None
    subprocess.run(["pdftoppm", "-r", "144", "-png", str(ja_book.pdf), str(tmp_path / "p")], check=True)
    (png,) = tmp_path.glob("p*.png")
    _ink_boxes(ja_book, np.asarray(Image.open(png).convert("RGB")), 2.0)


def test_png_pages_use_only_shipped_fonts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import storyboard.layout.render as render_mod

    # The PIL painter (no poppler) with fontconfig pointed at nothing: CJK still has ink.
    monkeypatch.setenv("FONTCONFIG_FILE", str(tmp_path / "empty-fonts.conf"))
    (tmp_path / "empty-fonts.conf").write_text("<fontconfig></fontconfig>")
    monkeypatch.setattr(render_mod, "pdftoppm_available", lambda: False)
    out = _build(tmp_path, rtl=True, formats=("png",))
    (png,) = out.pages_png
    _ink_boxes(out, np.asarray(Image.open(png).convert("RGB")), 60 / 72)
    assert all(f.path.parent == FONT_DIR for f in resolve_fonts().all_fonts())


def test_fonts_embedded_as_subsets(ja_book: LayoutOutputs) -> None:
    assert ja_book.pdf is not None
    reader = pypdf.PdfReader(ja_book.pdf)
    fonts = reader.pages[0]["/Resources"]["/Font"].get_object()
    names = set()
    for ref in fonts.values():
        font = ref.get_object()
        assert font["/Subtype"] == "/TrueType"  # no Type0 CID fonts that readers must supply
        base = str(font["/BaseFont"])
        assert base[7] == "+" and base[1:7].isupper(), base  # a subset tag
        assert "/FontFile2" in font["/FontDescriptor"].get_object(), base  # the glyphs are in the file
        names.add(base[8:].split("-")[0])
    assert {"ComicNeue", "NotoSansJP", "NotoSansSC", "NotoSansTC", "NotoSansKR", "NotoEmoji"} <= names
    assert "STSong" not in str(names) and "Heisei" not in str(names)


def _squash(s: str) -> str:
    return "".join(s.split())


def test_text_extracts_as_written_including_emoji(en_book: LayoutOutputs, ja_book: LayoutOutputs) -> None:
    # pypdf reads the ToUnicode maps as written: vertical forms come back as the story's characters.
    for out in (en_book, ja_book):
        assert out.pdf is not None
        plain = pypdf.PdfReader(out.pdf).pages[0].extract_text()
        for s in [EMOJI_LINE, *LINES.values(), "放課後。"]:
            assert _squash(s) in _squash(plain), s
        assert EMOJI_LINE in plain  # horizontal lines keep their spaces
    # pdfium's own heuristics reorder a mostly vertical page and fold ︙ to "...": horizontal book.
    assert en_book.pdf is not None
    text = pdfium.PdfDocument(str(en_book.pdf))[0].get_textpage().get_text_range()
    for s in [EMOJI_LINE, *LINES.values()]:
        assert _squash(s) in _squash(text), s
    # The raw map: the emoji as a UTF-16 surrogate pair, not reportlab's five-digit <1F600>.
    raw = b"".join(
        obj.get_object()["/ToUnicode"].get_object().get_data()
        for obj in pypdf.PdfReader(en_book.pdf).pages[0]["/Resources"]["/Font"].values()
        if "/ToUnicode" in obj.get_object()
    )
    assert b"<D83DDE00>" in raw and b"<1F600>" not in raw


def test_pdf_reading_direction(en_book: LayoutOutputs, ja_book: LayoutOutputs) -> None:
    assert ja_book.pdf is not None and en_book.pdf is not None
    prefs = pypdf.PdfReader(ja_book.pdf).trailer["/Root"]["/ViewerPreferences"]
    assert prefs["/Direction"] == "/R2L"
    assert "/ViewerPreferences" not in pypdf.PdfReader(en_book.pdf).trailer["/Root"]


def test_japanese_is_vertical_in_a_japanese_book(ja_book: LayoutOutputs, en_book: LayoutOutputs) -> None:
    def bal(out: LayoutOutputs, text: str):  # noqa: ANN202
        return next(b for pl in out.placements for b in pl.balloons if b.text == text)

    v = bal(ja_book, LINES["ja-v"])
    assert v.text_rect.h > v.text_rect.w  # columns
    assert len(v.lines) >= 2
    xs = [ln.x for ln in v.lines]
    assert xs == sorted(xs, reverse=True)  # first column on the right
    assert "".join(ln.text for ln in v.lines) == LINES["ja-v"]
    assert len(bal(ja_book, LINES["ja-h"]).lines[0].text) > 1  # vertical=False on the line
    assert bal(ja_book, LINES["zh"]).lines[0].baseline  # Chinese stays horizontal unless asked
    h = bal(en_book, LINES["ja-v"])
    assert h.text_rect.w > h.text_rect.h  # the same line in an English book is horizontal


def test_vertical_forms() -> None:
    stack = resolve_fonts().cjk["ja"]
    got = [(c.text, c.kind) for c in cells("ラーメン、「!?」…OK", stack, 10)]
    assert got == [
        ("ラ", "upright"), ("ー", "rotated"), ("メ", "upright"), ("ン", "upright"), ("︑", "upright"),
        ("﹁", "upright"), ("!?", "tcy"), ("﹂", "upright"), ("︙", "upright"), ("OK", "rotated"),
    ]  # fmt: skip


# Known breaks: text, line length in ems, the lines a letterer would set.
GOOD_BREAKS = [
    ("ごめん、道に迷った。", 6, ["ごめん、道に", "迷った。"]),
    ("ごめん、道に迷った。", 5, ["ごめん、", "道に", "迷った。"]),
    ("どこにいるんだろう…", 7, ["どこに", "いるんだろう…"]),
    ("今日はとても暑いですね。", 7, ["今日はとても", "暑いですね。"]),
    ("「はい、行きましょう。」と彼女は言った。", 8, ["「はい、", "行きましょう。」", "と彼女は言った。"]),
]
# Breaks that must never happen (the first line ends with the left part).
BAD_BREAKS = ["迷っ|た", "だろ|う", "ろう|…", "と|ても", "「|は", "ラ|ー", "っ|て", "た|。"]
SAMPLES = [
    "ごめん、道に迷った。",
    "どこにいるんだろう……待ってて！",
    "「はい、行きましょう。」と彼女は言った。",
    "ラーメンが食べたいって言ってたよね？",
    "今日はとても暑いですね。",
]


@pytest.mark.parametrize(("text", "ems", "lines"), GOOD_BREAKS)
def test_known_good_breaks(text: str, ems: int, lines: list[str]) -> None:
    stack = resolve_fonts().cjk["ja"]
    assert wrap(text, stack, 10, ems * 10 + 0.5, "ja") == lines


@pytest.mark.parametrize("text", SAMPLES)
def test_no_bad_breaks_at_any_width(text: str) -> None:
    stack = resolve_fonts().cjk["ja"]
    longest = max(len(p) for p in tokenize(text, "ja"))
    for ems in range(3, 12):
        lines = wrap(text, stack, 10, ems * 10 + 0.5, "ja")
        assert "".join(lines) == text
        for a, b in zip(lines, lines[1:], strict=False):
            assert b[0] not in NO_LINE_START, (ems, lines)
            assert a[-1] not in NO_LINE_END, (ems, lines)
            assert not (a[-1] in "…‥" and b[0] == a[-1]), (ems, lines)
            # Where every phrase fits a line, no break falls inside a word.
            for bad in BAD_BREAKS if ems >= longest else []:
                left, right = bad.split("|")
                assert not (a.endswith(left) and b.startswith(right)), (bad, lines)


def test_uncovered_character_is_an_error(tmp_path: Path) -> None:
    panel = LayoutPanel("rare", _img(tmp_path, "r", (64, 64)), balloons=[Balloon("𠮷野家に行こう", "Iku")])
    with pytest.raises(StoryboardError, match=r"panel rare.*'𠮷' \(U\+20BB7\).*𠮷野家に行こう"):
        render_comic(
            LayoutMeta("x", language="ja"),
            [LayoutPage(1, [panel])],
            LayoutSettings(formats=("pdf",)),
            tmp_path / "out",
        )


def test_story_font_extends_coverage(tmp_path: Path) -> None:
    # A story names its own font file; the shipped faces stay behind it as fallbacks.
    fonts = resolve_fonts(str(FONT_DIR / "Bangers-Regular.ttf"))
    assert fonts.latin.primary.path.name == "Bangers-Regular.ttf"
    assert fonts.latin.font_of("道").path.name.startswith("NotoSansJP")
