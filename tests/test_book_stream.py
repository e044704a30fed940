"""Books of any length (issue 22): layout, PDF, CBZ and page PNGs stream page by page.

A long book's layout holds a constant number of images, whatever its length (probed by counting the
live PIL images whenever a page is drawn into the PDF or encoded as PNG: today's main held every page
at once); the streamed PDF is byte for byte what reportlab's own save writes; a book built by
`storyboard build book.yaml --draft` reads back as a PDF, a CBZ and page PNGs with every page and
every panel image in it, its PNG pages the same as one pdftoppm call over the whole PDF draws.
"""

from __future__ import annotations

import gc
import importlib.util
import io
import os
import random
import subprocess
import sys
import tempfile
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from PIL import Image
from pypdf import PdfReader

import storyboard.layout.pdf as pdf_mod
import storyboard.layout.render as render_mod
from storyboard.app.build import build
from storyboard.app.pages import layout_story
from storyboard.render.draft import DraftRenderer
from storyboard.story.load import load_story

ROOT = Path(__file__).resolve().parents[1]
# Small pages at a low resolution keep the test fast; the count of images is what is probed.
LAYOUT = "{page_size: [100, 140], dpi: 40, title_page: true}"


def _bench() -> Any:
    """bench/book_memory.py, whose story generator the benchmark and these tests share."""
    if "book_memory" not in sys.modules:
        spec = importlib.util.spec_from_file_location("book_memory", ROOT / "bench" / "book_memory.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["book_memory"] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
    return sys.modules["book_memory"]


def _live_images() -> int:
    """PIL images reachable now (garbage collected first: a released image is not held)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if issubclass(type(o), Image.Image))


def _most_images_held(tmp: Path, pages: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """Lay out a book of `pages` pages (10 draft panels each) and return the most PIL images alive at
    any moment a page is drawn into the PDF or encoded as a PNG page."""
    story = _bench().write_project(tmp / f"book-{pages}", pages, layout=LAYOUT)
    loaded = load_story(story)
    report = build(loaded, tmp / f"out-{pages}", DraftRenderer(), draft=True, layout=False)
    held: list[int] = []
    draw_page, png_bytes = pdf_mod.draw_page, render_mod._png_bytes

    def counting_draw(*args: Any, **kwargs: Any) -> None:
        held.append(_live_images())
        draw_page(*args, **kwargs)

    def counting_png(*args: Any, **kwargs: Any) -> bytes:
        held.append(_live_images())
        return png_bytes(*args, **kwargs)

    monkeypatch.setattr(pdf_mod, "draw_page", counting_draw)
    monkeypatch.setattr(render_mod, "_png_bytes", counting_png)
    gc.collect()
    before = _live_images()  # not layout's
    files, _ = layout_story(loaded, report.out_dir)
    monkeypatch.undo()
    assert len(held) == 2 * (pages + 1)  # each page (and the title page) drawn once and encoded once
    assert len([f for f in files if f.suffix == ".png"]) == pages + 1
    return max(held) - before


def test_layout_holds_a_constant_number_of_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = _most_images_held(tmp_path, 4, monkeypatch)
    large = _most_images_held(tmp_path, 16, monkeypatch)
    # A page's own images at most (its 10 panels and itself), however long the book; holding every
    # page, as a layout did before, would be 16 pages * 11 images here.
    assert large <= small and large <= 12, (small, large)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", STORYBOARD_QUIET="1")
    cmd = [sys.executable, "-m", "storyboard.cli", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_draft_book_reads_back_page_by_page(tmp_path: Path) -> None:
    pages = 19  # with the title page 20 PDF pages: pdftoppm draws them in ranges of 8, the last short
    _bench().write_project(tmp_path, pages, layout=LAYOUT)
    r = _run(["build", "book.yaml", "--draft"], tmp_path)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "output" / "book" / "draft"
    assert f"wrote {out / 'long-book-19.pdf'}" in r.stdout.replace("\n", "")

    pdf = PdfReader(out / "long-book-19.pdf")
    assert len(pdf.pages) == pages + 1
    for i, page in enumerate(pdf.pages):
        xobjects = page["/Resources"].get("/XObject", {})
        images = [x for x in xobjects.values() if x.get_object()["/Subtype"] == "/Image"]
        assert len(images) == (0 if i == 0 else 10), i  # the title page has no panels
        if i == 1:
            # Each panel image decodes to its print size: 40 dpi of its frame.
            assert all(img.get_object().decode_as_image().width > 20 for img in images)
    assert "Line 19.10" in pdf.pages[-1].extract_text()

    names = [f"page-{n:03d}.png" for n in range(pages + 1)]
    assert sorted(p.name for p in (out / "pages").iterdir()) == names
    with zipfile.ZipFile(out / "long-book-19.cbz") as zf:
        assert zf.namelist() == [*names, "ComicInfo.xml"]
        info = ET.fromstring(zf.read("ComicInfo.xml"))
        assert info.findtext("PageCount") == str(pages + 1)
        listed = info.findall("Pages/Page")
        assert [p.get("Type") for p in listed] == ["FrontCover"] + [None] * pages
        # One pdftoppm call over the whole PDF, independently of the ranges layout used.
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["pdftoppm", "-r", "40", str(out / "long-book-19.pdf"), f"{tmp}/p"], check=True)
            whole = sorted(Path(tmp).glob("p-*.ppm"), key=lambda p: int(p.stem.split("-")[-1]))
            assert len(whole) == pages + 1
            for name, entry, ppm in zip(names, listed, whole, strict=True):
                data = zf.read(name)
                assert data == (out / "pages" / name).read_bytes()
                assert entry.get("ImageSize") == str(len(data))
                with Image.open(io.BytesIO(data)) as png, Image.open(ppm) as ref:
                    assert (entry.get("ImageWidth"), entry.get("ImageHeight")) == tuple(map(str, png.size))
                    assert png.convert("RGB").tobytes() == ref.convert("RGB").tobytes(), name


@pytest.mark.parametrize("jpeg_quality", [92, None])
def test_streamed_pdf_is_reportlabs_own_bytes(
    tmp_path: Path, jpeg_quality: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from reportlab.lib import rl_accel
    from reportlab.pdfbase import pdfdoc
    from reportlab.pdfgen import canvas as rl_canvas

    from storyboard.layout.compose import compose_page
    from storyboard.layout.drawing import TextOp
    from storyboard.layout.fonts import resolve_fonts
    from storyboard.layout.pdfstream import _StreamingFile
    from storyboard.layout.templates import list_templates
    from storyboard.layout.types import LayoutMeta, LayoutPage, LayoutPanel, LayoutSettings

    art = []
    rng = random.Random(7)
    for i in range(3):
        img = Image.effect_noise((160, 120), 40 + 20 * i).convert("RGB")
        img.putpixel((rng.randrange(160), rng.randrange(120)), (255, 0, 0))
        art.append(tmp_path / f"a{i}.png")
        img.save(art[-1])
    settings = LayoutSettings(page_size=(100, 140), dpi=60, jpeg_quality=jpeg_quality, bleed_mm=3)
    fonts, templates = resolve_fonts(None, None), list_templates(None)
    # The same panel file on two pages: reportlab stores it once and both pages refer to it.
    pages = [
        LayoutPage(1, (LayoutPanel("p1", art[0], caption="One"), LayoutPanel("p2", art[1]))),
        LayoutPage(2, (LayoutPanel("p3", art[2]), LayoutPanel("p4", art[0], caption="Again"))),
    ]
    drawings = [compose_page(p, i, settings, fonts, templates, "en")[0] for i, p in enumerate(pages)]
    meta = LayoutMeta(title="Same bytes", author="test", summary="two pages")
    streamed = tmp_path / "streamed.pdf"
    pdf_mod.write_pdf(drawings, streamed, meta, jpeg_quality=jpeg_quality)

    # reportlab as it comes: its own output collector and its own ASCII85 encoder.
    monkeypatch.setattr(pdfdoc, "PDFFile", _StreamingFile.__bases__[0])
    monkeypatch.setattr(pdfdoc, "asciiBase85Encode", rl_accel.asciiBase85Encode)
    plain = tmp_path / "plain.pdf"
    first = next(op.font.name for d in drawings for op in d.ops if isinstance(op, TextOp))
    c = rl_canvas.Canvas(str(plain), invariant=1, pageCompression=1, initialFontName=first)
    c.setTitle(meta.title)
    c.setAuthor("test")
    c.setSubject("two pages")
    c.setCreator("storyboard")
    for d in drawings:
        c.setPageSize((d.width, d.height))
        pdf_mod._box(c, d)
        pdf_mod.draw_page(c, d, jpeg_quality)
        c.showPage()
    c.save()
    assert streamed.read_bytes() == plain.read_bytes()
    assert not (tmp_path / "streamed.pdf.images").exists()  # the spool is gone
    assert len(PdfReader(streamed).pages) == 2


def _pdf_peak(tmp: Path, pages: int) -> tuple[int, int]:
    """Python memory at its peak while write_pdf writes `pages` pages of one noisy (incompressible)
    panel each, and the file's size."""
    from storyboard.layout.compose import compose_page
    from storyboard.layout.fonts import resolve_fonts
    from storyboard.layout.templates import list_templates
    from storyboard.layout.types import LayoutMeta, LayoutPage, LayoutPanel, LayoutSettings

    settings = LayoutSettings(page_size=(100, 140), dpi=120, page_numbers=False)
    fonts, templates = resolve_fonts(None, None), list_templates(None)
    drawings = []
    for n in range(1, pages + 1):
        art = tmp / f"noise-{pages}-{n}.png"
        Image.effect_noise((400, 560), 90).convert("RGB").save(art)
        page = LayoutPage(n, (LayoutPanel(f"p{n}", art),), template="splash")
        drawings.append(compose_page(page, n - 1, settings, fonts, templates, "en")[0])
    out = tmp / f"noise-{pages}.pdf"
    tracemalloc.start()
    try:
        pdf_mod.write_pdf(drawings, out, LayoutMeta(title="noise"), jpeg_quality=92)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak, out.stat().st_size


def test_pdf_writer_holds_one_pages_image_data(tmp_path: Path) -> None:
    small, _ = _pdf_peak(tmp_path, 3)
    large, size = _pdf_peak(tmp_path, 12)
    # Nine more pages of image data: a writer that keeps them (reportlab does, until it joins the
    # whole file in memory at save) grows by twice the data; a streaming one by a page's bookkeeping.
    assert large - small < size / 12, (small, large, size)


def test_ascii85_is_reportlabs() -> None:
    from reportlab.lib.rl_accel import asciiBase85Encode

    from storyboard.layout.pdfstream import a85

    rng = random.Random(3)
    for n in [*range(13), 1001, 4096]:
        for _ in range(8):
            data = bytes(rng.choice([0, 0, 0, 255, rng.randrange(256)]) for _ in range(n))
            assert a85(data) == asciiBase85Encode(data)
            assert a85(data.decode("latin-1")) == asciiBase85Encode(data.decode("latin-1"))


def test_manifest_rewrites_stay_a_small_share_of_the_render(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A manifest rewrite grows with the book; spaced by how long the last one took, rewrites cost
    the same share of a render at any length (a fixed interval of 0 s wrote after every panel here)."""
    import time

    import storyboard.app.build as build_mod
    from storyboard.app.store import PanelStore

    story = _bench().write_project(tmp_path, 4, layout=LAYOUT)
    monkeypatch.setattr(build_mod, "MANIFEST_INTERVAL", 0.0)
    spent: list[float] = []
    write = PanelStore.write_manifest

    def slow_write(self: PanelStore, manifest: Any) -> None:
        t = time.monotonic()
        time.sleep(0.02)  # as a 10,000-panel manifest takes longer than a 60-panel one
        write(self, manifest)
        spent.append(time.monotonic() - t)

    monkeypatch.setattr(PanelStore, "write_manifest", slow_write)
    t0 = time.monotonic()
    report = build(load_story(story), tmp_path / "out", DraftRenderer(), draft=True, layout=False)
    elapsed = time.monotonic() - t0
    assert len(report.rendered) == 40
    assert PanelStore(report.out_dir).read_manifest().panels.keys() == set(report.rendered)
    assert sum(spent[:-1]) <= elapsed / 10, (len(spent), sum(spent), elapsed)  # the last: the final write
