"""The check end to end on PNG files: a planted off-model panel is flagged, report.json reads back,
the embedding cache embeds only what changed, and the CLIP backend runs on a tiny random config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from check_helpers import BLUE, RED, draw_panel, make_input
from PIL import Image

from storyboard.check.ccip import CcipBackend
from storyboard.check.detect import YoloDetector
from storyboard.check.report import read_report, summary_table, write_report
from storyboard.check.run import run_check
from storyboard.check.standin import write_all


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[CcipBackend, YoloDetector]:
    m = write_all(tmp_path_factory.mktemp("models"))
    return CcipBackend.open(m["ccip"]), YoloDetector.open(m["detector"])


class Counting:
    """Wraps a backend and counts the images it embeds."""

    def __init__(self, inner: CcipBackend) -> None:
        self.inner = inner
        self.name, self.model_id = inner.name, inner.model_id
        self.default_threshold = inner.default_threshold
        self.embedded = 0

    def embed(self, images):  # type: ignore[no-untyped-def]
        self.embedded += len(images)
        return self.inner.embed(images)

    def distances(self, a, b):  # type: ignore[no-untyped-def]
        return self.inner.distances(a, b)

    def prototype(self, f):  # type: ignore[no-untyped-def]
        return self.inner.prototype(f)


def test_planted_off_model_panel_is_flagged(tmp_path: Path, models: tuple[CcipBackend, YoloDetector]) -> None:
    backend, det = models
    inp = make_input(tmp_path)
    report = run_check(inp, backend, det, tmp_path / "cache")
    assert report.flagged_panels == ["p2.1"]
    aki = next(c for c in report.characters if c.id == "aki")
    assert aki.anchor == "prototype"
    assert aki.flagged == ["p2.1"]
    assert aki.main_cluster == ["p1.1", "p1.3", "p2.2"]  # the green panel is not part of the prototype
    # p1.3 has both: each character got the figure in its colour (Aki is on the right, strip 3)
    assert report.appearance("p1.3", "aki").box == (192, 0, 256, 256)  # type: ignore[union-attr]
    assert report.appearance("p1.3", "ben").box == (0, 0, 64, 256)  # type: ignore[union-attr]
    assert all(p.occm == 100.0 for p in report.panels)

    files = write_report(report, inp)
    back = read_report(files["json"])
    assert back == report
    raw = json.loads(files["json"].read_text())
    off = [a for a in raw["appearances"] if a["off_model"]]
    assert [(a["panel_id"], a["character"]) for a in off] == [("p2.1", "aki")]
    assert off[0]["distance"] > 0.178475
    html = files["html"].read_text()
    assert "p2.1 &middot; " in html and "off-model" in html
    for a in back.appearances:
        assert a.crop and (inp.out_dir / a.crop).is_file()
    assert summary_table(report).row_count == 2


def test_reference_anchor_and_missing_and_extra(
    tmp_path: Path, models: tuple[CcipBackend, YoloDetector]
) -> None:
    backend, det = models
    ref = draw_panel(tmp_path / "refs" / "aki.png", [(2, RED)])
    inp = make_input(tmp_path, {"aki": [ref]})
    # p1.3 loses Aki, p2.3 gains a stranger
    draw_panel(tmp_path / "panels" / "p1.3.png", [(0, BLUE)])
    draw_panel(tmp_path / "panels" / "p2.3.png", [(1, BLUE), (3, (120, 120, 120))])
    report = run_check(inp, backend, det, None)
    aki = next(c for c in report.characters if c.id == "aki")
    assert aki.anchor == "reference"
    assert report.flagged_panels == ["p2.1"]
    p13 = next(p for p in report.panels if p.panel_id == "p1.3")
    assert p13.missing == ["aki"] and p13.occm == pytest.approx(100 * 2.718281828**-0.5, rel=1e-5)
    p23 = next(p for p in report.panels if p.panel_id == "p2.3")
    assert p23.extra == 1 and report.appearance("p2.3", "ben").box == (64, 0, 128, 256)  # type: ignore[union-attr]
    missing = report.appearance("p1.3", "aki")
    assert missing is not None and missing.box is None and not missing.off_model


def test_no_detector_uses_whole_panels(tmp_path: Path, models: tuple[CcipBackend, YoloDetector]) -> None:
    backend, _ = models
    report = run_check(make_input(tmp_path), backend, None, None)
    assert report.detector is None and "whole panel" in report.notes[0]
    assert all(a.whole_panel for a in report.appearances)


def test_second_run_embeds_only_the_changed_panel(
    tmp_path: Path, models: tuple[CcipBackend, YoloDetector]
) -> None:
    backend, det = models
    counting = Counting(backend)
    inp = make_input(tmp_path)
    first = run_check(inp, counting, det, tmp_path / "cache")  # type: ignore[arg-type]
    assert len(first.embedded_panels) == 6
    n_first = counting.embedded
    counting.embedded = 0
    draw_panel(tmp_path / "panels" / "p2.1.png", [(2, RED)])  # the reroll fixed Aki
    second = run_check(inp, counting, det, tmp_path / "cache")  # type: ignore[arg-type]
    assert second.embedded_panels == ["p2.1"]
    assert counting.embedded == 1 < n_first
    assert second.flagged_panels == []


def test_clip_backend_with_tiny_random_config(tmp_path: Path) -> None:
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from storyboard.check.clip_backend import ClipBackend

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cfg = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    folder = tmp_path / "clip-vit-large-patch14"
    CLIPVisionModelWithProjection(cfg).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    clip = ClipBackend.open(folder, device="cpu")
    a = Image.new("RGB", (40, 60), (200, 20, 20))
    b = Image.new("RGB", (40, 60), (20, 20, 200))
    f = clip.embed([a, a.copy(), b])
    assert f.shape == (3, 16)
    d = clip.distances(f, f)
    assert d[0, 1] == pytest.approx(0.0, abs=1e-5) and d[0, 2] > 1e-4
    inp = make_input(tmp_path / "story")
    report = run_check(inp, clip, None, None)
    assert report.backend == "clip" and len(report.appearances) == 7
