"""``dw_openpose_full``: DWPose as the extension runs it (``annotator/openpose``: its ``Wholebody``
over ``cv_ox_det`` and ``cv_ox_pose``), on yzd-v/DWPose's two ONNX files with onnxruntime (CPU):

1. YOLOX-L (``yolox_l.onnx``, 1x3x640x640 -> 1x8400x85) finds people: the image letterboxed into
   640x640 (top-left, bilinear, pad 114, no normalisation), the grid/stride decode, score =
   objectness x class, NMS at IoU 0.45 over scores above 0.1, then person boxes scoring over 0.3;
2. RTMPose (``dw-ll_ucoco_384.onnx``, 1x3x384x288 -> SimCC x 1x133x576, y 1x133x768) on each box:
   the box padded 1.25 and widened to 288:384, warped by a 2x3 affine, mean/std normalised; the
   SimCC argmax halved (split ratio 2.0), the score the smaller of the two maxima, mapped back;
3. the 133 COCO-WholeBody points to OpenPose's 18 body points (neck = mean of the shoulders), 21 per
   hand and 68 + 2 face points, each kept when its score is at least 0.3; then ``dwpose_draw``.

The extension hands its RGB image to both networks as it is (the detector was trained on BGR); kept.
OpenCV is not installed: the bilinear resize and warp are written here (half-pixel centres, borders
as OpenCV's), in float rather than OpenCV's fixed point, so keypoints match to a fraction of a pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from storyboard.models.nms import nms

Arr = NDArray[np.float64]
DET_SIZE = 640
STRIDES = (8, 16, 32)
NMS_IOU, SCORE_MIN, PERSON_MIN = 0.45, 0.1, 0.3
POSE_W, POSE_H = 288, 384
PADDING = 1.25
SPLIT = 2.0
MEAN = np.array([123.675, 116.28, 103.53])
STD = np.array([58.395, 57.12, 57.375])
KEEP = 0.3  # a keypoint below this score is not drawn (the extension's format_result)
# OpenPose body index <- COCO-WholeBody index (after the neck is inserted at 17), the extension's table.
OPENPOSE_IDX = [1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17]
MMPOSE_IDX = [17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3]


@dataclass(frozen=True)
class Pose:
    """One person in pixel coordinates; a point is None when its score is under 0.3."""

    body: list[tuple[float, float] | None]  # 18, OpenPose order
    left_hand: list[tuple[float, float] | None] | None  # 21, or None when no point is kept
    right_hand: list[tuple[float, float] | None] | None
    face: list[tuple[float, float] | None] | None  # 68 + the two eyes from the body


def load(files: tuple[Path, ...]) -> tuple[Any, Any]:
    """The detector's and the pose model's sessions (CPU: maps must not depend on the GPU)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    det, pose = (ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"]) for p in files)
    return det, pose


def bilinear(img: NDArray[np.uint8], sx: Arr, sy: Arr, *, constant: bool) -> NDArray[np.uint8]:
    """`img` sampled at source coordinates (sx, sy) (each (H', W')), bilinearly; outside the image
    OpenCV's border: 0 (``constant``, warpAffine) or the edge pixel repeated (resize). Rounded."""
    h, w = img.shape[:2]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    src = img.astype(np.float64)

    def at(yy: NDArray[np.int64], xx: NDArray[np.int64]) -> Arr:
        inside = (xx >= 0) & (xx < w) & (yy >= 0) & (yy < h)
        v = src[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]
        return np.where(inside[..., None], v, 0.0) if constant else v

    top = at(y0, x0) * (1 - fx) + at(y0, x0 + 1) * fx
    bottom = at(y0 + 1, x0) * (1 - fx) + at(y0 + 1, x0 + 1) * fx
    out = top * (1 - fy) + bottom * fy
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def letterbox(img: NDArray[np.uint8]) -> tuple[NDArray[np.float32], float]:
    """The detector's input (1, 3, 640, 640) and the ratio: the image scaled to fit (bilinear),
    placed top-left on grey 114."""
    h, w = img.shape[:2]
    r = min(DET_SIZE / h, DET_SIZE / w)
    nh, nw = int(h * r), int(w * r)
    ys, xs = np.meshgrid(
        (np.arange(nh) + 0.5) * h / nh - 0.5, (np.arange(nw) + 0.5) * w / nw - 0.5, indexing="ij"
    )
    canvas = np.full((DET_SIZE, DET_SIZE, 3), 114, dtype=np.uint8)
    canvas[:nh, :nw] = bilinear(img, xs, ys, constant=False)
    return canvas.transpose(2, 0, 1)[None].astype(np.float32), r


def decode_yolox(out: Arr) -> tuple[Arr, Arr]:
    """(8400, 85) raw predictions -> boxes (cx, cy, w, h) in 640-space and (8400, 80) scores."""
    grids, strides = [], []
    for s in STRIDES:
        n = DET_SIZE // s
        xv, yv = np.meshgrid(np.arange(n), np.arange(n))
        grids.append(np.stack([xv, yv], 2).reshape(-1, 2))
        strides.append(np.full((n * n, 1), s))
    grid, stride = np.concatenate(grids), np.concatenate(strides)
    xy = (out[:, :2] + grid) * stride
    wh = np.exp(out[:, 2:4]) * stride
    return np.concatenate([xy, wh], 1), out[:, 4:5] * out[:, 5:]


def person_boxes(raw: Arr, ratio: float) -> Arr | None:
    """The kept person boxes (x1, y1, x2, y2) in image pixels; None when no class of any box scores
    over 0.1 (the extension then draws nothing). An empty array (something found, no person over
    0.3) makes the pose model run on the whole image, as the extension's does."""
    centre, scores = decode_yolox(raw.astype(np.float64))
    boxes = np.concatenate([centre[:, :2] - centre[:, 2:] / 2, centre[:, :2] + centre[:, 2:] / 2], 1) / ratio
    if not (scores > SCORE_MIN).any():
        return None
    # Class-aware NMS: only the person class (0) survives the final filter, so only it is run.
    valid = scores[:, 0] > SCORE_MIN
    b, s = boxes[valid], scores[valid, 0]
    keep = nms(b, s, NMS_IOU) if len(b) else []
    return b[[k for k in keep if s[k] > PERSON_MIN]].reshape(-1, 4)


def box_to_cs(box: Arr) -> tuple[Arr, Arr]:
    """Centre and scale (w, h) of an (x1, y1, x2, y2) box, padded 1.25 and widened to 288:384."""
    x1, y1, x2, y2 = box
    centre = np.array([x1 + x2, y1 + y2]) * 0.5
    w, h = (x2 - x1) * PADDING, (y2 - y1) * PADDING
    aspect = POSE_W / POSE_H
    scale = np.array([w, w / aspect]) if w > h * aspect else np.array([h * aspect, h])
    return centre, scale


def affine_from_points(src: Arr, dst: Arr) -> Arr:
    """The 2x3 matrix taking three points onto three (OpenCV's getAffineTransform), solved here."""
    a = np.zeros((6, 6))
    a[0::2, 0:2], a[0::2, 2] = src, 1.0
    a[1::2, 3:5], a[1::2, 5] = src, 1.0
    m: Arr = np.linalg.solve(a, dst.reshape(-1)).reshape(2, 3).astype(np.float64)
    return m


def warp_matrix(centre: Arr, scale: Arr) -> Arr:
    """mmpose's ``get_warp_matrix`` without rotation or shift: the box centre to the crop centre, the
    point half a box-width above it to half a crop-width above, and a third point at right angles."""

    def third(a: Arr, b: Arr) -> Arr:
        d = a - b
        out: Arr = b + np.array([-d[1], d[0]])
        return out

    up_src, up_dst = np.array([0.0, -0.5 * scale[0]]), np.array([0.0, -0.5 * POSE_W])
    c_dst = np.array([POSE_W * 0.5, POSE_H * 0.5])
    src = np.stack([centre, centre + up_src, third(centre, centre + up_src)]).astype(np.float32)
    dst = np.stack([c_dst, c_dst + up_dst, third(c_dst, c_dst + up_dst)]).astype(np.float32)
    return affine_from_points(src.astype(np.float64), dst.astype(np.float64))


def warp(img: NDArray[np.uint8], m: Arr) -> NDArray[np.uint8]:
    """``warpAffine`` to 288x384, bilinear, black outside: each crop pixel samples M^-1 (x, y)."""
    full = np.vstack([m, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)[:2]
    ys, xs = np.meshgrid(
        np.arange(POSE_H, dtype=np.float64), np.arange(POSE_W, dtype=np.float64), indexing="ij"
    )
    sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
    sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
    return bilinear(img, sx, sy, constant=True)


def simcc_decode(simcc_x: Arr, simcc_y: Arr) -> tuple[Arr, Arr]:
    """(K, Wx), (K, Wy) -> (K, 2) points in crop pixels and (K,) scores: each axis's argmax over the
    split ratio 2.0; the score the smaller maximum; a point whose score is not positive at -1."""
    locs = np.stack([simcc_x.argmax(1), simcc_y.argmax(1)], -1).astype(np.float64)
    vals = np.minimum(simcc_x.max(1), simcc_y.max(1)).astype(np.float64)
    locs[vals <= 0.0] = -1
    return locs / SPLIT, vals


def estimate(pose_sess: Any, img: NDArray[np.uint8], box: Arr) -> tuple[Arr, Arr]:
    """One box's 133 keypoints (image pixels) and scores."""
    centre, scale = box_to_cs(box)
    crop = (warp(img, warp_matrix(centre, scale)).astype(np.float64) - MEAN) / STD
    feed = crop.transpose(2, 0, 1)[None].astype(np.float32)
    simcc_x, simcc_y = pose_sess.run(None, {pose_sess.get_inputs()[0].name: feed})[:2]
    pts, scores = simcc_decode(simcc_x[0], simcc_y[0])
    return pts / np.array([POSE_W, POSE_H]) * scale + centre - scale / 2, scores


def to_openpose(pts: Arr, scores: Arr) -> Pose:
    """133 COCO-WholeBody points -> the extension's OpenPose layout (neck inserted, body reordered)."""
    info = np.concatenate([pts, scores[:, None]], 1)
    neck = info[[5, 6]].mean(0)
    neck[2] = float(info[5, 2] > KEEP and info[6, 2] > KEEP)  # the extension's neck score: 0 or 1
    info = np.insert(info, 17, neck, axis=0)
    info[OPENPOSE_IDX] = info[MMPOSE_IDX]

    def part(rows: Arr) -> list[tuple[float, float] | None] | None:
        out = [(float(x), float(y)) if s >= KEEP else None for x, y, s in rows]
        return None if all(p is None for p in out) else out

    body = part(info[:18]) or [None] * 18
    face = part(info[24:92])
    if face is not None:  # OpenPose's face has 70 points: DWPose's 68 and the two eyes
        face += [body[14], body[15]]
    return Pose(body, part(info[92:113]), part(info[113:134]), face)


def detect_poses(sessions: tuple[Any, Any], img: NDArray[np.uint8]) -> list[Pose]:
    det, pose = sessions
    feed, ratio = letterbox(img)
    raw = det.run(None, {det.get_inputs()[0].name: feed})[0][0]
    boxes = person_boxes(raw, ratio)
    if boxes is None:
        return []
    if len(boxes) == 0:
        boxes = np.array([[0.0, 0.0, img.shape[1], img.shape[0]]])
    return [to_openpose(*estimate(pose, img, b)) for b in boxes]


def run(sessions: tuple[Any, Any], img: NDArray[np.uint8]) -> NDArray[np.uint8]:
    """(H, W, 3) pose map of an (H, W, 3) RGB image: body, hands and face on black."""
    from storyboard.render.control.annotators.dwpose_draw import draw_poses

    return draw_poses(detect_poses(sessions, img), img.shape[0], img.shape[1])
