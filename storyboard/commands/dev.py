"""`storyboard dev`: developer tools (tiny offline models for tests and demos)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="dev",
    help="Developer tools: build tiny random-weight models to try storyboard without a GPU or downloads.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(highlight=False)


def _wrote(rows: list[tuple[str, Path]], root: Path, model: str) -> None:
    width = max(len(label) for label, _ in rows)
    for label, path in rows:
        console.print(f"wrote {label:<{width}} {path}", soft_wrap=True)  # a path is never broken
    # webui_root is read relative to the story file, not the working directory: the hint gives the
    # absolute path, which works from any story.
    hint = f"use it in a story with `render: {{webui_root: {Path(root).resolve()}, model: {model}}}`"
    console.print(hint, soft_wrap=True)


@app.callback()
def dev() -> None:
    """Developer tools: tiny random-weight models for trying storyboard offline."""


@app.command("tiny-model")
def tiny_model(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the tiny WebUI-style install into.")],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random weights.")] = 0,
    family: Annotated[
        str,
        typer.Option("--family", help="sd1, or sdxl (plain and v-pred + ztsnr single files, SDXL LoRAs)."),
    ] = "sd1",
) -> None:
    """Write a tiny random-weight model: SD1.x (single file, diffusers folder, VAE, embedding, LoRAs)
    or, with --family sdxl, SDXL single files (plain, and v-prediction + zero terminal SNR) with LoRAs."""
    if family == "sdxl":
        from storyboard.models.tiny import write_tiny_sdxl_model

        xl = write_tiny_sdxl_model(out_dir, seed=seed)
        rows = [("checkpoint", xl.checkpoint), ("v-pred checkpoint", xl.vpred_checkpoint), ("VAE", xl.vae)]
        _wrote([*rows, *[("LoRA", p) for p in xl.loras]], xl.root, "tiny-sdxl")
        return
    if family != "sd1":
        raise typer.BadParameter(f"unknown family {family!r}; use sd1 or sdxl", param_hint="--family")
    from storyboard.models.tiny import write_tiny_model

    tiny = write_tiny_model(out_dir, seed=seed)
    rows = [
        ("checkpoint", tiny.checkpoint),
        ("diffusers folder", tiny.diffusers_dir),
        ("VAE", tiny.vae),
        ("embedding", tiny.embedding),
        *[("LoRA", p) for p in tiny.loras],
    ]
    if not tiny.loras:
        console.print("no LoRAs written (storyboard.models.lora_write is not available)")
    _wrote(rows, tiny.root, "tiny-sd")
