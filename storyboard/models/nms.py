"""Greedy non-maximum suppression, shared by the detectors that run ONNX models: the check's YOLO
person/face detectors (``check/detect.py``) and DWPose's person finder (``render/control/annotators``),
which may not import each other."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def nms(boxes: NDArray[np.floating], scores: NDArray[np.floating], iou: float) -> list[int]:
    """Greedy non-maximum suppression over xyxy boxes, best score first."""
    x0, y0, x1, y1 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    # "+1" areas as in the reference code (imgutils; the ControlNet extension's DWPose), so the same
    # boxes survive as there.
    areas = (x1 - x0 + 1) * (y1 - y0 + 1)
    order = scores.argsort(kind="stable")[::-1]
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]) + 1)
        inter = w * h
        overlap = inter / (areas[i] + areas[rest] - inter)
        order = rest[overlap <= iou]
    return keep
