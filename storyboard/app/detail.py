"""The face detailer's detector for the render stage: the check's YOLO detector and assignment
behind ``render.detail.FaceFinder`` (render/ never imports check/, so the app hands it over).

The detector files come from the Hugging Face cache (`storyboard models fetch detail`); they are
opened when the renderer is made, so a missing file is a sentence naming it and the command
before anything renders. Identity models (the check's CCIP) are not used yet: regions (or a
single character) decide who is who.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from storyboard.check.detail_assign import assign_faces
from storyboard.check.detail_models import DetailDetector, open_detector
from storyboard.jobs import PanelJob
from storyboard.render.detail import Face


class CheckFaceFinder:
    """Detects with the pinned detector of `detail.model` at `detail.confidence`, assigns by regions."""

    def __init__(self, jobs: Sequence[PanelJob], *, models_dir: Path | None = None) -> None:
        self.models_dir = models_dir
        self._open: dict[tuple[str, float], DetailDetector] = {}
        for job in jobs:
            if job.detail is not None:
                self._detector(job)

    def _detector(self, job: PanelJob) -> DetailDetector:
        assert job.detail is not None
        key = (job.detail.settings.model, job.detail.settings.confidence)
        if key not in self._open:
            self._open[key] = open_detector(*key, models_dir=self.models_dir)
        return self._open[key]

    def identity(self, job: PanelJob) -> dict[str, str]:
        det = self._detector(job)
        return {**det.identity, "model": det.detector.model_id}

    def find(self, image: Image.Image, job: PanelJob) -> list[Face]:
        assert job.detail is not None
        found = self._detector(job).detector.detect(image)
        regions = {r.character: r.box for r in job.regions}
        # Every character of the panel competes for the faces, also those whose detail is off
        # (their faces are then left alone, not given to someone else).
        who = assign_faces([d.box for d in found], image.size, list(job.characters), regions)
        return [Face(d.box, d.score, c) for d, c in zip(found, who, strict=True)]
