"""Story format: valid files load; each bad input gets its intended message at the right line:column."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from storyboard.errors import StoryboardError
from storyboard.story.load import StoryError, load_story, load_story_text

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
title: T
characters:
  ann:
    lora: ann_v1
    triggers: [1girl, ann]
pages:
  - panels:
      - scene: a park
        characters: [ann]
      - id: close
        scene: close-up
        seed: 42
        render:
          steps: 30
          hires: {scale: 1.5}
"""


def load(text: str, tmp_path: Path, name: str = "s.yaml"):
    return load_story_text(textwrap.dedent(text), tmp_path / name)


def test_demo_story_loads():
    loaded = load_story(ROOT / "stories" / "demo.yaml")
    s = loaded.story
    assert [p.id for _, _, p in s.panels()] == ["gate", "listen", "garden", "meet", "play", "smile", "encore"]
    assert s.characters["iku"].lora == "Iku_Nakatani-000016_v1.0"  # from characters/iku.yaml
    assert s.characters["iku"].tag == "<lora:Iku_Nakatani-000016_v1.0:1>"
    assert s.render.sampler == "DPM++ 2S a Karras"
    assert (s.render.width, s.render.height, s.render.steps) == (448, 640, 20)
    assert loaded.panel_render["gate"].output_size == (896, 1280)
    assert any(len(p.characters) >= 2 for _, _, p in s.panels())
    assert len(s.pages) >= 2


def test_defaults_ids_and_overrides(tmp_path):
    loaded = load(GOOD, tmp_path)
    ids = [p.id for _, _, p in loaded.story.panels()]
    assert ids == ["p1.1", "close"]
    assert loaded.panel_render["p1.1"].steps == 20
    close = loaded.panel_render["close"]
    assert close.steps == 30
    # a partial hires override fills the rest from defaults
    assert close.hires is not None and close.hires.scale == 1.5 and close.hires.denoising_strength == 0.7


def test_lora_weight_forms(tmp_path):
    text = GOOD.replace("    lora: ann_v1\n", "    lora: ann_v1\n    te_weight: 0.5\n    unet_weight: 0.8\n")
    c = load(text, tmp_path).story.characters["ann"]
    assert (c.te, c.unet) == (0.5, 0.8)
    assert c.tag == "<lora:ann_v1:0.5:0.8>"
    c2 = load(
        GOOD.replace("    lora: ann_v1\n", "    lora: loras/sub/ann_v1.safetensors\n    weight: 0.75\n"),
        tmp_path,
    ).story.characters["ann"]
    assert c2.tag == "<lora:ann_v1:0.75>"


BAD = [
    # (description, replace-this, with-this, expected line:col, expected words in the message)
    (
        "unknown key with suggestion",
        "      - scene: a park\n",
        "      - scene: a park\n        caption_text: x\n",
        "9:9",
        ["unknown key 'caption_text'", "Did you mean 'caption'?"],
    ),
    (
        "misspelt top-level key",
        "title: T\n",
        "title: T\nstlye: {}\n",
        "2:1",
        ["unknown key 'stlye'", "'style'"],
    ),
    (
        "wrong type",
        "        seed: 42\n",
        "        seed: forty\n",
        "12:15",
        ["pages[0].panels[1].seed", "valid integer", "'forty'"],
    ),
    (
        "seed out of range",
        "        seed: 42\n",
        "        seed: 4294967295\n",
        "12:15",
        ["less than or equal"],
    ),
    (
        "missing scene",
        "      - scene: a park\n        characters: [ann]\n",
        "      - characters: [ann]\n",
        "8:9",
        ["pages[0].panels[0].scene", "required field is missing"],
    ),
    (
        "unknown character",
        "        characters: [ann]\n",
        "        characters: [anne]\n",
        "9:22",
        ["unknown character 'anne'", "Did you mean 'ann'?"],
    ),
    ("bad panel id", "      - id: close\n", "      - id: ../../etc\n", "10:13", ["file name"]),
    ("duplicate panel id", "      - id: close\n", "      - id: p1.1\n", "10:13", ["used twice"]),
    (
        "bad override",
        "          steps: 30\n",
        "          stepz: 30\n",
        "14:11",
        ["panels[1].render: unknown key 'stepz'", "Did you mean 'steps'?"],
    ),
    ("width not multiple of 8", "pages:\n", "render:\n  width: 500\npages:\n", "7:10", ["multiple of 8"]),
    ("yaml syntax", "title: T\n", "title: [T\n", "", ["YAML syntax error"]),
    ("no pages", "pages:\n  - panels:\n", "x_pages:\n  - panels:\n", "", ["unknown key 'x_pages'"]),
    (
        "bad hires scale",
        "          hires: {scale: 1.5}\n",
        "          hires: {scale: 9}\n",
        "15:26",
        ["less than or equal to 4"],
    ),
    (
        "unknown dialogue speaker",
        "        seed: 42\n",
        "        seed: 42\n        dialogue:\n          - {speaker: bob, text: hi}\n",
        "14:23",
        ["unknown speaker 'bob'"],
    ),
]


