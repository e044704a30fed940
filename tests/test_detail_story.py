"""The face detailer's story settings (`detail:`): ADetailer's names and defaults, errors at the
story's file:line, the plan's per-character targets, and the job hash unchanged with it off."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from storyboard.story.detail import Detail
from storyboard.story.load import load_story_text
from storyboard.story.plan import plan
from tests.test_img2img_validate import run, said

STORY = """\
title: T
characters:
  a: {{lora: la, weight: 0.7, triggers: [red hair], detail: {{prompt: green eyes}}}}
  b: {{lora: lb, weight: 0.9, triggers: [blue jacket]}}
  c: {{lora: lc, triggers: [hat], detail: {{enabled: false}}}}
style:
  loras: [{{lora: st, weight: 0.5}}]
render: {{width: 64, height: 64{render}}}
layout: {{formats: [png], dpi: 20, page_numbers: false}}
pages:
  - panels:
      - {{id: two, scene: garden, characters: [a, b, c], seed: 7{panel}}}
      - {{id: one, scene: park, characters: [a], seed: 8}}
"""


def jobs(tmp_path: Path, render: str = "", panel: str = "") -> dict[str, object]:
    loaded = load_story_text(STORY.format(render=render, panel=panel), tmp_path / "s.yaml")
    return {j.panel_id: j for j in plan(loaded)}


def test_adetailer_defaults() -> None:
    d = Detail()
    assert (d.model, d.confidence, d.dilate_erode, d.mask_blur, d.denoising_strength) == (
        "anime face", 0.3, 4, 4, 0.4,
    )  # fmt: skip
    assert (d.inpaint_only_masked, d.inpaint_only_masked_padding) == (True, 32)
    assert (d.use_inpaint_width_height, d.inpaint_width, d.inpaint_height) == (False, 512, 512)
    assert (d.use_steps, d.steps, d.use_sampler, d.prompt, d.enabled) == (False, 28, False, "", True)


def test_off_by_default_and_off_keeps_the_hash(tmp_path: Path) -> None:
    today = jobs(tmp_path)
    off = jobs(tmp_path, render=", detail: {enabled: false}")
    panel_off = jobs(tmp_path, render=", detail: {}", panel=", render: {detail: {enabled: false}}")
    for name in ("two", "one"):
        assert today[name].detail is None  # type: ignore[attr-defined]
        assert "detail" not in today[name].pixel_spec()  # type: ignore[attr-defined]
        assert off[name].spec_digest() == today[name].spec_digest()  # type: ignore[attr-defined]
    assert panel_off["two"].spec_digest() == today["two"].spec_digest()  # type: ignore[attr-defined]
    assert panel_off["one"].spec_digest() != today["one"].spec_digest()  # type: ignore[attr-defined]


def test_each_target_has_its_own_prompt_and_loras_only(tmp_path: Path) -> None:
    j = jobs(tmp_path, render=", detail: {denoising_strength: 0.5, prompt: '[PROMPT], face'}")["two"]
    d = j.detail  # type: ignore[attr-defined]
    assert d.settings.denoising_strength == 0.5
    assert [t.character for t in d.targets] == ["a", "b"]  # c's detail is off: left alone
    a, b = d.targets
    assert [(u.name, u.owner) for u in a.loras] == [("la", "character:a"), ("st", "style")]
    assert [(u.name, u.owner) for u in b.loras] == [("lb", "character:b"), ("st", "style")]
    assert "red hair" in a.positive and "blue jacket" not in a.positive and "<lora:lb" not in a.positive
    assert a.positive.endswith("face, green eyes") and b.positive.endswith("face")
    assert a.region == (0.0, 0.0, 1 / 3, 1.0)  # three characters: columns (regions of the panel)
    assert j.pixel_spec()["detail"]["targets"][0]["character"] == "a"  # type: ignore[attr-defined]


def test_bad_detail_settings_are_sentences_at_file_line(tmp_path: Path) -> None:
    text = (
        STORY.format(render="", panel="")
        .replace("seed: 7}", "seed: 7, render: {detail: {confidence: 1.5}}}")
        .replace("seed: 8}", "seed: 8, render: {detail: {model: hands, ad_steps: 3}}}")
    )
    (tmp_path / "s.yaml").write_text(text)
    r = run("validate", "s.yaml", "--no-files", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    said(out, text, "id: two", "confidence", "1.5")
    said(out, text, "id: one", "model")
    said(out, text, "id: one", "ad_steps")


def test_who_is_who_by_the_checks_assignment() -> None:
    from storyboard.check.detail_assign import assign_faces

    size = (100, 100)
    cols = {"a": (0.0, 0.0, 0.5, 1.0), "b": (0.5, 0.0, 1.0, 1.0)}
    # Best first: b's face (right column) was found first; a crowd face only a lies near.
    boxes = [(60, 10, 80, 30), (10, 10, 30, 30), (20, 60, 30, 70)]
    assert assign_faces(boxes, size, ["a", "b"], cols) == ["b", "a", None]
    # Rows: a's region is the top quarter only; a face far below it is nobody's (b has no face).
    rows = {"a": (0.0, 0.0, 1.0, 0.25), "b": (0.0, 0.25, 1.0, 0.3)}
    assert assign_faces([(40, 90, 50, 100)], size, ["a", "b"], rows) == [None]
    # One character: the best face is theirs, the rest are left alone; no character: nobody's.
    assert assign_faces(boxes, size, ["a"], {}) == ["a", None, None]
    assert assign_faces(boxes, size, [], {}) == [None, None, None]
    # Two characters, no regions, no identity: nobody can be told apart, so nothing is re-drawn.
    assert assign_faces(boxes[:2], size, ["a", "b"], {}) == [None, None]
    # Identity distances (threshold units) overturn a region when clear, and refuse a stranger.
    dist = np.array([[0.2, 1.5], [1.5, 0.2], [1.8, 1.9]], np.float32)
    assert assign_faces(boxes, size, ["a", "b"], cols, dist) == ["a", "b", None]


def test_an_inpaint_is_detailed_once_its_base_not(tmp_path: Path) -> None:
    j = jobs(tmp_path, render=", detail: {}", panel=", inpaint: {box: [0.1, 0.1, 0.5, 0.5]}")["two"]
    assert j.detail is not None and j.base is not None  # type: ignore[attr-defined]
    assert j.base.detail is None  # type: ignore[attr-defined]


def test_a_face_seed_names_a_character_of_the_panel(tmp_path: Path) -> None:
    text = STORY.format(render="", panel="").replace(
        "seed: 8}", "seed: 8, render: {detail: {seeds: {b: 3}}}}"
    )
    (tmp_path / "s.yaml").write_text(text)
    r = run("validate", "s.yaml", "--no-files", cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    said(out, text, "id: one", "render.detail.seeds.b", "not a character of panel one")


def test_a_face_seed_changes_that_face_only(tmp_path: Path) -> None:
    from storyboard.render.detail import face_job

    plain = jobs(tmp_path, render=", detail: {}")["two"]
    seeded = jobs(tmp_path, render=", detail: {}", panel=", render: {detail: {seeds: {b: 99}}}")["two"]
    assert plain.spec_digest() != seeded.spec_digest()  # a new face seed is a new render
    a, b = seeded.detail.targets  # type: ignore[attr-defined]
    size, box = (64, 64), (1, 1, 9, 9)
    # a keeps the derived seed (panel seed + 1 + index); b's face gets the story's.
    assert [face_job(plain, t, box, size, k).seed for k, t in enumerate((a, b))] == [8, 9]  # type: ignore[arg-type]
    assert [face_job(seeded, t, box, size, k).seed for k, t in enumerate((a, b))] == [8, 99]  # type: ignore[arg-type]
