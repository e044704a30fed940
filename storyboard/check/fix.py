"""The identity gate (`check --fix`): reroll each off-model panel, keep the candidate closest to the
character's anchor, and record its seed the way `storyboard pick` does.

Rendering and writing the story are injected (`render_candidates`, `record_pick`) so this module never
imports the render stage or the story file format; the app layer wires the real ones.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from storyboard.check.backend import Backend, Detector
from storyboard.check.cache import FeatureCache
from storyboard.check.run import Anchor, analyse, assign_crops, image_crops, image_size
from storyboard.check.types import CheckInput, CheckReport, FracBox

MAX_SEED = 4294967294  # WebUI's seed range, as the story file accepts it

RenderCandidates = Callable[[str, list[int]], Sequence[Path]]  # panel id, seeds -> one image per seed
RecordPick = Callable[[str, int], None]  # panel id, seed: write the seed and make it the panel's image


@dataclass(frozen=True)
class FixChange:
    panel_id: str
    old_seed: int | None
    new_seed: int
    before: float  # worst distance/threshold over the panel's characters (inf: someone missing)
    after: float
    passed: bool


@dataclass
class FixResult:
    report: CheckReport  # the check after the fixes
    changes: list[FixChange] = field(default_factory=list)
    tried: dict[str, list[int]] = field(default_factory=dict)
    still_failing: list[str] = field(default_factory=list)


def reroll_seeds(panel_id: str, seed: int | None, tries: int) -> list[int]:
    """`tries` new seeds for a panel: reproducible (a rerun of --fix tries the same ones) and never the
    panel's current seed."""
    out: list[int] = []
    i = 0
    while len(out) < tries:
        digest = hashlib.sha256(f"fix\x00{panel_id}\x00{seed}\x00{i}".encode()).digest()
        s = int.from_bytes(digest[:8], "big") % (MAX_SEED + 1)
        if s != seed and s not in out:
            out.append(s)
        i += 1
    return out


def panel_badness(
    path: Path,
    expected: Sequence[str],
    anchors: dict[str, Anchor],
    thresholds: dict[str, float],
    backend: Backend,
    detector: Detector | None,
    cache: FeatureCache,
    regions: Mapping[str, FracBox] | None = None,
) -> float:
    """Worst distance/threshold among the characters expected in an image; <= 1 means all on-model.

    A regional panel's candidates are assigned with the same regional prior as the check itself, so a
    candidate is judged on the same pairing the report would make.
    """
    crops = image_crops(path, backend, detector, cache)[0]
    size = image_size(path) if regions else (0, 0)
    chosen, dist = assign_crops(crops, expected, anchors, backend, regions, size)
    worst = 0.0
    for col, cid in enumerate(expected):
        if cid not in chosen:
            return math.inf
        worst = max(worst, float(dist[chosen[cid], col]) / thresholds[cid])
    return worst


def fix_panels(
    report: CheckReport,
    inp: CheckInput,
    *,
    backend: Backend,
    detector: Detector | None,
    render_candidates: RenderCandidates,
    record_pick: RecordPick,
    tries: int = 4,
    cache_dir: Path | None = None,
) -> FixResult:
    """Reroll the report's flagged panels; return what changed and the check run again afterwards."""
    analysis = analyse(inp, backend, detector, cache_dir)
    cache = FeatureCache(cache_dir)
    thresholds = {c.id: c.threshold for c in report.characters}
    specs = {p.panel_id: p for p in inp.panels}
    result = FixResult(report=report)
    for pid in report.flagged_panels:
        spec = specs[pid]
        before = panel_badness(
            spec.image, spec.characters, analysis.anchors, thresholds, backend, detector, cache, spec.regions
        )
        seeds = reroll_seeds(pid, spec.seed, tries)
        result.tried[pid] = seeds
        images = list(render_candidates(pid, seeds))  # one call: the renderer batches the seeds
        if len(images) != len(seeds):
            raise ValueError(f"render_candidates gave {len(images)} images for {len(seeds)} seeds")
        scored = [
            (
                panel_badness(
                    img, spec.characters, analysis.anchors, thresholds, backend, detector, cache, spec.regions
                ),
                s,
            )
            for img, s in zip(images, seeds, strict=True)
        ]
        best, seed = min(scored, key=lambda t: t[0])
        # A candidate that is no closer than what is there changes nothing: the panel stays byte-identical.
        if best < before:
            record_pick(pid, seed)
            result.changes.append(FixChange(pid, spec.seed, seed, before, best, best <= 1.0))
    if result.changes:
        new_seeds = {c.panel_id: c.new_seed for c in result.changes}
        inp = inp.model_copy(
            update={
                "panels": tuple(
                    p.model_copy(update={"seed": new_seeds.get(p.panel_id, p.seed)}) for p in inp.panels
                )
            }
        )
        result.report = analyse(inp, backend, detector, cache_dir).report
    result.still_failing = result.report.flagged_panels
    return result
