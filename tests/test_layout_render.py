"""End to end: build a small comic, then read the PDF and CBZ back independently.

pypdf checks page count, boxes and text; pdfplumber (pdfminer) gives character and image positions.
"""

from __future__ import annotations

import io
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import pdfplumber
import pypdf
import pytest
from PIL import Image, ImageDraw

import storyboard.layout.render as render_mod
from storyboard.errors import StoryboardError
from storyboard.layout import (
    Balloon,
    BalloonPlacement,
    LayoutMeta,
    LayoutOutputs,
    LayoutPage,
    LayoutPanel,
    LayoutSettings,
    PanelPlacement,
    Rect,
    render_comic,
)
from storyboard.layout.pagesize import MM, page_geometry

ZH = "我们走吧！快点，天要黑了。"
JA = "はい、行きましょう。"
LONG = (
    "This is a much longer line of dialogue that has to be broken over several lines and maybe "
    "shrunk so that it never spills out of its balloon, however small the panel is."
)


def _img(tmp: Path, name: str, size: tuple[int, int], color: tuple[int, int, int]) -> Path:
    im = Image.new("RGB", size, color)
    ImageDraw.Draw(im).rectangle(
        (size[0] // 3, size[1] // 3, size[0] // 2, size[1] // 2), fill=(250, 220, 180)
    )
    path = tmp / f"{name}.png"
    im.save(path)
    return path


def _pages(tmp: Path) -> list[LayoutPage]:
    return [
        LayoutPage(
            1,
            [
                LayoutPanel(
                    "1a",
                    _img(tmp, "a", (96, 48), (90, 140, 200)),
                    caption="Night falls over the harbour town.",
                    balloons=[Balloon("Did you hear that?", "Mia", "speech", (0.3, 0.6))],
                ),
                LayoutPanel(
                    "1b",
                    _img(tmp, "b", (64, 80), (200, 120, 90)),
                    balloons=[Balloon("Just the wind...", "Ken", "thought"), Balloon("KRAK!", kind="sfx")],
                ),
                LayoutPanel(
                    "1c",
                    _img(tmp, "c", (64, 80), (120, 180, 110)),
                    balloons=[Balloon(ZH, "Li", speaker_at=(0.8, 0.7)), Balloon(JA, "Yuki")],
                ),
            ],
        ),
        LayoutPage(
            2,
            [
                LayoutPanel(f"2{k}", _img(tmp, f"d{k}", (64, 64), (40 * k, 90, 160)), balloons=[b])
                for k, b in enumerate(
                    [
                        Balloon(LONG, "Mia", speaker_at=(0.2, 0.9)),
                        Balloon("Right.", "Ken", speaker_at=(0.9, 0.1)),
                        Balloon("Left?", "Mia", speaker_at=(0.05, 0.5)),
                        Balloon("Down!", "Ken", speaker_at=(0.5, 0.95)),
                    ]
                )
            ],
            template="2x2",
        ),
        LayoutPage(
            3,
            [
                LayoutPanel(
                    "3a", _img(tmp, "e", (60, 90), (160, 160, 200)), caption="The end?", focus=(0.5, 0.2)
                )
            ],
            template="splash",
        ),
    ]


META = LayoutMeta("Harbour Lights", "A. Writer", "en", "A short demo comic.")


@dataclass
class Built:
    out: LayoutOutputs
    settings: LayoutSettings
    pages: list[LayoutPage]


@pytest.fixture(scope="module")
def a4(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tmp = tmp_path_factory.mktemp("a4")
    pages = _pages(tmp)
    settings = LayoutSettings(page_size="A4", dpi=40, title_page=True)
    return Built(render_comic(META, pages, settings, tmp / "out"), settings, pages)


@pytest.fixture(scope="module")
def manga(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tmp = tmp_path_factory.mktemp("manga")
    pages = _pages(tmp)
    settings = LayoutSettings(
        page_size="US comic", dpi=30, bleed_mm=3, trim_marks=True, reading_direction="rtl"
    )  # language ja: the Japanese line is lettered vertically
    meta = LayoutMeta("漫画 Test", None, "ja")
    return Built(render_comic(meta, pages, settings, tmp / "out"), settings, pages)


def _squash(s: str) -> str:
    return re.sub(r"\s+", "", s)


def all_strings(pages: list[LayoutPage]) -> list[str]:
    out = []
    for p in pages:
        for panel in p.panels:
            if panel.caption:
                out.append(panel.caption)
            out += [b.text for b in panel.balloons]
    return out


def test_files_written(a4: Built) -> None:
    out = a4.out
    assert out.pdf is not None and out.pdf.name == "harbour-lights.pdf" and out.pdf.is_file()
    assert out.cbz is not None and out.cbz.name == "harbour-lights.cbz"
    assert [p.name for p in out.pages_png] == ["page-000.png", "page-001.png", "page-002.png", "page-003.png"]
    assert not list(out.pdf.parent.glob(".*.tmp"))


def test_a4_page_count_size_and_text(a4: Built) -> None:
    assert a4.out.pdf is not None
    reader = pypdf.PdfReader(a4.out.pdf)
    assert len(reader.pages) == 4  # title page + 3
    for page in reader.pages:
        assert float(page.mediabox.width) == pytest.approx(210 / 25.4 * 72, abs=0.01)
        assert float(page.mediabox.height) == pytest.approx(297 / 25.4 * 72, abs=0.01)
    text = _squash("".join(p.extract_text() for p in reader.pages))
    for s in [*all_strings(a4.pages), "Harbour Lights", "A. Writer"]:
        assert _squash(s) in text, s
    assert ZH in text and JA in text
    # Page numbers are printed on story pages.
    assert reader.pages[1].extract_text().strip().endswith("1")


def test_us_comic_with_bleed_and_trim_marks(manga: Built) -> None:
    assert manga.out.pdf is not None
    reader = pypdf.PdfReader(manga.out.pdf)
    assert len(reader.pages) == 3
    bleed, slug = 3 * MM, 8 * MM
    for page in reader.pages:
        assert float(page.mediabox.width) == pytest.approx(6.625 * 72 + 2 * (bleed + slug), abs=0.01)
        assert float(page.mediabox.height) == pytest.approx(10.25 * 72 + 2 * (bleed + slug), abs=0.01)
        assert float(page.trimbox.width) == pytest.approx(6.625 * 72, abs=0.01)
        assert float(page.trimbox.left) == pytest.approx(bleed + slug, abs=0.01)
        assert float(page.bleedbox.width) == pytest.approx(6.625 * 72 + 2 * bleed, abs=0.01)
    text = _squash("".join(p.extract_text() for p in reader.pages))
    for s in all_strings(manga.pages):
        assert _squash(s) in text, s


def test_bleed_without_marks(tmp_path: Path) -> None:
    pages = _pages(tmp_path)[2:]
    settings = LayoutSettings(page_size="B5", bleed_mm=5, formats=("pdf",))
    out = render_comic(META, pages, settings, tmp_path / "out")
    assert out.cbz is None and out.pages_png == []
    assert out.pdf is not None
    page = pypdf.PdfReader(out.pdf).pages[0]
    assert float(page.mediabox.width) == pytest.approx(192 * MM, abs=0.01)
    assert float(page.mediabox.height) == pytest.approx(267 * MM, abs=0.01)
    # The splash art covers the bleed box.
    (placement,) = out.placements
    r = placement.rect
    assert (r.x, r.y, r.w, r.h) == pytest.approx((0, 0, 192 * MM, 267 * MM))


def _check_images(built: Built) -> None:
    assert built.out.pdf is not None
    with pdfplumber.open(built.out.pdf) as pdf:
        for pl in built.out.placements:
            page = pdf.pages[pl.pdf_page_index]
            h = float(page.height)
            boxes = [
                Rect(im["x0"], h - im["bottom"], im["x1"] - im["x0"], im["bottom"] - im["top"])
                for im in page.images
            ]
            match = [
                b for b in boxes if abs(b.x - pl.image_rect.x) < 0.01 and abs(b.y - pl.image_rect.y) < 0.01
            ]
            assert len(match) == 1, pl.panel_id
            img = match[0]
            assert pl.rect.contains(img, tol=0.01)
            assert img.w == pytest.approx(pl.image_rect.w, abs=0.01)
            assert img.h == pytest.approx(pl.image_rect.h, abs=0.01)
        assert sum(len(p.images) for p in pdf.pages) == len(built.out.placements)


def test_images_inside_panels(a4: Built, manga: Built) -> None:
    _check_images(a4)
    _check_images(manga)


def _inside_ellipse(x: float, y: float, r: Rect) -> bool:
    a, b = r.w / 2, r.h / 2
    return ((x - r.cx) / a) ** 2 + ((y - r.cy) / b) ** 2 <= 1 + 1e-6


def _check_text_in_balloons(built: Built) -> None:
    assert built.out.pdf is not None
    by_page: dict[int, list] = {}
    for pl in built.out.placements:
        by_page.setdefault(pl.pdf_page_index, []).extend(pl.balloons)
    with pdfplumber.open(built.out.pdf) as pdf:
        for index, balloons in by_page.items():
            page = pdf.pages[index]
            h = float(page.height)
            collected: dict[int, str] = {i: "" for i in range(len(balloons))}
            for ch in page.chars:
                box = Rect(ch["x0"], h - ch["bottom"], ch["x1"] - ch["x0"], ch["bottom"] - ch["top"])
                homes = [i for i, b in enumerate(balloons) if b.text_rect.contains(box, tol=0.05)]
                if not homes:
                    # Only the page number may sit outside a balloon, and it lies below the panels.
                    assert ch["text"].isdigit() and box.y1 < min(b.rect.y for b in balloons), ch["text"]
                    continue
                assert len(homes) == 1
                bal = balloons[homes[0]]
                assert bal.rect.contains(box, tol=0.05)
                if bal.kind == "speech":
                    for cx, cy in ((box.x, box.y), (box.x1, box.y), (box.x, box.y1), (box.x1, box.y1)):
                        assert _inside_ellipse(cx, cy, bal.rect), (ch["text"], bal.text)
                collected[homes[0]] += ch["text"].strip()
            for i, bal in enumerate(balloons):
                assert collected[i] == _squash(bal.text), bal.text


def test_every_glyph_inside_its_balloon(a4: Built, manga: Built) -> None:
    _check_text_in_balloons(a4)
    _check_text_in_balloons(manga)


def test_long_dialogue_shrinks_to_fit(a4: Built) -> None:
    (long_bal,) = [b for pl in a4.out.placements for b in pl.balloons if b.text == LONG]
    panel = next(pl for pl in a4.out.placements if long_bal in pl.balloons)
    assert len(long_bal.lines) >= 3
    assert panel.rect.contains(long_bal.rect)
    others = [b for pl in a4.out.placements for b in pl.balloons if b.kind == "speech" and b.text != LONG]
    assert long_bal.font_size <= max(b.font_size for b in others)


def _tails(built: Built) -> list[tuple[PanelPlacement, BalloonPlacement]]:
    return [(pl, b) for pl in built.out.placements for b in pl.balloons if b.kind in ("speech", "thought")]


def test_tails_point_at_speakers(a4: Built, manga: Built) -> None:
    assert a4.out.pdf is not None
    with pdfplumber.open(a4.out.pdf) as pdf:
        for built in (a4, manga):
            for pl, bal in _tails(built):
                assert bal.tail_tip is not None and bal.speaker_point is not None
                cx, cy = bal.rect.cx, bal.rect.cy
                tx, ty = bal.tail_tip[0] - cx, bal.tail_tip[1] - cy
                sx, sy = bal.speaker_point[0] - cx, bal.speaker_point[1] - cy
                cos = (tx * sx + ty * sy) / (math.hypot(tx, ty) * math.hypot(sx, sy))
                assert cos == pytest.approx(1.0, abs=1e-6), bal.text
                assert pl.rect.contains(Rect(bal.tail_tip[0], bal.tail_tip[1], 0, 0))
                assert not _inside_ellipse(*bal.tail_tip, bal.rect)  # the tail sticks out
        # The tip is a vertex of a path actually drawn in the PDF.
        for pl, bal in _tails(a4):
            if bal.kind != "speech":
                continue
            page = pdf.pages[pl.pdf_page_index]
            h = float(page.height)
            pts = [(x, h - y) for c in page.curves for (x, y) in c["pts"]]
            tip = bal.tail_tip
            assert tip is not None
            assert any(abs(x - tip[0]) < 0.01 and abs(y - tip[1]) < 0.01 for x, y in pts), bal.text


def test_explicit_speaker_positions(a4: Built) -> None:
    pl = next(p for p in a4.out.placements if p.panel_id == "2k" or p.panel_id == "21")
    (bal,) = pl.balloons  # "Right." spoken at (0.9, 0.1): top right of the panel
    assert bal.speaker_point == pytest.approx((pl.rect.x + 0.9 * pl.rect.w, pl.rect.y1 - 0.1 * pl.rect.h))


def test_rtl_puts_panel_one_on_the_right(a4: Built, manga: Built) -> None:
    def page2(built: Built) -> list:
        return [p for p in built.out.placements if p.page == 2]

    ltr, rtl = page2(a4), page2(manga)
    assert ltr[0].rect.x < ltr[1].rect.x
    assert rtl[0].rect.x > rtl[1].rect.x
    assert rtl[0].rect.y == pytest.approx(rtl[1].rect.y)
    # Captions start at the reading-first corner.
    cap_ltr = next(
        b for p in a4.out.placements if p.panel_id == "1a" for b in p.balloons if b.kind == "caption"
    )
    cap_rtl = next(
        b for p in manga.out.placements if p.panel_id == "1a" for b in p.balloons if b.kind == "caption"
    )
    panel_ltr = next(p for p in a4.out.placements if p.panel_id == "1a").rect
    panel_rtl = next(p for p in manga.out.placements if p.panel_id == "1a").rect
    assert cap_ltr.rect.x - panel_ltr.x < 10
    assert panel_rtl.x1 - cap_rtl.rect.x1 < 10


def _cbz(built: Built) -> tuple[list[str], ET.Element, zipfile.ZipFile]:
    assert built.out.cbz is not None
    zf = zipfile.ZipFile(built.out.cbz)
    assert zf.testzip() is None
    names = zf.namelist()
    return names, ET.fromstring(zf.read("ComicInfo.xml")), zf


def test_cbz_pages_and_comicinfo(a4: Built) -> None:
    names, info, zf = _cbz(a4)
    images = [n for n in names if n.endswith(".png")]
    assert images == ["page-000.png", "page-001.png", "page-002.png", "page-003.png"]
    assert images == sorted(images)  # readers sort by name
    assert info.tag == "ComicInfo"
    assert info.findtext("Title") == "Harbour Lights"
    assert info.findtext("Series") == "Harbour Lights"
    assert info.findtext("Number") == "1"
    assert info.findtext("Writer") == "A. Writer"
    assert info.findtext("PageCount") == "4"
    assert info.findtext("LanguageISO") == "en"
    assert info.findtext("Manga") == "No"
    order = [el.tag for el in info]
    schema_order = [
        "Title",
        "Series",
        "Number",
        "Summary",
        "Writer",
        "PageCount",
        "LanguageISO",
        "Manga",
        "Pages",
    ]
    assert order == schema_order
    page_els = info.findall("Pages/Page")
    assert [p.get("Image") for p in page_els] == ["0", "1", "2", "3"]
    assert page_els[0].get("Type") == "FrontCover"
    for el, name in zip(page_els, images, strict=True):
        data = zf.read(name)
        with Image.open(io.BytesIO(data)) as im:
            assert (int(el.get("ImageWidth", 0)), int(el.get("ImageHeight", 0))) == im.size
        assert int(el.get("ImageSize", 0)) == len(data)
    # PNG pages at the requested dpi: A4 at 40 dpi.
    with Image.open(io.BytesIO(zf.read("page-001.png"))) as im:
        assert abs(im.width - 210 / 25.4 * 40) <= 1 and abs(im.height - 297 / 25.4 * 40) <= 1
    assert a4.out.pages_png[1].read_bytes() == zf.read("page-001.png")


def test_cbz_manga_flags(manga: Built) -> None:
    names, info, _ = _cbz(manga)
    assert [n for n in names if n.endswith(".png")] == ["page-001.png", "page-002.png", "page-003.png"]
    assert info.findtext("Manga") == "YesAndRightToLeft"
    assert info.findtext("LanguageISO") == "ja"
    assert info.find("Writer") is None


def test_png_shows_the_panel_image(a4: Built) -> None:
    pl = next(p for p in a4.out.placements if p.panel_id == "1b")
    with Image.open(a4.out.pages_png[pl.pdf_page_index]) as im:
        s = 40 / 72
        # A point in the lower part of panel 1b, clear of balloons: the image's colour.
        x, y = pl.rect.x + pl.rect.w * 0.1, pl.rect.y + pl.rect.h * 0.05
        pixel = im.convert("RGB").getpixel((round(x * s), round(im.height - y * s)))
        assert isinstance(pixel, tuple)
        r, g, b = pixel[:3]
        assert abs(r - 200) < 12 and abs(g - 120) < 12 and abs(b - 90) < 12


def test_same_input_same_bytes(tmp_path: Path) -> None:
    pages = _pages(tmp_path)
    settings = LayoutSettings(dpi=30, formats=("pdf", "cbz"))
    one = render_comic(META, pages, settings, tmp_path / "one")
    two = render_comic(META, pages, settings, tmp_path / "two")
    assert one.pdf and two.pdf and one.cbz and two.cbz
    assert one.pdf.read_bytes() == two.pdf.read_bytes()
    assert one.cbz.read_bytes() == two.cbz.read_bytes()


def test_pil_fallback_without_poppler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render_mod, "pdftoppm_available", lambda: False)
    pages = _pages(tmp_path)[:1]
    settings = LayoutSettings(dpi=30, formats=("png",))
    out = render_comic(META, pages, settings, tmp_path / "out")
    assert out.pdf is None and out.cbz is None
    (png,) = out.pages_png
    pl = next(p for p in out.placements if p.panel_id == "1b")
    with Image.open(png) as im:
        assert abs(im.width - 210 / 25.4 * 30) <= 1
        s = 30 / 72
        x, y = pl.rect.x + pl.rect.w * 0.1, pl.rect.y + pl.rect.h * 0.05
        pixel = im.convert("RGB").getpixel((round(x * s), round(im.height - y * s)))
        assert pixel == (200, 120, 90)


def test_stale_pages_removed(tmp_path: Path) -> None:
    pages = _pages(tmp_path)
    settings = LayoutSettings(dpi=20, formats=("png",))
    render_comic(META, pages, settings, tmp_path / "out")
    out = render_comic(META, pages[:1], settings, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "pages").iterdir()) == ["page-001.png"]
    assert [p.name for p in out.pages_png] == ["page-001.png"]


def test_letterbox_keeps_whole_image(tmp_path: Path) -> None:
    pages = _pages(tmp_path)[2:]
    out = render_comic(META, pages, LayoutSettings(fit="letterbox", formats=("pdf",)), tmp_path / "out")
    (pl,) = out.placements
    assert pl.rect.contains(pl.image_rect)
    assert pl.image_rect.w / pl.image_rect.h == pytest.approx(60 / 90, rel=1e-6)
    assert pl.image_rect.h == pytest.approx(pl.rect.h)


def test_user_errors(tmp_path: Path) -> None:
    pages = _pages(tmp_path)
    settings = LayoutSettings(formats=("pdf",), dpi=30)
    bad_tpl = [LayoutPage(1, pages[0].panels, template="2x3")]
    with pytest.raises(StoryboardError, match="unknown layout template '2x3'"):
        render_comic(META, bad_tpl, settings, tmp_path / "x")
    wrong_count = [LayoutPage(1, pages[0].panels, template="2x2")]
    with pytest.raises(StoryboardError, match="has 4 panels but the page has 3"):
        render_comic(META, wrong_count, settings, tmp_path / "x")
    missing = [LayoutPage(1, [LayoutPanel("m", tmp_path / "nope.png")])]
    with pytest.raises(StoryboardError, match=r"panel m: panel image .*nope.png does not exist"):
        render_comic(META, missing, settings, tmp_path / "x")
    with pytest.raises(StoryboardError, match="must increase"):
        render_comic(META, [pages[1], pages[0]], settings, tmp_path / "x")
    huge = [LayoutPage(1, [LayoutPanel("h", pages[0].panels[0].image, balloons=[Balloon(LONG * 200)])])]
    with pytest.raises(StoryboardError, match="does not fit its panel"):
        render_comic(META, huge, settings, tmp_path / "x")
    assert not (tmp_path / "x" / "harbour-lights.pdf").exists()


def test_lettering_stays_in_live_area_on_bleed_splash(manga: Built) -> None:
    live = page_geometry(manga.settings).live
    (splash,) = [p for p in manga.out.placements if p.page == 3]
    assert not live.contains(splash.rect)  # the art runs into the bleed ...
    assert splash.balloons
    for bal in splash.balloons:
        assert live.contains(bal.rect)  # ... but the caption stays where the trim cannot reach it


def _filters(pdf: Path) -> list[str]:
    page = pypdf.PdfReader(pdf).pages[0]
    resources = page["/Resources"].get_object()
    assert isinstance(resources, pypdf.generic.DictionaryObject)
    xobjects = resources["/XObject"].get_object()
    assert isinstance(xobjects, pypdf.generic.DictionaryObject)
    out = []
    for ref in xobjects.values():
        obj = ref.get_object()
        if obj["/Subtype"] == "/Image":
            filt = obj["/Filter"]
            out.append(str(filt[-1] if isinstance(filt, list | pypdf.generic.ArrayObject) else filt))
    return out


def test_jpeg_or_lossless_panel_images(tmp_path: Path) -> None:
    pages = _pages(tmp_path)[2:]
    jpeg = render_comic(META, pages, LayoutSettings(dpi=30, formats=("pdf",)), tmp_path / "j")
    lossless = render_comic(
        META, pages, LayoutSettings(dpi=30, formats=("pdf",), jpeg_quality=None), tmp_path / "l"
    )
    assert jpeg.pdf and lossless.pdf
    assert _filters(jpeg.pdf) == ["/DCTDecode"]
    assert _filters(lossless.pdf) == ["/FlateDecode"]


def test_blank_lettering_draws_nothing(tmp_path: Path) -> None:
    image = _img(tmp_path, "x", (40, 40), (10, 20, 30))
    panel = LayoutPanel(
        "x", image, caption="  ", balloons=[Balloon(""), Balloon("Hey", speaker_at=(0.5, 0.9))]
    )
    out = render_comic(META, [LayoutPage(1, [panel])], LayoutSettings(formats=("pdf",)), tmp_path / "o")
    (pl,) = out.placements
    assert [b.text for b in pl.balloons] == ["Hey"]
