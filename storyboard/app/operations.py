"""The operations a user performs, each a function over typed inputs: the CLI and the review page are
thin shells over these, so neither holds application logic of its own.

Messages meant for the user while an operation runs (a fallback to drafts, a wait for a lock) go
through the `notify` callback; results come back as values.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from storyboard.app.build import (
    BuildReport,
    ProgressFn,
    build,
    missing_panels,
    output_dir,
    png_bytes,
    render_candidates,
)
from storyboard.app.store import PanelStore
from storyboard.errors import StoryboardError
from storyboard.jobs import PanelJob, Renderer
from storyboard.story.load import LoadedStory, load_story
from storyboard.story.plan import plan

if TYPE_CHECKING:
    from storyboard.distributed import RayOptions

Notify = Callable[[str], None]
MAX_RANDOM_SEED = 4294967295


def _silent(_message: str) -> None:
    return None


@dataclass(frozen=True)
class StorySummary:
    path: Path
    title: str
    pages: int
    panels: int
    characters: int


def validate(story: Path) -> StorySummary:
    """Load and check a story; raises StoryError listing every problem with its position."""
    loaded = load_story(story)
    s = loaded.story
    return StorySummary(story, s.title, len(s.pages), sum(len(p.panels) for p in s.pages), len(s.characters))


def panel_jobs(story: Path) -> list[PanelJob]:
    """Each panel's composed prompts, LoRA uses, seed and settings (no GPU, no model files)."""
    return plan(load_story(story))


def make_renderer(
    loaded: LoadedStory,
    *,
    draft: bool,
    require_models: bool,
    quiet: bool,
    notify: Notify = _silent,
    ray: RayOptions | None = None,
    out_root: Path = Path("output"),
) -> Renderer:
    """The diffusers renderer with every file checked, or the draft renderer when asked (or, unless
    require_models, when a model file is missing; `notify` says so). With `ray`, that renderer's
    work runs on Ray actors writing to the story's output folder under `out_root` (or ray.store)."""
    local = _local_renderer(loaded, draft=draft, require_models=require_models, quiet=quiet, notify=notify)
    if ray is None:
        return local
    from storyboard.distributed import ray_renderer

    out_dir = output_dir(loaded, out_root)
    return ray_renderer(
        local, loaded.base_dir, ray, store=out_dir, encode=png_bytes, quiet=quiet, notify=notify
    )


def close_renderer(renderer: Renderer) -> None:
    """Release what a renderer holds beyond this call (a Ray renderer's actors); others hold nothing."""
    close = getattr(renderer, "close", None)
    if callable(close):
        close()


def _local_renderer(
    loaded: LoadedStory, *, draft: bool, require_models: bool, quiet: bool, notify: Notify
) -> Renderer:
    from storyboard.render.draft import DraftRenderer

    if draft:
        return DraftRenderer()
    from storyboard.render.engine import DiffusersRenderer

    try:
        renderer = DiffusersRenderer(loaded.base_dir, quiet=quiet)
        renderer.check(plan(loaded))
        return renderer
    except StoryboardError as exc:
        if require_models:
            raise
        notify(f"note: {exc.message}")
        notify(
            "note: models are missing, so this build draws DRAFT placeholder panels. "
            "See README 'Real models' to render for real."
        )
        return DraftRenderer()


def _check_panel_ids(loaded: LoadedStory, ids: Sequence[str]) -> None:
    for pid in ids:
        loaded.story.panel(pid)  # unknown ids fail with a suggestion before anything renders


def build_story(
    story: Path,
    out: Path,
    *,
    draft: bool = False,
    require_models: bool = False,
    only: Sequence[str] | None = None,
    seeds: dict[str, int] | None = None,
    wait: bool = True,
    quiet: bool = True,
    notify: Notify = _silent,
    progress: ProgressFn | None = None,
    ray: RayOptions | None = None,
) -> tuple[LoadedStory, BuildReport]:
    """Build the comic (or re-render `only` those panels, optionally with preview seeds)."""
    loaded = load_story(story)
    if only:
        _check_panel_ids(loaded, only)
    renderer = make_renderer(
        loaded, draft=draft, require_models=require_models, quiet=quiet, notify=notify, ray=ray, out_root=out
    )

    def on_wait(holder: str) -> None:
        notify(f"waiting: {holder} is building this story right now")

    try:
        report = build(
            loaded, out, renderer, only=only, seeds=seeds, wait=wait, on_wait=on_wait, progress=progress
        )
    finally:
        close_renderer(renderer)
    return loaded, report


def preview_seeds(
    panels: Sequence[str], seed: int | None, rng: random.Random | None = None
) -> dict[str, int]:
    """The seeds a `render --seed/--reroll` uses: the given one for every panel, else a new one each."""
    rng = rng or random.Random()
    return {pid: seed if seed is not None else rng.randrange(MAX_RANDOM_SEED) for pid in panels}


@dataclass(frozen=True)
class Candidates:
    panel_id: str
    images: list[tuple[int, Path]]  # (seed, file), the panel's current seed first
    sheet: Path


def candidates(
    story: Path,
    out: Path,
    panels: Sequence[str],
    count: int,
    *,
    draft: bool = False,
    quiet: bool = True,
    notify: Notify = _silent,
    rng: random.Random | None = None,
    ray: RayOptions | None = None,
) -> list[Candidates]:
    """Render `count` seeds of each panel (its current seed first) plus a contact sheet; the panels
    themselves and the story file are left as they are."""
    loaded = load_story(story)
    _check_panel_ids(loaded, panels)
    base = {j.panel_id: j.seed for j in plan(loaded)}
    renderer = make_renderer(
        loaded, draft=draft, require_models=False, quiet=quiet, notify=notify, ray=ray, out_root=out
    )
    rng = rng or random.Random()
    found = []
    try:
        for pid in panels:
            seeds = [base[pid]] + [rng.randrange(MAX_RANDOM_SEED) for _ in range(count - 1)]
            images, sheet = render_candidates(loaded, out, renderer, pid, seeds)
            found.append(Candidates(pid, images, sheet))
    finally:
        close_renderer(renderer)
    return found


def pick(story: Path, panel: str, seed: int) -> None:
    """Lock a panel's seed into the story file (comments and formatting kept)."""
    from storyboard.story.pick import pick_seed

    pick_seed(story, panel, seed)


def layout(story: Path, out: Path) -> list[Path]:
    """Lay the pages out again from the rendered (or draft) panels; every panel must exist."""
    from storyboard.app.pages import layout_story

    loaded = load_story(story)
    out_dir = output_dir(loaded, out)
    store = PanelStore(out_dir)
    missing = missing_panels(loaded, store)
    if missing:
        raise StoryboardError(
            f"Panels not rendered yet: {', '.join(missing)}.",
            hint=f"run: storyboard build {story} (or --draft)",
        )
    with store.lock():
        return layout_story(loaded, out_dir)
