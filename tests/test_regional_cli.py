"""Regional panels as a user meets them, through `storyboard ...` in a subprocess with relative paths:
a one-character panel with a one-region split is the plain panel, byte for byte; region mistakes
point at the line of the region at fault; the regional options are checked and written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from storyboard.models.tiny import TinyModel
from storyboard.render.infotext import parse_infotext

ROOT = Path(__file__).resolve().parents[1]


def storyboard(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", STORYBOARD_QUIET="1", COLUMNS="200", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "storyboard", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


HEAD = """\
title: One
characters:
  a: {lora: tiny_character_v1, triggers: [1girl, red hair]}
  b: {lora: tiny-style, weight: 0.8, triggers: [1boy]}
render:
  model: tiny-sd
  webui_root: webui
  sampler: Euler
  steps: 3
  width: 64
  height: 64
  noise_source: cpu
layout: {formats: [png], dpi: 20, page_numbers: false}
pages:
"""

# One panel per page: every panel gets the same frame, hence the same render size.
ONE_REGION = """\
  - panels: [{id: plain, scene: garden, characters: [a], seed: 5}]
  - panels: [{id: columns, scene: garden, characters: [a], seed: 5, regions: columns}]
  - panels: [{id: rows, scene: garden, characters: [a], seed: 5, regions: rows 1}]
  - panels: [{id: box, scene: garden, characters: [a], seed: 5, regions: [{character: a, box: [0, 0, 1, 1]}]}]
  - panels: [{id: listed, scene: garden, characters: [a], seed: 5, regions: [{character: a}]}]
  - panels: [{id: words, scene: garden, characters: [a], seed: 5, regions: [{character: a, prompt: smiling}]}]
  - panels: [{id: plain-words, scene: "garden, smiling", characters: [a], seed: 5}]
"""


@pytest.fixture(scope="module")
def project(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder whose story reaches the tiny model by a relative path."""
    folder = tmp_path_factory.mktemp("project")
    (folder / "webui").symlink_to(tiny.root)
    return folder


TWO = """\
  - panels: [{id: two, scene: garden, characters: [a, b], seed: 5}]
  - panels:
      - {id: two-shared, scene: garden, characters: [a, b], seed: 5,
         render: {regional: {negative_loras: shared}}}
"""


@pytest.fixture(scope="module")
def built(project: Path) -> tuple[Path, dict[str, Any]]:
    """`storyboard build one.yaml --out out` in the project folder: its panels and manifest records."""
    (project / "one.yaml").write_text(HEAD + ONE_REGION + TWO)
    r = storyboard("build", "one.yaml", "--out", "out", cwd=project)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((project / "out" / "one" / "manifest.json").read_text())
    return project / "out" / "one" / "panels", manifest["panels"]


def test_a_one_region_split_on_a_one_character_panel_renders_as_the_plain_panel(
    built: tuple[Path, dict[str, Any]],
) -> None:
    panels, records = built

    def same(a: str, b: str) -> None:
        assert (panels / f"{a}.png").read_bytes() == (panels / f"{b}.png").read_bytes(), (a, b)
        assert records[a]["job_hash"] == records[b]["job_hash"], (
            a,
            b,
        )  # one job: one render, one cache entry

    for pid in ("columns", "rows", "box", "listed"):
        same(pid, "plain")
    same("words", "plain-words")  # the region's words join the scene, as they would in a region
    info = parse_infotext(Image.open(panels / "columns.png").info["parameters"])
    assert "RP Active" not in info and "ADDCOL" not in info["Prompt"]
    assert (panels / "words.png").read_bytes() != (panels / "plain.png").read_bytes()


def test_regional_option_is_written_in_the_infotext_and_enters_the_job_hash(
    built: tuple[Path, dict[str, Any]],
) -> None:
    panels, records = built
    for pid, mode in (("two", "region"), ("two-shared", "shared")):
        info = parse_infotext(Image.open(panels / f"{pid}.png").info["parameters"])
        assert info["Region negative LoRAs"] == mode and info["RP Active"] == "True"
    assert records["two"]["job_hash"] != records["two-shared"]["job_hash"]
    assert (panels / "two.png").read_bytes() != (panels / "two-shared.png").read_bytes()


BAD = """\
  - panels:
      - scene: garden
        characters: [a, b]
        regions:
          - character: a
            box: [0, 0, 0.5]
          - character: b
            box: [0.5, 0, 1, 1]
      - scene: park
        characters: [a, b]
        regions:
          - character: a
          - character: c
      - scene: park
        characters: [a, b]
        regions:
          - {character: a, box: [0, 0, 0.5, 1]}
          - {character: b}
      - scene: park
        characters: [a, b]
        regions:
          - {character: b}
          - {character: b}
"""


def test_region_mistakes_point_at_the_region_at_fault(project: Path) -> None:
    (project / "bad.yaml").write_text(HEAD + BAD)
    r = storyboard("validate", "bad.yaml", cwd=project)
    assert r.returncode == 2
    lines = [line.strip() for line in r.stderr.splitlines() if line.strip().startswith("bad.yaml:")]
    first = HEAD.count("\n") + 1  # the line of BAD's first line in the file

    def at(line_in_bad: int, col: int) -> str:
        return f"bad.yaml:{first + line_in_bad}:{col}: "

    expected = [
        at(5, 18) + "pages[0].panels[0].regions[0].box: a box is [x0, y0, x1, y1]",
        at(12, 24) + "pages[0].panels[1].regions[1].character: 'c' is not a character of this panel",
        at(17, 13) + "pages[0].panels[2].regions[1]: this region has no box but regions[0] has one",
        at(22, 25) + "pages[0].panels[3].regions[1].character: 'b' has two regions",
    ]
    assert len(lines) == len(expected), r.stderr
    for line, start in zip(lines, expected, strict=True):
        assert line.startswith(start), (line, start)
    assert "this one has 3 numbers" in lines[0]


def test_an_unknown_negative_loras_value_names_the_choices_at_its_line(project: Path) -> None:
    panel = (
        "  - panels: [{id: two, scene: x, characters: [a, b], render: {regional: {negative_loras: both}}}]\n"
    )
    (project / "option.yaml").write_text(HEAD + panel)
    r = storyboard("validate", "option.yaml", cwd=project)
    assert r.returncode == 2
    [line] = [line.strip() for line in r.stderr.splitlines() if line.strip().startswith("option.yaml:")]
    assert line.startswith(f"option.yaml:{HEAD.count(chr(10)) + 1}:"), line
    assert "negative_loras" in line and "'region'" in line and "'shared'" in line and "both" in line


def test_regional_panels_get_a_new_job_hash_and_plain_panels_keep_theirs(project: Path) -> None:
    """No ENGINE_VERSION bump: the regional settings (now with negative_loras) enter only a regional
    panel's job hash, so exactly those re-render after this change."""
    from storyboard.story.load import load_story_text
    from storyboard.story.plan import plan

    jobs = {j.panel_id: j for j in plan(load_story_text(HEAD + ONE_REGION + TWO, project / "h.yaml"))}
    assert jobs["two"].pixel_spec()["regional"]["negative_loras"] == "region"
    assert jobs["two-shared"].pixel_spec()["regional"]["negative_loras"] == "shared"
    for pid in ("plain", "columns", "words"):
        assert "regional" not in jobs[pid].pixel_spec() and not jobs[pid].regions
