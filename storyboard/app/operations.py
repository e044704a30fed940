"""The operations a user performs, each a function over typed inputs: the CLI and the review page are
thin shells over these, so neither holds application logic of its own.

Messages meant for the user while an operation runs (a fallback to drafts, a wait for a lock) go
through the `notify` callback; results come back as values.
"""

from __future__ import annotations

import math
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
from storyboard.app.input_checks import img2img_problems
from storyboard.app.store import PanelStore
from storyboard.errors import StoryboardError
from storyboard.jobs import PanelJob, Renderer
from storyboard.story.load import (
    LoadedStory,
    StoryError,
    load_story,
    lora_location,
    position_of,
    setting_location,
)
from storyboard.story.plan import plan
from storyboard.story.schema import MAX_LORA_WEIGHT

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
    warnings: tuple[str, ...] = ()


def validate(story: Path, *, files: bool = True) -> StorySummary:
    """Check a story the way `build` does before loading weights: the file itself and, with `files`,
    every sampler, setting and model file it names. Raises StoryError listing every problem with its
    file:line:column."""
    loaded = load_story(story)
    jobs = plan(loaded)
    problems = prompt_problems(loaded, jobs) + img2img_problems(loaded, jobs)
    if files:
        problems += file_problems(loaded, jobs)
    if problems:
        raise StoryError(problems)
    s = loaded.story
    return StorySummary(
        story, s.title, len(s.pages), sum(len(p.panels) for p in s.pages), len(s.characters), loaded.warnings
    )


def _dotted(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else str(p)) for i, p in enumerate(loc))


def prompt_problems(loaded: LoadedStory, jobs: Sequence[PanelJob]) -> list[str]:
    """`<lora:name:w>` tags in scene text with weights no render survives (the schema checks the
    LoRAs a story lists itself)."""
    out: list[str] = []
    for job in jobs:
        for u in job.loras:
            if u.owner == "prompt" and not all(
                math.isfinite(w) and abs(w) <= MAX_LORA_WEIGHT for w in (u.te, u.unet)
            ):
                loc = lora_location(loaded, job.panel_id, u.owner, u.name)
                out.append(
                    f"{position_of(loaded, loc)}: {_dotted(loc)}: the weight of <lora:{u.name}> must be a "
                    f"number between -{MAX_LORA_WEIGHT:g} and {MAX_LORA_WEIGHT:g}."
                )
    return out


def file_problems(loaded: LoadedStory, jobs: Sequence[PanelJob]) -> list[str]:
    """Every missing or wrong model file, sampler or hires setting, and missing reference image, each
    once, at the place in the story that names it."""
    from storyboard.render.file_check import validate_files

    out: list[str] = []
    for p in validate_files(jobs, loaded.base_dir):
        if p.field[0] == "lora":
            loc = lora_location(loaded, p.panel_id, p.field[1], p.field[2])
        elif p.field[0] == "control":
            from storyboard.story.inputs import control_location

            loc = (*control_location(loaded, p.panel_id), int(p.field[1]), p.field[2])
        else:
            loc = setting_location(loaded, p.panel_id, p.field)
        out.append(f"{position_of(loaded, loc)}: {_dotted(loc)}: {p.message}")
    for cid, c in loaded.story.characters.items():
        for k, ref in enumerate(c.references):
            path = ref if ref.is_absolute() else loaded.base_dir / ref
            if not path.is_file():
                loc = ("characters", cid, "references", k)
                out.append(
                    f"{position_of(loaded, loc)}: {_dotted(loc)}: reference image {path} does not exist."
                )
    return sorted(dict.fromkeys(out), key=_line_col)


def _line_col(problem: str) -> tuple[int, int]:
    """Sort key: the line and column of a "file:line:col: ..." problem, so the list reads top down."""
    parts = problem.split(": ", 1)[0].rsplit(":", 2)
    return (
        (int(parts[1]), int(parts[2]))
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit()
        else (0, 0)
    )


def panel_jobs(story: Path) -> list[PanelJob]:
    """Each panel's composed prompts, LoRA uses, seed and settings (no GPU, no model files)."""
    return plan(load_story(story))


class FilesMissing(StoryError):
    """A real build cannot start: every problem with the story's files, at once."""

    def __init__(self, problems: list[str], story: Path) -> None:
        super().__init__(problems)
        self.hint = f"fix these, or draw placeholder panels with: storyboard build {story} --draft"
        self.args = (f"{self.message}\n  hint: {self.hint}",)


