"""Weight deltas of LoRA / LoCon / LoHa / LoKr modules, with WebUI's shapes and scales.

Follows ``extensions-builtin/Lora/network_lora.py``, ``network_loha.py``, ``network_lokr.py`` and
``lyco_helpers.py`` of Stable Diffusion WebUI: the delta is rebuilt in the product's natural shape,
reshaped onto the target weight when the element counts agree, then multiplied by
``scale`` (the ``scale`` key, else ``alpha / dim``, else 1) and the user's multiplier.
Unlike WebUI (which multiplies in the model dtype) we compute in float32; the caller casts once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from storyboard.errors import ModelError
from storyboard.models.lora_formats import LoraModule


def module_scale(module: LoraModule) -> float:
    """WebUI's ``calc_scale``: the ``scale`` key, else alpha/dim, else 1."""
    if module.scale is not None:
        return module.scale
    dim = module.dim
    if dim is not None and module.alpha is not None:
        return module.alpha / dim
    return 1.0


def _conventional(up: torch.Tensor, down: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    return (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(*shape)


def _cp(up: torch.Tensor, down: torch.Tensor, mid: torch.Tensor) -> torch.Tensor:
    # CP/Tucker rebuild: mid carries the spatial kernel between two 1x1 factors.
    return torch.einsum("nmkl,in,mj->ijkl", mid, up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1))


def _tucker(t: torch.Tensor, wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    temp = torch.einsum("ijkl,jr->irkl", t, wb)
    return torch.einsum("ijkl,ir->rjkl", temp, wa)


def _kron(shape: Sequence[int], w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    return torch.kron(w1, w2.contiguous()).reshape(*shape)


def raw_delta(
    module: LoraModule, target_shape: Sequence[int], tensors: dict[str, torch.Tensor] | None = None
) -> tuple[torch.Tensor, list[int]]:
    """The unscaled product and the shape WebUI gives it (before the reshape onto the target)."""
    t = tensors if tensors is not None else module.tensors
    shape: list[int]
    if module.type == "lora":
        up, down = t["lora_up.weight"], t["lora_down.weight"]
        shape = [up.shape[0], down.shape[1]]
        mid = t.get("lora_mid.weight")
        if mid is not None:
            return _cp(up, down, mid), shape + list(mid.shape[2:])
        if down.dim() == 4:
            shape += list(down.shape[2:])
        return _conventional(up, down, shape), shape
    if module.type == "loha":
        parts = []
        for i in (1, 2):
            wa, wb, tt = t[f"hada_w{i}_a"], t[f"hada_w{i}_b"], t.get(f"hada_t{i}")
            if tt is not None:
                shape = [wa.shape[1], wb.shape[1], *tt.shape[2:]]
                parts.append(_tucker(tt, wa, wb))
            else:
                shape = [wa.shape[0], wb.shape[1]] + (list(wb.shape[2:]) if wb.dim() == 4 else [])
                parts.append(_conventional(wa, wb, shape))
        return parts[0] * parts[1], shape
    if module.type == "lokr":
        w1 = t["lokr_w1"] if "lokr_w1" in t else t["lokr_w1_a"] @ t["lokr_w1_b"]
        if "lokr_w2" in t:
            w2 = t["lokr_w2"]
        elif "lokr_t2" in t:
            w2 = _tucker(t["lokr_t2"], t["lokr_w2_a"], t["lokr_w2_b"])
        else:
            w2 = t["lokr_w2_a"] @ t["lokr_w2_b"]
        shape = [w1.shape[0] * w2.shape[0], w1.shape[1] * w2.shape[1]]
        if len(target_shape) == 4:
            shape = list(target_shape)
        return _kron(shape, w1, w2), shape
    if module.type == "full":
        d = t["diff"]
        return d, list(d.shape)
    raise ValueError(f"unknown LoRA module type {module.type!r}")


def compute_delta(
    module: LoraModule,
    target_weight_shape: Sequence[int],
    multiplier: float,
    *,
    tensors: dict[str, torch.Tensor] | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """ΔW of one module for a target weight of ``target_weight_shape``, scaled by alpha rules and
    ``multiplier``; float32 unless ``dtype`` says otherwise. ``tensors`` may pass device-resident
    copies of ``module.tensors``."""
    if tensors is None:
        tensors = {k: v.to(device=device, dtype=dtype) for k, v in module.tensors.items()}
    updown, shape = raw_delta(module, target_weight_shape, tensors)
    if len(shape) == 4:
        updown = updown.reshape(*shape)
    target_numel = 1
    for s in target_weight_shape:
        target_numel *= int(s)
    if (
        updown.numel() != target_numel
        and len(target_weight_shape) == 4
        and updown.dim() == 4
        and int(target_weight_shape[1]) == 9
        and updown.shape[1] == 4
    ):
        # Inpainting conv_in has 9 input channels; WebUI pads a 4-channel delta with zeros.
        updown = torch.nn.functional.pad(updown, (0, 0, 0, 0, 0, 5))
    if updown.numel() != target_numel:
        raise ModelError(
            f"LoRA module {module.name} has shape {tuple(updown.shape)} but the model's layer has "
            f"{tuple(target_weight_shape)}: the LoRA was made for a different base model.",
            hint="use a LoRA trained for this model family (SD 1.x vs SDXL)",
        )
    updown = updown.reshape(*target_weight_shape)
    return updown * (module_scale(module) * multiplier)


def lowrank_factors(
    module: LoraModule, tensors: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(up, down) as 2-D matrices for a plain LoRA/LoCon module without ``lora_mid``, else None.

    Their product is exactly WebUI's rebuild, so the patcher can concatenate the factors of several
    networks and merge them with one matmul.
    """
    if module.type != "lora" or "lora_mid.weight" in tensors:
        return None
    up, down = tensors["lora_up.weight"], tensors["lora_down.weight"]
    return up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1)
