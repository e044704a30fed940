"""Regional rendering geometry: Regional-Prompter-style splits, boxes, and the blend weights.

Pure functions over numbers and numpy (no torch, no files), so the story loader can check a split
while it validates and the planner can place characters without loading the render stack.

Coordinates are panel fractions with the origin at the top-left, x to the right and y down (the
same convention as ``speaker_at``). A box is ``(x0, y0, x1, y1)``.

Blend weights, per latent position, for R regions with masks m_i and base ratio b (Regional
Prompter's latent mode: each region's prediction gets ``(1 - b)`` of its mask, the shared prompt
gets ``b`` of it plus every place no region covers)::

    w_i    = (1 - b) * m_i
    w_base = b * c + (1 - c),    c = min(1, sum_i m_i)
    D      = sum_k w_k * D_k / sum_k w_k
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from storyboard.jobs import PanelJob

Box = tuple[float, float, float, float]
SplitKind = Literal["columns", "rows"]

_SPLIT = re.compile(r"^\s*(columns|rows)\s*(.*?)\s*$", re.IGNORECASE)


def parse_split(text: str) -> tuple[SplitKind, tuple[float, ...]]:
    """``"columns 1,1"`` / ``"rows 2,1"`` -> (kind, ratios); ratios default to equal parts later.

    >>> parse_split("columns 1,2")
    ('columns', (1.0, 2.0))
    >>> parse_split("Rows")
    ('rows', ())
    >>> parse_split("diagonal 1,1")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: a split is 'columns' or 'rows' with optional ratios, ... (got 'diagonal 1,1')
    """
    m = _SPLIT.match(text)
    if m is None:
        raise ValueError(
            "a split is 'columns' or 'rows' with optional ratios, e.g. 'columns 1,1' or 'rows 2,1' "
            f"(got {text!r})"
        )
    kind: SplitKind = "columns" if m.group(1).lower() == "columns" else "rows"
    rest = m.group(2)
    if not rest:
        return kind, ()
    try:
        ratios = tuple(float(part) for part in rest.split(","))
    except ValueError:
        msg = f"split ratios must be numbers separated by commas, e.g. '2,1' (got {rest!r})"
        raise ValueError(msg) from None
    if any(not np.isfinite(r) or r <= 0 for r in ratios):
        raise ValueError(f"split ratios must be positive numbers (got {rest!r})")
    return kind, ratios


def split_boxes(kind: SplitKind, ratios: Sequence[float], count: int, *, rtl: bool = False) -> list[Box]:
    """The boxes of a split, one per character in the order given.

    Columns follow the reading direction: left to right, or right to left for ``rtl`` (the first
    character listed is the first one a reader meets). Rows always go top to bottom. Empty
    ``ratios`` means equal parts.

    >>> split_boxes("columns", (), 2)
    [(0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)]
    >>> split_boxes("columns", (1, 3), 2, rtl=True)
    [(0.75, 0.0, 1.0, 1.0), (0.0, 0.0, 0.75, 1.0)]
    >>> split_boxes("rows", (2, 1, 1), 3)
    [(0.0, 0.0, 1.0, 0.5), (0.0, 0.5, 1.0, 0.75), (0.0, 0.75, 1.0, 1.0)]
    """
    parts = list(ratios) if ratios else [1.0] * count
    if len(parts) != count:
        raise ValueError(f"the split has {len(parts)} parts for {count} characters; give one ratio each")
    total = float(sum(parts))
    edges = [0.0]
    for p in parts:
        edges.append(edges[-1] + p / total)
    edges[-1] = 1.0  # no rounding gap at the far edge
    spans = list(zip(edges[:-1], edges[1:], strict=True))
    if kind == "rows":
        return [(0.0, a, 1.0, b) for a, b in spans]
    if rtl:
        return [(1.0 - b, 0.0, 1.0 - a, 1.0) for a, b in spans]
    return [(a, 0.0, b, 1.0) for a, b in spans]


def check_box(box: Sequence[float]) -> Box:
    """A box inside the panel with positive size, else ValueError saying what is wrong.

    >>> check_box([0, 0, 0.5, 1])
    (0.0, 0.0, 0.5, 1.0)
    >>> check_box([0.5, 0, 1.2, 1])
    Traceback (most recent call last):
    ...
    ValueError: box [0.5, 0.0, 1.2, 1.0] reaches outside the panel: every value must be between 0 and 1
    """
    if len(box) != 4:
        raise ValueError("a box is [x0, y0, x1, y1] as fractions of the panel, e.g. [0, 0, 0.5, 1]")
    x0, y0, x1, y1 = (float(v) for v in box)
    shown = f"[{x0}, {y0}, {x1}, {y1}]"
    if not all(0.0 <= v <= 1.0 for v in (x0, y0, x1, y1)):
        raise ValueError(f"box {shown} reaches outside the panel: every value must be between 0 and 1")
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {shown} is empty: x1 must be right of x0 and y1 below y0")
    return x0, y0, x1, y1


def _ramp(centers: NDArray[np.float64], lo: float, hi: float, feather: float) -> NDArray[np.float64]:
    """1 inside [lo, hi), 0 outside, with linear ramps of width ``feather`` centred on inner edges.

    An edge on the panel border gets no ramp: there is nothing beyond it to blend with, and a fade
    there would let the shared prompt leak in along the border."""
    out = np.ones_like(centers)
    for edge, sign in ((lo, 1.0), (hi, -1.0)):
        if edge in (0.0, 1.0) and (edge == 0.0) == (sign > 0):
            continue
        if feather <= 0:
            out *= (sign * (centers - edge) >= 0) if sign > 0 else (centers < edge)
        else:
            out *= np.clip(sign * (centers - edge) / feather + 0.5, 0.0, 1.0)
    return out


def box_mask(box: Box, height: int, width: int, feather: float = 0.0) -> NDArray[np.float32]:
    """A (height, width) mask of ``box`` sampled at cell centres; ``feather`` is the ramp width as a
    fraction of the panel's shorter side (0 = hard edges).

    >>> box_mask((0.0, 0.0, 0.5, 1.0), 1, 4).tolist()
    [[1.0, 1.0, 0.0, 0.0]]
    >>> box_mask((0.0, 0.0, 0.5, 1.0), 4, 4, feather=0.5)[0].tolist()
    [1.0, 0.75, 0.25, 0.0]
    """
    short = min(height, width)
    fx, fy = feather * short / width, feather * short / height
    xs = (np.arange(width, dtype=np.float64) + 0.5) / width
    ys = (np.arange(height, dtype=np.float64) + 0.5) / height
    x0, y0, x1, y1 = box
    mx = _ramp(xs, x0, x1, fx)
    my = _ramp(ys, y0, y1, fy)
    return (my[:, None] * mx[None, :]).astype(np.float32)


def blend_weights(
    boxes: Sequence[Box], height: int, width: int, *, feather: float, base_ratio: float
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """(regions (R, h, w), base (h, w)) weights at one latent size (see the module docstring).

    >>> w, base = blend_weights([(0, 0, 0.5, 1), (0.5, 0, 1, 1)], 1, 4, feather=0, base_ratio=0)
    >>> w.tolist(), base.tolist()
    ([[[1.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0, 1.0]]], [[0.0, 0.0, 0.0, 0.0]])
    >>> w, base = blend_weights([(0, 0, 0.5, 1)], 1, 4, feather=0, base_ratio=0.25)
    >>> w.tolist(), base.tolist()
    ([[[0.75, 0.75, 0.0, 0.0]]], [[0.25, 0.25, 1.0, 1.0]])
    """
    masks = np.stack([box_mask(b, height, width, feather) for b in boxes]).astype(np.float64)
    covered = np.minimum(1.0, masks.sum(axis=0))
    regions = (1.0 - base_ratio) * masks
    base = base_ratio * covered + (1.0 - covered)
    # Feathered neighbours sum to 1 only up to rounding; a 1e-16 remainder must not cost a UNet call.
    base[base < 1e-6] = 0.0
    return regions.astype(np.float32), base.astype(np.float32)


def dilate_box(box: Box, by: float) -> Box:
    """``box`` grown by ``by`` (a panel fraction) on every side, clipped to the panel.

    >>> dilate_box((0.25, 0.0, 0.5, 1.0), 0.0625)
    (0.1875, 0.0, 0.5625, 1.0)
    """
    x0, y0, x1, y1 = box
    return max(0.0, x0 - by), max(0.0, y0 - by), min(1.0, x1 + by), min(1.0, y1 + by)


def format_box(box: Box) -> str:
    """A box as infotext shows it: ``[x0 y0 x1 y1]`` with up to 4 decimals.

    >>> format_box((0.0, 0.0, 0.5, 1.0))
    '[0 0 0.5 1]'
    """
    return "[" + " ".join(_number(v) for v in box) + "]"


def split_ratios(boxes: Sequence[Box]) -> tuple[SplitKind, list[float]] | None:
    """The Regional Prompter split these boxes form (full-height columns left to right, or
    full-width rows top to bottom, tiling the panel), or None when they are free boxes.

    >>> split_ratios([(0.5, 0, 1, 1), (0, 0, 0.5, 1)])
    ('columns', [0.5, 0.5])
    >>> split_ratios([(0, 0, 0.4, 0.5)]) is None
    True
    """
    for kind, lo, hi, full in (("columns", 0, 2, (1, 3)), ("rows", 1, 3, (0, 2))):
        if not all(b[full[0]] == 0.0 and b[full[1]] == 1.0 for b in boxes):
            continue
        spans = sorted((b[lo], b[hi]) for b in boxes)
        if spans[0][0] != 0.0 or spans[-1][1] != 1.0:
            continue
        if all(abs(a[1] - b[0]) < 1e-9 for a, b in zip(spans, spans[1:], strict=False)):
            return ("columns" if kind == "columns" else "rows"), [round(b - a, 4) for a, b in spans]
    return None


def _number(v: float) -> str:
    return f"{v:.4f}".rstrip("0").rstrip(".") or "0"


def regional_infotext(job: PanelJob) -> dict[str, object]:
    """Infotext entries of a regional panel ({} for any other), in Regional Prompter's own keys so a
    WebUI user reads (and its PNG Info can send) the split, plus ``Regions``: each character's box.
    The prompt itself carries each region's words and LoRA tags, joined by ADDCOL/ADDROW/BREAK."""
    if not job.regions:
        return {}
    rs = job.settings.regional
    boxes = [r.box for r in job.regions]
    split = split_ratios(boxes)
    out: dict[str, object] = {"RP Active": True, "RP Divide mode": "Matrix" if split else "Mask"}
    if split is not None:
        out["RP Matrix submode"] = split[0].capitalize()
        out["RP Ratios"] = ",".join(_number(r) for r in split[1])
    out.update(
        {
            "RP Calc Mode": "Latent",
            "RP Base Ratios": rs.base_ratio,
            "RP Use Base": rs.base_ratio > 0 or split is None,
            "RP LoRA Stop Step": rs.lora_stop_step,
            "RP LoRA Hires Stop Step": rs.hires_lora_stop_step,
            "Regions": "; ".join(f"{r.character} {format_box(r.box)}" for r in job.regions),
            "Region feather": rs.feather,
        }
    )
    return out


