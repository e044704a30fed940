"""Regional rendering: masks and blend weights over the boxes the planner placed (the geometry of
splits and boxes is ``storyboard.story.regions``, reaching render through ``storyboard.jobs``).

Pure functions over numbers and numpy (no torch, no files).

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

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from storyboard.jobs import Box, PanelJob, format_box, split_ratios
from storyboard.prompt.extra_networks import format_number


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


def regional_infotext(job: PanelJob) -> dict[str, object]:
    """Infotext entries of a regional panel ({} for any other), in Regional Prompter's own keys so a
    WebUI user reads (and its PNG Info can send) the split, plus ``Regions``: each character's box,
    ``Region feather`` and ``Region negative LoRAs`` (``render.regional.negative_loras``).
    The prompt itself carries each region's words and LoRA tags, joined by ADDCOL/ADDROW/BREAK."""
    if not job.regions:
        return {}
    rs = job.settings.regional
    boxes = [r.box for r in job.regions]
    split = split_ratios(boxes)
    out: dict[str, object] = {"RP Active": True, "RP Divide mode": "Matrix" if split else "Mask"}
    if split is not None:
        out["RP Matrix submode"] = split[0].capitalize()
        out["RP Ratios"] = ",".join(format_number(r) for r in split[1])
    out.update(
        {
            "RP Calc Mode": "Latent",
            "RP Base Ratios": rs.base_ratio,
            "RP Use Base": rs.base_ratio > 0 or split is None,
            "RP LoRA Stop Step": rs.lora_stop_step,
            "RP LoRA Hires Stop Step": rs.hires_lora_stop_step,
            "Regions": "; ".join(f"{r.character} {format_box(r.box)}" for r in job.regions),
            "Region feather": rs.feather,
            # Not a Regional Prompter key: it always runs the negative prompt under the shared set.
            "Region negative LoRAs": rs.negative_loras,
        }
    )
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
