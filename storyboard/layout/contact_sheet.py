"""A contact sheet: several renders of one panel side by side, each labelled with its seed."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from storyboard.layout.fonts import FONT_DIR, SHIPPED


@lru_cache(maxsize=4)
def _font(size: int) -> ImageFont.FreeTypeFont:
    # The shipped lettering face: a sheet looks the same on every machine, fonts installed or not.
    return ImageFont.truetype(str(FONT_DIR / SHIPPED["comic-bold"]), size)


def contact_sheet(items: list[tuple[str, Path]], *, title: str = "", thumb_width: int = 320) -> Image.Image:
    thumbs = []
    for label, path in items:
        with Image.open(path) as src:
            im = src.convert("RGB")
        h = round(im.height * thumb_width / im.width)
        thumbs.append((label, im.resize((thumb_width, h), Image.Resampling.LANCZOS)))
    cols = min(4, max(1, len(thumbs)))
    rows = math.ceil(len(thumbs) / cols)
    cell_h = max(t.height for _, t in thumbs) + 28
    pad, head = 8, 36 if title else 0
    sheet = Image.new("RGB", (cols * (thumb_width + pad) + pad, head + rows * (cell_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((pad, 8), title, fill="black", font=_font(20))
    for i, (label, t) in enumerate(thumbs):
        x = pad + (i % cols) * (thumb_width + pad)
        y = head + pad + (i // cols) * (cell_h + pad)
        sheet.paste(t, (x, y))
        draw.text((x + 4, y + t.height + 4), label, fill="black", font=_font(16))
    return sheet
