"""The `storyboard` command: each subcommand does one thing, says what it did, and fails with a sentence.

Exit codes: 0 done; 2 a mistake the user can fix (story, files, options: one sentence, no traceback);
1 an environment problem (disk full, permission denied) or a bug (the traceback goes to a log file);
3 `check --strict` found off-model panels (the check itself worked);
130 / 143 stopped by Ctrl-C / SIGTERM, with every finished panel kept.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from storyboard.errors import StoryboardError

if TYPE_CHECKING:
    from storyboard.distributed import RayOptions
from storyboard.commands import ray_options as ray_opts
from storyboard.commands.ray_options import RayActorsOpt, RayCpuOpt, RayOpt, RayStoreOpt

app = typer.Typer(
    name="storyboard",
    help="Turn a story file into a comic whose characters stay on-model, rendered the way WebUI would.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

StoryArg = Annotated[Path, typer.Argument(help="The story YAML file.", show_default=False)]
OutOpt = Annotated[Path, typer.Option("--out", help="Output root; the comic goes to OUT/<story name>/.")]
def _quiet() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("STORYBOARD_QUIET")) or not sys.stderr.isatty()


def _notify(message: str) -> None:
    style = "yellow" if message.startswith("note:") else None
    err_console.print(message, markup=False, style=style)


def _version(value: bool) -> None:
    if value:
        from storyboard import __version__

        console.print(f"storyboard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """Turn a story file into a comic whose characters stay on-model, rendered the way WebUI would."""


@app.command()
def validate(
    story: StoryArg,
    no_files: Annotated[
        bool, typer.Option("--no-files", help="Check the story alone, not its model files and samplers.")
    ] = False,
) -> None:
    """Check everything a build checks before loading weights; report every problem with its place."""
    from storyboard.app import validate as validate_story

    s = validate_story(story, files=not no_files)
    for w in s.warnings:
        _notify(f"warning: {w}")
    checked = "story only" if no_files else "story, samplers and model files"
    console.print(
        f"{story}: OK ({checked}): {s.pages} pages, {s.panels} panels, {s.characters} characters.",
        soft_wrap=True,
    )


@app.command()
def prompts(
    story: StoryArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show each panel's composed prompts, LoRA set, seed and size (no GPU needed)."""
    from storyboard.app import panel_jobs

    jobs = panel_jobs(story)
    if as_json:
        rows = [
            {
                "panel": j.panel_id,
                "page": j.page,
                "positive": j.positive,
                "negative": j.negative,
                "loras": [{"name": u.name, "te": u.te, "unet": u.unet} for u in j.lora_set],
                "lora_owners": [{"name": u.name, "owner": u.owner} for u in j.loras],
                "seed": j.seed,
                "size": list(j.size),
                "output_size": list(j.output_size),
                "sampler": j.settings.sampler,
                "steps": j.settings.steps,
            }
            for j in jobs
        ]
        sys.stdout.write(json.dumps(rows, indent=2, ensure_ascii=False) + "\n")
        return
    table = Table(show_lines=True)
    for col in ("panel", "prompt", "negative", "LoRAs", "seed", "size"):
        table.add_column(col, overflow="fold")
    for j in jobs:
        loras = "\n".join(f"{u.name} te={u.te:g} unet={u.unet:g} ({u.owner})" for u in j.loras) or "-"
        size = f"{j.size[0]}x{j.size[1]}" + (
            f" -> {j.output_size[0]}x{j.output_size[1]}" if j.output_size != j.size else ""
        )
        table.add_row(j.panel_id, j.positive, j.negative, loras, str(j.seed), size)
    console.print(table)


class _Run:
    """What a running build has finished, for the message when it is stopped."""

    panels_dir: Path | None = None
    finished = 0
    signal: int | None = None


def _run_build(
    story: Path,
    out: Path,
    *,
    draft: bool,
    only: list[str] | None = None,
    seeds: dict[str, int] | None = None,
    wait: bool = True,
    ray: RayOptions | None = None,
) -> None:
    from storyboard.app import build_story
    from storyboard.app.build import DRAFT_DIR
    from storyboard.story.load import story_slug

    _Run.panels_dir = out / story_slug(story) / (DRAFT_DIR if draft else "") / "panels"

    def progress(panel_id: str, done: int, total: int) -> None:
        _Run.finished = done
        if not _quiet() or done == total or done % 10 == 0:
            err_console.print(f"  rendered {panel_id} ({done}/{total})")

    loaded, report = build_story(
        story, out, draft=draft, only=only, seeds=seeds, wait=wait,
        quiet=_quiet(), notify=_notify, progress=progress, ray=ray,
    )  # fmt: skip
    console.print(
        f"{loaded.story.title}: rendered {len(report.rendered)} panel(s), reused {len(report.reused)} "
        f"({report.renderer}) -> {report.out_dir}"
    )
    for note in report.notes:
        console.print(f"  {note}")
    for f in report.layout_files:
        if f.suffix in {".pdf", ".cbz"}:
            console.print(f"  wrote {f}")


