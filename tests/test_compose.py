"""Composer: exact prompts for the demo story, template errors, sandboxing; seeds derived from ids."""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import pytest

from storyboard.errors import StoryboardError
from storyboard.story.compose import tidy
from storyboard.story.load import load_story, load_story_text
from storyboard.story.plan import derive_seed, plan

ROOT = Path(__file__).resolve().parents[1]

DEMO_NEGATIVE = (
    "EasyNegative, (worst quality, low quality:1.4), (lip, nose, rouge, lipstick:1.4), (jpeg artifacts:1.4), "
    "dusty sunbeams, trembling, motion lines, motion blur, emphasis lines, text, title, logo, signature, "
    "greyscale, monochrome"
)
QUALITY = "(masterpiece), (best quality), (ultra-detailed), chibi, cute"


def test_demo_prompts_exact():
    jobs = {j.panel_id: j for j in plan(load_story(ROOT / "stories" / "demo.yaml"))}
    assert jobs["gate"].positive == (
        f"{QUALITY}, 1girl, iku nakatani, short black hair, school uniform, (full body:1.2), school gate, "
        "morning, cherry blossoms, walking, <lora:Iku_Nakatani-000016_v1.0:1>, <lora:blindbox_v1_mix:0.6>"
    )
    assert jobs["gate"].negative == DEMO_NEGATIVE + ", (long hair:1.2)"
    # meet has regions: each region's prompt is the panel composed with only its character, and the
    # panel's prompt is Regional Prompter's (left to right, ADDCOL), each region with its own tags.
    iku, haru = jobs["meet"].regions
    assert iku.positive == (
        f"{QUALITY}, 1girl, iku nakatani, short black hair, school uniform, flower garden, outdoors, "
        "standing, two people, blush, waving, <lora:Iku_Nakatani-000016_v1.0:1>, <lora:blindbox_v1_mix:0.6>"
    )
    assert haru.positive == (
        f"{QUALITY}, 1boy, haru, messy brown hair, green jacket, flower garden, outdoors, standing, "
        "two people, blush, holding guitar, <lora:Haru_guitar_boy_v2:0.8>, <lora:blindbox_v1_mix:0.6>"
    )
    assert jobs["meet"].positive == f"{iku.positive} ADDCOL {haru.positive}"
    assert jobs["garden"].negative == DEMO_NEGATIVE
    assert [(u.name, u.te, u.unet) for u in jobs["meet"].loras] == [
        ("Iku_Nakatani-000016_v1.0", 1.0, 1.0),
        ("Haru_guitar_boy_v2", 0.8, 0.8),
        ("blindbox_v1_mix", 0.6, 0.6),
    ]
    # tags are removed before encoding and, as in WebUI, their separating commas stay
    assert iku.prompt_text.endswith("blush, waving, , ")
    assert "<lora" not in iku.prompt_text
    assert jobs["play"].seed == 3447412781  # explicit seed kept
    assert jobs["gate"].seed == derive_seed("The Garden Concert", "gate")
    # gate's frame is landscape: rendered 616x464 (about the 448x640 budget), 1232x928 after hires
    assert jobs["gate"].size == (616, 464) and jobs["gate"].output_size == (1232, 928)


def test_renders_take_their_frames_shape_at_the_pixel_budget():
    from storyboard.story.frames import panel_frames

    loaded = load_story(ROOT / "stories" / "demo.yaml")
    frames = panel_frames(loaded)
    budget = 448 * 640
    for job in plan(loaded):
        fw, fh = frames[job.panel_id].frame
        w, h = job.size
        assert w % 8 == 0 and h % 8 == 0
        assert abs((w / h) / (fw / fh) - 1) < 0.05, job.panel_id
        # An img2img panel (the demo's rough) renders in one pass at the final, hires size.
        hr = loaded.panel_render[job.panel_id].hires
        scale = hr.scale if job.img2img is not None and hr is not None else 1.0
        assert abs(w * h / (budget * scale * scale) - 1) < 0.10, job.panel_id
    assert {frames[j].page_template for j in ("gate", "listen", "garden")} == {"establishing-1-2"}


def test_seed_derivation_is_independent_and_stable():
    # independent computation of the documented rule
    d = hashlib.sha256(b"The Garden Concert\x00gate").digest()
    assert derive_seed("The Garden Concert", "gate") == int.from_bytes(d[:8], "big") % 4294967295
    assert derive_seed("a", "p1.1") != derive_seed("a", "p1.2")
    assert derive_seed("a", "p1.1") != derive_seed("b", "p1.1")


