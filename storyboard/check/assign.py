"""Which detection is which character: Hungarian assignment on identity distance (plus, for regional
panels, a prior from where each character was asked to be), and OCCM."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from storyboard.check.types import FracBox

OCCM_EPS = 1e-6

# The regional prior, in units of the backend's threshold, at full strength (a detection centre a
# quarter of the panel or more outside the character's region). Half a threshold per character means:
# with two characters whose regions are both wrong, position overturns identity only when identity
# prefers its pairing by less than one threshold in total, less than what separates "same character"
# from "different character" for a single crop. So a clear identity (a crop on-model for one character
# and well off-model for the other) still wins over a wrong region, while near-ties (two characters who
# look alike, characters with no anchor, crops equally far from both) go to the region.
REGION_WEIGHT = 0.5
# Regional prompting pulls a figure toward its region without fencing it in; figures often straddle
# a column boundary. So the cost grows with how far the centre lies outside, full at this distance
# (panel fractions), instead of jumping at the edge.
REGION_FALLOFF = 0.25


def occm(detected: int, expected: int, eps: float = OCCM_EPS) -> float:
    """ViStoryBench's on-stage character count matching: 100 * exp(-|D - E| / (eps + E)).

    100 when the count is right; with nobody expected, any detection drives it to ~0 (eps keeps the
    division defined).
    """
    return 100.0 * math.exp(-abs(detected - expected) / (eps + expected))


def hungarian(cost: NDArray[np.float64]) -> list[tuple[int, int]]:
    """Minimum-cost one-to-one pairs (row, col) of a rectangular cost matrix; min(rows, cols) pairs."""
    if cost.size == 0:
        return []
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]


def assign(
    distances: NDArray[np.float32], prior: NDArray[np.float32] | None = None, prior_weight: float = 1.0
) -> dict[int, int]:
    """Character column -> detection row, from a detections x characters distance matrix.

    `prior` (same shape; 0 where a detection sits in the character's region, larger elsewhere) is for
    regional prompting: once panels have regions, position breaks ties that identity alone cannot.
    Characters left without a detection (fewer detections than characters) are absent from the result.
    """
    cost = distances.astype(np.float64)
    if prior is not None:
        cost = cost + prior_weight * prior.astype(np.float64)
    return {c: r for r, c in hungarian(cost)}


def centre_outside(box: tuple[int, int, int, int], size: tuple[int, int], region: FracBox) -> float:
    """How far (panel fractions, Euclidean) the centre of a pixel box lies outside a region; 0 inside.

    >>> centre_outside((0, 0, 64, 256), (256, 256), (0.0, 0.0, 0.5, 1.0))
    0.0
    >>> centre_outside((192, 0, 256, 256), (256, 256), (0.0, 0.0, 0.5, 1.0))
    0.375
    """
    cx = (box[0] + box[2]) / 2 / max(1, size[0])
    cy = (box[1] + box[3]) / 2 / max(1, size[1])
    dx = max(region[0] - cx, 0.0, cx - region[2])
    dy = max(region[1] - cy, 0.0, cy - region[3])
    return math.hypot(dx, dy)


def region_prior(
    boxes: NDArray[np.int64],
    size: tuple[int, int],
    expected: Sequence[str],
    regions: Mapping[str, FracBox],
    falloff: float = REGION_FALLOFF,
) -> NDArray[np.float32] | None:
    """Detections x expected characters, 0 where the detection's centre is in the character's region,
    rising to 1 at `falloff` outside it; 0 for characters without a region. None when no expected
    character has a region (the assignment is then identity alone, exactly as without regions)."""
    if not any(c in regions for c in expected):
        return None
    prior = np.zeros((len(boxes), len(expected)), np.float32)
    for col, cid in enumerate(expected):
        region = regions.get(cid)
        if region is None:
            continue
        for row, b in enumerate(boxes):
            box = (int(b[0]), int(b[1]), int(b[2]), int(b[3]))
            prior[row, col] = min(1.0, centre_outside(box, size, region) / falloff)
    return prior