@app.command("build")
def build_cmd(
    story: StoryArg,
    out: OutOpt = Path("output"),
    draft: Annotated[
        bool,
        typer.Option("--draft", help="Draw labelled placeholder panels into OUT/<story>/draft/; no models."),
    ] = False,
    require_models: Annotated[
        bool, typer.Option("--require-models", hidden=True, help="No effect: models are always required.")
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Fail at once if another build holds the story.")
    ] = False,
    ray: RayOpt = None,
    ray_store: RayStoreOpt = None,
    ray_actors: RayActorsOpt = None,
    ray_cpu: RayCpuOpt = False,
) -> None:
    """Build the whole comic into OUT/<story>/: panels, pages, PDF, CBZ; only changed panels are rendered.
    A missing or wrong model file fails the build with every problem listed; nothing is replaced."""
    rays = ray_opts.ray_options(ray, ray_store, ray_actors, ray_cpu)
    _run_build(story, out, draft=draft, wait=not no_wait, ray=rays)


@app.command()
def render(
    story: StoryArg,
    panel: Annotated[list[str], typer.Option("--panel", "-p", help="Panel id to re-render (repeatable).")],
    out: OutOpt = Path("output"),
    seed: Annotated[
        int | None, typer.Option("--seed", help="Render with this seed (preview; see pick).")
    ] = None,
    reroll: Annotated[bool, typer.Option("--reroll", help="Render with a new random seed.")] = False,
    candidates: Annotated[
        int, typer.Option("--candidates", "-k", min=0, max=64, help="Render K seeds plus a contact sheet.")
    ] = 0,
    draft: Annotated[
        bool, typer.Option("--draft", help="Draft placeholders in OUT/<story>/draft/; no GPU or models.")
    ] = False,
    ray: RayOpt = None,
    ray_store: RayStoreOpt = None,
    ray_actors: RayActorsOpt = None,
    ray_cpu: RayCpuOpt = False,
) -> None:
    """Re-render just the given panels (other panels stay byte-identical), then re-lay out."""
    from storyboard import app as ops

    if sum([seed is not None, reroll, candidates > 0]) > 1:
        raise StoryboardError("Use only one of --seed, --reroll and --candidates.")
    rays = ray_opts.ray_options(ray, ray_store, ray_actors, ray_cpu)
    if candidates:
        found = ops.candidates(
            story, out, panel, candidates, draft=draft, quiet=_quiet(), notify=_notify, ray=rays
        )
        for c in found:
            console.print(f"{c.panel_id}: {len(c.images)} candidates, contact sheet {c.sheet}")
            for s, path in c.images:
                console.print(f"  seed {s}: {path}")
            console.print(f"  keep one with: storyboard pick {story} {c.panel_id} SEED")
        return
    seeds: dict[str, int] | None = None
    if seed is not None or reroll:
        seeds = ops.preview_seeds(panel, seed)
        for pid, s in seeds.items():
            console.print(f"{pid}: seed {s} (keep it with: storyboard pick {story} {pid} {s})")
    _run_build(story, out, draft=draft, only=panel, seeds=seeds, ray=rays)


@app.command()
def pick(
    story: StoryArg,
    panel: Annotated[str, typer.Argument(help="Panel id.")],
    seed: Annotated[int, typer.Argument(help="The seed to keep.")],
) -> None:
    """Lock a panel's seed by writing it into the story file (comments and formatting kept)."""
    from storyboard.app import pick as pick_seed

    pick_seed(story, panel, seed)
    console.print(f"{story}: panel {panel} now has seed {seed}")


@app.command()
def layout(
    story: StoryArg,
    out: OutOpt = Path("output"),
    draft: Annotated[bool, typer.Option("--draft", help="Lay out the draft panels instead.")] = False,
) -> None:
    """Lay the pages out again from the rendered (or draft) panels; no GPU needed."""
    from storyboard.app import layout as layout_pages

    files = layout_pages(story, out, draft=draft)
    for f in files:
        if f.suffix in {".pdf", ".cbz"}:
            console.print(f"wrote {f}")
    pages = [f for f in files if f.suffix == ".png"]
    console.print(f"{len(pages)} page image(s) in {pages[0].parent if pages else out}")


