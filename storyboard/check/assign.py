"""Which detection is which character: Hungarian assignment on identity distance, and OCCM."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

OCCM_EPS = 1e-6


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
