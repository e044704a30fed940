"""Issue 23 item 7 over HTTP (no browser): the review page's Direct box edits any ControlNet unit of a
panel, not only the first. On a panel with two units (the demo's pose, and a depth map added here):
editing control[1] changes only that unit's lines and the panel renders again as the story now
says; removing control[0] leaves the depth unit; adding a unit appends one; an index the panel does
not have is a 422 with a sentence, and no change goes through without the session token."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from storyboard.app.build import output_dir
from storyboard.app.review_ops import story_version
from storyboard.app.store import PanelStore
from storyboard.jobs import job_hash
from storyboard.render.draft import DraftRenderer
from storyboard.review import security
from storyboard.review.serve import make_session
from storyboard.review.server import Session, create_app
from storyboard.story.load import load_story
from storyboard.story.plan import plan
from tests.review_helpers import changed_lines, copy_demo

PORT = 8766
DEPTH_UNIT = """\
          # A depth map from the 3D blockout, lighter than the pose.
          - image: control/gate-depth.png
            module: none
            model: control_v11f1p_sd15_depth
            weight: 0.6
"""


def _size(story: Path) -> tuple[int, int]:
    job = next(j for j in plan(load_story(story)) if j.panel_id == "gate")
    return job.settings.width, job.settings.height


def add_depth_unit(story: Path) -> np.ndarray:
    """Give the demo's gate panel a second unit (a depth picture, written beside the story), after
    its pose; returns the picture."""
    text = story.read_text()
    anchor = "            guidance_end: 0.8\n"  # the end of the demo gate's one unit
    assert text.count(anchor) == 1
    w, h = _size(story)
    # At the panel's own size, so its map (module none, Crop and Resize) is the picture itself.
    depth = np.tile(np.linspace(0, 255, w, dtype=np.uint8)[None, :, None], (h, 1, 3))
    Image.fromarray(depth).save(story.parent / "control" / "gate-depth.png")
    story.write_text(text.replace(anchor, anchor + DEPTH_UNIT))
    assert len(load_story(story).story.panel("gate").control or []) == 2
    return depth


@pytest.fixture
def two_units(tmp_path: Path) -> Iterator[tuple[TestClient, Session, np.ndarray]]:
    story = copy_demo(tmp_path / "project")
    depth = add_depth_unit(story)
    session = make_session(story, tmp_path / "out", draft=True, host="127.0.0.1", port=PORT)
    with TestClient(create_app(session), base_url=f"http://127.0.0.1:{PORT}") as c:
        yield c, session, depth
    session.queue.close()


def _form(session: Session, **fields: str) -> dict[str, str]:
    base = {"init": "none", "mask": "none", "version": story_version(session.story)}
    return base | fields


def _post(c: TestClient, session: Session, action: str, data: dict[str, str]) -> str:
    r = c.post(f"/panel/gate/direct/{action}", data=data, headers={security.TOKEN_HEADER: session.token})
    assert r.status_code == 200, r.text
    return r.text


def _preview_and_keep(c: TestClient, session: Session, data: dict[str, str]) -> None:
    _post(c, session, "preview", data)
    assert session.queue.wait_idle(120)
    assert "Kept" in _post(c, session, "keep", {"version": data["version"]})
    assert session.queue.wait_idle(120)


def _stage(session: Session) -> Path:
    return output_dir(load_story(session.story), session.out, draft=True) / "direct" / "gate"


def test_editing_the_second_unit_changes_only_its_lines_and_renders_again(
    two_units: tuple[TestClient, Session, np.ndarray],
) -> None:
    c, session, depth = two_units
    story = session.story
    before = story.read_text()
    pose = load_story(story).story.panel("gate").control[0]  # type: ignore[index]
    page = c.get("/fragment/direct/gate").text
    # The box lists both units, each with its image, model and weight.
    assert "control/pose-pointing.png" in page and "control/gate-depth.png" in page
    assert 'name="control_unit" value="1"' in page and 'name="control_unit" value="2"' in page

    data = _form(
        session, control_unit="1", control="keep", control_module="none",
        control_model="control_v11f1p_sd15_depth", control_weight="0.35",
        guidance_start="0.2", guidance_end="1",
    )  # fmt: skip
    _post(c, session, "preview", data)
    assert session.queue.wait_idle(120)
    # Each unit's own map, as its ControlNet reads it: the depth picture itself (module none).
    maps = sorted(p.name for p in _stage(session).glob("control-map*.png"))
    assert maps == ["control-map-0.png", "control-map-1.png"]
    shown = np.asarray(Image.open(_stage(session) / "control-map-1.png").convert("RGB"))
    assert (shown == depth).all()
    page = c.get("/fragment/direct/gate").text
    assert "preprocessed map of control[1] of gate" in page
    assert story.read_text() == before  # a preview writes nothing

    assert "Kept" in _post(c, session, "keep", {"version": data["version"]})
    assert changed_lines(before, story.read_text()) == [
        "-            weight: 0.6",
        "+            weight: 0.35",
        "+            guidance_start: 0.2",
    ]
    units = load_story(story).story.panel("gate").control
    assert units is not None and len(units) == 2
    assert units[0] == pose  # the first unit as it was
    assert (str(units[1].image), units[1].model) == ("control/gate-depth.png", "control_v11f1p_sd15_depth")
    assert (units[1].weight, units[1].guidance_start, units[1].guidance_end) == (0.35, 0.2, 1.0)
    assert "# A depth map from the 3D blockout" in story.read_text()  # its comment kept

    # The panel renders again, as the story file now says.
    assert session.queue.wait_idle(120)
    last = session.queue.jobs()[-1]
    assert (last.kind, last.panel, last.state) == ("render", "gate", "done")
    job = next(j for j in plan(load_story(story)) if j.panel_id == "gate")
    root = output_dir(load_story(story), session.out, draft=True)
    record = PanelStore(root).read_manifest().panels["gate"]
    assert record.job_hash == job_hash(job, DraftRenderer())


def test_remove_the_first_unit_then_add_one(two_units: tuple[TestClient, Session, np.ndarray]) -> None:
    c, session, _ = two_units
    story = session.story
    before = story.read_text()
    data = _form(
        session, control_unit="0", control="none", control_module="none",
        control_model="control_v11p_sd15_openpose", control_weight="0.9",
    )  # fmt: skip
    _post(c, session, "preview", data)
    assert session.queue.wait_idle(120)
    # The depth unit keeps its place in the list the page shows; the removed one has no map.
    assert sorted(p.name for p in _stage(session).glob("control-map*.png")) == ["control-map-1.png"]
    assert "Kept" in _post(c, session, "keep", {"version": data["version"]})
    assert session.queue.wait_idle(120)
    removed = changed_lines(before, story.read_text())
    assert removed == [
        "-          - image: control/pose-pointing.png",
        "-            module: none",
        "-            model: control_v11p_sd15_openpose",
        "-            weight: 0.9",
        "-            guidance_end: 0.8",
    ], removed
    units = load_story(story).story.panel("gate").control
    assert units is not None
    assert [(str(u.image), u.weight) for u in units] == [("control/gate-depth.png", 0.6)]

    # Add a unit after the depth one (index 1: the list's length), from an uploaded picture.
    buf = io.BytesIO()
    Image.fromarray(np.full((32, 48, 3), 200, dtype=np.uint8)).save(buf, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    middle = story.read_text()
    data = _form(
        session, control_unit="1", control="new", control_data=url, control_module="invert",
        control_model="control_v11p_sd15_lineart", control_weight="0.5",
    )  # fmt: skip
    _preview_and_keep(c, session, data)
    assert changed_lines(middle, story.read_text()) == [
        "+          - {image: inputs/gate-control.png, module: invert, model: control_v11p_sd15_lineart, "
        "weight: 0.5}"
    ]
    units = load_story(story).story.panel("gate").control
    assert units is not None and [str(u.image) for u in units] == [
        "control/gate-depth.png",
        "inputs/gate-control.png",
    ]


def test_an_index_the_panel_lacks_is_a_sentence_and_the_token_is_checked(
    two_units: tuple[TestClient, Session, np.ndarray],
) -> None:
    c, session, _ = two_units
    before = session.story.read_text()
    jobs = len(session.queue.jobs())
    headers = {security.TOKEN_HEADER: session.token}
    for index, said in [
        ("5", "panel gate has 2 ControlNet unit(s) (control[0] to control[1]); there is no control[5]"),
        ("-1", "there is no control[-1]"),
        ("one", "a setting is not a number"),
    ]:
        data = _form(session, control_unit=index, control="keep", control_model="cn-x")
        r = c.post("/panel/gate/direct/preview", data=data, headers=headers)
        assert r.status_code == 422, (index, r.status_code)
        assert said in r.text and "Traceback" not in r.text, r.text
    data = _form(session, control_unit="1", control="none")
    for action in ("preview", "keep", "discard"):
        assert c.post(f"/panel/gate/direct/{action}", data=data).status_code == 403
    assert session.story.read_text() == before and len(session.queue.jobs()) == jobs


THREE_UNITS = """\
          - image: control/pose-pointing.png
            module: none
            model: control_v11p_sd15_openpose
            weight: 0.9  # strong
            # the middle one
          - image: control/b.png
            model: cn-b
            # the last one
          - {image: control/c.png, model: cn-c}
