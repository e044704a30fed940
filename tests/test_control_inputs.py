"""Input images a story names (ControlNet maps here): found beside the story, checked before anything
loads with a sentence at the field's line, and identified by content in the panel's job hash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from storyboard.input_images import image_digest, input_image_problem, load_input_image
from storyboard.story.load import StoryError, load_story
from storyboard.story.plan import plan

ROOT = Path(__file__).resolve().parents[1]

STORY = """\
title: T
render:
  width: 64
  height: 64
  control:
    - image: maps/default.png
      model: control_v11p_sd15_openpose
pages:
  - panels:
      - id: a
        scene: one
      - id: b
        scene: two
        control:
          - image: maps/pose.png
            model: control_v11p_sd15_openpose
            weight: 0.8
      - id: c
        scene: three
        control: []
"""


def _project(tmp_path: Path, text: str = STORY) -> Path:
    (tmp_path / "maps").mkdir(exist_ok=True)
    Image.new("RGB", (64, 64), (10, 20, 30)).save(tmp_path / "maps" / "default.png")
    Image.new("RGB", (64, 64), (200, 0, 0)).save(tmp_path / "maps" / "pose.png")
    story = tmp_path / "s.yaml"
    story.write_text(text)
    return story


def test_units_resolve_beside_the_story_and_enter_the_hash_by_content(tmp_path: Path) -> None:
    story = _project(tmp_path)
    jobs = {j.panel_id: j for j in plan(load_story(story))}
    assert [u.model for u in jobs["a"].control] == ["control_v11p_sd15_openpose"]  # the story default
    assert jobs["b"].control[0].weight == 0.8  # the panel's own list replaces it
    assert jobs["c"].control == () and "control" not in jobs["c"].pixel_spec()  # [] = none
    assert Path(jobs["b"].input_image("control 0").path) == (tmp_path / "maps" / "pose.png").absolute()
    before = {k: j.spec_digest() for k, j in jobs.items()}

    # The same pixels saved another way: nothing re-renders.
    Image.open(tmp_path / "maps" / "pose.png").save(tmp_path / "maps" / "pose.png", compress_level=0)
    again = {j.panel_id: j.spec_digest() for j in plan(load_story(story))}
    assert again == before

    # A changed pose: only the panel that uses it gets a new hash.
    Image.new("RGB", (64, 64), (0, 200, 0)).save(tmp_path / "maps" / "pose.png")
    after = {j.panel_id: j.spec_digest() for j in plan(load_story(story))}
    assert after["b"] != before["b"]
    assert after["a"] == before["a"] and after["c"] == before["c"]


def test_digest_is_of_the_pixels(tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("L", (9, 9), 7).save(a)
    Image.new("L", (9, 9), 7).save(b, compress_level=9)
    assert image_digest(a) == image_digest(b)
    Image.new("L", (9, 9), 8).save(b)
    assert image_digest(a) != image_digest(b)


def test_loading_composites_transparency_on_white(tmp_path: Path) -> None:
    p = tmp_path / "t.png"
    im = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    im.putpixel((1, 1), (255, 0, 0, 255))
    im.save(p)
    rgb = load_input_image(p)
    assert (
        rgb.mode == "RGB" and rgb.getpixel((0, 0)) == (255, 255, 255) and rgb.getpixel((1, 1)) == (255, 0, 0)
    )


@pytest.mark.parametrize(
    "make,needle",
    [
        (None, "does not exist"),
        (lambda p: p.write_bytes(b"not a png at all"), "is not a readable image"),
        (lambda p: Image.new("I;16", (16, 16)).save(p), "has mode I;16"),
        (lambda p: Image.new("RGB", (4, 64)).save(p), "is 4x64"),
    ],
)
def test_bad_image_is_a_sentence(tmp_path: Path, make, needle: str) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "x.png"
    if make is not None:
        make(p)
    problem = input_image_problem(p, what="control image")
    assert problem is not None and needle in problem and str(p) in problem


def test_every_bad_image_named_at_its_line(tmp_path: Path) -> None:
    story = _project(tmp_path, STORY.replace("maps/pose.png", "maps/pos.png"))
    with pytest.raises(StoryError) as exc:
        plan(load_story(story))
    assert exc.value.problems == [
        f"{story}:15:20: pages[0].panels[1].control[0].image: control image "
        f"{tmp_path / 'maps' / 'pos.png'} does not exist."
    ]


def _validate(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", STORYBOARD_QUIET="1", COLUMNS="250", PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-m", "storyboard", "validate", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def test_validate_reports_bad_units_with_relative_paths(tmp_path: Path) -> None:
    text = STORY.replace("maps/pose.png", "maps/missing.png").replace(
        "            weight: 0.8\n",
        "            weight: 0.8\n            guidance_start: 0.6\n            guidance_end: 0.3\n",
    )
    (tmp_path / "proj").mkdir()
    _project(tmp_path / "proj", text)
    r = _validate(tmp_path, "proj/s.yaml", "--no-files")
    assert r.returncode == 2
    out = r.stdout + r.stderr
    # The schema problem first (the file itself), then, once it is fixed, the missing image.
    assert "proj/s.yaml:19:27: pages[0].panels[1].control[0].guidance_end: guidance_end 0.3 is before" in out
    (tmp_path / "proj" / "s.yaml").write_text(text.replace("guidance_start: 0.6", "guidance_start: 0.2"))
    r = _validate(tmp_path, "proj/s.yaml", "--no-files")
    assert r.returncode == 2
    assert (
        "proj/s.yaml:15:20: pages[0].panels[1].control[0].image: control image proj/maps/missing.png "
        "does not exist." in " ".join((r.stdout + r.stderr).split())
    )