@app.command()
def schema(
    out: Annotated[Path | None, typer.Option("--out", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Write the story file's JSON Schema (for editor autocompletion)."""
    from storyboard.story.json_schema import story_json_schema

    text = json.dumps(story_json_schema(), indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")


@app.command()
def init(directory: Annotated[Path, typer.Argument(help="Folder for the new project.")]) -> None:
    """Create a new project folder with an example story you can build at once."""
    from storyboard.app.init_project import init_project

    for path in init_project(directory):
        console.print(f"wrote {path}")
    console.print(f"next: storyboard build {directory / 'stories' / 'example.yaml'} --draft")


def _register_subapps() -> None:
    from storyboard.commands import check as check_cmd
    from storyboard.commands import dev, lora, models
    from storyboard.commands import prompt as prompt_cmd
    from storyboard.commands import review as review_cmd

    # `check` is one command, so registered as a command (a sub-app would read `storyboard check check`).
    app.command("check")(check_cmd.check)
    app.command("review")(review_cmd.review)
    models_help = "List the model files storyboard finds; download the models a stage needs."
    app.add_typer(models.app, name="models", help=models_help)

    app.add_typer(prompt_cmd.app, name="prompt", help="Look inside WebUI prompts.")
    app.add_typer(lora.app, name="lora", help="Inspect and merge LoRA files.")
    app.add_typer(dev.app, name="dev", help="Developer tools (tiny test models).")


_register_subapps()


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    # Both signals unwind the build the way Ctrl-C does, so open files are closed, temp files removed,
    # the manifest written and the lock released; main() then reports what was kept.
    _Run.signal = signum
    raise KeyboardInterrupt


def _interrupted(signum: int) -> SystemExit:
    kept = (
        f"the {_Run.finished} panel(s) finished in this run are kept" if _Run.finished else "nothing was lost"
    )
    where = f" in {_Run.panels_dir}" if _Run.panels_dir is not None and _Run.finished else ""
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    err_console.print(
        f"interrupted ({name}): {kept}{where}; run the same command again to finish.", markup=False
    )
    return SystemExit(128 + signum)


def _usage_error(exc: BaseException) -> SystemExit | None:
    """click's own usage errors (typer may vendor click, so matched by shape, not class)."""
    show = getattr(exc, "show", None)
    code = getattr(exc, "exit_code", None)
    if not callable(show) or not isinstance(code, int):
        return None
    show()
    return SystemExit(2 if type(exc).__name__ == "NoArgsIsHelpError" else code)


def _bug(exc: BaseException) -> SystemExit:
    import tempfile
    import time
    import traceback

    fd, log = tempfile.mkstemp(prefix=f"storyboard-crash-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(f"storyboard {' '.join(sys.argv[1:])}\n\n")
        traceback.print_exception(exc, file=f)
    err_console.print(
        f"internal error: this is a bug in storyboard ({type(exc).__name__}); the details are in {log}, "
        "please include that file in a bug report.",
        markup=False,
        style="red",
        soft_wrap=True,
    )
    return SystemExit(1)


def main() -> None:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        rv = app(args=ray_opts.ray_argv(sys.argv[1:]), standalone_mode=False)
    except StoryboardError as exc:
        # markup off: messages quote field paths like pages[0] that rich would take for tags
        err_console.print(f"error: {exc}", markup=False, style="red", soft_wrap=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise _interrupted(_Run.signal or signal.SIGINT) from None
    except OSError as exc:
        # The machine's problem, not the story's: a full disk, a folder without write permission.
        what = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
        err_console.print(f"error: {what}.", markup=False, style="red", soft_wrap=True)
        raise SystemExit(1) from None
    except Exception as exc:
        if type(exc).__name__ in ("Exit", "Abort"):  # click's, possibly vendored by typer
            if _Run.signal is not None or type(exc).__name__ == "Abort":
                raise _interrupted(_Run.signal or signal.SIGINT) from None
            raise SystemExit(getattr(exc, "exit_code", 0)) from None
        usage = _usage_error(exc)
        if usage is not None:
            raise usage from None
        raise _bug(exc) from None
    if _Run.signal is not None:  # typer turned the KeyboardInterrupt into a returned 130
        raise _interrupted(_Run.signal)
    if isinstance(rv, int) and rv:
        raise SystemExit(rv)


if __name__ == "__main__":
    main()
