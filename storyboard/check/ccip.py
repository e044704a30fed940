"""CCIP (deepghs/ccip_onnx, model ccip-caformer-24-randaug-pruned) over onnxruntime.

Facts from the published model folder and dghs-imgutils `metrics/ccip.py`, which loads it:
  * files `<model>/model_feat.onnx`, `<model>/model_metrics.onnx`, `<model>/metrics.json`;
  * feature model: input `input` Nx3x384x384 float, output `output` Nx768;
  * preprocessing: RGB (transparency over white), resize to 384x384 with PIL bilinear, no crop and no
    aspect ratio kept, /255, then CLIP's mean/std per channel, channels first;
  * metric model: input `input` Nx768 (a batch of features), output `output` NxN "differences";
  * metrics.json `threshold`: same character when the difference is at most 0.17847511429108218
    (F1 0.917 on their test set).
dghs-imgutils itself is not a dependency: it pins numpy<2 and pulls opencv and pandas.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from storyboard.check.backend import Features, normalized_mean
from storyboard.check.images import load_rgb
from storyboard.check.onnx_models import expect_shape, open_session, probe
from storyboard.errors import ModelError

MODEL = "ccip-caformer-24-randaug-pruned"
FILES = ("model_feat.onnx", "model_metrics.onnx", "metrics.json")
SIZE = 384
FEATURE_DIM = 768
PUBLISHED_THRESHOLD = 0.17847511429108218
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def preprocess(image: Image.Image, size: int = SIZE) -> NDArray[np.float32]:
    """3 x size x size float32, exactly as CCIP's features were computed when it was published."""
    resized = load_rgb(image).resize((size, size), resample=Image.Resampling.BILINEAR)
    data = np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0
    mean = np.asarray(CLIP_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(CLIP_STD, dtype=np.float32)[:, None, None]
    return ((data - mean) / std).astype(np.float32)


def read_threshold(path: Path) -> float:
    """The same-character threshold from a CCIP model's metrics.json ({"threshold": 0.178..., ...})."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(
            f"{path}: not valid JSON ({exc}); the file may be truncated.",
            hint=f"download it again with `storyboard models fetch check`, or delete it to use CCIP's "
            f"published threshold {PUBLISHED_THRESHOLD:.3f}",
        ) from None
    value = data.get("threshold") if isinstance(data, dict) else None
    if value is None:
        raise ModelError(
            f"{path}: no 'threshold' key; a CCIP metrics.json holds the model's same-character "
            f'threshold, e.g. {{"threshold": {PUBLISHED_THRESHOLD}}}.'
        )
    # bool is an int to Python; true is not a distance.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ModelError(f"{path}: 'threshold' is {value!r}; it should be a positive number such as 0.178.")
    return float(value)


@dataclass
class CcipBackend:
    feat: Any
    metric: Any
    default_threshold: float
    model_id: str = MODEL
    name: str = "ccip"
    batch: int = 8  # 384px caformer activations: 8 crops keep CPU memory near 2 GB

    @classmethod
    def open(cls, folder: Path, *, device: str = "auto") -> CcipBackend:
        """A model folder holding model_feat.onnx, model_metrics.onnx and metrics.json."""
        feat = open_session(folder / "model_feat.onnx", inputs=["input"], outputs=["output"], device=device)
        metric = open_session(
            folder / "model_metrics.onnx", inputs=["input"], outputs=["output"], device=device
        )
        shape = feat.get_inputs()[0].shape
        # Only fixed sizes that disagree are refused: an export may leave dims symbolic ('height').
        if len(shape) != 4 or any(
            isinstance(have, int) and have != want
            for have, want in zip(shape[1:], (3, SIZE, SIZE), strict=True)
        ):
            raise ModelError(f"{folder}: CCIP feature input is {shape}, expected Nx3x{SIZE}x{SIZE}.")
        # Two blank crops: proves the batch dimension is free (crops are embedded 8 at a time) and that
        # the metric model takes what the feature model gives.
        (feats,) = probe(
            feat, folder / "model_feat.onnx", {"input": np.zeros((2, 3, SIZE, SIZE), np.float32)}, ["output"]
        )
        expect_shape(folder / "model_feat.onnx", "the feature output", feats.shape, (2, None))
        (diff,) = probe(metric, folder / "model_metrics.onnx", {"input": feats}, ["output"])
        expect_shape(folder / "model_metrics.onnx", "the metric output for 2 features", diff.shape, (2, 2))
        metrics = folder / "metrics.json"
        threshold = read_threshold(metrics) if metrics.is_file() else PUBLISHED_THRESHOLD
        return cls(feat, metric, threshold, model_id=folder.name)

    def embed(self, images: list[Image.Image]) -> Features:
        rows = []
        for i in range(0, len(images), self.batch):
            data = np.stack([preprocess(im) for im in images[i : i + self.batch]])
            (out,) = self.feat.run(["output"], {"input": data})
            rows.append(np.asarray(out, dtype=np.float32))
        return np.concatenate(rows) if rows else np.zeros((0, FEATURE_DIM), np.float32)

    def distances(self, a: Features, b: Features) -> NDArray[np.float32]:
        if not len(a) or not len(b):
            return np.zeros((len(a), len(b)), np.float32)
        # The metric model scores a batch against itself; the a-vs-b block is what we want.
        (out,) = self.metric.run(["output"], {"input": np.concatenate([a, b]).astype(np.float32)})
        block = np.asarray(out, dtype=np.float32)[: len(a), len(a) :]
        return np.maximum(block, 0.0)  # float rounding gives -1e-7 for identical crops

    def prototype(self, feats: Features) -> Features:
        # The direction is the normalised mean; it is scaled back to the crops' typical length because
        # the metric model is learned and need not ignore feature length the way a cosine would.
        scale = float(np.linalg.norm(feats, axis=1).mean()) if len(feats) else 1.0
        return (normalized_mean(feats) * scale).astype(np.float32)
