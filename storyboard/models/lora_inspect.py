"""What a LoRA file is: base model, network type, rank/alpha, layers, hashes, trigger words."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from storyboard.models import hashes
from storyboard.models.family import lora_family, trigger_words
from storyboard.models.lora import MODEL_KIND_LABEL, detect_lora_base
from storyboard.models.lora_formats import LoraNetwork, metadata_json, read_lora


@dataclass
class LoraInfo:
    path: str
    name: str
    output_name: str | None
    size_bytes: int
    base_model: str  # "SD 1.x" | "SD 2.x" | "SDXL" | "unknown"
    base_model_kind: str | None  # "sd1" | "sd2" | "sdxl" | None
    network_type: str  # "LoRA" | "LoCon" | "LoHa" | "LoKr" | "mixed: ..."
    network_module: str | None
    rank: int | None
    alpha: float | None
    conv_rank: int | None
    conv_alpha: float | None
    modules_unet: int
    modules_text_encoder: int
    modules_text_encoder_2: int
    unsupported_modules: int
    sha256: str | None  # whole file; [:10] is WebUI's/Civitai's AutoV2
    autov2: str | None
    lora_hash: str | None  # WebUI's "Lora hashes" value (12 hex)
    addnet_hash: str | None  # sha256 of the tensor bytes (kohya/WebUI), full hex
    resolution: str | None
    trigger_phrase: str | None
    top_tags: list[tuple[str, int]] = field(default_factory=list)
    training: dict[str, str] = field(default_factory=dict)
    family: str | None = None  # SDXL family it was trained on: "pony" | "illustrious" | "noobai" | None
    family_label: str = "unknown"  # e.g. "SDXL (Illustrious)"
    triggers: list[str] = field(default_factory=list)  # modelspec trigger phrase, else the top tag

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["top_tags"] = [{"tag": t, "count": n} for t, n in self.top_tags]
        return d


_TYPE_LABEL = {"lora": "LoRA", "locon": "LoCon", "loha": "LoHa", "lokr": "LoKr", "full": "full"}
_TRAINING_KEYS = (
    "ss_sd_model_name",
    "ss_clip_skip",
    "ss_num_epochs",
    "ss_max_train_steps",
    "ss_learning_rate",
    "ss_training_started_at",
    "ss_network_args",
    "modelspec.title",
    "modelspec.architecture",
)


def _network_type(net: LoraNetwork) -> str:
    labels = set()
    for m in net.modules.values():
        kind = m.type
        if kind == "lora":
            down = m.tensors["lora_down.weight"]
            # LoCon = LoRA on 3x3 convs too (kohya's conv_dim); 1x1 proj_in/out are plain LoRA.
            if down.dim() == 4 and (tuple(down.shape[2:]) != (1, 1) or "lora_mid.weight" in m.tensors):
                kind = "locon"
        labels.add(kind)
    if "locon" in labels:
        labels.discard("lora")
    names = sorted(_TYPE_LABEL.get(k, k) for k in labels)
    return names[0] if len(names) == 1 else "mixed: " + ", ".join(names)


def _most_common(values: list[Any]) -> Any:
    return Counter(values).most_common(1)[0][0] if values else None


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "", "None") else None
    except ValueError:
        return None


def _int(text: str | None) -> int | None:
    value = _float(text)
    return int(value) if value is not None else None


def top_tags(meta: dict[str, str], n: int = 10) -> list[tuple[str, int]]:
    """Most frequent training tags over all dataset folders of ``ss_tag_frequency``."""
    freq = metadata_json(meta, "ss_tag_frequency")
    counts: Counter[str] = Counter()
    if isinstance(freq, dict):
        for tags in freq.values():
            if isinstance(tags, dict):
                for tag, c in tags.items():
                    if isinstance(c, int | float):
                        counts[str(tag).strip()] += int(c)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def inspect_lora(path: str | Path, *, allow_pickle: bool = False, with_hashes: bool = True) -> LoraInfo:
    """Everything worth knowing about a LoRA file, from its tensors and kohya/modelspec metadata."""
    p = Path(path)
    net = read_lora(p, allow_pickle=allow_pickle)
    meta = net.metadata
    base = detect_lora_base(net)
    prefix_count = Counter(m.component_prefix for m in net.modules.values())
    linear_dims: list[int] = []
    conv_dims: list[int] = []
    linear_alphas: list[float] = []
    conv_alphas: list[float] = []
    for m in net.modules.values():
        spatial = any(t.dim() == 4 and tuple(t.shape[2:]) != (1, 1) for t in m.tensors.values())
        if m.dim is not None:
            (conv_dims if spatial else linear_dims).append(m.dim)
        if m.alpha is not None:
            (conv_alphas if spatial else linear_alphas).append(m.alpha)
    args = metadata_json(meta, "ss_network_args")
    args = args if isinstance(args, dict) else {}
    rank = _most_common(linear_dims)
    conv_rank = _most_common(conv_dims)
    sha = addnet = lhash = None
    if with_hashes:
        sha = hashes.sha256_file(p)
        lhash = hashes.lora_hash(p)
        if p.suffix.lower() == ".safetensors":
            addnet = hashes.addnet_hash_safetensors(p)
    resolution = meta.get("ss_resolution") or meta.get("modelspec.resolution")
    tags = top_tags(meta)
    family = lora_family(base, meta, p.stem)
    return LoraInfo(
        path=str(p),
        name=p.stem,
        output_name=meta.get("ss_output_name"),
        size_bytes=p.stat().st_size,
        base_model=MODEL_KIND_LABEL.get(base, "unknown") if base else "unknown",
        base_model_kind=base,
        network_type=_network_type(net),
        network_module=meta.get("ss_network_module"),
        rank=int(rank) if rank is not None else _int(meta.get("ss_network_dim")),
        alpha=_most_common(linear_alphas) if linear_alphas else _float(meta.get("ss_network_alpha")),
        conv_rank=int(conv_rank) if conv_rank is not None else None,
        conv_alpha=_most_common(conv_alphas) if conv_alphas else _float(args.get("conv_alpha")),
        modules_unet=prefix_count.get("lora_unet_", 0),
        modules_text_encoder=prefix_count.get("lora_te_", 0) + prefix_count.get("lora_te1_", 0),
        modules_text_encoder_2=prefix_count.get("lora_te2_", 0),
        unsupported_modules=len(net.unsupported),
        sha256=sha,
        autov2=sha[:10] if sha else None,
        lora_hash=lhash,
        addnet_hash=addnet,
        resolution=resolution,
        trigger_phrase=meta.get("modelspec.trigger_phrase") or None,
        top_tags=tags,
        training={k: meta[k] for k in _TRAINING_KEYS if meta.get(k)},
        family=family.family,
        family_label=family.label,
        triggers=trigger_words(meta, tags),
    )


def format_info(info: LoraInfo) -> str:
    """Human-readable summary, one fact per line."""

    def rank_text(r: int | None, a: float | None) -> str:
        if r is None:
            return "-"
        return f"{r} (alpha {a:g})" if a is not None else str(r)

    lines = [
        f"{info.name}  ({info.path}, {info.size_bytes / 1e6:.1f} MB)",
        f"  base model:     {info.family_label}",
        f"  network:        {info.network_type}"
        + (f" [{info.network_module}]" if info.network_module else ""),
        f"  rank:           {rank_text(info.rank, info.alpha)}",
    ]
    if info.conv_rank is not None:
        lines.append(f"  conv rank:      {rank_text(info.conv_rank, info.conv_alpha)}")
    te = f"{info.modules_text_encoder}" + (
        f" + {info.modules_text_encoder_2} (encoder 2)" if info.modules_text_encoder_2 else ""
    )
    lines.append(f"  modules:        UNet {info.modules_unet}, text encoder {te}")
    if info.unsupported_modules:
        lines.append(f"  not applied:    {info.unsupported_modules} module(s) of an unsupported type")
    if info.output_name and info.output_name != info.name:
        lines.append(f"  output name:    {info.output_name} (also usable as <lora:{info.output_name}:1>)")
    if info.sha256:
        lines.append(f"  hashes:         AutoV2 {info.autov2}, Lora hash {info.lora_hash}")
        lines.append(f"  sha256:         {info.sha256}")
    if info.resolution:
        lines.append(f"  resolution:     {info.resolution}")
    if info.trigger_phrase:
        lines.append(f"  trigger phrase: {info.trigger_phrase}")
    elif info.triggers:
        lines.append(f"  trigger words:  {', '.join(info.triggers)} (most frequent training tag)")
    if info.top_tags:
        lines.append("  top tags:       " + ", ".join(f"{t} ({n})" for t, n in info.top_tags))
    for k, v in info.training.items():
        lines.append(f"  {k}: {v}")
    return "\n".join(lines)


def info_json(info: LoraInfo) -> str:
    return json.dumps(info.to_dict(), indent=2, sort_keys=True)
