"""ControlNet residuals in the UNet call, with the WebUI ControlNet extension's arithmetic
(``scripts/hook.py`` of Mikubill/sd-webui-controlnet, read for the rules, not copied):

- each active unit's ControlNet runs on the same latent, timestep and text context as the UNet (the
  whole CFG batch) and yields one residual per encoder output plus the middle block's (13 for SD1,
  10 for SDXL); units' scaled residuals are summed and added to the UNet's skip connections;
- scales: ``weight`` for every residual ("Balanced"); with ``soft_injection`` (both other modes, and
  a canny unit in the hires pass) ``weight * 0.825 ** (12 - i)`` for residual i, the 13 scales
  zipped with the residuals (so SDXL's 10 take the first 10);
- "ControlNet is more important" (``cfg_injection``) multiplies residuals by the cond mark: the
  unconditional rows get none, so CFG pushes towards the control;
- guidance range: a unit runs while ``start <= sampling_step / total_steps <= end``, where
  ``sampling_step`` is WebUI's ``state.sampling_step`` (0 at launch, then the index of the last step
  the sampler reported) and ``total_steps`` the pass's step count.

Cond and uncond rows are told apart by content: a row whose text context equals the pass's
unconditional context is unconditional (the extension marks them instead; WebUI batches them in one
call or several, and regional panels call the uncond separately).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from storyboard.render.denoiser import CompVisDenoiser, unet_output

SOFT_BASE = 0.825
SCALE_SLOTS = 13  # the extension's scale list: 12 encoder outputs + the middle block


def block_scales(weight: float, count: int, *, soft: bool) -> list[float]:
    """The scale of each of `count` residuals (encoder outputs in order, then the middle block)."""
    if count > SCALE_SLOTS:
        raise ValueError(f"a ControlNet with {count} residuals has no scale rule (at most {SCALE_SLOTS})")
    scales = (
        [weight * SOFT_BASE ** float(12 - i) for i in range(SCALE_SLOTS)] if soft else [weight] * SCALE_SLOTS
    )
    return scales[:count]


def step_active(step: int, total: int, start: float, end: float) -> bool:
    """Whether a unit with guidance [start, end] runs at WebUI sampling_step `step` of `total`."""
    percent = step / total
    return not (percent < start or percent > end)


def active_steps(total: int, start: float, end: float) -> list[int]:
    """The sampling_step values a pass of `total` steps sees (0, 0, 1, ..., total - 2 for a
    one-call-per-step sampler) at which the unit runs."""
    return [s for s in range(max(total - 1, 1)) if step_active(s, total, start, end)]


@dataclass
class ActiveUnit:
    """One unit in one pass: its ControlNet, its hint at the pass's size, how it is scaled."""

    model: Any  # diffusers ControlNetModel, on the UNet's device and dtype
    hint: Tensor  # (1, 3, H, W), in [0, 1]
    weight: float
    start: float
    end: float
    soft: bool
    cfg_only: bool


class ControlledUNet:
    """A UNet callable that adds the active units' residuals; the CompVisDenoiser calls it as it
    calls the UNet, and the sampler's callback moves :attr:`sampling_step` on."""

    def __init__(self, unet: Any, units: Sequence[ActiveUnit], uncond: Sequence[Tensor], total: int) -> None:
        self.unet = unet
        self.dtype = getattr(unet, "dtype", torch.float32)
        self.units = list(units)
        self.uncond = list(uncond)  # (T, C) rows of every unconditional context of the pass
        self.total = total
        self.sampling_step = 0
        self.calls = 0  # ControlNet evaluations, for tests and benches

    def at_step(self, info: dict[str, Any]) -> None:
        self.sampling_step = int(info["i"])

    def cond_mark(self, hidden: Tensor) -> Tensor:
        """(B, 1, 1, 1): 1 for a conditional row, 0 for an unconditional one."""
        marks = [
            0.0 if any(u.shape == row.shape and torch.equal(u.to(row), row) for u in self.uncond) else 1.0
            for row in hidden
        ]
        return torch.tensor(marks, device=hidden.device, dtype=hidden.dtype).reshape(-1, 1, 1, 1)

    def residuals(
        self, x: Tensor, t: Tensor, hidden: Tensor, added: dict[str, Tensor] | None
    ) -> list[Tensor] | None:
        total: list[Tensor] | None = None
        for u in self.units:
            if not step_active(self.sampling_step, self.total, u.start, u.end):
                continue
            hint = u.hint.to(x)
            size = (int(x.shape[-2]) * 8, int(x.shape[-1]) * 8)
            if tuple(hint.shape[-2:]) != size:
                # A hires target that is no multiple of 8: the latent is rounded down, and the
                # extension's ControlNet aligns its hint to the latent's pixels (nearest).
                hint = torch.nn.functional.interpolate(hint, size=size, mode="nearest")
            hint = hint.expand(x.shape[0], -1, -1, -1)
            # An inpainting model's UNet gets 9 channels; the ControlNet reads the latent's 4 (the
            # extension's inpaint-model workaround).
            x_cn = x[:, : int(u.model.config.in_channels)] if x.shape[1] > 4 else x
            kwargs: dict[str, Any] = {"added_cond_kwargs": added} if added else {}
            down, mid = u.model(
                x_cn, t, encoder_hidden_states=hidden, controlnet_cond=hint, return_dict=False, **kwargs
            )
            self.calls += 1
            res = [*down, mid]
            if u.cfg_only:
                mark = self.cond_mark(hidden).to(x)
                res = [r * mark for r in res]
            res = [r * s for r, s in zip(res, block_scales(u.weight, len(res), soft=u.soft), strict=True)]
            total = res if total is None else [a + b for a, b in zip(total, res, strict=True)]
        return total

    def __call__(self, x: Tensor, t: Tensor, **kwargs: Any) -> Any:
        hidden = kwargs["encoder_hidden_states"]
        res = self.residuals(x, t, hidden, kwargs.get("added_cond_kwargs"))
        if res is None:
            return self.unet(x, t, **kwargs)
        out = self.unet(
            x,
            t,
            **kwargs,
            down_block_additional_residuals=tuple(res[:-1]),
            mid_block_additional_residual=res[-1],
        )
        return unet_output(out)


@dataclass
class ControlPass:
    """The units of one pass (first or hires) of one panel, ready to wrap that pass's denoiser."""

    unet: Any  # the plain UNet (speed wrappers do not take residuals)
    units: list[ActiveUnit]
    controlled: ControlledUNet | None = None

    def bind(self, den: CompVisDenoiser, uncond: Sequence[tuple[int, Any]], total: int) -> CompVisDenoiser:
        """A denoiser like `den` whose UNet calls carry the residuals; `uncond` is the pass's
        unconditional schedule [(end_step, Conditioning)]."""
        rows = [row for _, c in uncond for row in c.hidden]
        self.controlled = ControlledUNet(self.unet, self.units, rows, total)
        view = CompVisDenoiser(self.controlled, den.alphas_cumprod, prediction_type=den.prediction_type)
        view.sigmas = den.sigmas  # the very table `den` samples on
        return view

    def at_step(self, info: dict[str, Any]) -> None:
        if self.controlled is not None:
            self.controlled.at_step(info)
