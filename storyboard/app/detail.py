"""The face detailer's detector for the render stage: the check's YOLO detector and assignment
behind ``render.detail.FaceFinder`` (render/ never imports check/, so the app hands it over).

The detector files come from the Hugging Face cache (`storyboard models fetch detail`); they are
opened when the renderer is made, so a missing file is a sentence naming it and the command
before anything renders. Who is who: the panel's regions (or its single character); and, when the
check's CCIP model is in the cache and characters have `references`, the check's own assignment
(identity to the references plus the region prior). Identity then enters the job hash too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from PIL import Image

from storyboard.check.backend import Backend
from storyboard.check.detail_assign import assign_by_identity, assign_faces
from storyboard.check.detail_models import DetailDetector, open_detector
from storyboard.check.run import Anchor
from storyboard.errors import ModelError
from storyboard.jobs import PanelJob, Renderer
from storyboard.render.detail import Face


class CheckFaceFinder:
    """Detects with the pinned detector of `detail.model` at `detail.confidence`; assigns by the
    check's identity model where it can, else by regions."""

    def __init__(
        self,
        jobs: Sequence[PanelJob],
        *,
        models_dir: Path | None = None,
        references: Mapping[str, Sequence[Path]] | None = None,
    ) -> None:
        self.models_dir = models_dir
        self._open: dict[tuple[str, float], DetailDetector] = {}
        for job in jobs:
            if job.detail is not None:
                self._detector(job)
        self.backend: Backend | None = None
        self.anchors: dict[str, Anchor] = {}
        self.reference_files: dict[str, list[str]] = {}
        refs = {c: list(p) for c, p in (references or {}).items() if p}
        if refs:
            self._open_identity(refs)

    def _open_identity(self, refs: dict[str, list[Path]]) -> None:
        from storyboard.check import fetch
        from storyboard.check.ccip import CcipBackend
        from storyboard.check.images import load_rgb
        from storyboard.models.hashes import sha256_file

        try:
            folder = fetch.resolve([fetch.CCIP], models_dir=self.models_dir)["ccip"]
        except ModelError:
            return  # the check's models are optional here: regions decide
        self.backend = CcipBackend.open(folder, device="cpu")
        for cid, paths in refs.items():
            feats = self.backend.embed([load_rgb(Image.open(p)) for p in paths])
            self.anchors[cid] = Anchor("reference", feats)
            self.reference_files[cid] = [sha256_file(p) for p in paths]

    def _detector(self, job: PanelJob) -> DetailDetector:
        assert job.detail is not None
        key = (job.detail.settings.model, job.detail.settings.confidence)
        if key not in self._open:
            self._open[key] = open_detector(*key, models_dir=self.models_dir)
        return self._open[key]

    def _uses_identity(self, job: PanelJob) -> bool:
        return self.backend is not None and any(c in self.anchors for c in job.characters)

    def identity(self, job: PanelJob) -> dict[str, str]:
        det = self._detector(job)
        out = {**det.identity, "model": det.detector.model_id}
        if self._uses_identity(job):
            assert self.backend is not None
            refs = {c: self.reference_files[c] for c in job.characters if c in self.reference_files}
            out["identity"] = f"{self.backend.model_id} {sorted(refs.items())}"
        return out

    def find(self, image: Image.Image, job: PanelJob) -> list[Face]:
        assert job.detail is not None
        found = self._detector(job).detector.detect(image)
        regions = {r.character: r.box for r in job.regions}
        boxes = [d.box for d in found]
        # Every character of the panel competes for the faces, also those whose detail is off
        # (their faces are then left alone, not given to someone else).
        if self._uses_identity(job):
            assert self.backend is not None
            scores = [d.score for d in found]
            who = assign_by_identity(
                image, boxes, scores, list(job.characters), regions, self.backend, self.anchors
            )
        else:
            who = assign_faces(boxes, image.size, list(job.characters), regions)
        return [Face(d.box, d.score, c) for d, c in zip(found, who, strict=True)]


def detail_callables(
    story: Path, out_dir: Path, out_root: Path, renderer: Renderer
) -> tuple[Callable[[str], Path | None], Callable[[str], None]]:
    """`check --fix`'s try_detail / record_detail (``check/detail_fix.py``) over the real renderer:
    the panel rendered with the detailer on (ADetailer's defaults where the story sets none) into
    the check's folder; and the detailer turned on in the story file, the panel built."""
    from storyboard.app.build import build, render_one
    from storyboard.story.detail import Detail
    from storyboard.story.detail_edit import enable_detail
    from storyboard.story.load import load_story
    from storyboard.story.plan import plan

    def try_detail(panel_id: str) -> Path | None:
        loaded = load_story(story)
        settings = loaded.panel_render[panel_id]
        if settings.detail is not None and settings.detail.enabled:
            return None  # detailed already: only a reroll can help
        loaded.panel_render[panel_id] = settings.model_copy(update={"detail": Detail()})
        job = next(j for j in plan(loaded) if j.panel_id == panel_id)
        if job.detail is None or not hasattr(renderer, "face_finder"):
            return None  # no character to detail, or a renderer without the detailer (Ray)
        try:
            finder = CheckFaceFinder([job])
        except ModelError:
            return None  # the detectors are not fetched: rerolls only
        renderer.face_finder = finder
        return render_one(out_dir, renderer, job, out_dir / "check" / "detail" / f"{panel_id}.png")

    def record_detail(panel_id: str) -> None:
        enable_detail(story, panel_id)
        build(load_story(story), out_root, renderer, only=[panel_id], layout=False)

    return try_detail, record_detail
