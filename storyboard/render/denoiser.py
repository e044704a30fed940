"""Denoisers in the k-diffusion convention over a diffusers-style UNet.

``CompVisDenoiser`` turns an eps- (or v-) predicting UNet into D(x, sigma), the way k-diffusion's
``CompVisDenoiser`` wraps the CompVis model WebUI uses: the discrete sigma table comes from SD's
scaled-linear betas, sigma -> t is continuous with log-sigma interpolation, and the UNet sees
x / sqrt(sigma^2 + 1).

``CFGDenoiser`` adds classifier-free guidance and prompt editing like WebUI's
``sd_samplers_cfg_denoiser.CFGDenoiser``:

- cond and uncond go through the UNet as one batch when their token lengths match; otherwise
  either in two calls (WebUI's default) or, with ``pad_cond_uncond=True``, the shorter one is
  padded with copies of the empty-prompt chunk and they go as one batch.
- Prompt editing: conditioning comes from a schedule [(end_step, cond), ...]; the entry used is the
  first whose end_step >= the current step. As in WebUI, the step counter advances once per model
  call (so a second-order sampler advances it twice per step); plan prompt schedules over
  ``SamplerSpec.schedule_steps(steps)`` to match WebUI. Call ``reset()`` before a new pass.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from storyboard.render.sampling import discrete_sigmas, table_sigma_to_t, table_t_to_sigma

if TYPE_CHECKING:
    from storyboard.render.regional_cfg import RegionalCFG


def scaled_linear_alphas_cumprod(
    beta_start: float = 0.00085, beta_end: float = 0.012, num_steps: int = 1000
) -> Tensor:
    """SD's alphas_cumprod: computed in float64 and stored as float32, as ldm does."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


# WebUI's stand-in for alphas_cumprod[-1] = 0: the last sigma becomes sqrt((1 - a) / a) ~ 4518.9
# instead of infinity, so every schedule and sampler works with a finite sigma_max.
ZTSNR_LAST_ABAR = 4.8973451890853435e-08


def rescale_zero_terminal_snr_abar(alphas_cumprod: Tensor) -> Tensor:
    """The schedule shifted and scaled to zero terminal SNR, as WebUI's ``sd_models`` function of this
    name does for checkpoints with a ``ztsnr`` marker (or the "Zero Terminal SNR" noise schedule).

    Works on sqrt(abar): shift so the last one is 0, scale so the first keeps its value, square;
    then the last is set to ZTSNR_LAST_ABAR. Done in the input's dtype (float32, as WebUI's buffer).
    """
    root = alphas_cumprod.sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    out = root**2
    out[-1] = ZTSNR_LAST_ABAR
    return out


def unet_output(out: Any) -> Tensor:
    """The predicted tensor of a UNet call, whichever form it returns (diffusers' output object, a
    tuple, or a plain tensor from a stand-in or a wrapper)."""
    result: Tensor = out.sample if hasattr(out, "sample") else (out[0] if isinstance(out, tuple) else out)
    return result


