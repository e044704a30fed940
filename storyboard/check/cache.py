"""Per-image detections and crop features, cached by the image's content hash.

The key covers the image bytes, the backend's weights and the detector's settings, so a rerolled
panel (new bytes) is embedded again and every unchanged panel is read from here.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from storyboard.writes import atomic_write_bytes


@dataclass(frozen=True)
class Crops:
    """What one image yields: boxes (k x 4, panel pixels), detector scores, and a feature row per box."""

    boxes: NDArray[np.int64]
    scores: NDArray[np.float32]
    feats: NDArray[np.float32]
    whole: bool  # no detector: a single box covering the image


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class FeatureCache:
    def __init__(self, root: Path | None) -> None:
        self.root = root

    def _path(self, image_sha: str, key: str) -> Path | None:
        if self.root is None:
            return None
        digest = hashlib.sha256(f"{image_sha}\x00{key}".encode()).hexdigest()
        return self.root / digest[:2] / f"{digest}.npz"

    def get(self, image_sha: str, key: str) -> Crops | None:
        path = self._path(image_sha, key)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path) as z:
                return Crops(z["boxes"], z["scores"], z["feats"], bool(z["whole"]))
        except (OSError, ValueError, KeyError):
            return None  # a damaged entry is recomputed, never trusted

    def put(self, image_sha: str, key: str, crops: Crops) -> None:
        path = self._path(image_sha, key)
        if path is None:
            return
        buf = io.BytesIO()
        np.savez(buf, boxes=crops.boxes, scores=crops.scores, feats=crops.feats, whole=np.array(crops.whole))
        atomic_write_bytes(path, buf.getvalue())
