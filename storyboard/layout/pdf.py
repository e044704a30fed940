"""Write page drawings to a PDF with reportlab; all lettering stays real, selectable text.

reportlab keeps every object of a document until save and then joins the whole file in memory, so
a 1,000-page book held every page's image data twice. Here the pages stream: each page's panel images
are read when that page is drawn, their encoded data goes to a scratch file once the page is done
(read back one image at a time while the file is written), and the file is written object by object
as reportlab formats it. The bytes are reportlab's own, the same as a plain `canvas.save()`
(tests/test_book_stream.py compares them), and memory stays that of one page plus a few hundred
bytes of bookkeeping per page.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from PIL import Image
from reportlab.lib.utils import ImageReader
from reportlab.pdfbase import pdfdoc
from reportlab.pdfgen import canvas as rl_canvas

from storyboard.layout.drawing import ImageOp, LineOp, PageDrawing, PathOp, RectOp, TextOp
from storyboard.layout.fonts import shipped
from storyboard.layout.types import LayoutMeta


def _box(c: rl_canvas.Canvas, page: PageDrawing) -> None:
    t, b = page.trim, page.bleed
    c.setTrimBox((t.x, t.y, t.x1, t.y1))
    c.setBleedBox((b.x, b.y, b.x1, b.y1))


def _image_source(image: Image.Image, jpeg_quality: int | None) -> ImageReader:
    if jpeg_quality is None:
        return ImageReader(image)
    # reportlab embeds JPEG data as-is (DCTDecode) when it is handed a JPEG stream.
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=jpeg_quality, subsampling=0 if jpeg_quality >= 90 else 2)
    return ImageReader(io.BytesIO(buf.getvalue()))


def draw_page(c: rl_canvas.Canvas, page: PageDrawing, jpeg_quality: int | None = None) -> None:
    for op in page.ops:
        if isinstance(op, ImageOp):
            r = op.rect
            c.drawImage(_image_source(op.placed(), jpeg_quality), r.x, r.y, r.w, r.h)
        elif isinstance(op, RectOp):
            r = op.rect
            if op.fill:
                c.setFillColorRGB(*op.fill)
            if op.stroke:
                c.setStrokeColorRGB(*op.stroke)
                c.setLineWidth(op.width)
            c.rect(r.x, r.y, r.w, r.h, stroke=int(op.stroke is not None), fill=int(op.fill is not None))
        elif isinstance(op, PathOp):
            path = c.beginPath()
            path.moveTo(*op.points[0])
            for p in op.points[1:]:
                path.lineTo(*p)
            path.close()
            if op.fill:
                c.setFillColorRGB(*op.fill)
            if op.stroke:
                c.setStrokeColorRGB(*op.stroke)
                c.setLineWidth(op.width)
                c.setLineJoin(1)
            c.drawPath(path, stroke=int(op.stroke is not None), fill=int(op.fill is not None))
        elif isinstance(op, LineOp):
            c.setStrokeColorRGB(*op.color)
            c.setLineWidth(op.width)
            c.line(*op.p0, *op.p1)
        elif isinstance(op, TextOp):
            text = c.beginText(op.x, op.baseline)
            if op.angle:
                a = math.radians(op.angle)
                cos, sin = round(math.cos(a), 12), round(math.sin(a), 12)
                text.setTextTransform(cos, sin, -sin, cos, op.x, op.baseline)
            text.setFont(op.font.name, op.size)
            c.setFillColorRGB(*op.fill)
            if op.outline is not None:
                # Fill then stroke in one text object: one copy of the string in the text layer.
                c.setStrokeColorRGB(0, 0, 0)
                c.setLineWidth(0.6)
                text.setTextRenderMode(2)
            text.textOut(op.text)
            c.drawText(text)


_sink = threading.local()


class _StreamingFile(pdfdoc.PDFFile):
    """reportlab's output collector. During a streamed save on this thread each formatted object
    goes straight to the file (reportlab keeps a list of them all and joins it at the end); at any
    other time it is reportlab's own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fh: IO[bytes] | None = getattr(_sink, "fh", None)
        if fh is not None:
            header: list[bytes] = self.strings  # written by the constructor
            fh.write(b"".join(header))
            header.clear()
            self.write = fh.write


