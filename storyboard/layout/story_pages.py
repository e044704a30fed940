"""Map a story and its rendered panels onto the layout stage's input, and lay the comic out."""

from __future__ import annotations

from pathlib import Path

from storyboard.app.store import PanelStore
from storyboard.layout import render_comic
from storyboard.layout.types import Balloon, LayoutMeta, LayoutPage, LayoutPanel
from storyboard.story.compose import template_dirs
from storyboard.story.load import LoadedStory


def layout_pages(loaded: LoadedStory, store: PanelStore) -> list[LayoutPage]:
    story = loaded.story
    pages = []
    for number, page in enumerate(story.pages, start=1):
        panels = []
        for panel in page.panels:
            assert panel.id is not None
            balloons = tuple(
                Balloon(
                    text=line.text,
                    speaker=_speaker_name(loaded, line.speaker),
                    kind=line.kind,
                    speaker_at=line.speaker_at,
                )
                for line in panel.dialogue
            )
            panels.append(
                LayoutPanel(
                    id=panel.id,
                    image=store.panel_path(panel.id),
                    caption=panel.caption,
                    balloons=balloons,
                    focus=panel.focus,
                )
            )
        pages.append(LayoutPage(number=number, panels=tuple(panels), template=page.layout))
    return pages


def _speaker_name(loaded: LoadedStory, speaker: str | None) -> str | None:
    if speaker is None:
        return None
    c = loaded.story.characters.get(speaker)
    return (c.name or speaker) if c else speaker


def layout_story(loaded: LoadedStory, out_dir: Path) -> list[Path]:
    story = loaded.story
    store = PanelStore(out_dir)
    meta = LayoutMeta(title=story.title, author=story.author, language=story.language, summary=story.summary)
    outputs = render_comic(
        meta,
        layout_pages(loaded, store),
        story.layout,
        out_dir,
        template_dirs=template_dirs(loaded.base_dir),
    )
    files = [p for p in (outputs.pdf, outputs.cbz) if p is not None]
    return files + list(outputs.pages_png)