"""


@pytest.mark.parametrize(
    ("drop", "gone"),
    [
        (1, ["-          - image: control/b.png", "-            model: cn-b"]),
        (
            0,  # the first unit's end-of-line comment goes with it; the lines below it stay
            [
                "-          - image: control/pose-pointing.png",
                "-            module: none",
                "-            model: control_v11p_sd15_openpose",
                "-            weight: 0.9  # strong",
            ],
        ),
    ],
)
def test_a_removed_unit_takes_only_its_own_lines(tmp_path: Path, drop: int, gone: list[str]) -> None:
    """The story edit under the Direct box: units are matched, not shifted into each other's lines."""
    from storyboard.story.edit import direct_panel_text
    from storyboard.story.load import load_story_text

    story = copy_demo(tmp_path / "p")
    text = story.read_text()
    start = text.index("          - image: control/pose-pointing.png")
    end = text.index("      - id: listen")
    text = text[:start] + THREE_UNITS + text[end:]
    units = load_story_text(text, story).story.panel("gate").control
    assert units is not None and len(units) == 3
    kept = [u.model_dump(mode="json", exclude_unset=True) for i, u in enumerate(units) if i != drop]
    after = direct_panel_text(text, story, "gate", {"control": kept})
    assert changed_lines(text, after) == gone
    left = load_story_text(after, story).story.panel("gate").control
    assert left is not None and [u.model for u in left] == [u["model"] for u in kept]


def test_keep_on_a_symlinked_story_writes_its_target_and_the_link_stays(tmp_path: Path) -> None:
    """The page's Keep writes the user's file as `pick` does (issue 22 item 1): through a symlink."""
    story = copy_demo(tmp_path / "project")
    target = story.with_name("real-demo.yaml")
    story.rename(target)
    story.symlink_to(target.name)
    before = target.read_text()
    session = make_session(story, tmp_path / "out", draft=True, host="127.0.0.1", port=PORT)
    try:
        with TestClient(create_app(session), base_url=f"http://127.0.0.1:{PORT}") as c:
            data = _form(
                session, control_unit="0", control="keep", control_module="none",
                control_model="control_v11p_sd15_openpose", control_weight="0.5", guidance_end="0.8",
            )  # fmt: skip
            _preview_and_keep(c, session, data)
    finally:
        session.queue.close()
    assert story.is_symlink() and story.resolve() == target.resolve()
    assert changed_lines(before, target.read_text()) == [
        "-            weight: 0.9",
        "+            weight: 0.5",
    ]
