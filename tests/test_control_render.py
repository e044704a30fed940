"""ControlNet units on the tiny model, through the story, planner and renderer a user runs: weight 0
and a guidance range no step falls in are byte-identical to no unit; weight and guidance range move
pixels in a measured, monotonic way; the control modes follow the extension's per-block scales;
the infotext carries the extension's `ControlNet 0` line, readable by WebUI's PNG Info."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from webui_infotext import read_infotext

from storyboard.models.tiny import TinyModel
from storyboard.render.control.hook import ControlledUNet, active_steps, block_scales
from storyboard.render.engine import DiffusersRenderer
from storyboard.story.load import load_story
from storyboard.story.plan import plan

pytestmark = pytest.mark.usefixtures("one_thread")

HEAD = """\
title: C
render:
  model: tiny-sd
  sampler: DPM++ 2M
  steps: 8
  cfg_scale: 7
  width: 64
  height: 64
  noise_source: cpu
  webui_root: {root}
pages:
"""


def unit(**kw: Any) -> str:
    fields = {"image": "pose.png", "model": "tiny-control", **kw}
    inner = ", ".join(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in fields.items())
    return f"[{{{inner}}}]"


def pose(path: Path) -> None:
    im = Image.new("RGB", (64, 64), (0, 0, 0))
    d = ImageDraw.Draw(im)
    d.line([(32, 10), (32, 40), (20, 60)], fill=(255, 0, 0), width=3)
    d.line([(32, 40), (44, 60)], fill=(0, 255, 0), width=3)
    d.line([(16, 24), (48, 24)], fill=(0, 0, 255), width=3)
    im.save(path)


@pytest.fixture(scope="module")
def renders(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bytes, str]]:
    d = tmp_path_factory.mktemp("story")
    pose(d / "pose.png")
    panels = {
        "none": "[]",
        "w0": unit(weight=0),
        "empty": unit(guidance_start=0.33, guidance_end=0.33),  # no sampling step lands in it
        "w05": unit(weight=0.5),
        "w1": unit(weight=1.0),
        "w15": unit(weight=1.5),
        "end25": unit(guidance_end=0.25),
        "end50": unit(guidance_end=0.5),
        "prompt": unit(control_mode="My prompt is more important"),
        "cn": unit(control_mode="ControlNet is more important"),
    }
    text = HEAD.format(root=tiny.root) + "".join(
        # One panel a page: every panel gets the same frame, so the same size.
        f"  - panels:\n      - id: {pid}\n        seed: 7\n        scene: 1girl, garden\n"
        f"        control: {u}\n"
        for pid, u in panels.items()
    )
    (d / "s.yaml").write_text(text)
    jobs = plan(load_story(d / "s.yaml"))
    r = DiffusersRenderer(d, quiet=True, device="cpu")
    r.check(jobs)
    out = {}
    for p in r.render(jobs):
        buf = io.BytesIO()
        p.image.save(buf, format="PNG")
        out[p.job.panel_id] = (buf.getvalue(), p.infotext)
    return out


def diff(renders: dict[str, tuple[bytes, str]], a: str, b: str = "none") -> float:
    pa, pb = (np.asarray(Image.open(io.BytesIO(renders[k][0])), dtype=np.float64) for k in (a, b))
    return float(np.abs(pa - pb).mean())


def test_weight_zero_and_an_empty_range_are_byte_identical_to_none(renders: dict[str, Any]) -> None:
    assert active_steps(8, 0.33, 0.33) == []
    assert renders["w0"][0] == renders["none"][0]
    assert renders["empty"][0] == renders["none"][0]


def test_weight_and_guidance_range_move_pixels_monotonically(renders: dict[str, Any]) -> None:
    by_weight = [diff(renders, k) for k in ("w05", "w1", "w15")]
    by_end = [diff(renders, k) for k in ("end25", "end50", "w1")]
    print("mean |delta| vs none, weight 0.5/1/1.5:", by_weight, "guidance end 0.25/0.5/1:", by_end)
    assert 0 < by_weight[0] < by_weight[1] < by_weight[2]
    assert 0 < by_end[0] < by_end[1] < by_end[2]


def test_the_two_other_modes_render_differently(renders: dict[str, Any]) -> None:
    assert len({renders[k][0] for k in ("w1", "prompt", "cn")}) == 3


def test_infotext_carries_the_extensions_unit_line(renders: dict[str, Any]) -> None:
    info = read_infotext(renders["end50"][1])
    line = info["ControlNet 0"]
    fields = dict(item.strip().split(": ") for item in line.split(","))  # the extension's parse_unit
    assert fields["Module"] == "none" and fields["Weight"] == "1.0"
    assert fields["Model"].startswith("tiny-control [") and len(fields["Model"]) == len("tiny-control [") + 9
    assert (fields["Guidance Start"], fields["Guidance End"]) == ("0.0", "0.5")
    assert fields["Resize Mode"] == "Crop and Resize" and fields["Control Mode"] == "Balanced"
    assert "ControlNet 0" not in read_infotext(renders["none"][1])


class _Spy:
    """A UNet stand-in that records the residuals it is handed."""

    dtype = torch.float32

    def __init__(self) -> None:
        self.seen: list[list[torch.Tensor]] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kw: Any) -> torch.Tensor:
        self.seen.append([*kw["down_block_additional_residuals"], kw["mid_block_additional_residual"]])
        return x


def test_mode_scales_match_an_independent_computation(tiny: TinyModel) -> None:
    from diffusers import UNet2DConditionModel

    from storyboard.models.tiny_control import tiny_controlnet
    from storyboard.render.control.hook import ActiveUnit

    unet = UNet2DConditionModel.from_pretrained(tiny.diffusers_dir / "unet")
    cn = tiny_controlnet(unet, 3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    cond, uncond = torch.randn(1, 77, 32, generator=g), torch.randn(1, 77, 32, generator=g)
    hidden = torch.cat([cond, uncond])
    hint = torch.rand(1, 3, 64, 64, generator=g)
    t = torch.tensor([500.0, 500.0])
    got = {}
    modes = {"bal": (False, False), "prompt": (True, False), "cn": (True, True)}
    for mode, (soft, cfg_only) in modes.items():
        spy = _Spy()
        u = ActiveUnit(cn, hint, 0.8, 0.0, 1.0, soft, cfg_only)
        ControlledUNet(spy, [u], [uncond[0]], 8)(x, t, encoder_hidden_states=hidden)
        got[mode] = spy.seen[0]
    raw = [r / 0.8 for r in got["bal"]]
    n = len(raw)
    assert n >= 3  # encoder outputs, then the middle block
    for i in range(n):
        scale = 0.8 * math.pow(0.825, 12 - i)  # the extension's soft-injection weight of residual i
        torch.testing.assert_close(got["prompt"][i], raw[i] * scale, rtol=1e-5, atol=1e-7)
        # "ControlNet is more important": the same soft scales on the cond row, nothing on the uncond.
        torch.testing.assert_close(got["cn"][i][:1], raw[i][:1] * scale, rtol=1e-5, atol=1e-7)
        assert torch.count_nonzero(got["cn"][i][1:]) == 0
    assert block_scales(1.0, 13, soft=True)[0] == pytest.approx(0.825**12)
    assert block_scales(1.0, 10, soft=True)[-1] == pytest.approx(0.825**3)  # SDXL: the first 10


def test_hires_pass_gets_the_map_at_the_hires_size(tiny: TinyModel, tmp_path: Path) -> None:
    pose(tmp_path / "pose.png")
    text = HEAD.format(root=tiny.root).replace(
        "  noise_source: cpu\n", "  noise_source: cpu\n  hires: {scale: 1.5}\n"
    )
    text += f"  - panels:\n      - id: h\n        scene: a\n        control: {unit(module='canny')}\n"
    (tmp_path / "s.yaml").write_text(text)
    [job] = plan(load_story(tmp_path / "s.yaml"))
    r = DiffusersRenderer(tmp_path, quiet=True, device="cpu")
    [out] = list(r.render([job]))
    from storyboard.render.hires import hires_size

    w, h = job.settings.width, job.settings.height
    hw, hh = hires_size(w, h, 1.5)
    assert out.image.size == job.output_size
    rj = r.resolve(job)
    first, hires = r.controlnets.passes(rj, r.model.components.unet, (8, 5), (hw, hh))
    assert first is not None and hires is not None
    assert tuple(first.units[0].hint.shape) == (1, 3, h, w) and not first.units[0].soft
    # The extension forces soft injection for a canny map in the hires pass.
    assert tuple(hires.units[0].hint.shape) == (1, 3, hh, hw) and hires.units[0].soft
