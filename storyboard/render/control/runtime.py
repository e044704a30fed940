"""ControlNets in memory and each pass's units: the engine keeps one :class:`ControlNets` (models
loaded once per file, on the UNet's device and dtype); a panel's passes get :class:`ControlPass`es
with the hints at their own sizes (the hires pass: the map resized to the hires target, as the
extension's ``hr_hint_cond``). An inpaint "only masked" hands over its crop: each control image is
cut to it before preprocessing (``preprocess.crop_to_inpaint``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from storyboard.input_images import load_input_image
from storyboard.models.controlnet import load_controlnet
from storyboard.render.control.hook import ActiveUnit, ControlPass, active_steps
from storyboard.render.control.preprocess import crop_to_inpaint, detect, fit_map, hint_tensor
from storyboard.render.inpaint_mask import Region
from storyboard.render.resolve import ResolvedJob


class ControlNets:
    """Loaded ControlNet models by file, for the checkpoint whose UNet they steer."""

    def __init__(self) -> None:
        self._models: dict[tuple[Path, int], Any] = {}

    def model(self, path: Path, unet: Any, *, allow_pickle: bool) -> Any:
        key = (path, id(unet))
        if key not in self._models:
            cn = load_controlnet(path, unet.config, allow_pickle=allow_pickle)
            self._models[key] = cn.to(device=unet.device, dtype=unet.dtype)
        return self._models[key]

    def clear(self) -> None:
        self._models.clear()

    def passes(
        self,
        rj: ResolvedJob,
        unet: Any,
        steps: tuple[int, int | None],
        hires_size: tuple[int, int] | None,
        crop: tuple[tuple[int, int], Region] | None = None,
    ) -> tuple[ControlPass | None, ControlPass | None]:
        """The first pass's and the hires pass's units (None: no unit runs in that pass, so the pass
        is rendered exactly as without ControlNet). `steps` is each pass's step count; `crop` an
        "only masked" inpaint's picture size (W, H) and the region it renders."""
        job, s = rj.job, rj.settings
        if not job.control:
            return None, None
        first = (s.width, s.height)
        out: list[ControlPass | None] = []
        for size, total, hires in ((first, steps[0], False), (hires_size, steps[1], True)):
            if size is None or total is None:
                out.append(None)
                continue
            units = []
            for k, (unit, f) in enumerate(zip(job.control, rj.controls, strict=True)):
                if unit.weight == 0 or not active_steps(total, unit.guidance_start, unit.guidance_end):
                    continue  # never runs: skipped entirely, so the pixels are those without it
                image = load_input_image(job.input_image(f"control {k}").path)
                if crop is not None:
                    image = crop_to_inpaint(image, unit.resize_mode, crop[0], crop[1], first)
                detected = detect(image, unit, first)
                hint = hint_tensor(fit_map(detected, size, unit.resize_mode))
                units.append(
                    ActiveUnit(
                        model=self.model(f.path, unet, allow_pickle=s.allow_pickle),
                        hint=hint.to(device=unet.device, dtype=torch.float32),
                        weight=float(unit.weight),
                        start=unit.guidance_start,
                        end=unit.guidance_end,
                        # The extension forces soft injection for canny maps in the hires pass.
                        soft=unit.control_mode != "Balanced" or (hires and "canny" in unit.module),
                        cfg_only=unit.control_mode == "ControlNet is more important",
                    )
                )
            out.append(ControlPass(unet, units) if units else None)
        return out[0], out[1]
