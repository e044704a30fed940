"""`storyboard lora`: inspect LoRA files and bake LoRAs into a model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(
    name="lora",
    help="Inspect LoRA files and merge LoRAs into a base model.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(highlight=False, soft_wrap=True)

LoraDirs = Annotated[
    list[Path] | None,
    typer.Option("--lora-dir", help="Folder searched (recursively) for LoRA names; repeatable."),
]
WebuiRoot = Annotated[
    Path | None,
    typer.Option(
        "--webui-root", help="A Stable Diffusion WebUI install: its models/Lora, models/Stable-diffusion."
    ),
]
AllowPickle = Annotated[
    bool,
    typer.Option("--allow-pickle", help="Also load .pt/.ckpt files (they can run code: trusted files only)."),
]


def _registry(lora_dirs: list[Path] | None, webui_root: Path | None, model_dirs: list[Path] | None = None):  # noqa: ANN202
    from storyboard.models.registry import ModelFolders, Registry

    folders = ModelFolders(loras=list(lora_dirs or []), checkpoints=list(model_dirs or []))
    if webui_root is not None:
        folders = folders.merged(ModelFolders.from_webui_root(webui_root))
    return Registry(folders)


def _find_lora(ref: str, lora_dirs: list[Path] | None, webui_root: Path | None) -> Path:
    p = Path(ref).expanduser()
    if p.is_file():
        return p
    return _registry(lora_dirs, webui_root).find_lora(ref).path


@app.command("inspect")
def inspect_cmd(
    lora: Annotated[
        str, typer.Argument(help="A LoRA file, or its name (stem or ss_output_name) in --lora-dir.")
    ],
    lora_dir: LoraDirs = None,
    webui_root: WebuiRoot = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts as JSON.")] = False,
    no_hash: Annotated[
        bool, typer.Option("--no-hash", help="Skip hashing the file (faster for big files).")
    ] = False,
    allow_pickle: AllowPickle = False,
) -> None:
    """Show a LoRA's base model, type, rank/alpha, layers, hashes and trigger-word candidates."""
    from storyboard.models.lora_inspect import format_info, info_json, inspect_lora

    info = inspect_lora(
        _find_lora(lora, lora_dir, webui_root), allow_pickle=allow_pickle, with_hashes=not no_hash
    )
    if as_json:
        typer.echo(info_json(info))
    else:
        console.print(format_info(info), markup=False)


@app.command("merge")
def merge_cmd(
    model: Annotated[
        str, typer.Argument(help="Base model: a .safetensors file, a diffusers folder, or a name.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output: NAME.safetensors (single file) or a folder.")],
    lora: Annotated[
        list[str],
        typer.Option(
            "--lora", help="NAME_OR_FILE[:WEIGHT[:UNET_WEIGHT]], as in <lora:name:te:unet>; repeatable."
        ),
    ],
    lora_dir: LoraDirs = None,
    webui_root: WebuiRoot = None,
    config_dir: Annotated[
        Path | None,
        typer.Option("--config-dir", help="diffusers config folder for a non-standard single file."),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    dtype: Annotated[str | None, typer.Option("--dtype", help="fp16, bf16 or fp32 (saved as this).")] = None,
    allow_pickle: AllowPickle = False,
) -> None:
    """Merge LoRAs into a model's weights (W + Σ weight·ΔW, as WebUI applies them) and save it."""
    from storyboard.models.lora_merge import merge_loras, parse_lora_spec

    specs = [parse_lora_spec(s) for s in lora]
    files = [(_find_lora(s.ref, lora_dir, webui_root), s.te, s.unet) for s in specs]
    model_path = Path(model).expanduser()
    if not model_path.exists():
        model_path = _registry(None, webui_root).find_checkpoint(model).path
    result = merge_loras(
        model_path, files, out, device=device, dtype=dtype, allow_pickle=allow_pickle, config_dir=config_dir
    )
    for path, te, un in result.loras:
        console.print(f"merged {path.name} (text encoder {te:g}, UNet {un:g})", markup=False)
    console.print(f"{result.report.applied} layers changed", markup=False)
    for w in result.report.warnings:
        console.print(f"warning: {w}", style="yellow", markup=False)
    console.print(f"wrote {result.format} model {result.out}", markup=False)
