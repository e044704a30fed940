"""Every model file under a set of folders, each with what its header says (``storyboard models list``).

Only headers are read (safetensors JSON), never tensors, so listing a folder of 7 GB checkpoints is
quick; pickle files are listed but not opened (that would run their code).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from storyboard.errors import ModelError
from storyboard.models.family import checkpoint_family, lora_family, trigger_words
from storyboard.models.registry import Kind, ModelFile, ModelFolders, Registry, safetensors_metadata

KINDS: tuple[Kind, ...] = ("checkpoint", "lora", "vae", "embedding", "upscaler")


@dataclass
class InventoryEntry:
    kind: Kind
    name: str
    path: str
    family: str  # e.g. "SDXL (NoobAI, v-pred, ztsnr)", "SD 1.x", "unknown"
    alias: str | None = None  # a LoRA's ss_output_name, when it differs from the file name
    triggers: list[str] = field(default_factory=list)
    note: str | None = None  # why facts are missing (pickle not opened, unreadable file)


def _lora_entry(f: ModelFile) -> InventoryEntry:
    from storyboard.models.lora import detect_lora_base
    from storyboard.models.lora_formats import read_lora
    from storyboard.models.lora_inspect import top_tags

    # The base family needs tensor shapes when the metadata is silent: read the (small) LoRA file.
    net = read_lora(f.path)
    meta = net.metadata
    fam = lora_family(detect_lora_base(net), meta, f.path.stem)
    return InventoryEntry(
        "lora", f.name, str(f.path), fam.label, f.alias, trigger_words(meta, top_tags(meta, 1))
    )


def _entry(f: ModelFile) -> InventoryEntry:
    if f.pickle:
        return InventoryEntry(f.kind, f.name, str(f.path), "unknown", note="pickle file: not opened")
    try:
        if f.kind == "checkpoint":
            return InventoryEntry(f.kind, f.name, str(f.path), checkpoint_family(f.path).label)
        if f.kind == "lora":
            return _lora_entry(f)
        if f.kind == "embedding" and f.path.suffix.lower() == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(f.path), "pt") as fh:
                keys = set(fh.keys())
            # SDXL embeddings hold one tensor per text encoder (clip_l, clip_g).
            arch = "SDXL" if {"clip_l", "clip_g"} <= keys else "SD 1.x"
            return InventoryEntry(f.kind, f.name, str(f.path), arch)
        if f.path.suffix.lower() == ".safetensors":
            safetensors_metadata(f.path)  # a readable header, at least
    except ModelError as exc:
        return InventoryEntry(f.kind, f.name, str(f.path), "unknown", note=exc.message)
    return InventoryEntry(f.kind, f.name, str(f.path), "-")


def list_models(folders: ModelFolders, kinds: tuple[Kind, ...] = KINDS) -> list[InventoryEntry]:
    """Every model file of the given kinds under ``folders``, in folder order."""
    reg = Registry(folders)
    return [_entry(f) for kind in kinds for f in reg.files(kind)]


def format_inventory(entries: list[InventoryEntry]) -> str:
    """One section per kind, one line per file: name, family, triggers or note, path."""
    lines: list[str] = []
    for kind in KINDS:
        mine = [e for e in entries if e.kind == kind]
        if not mine:
            continue
        lines.append(f"{kind}s ({len(mine)}):")
        width = max(len(e.name) for e in mine)
        for e in mine:
            extra = []
            if e.alias:
                extra.append(f"alias {e.alias}")
            if e.triggers:
                extra.append("triggers: " + ", ".join(e.triggers))
            if e.note:
                extra.append(e.note)
            tail = f"  [{'; '.join(extra)}]" if extra else ""
            lines.append(f"  {e.name:<{width}}  {e.family}{tail}  {Path(e.path)}")
    return "\n".join(lines) if lines else "no model files found"


def inventory_json(entries: list[InventoryEntry]) -> str:
    return json.dumps([asdict(e) for e in entries], indent=2)
