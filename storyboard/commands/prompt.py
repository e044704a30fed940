"""`storyboard prompt`: look inside a WebUI prompt without a GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="prompt",
    help="Look inside WebUI prompts.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _group() -> None:
    """Look inside WebUI prompts."""


@app.command()
def explain(
    text: Annotated[str, typer.Argument(help="The prompt, in WebUI syntax.", show_default=False)],
    steps: Annotated[int, typer.Option("--steps", min=1, help="Sampling steps, for [a:b:N] schedules.")] = 20,
    embeddings: Annotated[
        Path | None,
        typer.Option("--embeddings", help="Folder of textual-inversion embeddings (matched by file name)."),
    ] = None,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Also load .pt/.bin embeddings (trusted files only).")
    ] = False,
) -> None:
    """Show the weighted segments, LoRA tags, embeddings, CLIP chunks and step schedule of TEXT."""
    from storyboard.prompt.embeddings import load_embeddings_dir
    from storyboard.prompt.explain import explain as explain_prompt
    from storyboard.prompt.explain import format_explanation
    from storyboard.prompt.tokenizer import load_clip_tokenizer

    embs = load_embeddings_dir(embeddings, allow_pickle=allow_pickle) if embeddings is not None else {}
    exp = explain_prompt(text, steps, load_clip_tokenizer(), embs)
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        typer.echo(format_explanation(exp), nl=False)
        return
    _print_rich(console, exp)


def _print_rich(console: Console, exp: object) -> None:
    from storyboard.prompt.explain import Explanation
    from storyboard.prompt.parse import BREAK_MARKER

    assert isinstance(exp, Explanation)
    loras = Table(title="LoRAs", show_edge=False)
    for col in ("name", "te", "unet", "dyn"):
        loras.add_column(col)
    for u in exp.merged_loras:
        loras.add_row(u.name, f"{u.te:g}", f"{u.unet:g}", "" if u.dyn is None else str(u.dyn))
    console.print(loras if exp.loras else "LoRAs: none", markup=False)
    console.print("embeddings: " + (", ".join(exp.embeddings) or "none"), markup=False)
    sched = Table(title=f"schedule ({exp.steps} steps)", show_edge=False)
    sched.add_column("until step", justify="right")
    sched.add_column("text", overflow="fold")
    for entry in exp.schedule:
        sched.add_row(str(entry.end_step), entry.text)
    console.print(sched)
    for entry in exp.schedule:
        seg = Table(title=f"weighted segments (until step {entry.end_step})", show_edge=False)
        seg.add_column("weight", justify="right")
        seg.add_column("text", overflow="fold")
        for t, w in entry.segments:
            seg.add_row("BREAK", "") if (t, w) == BREAK_MARKER else seg.add_row(f"{w:.4g}", repr(t))
        console.print(seg)
        chunks = Table(title="CLIP chunks", show_edge=False)
        chunks.add_column("#", justify="right")
        chunks.add_column("tokens", justify="right")
        chunks.add_column("content", overflow="fold")
        for i, c in enumerate(entry.chunks):
            words = " ".join(
                t if w == 1.0 else f"{t}:{w:.3g}" for t, w in zip(c.tokens, c.weights, strict=True)
            )
            chunks.add_row(str(i + 1), f"{c.count}/75", words)
        console.print(chunks)
