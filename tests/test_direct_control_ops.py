"""The Direct box's ControlNet unit without a browser (app/direct_ops.py): a unit added to a panel
that had none is one flow mapping under a new `control:` key; "none" removes the panel's own list;
a preprocessor that needs downloaded weights is the renderer's sentence at the map, before anything
renders; canny's map is the renderer's canny at the same thresholds."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storyboard.app import direct_ops
from storyboard.errors import StoryboardError
from storyboard.jobs import ControlUnit
from storyboard.render.control.preprocess import detect, fit_map
from storyboard.story.load import load_story, load_story_text
from storyboard.story.plan import plan
from tests.story_helpers import changed_lines, copy_demo


def _upload(story: Path, out: Path, pid: str, size: tuple[int, int]) -> np.ndarray:
    arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    arr[size[1] // 4 : size[1] * 3 // 4, size[0] // 3 : size[0] * 2 // 3] = 255
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    direct_ops.stage_picture(story, out, pid, "control", buf.getvalue(), draft=True)
    return arr


def test_a_new_unit_on_a_panel_without_one_and_none_removes_it(tmp_path: Path) -> None:
    story = copy_demo(tmp_path / "p")
    out = tmp_path / "out"
    _upload(story, out, "listen", (64, 64))
    d = direct_ops.Direction(control="new", control_module="invert", control_model="cn-x", control_weight=0.5)
    before = story.read_text()
    after = direct_ops.keep_text(story, out, "listen", d, draft=True)
    assert changed_lines(before, after) == [
        "+        control:",
        "+          - {image: inputs/listen-control.png, module: invert, model: cn-x, weight: 0.5}",
    ]
    assert (story.parent / "inputs" / "listen-control.png").is_file()
    # "none" on the demo's posed panel: its own unit (and only that) goes.
    removed = direct_ops.keep_text(story, out, "gate", direct_ops.Direction(control="none"), draft=True)
    assert load_story_text(removed, story).story.panel("gate").control is None
    lines = changed_lines(before, removed)
    assert lines[0] == "-        control:" and all(line.startswith("-") for line in lines), lines


def test_the_map_is_the_renderers_and_a_weighted_module_is_a_sentence(tmp_path: Path) -> None:
    story = copy_demo(tmp_path / "p")
    out = tmp_path / "out"
    before = story.read_text()
    arr = _upload(story, out, "listen", (100, 80))
    d = direct_ops.Direction(control="new", control_module="canny", control_model="cn-x")
    [path] = direct_ops.control_maps(story, out, "listen", d, draft=True)
    assert path.name == "control-map-0.png"
    shown = np.asarray(Image.open(path).convert("RGB"))
    job = next(j for j in plan(load_story(story)) if j.panel_id == "listen")
    first = (job.settings.width, job.settings.height)
    unit = ControlUnit(image=Path("x.png"), module="canny", model="cn-x")
    expected = fit_map(detect(Image.fromarray(arr), unit, first), first, "Crop and Resize")
    assert shown.shape == (first[1], first[0], 3) and (shown == expected).all()
    assert set(np.unique(shown)) == {0, 255}  # edges found, binary
    with pytest.raises(StoryboardError, match="openpose"):
        direct_ops.control_maps(story, out, "listen", direct_ops.Direction(
            control="new", control_module="openpose", control_model="cn-x"), draft=True)  # fmt: skip
    assert (
        story.read_text() == before and not (story.parent / "inputs").exists()
    )  # the map writes nothing there
