"""Bad img2img / inpaint input through `storyboard validate` (and `build`) in a subprocess: each
mistake one sentence at the story's file:line, exit code 2, no traceback, before anything loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]

HEAD = """title: T
render: {{width: 64, height: 64{render}}}
layout: {{formats: [png], dpi: 20, page_numbers: false}}
pages:
  - panels:
"""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", STORYBOARD_QUIET="1", COLUMNS="300", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "storyboard", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


def said(out: str, text: str, panel: str, *needles: str) -> None:
    """`out` has a line at the panel's line of the story that says every needle."""
    where = f"s.yaml:{line_of(text, panel)}:"
    lines = [line for line in out.splitlines() if where in line]
    assert any(all(n in line for n in needles) for line in lines), out


def write(tmp_path: Path, panels: str, render: str = "") -> str:
    text = HEAD.format(render=render) + panels
    (tmp_path / "s.yaml").write_text(text)
    return text


def test_missing_unreadable_wrong_mode_and_wrong_size_pictures(tmp_path: Path) -> None:
    (tmp_path / "notes.png").write_text("not a picture")
    Image.new("CMYK", (64, 64)).save(tmp_path / "cmyk.jpg")
    Image.new("RGB", (64, 64), "white").save(tmp_path / "rough.png")
    Image.new("L", (10, 10), 255).save(tmp_path / "small-mask.png")
    text = write(
        tmp_path,
        "      - {id: a, scene: x, init_image: roughs/missing.png}\n"
        "      - {id: b, scene: x, init_image: notes.png}\n"
        "      - {id: c, scene: x, init_image: cmyk.jpg}\n"
        "      - {id: d, scene: x, init_image: rough.png, inpaint: {mask: small-mask.png}}\n",
    )
    for cmd in (["validate", "s.yaml"], ["build", "s.yaml"]):
        r = run(*cmd, cwd=tmp_path)
        out = r.stdout + r.stderr
        assert r.returncode == 2, out
        said(out, text, "id: a", "missing.png does not exist")
        said(out, text, "id: b", "notes.png is not a readable image")
        said(out, text, "id: c", "has mode CMYK")
        said(out, text, "id: d", "small-mask.png is 10x10, but it must be 64x64")
        assert "pages[0].panels[3].inpaint.mask" in out
    assert not (tmp_path / "output").exists()  # nothing rendered, nothing written


def test_masks_that_cover_nothing_or_everything(tmp_path: Path) -> None:
    # The panels' size comes from their frames: read it from the plan the same way validate does.
    write(tmp_path, "      - {id: a, scene: x}\n" * 1)
    r = run("prompts", "s.yaml", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import json

    size = tuple(json.loads(r.stdout)[0]["size"])
    Image.new("L", size, 0).save(tmp_path / "empty.png")
    Image.new("L", size, 255).save(tmp_path / "full.png")
    Image.new("RGB", size, "white").save(tmp_path / "rough.png")
    text = write(
        tmp_path,
        "      - {id: a, scene: x, inpaint: {mask: empty.png}}\n"
        "      - {id: b, scene: x, inpaint: {mask: full.png}}\n"
        "      - {id: c, scene: x, inpaint: {box: [0.0, 0.0, 0.999, 1.0]}}\n"
        "      - {id: d, scene: x, init_image: rough.png, denoising_strength: 0}\n",
        render=", img2img_fix_steps: true",
    )
    r = run("validate", "s.yaml", "--no-files", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    said(out, text, "id: a", "the mask covers nothing of the panel's render")
    said(out, text, "id: b", "the mask covers all of the panel's render")
    said(out, text, "id: c", "the box covers all of the panel's render")
    said(out, text, "id: d", "with img2img_fix_steps the denoising strength")


def test_settings_out_of_range_are_refused_by_the_schema(tmp_path: Path) -> None:
    text = write(
        tmp_path,
        "      - {id: a, scene: x, init_image: r.png, denoising_strength: 1.5}\n"
        "      - {id: b, scene: x, inpaint: {box: [0.2, 0.2, 0.4, 0.4], masked_content: blur}}\n"
        "      - {id: c, scene: x, inpaint: {mask_blur: 4}}\n"
        "      - {id: d, scene: x, inpaint: {box: [0, 0, 1, 1]}}\n"
        "      - {id: e, scene: x, init_image: r.png, resize_mode: Stretch}\n",
    )
    r = run("validate", "s.yaml", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    said(out, text, "id: a", "denoising_strength", "1.5")
    said(out, text, "id: b", "masked_content")
    said(out, text, "id: c", "give a mask image or a box")
    said(out, text, "id: d", "the box covers the whole panel")
    said(out, text, "id: e", "resize_mode")
