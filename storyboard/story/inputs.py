"""The images a story names for its panels, found and checked at planning time (before anything loads).

Each image is a path beside the story file (or absolute). A missing, unreadable, wrong-mode or
wrong-size image is a sentence at the file:line of the field that names it; a good one becomes an
``InputImage`` with its content digest, which enters the panel's job hash.

:func:`story_input_image` is the one check every image field uses (ControlNet units here; init
images and masks use it too).
"""

from __future__ import annotations

from pathlib import Path

from storyboard.input_images import ACCEPTED_MODES, image_digest, input_image_problem, resolve_input_path
from storyboard.jobs import ControlUnit, InputImage
from storyboard.story.load import LoadedStory, position_of, setting_location
from storyboard.story.schema import Panel

Loc = tuple[str | int, ...]


def dotted(loc: Loc) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))


def story_input_image(
    loaded: LoadedStory,
    loc: Loc,
    written: str | Path,
    role: str,
    problems: list[str],
    *,
    what: str = "image",
    modes: tuple[str, ...] = ACCEPTED_MODES,
    size: tuple[int, int] | None = None,
) -> InputImage | None:
    """The image a story field names (at `loc`), or None with a positioned sentence in `problems`."""
    path = resolve_input_path(written, loaded.base_dir)
    problem = input_image_problem(path, what=what, modes=modes, size=size)
    if problem is not None:
        problems.append(f"{position_of(loaded, loc)}: {dotted(loc)}: {problem}")
        return None
    return InputImage(role, str(path.absolute()), image_digest(path))


def panel_location(loaded: LoadedStory, panel_id: str) -> Loc:
    for pi, page in enumerate(loaded.story.pages):
        for ni, panel in enumerate(page.panels):
            if panel.id == panel_id:
                return ("pages", pi, "panels", ni)
    return ()


def control_location(loaded: LoadedStory, panel_id: str) -> Loc:
    """Where the story lists a panel's ControlNet units: its own `control:`, its `render.control`
    override, or the story's `render.control`."""
    here = panel_location(loaded, panel_id)
    panel = loaded.story.panel(panel_id)
    if panel.control is not None:
        return (*here, "control")
    return setting_location(loaded, panel_id, ("render", "control"))


def panel_control(loaded: LoadedStory, panel: Panel) -> list[ControlUnit]:
    """The panel's units: its own list when it has one (even empty), else the render settings'."""
    assert panel.id is not None
    return panel.control if panel.control is not None else loaded.panel_render[panel.id].control


def control_inputs(
    loaded: LoadedStory, panel: Panel, problems: list[str]
) -> tuple[tuple[ControlUnit, ...], tuple[InputImage, ...]]:
    """The panel's ControlNet units and their images ("control 0", "control 1"...), checked."""
    assert panel.id is not None
    units = panel_control(loaded, panel)
    if not units:
        return (), ()
    where = control_location(loaded, panel.id)
    images: list[InputImage] = []
    for k, unit in enumerate(units):
        found = story_input_image(
            loaded, (*where, k, "image"), unit.image, f"control {k}", problems, what="control image"
        )
        if found is not None:
            images.append(found)
    return tuple(units), tuple(images)
