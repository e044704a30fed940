"""People in a panel: deepghs' anime person detector (a YOLOv8 export) run with onnxruntime.

Facts taken from the published model and its reference code (dghs-imgutils `generic/yolo.py`):
  * repo deepghs/anime_person_detection, file `<model>/model.onnx`; imgutils' default model is
    person_detect_v1.1_m;
  * input `images` 1x3xHxW float RGB in [0, 1]; H, W from the metadata key `imgsz` (JSON [h, w]),
    640 when absent; the panel is resized to exactly that size (no letterbox);
  * output `output0` 1x(4+classes)xN: rows cx, cy, w, h then one score per class; class names from the
    metadata key `names`, a Python dict literal like "{0: 'person'}";
  * a box is kept when its best class score passes conf (0.3 for persons), then greedy NMS at IoU 0.5
    with the "+1" pixel areas of the reference code, then boxes are scaled back to the panel's size.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from storyboard.check.images import load_rgb
from storyboard.check.onnx_models import expect_shape, metadata, open_session, probe
from storyboard.check.types import Detection
from storyboard.errors import ModelError
from storyboard.models.nms import nms

INPUT = "images"
OUTPUT = "output0"


def parse_names(text: str) -> list[str]:
    """Class names from the `names` metadata; literal_eval only, so a model file cannot run code."""
    try:
        mapping = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise ModelError(f"Detector metadata 'names' is not a dict literal: {text[:80]!r}") from exc
    # Class i is row 4 + i of the output, so the keys must be exactly 0..n-1.
    if (
        not isinstance(mapping, dict)
        or not mapping
        or set(map(repr, mapping)) != set(map(repr, range(len(mapping))))
    ):
        raise ModelError(f"Detector metadata 'names' is not a dict of classes 0..n-1: {text[:80]!r}")
    return [str(mapping[i]) for i in range(len(mapping))]


def parse_imgsz(meta: dict[str, str]) -> tuple[int, int]:
    """(height, width) the model was exported for."""
    if "imgsz" not in meta:
        return 640, 640
    try:
        size = json.loads(meta["imgsz"])
    except json.JSONDecodeError:
        size = meta["imgsz"]
    if isinstance(size, int) and not isinstance(size, bool):
        size = [size, size]
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and 32 <= v <= 8192 for v in size)
    ):
        raise ModelError(
            f"Detector metadata 'imgsz' should be [height, width] in pixels, got {meta['imgsz'][:80]!r}"
        )
    return int(size[0]), int(size[1])


def preprocess(image: Image.Image, size_hw: tuple[int, int]) -> NDArray[np.float32]:
    """1x3xHxW float32 in [0, 1]; PIL's bicubic, which is what Image.resize defaults to for RGB."""
    h, w = size_hw
    resized = load_rgb(image).resize((w, h), resample=Image.Resampling.BICUBIC)
    arr = np.asarray(resized, dtype=np.float32) / 255.0
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[None])


def postprocess(
    output: NDArray[np.float32],
    *,
    labels: list[str],
    conf: float,
    iou: float,
    panel_size: tuple[int, int],
    infer_size: tuple[int, int],
) -> list[Detection]:
    """Boxes in panel pixels from one image's raw output ((4+classes) x N), best first."""
    if output.shape[0] != 4 + len(labels):
        raise ModelError(f"Detector output has {output.shape[0]} rows; expected 4 + {len(labels)} classes.")
    best = output[4:].max(axis=0)
    kept = output[:, best > conf].T
    if not kept.size:
        return []
    cx, cy, bw, bh = kept[:, 0], kept[:, 1], kept[:, 2], kept[:, 3]
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1).astype(np.float32)
    class_scores = kept[:, 4:]
    idx = nms(boxes, class_scores.max(axis=1), iou)
    (pw, ph), (iw, ih) = panel_size, infer_size
    sx, sy = pw / iw, ph / ih
    found = []
    for i in idx:
        bx = boxes[i]
        xs = np.clip(np.array([bx[0], bx[2]]) * sx, 0, pw).round().astype(int)
        ys = np.clip(np.array([bx[1], bx[3]]) * sy, 0, ph).round().astype(int)
        cls = int(class_scores[i].argmax())
        box = (int(xs[0]), int(ys[0]), int(xs[1]), int(ys[1]))
        found.append(Detection(box=box, score=float(class_scores[i, cls]), label=labels[cls]))
    return found


@dataclass
class YoloDetector:
    session: Any
    labels: list[str]
    size_hw: tuple[int, int]
    model_id: str
    conf: float = 0.3
    iou: float = 0.5
    label: str = "person"  # the class kept: "face" for the detailer's face detector

    @classmethod
    def open(
        cls, path: Path, *, device: str = "auto", model_id: str | None = None, label: str = "person"
    ) -> YoloDetector:
        session = open_session(path, inputs=[INPUT], outputs=[OUTPUT], device=device)
        meta = metadata(session)
        if "names" not in meta:
            raise ModelError(f"{path}: no 'names' metadata; is it an ultralytics YOLO export?")
        try:
            labels, size_hw = parse_names(meta["names"]), parse_imgsz(meta)
        except ModelError as exc:
            raise ModelError(f"{path}: {exc.message}", hint=exc.hint) from None
        if label not in labels:
            raise ModelError(f"{path}: the detector has no {label!r} class (classes: {', '.join(labels)}).")
        # One blank image of the exported size: the output must be 1 x (4 + classes) x boxes.
        (out,) = probe(session, path, {INPUT: np.zeros((1, 3, *size_hw), np.float32)}, [OUTPUT])
        expect_shape(path, "the output for one image", out.shape, (1, 4 + len(labels), None))
        return cls(session, labels, size_hw, model_id or path.parent.name, label=label)

    @property
    def name(self) -> str:
        return f"{self.model_id} (conf {self.conf:g}, IoU {self.iou:g})"

    @property
    def identity(self) -> str:
        """Everything that decides the boxes, for the embedding cache key."""
        return f"yolo:{self.model_id}:{self.size_hw}:{self.conf}:{self.iou}"

    def detect(self, image: Image.Image) -> list[Detection]:
        data = preprocess(image, self.size_hw)
        (out,) = self.session.run([OUTPUT], {INPUT: data})
        dets = postprocess(
            np.asarray(out[0], dtype=np.float32),
            labels=self.labels,
            conf=self.conf,
            iou=self.iou,
            panel_size=image.size,
            infer_size=(self.size_hw[1], self.size_hw[0]),
        )
        # Only people are characters (faces for the detailer); other classes are not used here.
        people = [d for d in dets if d.label == self.label and d.box[2] > d.box[0] and d.box[3] > d.box[1]]
        # Best first; equal scores left to right, so the order never depends on NMS tie-breaking.
        return sorted(people, key=lambda d: (-d.score, d.box[0], d.box[1]))
