"""Renders shaped to their frames: before anything renders, each page's layout template is chosen and
each panel gets a render size of its frame's aspect at the story's pixel budget (width x height), so
layout crops almost nothing and a landscape frame gets a landscape picture.

A panel that sets its own `render.width`/`render.height` keeps that size (layout crops it, and the
build warns when over 15% is lost). The page template chosen here is the one layout uses.
"""

from __future__ import annotations

from dataclasses import dataclass

from storyboard.layout.frames import choose_render_size, page_frames, plan_template
from storyboard.layout.templates import list_templates
from storyboard.story.compose import template_dirs
from storyboard.story.load import LoadedStory

# The SD VAE works on 8x8 pixel blocks; every size the planner picks is a multiple of this.
SIZE_MULTIPLE = 8


@dataclass(frozen=True)
class PanelFrame:
    page_template: str | None  # None: a template made up for an unusual panel count (layout redoes it)
    frame: tuple[float, float]  # points
    size: tuple[int, int]  # render size (before hires)
    fixed: bool  # the panel set its own width/height


def fixes_size(overrides: dict[str, object]) -> bool:
    return "width" in overrides or "height" in overrides


def panel_frames(loaded: LoadedStory) -> dict[str, PanelFrame]:
    """Per panel id: its page's template, its frame, and the render size it gets."""
    story = loaded.story
    templates = list_templates(template_dirs(loaded.base_dir))
    out: dict[str, PanelFrame] = {}
    for page in story.pages:
        settings = [loaded.panel_render[p.id or ""] for p in page.panels]
        fixed = [fixes_size(p.render) for p in page.panels]
        # Panels that fix their size are placed by their own aspect; the others by the budget's, which
        # is what they would be rendered at without frames.
        aspects = [s.width / s.height for s in settings]
        tpl = plan_template(story.layout, len(page.panels), page.layout, aspects, templates)
        frames = page_frames(story.layout, tpl)
        for panel, s, fix, frame in zip(page.panels, settings, fixed, frames, strict=True):
            size = (
                (s.width, s.height) if fix else choose_render_size(*frame, s.width, s.height, SIZE_MULTIPLE)
            )
            # Layout can be told only a template it can look up by name.
            name = tpl.name if tpl.name in templates else None
            out[panel.id or ""] = PanelFrame(name, frame, size, fix)
    return out