@pytest.mark.parametrize("desc,old,new,where,words", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs(tmp_path, desc, old, new, where, words):
    assert old in GOOD, desc
    with pytest.raises(StoryboardError) as info:
        load(GOOD.replace(old, new, 1), tmp_path)
    msg = str(info.value)
    path = str(tmp_path / "s.yaml")
    assert path in msg
    if where:
        assert f"{path}:{where}:" in msg, msg
    for w in words:
        assert w in msg, msg


def test_all_problems_reported_at_once(tmp_path):
    text = GOOD.replace("seed: 42", "seed: x").replace("  - panels:", "  - panelz: 1\n    panels:")
    with pytest.raises(StoryError) as info:
        load(text, tmp_path)
    assert len(info.value.problems) >= 2


def test_character_file_reference_and_errors(tmp_path):
    (tmp_path / "characters").mkdir()
    (tmp_path / "characters" / "ann.yaml").write_text("lora: ann_v2\ntriggers: [ann]\nwieght: 2\n")
    text = GOOD.replace("  ann:\n    lora: ann_v1\n    triggers: [1girl, ann]\n", "  ann: ann\n")
    with pytest.raises(StoryboardError) as info:
        load(text, tmp_path, "stories.yaml")
    msg = str(info.value)
    assert f"{tmp_path / 'characters' / 'ann.yaml'}:3:1:" in msg and "Did you mean 'weight'?" in msg
    (tmp_path / "characters" / "ann.yaml").write_text("lora: ann_v2\ntriggers: [ann]\nweight: 2\n")
    c = load(text, tmp_path, "stories.yaml").story.characters["ann"]
    assert (c.lora, c.te) == ("ann_v2", 2.0)
    with pytest.raises(StoryboardError, match="no character file 'annie.yaml'.*Did you mean ann"):
        load(text.replace("ann: ann", "ann: annie"), tmp_path, "stories.yaml")
    with pytest.raises(StoryboardError, match="not a path"):
        load(text.replace("ann: ann", "ann: ../ann"), tmp_path, "stories.yaml")


def test_character_file_references_are_beside_the_character_file(tmp_path):
    # The story lives in stories/, the character file in characters/ one level up: its reference
    # images are found beside the character file, not beside the story.
    chars = tmp_path / "characters"
    chars.mkdir()
    (chars / "ann.yaml").write_text(f"lora: ann_v2\nreferences: [ann-ref.png, {tmp_path / 'abs.png'}]\n")
    (tmp_path / "stories").mkdir()
    text = GOOD.replace("  ann:\n    lora: ann_v1\n    triggers: [1girl, ann]\n", "  ann: ann\n")
    c = load(text, tmp_path / "stories", "s.yaml").story.characters["ann"]
    assert c.references == [chars / "ann-ref.png", tmp_path / "abs.png"]