class CompVisDenoiser(torch.nn.Module):
    """D(x, sigma) = x - sigma * eps(x / sqrt(sigma^2 + 1), t(sigma)) (eps prediction), or the
    v-prediction form c_skip * x + c_out * v with sigma_data = 1."""

    alphas_cumprod: Tensor
    sigmas: Tensor  # ascending, index = DDPM timestep

    def __init__(
        self,
        unet: Callable[..., Any],
        alphas_cumprod: Tensor | None = None,
        *,
        prediction_type: str = "epsilon",
    ) -> None:
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', not {prediction_type!r}")
        self.unet = unet
        self.prediction_type = prediction_type
        acp = scaled_linear_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod.float()
        self.register_buffer("alphas_cumprod", acp)
        self.register_buffer("sigmas", discrete_sigmas(acp))

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        return table_sigma_to_t(self.sigmas, sigma)

    def t_to_sigma(self, t: Tensor) -> Tensor:
        return table_t_to_sigma(self.sigmas, t)

    def _unet(
        self,
        x: Tensor,
        t: Tensor,
        cond: Tensor,
        added_cond_kwargs: Mapping[str, Tensor] | None,
        image_cond: Tensor | None = None,
    ) -> Tensor:
        dtype = getattr(self.unet, "dtype", x.dtype)
        if image_cond is not None:
            # An inpainting model's extra channels (render/inpaint_cond.py) follow the scaled latent,
            # as WebUI's hybrid DiffusionWrapper concatenates c_concat; one copy per batch row
            # (cond and uncond rows alike: the batch repeats the images in order).
            rows = image_cond.to(x).repeat(x.shape[0] // image_cond.shape[0], 1, 1, 1)
            x = torch.cat([x, rows], dim=1)
        kwargs: dict[str, Any] = {"encoder_hidden_states": cond.to(dtype)}
        if added_cond_kwargs is not None:
            kwargs["added_cond_kwargs"] = {k: v.to(dtype) for k, v in added_cond_kwargs.items()}
        return unet_output(self.unet(x.to(dtype), t, **kwargs)).to(x.dtype)

    def forward(
        self,
        x: Tensor,
        sigma: Tensor,
        cond: Tensor,
        added_cond_kwargs: Mapping[str, Tensor] | None = None,
        image_cond: Tensor | None = None,
    ) -> Tensor:
        s = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        c_in = 1 / (s**2 + 1) ** 0.5
        out = self._unet(x * c_in, self.sigma_to_t(sigma), cond, added_cond_kwargs, image_cond)
        if self.prediction_type == "epsilon":
            return x + out * (-s)
        c_skip = 1 / (s**2 + 1)
        c_out = -s / (s**2 + 1) ** 0.5
        return out * c_out + x * c_skip


@dataclass
class Conditioning:
    """Text conditioning for a batch: hidden states (B, T, C) and, for SDXL, added_cond_kwargs
    (text_embeds, time_ids), each batch-first."""

    hidden: Tensor
    added: dict[str, Tensor] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return int(self.hidden.shape[1])


CondLike = Conditioning | Tensor
Schedule = Sequence[tuple[int, CondLike]]


def _as_cond(c: CondLike) -> Conditioning:
    return c if isinstance(c, Conditioning) else Conditioning(c)


def _cat(conds: Sequence[Conditioning]) -> Conditioning:
    keys = conds[0].added.keys()
    return Conditioning(
        torch.cat([c.hidden for c in conds]), {k: torch.cat([c.added[k] for c in conds]) for k in keys}
    )


def stack_conds(hidden: Sequence[Tensor]) -> Tensor:
    """Stack per-image (T_i, C) conds into (B, T, C), padding shorter ones by repeating their last
    vector, as WebUI's prompt_parser.stack_conds does for prompt-editing batches."""
    token_count = max(h.shape[0] for h in hidden)
    padded = [
        h if h.shape[0] == token_count else torch.cat([h, h[-1:].repeat(token_count - h.shape[0], 1)])
        for h in hidden
    ]
    return torch.stack(padded)


def merge_schedules(per_image: Sequence[Sequence[tuple[int, Tensor]]]) -> list[tuple[int, Tensor]]:
    """Per-image schedules [(end_step, (T, C)), ...] -> one batch schedule [(end_step, (B, T, C))]
    with an entry at every boundary of any image."""
    ends = sorted({end for sched in per_image for end, _ in sched})

    def pick(sched: Sequence[tuple[int, Tensor]], step: int) -> Tensor:
        for end, c in sched:
            if step <= end:
                return c
        return sched[-1][1]

    return [(end, stack_conds([pick(s, end) for s in per_image])) for end in ends]


def _pad(c: Conditioning, repeats: int, empty: Tensor) -> Conditioning:
    fill = empty.to(c.hidden).repeat(c.hidden.shape[0], repeats, 1)
    return Conditioning(torch.cat([c.hidden, fill], dim=1), c.added)


@dataclass
class CondEntry:
    """One conditioning the CFG denoiser evaluates.

    ``schedule`` is a prompt-editing schedule [(end_step, cond)]. ``lora_set`` (any hashable key) is
    handed to the denoiser's ``switch_loras`` before this entry's UNet call, so an entry can carry its
    own LoRA set; None means the set already applied. ``mask`` (broadcastable to the latent, values
    in [0, 1]) says where this entry's prediction counts; None means everywhere. Regional rendering
    is several entries with masks and LoRA sets; an ordinary panel is one entry with neither.
    ``lora_stop`` (a model-call count) drops the entry's LoRA set from that call on, so it runs under
    the base set (Regional Prompter's "LoRA stop step"); None keeps it to the end.
    ``uncond`` (a schedule like ``schedule``: the negative prompt encoded under this entry's set) makes
    the unconditional prediction where this entry's mask falls run under the entry's LoRA set too,
    as a panel with only this entry would run it; None: the denoiser's own uncond, under the base set.
    """

    schedule: list[tuple[int, Conditioning]]
    mask: Tensor | None = None
    lora_set: Hashable | None = None
    lora_stop: int | None = None
    uncond: list[tuple[int, Conditioning]] | None = None

    def set_at(self, step: int) -> Hashable | None:
        """The LoRA set this entry runs under at model call `step`."""
        return None if self.lora_stop is not None and step >= self.lora_stop else self.lora_set

    @classmethod
    def of(cls, c: CondLike | Schedule) -> CondEntry:
        if isinstance(c, (Tensor, Conditioning)):
            return cls([(2**62, _as_cond(c))])
        sched = [(int(end), _as_cond(v)) for end, v in c]
        if not sched:
            raise ValueError("empty conditioning schedule")
        return cls(sched)


def rescale_cfg(guided: Tensor, cond: Tensor, phi: float) -> Tensor:
    """CFG rescale as WebUI's "CFG Rescale" extension does it on the denoised images: each image's
    guided prediction is scaled to the standard deviation of its cond prediction, then mixed with the
    unscaled one by ``phi`` (0 = plain CFG). Fights the over-exposure that v-prediction + zero-SNR
    models show at ordinary CFG scales."""
    dims = tuple(range(1, guided.ndim))
    ratio = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True)
    return (guided * ratio) * phi + guided * (1.0 - phi)


