"""`storyboard review STORY`: the review page (the body is in storyboard/review/)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def review(
    story: Annotated[Path, typer.Argument(help="The story YAML file.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="Output root; the page shows OUT/<story>/.")] = Path(
        "output"
    ),
    host: Annotated[
        str, typer.Option("--host", help="Interface to listen on; anything but loopback prints a warning.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port; 0 picks a free one.")] = 0,
    no_open: Annotated[
        bool, typer.Option("--no-open", help="Print the address; do not open a browser.")
    ] = False,
    draft: Annotated[
        bool, typer.Option("--draft", help="Render draft placeholders; no GPU or models.")
    ] = False,
) -> None:
    """Open a local page to look at the comic, compare candidates, pick, reroll and edit panels."""
    from rich.console import Console

    from storyboard.review.serve import serve

    console = Console(highlight=False, stderr=False)

    def echo(line: str) -> None:
        style = "yellow" if line.startswith("warning") else None
        console.print(line, markup=False, style=style, soft_wrap=True)

    serve(story, out, host=host, port=port, draft=draft, open_browser=not no_open, echo=echo)
