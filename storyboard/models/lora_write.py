"""Write real kohya-format LoRA / LoCon / LoHa / LoKr files with random weights.

Tests and benchmarks need LoRA files and nothing may be downloaded, so we write them the way kohya
sd-scripts (``networks/lora.py``) and LyCORIS lay them out: the same target layers, key names,
tensor shapes, ``alpha`` scalars and ``ss_*`` metadata.

Target layers (kohya): Linear and 1x1 Conv2d inside every ``Transformer2DModel`` of the UNet and every
``CLIPAttention``/``CLIPMLP`` of the text encoder; LoCon/LoHa/LoKr add the layers of ``ResnetBlock2D``,
``Downsample2D`` and ``Upsample2D`` (3x3 convs included).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save
from torch import nn

from storyboard.models.lora_keys import _unet_layout, diffusers_to_ldm_module_path, kohya_te_name
from storyboard.models.stable_save import save_file_stable

KINDS = ("lora", "locon", "loha", "lokr")
_UNET_ATTN_CLASSES = {"Transformer2DModel", "SpatialTransformer"}
_UNET_CONV_CLASSES = {"ResnetBlock2D", "Downsample2D", "Upsample2D"}
_TE_CLASSES = {"CLIPAttention", "CLIPMLP", "CLIPSdpaAttention", "CLIPFlashAttention2"}


def _targets(model: nn.Module, classes: set[str]) -> list[tuple[str, nn.Module]]:
    """(full module path, layer) of every Linear/Conv2d below a module of one of ``classes``."""
    seen: set[str] = set()
    out: list[tuple[str, nn.Module]] = []
    for parent_name, parent in model.named_modules():
        if type(parent).__name__ not in classes:
            continue
        for child_name, child in parent.named_modules():
            if not isinstance(child, (nn.Linear, nn.Conv2d)) or not child_name:
                continue
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            if full not in seen:
                seen.add(full)
                out.append((full, child))
    return out


def lokr_factor(n: int) -> tuple[int, int]:
    """Split n = a*b with a the largest divisor <= sqrt(n) (LyCORIS ``factorization`` with factor -1)."""
    a = 1
    for d in range(1, int(math.isqrt(n)) + 1):
        if n % d == 0:
            a = d
    return a, n // a


def _layer_tensors(
    layer: nn.Module, kind: str, rank: int, cp: bool, gen: torch.Generator, scale: float
) -> dict[str, torch.Tensor]:
    w = layer.weight
    assert isinstance(w, torch.Tensor)
    out_dim, in_dim = int(w.shape[0]), int(w.shape[1])
    kernel = tuple(int(k) for k in w.shape[2:]) if w.dim() == 4 else ()
    is_conv = w.dim() == 4
    spatial = is_conv and kernel != (1, 1)
    r = min(rank, out_dim, in_dim)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * scale

    if kind in ("lora", "locon"):
        if spatial and cp:
            return {
                "lora_down.weight": rnd(r, in_dim, 1, 1),
                "lora_mid.weight": rnd(r, r, *kernel),
                "lora_up.weight": rnd(out_dim, r, 1, 1),
            }
        if is_conv:
            return {"lora_down.weight": rnd(r, in_dim, *kernel), "lora_up.weight": rnd(out_dim, r, 1, 1)}
        return {"lora_down.weight": rnd(r, in_dim), "lora_up.weight": rnd(out_dim, r)}
    if kind == "loha":
        if spatial and cp:
            return {
                "hada_w1_a": rnd(r, out_dim),
                "hada_w1_b": rnd(r, in_dim),
                "hada_t1": rnd(r, r, *kernel),
                "hada_w2_a": rnd(r, out_dim),
                "hada_w2_b": rnd(r, in_dim),
                "hada_t2": rnd(r, r, *kernel),
            }
        flat_in = in_dim * (math.prod(kernel) if is_conv else 1)
        return {
            "hada_w1_a": rnd(out_dim, r),
            "hada_w1_b": rnd(r, flat_in),
            "hada_w2_a": rnd(out_dim, r),
            "hada_w2_b": rnd(r, flat_in),
        }
    if kind == "lokr":
        a, c = lokr_factor(out_dim)
        b, d = lokr_factor(in_dim)
        t: dict[str, torch.Tensor] = {"lokr_w1": rnd(a, b)}
        if is_conv:
            t["lokr_w2"] = rnd(c, d, *kernel)  # LyCORIS keeps conv w2 whole unless decomposed
        else:
            rr = min(rank, c, d)
            t["lokr_w2_a"] = rnd(c, rr)
            t["lokr_w2_b"] = rnd(rr, d)
        return t
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def safetensors_data_hash(blob: bytes) -> str:
    """sha256 of a safetensors file's bytes after its header (kohya's ``addnet_hash_safetensors``)."""
    n = int.from_bytes(blob[:8], "little")
    return hashlib.sha256(blob[8 + n :]).hexdigest()


def write_kohya_lora(
    path: str | Path,
    unet: nn.Module | None,
    text_encoder: nn.Module | None,
    *,
    kind: str = "lora",
    rank: int = 4,
    alpha: float | None = None,
    seed: int = 0,
    scale: float = 0.05,
    metadata: dict[str, Any] | None = None,
    text_encoder_prefix: str = "lora_te",
    text_encoder_2: nn.Module | None = None,
    dtype: torch.dtype = torch.float16,
    cp: bool = False,
    unet_layout: str = "diffusers",
    base_model_version: str = "sd_v1",
    tag_frequency: dict[str, dict[str, int]] | None = None,
    with_hash: bool = True,
) -> Path:
    """Write a kohya-style LoRA for ``unet``/``text_encoder`` (either may be None) and return its path.

    ``alpha`` defaults to rank/2 (so the alpha/rank scale is exercised); ``cp`` adds ``lora_mid`` /
    ``hada_t1``/``hada_t2`` Tucker factors to 3x3 convs; ``unet_layout="ldm"`` names UNet layers the
    way kohya's SDXL trainer does (``input_blocks_4_1_...``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if alpha is None:
        alpha = rank / 2
    gen = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}

    def add(name: str, layer: nn.Module) -> None:
        for suffix, t in _layer_tensors(layer, kind, rank, cp, gen, scale).items():
            tensors[f"{name}.{suffix}"] = t.to(dtype).contiguous()
        tensors[f"{name}.alpha"] = torch.tensor(float(alpha)).to(dtype)

    if unet is not None:
        classes = set(_UNET_ATTN_CLASSES)
        if kind != "lora":
            classes |= _UNET_CONV_CLASSES
        lpb, up_has_attn = _unet_layout(unet)
        for mod_path, layer in _targets(unet, classes):
            if kind == "lora" and isinstance(layer, nn.Conv2d) and tuple(layer.kernel_size) != (1, 1):
                continue
            named = mod_path
            if unet_layout == "ldm":
                ldm = diffusers_to_ldm_module_path(mod_path, lpb, up_has_attn)
                if ldm is None:
                    continue
                named = ldm
            add("lora_unet_" + named.replace(".", "_"), layer)
    for te, prefix in ((text_encoder, text_encoder_prefix), (text_encoder_2, "lora_te2")):
        if te is None:
            continue
        for mod_path, layer in _targets(te, _TE_CLASSES):
            add(kohya_te_name(mod_path, prefix.rstrip("_") + "_"), layer)

    out = Path(path)
    meta: dict[str, str] = {
        "ss_network_module": "networks.lora" if kind in ("lora", "locon") else "lycoris.kohya",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_base_model_version": base_model_version,
        "ss_output_name": out.stem,
        "ss_resolution": "(512, 512)",
        "ss_tag_frequency": json.dumps(
            tag_frequency
            if tag_frequency is not None
            else {"10_subject": {out.stem: 10, "1girl": 8, "solo": 5}}
        ),
    }
    if kind == "locon":
        meta["ss_network_args"] = json.dumps({"conv_dim": str(rank), "conv_alpha": str(alpha)})
    elif kind in ("loha", "lokr"):
        meta["ss_network_args"] = json.dumps({"algo": kind, "conv_dim": str(rank), "conv_alpha": str(alpha)})
    for k, v in (metadata or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    if with_hash:
        # kohya stores the hash of the tensor bytes, which the header (metadata) does not change.
        meta["sshs_model_hash"] = safetensors_data_hash(save(tensors))
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file_stable(tensors, out, meta)
    return out
