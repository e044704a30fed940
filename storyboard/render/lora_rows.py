"""LoRA sets applied per sample, unmerged: several LoRA sets in one UNet call.

The patcher merges one set into the weights (``models/lora.py``), so one UNet call sees one set. The
face detailer's batch holds faces of different characters, each with its own LoRA set; the part all
faces share stays merged, and each face's own LoRAs are added to that face's rows of the batch by a
forward hook on every layer they patch, in their low-rank form:

    out[rows of set k] += sum over its modules: multiplier * scale * up(down(x[rows of set k]))

with ``down`` the layer's own operation at rank r (a Conv2d's kernel, stride, padding and dilation)
and ``up`` a 1x1 (a Linear's matmul). Since W x + (s up down) x = (W + s up down) x, a row sees what
it would see with its set merged, up to float rounding. Rows are the CFG batch's: face k's cond and
uncond are rows k and k + n of 2n (or row k of each of two calls of n), so a row belongs to set
``row % n``.

Only plain LoRA/LoCon modules have a low-rank form to run this way; LoHa, LoKr, full diffs and
CP-decomposed (``lora_mid``) modules do not, and ``row_deltas`` answers None for a set holding one,
so the caller renders those faces one at a time with the set merged (a LoRA is never dropped).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from storyboard.models.lora import LoraPatcher
from storyboard.models.lora_math import lowrank_factors, module_scale

LoraUse = tuple[Any, float, float]  # (LoraNetwork, te multiplier, unet multiplier), as the patcher's
# Per layer: (set index, up, down) with up/down shaped for the layer's own op (see layer_factors).
RowDeltas = dict[nn.Module, list[tuple[int, Tensor, Tensor]]]


def layer_factors(module: nn.Module, up: Tensor, down: Tensor) -> tuple[Tensor, Tensor] | None:
    """2-D factors (up (out, r) with the scale folded in, down (r, in*kh*kw)) shaped for the layer:
    a Linear's (out, r), (r, in); a Conv2d's 1x1 (out, r, 1, 1) and (r, in, kh, kw). None for a layer
    this cannot run (another type, grouped or non-zero-padded convolutions, shapes that differ)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, Tensor) or up.shape[0] != weight.shape[0]:
        return None
    if int(down.shape[1]) != weight[0].numel() or up.shape[1] != down.shape[0]:
        return None
    if isinstance(module, nn.Linear):
        return up.to(weight.dtype), down.to(weight.dtype)
    if isinstance(module, nn.Conv2d) and module.groups == 1 and module.padding_mode == "zeros":
        conv_down = down.reshape(down.shape[0], *weight.shape[1:])
        return up[:, :, None, None].to(weight.dtype), conv_down.to(weight.dtype)
    return None


def row_deltas(patcher: LoraPatcher, sets: Sequence[Sequence[LoraUse]]) -> RowDeltas | None:
    """Each set's UNet layers with their low-rank factors (several LoRAs of a set on one layer as one
    product, as the patcher merges them); None when some UNet module of a set has no low-rank form
    (see the module docstring). Text-encoder modules are left out: prompts are encoded with the
    whole set merged before sampling."""
    out: RowDeltas = {}
    for k, uses in enumerate(sets):
        plans, _report = patcher.plan(uses)  # the patcher's own matching, multipliers and checks
        for plan in plans.values():
            target = plan.target
            if target.component != "unet":
                continue
            weight = target.weight
            ups, downs = [], []
            for net, module, mult in plan.uses:
                f = lowrank_factors(module, net.tensors_on(weight.device, torch.float32)[module.name])
                if f is None:
                    return None
                ups.append(f[0] * (module_scale(module) * mult))
                downs.append(f[1])
            factors = layer_factors(target.module, torch.cat(ups, dim=1), torch.cat(downs, dim=0))
            if factors is None:
                return None
            out.setdefault(target.module, []).append((k, *factors))
    return out


def _hook(module: nn.Module, items: list[tuple[int, Tensor, Tensor]], n: int) -> Any:
    conv = isinstance(module, nn.Conv2d)

    def add(mod: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any], output: Tensor) -> Tensor:
        x = args[0] if args else next(iter(kwargs.values()))
        if x.shape[0] % n:
            raise RuntimeError(f"a batch of {x.shape[0]} rows is not {n} LoRA sets' rows")
        for k, up, down in items:
            rows = x[k::n]
            if conv:
                assert isinstance(mod, nn.Conv2d)
                mid = F.conv2d(rows, down, None, mod.stride, mod.padding, mod.dilation)
                delta = F.conv2d(mid, up)
            else:
                delta = F.linear(F.linear(rows, down), up)
            # In place: the sampler runs without autograd and the output is this layer's own.
            output[k::n] += delta.to(output.dtype)
        return output

    return add


@contextmanager
def row_loras(deltas: RowDeltas, n: int) -> Iterator[None]:
    """Within the block, rows k, k + n, ... of every UNet call get set k's LoRAs (hooks removed after,
    whatever happens)."""
    handles = []
    try:
        for module, items in deltas.items():
            handles.append(module.register_forward_hook(_hook(module, items, n), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()
