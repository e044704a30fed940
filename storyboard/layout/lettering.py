"""Balloons, captions and sound effects for one panel: size, position, shape and tail.

Pure geometry: returns placements (what tests check) and drawing ops (what renderers draw).
A speech balloon is an ellipse whose inscribed rectangle holds the text block (the ellipse is the
block scaled by sqrt(2), which is exactly the smallest ellipse of that aspect around it); its tail
runs from the balloon centre straight toward the speaker, so the tip lies on that line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from storyboard.errors import StoryboardError
from storyboard.layout.drawing import BLACK, WHITE, Op, PathOp, Point, RectOp, TextOp
from storyboard.layout.fonts import FontSet, FontSpec, font_for
from storyboard.layout.textfit import FittedText, fit_text
from storyboard.layout.types import Balloon, BalloonPlacement, LayoutPanel, Rect, TextLine

SQRT2 = math.sqrt(2.0)
PAD = 3.0  # points between text block and balloon inscribed rectangle
EDGE = 4.0  # keep balloons this far inside the panel frame
CLOUD_AMP = 0.08  # thought-balloon scallop depth, as a fraction of the smaller semi-axis
SFX_SCALE = 2.4


@dataclass(frozen=True)
class LetteringStyle:
    size: float
    language: str
    rtl: bool
    border: float


def _lines(fitted: FittedText, text_rect: Rect, align: str) -> tuple[TextLine, ...]:
    out = []
    top = text_rect.y1
    for i, (line, w) in enumerate(zip(fitted.lines, fitted.widths, strict=True)):
        x = text_rect.x if align == "left" else text_rect.cx - w / 2
        out.append(TextLine(line, x, top - fitted.ascent - i * fitted.line_height, w))
    return tuple(out)


def _fit(text: str, font: FontSpec, size: float, max_w: float, max_h: float, where: str) -> FittedText:
    fitted = fit_text(text, font, size, max_w, max_h)
    if fitted is None:
        raise StoryboardError(
            f"{where}: the text {text[:40]!r}{'...' if len(text) > 40 else ''} does not fit its panel "
            "even at 4 pt",
            hint="shorten the line, split it into two balloons, or give the panel more room",
        )
    return fitted


def ellipse_points(cx: float, cy: float, a: float, b: float, t0: float, t1: float, n: int) -> list[Point]:
    return [
        (cx + a * math.cos(t0 + (t1 - t0) * i / n), cy + b * math.sin(t0 + (t1 - t0) * i / n))
        for i in range(n + 1)
    ]


def cloud_points(cx: float, cy: float, a: float, b: float, amp: float) -> list[Point]:
    """An ellipse with outward scallops: |sin| bumps along the normal, cusps pointing inward."""
    bumps = max(8, round(math.pi * (a + b) / 11.0))  # one scallop per ~11 pt of outline
    pts = []
    n = bumps * 12
    for i in range(n):
        t = 2 * math.pi * i / n
        nx, ny = b * math.cos(t), a * math.sin(t)
        norm = math.hypot(nx, ny) or 1.0
        bump = amp * abs(math.sin(bumps * t / 2))
        pts.append((cx + a * math.cos(t) + nx / norm * bump, cy + b * math.sin(t) + ny / norm * bump))
    return pts


def _tail(
    cx: float, cy: float, a: float, b: float, speaker: Point, panel: Rect
) -> tuple[float, Point, Point]:
    """Ellipse parameter where the tail leaves, the edge point, and the tip (on the line to speaker)."""
    dx, dy = speaker[0] - cx, speaker[1] - cy
    dist = math.hypot(dx, dy)
    if dist < 1e-6:
        dx, dy, dist = 0.0, -1.0, 1.0
    ux, uy = dx / dist, dy / dist
    t_edge = 1.0 / math.sqrt((ux / a) ** 2 + (uy / b) ** 2)
    edge = (cx + ux * t_edge, cy + uy * t_edge)
    # Point at the speaker but stop well short of them, as letterers do: about half the way there.
    length = min(max(0.5 * (dist - t_edge), 8.0), 0.15 * min(panel.w, panel.h) + 8.0, 45.0)
    # Keep the tip inside the panel (shorten along the same line, never bend it).
    for axis_pos, axis_u, lo, hi in ((edge[0], ux, panel.x, panel.x1), (edge[1], uy, panel.y, panel.y1)):
        if axis_u > 1e-9:
            length = min(length, (hi - 2 - axis_pos) / axis_u)
        elif axis_u < -1e-9:
            length = min(length, (lo + 2 - axis_pos) / axis_u)
    length = max(length, 0.0)
    tip = (edge[0] + ux * length, edge[1] + uy * length)
    theta = math.atan2(uy * t_edge / b, ux * t_edge / a)
    return theta, edge, tip


def _default_speakers(balloons: list[Balloon], rtl: bool) -> dict[int, tuple[float, float]]:
    """Speakers without a position are spread across the panel in reading order, at mid height."""
    names: list[str] = []
    idx_name: dict[int, str] = {}
    for i, bal in enumerate(balloons):
        if bal.kind in ("speech", "thought") and bal.speaker_at is None:
            name = bal.speaker or f"#{i}"
            if name not in names:
                names.append(name)
            idx_name[i] = name
    out = {}
    for i, name in idx_name.items():
        k = names.index(name)
        x = (k + 1) / (len(names) + 1)
        out[i] = (1 - x if rtl else x, 0.6)
    return out


def _free_spot(w: float, h: float, want_cx: float, area: Rect, taken: list[Rect], step: float = 3.0) -> Rect:
    """First free spot scanning down from the top, nearest the wanted x first; top if all taken."""
    lo_x, hi_x = area.x, area.x1 - w
    cx0 = min(max(want_cx - w / 2, lo_x), max(lo_x, hi_x))
    y = area.y1 - h
    offsets = [0.0]
    for k in range(1, 30):
        offsets += [k * step * 2, -k * step * 2]
    while y >= area.y - 1e-6:
        for off in offsets:
            x = cx0 + off
            if x < lo_x - 1e-6 or x > hi_x + 1e-6:
                continue
            cand = Rect(x, y, w, h)
            if not any(cand.overlaps(t.inset(-3.0)) for t in taken):  # keep 3 pt between balloons
                return cand
        y -= step
    return Rect(cx0, area.y1 - h, w, h)


def letter_panel(
    panel: LayoutPanel,
    frame: Rect,
    fonts: FontSet,
    style: LetteringStyle,
    where: str,
    safe: Rect | None = None,
) -> tuple[list[BalloonPlacement], list[Op]]:
    """Letter one panel. frame is the panel (speaker positions are relative to it); lettering stays
    inside safe as well, the live area, so text on a full-bleed splash is never trimmed off."""
    area = frame.inset(EDGE + style.border / 2)
    if safe is not None:
        x0, y0 = max(area.x, safe.x + EDGE), max(area.y, safe.y + EDGE)
        x1, y1 = min(area.x1, safe.x1 - EDGE), min(area.y1, safe.y1 - EDGE)
        area = Rect(x0, y0, x1 - x0, y1 - y0)
    placements: list[BalloonPlacement] = []
    ops: list[Op] = []
    taken: list[Rect] = []
    balloons = [b for b in panel.balloons if b.text.strip()]  # an empty line draws nothing
    caption = (panel.caption or "").strip()
    captions = ([Balloon(caption, kind="caption")] if caption else []) + [
        b for b in balloons if b.kind == "caption"
    ]
    size = style.size

    # Captions: boxes stacked down from the reading-first top corner.
    y_top = area.y1
    for cap in captions:
        font = font_for(cap.text, fonts, style.language)
        fitted = fit_text(cap.text, font, size, area.w * 0.85 - 2 * PAD, area.h * 0.4, shape=9.0)
        if fitted is None:
            fitted = _fit(cap.text, font, size, area.w - 2 * PAD, area.h * 0.8, where)
        w, h = fitted.width + 2 * PAD, fitted.height + 2 * PAD
        x = area.x1 - w if style.rtl else area.x
        box = Rect(x, y_top - h, w, h)
        y_top = box.y - 2
        text_rect = box.inset(PAD)
        lines = _lines(fitted, text_rect, "left")
        taken.append(box)
        ops.append(RectOp(box, (1.0, 0.97, 0.82), BLACK, 0.8))
        ops += [TextOp(ln.x, ln.baseline, ln.text, font, fitted.size) for ln in lines]
        placements.append(
            BalloonPlacement(cap.text, "caption", box, text_rect, font.name, fitted.size, lines)
        )

    defaults = _default_speakers(balloons, style.rtl)
    for i, bal in enumerate(balloons):
        if bal.kind == "caption":
            continue
        rel = bal.speaker_at or defaults.get(i) or (0.5, 0.75)
        speaker = (frame.x + rel[0] * frame.w, frame.y1 - rel[1] * frame.h)
        if bal.kind == "sfx":
            font = font_for(bal.text, fonts, style.language, bold=True)
            fitted = _fit(bal.text, font, size * SFX_SCALE, area.w * 0.9, area.h * 0.5, where)
            w, h = fitted.width + 2, fitted.height + 2
            x = min(max(speaker[0] - w / 2, area.x), area.x1 - w)
            y = min(max(speaker[1] - h / 2, area.y), area.y1 - h)
            rect = Rect(x, y, w, h)
            text_rect = rect.inset(1)
            lines = _lines(fitted, text_rect, "center")
            ops += [
                TextOp(ln.x, ln.baseline, ln.text, font, fitted.size, (0.85, 0.1, 0.1), WHITE, 1.2)
                for ln in lines
            ]
            placements.append(
                BalloonPlacement(bal.text, "sfx", rect, text_rect, font.name, fitted.size, lines)
            )
            continue

        font = font_for(bal.text, fonts, style.language)
        grow = 1.0 + (2 * CLOUD_AMP if bal.kind == "thought" else 0.0)
        max_w = (area.w * 0.7) / (SQRT2 * grow) - 2 * PAD
        max_h = (area.h * 0.55) / (SQRT2 * grow) - 2 * PAD
        fitted = fit_text(bal.text, font, size, max_w, max_h)
        if fitted is None:  # crowded panel: let this balloon use the whole panel before giving up
            max_w = area.w / (SQRT2 * grow) - 2 * PAD
            max_h = area.h / (SQRT2 * grow) - 2 * PAD
            fitted = _fit(bal.text, font, size, max_w, max_h, where)
        inner_w, inner_h = fitted.width + 2 * PAD, fitted.height + 2 * PAD
        a, b = inner_w / SQRT2, inner_h / SQRT2
        amp = CLOUD_AMP * min(a, b) * 2 if bal.kind == "thought" else 0.0
        bw, bh = 2 * (a + amp), 2 * (b + amp)
        rect = _free_spot(bw, bh, speaker[0], area, taken)
        taken.append(rect)
        cx, cy = rect.cx, rect.cy
        text_rect = Rect(cx - fitted.width / 2, cy - fitted.height / 2, fitted.width, fitted.height)
        lines = _lines(fitted, text_rect, "center")
        theta, edge, tip = _tail(cx, cy, a, b, speaker, frame.inset(style.border / 2))
        if bal.kind == "speech":
            delta = min(0.4, max(0.2, 9.0 / max(a, b)))  # tail base about 10-18 pt wide
            outline = ellipse_points(cx, cy, a, b, theta + delta, theta - delta + 2 * math.pi, 96)
            outline.append(tip)
            ops.append(PathOp(tuple(outline), WHITE, BLACK, 0.9))
        else:
            ops.append(PathOp(tuple(cloud_points(cx, cy, a, b, amp)), WHITE, BLACK, 0.9))
            # Thought bubbles: three shrinking circles from the edge toward the thinker.
            for k, r in enumerate((3.2, 2.3, 1.5)):
                f = (k + 0.6) / 3.2
                px, py = edge[0] + (tip[0] - edge[0]) * f, edge[1] + (tip[1] - edge[1]) * f
                ops.append(PathOp(tuple(ellipse_points(px, py, r, r, 0, 2 * math.pi, 24)), WHITE, BLACK, 0.7))
        ops += [TextOp(ln.x, ln.baseline, ln.text, font, fitted.size) for ln in lines]
        placements.append(
            BalloonPlacement(bal.text, bal.kind, rect, text_rect, font.name, fitted.size, lines, tip, speaker)
        )
    return placements, ops
