"""`storyboard check`: is every character on-model in every panel? (the body is in app/check.py)"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(name="check", add_completion=False)


@app.command("check")
def check(
    story: Annotated[Path, typer.Argument(help="The story YAML file.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Output root; the check reads OUT/<story>/.")] = Path(
        "output"
    ),
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit with status 3 when any panel is off-model (2: a mistake to fix; 1: a machine "
            "problem or a bug).",
        ),
    ] = False,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Identity distance above which a crop is off-model, for every character; wins over "
            "the story's check: {threshold} (story or character). Default: the backend's (CCIP 0.178).",
            show_default=False,
        ),
    ] = None,
    fix: Annotated[
        bool, typer.Option("--fix", help="Reroll off-model panels and keep the closest candidate's seed.")
    ] = False,
    tries: Annotated[int, typer.Option("--tries", min=1, max=64, help="Candidate seeds per panel.")] = 4,
    backend: Annotated[
        str, typer.Option("--backend", help="Identity model: ccip (anime art) or clip (ViT-L/14).")
    ] = "ccip",
    models: Annotated[
        Path | None, typer.Option("--models", help="Folder with the model files instead of the HF cache.")
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray", metavar="[ADDRESS]", help="With --fix: render candidates on Ray (see build --ray)."
        ),
    ] = None,
) -> None:
    """Compare each character across its panels; write OUT/<story>/check/index.html and report.json."""
    from storyboard.app.check import check_story
    from storyboard.commands.ray_options import ray_options

    code = check_story(
        story,
        out_root=out,
        strict=strict,
        fix=fix,
        tries=tries,
        backend=backend,
        models_dir=models,
        device=device,
        ray=ray_options(ray, None),
        threshold=threshold,
    )
    if code:
        raise typer.Exit(code)
