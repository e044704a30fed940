"""Map a story and its rendered panels onto the layout stage's input, and lay the comic out."""

from __future__ import annotations

from pathlib import Path

from storyboard.app.store import PanelStore
from storyboard.layout import render_comic
from storyboard.layout.frames import print_warnings
from storyboard.layout.types import Balloon, LayoutMeta, LayoutPage, LayoutPanel
from storyboard.story.compose import template_dirs
from storyboard.story.frames import PanelFrame, panel_frames
from storyboard.story.load import LoadedStory


def layout_pages(loaded: LoadedStory, store: PanelStore, frames: dict[str, PanelFrame]) -> list[LayoutPage]:
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
                    vertical=line.vertical,
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
        # The template the planner shaped the renders for, so layout cannot pick another one.
        template = frames[page.panels[0].id or ""].page_template if page.panels else page.layout
        pages.append(LayoutPage(number=number, panels=tuple(panels), template=template))
    return pages


def _speaker_name(loaded: LoadedStory, speaker: str | None) -> str | None:
    if speaker is None:
        return None
    c = loaded.story.characters.get(speaker)
    return (c.name or speaker) if c else speaker


def layout_story(loaded: LoadedStory, out_dir: Path) -> tuple[list[Path], list[str]]:
    """Lay the comic out from its panel files: the files written, and the print warnings (panels
    under 150 dpi or cropped over 15%), both from one planning of the pages' frames."""
    story = loaded.story
    store = PanelStore(out_dir)
    frames = panel_frames(loaded)
    meta = LayoutMeta(title=story.title, author=story.author, language=story.language, summary=story.summary)
    outputs = render_comic(
        meta,
        layout_pages(loaded, store, frames),
        story.layout,
        out_dir,
        template_dirs=template_dirs(loaded.base_dir),
        base_dir=loaded.base_dir,
    )
    files = [p for p in (outputs.pdf, outputs.cbz) if p is not None]
    return files + list(outputs.pages_png), frame_warnings(loaded, store, frames)


def frame_warnings(loaded: LoadedStory, store: PanelStore, frames: dict[str, PanelFrame]) -> list[str]:
    """Panels that will print soft (under 150 dpi) or lose over 15% to the crop, each named."""
    from PIL import Image

    notes: list[str] = []
    for _, _, panel in loaded.story.panels():
        path = store.panel_path(panel.id or "")
        if not path.is_file():
            continue
        with Image.open(path) as im:
            w, h = im.size
        fw, fh = frames[panel.id or ""].frame
        notes += print_warnings(panel.id or "", w, h, fw, fh, fit=loaded.story.layout.fit).warnings
    return notes
