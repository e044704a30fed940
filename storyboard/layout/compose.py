"""Turn pages of panels into page drawings and panel placements (no file output here)."""

from __future__ import annotations

from storyboard.errors import StoryboardError
from storyboard.layout.drawing import (
    BLACK,
    WHITE,
    ImageOp,
    LineOp,
    Op,
    PageDrawing,
    RectOp,
    TextOp,
    open_panel_image,
)
from storyboard.layout.fonts import FontSet, string_width
from storyboard.layout.geometry import bleeds, fit_image, panel_rects, print_pixels
from storyboard.layout.lettering import LetteringStyle, letter_panel
from storyboard.layout.pagesize import MM, PageGeometry, page_geometry
from storyboard.layout.templates import Template, choose_template, get_template
from storyboard.layout.textblock import fit_block
from storyboard.layout.types import LayoutMeta, LayoutPage, LayoutSettings, PanelPlacement, Rect


def page_template(
    page: LayoutPage, sizes: list[tuple[int, int]], templates: dict[str, Template], geo: PageGeometry
) -> Template:
    n = len(page.panels)
    if page.template is None:
        return choose_template(n, [w / h for w, h in sizes], templates, live_aspect=geo.live.w / geo.live.h)
    tpl = get_template(page.template, templates)
    if tpl.n_panels != n:
        raise StoryboardError(
            f"page {page.number}: template {tpl.name!r} has {tpl.n_panels} panels but the page has {n}",
            hint="pick a template with that many panels, or leave `template` unset to choose automatically",
        )
    return tpl


def trim_mark_ops(geo: PageGeometry) -> list[Op]:
    """Corner marks in the slug, starting just outside the bleed so they never print on the page."""
    ops: list[Op] = []
    gap = geo.bleed.x - 1.0
    t = geo.trim
    for x in (t.x, t.x1):
        ops.append(LineOp((x, 0.0), (x, gap), 0.25))
        ops.append(LineOp((x, geo.media_h - gap), (x, geo.media_h), 0.25))
    for y in (t.y, t.y1):
        ops.append(LineOp((0.0, y), (gap, y), 0.25))
        ops.append(LineOp((geo.media_w - gap, y), (geo.media_w, y), 0.25))
    return ops


def _blank(geo: PageGeometry, settings: LayoutSettings) -> PageDrawing:
    drawing = PageDrawing(geo.media_w, geo.media_h, geo.trim, geo.bleed)
    drawing.ops.append(RectOp(Rect(0, 0, geo.media_w, geo.media_h), WHITE, None, 0))
    if settings.trim_marks:
        drawing.ops += trim_mark_ops(geo)
    return drawing


def compose_page(
    page: LayoutPage,
    pdf_index: int,
    settings: LayoutSettings,
    fonts: FontSet,
    templates: dict[str, Template],
    language: str,
) -> tuple[PageDrawing, list[PanelPlacement]]:
    geo = page_geometry(settings)
    if not page.panels:
        raise StoryboardError(f"page {page.number} has no panels")
    wheres = [f"page {page.number}, panel {p.id}" for p in page.panels]
    # Only the sizes now (a header read): the pixels are read when the page is drawn, one page at a time.
    sizes = []
    for p, where in zip(page.panels, wheres, strict=True):
        with open_panel_image(p.image, where) as img:
            sizes.append(img.size)
    tpl = page_template(page, sizes, templates, geo)
    rtl = settings.reading_direction == "rtl"
    rects = panel_rects(tpl, geo, settings.gutter_mm * MM, rtl)
    bleeding = bleeds(tpl, geo)
    drawing = _blank(geo, settings)
    style = LetteringStyle(settings.font_size_pt, language, rtl, settings.border_width_pt, settings.vertical)
    placements = []
    lettering_ops: list[Op] = []
    for panel, (w, h), rect, where in zip(page.panels, sizes, rects, wheres, strict=True):
        fit = fit_image(w, h, rect, settings.fit, panel.focus)
        drawing.ops.append(
            ImageOp(fit.dest, panel.image, fit.crop, print_pixels(fit.dest, settings.dpi), where)
        )
        if settings.border_width_pt > 0 and not bleeding:
            drawing.ops.append(RectOp(rect, None, BLACK, settings.border_width_pt))
        balloons, ops = letter_panel(panel, rect, fonts, style, where, safe=geo.live)
        lettering_ops += ops
        placements.append(PanelPlacement(page.number, pdf_index, panel.id, rect, fit.dest, tuple(balloons)))
    # Lettering last so a balloon that reaches over a gutter is never covered by the next panel.
    drawing.ops += lettering_ops
    # No folio on a full-bleed splash (it would sit on the art), as print comics do.
    if settings.page_numbers and settings.margin_mm >= 5 and not bleeding:
        label = str(page.number)
        font = fonts.regular
        size = min(8.0, settings.margin_mm * MM * 0.5)
        x = geo.trim.cx - string_width(label, font, size) / 2
        drawing.ops.append(TextOp(x, geo.live.y - size * 1.6, label, font, size))
    return drawing, placements


def compose_title_page(meta: LayoutMeta, settings: LayoutSettings, fonts: FontSet) -> PageDrawing:
    geo = page_geometry(settings)
    drawing = _blank(geo, settings)
    live = geo.live
    y = live.y + live.h * 0.62
    blocks: list[tuple[str, float, bool]] = [(meta.title, 30.0, True)]
    if meta.author:
        blocks.append((meta.author, 14.0, False))
    if meta.summary:
        blocks.append((meta.summary, 10.0, False))
    for text, size, bold in blocks:
        block = fit_block(
            text,
            fonts,
            meta.language,
            size,
            live.w * 0.8,
            live.h * 0.3,
            "the title page",
            shape=None,
            title=bold,
        )
        if block is None:
            raise StoryboardError(f"the title page text {text[:40]!r} is too long to fit on the page")
        ops, _ = block.draw(
            Rect(live.cx - block.width / 2, y - block.height, block.width, block.height), "center"
        )
        drawing.ops += ops
        y -= block.height + size * 1.5
    return drawing
