"""`storyboard models fetch check` / `fetch detail` / `fetch control`: download the pinned model files
of the check, of the face detailer (anime face and person detectors) or of the ControlNet annotators
into the HF cache.
`storyboard models list`: the model files a story can use, with their families."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="models",
    help="List model files, or download the models a stage needs.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def models() -> None:
    """Download the models a stage needs."""


@app.command("fetch")
def fetch(
    what: Annotated[str, typer.Argument(help="Which stage's models: check, detail, or control.")] = "check",
    clip: Annotated[
        bool, typer.Option("--clip", help="Also CLIP ViT-L/14 (1.7 GB) for --backend clip.")
    ] = False,
) -> None:
    """Download what `storyboard check` needs (CCIP and the person detector), or the face
    detailer's detectors (`detail`), or the ControlNet annotators (`control`: lineart_anime,
    depth_anything, dw_openpose_full, depth_midas), and say where it went."""
    if what == "control":
        from storyboard.render.control.annotators.specs import fetch_control

        for key, paths in fetch_control().items():
            typer.echo(f"{key}: {', '.join(str(p) for p in paths)}")
        return
    if what == "detail":
        from storyboard.check.detail_models import fetch_detail

        for key, folder in fetch_detail().items():
            typer.echo(f"{key}: {folder}")
        return
    from storyboard.app.check import fetch_models

    fetch_models(what, clip=clip)


@app.command("list")
def list_cmd(
    story: Annotated[
        Path | None, typer.Argument(help="A story file: the folders its render settings name are listed.")
    ] = None,
    webui_root: Annotated[
        Path | None, typer.Option("--webui-root", help="A WebUI install whose models/ are listed.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the list as JSON.")] = False,
) -> None:
    """Checkpoints (family, v-pred, ztsnr), LoRAs (family, trigger words), VAEs, embeddings, upscalers."""
    from storyboard.app.inventory import inventory
    from storyboard.models.inventory import format_inventory, inventory_json

    entries = inventory(story, webui_root)
    typer.echo(inventory_json(entries) if as_json else format_inventory(entries))