def make_renderer(
    loaded: LoadedStory,
    *,
    draft: bool,
    quiet: bool,
    notify: Notify = _silent,
    ray: RayOptions | None = None,
    out_root: Path = Path("output"),
) -> Renderer:
    """The draft renderer when asked; else the diffusers renderer, after every file and setting is
    checked. A problem never turns a real build into a draft one: it fails with the full list. With
    `ray`, that renderer's work runs on Ray actors writing to the story's (or the draft) store under
    `out_root` (or ray.store)."""
    local = _local_renderer(loaded, draft=draft, quiet=quiet)
    if ray is None:
        return local
    from storyboard.distributed import ray_renderer

    out_dir = output_dir(loaded, out_root, draft=draft)
    return ray_renderer(
        local, loaded.base_dir, ray, store=out_dir, encode=png_bytes, quiet=quiet, notify=notify
    )


def close_renderer(renderer: Renderer) -> None:
    """Release what a renderer holds beyond this call (a Ray renderer's actors); others hold nothing."""
    close = getattr(renderer, "close", None)
    if callable(close):
        close()


def _local_renderer(loaded: LoadedStory, *, draft: bool, quiet: bool) -> Renderer:
    from storyboard.render.draft import DraftRenderer

    if draft:
        return DraftRenderer()
    jobs = plan(loaded)
    problems = prompt_problems(loaded, jobs) + img2img_problems(loaded, jobs) + file_problems(loaded, jobs)
    if problems:
        raise FilesMissing(problems, loaded.path)
    from storyboard.render.engine import DiffusersRenderer

    renderer = DiffusersRenderer(loaded.base_dir, quiet=quiet)
    if any(j.detail is not None for j in jobs):
        from storyboard.app.detail import CheckFaceFinder

        refs = {
            cid: [r if r.is_absolute() else loaded.base_dir / r for r in c.references]
            for cid, c in loaded.story.characters.items()
        }
        renderer.face_finder = CheckFaceFinder(jobs, references=refs)
    renderer.check(jobs)
    return renderer


def _check_panel_ids(loaded: LoadedStory, ids: Sequence[str]) -> None:
    for pid in ids:
        loaded.story.panel(pid)  # unknown ids fail with a suggestion before anything renders


def build_story(
    story: Path,
    out: Path,
    *,
    draft: bool = False,
    only: Sequence[str] | None = None,
    seeds: dict[str, int] | None = None,
    wait: bool = True,
    quiet: bool = True,
    notify: Notify = _silent,
    progress: ProgressFn | None = None,
    ray: RayOptions | None = None,
) -> tuple[LoadedStory, BuildReport]:
    """Build the comic (or re-render `only` those panels, optionally with preview seeds); a draft
    build goes to the story's draft/ folder."""
    loaded = load_story(story)
    for w in loaded.warnings:
        notify(f"warning: {w}")
    if only:
        _check_panel_ids(loaded, only)
    renderer = make_renderer(loaded, draft=draft, quiet=quiet, notify=notify, ray=ray, out_root=out)

    def on_wait(holder: str) -> None:
        notify(f"waiting: {holder} is building this story right now")

    try:
        report = build(
            loaded,
            out,
            renderer,
            only=only,
            seeds=seeds,
            wait=wait,
            on_wait=on_wait,
            progress=progress,
            draft=draft,
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
    renderer = make_renderer(loaded, draft=draft, quiet=quiet, notify=notify, ray=ray, out_root=out)
    rng = rng or random.Random()
    found = []
    try:
        for pid in panels:
            seeds = [base[pid]] + [rng.randrange(MAX_RANDOM_SEED) for _ in range(count - 1)]
            images, sheet = render_candidates(loaded, out, renderer, pid, seeds, draft=draft)
            found.append(Candidates(pid, images, sheet))
    finally:
        close_renderer(renderer)
    return found


def pick(story: Path, panel: str, seed: int) -> None:
    """Lock a panel's seed into the story file (comments and formatting kept)."""
    from storyboard.story.pick import pick_seed

    pick_seed(story, panel, seed)


def layout(story: Path, out: Path, *, draft: bool = False) -> list[Path]:
    """Lay the pages out again from the rendered (or, with draft, the draft) panels; every panel must
    exist."""
    from storyboard.app.pages import layout_story

    loaded = load_story(story)
    out_dir = output_dir(loaded, out, draft=draft)
    store = PanelStore(out_dir)
    missing = missing_panels(loaded, store)
    if missing:
        raise StoryboardError(
            f"Panels not rendered yet: {', '.join(missing)}.",
            hint=f"run: storyboard build {story}"
            + (" --draft" if draft else " (or lay out drafts: layout --draft)"),
        )
    with store.lock():
        return layout_story(loaded, out_dir)[0]
