"""The face detailer as a user runs it: `storyboard build` in a subprocess from the story's folder,
relative paths, the detectors in the Hugging Face cache (or not), then the panel file read back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from storyboard.check.detail_models import FACE
from storyboard.check.standin_detail import write_face_detector
from storyboard.models.tiny import TinyModel
from storyboard.render.infotext import parse_infotext

ROOT = Path(__file__).resolve().parents[1]

STORY = """\
title: Faces
characters:
  a: {{lora: tiny_character_v1, weight: 1, triggers: [1girl, red hair], detail: {{prompt: green eyes}}}}
  b: {{lora: tiny-style, weight: 0.8, triggers: [1boy]}}
render:
  model: tiny-sd
  sampler: Euler
  steps: 3
  width: 64
  height: 64
  noise_source: cpu
  webui_root: {root}
  detail: {{denoising_strength: 0.5}}
layout: {{formats: [png], dpi: 20, page_numbers: false}}
pages:
  - panels:
      - {{id: two, scene: garden, characters: [a, b], seed: 3}}
"""


def run(*args: str, cwd: Path, hf: Path) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(hf), STORYBOARD_QUIET="1", COLUMNS="300",
        PYTHONPATH=str(ROOT),
    )  # fmt: skip
    r = subprocess.run(
        [sys.executable, "-m", "storyboard", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def story(tmp_path: Path, tiny: TinyModel) -> None:
    (tmp_path / "s.yaml").write_text(STORY.format(root=os.path.relpath(tiny.root, tmp_path)))


def test_missing_detector_is_a_sentence_before_anything_renders(tmp_path: Path, tiny: TinyModel) -> None:
    story(tmp_path, tiny)
    r = run("build", "s.yaml", cwd=tmp_path, hf=tmp_path / "hf")
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "face_detect_v1.4_s/model.onnx" in out and "storyboard models fetch detail" in out
    assert not list(tmp_path.glob("output/**/*.png"))
    f = run("models", "fetch", "detail", cwd=tmp_path, hf=tmp_path / "hf")
    assert f.returncode == 2 and "HF_HUB_OFFLINE" in f.stdout + f.stderr


def test_build_details_each_face_and_reports_the_stranger(tmp_path: Path, tiny: TinyModel) -> None:
    story(tmp_path, tiny)
    hf = tmp_path / "hf"
    snap = hf / f"models--{FACE.repo.replace('/', '--')}" / "snapshots" / FACE.revision
    # Two faces, one per character's column, and a third weaker one: two characters, three faces.
    write_face_detector(
        snap, [(0.1, 0.2, 0.3, 0.4), (0.6, 0.2, 0.8, 0.4), (0.4, 0.7, 0.5, 0.8)], [0.9, 0.8, 0.6]
    )
    r = run("build", "s.yaml", cwd=tmp_path, hf=hf)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "matches no character of the panel; left as rendered" in out
    [panel] = list(tmp_path.glob("output/s/panels/two.png"))
    p = parse_infotext(Image.open(panel).info["parameters"])
    assert "green eyes" in p["ADetailer prompt"] and "tiny_character_v1" in p["ADetailer prompt"]
    assert "tiny-style" in p["ADetailer prompt 2nd"] and "tiny_character" not in p["ADetailer prompt 2nd"]
    assert p["ADetailer denoising strength"] == "0.5" and p["ADetailer model"] == "face_detect_v1.4_s"
    faces = p["Detail faces"]
    assert faces.startswith("a [") and "; b [" in faces and "; nobody [" in faces
    again = run("build", "s.yaml", cwd=tmp_path, hf=hf)
    assert "rendered 0 panel(s), reused 1" in again.stdout, again.stdout
