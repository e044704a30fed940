"""What an identity backend is: images in, features out, and a distance between features."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from storyboard.check.types import Detection

Features = NDArray[np.float32]


class Backend(Protocol):
    name: str  # "ccip" or "clip"
    model_id: str  # names the weights; part of the embedding cache key
    default_threshold: float  # distance above which a crop is a different character

    def embed(self, images: list[Image.Image]) -> Features:
        """One feature row per image."""
        ...

    def distances(self, a: Features, b: Features) -> NDArray[np.float32]:
        """len(a) x len(b) identity distances: about 0 for the same character."""
        ...

    def prototype(self, feats: Features) -> Features:
        """One feature row standing for several crops of one character (1 x D)."""
        ...


def l2_normalize(x: NDArray[np.float32]) -> NDArray[np.float32]:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    out: NDArray[np.float32] = (x / np.maximum(norm, 1e-12)).astype(np.float32)
    return out


def cosine_distances(a: Features, b: Features) -> NDArray[np.float32]:
    """1 - cosine similarity, clipped to [0, 2] against rounding."""
    d = 1.0 - l2_normalize(a) @ l2_normalize(b).T
    out: NDArray[np.float32] = np.clip(d, 0.0, 2.0).astype(np.float32)
    return out


def normalized_mean(feats: Features) -> Features:
    """The prototype: mean of the unit vectors, renormalised (the issue's 'normalised mean')."""
    return l2_normalize(l2_normalize(feats).mean(axis=0, keepdims=True))


class Detector(Protocol):
    @property
    def identity(self) -> str:
        """Model and settings: part of the cache key."""
        ...

    @property
    def name(self) -> str:
        """For people: the model and its thresholds."""
        ...

    def detect(self, image: Image.Image) -> list[Detection]:
        """People in the image, best first, boxes in image pixels."""
        ...
