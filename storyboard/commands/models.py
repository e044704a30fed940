"""`storyboard models fetch check`: download the check's pinned model files into the HF cache."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    name="models", help="Download the models a stage needs.", no_args_is_help=True, add_completion=False
)


@app.callback()
def models() -> None:
    """Download the models a stage needs."""


@app.command("fetch")
def fetch(
    what: Annotated[str, typer.Argument(help="Which stage's models: check.")] = "check",
    clip: Annotated[
        bool, typer.Option("--clip", help="Also CLIP ViT-L/14 (1.7 GB) for --backend clip.")
    ] = False,
) -> None:
    """Download what `storyboard check` needs (CCIP and the person detector) and say where it went."""
    from storyboard.app.check import fetch_models

    fetch_models(what, clip=clip)
