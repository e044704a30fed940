"""Per-character scores: the prototype (main cluster), self and cross similarity, off-model flags."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from storyboard.check.types import ThresholdSource


def main_cluster(distances: NDArray[np.float32], threshold: float) -> list[int]:
    """Indices of the largest group of crops linked by distances within the threshold.

    Linking (connected components) rather than a centroid method because a handful of crops is all a
    comic has: a drifting panel forms its own small group and stays out of the prototype. When no two
    crops are close, no group is better than another and every crop is used. Ties go to the group that
    starts earliest in the story.
    """
    n = distances.shape[0]
    if n == 0:
        return []
    seen = [False] * n
    groups: list[list[int]] = []
    for start in range(n):
        if seen[start]:
            continue
        stack, group = [start], []
        seen[start] = True
        while stack:
            i = stack.pop()
            group.append(i)
            for j in range(n):
                if not seen[j] and i != j and distances[i, j] <= threshold:
                    seen[j] = True
                    stack.append(j)
        groups.append(sorted(group))
    best = max(groups, key=lambda g: (len(g), -g[0]))
    return list(range(n)) if len(best) == 1 and n > 1 else best


def self_similarity(distances: NDArray[np.float32]) -> float | None:
    """Mean pairwise similarity (1 - distance) among a character's crops; None with fewer than two."""
    n = distances.shape[0]
    if n < 2:
        return None
    iu = np.triu_indices(n, k=1)
    return float(1.0 - distances[iu].mean())


def cross_similarity(to_anchor: NDArray[np.float32]) -> float | None:
    """Mean similarity of the crops to the anchor (reference or prototype)."""
    return float(1.0 - to_anchor.mean()) if to_anchor.size else None


def threshold_for(
    character: float | None, story: float | None, backend_default: float, override: float | None = None
) -> tuple[float, ThresholdSource]:
    """The threshold a character is checked with, and where it came from: `check --threshold` wins over
    the character's own, which wins over the story's, which wins over the backend's.

    >>> threshold_for(0.1, 0.2, 0.3)
    (0.1, 'character')
    >>> threshold_for(0.1, 0.2, 0.3, override=0.05)
    (0.05, '--threshold')
    """
    if override is not None:
        return override, "--threshold"
    if character is not None:
        return character, "character"
    if story is not None:
        return story, "story"
    return backend_default, "backend default"
