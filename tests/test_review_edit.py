"""Editing a panel's words in the story file: one changed line per changed field, comments kept,
validated with `validate`'s messages; and the app layer refusing writes based on an old version."""

from __future__ import annotations

from pathlib import Path

import pytest

from storyboard.app import review_ops
from storyboard.errors import StoryboardError
from storyboard.story.edit import LineEdit, edit_panel_text, text_version
from storyboard.story.load import StoryError, load_story
from tests.review_helpers import changed_lines, copy_demo, meet_speaker_line

ROOT = Path(__file__).resolve().parents[1]


def test_scene_edit_changes_one_line_and_keeps_comments(tmp_path: Path) -> None:
    story = copy_demo(tmp_path)
    before = story.read_text()
    after = edit_panel_text(before, story, "garden", scene="playing guitar, <script>alert(1)</script>")
    assert changed_lines(before, after) == [
        "-        scene: (full body:1.2), playing guitar, flower garden, outdoors, sitting on bench, smile",
        "+        scene: playing guitar, <script>alert(1)</script>",
    ]
    assert "# a WebUI install" in after


def test_unchanged_fields_leave_the_text_identical(tmp_path: Path) -> None:
    story = copy_demo(tmp_path)
    before = story.read_text()
    meet = load_story(story).story.panel("meet")
    same = [LineEdit(d.speaker, d.text) for d in meet.dialogue]
    assert edit_panel_text(before, story, "meet", scene=meet.scene, dialogue=same) == before


def test_dialogue_edit_changes_only_the_edited_line(tmp_path: Path) -> None:
    story = copy_demo(tmp_path)
    before = story.read_text()
    after = edit_panel_text(
        before, story, "meet", dialogue=[LineEdit("haru", "Oh! You heard that?"), LineEdit("iku", "Again?")]
    )
    assert changed_lines(before, after) == [
        "-            text: It sounded lovely. Play it again?",
        "+            text: Again?",
    ]


def test_speaker_added_to_narration_goes_first(tmp_path: Path) -> None:
    story = copy_demo(tmp_path)
    before = story.read_text()
    after = edit_panel_text(before, story, "garden", dialogue=[LineEdit("haru", "Strum!")])
    assert changed_lines(before, after) == [
        "-          - text: Strum!",
        "+          - speaker: haru",
        "+            text: Strum!",
    ]


def test_caption_set_and_removed(tmp_path: Path) -> None:
    story = copy_demo(tmp_path)
    before = story.read_text()
    added = edit_panel_text(before, story, "listen", caption="Later.")
    assert changed_lines(before, added) == ["+        caption: Later."]
    removed = edit_panel_text(before, story, "gate", caption="")
    assert changed_lines(before, removed) == ["-        caption: Monday. The first warm morning of spring."]


def test_invalid_edit_fails_with_validate_messages(tmp_path: Path) -> None:
    story = copy_demo(tmp_path)
    before = story.read_text()
    with pytest.raises(StoryError) as exc:
        edit_panel_text(before, story, "meet", dialogue=[LineEdit("haruu", "Oh!"), LineEdit("iku", "Hi")])
    (problem,) = exc.value.problems
    where = f"{story}:{meet_speaker_line(story)}:22"
    assert problem.startswith(f"{where}: pages[1].panels[0].dialogue[0].speaker:")
    assert "unknown speaker 'haruu'. Did you mean 'haru'?" in problem
    assert story.read_text() == before


def test_wrong_dialogue_count_and_unknown_panel(tmp_path: Path) -> None:
    story = copy_demo(tmp_path)
    text = story.read_text()
    with pytest.raises(StoryboardError, match="has 2 dialogue line"):
        edit_panel_text(text, story, "meet", dialogue=[LineEdit(None, "x")])
    with pytest.raises(StoryboardError, match="Did you mean garden"):
        edit_panel_text(text, story, "gardn", scene="x")


def test_app_edit_refuses_a_stale_version(tmp_path: Path) -> None:
    story = copy_demo(tmp_path)
    v0 = review_ops.story_version(story)
    v1 = review_ops.edit_panel(story, "gate", version=v0, scene="school gate")
    assert v1 == text_version(story.read_text()) != v0
    edited = story.read_text()
    with pytest.raises(review_ops.StaleStoryError, match="changed since"):
        review_ops.edit_panel(story, "gate", version=v0, scene="school gate, rain")
    with pytest.raises(review_ops.StaleStoryError):
        review_ops.pick_checked(story, "gate", 7, version=v0)
    assert story.read_text() == edited
    review_ops.pick_checked(story, "gate", 7, version=v1)
    assert load_story(story).story.panel("gate").seed == 7


def test_removing_a_key_keeps_the_comment_lines_below_it(tmp_path: Path) -> None:
    """ruamel files the comment lines after a value under that key; removing the caption must not
    take the writer's comment about the next key with it (its own end-of-line comment goes)."""
    story = copy_demo(tmp_path)
    text = story.read_text().replace(
        "caption: Monday. The first warm morning of spring.",
        "caption: Monday. The first warm morning of spring.  # draft wording",
    )
    removed = edit_panel_text(text, story, "gate", caption="")
    assert changed_lines(text, removed) == [
        "-        caption: Monday. The first warm morning of spring.  # draft wording"
    ]