def parse_regions(text: str) -> list[tuple[str, Box]]:
    """Inverse of the ``Regions`` infotext value.

    >>> parse_regions("iku [0 0 0.5 1]; haru [0.5 0 1 1]")
    [('iku', (0.0, 0.0, 0.5, 1.0)), ('haru', (0.5, 0.0, 1.0, 1.0))]
    """
    out: list[tuple[str, Box]] = []
    for item in text.split(";"):
        name, _, rest = item.strip().partition(" [")
        x0, y0, x1, y1 = (float(v) for v in rest.rstrip("]").split())
        out.append((name, (x0, y0, x1, y1)))
    return out


def bleed_ratio(with_a: NDArray[np.float64], without_a: NDArray[np.float64], box: Box) -> float:
    """The share of the pixel change (squared difference, summed over channels and pixels) between
    two renders that falls outside ``box`` grown by 1/16 of the panel width on every side: how much
    of what one character's LoRA does leaks outside that character's place.

    >>> a = np.zeros((4, 16, 3)); b = a.copy(); b[:, 0] = 1; b[:, 15] = 1
    >>> bleed_ratio(a, b, (0.0, 0.0, 0.5, 1.0))
    0.5
    """
    h, w = with_a.shape[:2]
    change = ((np.asarray(with_a, np.float64) - np.asarray(without_a, np.float64)) ** 2).sum(axis=-1)
    grow = 1 / 16
    x0, y0, x1, y1 = box
    # 1/16 of the width on every side, the vertical part converted to a fraction of the height.
    dx, dy = grow, grow * w / h
    inside = np.zeros((h, w), bool)
    r0, r1 = int(max(0.0, y0 - dy) * h), int(np.ceil(min(1.0, y1 + dy) * h))
    c0, c1 = int(max(0.0, x0 - dx) * w), int(np.ceil(min(1.0, x1 + dx) * w))
    inside[r0:r1, c0:c1] = True
    total = float(change.sum())
    return float(change[~inside].sum()) / total if total > 0 else 0.0
