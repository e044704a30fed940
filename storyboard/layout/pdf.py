"""Write page drawings to a PDF with reportlab; all lettering stays real, selectable text.

Pages stream (layout/pdfstream.py): each page's panel images are read when that page is drawn, and
their encoded data waits in a scratch file, not in reportlab's document, until the file is written.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen import canvas as rl_canvas

from storyboard.layout.drawing import ImageOp, LineOp, PageDrawing, PathOp, RectOp, TextOp
from storyboard.layout.fonts import shipped
from storyboard.layout.pdfstream import install_hooks, spool_images, streamed_save
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
            reader = _image_source(op.placed(), jpeg_quality)
            c.drawImage(reader, r.x, r.y, r.w, r.h)
            # reportlab keeps a JPEG reader's bound method on the reader itself, a reference cycle:
            # its pixels, RGB copy and JPEG bytes would wait for the garbage collector, pages of them.
            vars(reader).pop("jpeg_fh", None)
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
    install_hooks()
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
                spool_images(c._doc, before, images)
            with streamed_save(fh):
                c.save()
        finally:
            spool_path.unlink(missing_ok=True)
