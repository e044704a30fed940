"""ControlNet with an inpaint "only masked": the control map is cut to the inpaint's crop before it
is fitted to the processing size, as the WebUI ControlNet extension does, so it lines up with the
cropped picture. The hint handed to the ControlNet equals an independent computation, pixel for
pixel; a whole-picture inpaint still fits the whole map."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from storyboard.models.tiny import TinyModel
from storyboard.render.control.preprocess import fit_map, hint_tensor
from storyboard.render.control.runtime import ControlNets
from storyboard.render.engine import DiffusersRenderer
from storyboard.story.load import load_story
from storyboard.story.plan import plan

pytestmark = pytest.mark.usefixtures("one_thread")

LANCZOS = Image.Resampling.LANCZOS


def _story(tmp: Path, root: Path) -> Path:
    Image.new("RGB", (64, 64), (200, 180, 160)).save(tmp / "rough.png")
    # A 4:3 control image with one marked rectangle: where it lands in the hint tells the crop.
    ctrl = Image.new("RGB", (128, 96))
    ImageDraw.Draw(ctrl).rectangle([39, 36, 87, 47], fill=(255, 255, 255))
    ctrl.save(tmp / "map.png")
    unit = "[{image: map.png, model: tiny-control}]"
    box = "box: [0.25, 0.375, 0.75, 0.5], mask_blur: 0"
    rows = {
        "masked": f"inpaint: {{{box}, inpaint_full_res: true, padding: 4}}",
        "whole": f"inpaint: {{{box}}}",
    }
    text = (
        f"title: C\nrender: {{model: tiny-sd, sampler: Euler, steps: 3, width: 64, height: 64, "
        f"webui_root: {root}}}\npages:\n"
        + "".join(
            f"  - panels:\n      - {{id: {pid}, seed: 3, scene: a, init_image: rough.png, "
            f"control: {unit}, render: {{width: 64, height: 64}}, {extra}}}\n"
            for pid, extra in rows.items()
        )
    )
    (tmp / "s.yaml").write_text(text)
    return tmp / "s.yaml"


def test_only_masked_cuts_the_control_map_to_the_crop(
    tmp_path: Path, tiny: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = {j.panel_id: j for j in plan(load_story(_story(tmp_path, tiny.root)))}
    assert all((j.settings.width, j.settings.height) == (64, 64) for j in jobs.values())
    hints: dict[str, torch.Tensor] = {}
    real = ControlNets.passes

    def spy(self: ControlNets, rj: Any, *a: Any, **kw: Any) -> Any:
        out = real(self, rj, *a, **kw)
        hints[rj.job.panel_id] = out[0].units[0].hint.cpu()
        return out

    monkeypatch.setattr(ControlNets, "passes", spy)
    r = DiffusersRenderer(tmp_path, quiet=True, device="cpu")
    r.check(list(jobs.values()))
    assert len(list(r.render(list(jobs.values())))) == 2
    # Only the panels whose pixels moved get a new hash: the only-masked one with a unit.
    assert r.identity(jobs["masked"]).version.endswith("+cncrop")
    assert not r.identity(jobs["whole"]).version.endswith("+cncrop")

    ctrl = Image.open(tmp_path / "map.png").convert("RGB")
    # "Crop and Resize" to the 64x64 picture: cover (85x64), centred (10 columns cut on the left).
    fitted = ctrl.resize((128 * 64 // 96, 64), LANCZOS).crop((10, 0, 74, 64))
    # The box is x 16..48, y 24..32; padded by 4: (12, 20, 52, 36), 40x16; grown to the panel's
    # square aspect by 24 rows, 12 above and 12 below: (12, 8, 52, 48).
    region = (12, 8, 52, 48)
    expected = fitted.crop(region).resize((64, 64), LANCZOS)
    want = torch.from_numpy(np.asarray(expected, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    assert torch.equal(hints["masked"], want)
    # The whole-picture inpaint fits the whole map (no crop) as a txt2img panel does.
    whole = hint_tensor(fit_map(np.asarray(ctrl), (64, 64), "Crop and Resize"))
    assert torch.equal(hints["whole"], whole)
    # The marked rectangle lands where the crop puts it: rows (24-8)*1.6 .. (32-8)*1.6 of the hint.
    rows = np.nonzero(hints["masked"][0, 0].numpy().max(axis=1) > 0.5)[0]
    assert 24 <= rows.min() <= 27 and 37 <= rows.max() <= 40
