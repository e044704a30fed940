"""`check --fix` tries the face detailer before rerolling: each flagged panel is rendered with the
detailer on (its faces re-drawn with their own characters' LoRAs), scored against the characters'
anchors exactly as a reroll candidate is (``fix.panel_badness``), and kept when closer than the
panel as it is. The reroll that follows then starts from that panel and replaces it only with a
closer candidate: whichever result is closer to the anchor stays.

Rendering and story writing are injected, as in ``check/fix.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from storyboard.check.backend import Backend, Detector
from storyboard.check.cache import FeatureCache
from storyboard.check.fix import panel_badness
from storyboard.check.run import analyse
from storyboard.check.types import CheckInput, CheckReport

TryDetail = Callable[[str], Path | None]  # panel id -> the panel with the detailer on (None: cannot)
RecordDetail = Callable[[str], None]  # panel id: turn the detailer on in the story and build the panel


@dataclass(frozen=True)
class DetailFix:
    panel_id: str
    before: float  # worst distance/threshold over the panel's characters
    after: float
    passed: bool


def detail_first(
    report: CheckReport,
    inp: CheckInput,
    *,
    backend: Backend,
    detector: Detector | None,
    try_detail: TryDetail,
    record_detail: RecordDetail,
    cache_dir: Path | None = None,
) -> list[DetailFix]:
    """Detail each flagged panel; keep (record) those the detailer brought closer."""
    analysis = analyse(inp, backend, detector, cache_dir)
    cache = FeatureCache(cache_dir)
    thresholds = {c.id: c.threshold for c in report.characters}
    specs = {p.panel_id: p for p in inp.panels}
    out: list[DetailFix] = []
    for pid in report.flagged_panels:
        spec = specs[pid]
        image = try_detail(pid)
        if image is None:
            continue
        before, after = (
            panel_badness(
                path, spec.characters, analysis.anchors, thresholds, backend, detector, cache, spec.regions
            )
            for path in (spec.image, image)
        )
        if after < before:
            record_detail(pid)
            out.append(DetailFix(pid, before, after, after <= 1.0))
    return out
