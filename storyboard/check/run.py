"""The check itself: crops per panel, who is who, distances to each character's anchor, the report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from storyboard.check.assign import REGION_WEIGHT, assign, centre_outside, occm, region_prior
from storyboard.check.backend import Backend, Detector, Features
from storyboard.check.cache import Crops, FeatureCache, file_sha256
from storyboard.check.images import load_rgb
from storyboard.check.score import (
    cross_similarity,
    main_cluster,
    self_similarity,
    threshold_for,
)
from storyboard.check.types import (
    Appearance,
    CharacterScore,
    CheckInput,
    CheckReport,
    Detection,
    FracBox,
    PanelResult,
)
from storyboard.errors import StoryboardError

# Anchor for a character seen only next to others and without references: every detection is equally
# far, so the Hungarian assignment gives it whatever the anchored characters leave.
NO_ANCHOR_COST = 0.5


@dataclass(frozen=True)
class Anchor:
    kind: str  # "reference" | "prototype" | "none"
    feats: Features  # references (one row each) or the prototype (one row)

    def distance(self, backend: Backend, feats: Features) -> NDArray[np.float32]:
        """Distance of each row of feats to the anchor; with several references, the nearest one."""
        if self.kind == "none" or not len(self.feats):
            return np.full(len(feats), NO_ANCHOR_COST, np.float32)
        nearest: NDArray[np.float32] = backend.distances(feats, self.feats).min(axis=1)
        return nearest


@dataclass
class Analysis:
    report: CheckReport
    anchors: dict[str, Anchor]
    crops: dict[str, Crops]  # by panel id


def image_crops(
    path: Path, backend: Backend, detector: Detector | None, cache: FeatureCache
) -> tuple[Crops, bool, str]:
    """(crops, embedded now?, image sha256) for one image file."""
    sha = file_sha256(path)
    key = f"{backend.name}:{backend.model_id}|{detector.identity if detector else 'whole'}"
    hit = cache.get(sha, key)
    if hit is not None:
        return hit, False, sha
    image = load_rgb(Image.open(path))
    dets: list[Detection] = detector.detect(image) if detector else []
    if detector is None:
        dets = [Detection(box=(0, 0, image.width, image.height), score=1.0, label="whole")]
    boxes = np.array([d.box for d in dets], dtype=np.int64).reshape(-1, 4)
    scores = np.array([d.score for d in dets], dtype=np.float32)
    feats = backend.embed([image.crop((int(b[0]), int(b[1]), int(b[2]), int(b[3]))) for b in boxes])
    crops = Crops(boxes, scores, feats, whole=detector is None)
    cache.put(sha, key, crops)
    return crops, True, sha


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding it (crops may come from the cache)."""
    with Image.open(path) as image:
        return image.size


def assign_crops(
    crops: Crops,
    expected: Sequence[str],
    anchors: dict[str, Anchor],
    backend: Backend,
    regions: Mapping[str, FracBox] | None = None,
    size: tuple[int, int] = (0, 0),
) -> tuple[dict[str, int], NDArray[np.float32]]:
    """Character -> crop row, and the crops x expected distance matrix behind it (identity only).

    With `regions` (character -> box as panel fractions) and the image's `size`, a detection outside a
    character's region costs up to REGION_WEIGHT thresholds more to give to that character (see
    `assign.REGION_WEIGHT` for why that much); without them the assignment is identity alone.
    """
    if crops.whole:
        # One picture for everyone: each expected character is compared with the whole panel.
        dist = np.stack([anchors[c].distance(backend, crops.feats) for c in expected], axis=1)
        return {c: 0 for c in expected}, dist.reshape(len(crops.feats), len(expected))
    if not len(crops.feats) or not expected:
        return {}, np.zeros((len(crops.feats), len(expected)), np.float32)
    dist = np.stack([anchors[c].distance(backend, crops.feats) for c in expected], axis=1)
    prior = region_prior(crops.boxes, size, expected, regions) if regions else None
    # The backend's default threshold is its metric's scale (CCIP and CLIP distances differ in range).
    pairs = assign(dist, prior, REGION_WEIGHT * backend.default_threshold)
    return {expected[c]: r for c, r in pairs.items()}, dist


def _bootstrap_anchor(feats: list[Features], backend: Backend, threshold: float) -> Anchor:
    if not feats:
        return Anchor("none", np.zeros((0, 0), np.float32))
    stack = np.concatenate(feats)
    members = main_cluster(backend.distances(stack, stack), threshold)
    return Anchor("prototype", backend.prototype(stack[members]))


