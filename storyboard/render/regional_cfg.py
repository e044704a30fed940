"""Classifier-free guidance over several conditioning entries (a regional panel), each with its own
mask and LoRA set: the part of ``CFGDenoiser`` that a plain panel never runs.

Per model call, with masks m_i::

    D_c = sum(m_i * C_i) / sum(m_i)      C_i: entry i's prediction under its LoRA set
    D_u = sum(m_i * U_i) / sum(m_i)      U_i: entry i's uncond (its own, under its set; else the base one)

and the base uncond wherever no mask covers. With every U_i the base uncond this is Regional
Prompter's latent mode (the negative prompt once, without any region's LoRA); with each region's own
uncond, a region sees exactly the CFG of a panel holding only that region's character
(``render.regional.negative_loras: region``), so a character's LoRA acts as strongly there as alone.
Blending the denoised D is blending the noise predictions: every D = x - sigma * eps shares x, and
the weights sum to 1 wherever any mask covers.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import torch
from torch import Tensor

from storyboard.render.denoiser import CondEntry, Conditioning, _at, _cat

Run = Callable[[Tensor, Tensor, Conditioning], Tensor]
Item = tuple[str, Any]  # ("c", entry index) or ("u", uncond name)
_UNKNOWN = object()  # no LoRA set applied by this guide yet


def covers_everywhere(masks: Sequence[Tensor | None]) -> bool:
    """Whether some mask is positive at every position (a mask of None covers everything)."""
    if any(m is None for m in masks):
        return True
    total = sum((m.float() for m in masks if m is not None), torch.zeros(()))
    return bool((total > 0).all())


def blend(preds: Sequence[Tensor], masks: Sequence[Tensor | None], fallback: Tensor) -> Tensor:
    """sum(m_i * p_i) / sum(m_i), and ``fallback`` where no mask covers."""
    weighted = torch.zeros_like(fallback)
    total = torch.zeros_like(fallback[:, :1])
    for pred, m in zip(preds, masks, strict=True):
        mask = torch.ones_like(total) if m is None else m.to(pred).expand_as(total)
        weighted += pred * mask
        total += mask
    return torch.where(total > 0, weighted / total.clamp_min(1e-12), fallback)


def run_batched(
    run: Run, x: Tensor, sigma: Tensor, conds: Sequence[Conditioning], batch: bool
) -> list[Tensor]:
    """One prediction per conditioning; those of equal token count in one UNet batch (unless
    ``batch`` is off), as WebUI batches a plain panel's cond with its uncond."""
    b = x.shape[0]
    out: dict[int, Tensor] = {}
    groups: dict[int, list[int]] = {}
    for n, c in enumerate(conds):
        groups.setdefault(c.tokens if batch else -1 - n, []).append(n)
    for members in groups.values():
        if len(members) == 1:
            out[members[0]] = run(x, sigma, conds[members[0]])
            continue
        k = len(members)
        res = run(x.repeat(k, *([1] * (x.ndim - 1))), sigma.repeat(k), _cat([conds[n] for n in members]))
        for j, n in enumerate(members):
            out[n] = res[j * b : (j + 1) * b]
    return [out[n] for n in range(len(conds))]


class RegionalCFG:
    """(D_c, D_u) of one model call over several entries (see the module docstring).

    Every prediction made under one LoRA set goes in one UNet batch (an entry's cond with its
    uncond, as a plain panel batches them), and the sets are visited starting with the one the
    previous call left applied: a two-region panel switches weights once per call. No switch back
    to the base set at the end; whoever runs the model next applies the set it needs."""

    def __init__(
        self,
        entries: Sequence[CondEntry],
        uncond: list[tuple[int, Conditioning]],
        switch: Callable[[Hashable | None], None] | None,
    ) -> None:
        self.entries, self.uncond, self.switch = list(entries), uncond, switch
        self.masks = [e.mask for e in self.entries]
        self.covered = covers_everywhere(self.masks)  # once: it costs a device sync
        self.applied: Hashable | None = _UNKNOWN

    def __call__(self, run: Run, x: Tensor, sigma: Tensor, step: int, batch: bool) -> tuple[Tensor, Tensor]:
        keys = [e.set_at(step) for e in self.entries]
        # An uncond is named (its LoRA set, id of its schedule) and evaluated once per call.
        base: tuple[Hashable | None, int] = (None, id(self.uncond))
        scheds = {id(self.uncond): self.uncond}
        u_of = []
        for entry, key in zip(self.entries, keys, strict=True):
            if entry.uncond is None:
                u_of.append(base)
            else:
                scheds[id(entry.uncond)] = entry.uncond
                u_of.append((key, id(entry.uncond)))
        work: dict[Hashable | None, list[Item]] = {}
        for i, key in enumerate(keys):
            for set_key, item in ((key, ("c", i)), (u_of[i][0], ("u", u_of[i]))):
                if item not in work.setdefault(set_key, []):
                    work[set_key].append(item)
        if not self.covered and ("u", base) not in work.setdefault(None, []):
            work[None].append(("u", base))
        preds: dict[Item, Tensor] = {}
        for key in sorted(work, key=lambda k: k != self.applied):  # stable: else first appearance
            if self.switch is not None:
                self.switch(key)  # the set already applied again is a no-op in the patcher
                self.applied = key
            items = work[key]
            conds = [_at(self.entries[r].schedule if t == "c" else scheds[r[1]], step) for t, r in items]
            preds.update(zip(items, run_batched(run, x, sigma, conds, batch), strict=True))
        c_preds = [preds[("c", i)] for i in range(len(self.entries))]
        fallback = preds[("u", u_of[0] if self.covered else base)]
        out_cond = blend(c_preds, self.masks, fallback)
        if len(set(u_of)) == 1 and (self.covered or u_of[0] == base):
            return out_cond, fallback  # one uncond for the whole latent: used as is, no blend rounding
        return out_cond, blend([preds[("u", u)] for u in u_of], self.masks, fallback)
