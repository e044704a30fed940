"""Who is who with the check's identity model (a stand-in CCIP with the real names and layout):
the detailer runs `storyboard check`'s own assignment over its face crops."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from storyboard.app.detail import CheckFaceFinder
from storyboard.check.standin import write_ccip
from storyboard.check.standin_detail import write_face_detector
from storyboard.jobs import DetailJob, DetailTarget, PanelJob, RegionJob, RenderSettings
from storyboard.story.detail import Detail

# Panel fractions of the faces the stand-in detector finds: left, right, and a third in the middle.
FACES = [(0.05, 0.1, 0.35, 0.4), (0.6, 0.1, 0.9, 0.4), (0.4, 0.6, 0.6, 0.8)]
COLOURS = ["red", "blue", "green"]


def picture() -> Image.Image:
    im = Image.new("RGB", (100, 100), "white")
    draw = ImageDraw.Draw(im)
    for (x0, y0, x1, y1), colour in zip(FACES, COLOURS, strict=True):
        draw.rectangle([x0 * 100, y0 * 100, x1 * 100 - 1, y1 * 100 - 1], fill=colour)
    return im


def panel() -> PanelJob:
    detail = DetailJob(Detail(), (DetailTarget("a", "a", ()), DetailTarget("b", "b", ())))
    regions = (RegionJob("a", (0.0, 0.0, 0.5, 1.0), "a", ()), RegionJob("b", (0.5, 0.0, 1.0, 1.0), "b", ()))
    return PanelJob(
        "p", 1, 1, "x", "", (), 1, RenderSettings(), characters=("a", "b"), regions=regions, detail=detail
    )


def test_identity_overturns_the_columns_and_refuses_a_stranger(tmp_path: Path) -> None:
    models = tmp_path / "models"
    write_ccip(models)
    write_face_detector(models, FACES, [0.9, 0.8, 0.7])
    # a looks blue and b red: each stands in the other's column, and identity says so.
    for cid, colour in (("a", "blue"), ("b", "red")):
        Image.new("RGB", (64, 64), colour).save(tmp_path / f"{cid}.png")
    refs = {"a": [tmp_path / "a.png"], "b": [tmp_path / "b.png"]}
    job = panel()
    finder = CheckFaceFinder([job], models_dir=models, references=refs)
    faces = finder.find(picture(), job)
    assert [(f.box, f.character) for f in faces] == [
        ((5, 10, 35, 40), "b"),
        ((60, 10, 90, 40), "a"),
        ((40, 60, 60, 80), None),  # green: nobody's by identity
    ]
    assert "identity" in finder.identity(job)
    # Without references (or without the check's model) the regions decide, and the identity
    # key stays out of the job hash.
    plain = CheckFaceFinder([job], models_dir=models)
    assert [f.character for f in plain.find(picture(), job)] == ["a", "b", None]
    assert "identity" not in plain.identity(job)