STORY = """\
title: Seeds
characters:
  ann: {lora: ann_v1, triggers: [ann]}
pages:
  - panels:
      - {id: one, scene: a}
      - {id: two, scene: b}
      - {id: three, scene: c}
"""


def test_inserting_a_panel_keeps_other_seeds(tmp_path):
    before = {j.panel_id: j.seed for j in plan(load_story_text(STORY, tmp_path / "s.yaml"))}
    inserted = STORY.replace("      - {id: two", "      - {id: new, scene: z}\n      - {id: two")
    after = {j.panel_id: j.seed for j in plan(load_story_text(inserted, tmp_path / "s.yaml"))}
    assert all(after[k] == v for k, v in before.items())
    assert after["new"] not in before.values()


def _with_template(tmp_path: Path, positive: str, negative: str = "{{ negative }}") -> Path:
    d = tmp_path / "templates" / "prompts" / "mine"
    d.mkdir(parents=True)
    (d / "positive.j2").write_text(positive)
    (d / "negative.j2").write_text(negative)
    return tmp_path / "s.yaml"


def test_story_template_overrides_default(tmp_path):
    path = _with_template(tmp_path, "{{ scene }}\n{% for c in characters %}{{ c.name }}{% endfor %}\n")
    text = STORY.replace("pages:", "render: {template: mine, negative: bad}\npages:").replace(
        "{id: one, scene: a}", "{id: one, scene: a, characters: [ann]}"
    )
    jobs = plan(load_story_text(text, path))
    # The template left the LoRA tag out; the character's LoRA is data, so it is still applied, and
    # its tag is added to the shown prompt so the infotext says what was applied.
    assert jobs[0].positive == "a, ann, <lora:ann_v1:1>" and jobs[0].negative == "bad"
    assert [(u.name, u.owner) for u in jobs[0].loras] == [("ann_v1", "character:ann")]


def test_lora_uses_carry_their_owners(tmp_path):
    text = STORY.replace("{id: one, scene: a}", "{id: one, scene: 'a <lora:hat:0.5>', characters: [ann]}")
    job = plan(load_story_text(text, tmp_path / "s.yaml"))[0]
    assert [(u.name, u.te, u.owner) for u in job.loras] == [
        ("hat", 0.5, "prompt"),
        ("ann_v1", 1.0, "character:ann"),
    ]
    assert job.owned_by("character:ann")[0].tag() in job.positive


def test_undefined_variable_names_template_and_line(tmp_path):
    path = _with_template(tmp_path, "{{ scene }}\n\n{{ sceen }}\n")
    text = STORY.replace("pages:", "render: {template: mine}\npages:")
    with pytest.raises(StoryboardError) as info:
        plan(load_story_text(text, path))
    msg = str(info.value)
    assert "positive.j2:3" in msg and "sceen" in msg


def test_sandbox_blocks_python_internals(tmp_path):
    path = _with_template(tmp_path, "{{ scene.__class__.__mro__[1].__subclasses__() }}\n")
    text = STORY.replace("pages:", "render: {template: mine}\npages:")
    with pytest.raises(StoryboardError, match="unsafe|undefined|mro"):
        plan(load_story_text(text, path))


def test_missing_template_lists_available(tmp_path):
    text = STORY.replace("pages:", "render: {template: nope}\npages:")
    with pytest.raises(StoryboardError, match="'nope' not found") as info:
        plan(load_story_text(text, tmp_path / "s.yaml"))
    assert "default" in str(info.value)


def test_tidy():
    assert tidy("a\n\n  b ,\n,\n c  d \n") == "a, b, c d"
    assert tidy("cat # not this\n# nor this\ndog") == "cat, dog"
    assert (
        tidy(
            textwrap.dedent("""
        (x:1.2)
        BREAK
    """)
        )
        == "(x:1.2), BREAK"
    )


def test_packaged_prompt_templates_match_the_repository_copy():
    # templates/ is the source; storyboard/data/templates/ ships the same files inside the package so an
    # installed (non-editable) storyboard composes the same prompts.
    repo = {p.name: p.read_bytes() for p in (ROOT / "templates" / "prompts" / "default").glob("*.j2")}
    pkg_dir = ROOT / "storyboard" / "data" / "templates" / "prompts" / "default"
    pkg = {p.name: p.read_bytes() for p in pkg_dir.glob("*.j2")}
    assert repo and repo == pkg, (
        "copy templates/prompts/default/*.j2 to storyboard/data/templates/prompts/default/"
    )
