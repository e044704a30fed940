"""The review page's operations: story-file writes that refuse to overwrite a newer file, and renders
that keep one renderer for the whole session and report each panel as it finishes.

Writes compare the file's current version (a hash of its text) with the version the page was showing
when the user acted; a text editor's save in between makes the write fail with a sentence instead of
silently undoing that save.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from storyboard.app.build import BuildReport, ProgressFn, build, render_candidates
from storyboard.app.operations import make_renderer
from storyboard.errors import StoryboardError
from storyboard.jobs import Renderer
from storyboard.story.edit import LineEdit, edit_panel_text, text_version
from storyboard.story.load import load_story

# One writer of story files per process: the version check and the write happen under it, so two
# requests of the page can never both pass the check and then overwrite each other.
_STORY_WRITE = threading.Lock()


class StaleStoryError(StoryboardError):
    """The story file changed since the version an edit was based on."""


def story_version(story: Path) -> str:
    return text_version(story.read_text(encoding="utf-8"))


def _check_version(story: Path, version: str) -> str:
    text = story.read_text(encoding="utf-8")
    if text_version(text) != version:
        raise StaleStoryError(
            f"{story} changed since this page loaded it (edited elsewhere?); nothing was written.",
            hint="reload the page to see the file as it is now, then make the change again",
        )
    return text


def edit_panel(
    story: Path,
    panel_id: str,
    *,
    version: str,
    scene: str | None = None,
    caption: str | None = None,
    dialogue: list[LineEdit] | None = None,
) -> str:
    """Write the panel's new words into the story file; returns the file's new version."""
    from storyboard.writes import write_user_file

    with _STORY_WRITE:
        text = _check_version(story, version)
        new = edit_panel_text(text, story, panel_id, scene=scene, caption=caption, dialogue=dialogue)
        if new != text:
            write_user_file(story, new)
        return text_version(new)


def pick_checked(story: Path, panel_id: str, seed: int, *, version: str) -> str:
    """`storyboard pick`, refused when the file is not the version the page showed; the new version."""
    from storyboard.app.operations import pick

    with _STORY_WRITE:
        _check_version(story, version)
        pick(story, panel_id, seed)
        return story_version(story)


def session_renderer(story: Path, *, draft: bool) -> Renderer:
    """The renderer a review session keeps: models load once, not once per click. Missing model
    files are an error the page shows, never a silent switch to drafts."""
    return make_renderer(load_story(story), draft=draft, quiet=True)


def is_draft(renderer: Renderer) -> bool:
    """Drafts live in their own store (output/<story>/draft/), apart from real renders."""
    from storyboard.render.draft import DraftRenderer

    return renderer.name == DraftRenderer.name


def render_panels(
    story: Path,
    out: Path,
    renderer: Renderer,
    *,
    only: Sequence[str] | None = None,
    seeds: dict[str, int] | None = None,
    progress: ProgressFn | None = None,
) -> BuildReport:
    """`storyboard build`/`render` with the session's renderer: what is cached is reused, then layout."""
    loaded = load_story(story)
    return build(loaded, out, renderer, only=only, seeds=seeds, progress=progress, draft=is_draft(renderer))


def render_candidate_batch(
    story: Path,
    out: Path,
    renderer: Renderer,
    panel_id: str,
    seeds: Sequence[int],
    on_each: Callable[[int, Path], None] | None = None,
) -> Path:
    """`storyboard render -k` with the seeds given, each candidate reported as it finishes (the
    same `render_candidates` the CLI uses). Returns the contact sheet's path."""
    loaded = load_story(story)
    loaded.story.panel(panel_id)  # unknown id: a sentence with suggestions
    _, sheet = render_candidates(
        loaded, out, renderer, panel_id, seeds, draft=is_draft(renderer), on_each=on_each
    )
    return sheet


def keep_direction(
    story: Path, out: Path, panel_id: str, direction: Any, *, version: str, draft: bool
) -> str:
    """Keep a previewed direction (app/direct_ops.py): its pictures beside the story, its keys in the
    story file, refused when the file is not the version the page showed; the new version."""
    from storyboard.app.direct_ops import keep_text
    from storyboard.writes import write_user_file

    with _STORY_WRITE:
        text = _check_version(story, version)
        new = keep_text(story, out, panel_id, direction, draft=draft)
        if new != text:
            write_user_file(story, new)
        return text_version(new)


def redraw_face(story: Path, panel_id: str, character: str, seed: int, *, version: str) -> str:
    """Give one character's face of a detailed panel its own seed in the story file
    (`render.detail.seeds`), refused when the file is not the version the page showed or the panel's
    detailer is off; the new version. The next render re-draws only that face."""
    from storyboard.story.detail_edit import face_seed_text
    from storyboard.story.plan import plan
    from storyboard.writes import write_user_file

    with _STORY_WRITE:
        text = _check_version(story, version)
        job = next(j for j in plan(load_story(story)) if j.panel_id == panel_id)
        if job.detail is None or character not in {t.character for t in job.detail.targets}:
            raise StoryboardError(
                f"Re-draw face: panel {panel_id} has no face detailer for character {character!r}."
            )
        new = face_seed_text(text, story, panel_id, character, seed)
        if new != text:
            write_user_file(story, new)
        return text_version(new)