def _at(sched: list[tuple[int, Conditioning]], step: int) -> Conditioning:
    for end, c in sched:
        if step <= end:
            return c
    return sched[-1][1]


class CFGDenoiser:
    """Classifier-free guidance over a k-diffusion denoiser: D = D_u + scale * (D_c - D_u).

    `cond` is a Conditioning or tensor (B, T, C), a schedule [(end_step, cond)] for prompt editing,
    or a list of CondEntry (each with its own schedule, and optionally a mask and a LoRA set; D_c is
    then the mask-weighted mean of their predictions). `uncond` is a Conditioning, tensor or
    schedule, evaluated under the base LoRA set (an entry may bring its own, see ``CondEntry.uncond``).
    `model(x, sigma, cond=..., added_cond_kwargs=...)`
    is usually a CompVisDenoiser.
    """

    def __init__(
        self,
        model: Callable[..., Tensor],
        cond: CondLike | Schedule | Sequence[CondEntry],
        uncond: CondLike | Schedule,
        cfg_scale: float,
        cond_schedule: Schedule | None = None,
        *,
        uncond_schedule: Schedule | None = None,
        pad_cond_uncond: bool = False,
        empty_chunk: Tensor | None = None,
        batch_cond_uncond: bool = True,
        switch_loras: Callable[[Hashable | None], None] | None = None,
        cfg_rescale: float = 0.0,
    ) -> None:
        self.model = model
        self.cfg_scale = float(cfg_scale)
        self.cfg_rescale = float(cfg_rescale)
        if cond_schedule is not None:
            self.entries = [CondEntry.of(cond_schedule)]
        elif isinstance(cond, Sequence) and cond and isinstance(cond[0], CondEntry):
            self.entries = [e for e in cond if isinstance(e, CondEntry)]
        else:
            self.entries = [CondEntry.of(cond)]  # type: ignore[arg-type]
        uncond_like = uncond_schedule if uncond_schedule is not None else uncond
        self.uncond_schedule = CondEntry.of(uncond_like).schedule
        if pad_cond_uncond and empty_chunk is None:
            raise ValueError("pad_cond_uncond needs empty_chunk (the encoded empty prompt, (1, 77, C))")
        if switch_loras is None and any(e.lora_set is not None for e in self.entries):
            raise ValueError("conditioning entries carry LoRA sets but no switch_loras was given")
        self.pad_cond_uncond = pad_cond_uncond
        self.empty_chunk = empty_chunk
        self.batch_cond_uncond = batch_cond_uncond
        self.switch_loras = switch_loras
        self.step = 0
        self.regional: RegionalCFG | None = None  # built on the first call with several entries
        self.padded = False  # WebUI writes "Pad conds: True" into infotext when this happened
        # An inpainting model's (B, 5, h, w) extra input, handed to every model call (run_pass sets it).
        self.image_cond: Tensor | None = None

    @property
    def cond_schedule(self) -> list[tuple[int, Conditioning]]:
        return self.entries[0].schedule

    def reset(self) -> None:
        self.step = 0

    def _run(self, x: Tensor, sigma: Tensor, c: Conditioning) -> Tensor:
        """Every UNet evaluation of the guided denoiser (plain and regional) goes through here."""
        added = c.added or None
        if self.image_cond is not None:
            return self.model(x, sigma, cond=c.hidden, added_cond_kwargs=added, image_cond=self.image_cond)
        return self.model(x, sigma, cond=c.hidden, added_cond_kwargs=added)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        only = self.entries[0]
        if len(self.entries) == 1 and only.mask is None and only.lora_set is None and only.uncond is None:
            out_cond, out_uncond = self._single(x, sigma, _at(only.schedule, self.step))
        else:
            out_cond, out_uncond = self._regional(x, sigma)
        denoised = out_uncond.clone()
        denoised += (out_cond - out_uncond) * self.cfg_scale
        if self.cfg_rescale > 0:
            denoised = rescale_cfg(denoised, out_cond, self.cfg_rescale)
        self.step += 1
        return denoised

    def _single(self, x: Tensor, sigma: Tensor, cond: Conditioning) -> tuple[Tensor, Tensor]:
        """WebUI's path: cond and uncond in one UNet batch when their token counts match."""
        uncond = _at(self.uncond_schedule, self.step)
        b = x.shape[0]
        if self.pad_cond_uncond and cond.tokens != uncond.tokens:
            assert self.empty_chunk is not None
            repeats = (cond.tokens - uncond.tokens) // self.empty_chunk.shape[1]
            if repeats < 0:
                cond = _pad(cond, -repeats, self.empty_chunk)
            elif repeats > 0:
                uncond = _pad(uncond, repeats, self.empty_chunk)
            self.padded = True
        if cond.tokens == uncond.tokens and self.batch_cond_uncond:
            out = self._run(torch.cat([x, x]), torch.cat([sigma, sigma]), _cat([cond, uncond]))
        else:
            out = torch.cat([self._run(x, sigma, cond), self._run(x, sigma, uncond)])
        return out[:b], out[b:]

    def _regional(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """Several entries, each under its own LoRA set and mask (``regional_cfg.RegionalCFG``)."""
        if self.regional is None:
            from storyboard.render.regional_cfg import RegionalCFG  # it builds on this module

            self.regional = RegionalCFG(self.entries, self.uncond_schedule, self.switch_loras)
        return self.regional(self._run, x, sigma, self.step, self.batch_cond_uncond)
