"""dw_openpose_full (DWPose) on stand-in ONNX files with the real names and shapes whose outputs are
fixed: a detection at a known box and SimCC peaks at known bins, so every keypoint is known. The
decode, the NMS, the affine and the warp are checked against independent computations; the map has
the OpenPose colours at the expected places; a build runs it as a user types it; missing files and
the CMU openpose modules are sentences at the unit's line; the two files enter the job hash."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from annotator_helpers import annotator_cli, place_dwpose
from PIL import Image
from scipy import ndimage

from storyboard.models.tiny import TinyModel
from storyboard.render.control.annotators import dwpose

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")

# The person's keypoints as (kx, ky) steps on the crop: with the box below and a 128 px image the
# crop spans x 19..109 and y 4..124, and step k is 5 px (bin 32 k of the half-pixel SimCC).
BODY = {  # COCO-WholeBody body order
    "nose": (9, 3), "leye": (10, 2), "reye": (8, 2), "lear": (11, 3), "rear": (7, 3),
    "lsho": (13, 6), "rsho": (5, 6), "lelb": (15, 10), "relb": (3, 10), "lwri": (16, 14),
    "rwri": (2, 14), "lhip": (12, 14), "rhip": (6, 14), "lknee": (12, 19), "rknee": (6, 19),
    "lank": (12, 23), "rank": (6, 23),
}  # fmt: skip
FACE = {23: (8, 4), 24: (10, 4)}
HANDS = {91: (17, 16), 92: (17, 18), 112: (1, 16), 113: (1, 18)}  # left, right: wrist root and next
LOW = {"rank"}  # peak 0.2: under the 0.3 a point needs to be drawn
OPENPOSE_ORDER = [
    "nose", "neck", "rsho", "relb", "rwri", "lsho", "lelb", "lwri", "rhip", "rknee", "rank", "lhip",
    "lknee", "lank", "reye", "leye", "rear", "lear",
]  # fmt: skip


def simcc() -> tuple[np.ndarray, np.ndarray]:
    sx, sy = np.zeros((133, 576), np.float32), np.zeros((133, 768), np.float32)
    points = {i: (k, 0.2 if n in LOW else 1.0) for i, (n, k) in enumerate(BODY.items())}
    points |= {i: (k, 1.0) for i, k in (FACE | HANDS).items()}
    for i, ((kx, ky), peak) in points.items():
        sx[i, 32 * kx], sy[i, 32 * ky] = peak, peak
    return sx, sy


def det_rows(
    boxes: list[tuple[tuple[float, float, float, float], float, int, float]], size: int
) -> np.ndarray:
    """Raw YOLOX output putting each (x1, y1, x2, y2) image box, objectness, class, class score at
    its own stride-32 cell (the inverse of the decode, written out)."""
    raw = np.zeros((8400, 85), np.float32)
    r = 640 / size
    for n, ((x1, y1, x2, y2), obj, cls, p) in enumerate(boxes):
        cx, cy, w, h = (x1 + x2) / 2 * r, (y1 + y2) / 2 * r, (x2 - x1) * r, (y2 - y1) * r
        gx, gy = int(cx // 32) + n, int(cy // 32)  # neighbouring cells, so each box has its own row
        raw[6400 + 1600 + gy * 20 + gx, :5] = [
            cx / 32 - gx,
            cy / 32 - gy,
            math.log(w / 32),
            math.log(h / 32),
            obj,
        ]
        raw[6400 + 1600 + gy * 20 + gx, 5 + cls] = p
    return raw


PERSON = (32.0, 16.0, 96.0, 112.0)


def expected_body() -> dict[str, tuple[float, float] | None]:
    """Image pixels of each point, computed from the box: centre (64, 64); padded 80 x 120, widened
    to 90 x 120 (3:4); a bin b is b / 2 / 288 (or 384) of the crop from its top-left corner."""
    (x1, y1, x2, y2), (cw, ch) = PERSON, (90.0, 120.0)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    pts: dict[str, tuple[float, float] | None] = {
        n: (cx - cw / 2 + 16 * kx / 288 * cw, cy - ch / 2 + 16 * ky / 384 * ch)
        for n, (kx, ky) in BODY.items()
    }
    left, right = pts["lsho"], pts["rsho"]
    assert left is not None and right is not None
    pts["neck"] = ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2)
    pts["rank"] = None
    return pts


def test_detector_decode_and_nms_keep_the_one_person(tmp_path: Path) -> None:
    raw = det_rows(
        [
            (PERSON, 0.9, 0, 0.9),  # the person: 0.81
            ((34.0, 18.0, 98.0, 114.0), 0.5, 0, 0.9),  # the same person again at 0.45: NMS drops it
            ((0.0, 0.0, 30.0, 30.0), 0.9, 2, 0.95),  # a car
            ((100.0, 100.0, 127.0, 127.0), 0.5, 0, 0.5),  # a person at 0.25: over 0.1, under 0.3
        ],
        128,
    )
    boxes = dwpose.person_boxes(raw, 5.0)
    assert boxes is not None and boxes.shape == (1, 4)
    assert np.allclose(boxes[0], PERSON, atol=1e-3)
    assert dwpose.person_boxes(np.zeros((8400, 85), np.float32), 5.0) is None  # nothing at all
    only_car = det_rows([((0.0, 0.0, 30.0, 30.0), 0.9, 2, 0.95)], 128)
    empty = dwpose.person_boxes(only_car, 5.0)
    assert empty is not None and empty.shape == (0, 4)  # the pose model then reads the whole image


def test_nms_iou_against_a_direct_computation() -> None:
    a, b = np.array([0.0, 0.0, 9.0, 9.0]), np.array([5.0, 0.0, 14.0, 9.0])
    inter = 5 * 10  # +1 pixel convention: columns 5..9, rows 0..9
    iou = inter / (100 + 100 - inter)  # 1/3: both kept at 0.45
    assert iou < dwpose.NMS_IOU
    assert dwpose.nms(np.stack([a, b]), np.array([0.9, 0.8]), dwpose.NMS_IOU) == [0, 1]
    c = np.array([1.0, 0.0, 10.0, 9.0])  # IoU 90/110 with a
    assert dwpose.nms(np.stack([a, c]), np.array([0.7, 0.8]), dwpose.NMS_IOU) == [1]


def test_letterbox_puts_the_image_top_left_on_grey() -> None:
    img = np.full((100, 50, 3), 7, np.uint8)
    feed, r = dwpose.letterbox(img)
    assert r == 6.4 and feed.shape == (1, 3, 640, 640) and feed.dtype == np.float32
    assert (feed[0, :, :640, :320] == 7).all() and (feed[0, :, :, 320:] == 114).all()


def test_affine_and_warp_against_closed_form_and_scipy() -> None:
    centre, scale = dwpose.box_to_cs(np.array([10.0, 5.0, 40.0, 65.0]))
    assert np.allclose(centre, [25, 35]) and np.allclose(scale, [56.25, 75])  # 37.5 x 75 widened to 3:4
    m = dwpose.warp_matrix(centre, scale)
    k = 288 / scale[0]
    assert np.allclose(m, [[k, 0, 144 - k * centre[0]], [0, k, 192 - k * centre[1]]], atol=1e-3)
    rng = np.random.default_rng(0)
    img = (rng.random((70, 50, 3)) * 255).astype(np.uint8)
    got = dwpose.warp(img, m).astype(int)
    ys, xs = np.mgrid[0:384, 0:288].astype(np.float64)
    src = [(ys - 192) / k + centre[1], (xs - 144) / k + centre[0]]
    # grid-constant: zeros beyond the edge take part in the interpolation, as OpenCV's constant border
    chans = [
        ndimage.map_coordinates(img[:, :, c].astype(float), src, order=1, mode="grid-constant")
        for c in range(3)
    ]
    want = np.stack(chans, -1)
    assert np.abs(got - np.round(want)).max() <= 1
    assert (got[:, :10] == 0).all() and got[:, 12:].any()  # the crop starts 3 px left of the image: black


def test_simcc_decode() -> None:
    sx, sy = np.zeros((3, 576)), np.zeros((3, 768))
    sx[0, 100], sy[0, 301] = 0.9, 0.6
    sx[1, 7], sy[1, 8] = 0.4, 0.8
    pts, scores = dwpose.simcc_decode(sx, sy)
    assert pts[0].tolist() == [50.0, 150.5] and pts[1].tolist() == [3.5, 4.0]
    assert scores.tolist() == pytest.approx([0.6, 0.4, 0.0])
    assert pts[2].tolist() == [-0.5, -0.5]  # no positive response: -1 bins, as the extension marks it


def test_stand_in_models_give_the_expected_openpose_points(tmp_path: Path) -> None:
    snap = place_dwpose(tmp_path, det_rows([(PERSON, 0.9, 0, 0.9)], 128), *simcc())
    sessions = dwpose.load((snap / "yolox_l.onnx", snap / "dw-ll_ucoco_384.onnx"))
    img = (np.random.default_rng(1).random((128, 128, 3)) * 255).astype(np.uint8)
    (pose,) = dwpose.detect_poses(sessions, img)
    want = expected_body()
    for name, got in zip(OPENPOSE_ORDER, pose.body, strict=True):
        w = want[name]
        assert (got is None) == (w is None), name
        if got is not None and w is not None:
            assert got == pytest.approx(w, abs=1e-3), name
    assert pose.left_hand is not None and pose.right_hand is not None and pose.face is not None
    assert sum(p is not None for p in pose.left_hand) == 2 and len(pose.left_hand) == 21
    assert len(pose.face) == 70 and pose.face[68:] == [pose.body[14], pose.body[15]]  # the eyes


def _px(img: np.ndarray, p: tuple[float, float]) -> tuple[int, ...]:
    return tuple(int(v) for v in img[int(p[1]), int(p[0])])


def test_the_map_has_the_openpose_colours_where_the_points_are(tmp_path: Path) -> None:
    snap = place_dwpose(tmp_path, det_rows([(PERSON, 0.9, 0, 0.9)], 128), *simcc())
    sessions = dwpose.load((snap / "yolox_l.onnx", snap / "dw-ll_ucoco_384.onnx"))
    out = dwpose.run(sessions, np.zeros((128, 128, 3), np.uint8))
    b = expected_body()

    def mid(p: str, q: str) -> tuple[float, float]:
        u, v = b[p], b[q]
        assert u is not None and v is not None
        return ((u[0] + v[0]) / 2, (u[1] + v[1]) / 2)

    assert _px(out, mid("neck", "rsho")) == (153, 0, 0)  # limb 1, red at 0.6
    assert _px(out, mid("rhip", "rknee")) == (0, 153, 51)  # limb 8, (0, 255, 85) at 0.6
    assert _px(out, (49, 109)) == (0, 0, 0)  # between the right knee and ankle: the ankle scored 0.2
    nose, lank, reye = b["nose"], b["lank"], b["reye"]
    assert nose is not None and lank is not None and reye is not None
    assert _px(out, nose) == (255, 0, 0) and _px(out, lank) == (85, 0, 255)  # dots at full colour
    assert _px(out, reye) == (255, 255, 255)  # the face's appended eye, drawn after the body
    hand = (19 + 5 * 17, 4 + 5 * 16)
    assert _px(out, hand) == (0, 0, 255) and _px(out, (hand[0], hand[1] + 5)) == (255, 0, 0)  # dot, edge 0
    assert _px(out, (19 + 5 * 8, 4 + 5 * 4)) == (255, 255, 255)  # a face point
    assert (out[:, 115:] == 0).all() and out.shape == (128, 128, 3)


STORY = """\
title: A
render:
  model: tiny-sd
  steps: 2
  width: 64
  height: 64
  noise_source: cpu
  webui_root: {root}
