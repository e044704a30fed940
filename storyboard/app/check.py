"""The check as a user runs it: story + output folder -> the check stage's input, the report, and the
`--fix` loop wired to the real renderer, the panel store and `pick`. The stage itself
(`storyboard.check`) reads only what this module hands it.

Entry points for the CLI (`storyboard/commands/check.py`, `storyboard/commands/models.py`):
  * check_story(...)  -> exit code: run the check (and --fix), write the report, print the summary;
  * fetch_models(...) -> folders: download the pinned model files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from storyboard.check import fetch as fetch_mod
from storyboard.check.backend import Backend, Detector
from storyboard.check.fix import FixResult, RecordPick, RenderCandidates, fix_panels
from storyboard.check.report import region_notes, summary_table, summary_text, write_report
from storyboard.check.run import run_check
from storyboard.check.types import CharacterSpec, CheckInput, CheckReport, PanelSpec
from storyboard.errors import StoryboardError
from storyboard.jobs import Renderer

if TYPE_CHECKING:
    from storyboard.distributed import RayOptions


@dataclass(frozen=True)
class StoryPaths:
    story: Path
    out_dir: Path  # output/<story>/

    @property
    def check_dir(self) -> Path:
        return self.out_dir / "check"


def check_input(
    story: Path, out_root: Path = Path("output"), threshold: float | None = None
) -> tuple[CheckInput, StoryPaths]:
    """The check's input from a story file and its output folder (panels/<id>.png, manifest.json).

    Seeds come from manifest.json (what each panel file was rendered with), else from the plan.
    Regions (character -> box as panel fractions) come from the plan, as the renderer used them; they
    steer which detected person is which character. References are resolved against the story
    file's folder. `threshold` (`--threshold`, checked by `cli_threshold`) overrides the story's.
    """
    from storyboard.app.build import output_dir
    from storyboard.app.store import PanelStore
    from storyboard.story.load import load_story
    from storyboard.story.plan import plan

    loaded = load_story(story)
    out_dir = output_dir(loaded, out_root)
    store = PanelStore(out_dir)
    manifest = store.read_manifest().panels
    jobs = {j.panel_id: j for j in plan(loaded)}
    panels = []
    for _, _, p in loaded.story.panels():
        assert p.id is not None
        entry = manifest.get(p.id)
        job = jobs[p.id]
        panels.append(
            PanelSpec(
                panel_id=p.id,
                image=store.panel_path(p.id),
                characters=tuple(p.characters),
                seed=entry.seed if entry is not None else job.seed,
                regions={r.character: r.box for r in job.regions},
            )
        )
    characters = {
        cid: CharacterSpec(
            id=cid,
            name=c.name or cid,
            references=tuple(r if r.is_absolute() else loaded.base_dir / r for r in c.references),
            threshold=c.check.threshold,
        )
        for cid, c in loaded.story.characters.items()
    }
    inp = CheckInput(
        title=loaded.story.title,
        characters=characters,
        panels=tuple(panels),
        out_dir=out_dir / "check",
        threshold=loaded.story.check.threshold,
        threshold_override=threshold,
    )
    return inp, StoryPaths(story=story, out_dir=out_dir)


# `check --strict` found off-model panels: its own code, so a script can tell "the comic needs work"
# from 2 (a mistake to fix before the check can run) and 1 (the machine's problem or a bug).
OFF_MODEL_EXIT = 3


def cli_threshold(value: float | None) -> float | None:
    """`--threshold` checked by the same rule as the story file's `check: {threshold}`."""
    from pydantic import ValidationError

    from storyboard.story.schema import CheckSettings

    if value is None:
        return None
    try:
        return CheckSettings(threshold=value).threshold
    except ValidationError as exc:
        reason = exc.errors(include_url=False)[0]["msg"]
        raise StoryboardError(
            f"--threshold {value:g}: {reason}; it is an identity distance, e.g. 0.18 "
            "(see the README's 'Calibrating the threshold')."
        ) from None


def open_models(
    backend: str, models_dir: Path | None, *, device: str = "auto", detector: bool = True
) -> tuple[Backend, Detector | None]:
    """Load the backend and the person detector from --models DIR or the HF cache (never downloads)."""
    from storyboard.check.ccip import CcipBackend
    from storyboard.check.clip_backend import ClipBackend
    from storyboard.check.detect import YoloDetector

    if backend not in {"ccip", "clip"}:
        raise StoryboardError(f"Unknown check backend {backend!r}; use ccip or clip.")
    folders = fetch_mod.resolve(fetch_mod.specs_for(backend, detector), models_dir=models_dir)
    emb: Backend = (
        CcipBackend.open(folders["ccip"], device=device)
        if backend == "ccip"
        else ClipBackend.open(folders["clip"], device=device)
    )
    det = YoloDetector.open(folders["detector"] / "model.onnx", device=device) if detector else None
    return emb, det


