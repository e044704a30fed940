"""LoRA engine: merge a set of LoRAs into the model weights, and restore the base bit-exactly.

WebUI, Forge and ComfyUI all patch ``W = W0 + Σ s·ΔW`` into the weights and keep a backup; that
costs milliseconds per switch and nothing per sampling step. ``LoraPatcher`` does the same for a
diffusers UNet and transformers CLIP text encoder(s):

    patcher = LoraPatcher({"unet": unet, "text_encoder": te})
    char, style = read_lora("char.safetensors"), read_lora("style.safetensors")
    report = patcher.apply([(char, 1.0, 1.0), (style, 0.6, 0.8)])  # (network, te mult, unet mult)
    ...render...
    patcher.restore()

The multiplier rule is WebUI's: the text-encoder multiplier for text-encoder layers, the UNet
multiplier for UNet layers.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from storyboard.errors import ModelError
from storyboard.models.lora_formats import LoraModule, LoraNetwork, clear_cache, read_lora
from storyboard.models.lora_keys import Target, build_key_map
from storyboard.models.lora_math import compute_delta, lowrank_factors, module_scale

__all__ = [
    "ApplyReport",
    "LoraModule",
    "LoraNetwork",
    "LoraPatcher",
    "LoraWarning",
    "UnmatchedKeys",
    "check_compatible",
    "clear_cache",
    "compute_delta",
    "detect_lora_base",
    "infer_model_kind",
    "read_lora",
]

LoraUse = tuple[LoraNetwork, float, float]  # (network, te multiplier, unet multiplier)

MODEL_KIND_LABEL = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}


class LoraWarning(UserWarning):
    """Raised through ``warnings`` when LoRA keys match no layer of the model."""


@dataclass
class UnmatchedKeys:
    network: str
    count: int
    first: list[str]

    def message(self) -> str:
        return (
            f"LoRA {self.network}: {self.count} module(s) match no layer of the model "
            f"and were skipped (first: {', '.join(self.first)})"
        )


@dataclass
class ApplyReport:
    applied: int = 0  # layers whose weights changed
    modules: int = 0  # LoRA modules merged (over all networks)
    unmatched: list[UnmatchedKeys] = field(default_factory=list)
    unsupported: list[UnmatchedKeys] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [u.message() for u in self.unmatched] + [
            u.message().replace("match no layer of the model", "use a network type this tool does not apply")
            for u in self.unsupported
        ]


# --- compatibility -----------------------------------------------------------------------------------

# Context width of the text encoders -> model family. 768: SD1 (and SDXL's first encoder), 1024: SD2.
_CROSS_ATTN_DIM = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


def detect_lora_base(network: LoraNetwork) -> str | None:
    """The LoRA's model family ("sd1", "sd2", "sdxl" or None): key shapes first, then metadata."""
    names = network.modules.keys()
    if any(n.startswith(("lora_te1_", "lora_te2_")) for n in names):
        return "sdxl"
    for name, m in network.modules.items():
        if m.type == "lora" and name.startswith("lora_unet_") and name.endswith("attn2_to_k"):
            kind = _CROSS_ATTN_DIM.get(int(m.tensors["lora_down.weight"].shape[1]))
            if kind is not None:
                return kind
    meta = network.metadata
    version = (meta.get("ss_base_model_version") or "").lower()
    arch = (meta.get("modelspec.architecture") or "").lower()
    if version.startswith("sdxl") or "stable-diffusion-xl" in arch:
        return "sdxl"
    if (
        version.startswith("sd_v2")
        or meta.get("ss_v2", "").lower() == "true"
        or "stable-diffusion-v2" in arch
    ):
        return "sd2"
    if version.startswith("sd_v1") or "stable-diffusion-v1" in arch:
        return "sd1"
    return None


