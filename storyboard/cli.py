"""The `storyboard` command: each subcommand does one thing, says what it did, and fails with a sentence."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from storyboard.errors import StoryboardError

if TYPE_CHECKING:
    from storyboard.distributed import RayOptions

app = typer.Typer(
    name="storyboard",
    help="Turn a story file into a comic whose characters stay on-model, rendered the way WebUI would.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

StoryArg = Annotated[Path, typer.Argument(help="The story YAML file.", show_default=False)]
OutOpt = Annotated[Path, typer.Option("--out", help="Output root; the comic goes to OUT/<story name>/.")]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        metavar="[ADDRESS]",
        help="Render on Ray, one actor per GPU: alone, a local Ray over this machine's GPUs; with ADDRESS "
        "(auto, HOST:PORT, ray://HOST:PORT) that cluster. Needs pip install 'storyboard[ray]'.",
    ),
]
RayStoreOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-store",
        help="With --ray on a cluster: the shared panel store, a folder every node mounts at the same "
        "path or an fsspec URL (default: the output folder).",
    ),
]
# `--ray` may stand alone; the parser wants a value, so main() gives the bare flag the value "local".
_RAY_ADDRESS = re.compile(r"^(auto|local|ray://\S+|[\w.-]+:\d+)$")


def _ray_argv(argv: list[str]) -> list[str]:
    """`--ray` followed by something that is not an address becomes `--ray=local`."""
    out = []
    for i, arg in enumerate(argv):
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if arg == "--ray" and (nxt is None or not _RAY_ADDRESS.match(nxt)):
            arg = "--ray=local"
        out.append(arg)
    return out


def _ray_options(ray: str | None, store: str | None) -> RayOptions | None:
    from storyboard.distributed import RayOptions, parse_address, require_ray

    if ray is None:
        if store is not None:
            raise StoryboardError("--ray-store is only used with --ray.")
        return None
    require_ray()  # the install hint before any model loads
    return RayOptions(address=parse_address(ray), store=store)


def _quiet() -> bool:
    return bool(os.environ.get("CI") or os.environ.get("STORYBOARD_QUIET")) or not sys.stderr.isatty()


def _notify(message: str) -> None:
    style = "yellow" if message.startswith("note:") else None
    err_console.print(message, markup=False, style=style)


@app.command()
def validate(story: StoryArg) -> None:
    """Check a story file and report every problem with its line and column."""
    from storyboard.app import validate as validate_story

    s = validate_story(story)
    console.print(f"{story}: OK: {s.pages} pages, {s.panels} panels, {s.characters} characters.")


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


def _run_build(
    story: Path,
    out: Path,
    *,
    draft: bool,
    require_models: bool,
    only: list[str] | None = None,
    seeds: dict[str, int] | None = None,
    wait: bool = True,
    ray: RayOptions | None = None,
) -> None:
    from storyboard.app import build_story

    def progress(panel_id: str, done: int, total: int) -> None:
        if not _quiet() or done == total or done % 10 == 0:
            err_console.print(f"  rendered {panel_id} ({done}/{total})")

    loaded, report = build_story(
        story, out, draft=draft, require_models=require_models, only=only, seeds=seeds, wait=wait,
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
        bool, typer.Option("--draft", help="Draw labelled placeholder panels; no GPU or models.")
    ] = False,
    require_models: Annotated[
        bool, typer.Option("--require-models", help="Fail instead of drawing drafts when models are missing.")
    ] = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Fail at once if another build holds the story.")
    ] = False,
    ray: RayOpt = None,
    ray_store: RayStoreOpt = None,
) -> None:
    """Build the whole comic into OUT/<story>/: panels, pages, PDF, CBZ; only changed panels are rendered."""
    rays = _ray_options(ray, ray_store)
    _run_build(story, out, draft=draft, require_models=require_models, wait=not no_wait, ray=rays)


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
    draft: Annotated[bool, typer.Option("--draft", help="Draft placeholders; no GPU or models.")] = False,
    ray: RayOpt = None,
    ray_store: RayStoreOpt = None,
) -> None:
    """Re-render just the given panels (other panels stay byte-identical), then re-lay out."""
    from storyboard import app as ops

    if sum([seed is not None, reroll, candidates > 0]) > 1:
        raise StoryboardError("Use only one of --seed, --reroll and --candidates.")
    rays = _ray_options(ray, ray_store)
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
    _run_build(story, out, draft=draft, require_models=False, only=panel, seeds=seeds, ray=rays)


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
def layout(story: StoryArg, out: OutOpt = Path("output")) -> None:
    """Lay the pages out again from the rendered (or draft) panels; no GPU needed."""
    from storyboard.app import layout as layout_pages

    files = layout_pages(story, out)
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
    app.add_typer(models.app, name="models", help="Download the models a stage needs.")

    app.add_typer(prompt_cmd.app, name="prompt", help="Look inside WebUI prompts.")
    app.add_typer(lora.app, name="lora", help="Inspect and merge LoRA files.")
    app.add_typer(dev.app, name="dev", help="Developer tools (tiny test models).")


_register_subapps()


def main() -> None:
    try:
        app(args=_ray_argv(sys.argv[1:]), standalone_mode=False)
    except StoryboardError as exc:
        # markup off: messages quote field paths like pages[0] that rich would take for tags
        err_console.print(f"error: {exc}", markup=False, style="red", soft_wrap=True)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        err_console.print("interrupted: every finished panel is kept; run the same command again to resume.")
        raise SystemExit(130) from None
    except (typer.Abort, typer.Exit) as exc:
        raise SystemExit(getattr(exc, "exit_code", 1)) from None
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        raise


if __name__ == "__main__":
    main()