class _SpooledImage(pdfdoc.PDFImageXObject):  # type: ignore[misc]
    """An image XObject whose data waits in the scratch file until the PDF is written."""

    _spool: IO[bytes]
    _at: tuple[int, int, bool]  # offset, length, whether reportlab held it as str (ASCII85)

    def format(self, document: Any) -> bytes:
        offset, length, text = self._at
        self._spool.seek(offset)
        data = self._spool.read(length)
        self.streamContent = data.decode("latin-1") if text else data
        try:
            return super().format(document)  # type: ignore[no-any-return]
        finally:
            self.streamContent = ""


def _spool_images(doc: Any, since: int, spool: IO[bytes]) -> None:
    """Move the data of the image objects registered after object number `since` to the spool."""
    for number in range(since + 1, doc.objectcounter + 1):
        oid = doc.numberToId[number]
        obj = doc.idToObject[oid]
        if type(obj) is not pdfdoc.PDFImageXObject:
            continue
        content = obj.streamContent
        text = isinstance(content, str)
        data = content.encode("latin-1") if text else bytes(content)
        spool.seek(0, io.SEEK_END)
        spooled = _SpooledImage.__new__(_SpooledImage)
        spooled.__dict__.update(obj.__dict__)  # its name, size, filters; one object, registered once
        spooled._spool, spooled._at = spool, (spool.tell(), len(data), text)
        spooled.streamContent = ""
        spool.write(data)
        doc.idToObject[oid] = spooled


_install = threading.Lock()


@contextmanager
def _streamed_save(fh: IO[bytes]) -> Iterator[None]:
    with _install:
        if pdfdoc.PDFFile is not _StreamingFile:
            pdfdoc.PDFFile = _StreamingFile  # inert unless a streamed save runs on the thread
    _sink.fh = fh
    try:
        yield
    finally:
        _sink.fh = None


def write_pdf(
    pages: Sequence[PageDrawing],
    path: Path,
    meta: LayoutMeta,
    *,
    jpeg_quality: int | None = None,
    rtl: bool = False,
    spool: Path | None = None,
) -> None:
    """Write all pages to path (the caller makes it atomic). invariant=1: same input, same bytes.

    Fonts are TrueType subsets embedded by reportlab (only the glyphs used). An rtl book says so in
    ViewerPreferences /Direction /R2L, so viewers show two-page spreads right to left, as the CBZ's
    Manga=YesAndRightToLeft does for comic readers. spool: the scratch file for image data until the
    file is written (default: beside path).
    """
    # The initial font is written into every page's resources whether used or not; make it one of
    # ours so the PDF names no font that is not embedded (reportlab's default is Helvetica).
    first = next((op.font.name for p in pages for op in p.ops if isinstance(op, TextOp)), None)
    spool_path = spool or path.with_name(path.name + ".images")
    with path.open("wb") as fh, spool_path.open("w+b") as images:
        try:
            c = rl_canvas.Canvas(
                fh, invariant=1, pageCompression=1, initialFontName=first or shipped("comic").name
            )
            if rtl:
                c.setViewerPreference("Direction", "R2L")
            c.setTitle(meta.title)
            if meta.author:
                c.setAuthor(meta.author)
            if meta.summary:
                c.setSubject(meta.summary)
            c.setCreator("storyboard")
            for page in pages:
                before = c._doc.objectcounter
                c.setPageSize((page.width, page.height))
                if page.bleed != page.trim:
                    _box(c, page)
                draw_page(c, page, jpeg_quality)
                c.showPage()
                _spool_images(c._doc, before, images)
            with _streamed_save(fh):
                c.save()
        finally:
            spool_path.unlink(missing_ok=True)