def analyse(
    inp: CheckInput, backend: Backend, detector: Detector | None, cache_dir: Path | None = None
) -> Analysis:
    missing_files = [p for p in inp.panels if not p.image.is_file()]
    if missing_files:
        raise StoryboardError(
            f"Panels not rendered yet: {', '.join(p.panel_id for p in missing_files)}.",
            hint="build the story first; the check reads only rendered panels",
        )
    missing_refs = [str(r) for c in inp.characters.values() for r in c.references if not r.is_file()]
    if missing_refs:
        raise StoryboardError(f"Reference images not found: {', '.join(missing_refs)}.")
    cache = FeatureCache(cache_dir)
    chosen_thresholds = {
        cid: threshold_for(c.threshold, inp.threshold, backend.default_threshold, inp.threshold_override)
        for cid, c in inp.characters.items()
    }
    thresholds = {cid: t for cid, (t, _) in chosen_thresholds.items()}
    crops: dict[str, Crops] = {}
    shas: dict[str, str] = {}
    embedded: list[str] = []
    for p in inp.panels:
        crops[p.panel_id], fresh, shas[p.panel_id] = image_crops(p.image, backend, detector, cache)
        if fresh:
            embedded.append(p.panel_id)

    # Anchors: the references where given; else a first prototype from panels where the character is
    # alone (its best detection), which is then what the Hungarian assignment matches against.
    anchors: dict[str, Anchor] = {}
    for cid, c in inp.characters.items():
        if c.references:
            # A reference is cropped like a panel (its best detection) so that a character sheet with
            # background is compared figure to figure; with no detection the whole image is used.
            refs = []
            for ref in c.references:
                rc = image_crops(ref, backend, detector, cache)[0]
                if not len(rc.feats):
                    rc = image_crops(ref, backend, None, cache)[0]
                refs.append(rc.feats[:1])
            anchors[cid] = Anchor("reference", np.concatenate(refs))
            continue
        # Unambiguous panels first (alone, one detection); failing those, the best detection of
        # panels where it is alone.
        solo = [p.panel_id for p in inp.panels if p.characters == (cid,) and len(crops[p.panel_id].feats)]
        single = [crops[pid].feats[:1] for pid in solo if len(crops[pid].feats) == 1]
        anchors[cid] = _bootstrap_anchor(
            single or [crops[pid].feats[:1] for pid in solo], backend, thresholds[cid]
        )

    assigned: dict[str, dict[str, int]] = {}
    results: list[PanelResult] = []
    for p in inp.panels:
        pc = crops[p.panel_id]
        size = image_size(p.image) if p.regions else (0, 0)
        chosen, _ = assign_crops(pc, p.characters, anchors, backend, p.regions, size)
        assigned[p.panel_id] = chosen
        dets = (
            []
            if pc.whole
            else [
                Detection(box=(int(b[0]), int(b[1]), int(b[2]), int(b[3])), score=float(s))
                for b, s in zip(pc.boxes, pc.scores, strict=True)
            ]
        )
        n_det = len(p.characters) if pc.whole else len(dets)
        results.append(
            PanelResult(
                panel_id=p.panel_id,
                image=str(p.image),
                sha256=shas[p.panel_id],
                seed=p.seed,
                expected=list(p.characters),
                detections=dets,
                occm=occm(n_det, len(p.characters)),
                missing=[c for c in p.characters if c not in chosen],
                extra=0 if pc.whole else len(dets) - len(chosen),
            )
        )

    # Final anchors and scores from the assigned crops.
    specs = {p.panel_id: p for p in inp.panels}
    appearances: list[Appearance] = []
    scores: list[CharacterScore] = []
    for cid, c in inp.characters.items():
        mine = [(p.panel_id, assigned[p.panel_id][cid]) for p in inp.panels if cid in assigned[p.panel_id]]
        feats = (
            np.stack([crops[pid].feats[row] for pid, row in mine]) if mine else np.zeros((0, 1), np.float32)
        )
        pair = backend.distances(feats, feats) if mine else np.zeros((0, 0), np.float32)
        cluster: list[int] = []
        if anchors[cid].kind != "reference" and mine:
            cluster = main_cluster(pair, thresholds[cid])
            anchors[cid] = Anchor("prototype", backend.prototype(feats[cluster]))
        to_anchor = anchors[cid].distance(backend, feats) if mine else np.zeros(0, np.float32)
        flagged = []
        for k, (pid, row) in enumerate(mine):
            pc = crops[pid]
            b = pc.boxes[row]
            off = bool(to_anchor[k] > thresholds[cid])
            box = (int(b[0]), int(b[1]), int(b[2]), int(b[3]))
            region = specs[pid].regions.get(cid)
            # Whole-panel mode has no position to compare with a region.
            inside = (
                None
                if region is None or pc.whole
                else centre_outside(box, image_size(specs[pid].image), region) == 0
            )
            if off:
                flagged.append(pid)
            appearances.append(
                Appearance(
                    panel_id=pid,
                    character=cid,
                    box=box,
                    whole_panel=pc.whole,
                    detection_score=None if pc.whole else float(pc.scores[row]),
                    distance=float(to_anchor[k]),
                    off_model=off,
                    region=region,
                    in_region=inside,
                )
            )
        for p in inp.panels:
            if cid in p.characters and cid not in assigned[p.panel_id]:
                appearances.append(Appearance(panel_id=p.panel_id, character=cid, region=p.regions.get(cid)))
        scores.append(
            CharacterScore(
                id=cid,
                name=c.name,
                anchor="reference" if anchors[cid].kind == "reference" else ("prototype" if mine else "none"),
                threshold=thresholds[cid],
                threshold_source=chosen_thresholds[cid][1],
                panels=[pid for pid, _ in mine],
                self_similarity=self_similarity(pair),
                cross_similarity=cross_similarity(to_anchor),
                main_cluster=[mine[i][0] for i in cluster],
                flagged=flagged,
            )
        )
    order = {p.panel_id: i for i, p in enumerate(inp.panels)}
    appearances.sort(key=lambda a: (order[a.panel_id], list(inp.characters).index(a.character)))
    notes = []
    if detector is None:
        notes.append("No person detector: each character was compared using the whole panel.")
    report = CheckReport(
        title=inp.title,
        backend=backend.name,
        backend_model=backend.model_id,
        default_threshold=backend.default_threshold,
        detector=detector.name if detector else None,
        characters=scores,
        panels=results,
        appearances=appearances,
        notes=notes,
        embedded_panels=embedded,
    )
    return Analysis(report, anchors, crops)


def run_check(
    inp: CheckInput, backend: Backend, detector: Detector | None, cache_dir: Path | None = None
) -> CheckReport:
    """Check every panel and return the report (writing it is `report.write_report`)."""
    return analyse(inp, backend, detector, cache_dir).report
