"""A stand-in for deepghs' anime face detector (``face_detect_v1.4_s``), for tests and benches.

It keeps what the loader relies on from the real file: input `images` 1x3x640x640, output `output0`
1x5x8400 (cx, cy, w, h, face score per anchor), ultralytics metadata (`names` {0: 'face'}, `imgsz`).
Its boxes are given when it is written ("known boxes"), so a test knows what it will find; the
picture enters the output only multiplied by zero, so the graph still reads its input.
Needs the `onnx` package (a test dependency), imported only here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from storyboard.check.detail_models import FACE_MODEL
from storyboard.check.standin import YOLO_ANCHORS, YOLO_SIZE, _save


def write_face_detector(
    folder: Path, boxes: Sequence[tuple[float, float, float, float]], scores: Sequence[float]
) -> Path:
    """folder/<FACE_MODEL>/model.onnx that finds `boxes` (x0, y0, x1, y1 as fractions of the
    picture) with `scores`; returns the file."""
    from onnx import TensorProto, helper, numpy_helper

    s = YOLO_SIZE
    out = np.zeros((1, 5, YOLO_ANCHORS), np.float32)
    for i, ((x0, y0, x1, y1), score) in enumerate(zip(boxes, scores, strict=True)):
        out[0, :, i] = [(x0 + x1) / 2 * s, (y0 + y1) / 2 * s, (x1 - x0) * s, (y1 - y0) * s, score]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], axes=[0, 1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["found", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "face_detect_standin",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, s, s])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, YOLO_ANCHORS])],
        [numpy_helper.from_array(out, "found"), numpy_helper.from_array(np.array(0.0, np.float32), "zero")],
    )
    meta = {
        "description": "stand-in for deepghs/anime_face_detection face_detect_v1.4_s",
        "stride": "32",
        "task": "detect",
        "batch": "1",
        "imgsz": json.dumps([s, s]),
        "names": "{0: 'face'}",
    }
    return _save(graph, folder / FACE_MODEL / "model.onnx", meta)