def infer_model_kind(components: dict[str, nn.Module]) -> str | None:
    """The family of a loaded pipeline, from its structure (None for unknown, e.g. tiny test models)."""
    if components.get("text_encoder_2") is not None:
        return "sdxl"
    unet = components.get("unet")
    cfg = getattr(unet, "config", None)
    dim = getattr(cfg, "cross_attention_dim", None)
    return _CROSS_ATTN_DIM.get(dim) if isinstance(dim, int) else None


def check_compatible(network: LoraNetwork, model_kind: str | None) -> None:
    """Raise ModelError when ``network`` was made for another model family than ``model_kind``."""
    if model_kind is None:
        return
    base = detect_lora_base(network)
    if base is None or base == model_kind:
        return
    raise ModelError(
        f"LoRA {network.path.name} was trained for {MODEL_KIND_LABEL.get(base, base)} but the model is "
        f"{MODEL_KIND_LABEL.get(model_kind, model_kind)}; its weights do not fit this model.",
        hint=f"use a {MODEL_KIND_LABEL.get(model_kind, model_kind)} LoRA, or switch the story's model",
    )


# --- patcher -----------------------------------------------------------------------------------------

# Largest stacked fp32 work tensor (elements) one batched merge builds: 64M = 256 MB.
_MAX_BATCH_ELEMENTS = 1 << 26


@dataclass
class _Plan:
    target: Target
    uses: list[tuple[LoraNetwork, LoraModule, float]]


@dataclass
class _Batch:
    """Same-shape layers merged with one batched product: W_i = base_i + up_i @ down_i."""

    weights: list[torch.Tensor]
    up: torch.Tensor  # (G, out, R) compute dtype; multiplier·scale folded in, zero-padded to max rank
    down: torch.Tensor  # (G, R, in·k·k)


@dataclass
class _Prepared:
    batches: list[_Batch]
    singles: list[_Plan]  # layers with LoHa/LoKr/lora_mid modules: merged one by one
    keys: set[int]
    report: ApplyReport


def _foreach_copy(dst: list[torch.Tensor], src: list[torch.Tensor]) -> None:
    same = all(d.device == s.device for d, s in zip(dst, src, strict=True))
    if same and hasattr(torch, "_foreach_copy_"):
        torch._foreach_copy_(dst, src)  # one fused launch instead of one per layer
    else:
        for d, s in zip(dst, src, strict=True):
            d.copy_(s, non_blocking=True)


