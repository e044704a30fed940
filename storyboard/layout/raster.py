"""PNG pages.

The primary path rasterises the finished PDF with poppler's pdftoppm, so the PNG/CBZ pages are
pixel-for-pixel what prints (same text shaping, same anti-aliasing). Without poppler the same page
drawings are painted with PIL instead; that fallback matches the geometry but not the exact glyph
rendering. Both draw only the embedded/shipped font files, never a system font.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from storyboard.layout.drawing import ImageOp, LineOp, PageDrawing, PathOp, RectOp, TextOp
from storyboard.layout.fonts import FontSpec


def pdftoppm_available() -> bool:
    return shutil.which("pdftoppm") is not None


def rasterize_pdf(
    pdf: Path, dpi: int, n_pages: int, *, tmp_dir: Path | None = None, chunk: int = 8
) -> Iterator[Image.Image]:
    """The PDF's pages as images, one at a time in page order; pdftoppm's scratch files go under
    tmp_dir (default: system temp).

    pdftoppm renders `chunk` pages per call (a page range), and the next range renders while the
    caller encodes this one, so memory and scratch space stay those of two ranges at any book length
    (one call for a 1,000-page book wrote 26 GB of scratch images at 300 dpi).
    """
    exe = shutil.which("pdftoppm")
    if exe is None:
        raise RuntimeError("pdftoppm is not installed")
    with tempfile.TemporaryDirectory(prefix="storyboard-ppm-", dir=tmp_dir) as tmp:
        starts = range(1, n_pages + 1, chunk)

        def start(first: int) -> tuple[subprocess.Popen[bytes], Path]:
            out = Path(tmp) / str(first)
            out.mkdir()
            last = min(first + chunk - 1, n_pages)
            # Raw PPM out: pdftoppm's own PNG encoder takes ~20 s for one 300-dpi page of detailed
            # art, and the pages are PNG-encoded once more anyway when written.
            cmd = [exe, "-r", str(dpi), "-f", str(first), "-l", str(last), str(pdf), f"{out}/p"]
            return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out

        running = start(starts[0]) if starts else None
        try:
            for k, first in enumerate(starts):
                assert running is not None
                proc, out = running
                _, err = proc.communicate()
                if proc.returncode != 0:
                    raise subprocess.CalledProcessError(proc.returncode, proc.args, stderr=err)
                running = start(starts[k + 1]) if k + 1 < len(starts) else None
                # pdftoppm pads page numbers to the width of the last one: p-1.ppm or p-01.ppm ...
                files = sorted(out.glob("p-*.ppm"), key=lambda p: int(p.stem.split("-")[-1]))
                expected = min(chunk, n_pages - first + 1)
                if len(files) != expected:
                    raise RuntimeError(
                        f"pdftoppm wrote {len(files)} pages from page {first}, expected {expected}"
                    )
                for f in files:
                    with Image.open(f) as im:
                        page = im.convert("RGB")
                    f.unlink()
                    yield page
                out.rmdir()  # one range's scratch at a time, whatever the book's length
        finally:
            # A caller that stops early (an error, Ctrl-C) leaves no pdftoppm writing into the folder.
            if running is not None and running[0].poll() is None:
                running[0].kill()
                running[0].wait()


def _rgb(c: tuple[float, float, float]) -> tuple[int, int, int]:
    return (round(c[0] * 255), round(c[1] * 255), round(c[2] * 255))


def _pil_font(font: FontSpec, px: float) -> ImageFont.FreeTypeFont:
    # Fractional sizes keep line widths true to the PDF metrics at low resolutions.
    return ImageFont.truetype(str(font.path), max(1.0, px))


def _turned_text(img: Image.Image, op: TextOp, origin: tuple[float, float], px: float) -> None:
    """Text turned by a multiple of 90 degrees: drawn upright on a mask, turned, pasted at the origin."""
    font = _pil_font(op.font, px)
    left, top, right, bottom = (round(v) for v in font.getbbox(op.text, anchor="ls"))
    mask = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ox, oy = 2 - left, 2 - top  # where the text origin lies on the mask
    ImageDraw.Draw(mask).text((ox, oy), op.text, font=font, fill=255, anchor="ls")
    turns = round(op.angle / 90) % 4
    for _ in range(turns):  # each turn is 90 degrees counter-clockwise: (x, y) -> (y, W - 1 - x)
        w = mask.width
        mask = mask.transpose(Image.Transpose.ROTATE_90)
        ox, oy = oy, w - 1 - ox
    colour = Image.new("RGB", mask.size, _rgb(op.fill))
    img.paste(colour, (round(origin[0] - ox), round(origin[1] - oy)), mask)


def paint_page(page: PageDrawing, dpi: int) -> Image.Image:
    s = dpi / 72.0
    w, h = round(page.width * s), round(page.height * s)
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)

    def pt(x: float, y: float) -> tuple[float, float]:
        return (x * s, (page.height - y) * s)

    for op in page.ops:
        if isinstance(op, ImageOp):
            r = op.rect
            x0, y0 = pt(r.x, r.y1)
            size = (max(1, round(r.w * s)), max(1, round(r.h * s)))
            img.paste(op.placed().resize(size, Image.Resampling.LANCZOS), (round(x0), round(y0)))
        elif isinstance(op, RectOp):
            r = op.rect
            x0, y0 = pt(r.x, r.y1)
            x1, y1 = pt(r.x1, r.y)
            draw.rectangle(
                (x0, y0, x1, y1),
                fill=_rgb(op.fill) if op.fill else None,
                outline=_rgb(op.stroke) if op.stroke else None,
                width=max(1, round(op.width * s)) if op.stroke else 0,
            )
        elif isinstance(op, PathOp):
            pts = [pt(*p) for p in op.points]
            draw.polygon(
                pts,
                fill=_rgb(op.fill) if op.fill else None,
                outline=_rgb(op.stroke) if op.stroke else None,
                width=max(1, round(op.width * s)) if op.stroke else 0,
            )
        elif isinstance(op, LineOp):
            draw.line([pt(*op.p0), pt(*op.p1)], fill=_rgb(op.color), width=max(1, round(op.width * s)))
        elif isinstance(op, TextOp) and op.angle:
            _turned_text(img, op, pt(op.x, op.baseline), op.size * s)
        elif isinstance(op, TextOp):
            draw.text(
                pt(op.x, op.baseline),
                op.text,
                font=_pil_font(op.font, op.size * s),
                fill=_rgb(op.fill),
                anchor="ls",
                stroke_width=round(0.6 * s) if op.outline else 0,
                stroke_fill=(0, 0, 0),
            )
    return img
