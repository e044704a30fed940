"""Regional panels in the story file: format, validation with positions, defaults, masks, job hash,
infotext (no model needed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from storyboard.jobs import PanelJob
from storyboard.render.infotext import Infotext, parse_infotext
from storyboard.render.regions import blend_weights, box_mask, regional_infotext
from storyboard.story.load import StoryError, load_story, load_story_text
from storyboard.story.plan import plan
from storyboard.story.regions import parse_regions, split_boxes

ROOT = Path(__file__).resolve().parents[1]

STORY = """\
title: Regions
characters:
  iku: {{lora: iku, triggers: [1girl, iku]}}
  haru: {{lora: haru, weight: 0.8, triggers: [1boy, haru]}}
  mio: {{lora: mio, triggers: [mio]}}
style:
  loras: [{{lora: brush, weight: 0.6}}]
layout: {{reading_direction: {direction}}}
pages:
  - panels:
      - id: p
        scene: garden
        characters: {characters}
{extra}
"""


def story(tmp_path: Path, characters: str = "[iku, haru]", extra: str = "", direction: str = "ltr") -> str:
    return STORY.format(characters=characters, extra=extra, direction=direction)


def job_of(tmp_path: Path, **kw: str) -> PanelJob:
    [job] = plan(load_story_text(story(tmp_path, **kw), tmp_path / "s.yaml"))
    return job


def problems(tmp_path: Path, **kw: str) -> list[str]:
    with pytest.raises(StoryError) as err:
        load_story_text(story(tmp_path, **kw), tmp_path / "s.yaml")
    return err.value.problems


def test_two_characters_default_to_columns_in_listed_order(tmp_path: Path) -> None:
    job = job_of(tmp_path)
    assert [(r.character, r.box) for r in job.regions] == [
        ("iku", (0.0, 0.0, 0.5, 1.0)),
        ("haru", (0.5, 0.0, 1.0, 1.0)),
    ]
    iku, haru = job.regions
    # Each region carries its own character's triggers and LoRA, never the other's; style is shared.
    assert "iku" in iku.prompt_text and "haru" not in iku.prompt_text
    assert "haru" in haru.prompt_text and "iku" not in haru.prompt_text
    assert {u.name for u in iku.lora_set} == {"iku", "brush"}
    assert {u.name for u in haru.lora_set} == {"haru", "brush"}
    assert [u.name for u in job.shared_lora_set] == ["brush"]
    assert "1girl" not in job.shared_positive and "garden" in job.shared_positive
    # The panel's own set (files checked, hashes in the infotext) is every LoRA once.
    assert sorted(u.name for u in job.lora_set) == ["brush", "haru", "iku"]


def test_right_to_left_books_put_the_first_character_on_the_right(tmp_path: Path) -> None:
    job = job_of(tmp_path, direction="rtl")
    assert [(r.character, r.box) for r in job.regions] == [
        ("iku", (0.5, 0.0, 1.0, 1.0)),
        ("haru", (0.0, 0.0, 0.5, 1.0)),
    ]


def test_split_strings_assign_characters_in_order(tmp_path: Path) -> None:
    job = job_of(tmp_path, characters="[iku, haru, mio]", extra="        regions: rows 2,1,1")
    assert [r.box for r in job.regions] == [(0, 0, 1, 0.5), (0, 0.5, 1, 0.75), (0, 0.75, 1, 1)]
    assert job.positive.count(" ADDROW ") == 2


def test_boxes_and_region_prompts(tmp_path: Path) -> None:
    extra = """\
        regions:
          - {character: haru, box: [0.6, 0.1, 1, 1], prompt: holding guitar}
          - {character: iku, box: [0, 0.2, 0.4, 1]}"""
    job = job_of(tmp_path, extra=extra)
    assert [(r.character, r.box) for r in job.regions] == [
        ("haru", (0.6, 0.1, 1.0, 1.0)),
        ("iku", (0.0, 0.2, 0.4, 1.0)),
    ]
    assert "holding guitar" in job.regions[0].prompt_text
    assert "holding guitar" not in job.regions[1].prompt_text
    # Free boxes leave area to the shared prompt: Regional Prompter's base prompt comes first.
    assert job.positive.startswith(job.shared_positive + " ADDBASE ")


def test_regions_none_and_one_character_keep_todays_job(tmp_path: Path) -> None:
    none = job_of(tmp_path, extra="        regions: none")
    assert none.regions == () and "ADDCOL" not in none.positive
    alone = job_of(tmp_path, characters="[iku]")
    assert alone.regions == ()


def test_unchanged_jobs_keep_their_pixel_spec(tmp_path: Path) -> None:
    """A panel without regions hashes exactly as before regions existed (so caches stay valid):
    the digests below were computed by the code before this feature."""
    jobs = {j.panel_id: j for j in plan(load_story(ROOT / "stories" / "demo.yaml"))}
    assert not jobs["listen"].regions and "regions" not in jobs["listen"].pixel_spec()
    assert set(jobs["listen"].pixel_spec()) == {
        "positive", "negative", "loras", "seed", "model", "vae", "sampler", "schedule", "steps",
        "cfg_scale", "size", "clip_skip", "hires", "noise_source",
    }  # fmt: skip


def test_job_hash_changes_with_regions(tmp_path: Path) -> None:
    a = job_of(tmp_path, extra="        regions: columns 1,1")
    b = job_of(tmp_path, extra="        regions: columns 2,1")
    c = job_of(tmp_path, extra="        regions: none")
    assert len({a.spec_digest(), b.spec_digest(), c.spec_digest()}) == 3
    moved = replace(a, regions=(replace(a.regions[0], box=(0, 0, 0.4, 1)), a.regions[1]))
    assert moved.spec_digest() != a.spec_digest()
    other_set = replace(a, regions=(replace(a.regions[0], loras=()), a.regions[1]))
    assert other_set.spec_digest() != a.spec_digest()
    s = a.settings.model_copy(update={"regional": a.settings.regional.model_copy(update={"base_ratio": 0.2})})
    assert replace(a, settings=s).spec_digest() != a.spec_digest()
    assert replace(a, seed=a.seed + 1).spec_digest() != a.spec_digest()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("        regions: columns 1,1,1", "the split has 3 parts but the panel has 2 characters"),
        ("        regions: diagonal", "a split is 'columns' or 'rows'"),
        ("        regions: columns 1,-1", "positive numbers"),
        (
            "        regions:\n          - {character: iku, box: [0, 0, 1.5, 1]}\n"
            "          - {character: haru, box: [0, 0, 1, 1]}",
            "reaches outside the panel",
        ),
        (
            "        regions:\n          - {character: iku, box: [0.5, 0, 0.5, 1]}\n"
            "          - {character: haru, box: [0, 0, 1, 1]}",
            "is empty",
        ),
        (
            "        regions:\n          - {character: iku}\n          - {character: iku}",
            "'iku' has two regions",
        ),
        (
            "        regions:\n          - {character: iku}\n          - {character: mio}",
            "'mio' is not a character of this panel",
        ),
        ("        regions:\n          - {character: iku}", "no region for haru"),
        (
            "        regions:\n          - {character: iku, box: [0, 0, 0.5, 1]}\n"
            "          - {character: haru}",
            "give every region a box, or none",
        ),
    ],
)
def test_bad_regions_are_errors_with_file_and_line(tmp_path: Path, extra: str, needle: str) -> None:
    [problem] = problems(tmp_path, extra=extra)
    assert needle in problem
    # The position is the regions line (14, 1-based) or one of its entries below it.
    line = int(problem.split(":")[1])
    assert problem.startswith(str(tmp_path / "s.yaml")) and 14 <= line <= 16, problem


def test_unknown_region_character_in_story(tmp_path: Path) -> None:
    # An id the story does not know is reported at the panel's characters, where it was declared.
    out = problems(tmp_path, characters="[iku, hru]", extra="        regions: columns 1,1")
    assert any("unknown character 'hru'" in p and "Did you mean 'haru'" in p for p in out)


def test_masks_match_an_independent_computation() -> None:
    h, w, feather = 12, 16, 0.25
    left, right = split_boxes("columns", (), 2)
    weights, base = blend_weights([left, right], h, w, feather=feather, base_ratio=0.0)
    # Independently: the seam at x = 0.5 ramps over feather * min(h, w) latent cells.
    ramp_cells = feather * min(h, w)
    xs = np.arange(w) + 0.5
    expected_left = np.clip((w / 2 - xs) / ramp_cells + 0.5, 0, 1)
    assert np.allclose(weights[0], np.broadcast_to(expected_left, (h, w)), atol=1e-6)
    assert np.allclose(weights[1], 1 - expected_left, atol=1e-6)
    assert not base.any()  # columns tile the panel: no call for the shared prompt
    # The same boxes at the hires size are made there, not resized: still sharp where hard.
    hard, _ = blend_weights([left, right], 24, 32, feather=0.0, base_ratio=0.0)
    assert hard[0][:, :16].min() == 1 and hard[0][:, 16:].max() == 0


def test_base_ratio_and_uncovered_area_weights() -> None:
    box = (0.25, 0.25, 0.75, 0.75)
    weights, base = blend_weights([box], 8, 8, feather=0.0, base_ratio=0.3)
    inside = np.zeros((8, 8), bool)
    inside[2:6, 2:6] = True
    assert np.allclose(weights[0][inside], 0.7) and not weights[0][~inside].any()
    assert np.allclose(base[inside], 0.3) and np.allclose(base[~inside], 1.0)
    # Feathered edges inside the panel fade; edges on the panel border do not.
    m = box_mask((0.0, 0.0, 0.5, 1.0), 8, 8, feather=0.25)
    assert m[:, 0].min() == 1.0 and m[0, :].tolist() == m[-1, :].tolist()


def test_infotext_names_split_regions_and_settings(tmp_path: Path) -> None:
    job = job_of(tmp_path, extra="        regions: columns 1,3")
    info = Infotext(job.positive, job.negative, 20, "Euler", "Karras", 7.0, job.seed, 512, 512,
                    extra=regional_infotext(job))  # fmt: skip
    p = parse_infotext(info.text())
    assert p["RP Active"] == "True" and p["RP Calc Mode"] == "Latent"
    assert p["RP Divide mode"] == "Matrix" and p["RP Matrix submode"] == "Columns"
    assert p["RP Ratios"] == "0.25,0.75" and p["RP Base Ratios"] == "0" and p["RP LoRA Stop Step"] == "0"
    assert parse_regions(p["Regions"]) == [(r.character, r.box) for r in job.regions]
    # The prompt is Regional Prompter's: each region's words with its own LoRA tags, left to right.
    assert p["Prompt"].split(" ADDCOL ") == [r.positive for r in job.regions]
    assert "<lora:iku:1>" in p["Prompt"].split(" ADDCOL ")[0]
    assert "<lora:iku" not in p["Prompt"].split(" ADDCOL ")[1]
    assert regional_infotext(job_of(tmp_path, characters="[iku]")) == {}


def test_demo_meet_panel_puts_each_character_where_its_balloon_points() -> None:
    loaded = load_story(ROOT / "stories" / "demo.yaml")
    meet = next(j for j in plan(loaded) if j.panel_id == "meet")
    panel = loaded.story.panel("meet")
    assert {r.character for r in meet.regions} == {"iku", "haru"}
    boxes = {r.character: r.box for r in meet.regions}
    assert boxes["iku"][2] <= 0.5 <= boxes["haru"][0]  # Iku on the left, Haru on the right
    for line in panel.dialogue:
        assert line.speaker is not None and line.speaker_at is not None
        x0, y0, x1, y1 = boxes[line.speaker]
        assert x0 <= line.speaker_at[0] <= x1 and y0 <= line.speaker_at[1] <= y1


def test_doctests_of_the_regions_modules() -> None:
    # The suite does not collect doctests; these modules' examples are part of their contract.
    import doctest

    import storyboard.render.regions as regions_module
    import storyboard.story.plan as plan_module

    for module in (regions_module, plan_module):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0 and result.attempted > 0, module.__name__
