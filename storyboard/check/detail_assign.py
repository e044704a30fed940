"""Whose face is it: the face detailer's detections given to the panel's characters, by the check's
own assignment (``check/assign.py``: Hungarian over identity distance plus the regional prior).

    one character       the best detection is theirs (no region or identity needed)
    regions             the region prior decides where there is no identity; a detection whose
                        centre lies a full falloff (a quarter of the panel) outside the region of
                        the character it would get matches nobody
    identity distances  (the check's models, when present; in units of the backend's threshold)
                        added to the prior exactly as `storyboard check` adds them; a pair farther
                        than the threshold matches nobody
    check's models      with CCIP in the HF cache (`storyboard models fetch check`) and
                        `references` for the panel's characters, ``assign_by_identity`` runs the
                        check's own ``assign_crops`` on the face crops
    neither             with two or more characters, nobody can be told apart: every detection
                        is left alone (and reported)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from storyboard.check.assign import REGION_WEIGHT, assign, region_prior
from storyboard.check.backend import Backend
from storyboard.check.cache import Crops
from storyboard.check.run import Anchor, assign_crops
from storyboard.check.types import FracBox

Box = tuple[int, int, int, int]


def assign_faces(
    boxes: Sequence[Box],
    size: tuple[int, int],
    characters: Sequence[str],
    regions: Mapping[str, FracBox],
    distances: NDArray[np.float32] | None = None,
) -> list[str | None]:
    """The character of each box (best detection first), None where it matches nobody.

    >>> assign_faces([(0, 0, 10, 10), (40, 0, 50, 10)], (64, 64), ["a", "b"],
    ...              {"a": (0.5, 0, 1, 1), "b": (0, 0, 0.5, 1)})
    ['b', 'a']
    >>> assign_faces([(0, 0, 10, 10), (40, 0, 50, 10)], (64, 64), ["a"], {})
    ['a', None]
    >>> assign_faces([(0, 0, 10, 10)], (64, 64), ["a", "b"], {})
    [None]
    """
    out: list[str | None] = [None] * len(boxes)
    if not boxes or not characters:
        return out
    arr = np.asarray(boxes, dtype=np.int64).reshape(len(boxes), 4)
    prior = region_prior(arr, size, characters, regions)
    if distances is None and prior is None and len(characters) > 1:
        return out
    dist = np.zeros((len(boxes), len(characters)), np.float32) if distances is None else distances
    weight = 1.0 if distances is None else REGION_WEIGHT
    for col, row in assign(dist, prior, weight).items():
        if prior is not None and distances is None and prior[row, col] >= 1.0:
            continue  # far outside the region of the only character it could be
        if distances is not None and distances[row, col] > 1.0:
            continue  # not this character by identity
        out[row] = characters[col]
    return out


def assign_by_identity(
    image: Image.Image,
    boxes: Sequence[Box],
    scores: Sequence[float],
    characters: Sequence[str],
    regions: Mapping[str, FracBox],
    backend: Backend,
    anchors: Mapping[str, Anchor],
) -> list[str | None]:
    """`storyboard check`'s own assignment (``run.assign_crops``: identity to each character's
    anchor, plus the region prior) over the detector's boxes; a pair farther than the backend's
    threshold matches nobody."""
    out: list[str | None] = [None] * len(boxes)
    if not boxes or not characters:
        return out
    arr = np.asarray(boxes, dtype=np.int64).reshape(len(boxes), 4)
    feats = backend.embed([image.crop((int(b[0]), int(b[1]), int(b[2]), int(b[3]))) for b in arr])
    crops = Crops(arr, np.asarray(scores, np.float32), feats, whole=False)
    full = {c: anchors.get(c, Anchor("none", np.zeros((0, 0), np.float32))) for c in characters}
    pairs, dist = assign_crops(crops, list(characters), full, backend, regions, image.size)
    for cid, row in pairs.items():
        if dist[row, list(characters).index(cid)] <= backend.default_threshold:
            out[row] = cid
    return out
