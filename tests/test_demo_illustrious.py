"""stories/demo-illustrious.yaml, through the real CLI: valid, and its draft build has the planned sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "stories" / "demo-illustrious.yaml"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", STORYBOARD_QUIET="1", COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "storyboard.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_demo_illustrious_validates_and_drafts_at_planned_sizes(tmp_path: Path) -> None:
    # cwd is tmp_path so that nothing in the story can lean on the checkout's working directory.
    r = cli("validate", str(DEMO), "--no-files", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "3 pages, 8 panels, 2 characters" in r.stdout

    r = cli("prompts", str(DEMO), "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = {row["panel"]: row for row in json.loads(r.stdout)}
    meet = rows["meet"]
    assert meet["positive"].startswith("masterpiece, best quality, amazing quality")  # the preset
    assert [lo["owner"] for lo in meet["lora_owners"]] == ["character:iku", "character:haru", "style"]
    for row in rows.values():
        (w, h), (ow, oh) = row["size"], row["output_size"]
        # An SDXL budget (832x1216, ~1 MP) in each frame's shape, then hires fix at 1.5x.
        assert 0.8e6 <= w * h <= 1.1e6, row
        assert (ow, oh) == (int(w * 1.5) // 8 * 8, int(h * 1.5) // 8 * 8), row  # WebUI's latent

    out = tmp_path / "out"
    r = cli("build", str(DEMO), "--draft", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    draft = out / "demo-illustrious" / "draft"
    for panel, row in rows.items():
        assert Image.open(draft / "panels" / f"{panel}.png").size == tuple(row["output_size"]), panel
    assert len(list(draft.glob("*.pdf"))) == 1 and len(list(draft.glob("*.cbz"))) == 1


def test_demo_illustrious_points_nowhere_outside_the_project() -> None:
    # Stories are copied and shared on their own; a path into ../shared would only work here.
    assert "shared" not in DEMO.read_text()


def test_demo_illustrious_balloons_point_into_their_speakers_regions() -> None:
    # Nothing enforces this in the schema; a balloon pointing at the other character's half would
    # be the kind of mistake a user copies from a demo.
    import yaml

    story = yaml.safe_load(DEMO.read_text())
    regional = [p for page in story["pages"] for p in page["panels"] if "regions" in p]
    assert len(regional) >= 1
    for panel in regional:
        boxes = {r["character"]: r["box"] for r in panel["regions"]}
        assert len(boxes) == 2 and {boxes[c][0] for c in boxes} == {0, 0.5}  # left/right halves
        for line in panel.get("dialogue", []):
            x0, y0, x1, y1 = boxes[line["speaker"]]
            x, y = line["speaker_at"]
            assert x0 <= x <= x1 and y0 <= y <= y1, (panel["id"], line)
