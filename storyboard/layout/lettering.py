"""Balloons, captions and sound effects for one panel: size, position, shape and tail.

Pure geometry: returns placements (what tests check) and drawing ops (what renderers draw).
A speech balloon is an ellipse whose inscribed rectangle holds the text block (the ellipse is the
block scaled by sqrt(2), which is exactly the smallest ellipse of that aspect around it); its tail
runs from the balloon centre straight toward the speaker, so the tip lies on that line.

Balloons are placed in dialogue order along the reading direction: each one sits lower than the one
before, or level with it and further along the line (right in ltr, left in rtl), so a reader meets
them in the order they are spoken; tails still point at their speakers. Balloons never overlap each
other or leave the panel: a panel whose dialogue cannot be placed that way is shrunk a little, then
reported with its id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from storyboard.errors import StoryboardError
from storyboard.layout.drawing import BLACK, WHITE, Op, PathOp, Point, RectOp
from storyboard.layout.fonts import FontSet
from storyboard.layout.textblock import Block, fit_block, must_fit, wants_vertical
from storyboard.layout.types import Balloon, BalloonPlacement, LayoutPanel, Rect

SQRT2 = math.sqrt(2.0)
PAD = 3.0  # points between text block and balloon inscribed rectangle
EDGE = 4.0  # keep balloons this far inside the panel frame
CLOUD_AMP = 0.08  # thought-balloon scallop depth, as a fraction of the smaller semi-axis
SFX_SCALE = 2.4
SHRINK = (1.0, 0.85, 0.72)  # lettering sizes tried, as fractions of the set size, before giving up


@dataclass(frozen=True)
class LetteringStyle:
    size: float
    language: str
    rtl: bool
    border: float
    vertical: bool | None = None  # None: Japanese lines of a Japanese book run vertically


class NoRoom(Exception):
    """The dialogue cannot be placed in reading order at this size."""


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


def reads_after(first: Rect, then: Rect, rtl: bool) -> bool:
    """Whether a reader meets `then` after `first`: its top is below three quarters of first's height
    (clearly lower, not a near tie the eye may take either way), or it is no higher than first and
    wholly further along the line."""
    if then.y1 <= first.y + 0.25 * first.h + 1e-6:
        return True
    further = then.x1 <= first.x + 1e-6 if rtl else then.x >= first.x1 - 1e-6
    return then.y1 <= first.y1 + 1e-6 and further


def _free_spot(
    w: float,
    h: float,
    want_cx: float,
    area: Rect,
    taken: list[Rect],
    before: list[Rect],
    rtl: bool,
    step: float = 3.0,
) -> Rect | None:
    """The highest free spot inside area, nearest the wanted x, read after every rect in before."""
    lo_x, hi_x = area.x, area.x1 - w
    if hi_x < lo_x - 1e-6 or h > area.h + 1e-6:
        return None
    cx0 = min(max(want_cx - w / 2, lo_x), hi_x)
    xs = sorted({min(max(cx0 + k * step, lo_x), hi_x) for k in range(-400, 401)}, key=lambda x: abs(x - cx0))
    y = area.y1 - h
    while y >= area.y - 1e-6:
        for x in xs:
            cand = Rect(x, y, w, h)
            if any(cand.overlaps(t.inset(-3.0)) for t in taken):  # keep 3 pt between balloons
                continue
            if all(reads_after(b, cand, rtl) for b in before):
                return cand
        y -= step
    return None


def _caption_ops(
    panel: LayoutPanel, area: Rect, fonts: FontSet, style: LetteringStyle, size: float, where: str
) -> tuple[list[BalloonPlacement], list[Op], list[Rect]]:
    """Caption boxes stacked from the reading-first top corner (vertical captions run along the top)."""
    caption = (panel.caption or "").strip()
    texts = ([caption] if caption else []) + [
        b.text for b in panel.balloons if b.kind == "caption" and b.text.strip()
    ]
    placements: list[BalloonPlacement] = []
    ops: list[Op] = []
    taken: list[Rect] = []
    y_top, x_edge = area.y1, area.x1 if style.rtl else area.x
    for text in texts:
        vertical = wants_vertical(text, style.language, style.vertical, None)
        if vertical:
            block = fit_block(
                text, fonts, style.language, size, area.w * 0.5, area.h * 0.6, where, vertical=True
            )
        else:
            block = fit_block(
                text, fonts, style.language, size, area.w * 0.85 - 2 * PAD, area.h * 0.4, where, shape=9.0
            )
        if block is None:
            block = must_fit(
                fit_block(text, fonts, style.language, size, area.w - 2 * PAD, area.h * 0.8, where),
                text,
                where,
            )
        w, h = block.width + 2 * PAD, block.height + 2 * PAD
        if block.vertical:  # side by side along the top edge, in reading order
            x = x_edge - w if style.rtl else x_edge
            box = Rect(x, area.y1 - h, w, h)
            x_edge = box.x - 2 if style.rtl else box.x1 + 2
        else:
            box = Rect(area.x1 - w if style.rtl else area.x, y_top - h, w, h)
            y_top = box.y - 2
        text_rect = box.inset(PAD)
        text_ops, lines = block.draw(text_rect, "left")
        taken.append(box)
        ops.append(RectOp(box, (1.0, 0.97, 0.82), BLACK, 0.8))
        ops += text_ops
        placements.append(
            BalloonPlacement(
                text, "caption", box, block.ink_rect(text_rect), block.stack.primary.name, block.size, lines
            )
        )
    return placements, ops, taken


def _sfx(
    bal: Balloon, speaker: Point, area: Rect, fonts: FontSet, style: LetteringStyle, size: float, where: str
) -> tuple[BalloonPlacement, list[Op]]:
    block = must_fit(
        fit_block(
            bal.text, fonts, style.language, size * SFX_SCALE, area.w * 0.9, area.h * 0.5, where, sfx=True
        ),
        bal.text,
        where,
    )
    w, h = block.width + 2, block.height + 2
    x = min(max(speaker[0] - w / 2, area.x), area.x1 - w)
    y = min(max(speaker[1] - h / 2, area.y), area.y1 - h)
    rect = Rect(x, y, w, h)
    text_rect = rect.inset(1)
    ops, lines = block.draw(text_rect, "center", (0.85, 0.1, 0.1), WHITE, 1.2)
    return BalloonPlacement(bal.text, "sfx", rect, text_rect, block.stack.primary.name, block.size, lines), [
        *ops
    ]


def _balloon_block(
    bal: Balloon, area: Rect, fonts: FontSet, style: LetteringStyle, size: float, where: str
) -> Block:
    grow = 1.0 + (2 * CLOUD_AMP if bal.kind == "thought" else 0.0)
    vertical = wants_vertical(bal.text, style.language, style.vertical, bal.vertical)
    for frac_w, frac_h in ((0.7, 0.55), (1.0, 1.0)):  # a crowded panel: let it use the whole panel
        max_w = (area.w * frac_w) / (SQRT2 * grow) - 2 * PAD
        max_h = (area.h * frac_h) / (SQRT2 * grow) - 2 * PAD
        block = fit_block(bal.text, fonts, style.language, size, max_w, max_h, where, vertical=vertical)
        if block is not None:
            return block
    return must_fit(None, bal.text, where)


def _dialogue(
    balloons: list[Balloon],
    frame: Rect,
    area: Rect,
    fonts: FontSet,
    style: LetteringStyle,
    size: float,
    where: str,
    taken: list[Rect],
) -> tuple[list[BalloonPlacement], list[Op]]:
    placements: list[BalloonPlacement] = []
    ops: list[Op] = []
    texts: list[Op] = []  # drawn after every shape, so no tail ever covers a letter
    taken = list(taken)
    spoken: list[Rect] = []  # speech and thought balloons so far, in dialogue order
    defaults = _default_speakers(balloons, style.rtl)
    for i, bal in enumerate(balloons):
        if bal.kind == "caption":
            continue
        rel = bal.speaker_at or defaults.get(i) or (0.5, 0.75)
        speaker = (frame.x + rel[0] * frame.w, frame.y1 - rel[1] * frame.h)
        if bal.kind == "sfx":
            placed, sfx_ops = _sfx(bal, speaker, area, fonts, style, size, where)
            placements.append(placed)
            ops += sfx_ops
            continue
        block = _balloon_block(bal, area, fonts, style, size, where)
        inner_w, inner_h = block.width + 2 * PAD, block.height + 2 * PAD
        a, b = inner_w / SQRT2, inner_h / SQRT2
        amp = CLOUD_AMP * min(a, b) * 2 if bal.kind == "thought" else 0.0
        bw, bh = 2 * (a + amp), 2 * (b + amp)
        rect = _free_spot(bw, bh, speaker[0], area, taken, spoken, style.rtl)
        if rect is None:
            raise NoRoom(bal.text)
        taken.append(rect)
        spoken.append(rect)
        cx, cy = rect.cx, rect.cy
        text_rect = Rect(cx - block.width / 2, cy - block.height / 2, block.width, block.height)
        text_ops, lines = block.draw(text_rect, "center")
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
        ops += text_ops
        placements.append(
            BalloonPlacement(
                bal.text,
                bal.kind,
                rect,
                block.ink_rect(text_rect),
                block.stack.primary.name,
                block.size,
                lines,
                tip,
                speaker,
            )
        )
    return placements, ops + texts


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
    balloons = [b for b in panel.balloons if b.text.strip()]  # an empty line draws nothing
    for factor in SHRINK:
        size = style.size * factor
        placements, ops, taken = _caption_ops(panel, area, fonts, style, size, where)
        try:
            more, dialogue_ops = _dialogue(balloons, frame, area, fonts, style, size, where, taken)
        except NoRoom:
            continue
        return placements + more, ops + dialogue_ops
    raise StoryboardError(
        f"{where}: its {len(balloons)} balloons do not fit in the panel in reading order without overlapping",
        hint="shorten or split the dialogue, move a line to the next panel, or give the panel more room",
    )