pages:
  - panels:
      - id: pose
        scene: a
        control:
          - image: pic.png
            module: dw_openpose_full
            model: tiny-control
            processor_res: 64
      - id: plain
        scene: b
        control:
          - image: pic.png
            model: tiny-control
      - id: cmu
        scene: c
        control:
          - image: pic.png
            module: {cmu}
            model: tiny-control
"""


def _project(tiny: TinyModel, tmp_path: Path, cmu: str) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir(exist_ok=True)
    Image.new("RGB", (64, 64), (90, 120, 30)).save(proj / "pic.png")
    (proj / "s.yaml").write_text(STORY.format(root=tiny.root, cmu=cmu))
    return proj


def test_missing_files_and_cmu_openpose_are_sentences_at_the_units_line(
    tiny: TinyModel, tmp_path: Path
) -> None:
    _project(tiny, tmp_path, "openpose_full")
    r = annotator_cli(tmp_path, tmp_path / "empty-cache", "validate", "proj/s.yaml")
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 2 and "Traceback" not in out, out
    assert "proj/s.yaml:15:21: pages[0].panels[0].control[0].module: Model files for the preprocessor" in out
    assert (
        "'dw_openpose_full' are missing in the Hugging Face cache: yzd-v/DWPose/yolox_l.onnx @ 1a71441016"
        in out
    )
    assert "yzd-v/DWPose/dw-ll_ucoco_384.onnx @ 1a71441016" in out
    assert "run `storyboard models fetch control` once" in out
    assert "proj/s.yaml:27:21: pages[0].panels[2].control[0].module: The preprocessor 'openpose_full'" in out
    assert "use module: dw_openpose_full" in out and "use it with module: none" in out


def test_a_build_runs_dwpose_and_its_files_enter_only_that_panels_hash(
    tiny: TinyModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proj = _project(tiny, tmp_path, "canny")
    cache = tmp_path / "hub"
    place_dwpose(cache, det_rows([((16.0, 8.0, 48.0, 56.0), 0.9, 0, 0.9)], 64), *simcc())
    r = annotator_cli(tmp_path, cache, "build", "proj/s.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    panels = tmp_path / "output" / "s" / "panels"
    info = Image.open(next(panels.glob("pose*.png"))).info.get("parameters", "")
    assert 'ControlNet 0: "Module: dw_openpose_full, Model: tiny-control' in info

    from storyboard.jobs import job_hash
    from storyboard.render.engine import DiffusersRenderer
    from storyboard.story.load import load_story
    from storyboard.story.plan import plan

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    jobs = {j.panel_id: j for j in plan(load_story(proj / "s.yaml"))}

    def hashes() -> dict[str, str]:
        return {k: job_hash(j, DiffusersRenderer(proj, quiet=True, device="cpu")) for k, j in jobs.items()}

    before = hashes()
    sx, sy = simcc()
    sx[0] = np.roll(sx[0], 32)  # another pose model at the same place: the nose moves
    place_dwpose(cache, det_rows([((16.0, 8.0, 48.0, 56.0), 0.9, 0, 0.9)], 64), sx, sy)
    after = hashes()
    assert before["pose"] != after["pose"] and before["plain"] == after["plain"] == before["plain"]
    assert before["cmu"] == after["cmu"]