def _fix_callables(
    paths: StoryPaths, out_root: Path, renderer: Renderer
) -> tuple[RenderCandidates, RecordPick, list[str]]:
    """render_candidates / record_pick over the real build and pick, and the list of picked panels."""
    from storyboard.app.build import build, render_candidates
    from storyboard.story.load import load_story
    from storyboard.story.pick import pick_seed

    picked: list[str] = []

    def candidates(panel_id: str, seeds: list[int]) -> list[Path]:
        results, _sheet = render_candidates(load_story(paths.story), out_root, renderer, panel_id, seeds)
        by_seed = dict(results)
        return [by_seed[s] for s in seeds]

    def record(panel_id: str, seed: int) -> None:
        pick_seed(paths.story, panel_id, seed)
        # The candidate is in the render store already, so this build copies it into panels/<id>.png.
        build(load_story(paths.story), out_root, renderer, only=[panel_id], layout=False)
        picked.append(panel_id)

    return candidates, record, picked


def check_story(
    story: Path,
    *,
    out_root: Path = Path("output"),
    strict: bool = False,
    fix: bool = False,
    tries: int = 4,
    backend: str = "ccip",
    models_dir: Path | None = None,
    device: str = "auto",
    console: Console | None = None,
    models: tuple[Backend, Detector | None] | None = None,
    renderer: Renderer | None = None,
    ray: RayOptions | None = None,
    threshold: float | None = None,
) -> int:
    """`storyboard check`: 0 when fine (or not --strict), OFF_MODEL_EXIT when --strict and a panel is
    off-model.

    `models` and `renderer` are for tests and callers that already hold them.
    """
    console = console or Console(highlight=False)
    threshold = cli_threshold(threshold)
    inp, paths = check_input(story, out_root, threshold)
    emb, det = models or open_models(backend, models_dir, device=device)
    cache = paths.check_dir / "cache"
    report = run_check(inp, emb, det, cache)
    fixed: FixResult | None = None
    owned = renderer is None  # a renderer made here (Ray actors, a loaded model) is released here
    if fix and report.flagged_panels:
        if renderer is None:
            from storyboard.app.operations import make_renderer
            from storyboard.story.load import load_story

            # Drafts would "fix" nothing: a missing model is an error here, not a fallback.
            renderer = make_renderer(
                load_story(story), draft=False, quiet=True, ray=ray, out_root=out_root
            )
        # The face detailer first (when its detectors are fetched): kept where it brings a panel
        # closer; the rerolls below then replace a panel only with a closer candidate.
        from storyboard.app.detail import detail_callables
        from storyboard.check.detail_fix import detail_first

        try_d, record_d = detail_callables(story, paths.out_dir, out_root, renderer)
        details = detail_first(
            report, inp, backend=emb, detector=det, try_detail=try_d, record_detail=record_d, cache_dir=cache
        )
        for d in details:
            state = "on-model" if d.passed else "closer, still off-model"
            console.print(f"fixed {d.panel_id}: face detailer, kept ({state})")
        if details:
            inp = check_input(story, out_root)[0]
            report = run_check(inp, emb, det, cache)
        candidates, record, picked = _fix_callables(paths, out_root, renderer)
        fixed = fix_panels(
            report,
            inp,
            backend=emb,
            detector=det,
            render_candidates=candidates,
            record_pick=record,
            tries=tries,
            cache_dir=cache,
        )
        if picked or details:
            from storyboard.app.build import build
            from storyboard.story.load import load_story

            build(load_story(story), out_root, renderer, only=[], layout=True)  # re-lay out the pages
        report = fixed.report
        if owned:
            from storyboard.app.operations import close_renderer

            close_renderer(renderer)
    files = write_report(report, check_input(story, out_root, threshold)[0] if fixed else inp)
    _print_summary(console, report)
    _print_outcome(console, report.flagged_panels, fixed, files["html"])
    return OFF_MODEL_EXIT if strict and report.flagged_panels else 0


def _print_summary(console: Console, report: CheckReport) -> None:
    if console.is_terminal:
        console.print(summary_table(report))
    else:  # piped or redirected: plain rows, one per line, whatever the width rich assumes
        for line in summary_text(report):
            _say(console, line)
    for note in region_notes(report):
        _say(console, note)


def _say(console: Console, line: str) -> None:
    # No markup (paths and ids are literal) and no wrapping: a long path or list stays on one line.
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def _print_outcome(console: Console, flagged: Sequence[str], fixed: FixResult | None, html: Path) -> None:
    if fixed is not None:
        for c in fixed.changes:
            state = "on-model" if c.passed else "closer, still off-model"
            _say(console, f"fixed {c.panel_id}: seed {c.old_seed} -> {c.new_seed} ({state})")
        for pid in fixed.still_failing:
            _say(console, f"still off-model after {len(fixed.tried.get(pid, []))} tries: {pid}")
    elif flagged:
        _say(console, f"off-model: {', '.join(flagged)} (reroll them with --fix)")
    _say(console, f"report: {html}")


def fetch_models(
    what: str = "check", *, clip: bool = False, console: Console | None = None
) -> dict[str, Path]:
    """`storyboard models fetch check`: download the pinned files, say where they went."""
    console = console or Console(highlight=False)
    if what != "check":
        raise StoryboardError(f"Nothing to fetch for {what!r}; known: check.")
    specs = [fetch_mod.CCIP, fetch_mod.DETECTOR] + ([fetch_mod.CLIP] if clip else [])
    folders = fetch_mod.fetch(specs)
    for key, folder in folders.items():
        console.print(f"{key}: {folder}")
    return folders
