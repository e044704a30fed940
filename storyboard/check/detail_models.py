"""The detailer's detectors: deepghs' anime face detector and the check's person detector, pinned.

    anime face  deepghs/anime_face_detection, face_detect_v1.4_s/model.onnx (YOLOv8s, ONNX; class
                'face'); the revision below was read off a public pin of the repo, not off the hub
    person      the check's own person detector (``check/fetch.py`` DETECTOR), shared

Both are ultralytics YOLO exports (input `images`, output `output0`, `names` / `imgsz` metadata)
and run through the check's ``YoloDetector`` (``check/detect.py``), so the detailer and
`storyboard check` detect with one code path. `storyboard models fetch detail` downloads them into
the Hugging Face cache; nothing downloads by itself: a missing file is a sentence naming it and
the command.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from storyboard.check.detect import YoloDetector
from storyboard.check.fetch import DETECTOR, ModelSpec, fetch, resolve

FETCH_COMMAND = "storyboard models fetch detail"
FACE_MODEL = "face_detect_v1.4_s"
FACE = ModelSpec(
    key="anime face",
    repo="deepghs/anime_face_detection",
    revision="784dc4c0bb692351ddcdbe6131a050b17d3025d5",
    files=(f"{FACE_MODEL}/model.onnx",),
)
# By the story's `detail.model`: which spec, and the class its boxes are.
DETECTORS: dict[str, tuple[ModelSpec, str]] = {"anime face": (FACE, "face"), "person": (DETECTOR, "person")}


@dataclass(frozen=True)
class DetailDetector:
    """An opened detector with what decides its boxes, for the job hash."""

    detector: YoloDetector
    file_sha256: str

    @property
    def identity(self) -> dict[str, str]:
        return {"detector": self.detector.identity, "sha256": self.file_sha256}


def model_file(model: str, *, models_dir: Path | None = None, cache_dir: Path | None = None) -> Path:
    """The detector's ONNX file for `detail.model`, from --models DIR or the HF cache (no network)."""
    spec, _ = DETECTORS[model]
    folder = resolve(
        [spec], models_dir=models_dir, cache_dir=cache_dir, stage="the face detailer", command=FETCH_COMMAND
    )[spec.key]
    return folder / Path(spec.files[0]).name


def open_detector(
    model: str,
    confidence: float,
    *,
    models_dir: Path | None = None,
    cache_dir: Path | None = None,
    device: str = "cpu",
) -> DetailDetector:
    """The detector for `detail.model` at ADetailer's confidence threshold (ad_confidence)."""
    from storyboard.models.hashes import sha256_file

    path = model_file(model, models_dir=models_dir, cache_dir=cache_dir)
    spec, label = DETECTORS[model]
    det = YoloDetector.open(path, device=device, model_id=Path(spec.files[0]).parent.name, label=label)
    det.conf = confidence
    return DetailDetector(det, sha256_file(path))


def fetch_detail(*, cache_dir: Path | None = None) -> dict[str, Path]:
    """`storyboard models fetch detail`: both detectors' pinned files into the HF cache."""
    return fetch([FACE, DETECTOR], cache_dir=cache_dir)