class LoraPatcher:
    """Merges LoRA sets into a pipeline's weights in place and restores them bit-exactly.

    Plain LoRA/LoCon layers of equal shape are merged together with one batched matmul per shape
    (``baddbmm`` over stacked base weights), and copied back with one fused copy; the prepared
    factors of the last few sets stay on the device, so switching between known sets costs a handful
    of kernel launches per layer shape.
    """

    def __init__(
        self,
        components: dict[str, nn.Module] | None = None,
        *,
        unet: nn.Module | None = None,
        text_encoder: nn.Module | None = None,
        text_encoder_2: nn.Module | None = None,
        model_kind: str | None = None,
        backup_device: torch.device | str | None = None,
        compute_dtype: torch.dtype = torch.float32,
        prepared_sets: int = 4,
    ) -> None:
        comps: dict[str, nn.Module] = dict(components or {})
        for k, v in (("unet", unet), ("text_encoder", text_encoder), ("text_encoder_2", text_encoder_2)):
            if v is not None:
                comps[k] = v
        self.components = {k: v for k, v in comps.items() if v is not None}
        self.model_kind = model_kind if model_kind is not None else infer_model_kind(self.components)
        self.backup_device = torch.device(backup_device) if backup_device is not None else None
        self.compute_dtype = compute_dtype
        self.prepared_sets = prepared_sets
        self._key_map: dict[str, Target] | None = None
        # Base weights of every layer we have touched, keyed by the weight's id; kept after restore()
        # so the next switch needs no new copies. Values are exact clones, never recomputed.
        self._backups: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._dirty: set[int] = set()  # layers currently holding merged (non-base) weights
        self._active: tuple[tuple[tuple[str, int, int], float, float], ...] = ()
        self._last_report = ApplyReport()
        self._prepared: OrderedDict[tuple[tuple[tuple[str, int, int], float, float], ...], _Prepared] = (
            OrderedDict()
        )

    @property
    def key_map(self) -> dict[str, Target]:
        if self._key_map is None:
            self._key_map = build_key_map(self.components)
        return self._key_map

    @property
    def active(self) -> tuple[tuple[tuple[str, int, int], float, float], ...]:
        return self._active

    def _multiplier(self, target: Target, te: float, un: float) -> float:
        return un if target.component == "unet" else te

    def plan(self, uses: Sequence[LoraUse]) -> tuple[dict[int, _Plan], ApplyReport]:
        """Which layer gets which modules (pure bookkeeping, no tensor math)."""
        report = ApplyReport()
        plans: dict[int, _Plan] = {}
        for net, te, un in uses:
            check_compatible(net, self.model_kind)
            missing: list[str] = []
            for name, module in net.modules.items():
                target = self.key_map.get(name)
                if target is None:
                    missing.append(name)
                    continue
                mult = self._multiplier(target, te, un)
                if mult == 0.0:
                    continue  # weight 0 must leave the layer bit-identical, so never touch it
                key = id(target.weight)
                plans.setdefault(key, _Plan(target, [])).uses.append((net, module, mult))
                report.modules += 1
            if missing:
                report.unmatched.append(UnmatchedKeys(net.name, len(missing), sorted(missing)[:5]))
            if net.unsupported:
                report.unsupported.append(UnmatchedKeys(net.name, len(net.unsupported), net.unsupported[:5]))
        report.applied = len(plans)
        return plans, report

    def _prepare(self, uses: Sequence[LoraUse]) -> _Prepared:
        plans, report = self.plan(uses)
        dt = self.compute_dtype
        groups: dict[tuple[Any, ...], list[tuple[_Plan, list[tuple[torch.Tensor, torch.Tensor]]]]] = {}
        singles: list[_Plan] = []
        for plan in plans.values():
            weight = plan.target.weight
            flat = (int(weight.shape[0]), weight.numel() // int(weight.shape[0]))
            factors: list[tuple[torch.Tensor, torch.Tensor]] = []
            for net, module, mult in plan.uses:
                f = lowrank_factors(module, net.tensors_on(weight.device, dt)[module.name])
                if f is None or (f[0].shape[0], f[1].shape[1]) != flat:
                    factors = []
                    break
                factors.append((f[0] * (module_scale(module) * mult), f[1]))
            if not factors:
                singles.append(plan)
                continue
            groups.setdefault((tuple(weight.shape), weight.dtype, weight.device), []).append((plan, factors))
        batches: list[_Batch] = []
        for (shape, _dtype, device), members in groups.items():
            flat = (shape[0], math.prod(shape[1:]))
            per_chunk = max(1, _MAX_BATCH_ELEMENTS // (flat[0] * flat[1]))
            for start in range(0, len(members), per_chunk):
                chunk = members[start : start + per_chunk]
                rank = max(sum(int(u.shape[1]) for u, _ in factors) for _, factors in chunk)
                # Zero padding to the largest rank adds exact zeros to the product.
                up = torch.zeros(len(chunk), flat[0], rank, dtype=dt, device=device)
                down = torch.zeros(len(chunk), rank, flat[1], dtype=dt, device=device)
                for i, (_, factors) in enumerate(chunk):
                    off = 0
                    for u, d in factors:
                        r = int(u.shape[1])
                        up[i, :, off : off + r] = u
                        down[i, off : off + r, :] = d
                        off += r
                batches.append(_Batch([p.target.weight for p, _ in chunk], up, down))
        return _Prepared(batches, singles, set(plans), report)

    def _backup_device_for(self, weight: torch.Tensor, nbytes: int) -> torch.device:
        if self.backup_device is not None:
            return self.backup_device
        if weight.is_cuda:
            free, _total = torch.cuda.mem_get_info(weight.device)
            # Keep a margin for activations: back up on the GPU only while it stays comfortably free.
            if free - nbytes > 2 * 1024**3:
                return weight.device
            return torch.device("cpu")
        return weight.device

    def _backup(self, weight: torch.Tensor) -> torch.Tensor:
        key = id(weight)
        entry = self._backups.get(key)
        if entry is None:
            dev = self._backup_device_for(weight, weight.numel() * weight.element_size())
            copy = weight.detach().to(dev, copy=True)
            self._backups[key] = (weight, copy)
            return copy
        return entry[1]

    @torch.no_grad()
    def apply(self, uses: Sequence[LoraUse]) -> ApplyReport:
        """Make the weights base + Σ multiplier·ΔW of ``uses``; repeating the active set is a no-op."""
        signature = tuple((net.key, float(te), float(un)) for net, te, un in uses)
        if signature == self._active and (signature or not self._dirty):
            return self._last_report
        prepared = self._prepared.get(signature)
        if prepared is None:
            prepared = self._prepare(uses)
            self._prepared[signature] = prepared
            while len(self._prepared) > self.prepared_sets:
                self._prepared.popitem(last=False)
        else:
            self._prepared.move_to_end(signature)
        # Layers merged now but not in the new set go back to base; the others are overwritten from
        # their backup below, so no separate restore pass is needed.
        stale = [k for k in self._dirty if k not in prepared.keys]
        if stale:
            _foreach_copy([self._backups[k][0] for k in stale], [self._backups[k][1] for k in stale])
            self._dirty.difference_update(stale)
        for batch in prepared.batches:
            self._merge_batch(batch)
        for plan in prepared.singles:
            self._merge(plan)
        self._dirty.update(prepared.keys)
        self._active = signature
        self._last_report = prepared.report
        for msg in prepared.report.warnings:
            warnings.warn(msg, LoraWarning, stacklevel=2)
        return prepared.report

    def _merge_batch(self, batch: _Batch) -> None:
        weights = batch.weights
        bases = [self._backup(w) for w in weights]
        acc = torch.stack(bases).to(device=batch.up.device, dtype=self.compute_dtype)
        g, out = acc.shape[0], acc.shape[1]
        flat = acc.view(g, out, -1)
        flat.baddbmm_(batch.up, batch.down)
        merged = acc.to(weights[0].dtype)
        _foreach_copy(weights, list(merged.unbind(0)))

    def _merge(self, plan: _Plan) -> None:
        weight = plan.target.weight
        base = self._backup(weight)
        dt = self.compute_dtype
        acc = base.to(device=weight.device, dtype=dt, copy=True)
        ups: list[torch.Tensor] = []
        downs: list[torch.Tensor] = []
        for net, module, mult in plan.uses:
            tensors = net.tensors_on(weight.device, dt)[module.name]
            factors = lowrank_factors(module, tensors)
            if factors is not None and factors[0].shape[0] * factors[1].shape[1] == weight.numel():
                up, down = factors
                ups.append(up * (module_scale(module) * mult))
                downs.append(down)
            else:
                acc += compute_delta(module, weight.shape, mult, tensors=tensors)
        if ups:
            # All plain LoRA factors of this layer in one product: [s1·B1 | s2·B2] @ [A1; A2].
            flat = acc.view(acc.shape[0], -1)
            flat.addmm_(torch.cat(ups, dim=1), torch.cat(downs, dim=0))
        weight.copy_(acc.to(weight.dtype))

    @torch.no_grad()
    def restore(self) -> None:
        """Put every merged layer back to its base weights (a copy of the backup: bit-exact)."""
        if self._dirty:
            keys = list(self._dirty)
            _foreach_copy([self._backups[k][0] for k in keys], [self._backups[k][1] for k in keys])
        self._dirty.clear()
        self._active = ()
        self._last_report = ApplyReport()

    def release(self) -> None:
        """Restore and free backups and prepared sets (call before changing the weights another way)."""
        self.restore()
        self._backups.clear()
        self._prepared.clear()
        self._key_map = None
