"""Line breaking, font fitting, script detection and layout settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from storyboard.errors import StoryboardError
from storyboard.layout.fonts import cjk_language, resolve_fonts, string_width
from storyboard.layout.pagesize import MM, page_geometry
from storyboard.layout.textfit import char_units, fit_text, wrap
from storyboard.layout.types import LayoutSettings

HELV = resolve_fonts().latin  # the shipped Comic Neue stack
TEXT = "Did you hear that? Something is moving down by the docks, and it is coming closer."


@pytest.mark.parametrize("width", [40.0, 80.0, 150.0, 400.0])
def test_wrap_respects_width_and_keeps_words(width: float) -> None:
    lines = wrap(TEXT, HELV, 10, width)
    assert all(string_width(line, HELV, 10) <= width + 1e-9 for line in lines)
    if width >= string_width("Something ", HELV, 10):
        assert " ".join(lines) == TEXT  # breaks only at spaces
    else:  # "Something" alone is wider than the line: split inside it, nothing lost
        assert "".join(lines).replace(" ", "") == TEXT.replace(" ", "")


def test_long_word_is_split_hard() -> None:
    lines = wrap("Aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaah!", HELV, 10, 50)
    assert "".join(lines) == "Aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaah!"
    assert all(string_width(line, HELV, 10) <= 50 for line in lines)


def test_cjk_breaks_between_characters_with_kinsoku() -> None:
    ja = resolve_fonts().cjk["ja"]
    text = "「はい、行きましょう。」と彼女は言った。今日は本当に長い一日でした。"
    assert char_units("行こう。")[-1] == "う。"
    for width in range(30, 200, 7):
        lines = wrap(text, ja, 9, float(width))
        assert "".join(lines) == text
        for line in lines:
            assert line[0] not in "、。」ょ", lines
            assert line[-1] != "「"


def test_fit_text_shrinks_until_it_fits() -> None:
    fitted = fit_text(TEXT, HELV, 12, 80, 60)
    assert fitted is not None
    assert fitted.size < 12
    assert fitted.width <= 80 and fitted.height <= 60
    assert fit_text(TEXT * 20, HELV, 12, 80, 60) is None
    roomy = fit_text("Hi!", HELV, 12, 200, 100)
    assert roomy is not None and roomy.size == 12 and roomy.lines == ("Hi!",)


def test_script_detection() -> None:
    assert cjk_language("Hello", "en") is None
    assert cjk_language("你好", "en") == "zh"
    assert cjk_language("今日", "ja") == "ja"  # kanji-only in a Japanese book stays Japanese
    assert cjk_language("我们走吧", "ja") == "zh"  # 们 is not in the Japanese character set
    assert cjk_language("こんにちは", "zh") == "ja"
    assert cjk_language("안녕", "en") == "ko"
    assert cjk_language("你好", "zh-TW") == "zh-hant"


def test_cid_fonts_are_refused() -> None:
    # CID fonts are not embedded: pdfium shows nothing for them, so they cannot be chosen any more.
    with pytest.raises(ValidationError, match="CID fonts are no longer used"):
        LayoutSettings(cjk_font="cid")
    fonts = resolve_fonts()
    assert all(f.path.is_file() and f.name.startswith("SB-") for f in fonts.all_fonts())


def test_missing_font_is_a_user_error(tmp_path) -> None:
    with pytest.raises(StoryboardError, match="does not exist"):
        resolve_fonts(str(tmp_path / "nope.ttf"), None)
    with pytest.raises(StoryboardError, match="not installed"):
        resolve_fonts("No Such Comic Font 123", None)


def test_settings_page_sizes_and_validation() -> None:
    us = LayoutSettings.model_validate({"page_size": "us-comic", "margin_mm": 8})
    assert us.page_size == "US comic"
    geo = page_geometry(us)
    assert (geo.media_w, geo.media_h) == pytest.approx((6.625 * 72, 10.25 * 72))
    custom = page_geometry(LayoutSettings(page_size=(100, 150), bleed_mm=3, trim_marks=True))
    assert custom.media_w == pytest.approx((100 + 6 + 16) * MM)
    assert custom.trim.w == pytest.approx(100 * MM)
    assert LayoutSettings().formats == ("pdf", "cbz", "png")
    assert LayoutSettings.model_validate({"formats": "pdf"}).formats == ("pdf",)
    with pytest.raises(ValidationError, match="unknown page size"):
        LayoutSettings.model_validate({"page_size": "A3"})
    with pytest.raises(ValidationError):
        LayoutSettings.model_validate({"gutter": 3})
    with pytest.raises(ValidationError):
        LayoutSettings.model_validate({"formats": ["pdf", "epub"]})
    with pytest.raises(ValidationError, match="no room"):
        LayoutSettings(page_size=(50, 50), margin_mm=30)
