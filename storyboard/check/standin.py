"""Tiny stand-ins for the check's models, built with onnx.helper, for tests and the CPU bench.

They keep what our loaders rely on from the real files: input/output names, ranks and sizes,
metadata keys and file layout, so the same loading code runs on them. Their numbers mean little:
  * CCIP features: 8x8 average colour grid of the 384x384 input, projected to 768-d by a fixed random
    matrix; the metric model gives (1 - cosine) / 2, so identical crops differ by ~0.
  * person detector: scores four vertical strips of the 640x640 input by how far they are from white;
    a strip with a drawn figure is a "person" box the height of the image.
Needs the `onnx` package (a test dependency), imported only here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from storyboard.check.ccip import FEATURE_DIM, MODEL, PUBLISHED_THRESHOLD, SIZE

DETECTOR_MODEL = "person_detect_v1.1_m"
YOLO_SIZE = 640
YOLO_ANCHORS = 8400  # 80x80 + 40x40 + 20x20 cells for a 640 input, as a YOLOv8 export has
STRIPS = 4


def _save(graph: Any, path: Path, meta: dict[str, str] | None = None) -> Path:
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime we support
    for k, v in (meta or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_ccip(folder: Path, seed: int = 0) -> Path:
    """folder/<MODEL>/{model_feat.onnx, model_metrics.onnx, metrics.json}; returns the model folder."""
    from onnx import TensorProto, helper, numpy_helper

    out = folder / MODEL
    rng = np.random.default_rng(seed)
    grid = 8
    proj = rng.standard_normal((3 * grid * grid, FEATURE_DIM)).astype(np.float32)
    feat = helper.make_graph(
        [
            helper.make_node(
                "AveragePool",
                ["input"],
                ["pooled"],
                kernel_shape=[SIZE // grid] * 2,
                strides=[SIZE // grid] * 2,
            ),
            helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "proj"], ["output"]),
        ],
        "ccip_feat_standin",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", FEATURE_DIM])],
        [numpy_helper.from_array(proj, "proj")],
    )
    _save(feat, out / "model_feat.onnx")
    half = np.array(0.5, np.float32)
    metric = helper.make_graph(
        [
            helper.make_node("LpNormalization", ["input"], ["unit"], axis=1, p=2),
            helper.make_node("Transpose", ["unit"], ["unit_t"], perm=[1, 0]),
            helper.make_node("MatMul", ["unit", "unit_t"], ["cos"]),
            helper.make_node("Sub", ["one", "cos"], ["one_minus"]),
            helper.make_node("Mul", ["one_minus", "half"], ["output"]),
        ],
        "ccip_metrics_standin",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", FEATURE_DIM])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", "batch"])],
        [numpy_helper.from_array(np.array(1.0, np.float32), "one"), numpy_helper.from_array(half, "half")],
    )
    _save(metric, out / "model_metrics.onnx")
    (out / "metrics.json").write_text(
        json.dumps({"f1_score": 0.917, "precision": 0.933, "recall": 0.901, "threshold": PUBLISHED_THRESHOLD})
    )
    return out


def strip_boxes() -> np.ndarray:
    """The stand-in detector's candidate boxes (cx, cy, w, h) in 640x640 input pixels, 4 x 8400."""
    boxes = np.zeros((4, YOLO_ANCHORS), np.float32)
    w = YOLO_SIZE / STRIPS
    for i in range(STRIPS):
        boxes[:, i] = [w * i + w / 2, YOLO_SIZE / 2, w, YOLO_SIZE]
    return boxes


def write_detector(folder: Path) -> Path:
    """folder/<DETECTOR_MODEL>/model.onnx with ultralytics-style metadata; returns the file."""
    from onnx import TensorProto, helper, numpy_helper

    s = YOLO_SIZE
    consts = [
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(4.0, np.float32), "gain"),
        numpy_helper.from_array(np.array([1, 1, STRIPS], np.int64), "score_shape"),
        numpy_helper.from_array(np.array([0, 0, 0, 0, 0, YOLO_ANCHORS - STRIPS], np.int64), "pads"),
        numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
        numpy_helper.from_array(strip_boxes()[None], "boxes"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["gray"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["one", "gray"], ["ink"]),
        helper.make_node(
            "AveragePool", ["ink"], ["strip_ink"], kernel_shape=[s, s // STRIPS], strides=[s, s // STRIPS]
        ),
        helper.make_node("Reshape", ["strip_ink", "score_shape"], ["ink3"]),
        helper.make_node("Mul", ["ink3", "gain"], ["gained"]),
        helper.make_node("Clip", ["gained", "zero", "one"], ["scores4"]),
        helper.make_node("Pad", ["scores4", "pads"], ["scores"], mode="constant"),
        helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "person_detect_standin",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, s, s])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, YOLO_ANCHORS])],
        consts,
    )
    meta = {
        "description": "stand-in for deepghs/anime_person_detection person_detect_v1.1_m",
        "stride": "32",
        "task": "detect",
        "batch": "1",
        "imgsz": json.dumps([s, s]),
        "names": "{0: 'person'}",
    }
    return _save(graph, folder / DETECTOR_MODEL / "model.onnx", meta)


def write_all(folder: Path) -> dict[str, Path]:
    """Both stand-ins in the layout of a local `--models DIR`."""
    return {"ccip": write_ccip(folder), "detector": write_detector(folder)}
