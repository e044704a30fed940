"""The model loaders: CCIP preprocessing against the published recipe, the ONNX files' interface, and
the YOLO post-processing, with stand-in models that keep the real files' names, shapes and metadata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from storyboard.check import ccip as ccip_mod
from storyboard.check import detect
from storyboard.check.ccip import CLIP_MEAN, CLIP_STD, CcipBackend, preprocess
from storyboard.check.detect import YoloDetector
from storyboard.check.onnx_models import open_session
from storyboard.check.standin import strip_boxes, write_ccip, write_detector
from storyboard.errors import ModelError

MEAN = np.array(CLIP_MEAN)[:, None, None]
STD = np.array(CLIP_STD)[:, None, None]


def synthetic(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([xx * 255 / w, yy * 255 / h, ((xx + yy) % 64) * 4], axis=-1).astype(np.uint8)
    arr[5:25, 5:25] = np.random.default_rng(0).integers(0, 256, (20, 20, 3))
    return arr


def published_preprocess(arr: np.ndarray, size: int = 384) -> np.ndarray:
    """CCIP's recipe computed independently of PIL: antialiased bilinear resize of the whole image to
    size x size (torch's antialias mode follows PIL's filter), /255, CLIP mean/std, channels first."""
    t = torch.from_numpy(arr).permute(2, 0, 1)[None].double()
    resized = torch.nn.functional.interpolate(
        t, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )[0].numpy()
    return (resized / 255.0 - MEAN) / STD


@pytest.mark.parametrize("shape", [(300, 517), (96, 64), (1000, 700)])
def test_ccip_preprocessing_matches_published_recipe(shape: tuple[int, int]) -> None:
    arr = synthetic(*shape)
    ours = preprocess(Image.fromarray(arr))
    assert ours.shape == (3, 384, 384) and ours.dtype == np.float32
    ref = published_preprocess(arr)
    # PIL resizes in 8 bits, so one grey level of rounding (1/255 before the std) is all we allow.
    tol = 1.0 / 255.0 / STD.min() + 1e-5
    assert np.abs(ours - ref).max() <= tol
    # The check has teeth: a bicubic resize, or keeping the aspect ratio by cropping, misses it.
    bicubic = Image.fromarray(arr).resize((384, 384), Image.Resampling.BICUBIC)
    bicubic_arr = (np.asarray(bicubic, np.float64).transpose(2, 0, 1) / 255 - MEAN) / STD
    assert np.abs(bicubic_arr - ref).max() > tol


def test_ccip_preprocessing_exact_on_flat_colour_and_alpha() -> None:
    flat = Image.new("RGB", (50, 80), (200, 100, 30))
    expected = (np.array([200, 100, 30])[:, None, None] / 255.0 - MEAN) / STD
    assert np.allclose(preprocess(flat), np.broadcast_to(expected, (3, 384, 384)), atol=1e-6)
    # transparency goes over white, as dghs-imgutils loads images (not black, as convert("RGB") would)
    clear = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    white = (1.0 - MEAN) / STD
    assert np.allclose(preprocess(clear), np.broadcast_to(white, (3, 384, 384)), atol=1e-6)


def test_ccip_standin_keeps_the_real_interface(tmp_path: Path) -> None:
    folder = write_ccip(tmp_path)
    assert folder.name == "ccip-caformer-24-randaug-pruned"
    assert {p.name for p in folder.iterdir()} == {"model_feat.onnx", "model_metrics.onnx", "metrics.json"}
    feat = ort.InferenceSession(str(folder / "model_feat.onnx"))
    (inp,), (out,) = feat.get_inputs(), feat.get_outputs()
    assert (inp.name, inp.shape[1:], out.name, out.shape[1:]) == ("input", [3, 384, 384], "output", [768])
    metric = ort.InferenceSession(str(folder / "model_metrics.onnx"))
    assert [i.name for i in metric.get_inputs()] == ["input"]
    assert [o.name for o in metric.get_outputs()] == ["output"]
    backend = CcipBackend.open(folder)
    assert backend.default_threshold == pytest.approx(0.17847511429108218)
    feats = backend.embed([Image.new("RGB", (10, 10), "red")] * 3)  # batches of 8 are split correctly
    assert feats.shape == (3, 768)


def test_loader_refuses_a_model_with_other_names(tmp_path: Path) -> None:
    path = write_detector(tmp_path)  # inputs 'images', not 'input'
    with pytest.raises(ModelError, match="expected inputs"):
        open_session(path, inputs=["input"], outputs=["output"])
    with pytest.raises(ModelError, match="not found"):
        open_session(tmp_path / "nope.onnx", inputs=["input"], outputs=["output"])


def test_detector_standin_metadata_and_shapes(tmp_path: Path) -> None:
    det = YoloDetector.open(write_detector(tmp_path))
    assert det.labels == ["person"]
    assert det.size_hw == (640, 640)
    session = det.session
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert session.get_inputs()[0].shape == [1, 3, 640, 640]
    assert session.get_outputs()[0].name == "output0"
    assert session.get_outputs()[0].shape == [1, 5, 8400]


def test_detector_finds_drawn_figures(tmp_path: Path) -> None:
    det = YoloDetector.open(write_detector(tmp_path))
    img = Image.new("RGB", (320, 200), "white")
    img.paste((200, 30, 30), (90, 20, 150, 200))  # strip 1 of 4 (80..160 px)
    found = det.detect(img)
    assert [d.box for d in found] == [(80, 0, 160, 200)]


def test_metadata_parsing() -> None:
    assert detect.parse_names("{0: 'person', 1: 'head'}") == ["person", "head"]
    with pytest.raises(ModelError):
        detect.parse_names("__import__('os').system('true')")
    assert detect.parse_imgsz({"imgsz": "[640, 480]"}) == (640, 480)
    assert detect.parse_imgsz({}) == (640, 640)


def test_postprocess_planted_output() -> None:
    # Three candidates in a 640x640 input: two overlapping (NMS keeps the better), one below conf.
    out = np.zeros((5, 6), np.float32)
    out[:, 0] = [100, 100, 80, 160, 0.9]
    out[:, 1] = [104, 102, 80, 160, 0.8]  # IoU ~0.9 with the first: suppressed
    out[:, 2] = [400, 300, 100, 200, 0.6]
    out[:, 3] = [500, 500, 50, 50, 0.2]  # below conf 0.3
    found = detect.postprocess(
        out, labels=["person"], conf=0.3, iou=0.5, panel_size=(320, 320), infer_size=(640, 640)
    )
    assert [d.box for d in found] == [(30, 10, 70, 90), (175, 100, 225, 200)]
    assert [round(d.score, 2) for d in found] == [0.9, 0.6]


def test_nms_keeps_disjoint_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    assert detect.nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.5) == [0, 2]


def test_standin_boxes_are_strips() -> None:
    b = strip_boxes()
    assert b.shape == (4, 8400)
    assert list(b[:, 0]) == [80, 320, 160, 640]


def test_published_constants() -> None:
    assert ccip_mod.MODEL == "ccip-caformer-24-randaug-pruned"
    assert ccip_mod.SIZE == 384 and ccip_mod.FEATURE_DIM == 768
