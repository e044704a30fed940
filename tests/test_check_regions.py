"""The regional prior in the check: a regional panel's boxes decide who is who when identity cannot,
a clear identity still wins over a wrong region, panels without regions are assigned as before, and
report.json carries whether each character was found in its region."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from check_helpers import BLUE, RED, draw_panel, make_input

from storyboard.check.assign import REGION_WEIGHT, assign, region_prior
from storyboard.check.ccip import PUBLISHED_THRESHOLD, CcipBackend
from storyboard.check.detect import YoloDetector
from storyboard.check.report import read_report, write_report
from storyboard.check.run import analyse, run_check
from storyboard.check.standin import write_all
from storyboard.check.types import CheckInput, CheckReport, FracBox

LEFT: FracBox = (0.0, 0.0, 0.5, 1.0)
RIGHT: FracBox = (0.5, 0.0, 1.0, 1.0)
STRIP0 = (0, 0, 64, 256)  # the stand-in detector's box for a figure in strip 0 of a 256px panel
STRIP3 = (192, 0, 256, 256)
PURPLE = (128, 40, 125)  # between Aki's red and Ben's blue


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[CcipBackend, YoloDetector]:
    m = write_all(tmp_path_factory.mktemp("models"))
    return CcipBackend.open(m["ccip"]), YoloDetector.open(m["detector"])


def with_regions(inp: CheckInput, panel_id: str, regions: dict[str, FracBox]) -> CheckInput:
    panels = tuple(
        p.model_copy(update={"regions": regions}) if p.panel_id == panel_id else p for p in inp.panels
    )
    return inp.model_copy(update={"panels": panels})


def boxes(report: CheckReport, panel_id: str) -> dict[str, object]:
    return {c: report.appearance(panel_id, c).box for c in ("aki", "ben")}  # type: ignore[union-attr]


def test_regions_decide_when_identity_is_a_tie(
    tmp_path: Path, models: tuple[CcipBackend, YoloDetector]
) -> None:
    backend, det = models
    inp = make_input(tmp_path)
    # p1.3: two identical purple figures, so both crops are exactly as far from Aki's prototype as
    # each other, and from Ben's: identity alone cannot tell them apart.
    draw_panel(tmp_path / "panels" / "p1.3.png", [(0, PURPLE), (3, PURPLE)])
    analysis = analyse(inp, backend, det, None)
    feats = analysis.crops["p1.3"].feats
    dist = np.stack([analysis.anchors[c].distance(backend, feats) for c in ("aki", "ben")], axis=1)
    assert dist.shape == (2, 2) and np.array_equal(dist[0], dist[1])

    aki_right = run_check(with_regions(inp, "p1.3", {"aki": RIGHT, "ben": LEFT}), backend, det, None)
    assert boxes(aki_right, "p1.3") == {"aki": STRIP3, "ben": STRIP0}
    aki_left = run_check(with_regions(inp, "p1.3", {"aki": LEFT, "ben": RIGHT}), backend, det, None)
    assert boxes(aki_left, "p1.3") == {"aki": STRIP0, "ben": STRIP3}
    for report in (aki_right, aki_left):
        assert all(report.appearance("p1.3", c).in_region for c in ("aki", "ben"))  # type: ignore[union-attr]


def test_a_clear_identity_wins_over_wrong_regions(
    tmp_path: Path, models: tuple[CcipBackend, YoloDetector]
) -> None:
    backend, det = models
    inp = make_input(tmp_path)  # p1.3: Ben (blue) in strip 0, Aki (red) in strip 3
    plain = run_check(inp, backend, det, None)
    wrong = run_check(with_regions(inp, "p1.3", {"aki": LEFT, "ben": RIGHT}), backend, det, None)
    assert boxes(wrong, "p1.3") == boxes(plain, "p1.3") == {"aki": STRIP3, "ben": STRIP0}
    assert [wrong.appearance("p1.3", c).in_region for c in ("aki", "ben")] == [False, False]  # type: ignore[union-attr]
    assert wrong.flagged_panels == plain.flagged_panels == ["p2.1"]


def test_the_weighting_lets_position_break_near_ties_only() -> None:
    # Two detections, centres in strips 0 and 3; regions say Aki left, Ben right.
    det_boxes = np.array([STRIP0, STRIP3], np.int64)
    prior = region_prior(det_boxes, (256, 256), ["aki", "ben"], {"aki": LEFT, "ben": RIGHT})
    assert prior is not None and prior.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    weight = REGION_WEIGHT * PUBLISHED_THRESHOLD
    # Identity prefers the swap by a little (less than one threshold in total): the regions win.
    near = np.array([[0.10, 0.08], [0.08, 0.10]], np.float32)
    assert assign(near) == {0: 1, 1: 0}
    assert assign(near, prior, weight) == {0: 0, 1: 1}
    # Identity prefers the swap clearly (each crop on-model for one, off-model for the other).
    clear = np.array([[0.26, 0.0], [0.0, 0.26]], np.float32)
    assert assign(clear, prior, weight) == {0: 1, 1: 0}
    # A centre just across the boundary costs a little, not the full prior.
    edge = region_prior(np.array([[100, 0, 160, 256]], np.int64), (256, 256), ["aki"], {"aki": LEFT})
    assert edge is not None and 0.0 < float(edge[0, 0]) < 0.2


def test_panels_without_regions_are_assigned_as_before(
    tmp_path: Path, models: tuple[CcipBackend, YoloDetector]
) -> None:
    backend, det = models
    inp = make_input(tmp_path)
    assert region_prior(np.array([STRIP0], np.int64), (256, 256), ["aki"], {"ben": LEFT}) is None
    plain = run_check(inp, backend, det, None)
    assert all(a.region is None and a.in_region is None for a in plain.appearances)
    # Regions that agree with identity change nothing but the region fields.
    right = run_check(with_regions(inp, "p1.3", {"aki": RIGHT, "ben": LEFT}), backend, det, None)
    stripped = right.model_copy(
        update={
            "appearances": [
                a.model_copy(update={"region": None, "in_region": None}) for a in right.appearances
            ]
        }
    )
    assert stripped == plain


def test_report_json_carries_the_region_fields(
    tmp_path: Path, models: tuple[CcipBackend, YoloDetector]
) -> None:
    backend, det = models
    inp = make_input(tmp_path)
    draw_panel(tmp_path / "panels" / "p1.3.png", [(0, BLUE)])  # Aki missing from her region
    draw_panel(tmp_path / "panels" / "p2.3.png", [(0, BLUE), (3, RED)])
    inp = with_regions(inp, "p1.3", {"aki": RIGHT, "ben": LEFT})
    inp = with_regions(inp, "p2.3", {"ben": RIGHT})  # Ben drawn on the left: outside his region
    report = run_check(inp, backend, det, None)
    files = write_report(report, inp)
    assert read_report(files["json"]) == report
    raw = json.loads(files["json"].read_text())
    regional = {
        (a["panel_id"], a["character"]): (a["region"], a["in_region"])
        for a in raw["appearances"]
        if a["region"] is not None
    }
    assert regional == {
        ("p1.3", "aki"): ([0.5, 0.0, 1.0, 1.0], None),  # expected there, not found
        ("p1.3", "ben"): ([0.0, 0.0, 0.5, 1.0], True),
        ("p2.3", "ben"): ([0.5, 0.0, 1.0, 1.0], False),
    }
    assert all(a["in_region"] is None for a in raw["appearances"] if a["region"] is None)
    html = files["html"].read_text()
    assert "Regional panels" in html and '<span class="ok">in its region<' in html
    assert "1 found outside their region" in html and "x 0.50-1.00, y 0.00-1.00" in html


def test_whole_panel_mode_has_no_position_to_compare(
    tmp_path: Path, models: tuple[CcipBackend, YoloDetector]
) -> None:
    backend, _ = models
    inp = with_regions(make_input(tmp_path), "p1.3", {"aki": RIGHT, "ben": LEFT})
    report = run_check(inp, backend, None, None)
    aki = report.appearance("p1.3", "aki")
    assert aki is not None and aki.region == RIGHT and aki.in_region is None and aki.whole_panel
