"""An SDXL ControlNet on the tiny SDXL model, through the story, planner and renderer a user runs: a
tiny random ControlNet in the diffusers layout SDXL ControlNets are published in (``add_embedding``
and all, made from the SDXL UNet, found by name in WebUI's models/ControlNet), checked as SDXL
against the SDXL checkpoint; weight 0 renders byte-identical to no unit, weight 1 differs; the
same weights in the original single-file layout render the same bytes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from storyboard.models.controlnet import inspect_controlnet
from storyboard.models.tiny import write_tiny_sdxl_checkpoint
from storyboard.models.tiny_control import write_tiny_controlnet
from storyboard.render.engine import DiffusersRenderer
from storyboard.story.load import load_story
from storyboard.story.plan import plan

pytestmark = pytest.mark.usefixtures("one_thread")

STORY = """\
title: XL
render:
  model: tiny-sdxl
  sampler: Euler a
  steps: 4
  cfg_scale: 5
  width: 64
  height: 64
  noise_source: cpu
  webui_root: {root}
pages:
"""


def test_an_sdxl_controlnet_weight_zero_is_none_and_weight_one_differs(tmp_path: Path) -> None:
    root = tmp_path / "webui"
    xl = write_tiny_sdxl_checkpoint(root / "models" / "Stable-diffusion" / "tiny-sdxl.safetensors", 0)
    cn = write_tiny_controlnet(
        root / "models" / "ControlNet" / "tiny-xl-control", xl.unet, 3, layout="diffusers"
    )
    assert inspect_controlnet(cn, allow_pickle=False).kind == "sdxl"
    # The same weights in the original single-file layout (``control_model.``, ``label_emb``).
    orig = root / "models" / "ControlNet" / "tiny-xl-control-ldm.safetensors"
    write_tiny_controlnet(orig, xl.unet, 3, layout="original")
    assert inspect_controlnet(orig, allow_pickle=False).kind == "sdxl"
    story = tmp_path / "project"
    story.mkdir()
    im = np.zeros((64, 64, 3), dtype=np.uint8)
    im[8:56, 28:36] = 255
    Image.fromarray(im).save(story / "pose.png")
    unit = "[{image: pose.png, model: tiny-xl-control, weight: %s}]"
    panels = {
        "none": "[]",
        "w0": unit % 0,
        "w1": unit % 1,
        "ldm": (unit % 1).replace("control,", "control-ldm,"),
    }
    text = STORY.format(root=root) + "".join(
        f"  - panels:\n      - id: {pid}\n        seed: 5\n        scene: 1girl, garden\n"
        f"        control: {u}\n"
        for pid, u in panels.items()
    )
    (story / "s.yaml").write_text(text)
    jobs = plan(load_story(story / "s.yaml"))
    r = DiffusersRenderer(story, quiet=True, device="cpu")
    r.check(jobs)
    out = {}
    for p in r.render(jobs):
        buf = io.BytesIO()
        p.image.save(buf, format="PNG")
        out[p.job.panel_id] = buf.getvalue()
    assert out["w0"] == out["none"]
    assert out["ldm"] == out["w1"]  # one ControlNet, two layouts: the same pixels
    a, b = (np.asarray(Image.open(io.BytesIO(out[k])), dtype=np.float64) for k in ("w1", "none"))
    delta = float(np.abs(a - b).mean())
    print("SDXL ControlNet weight 1 vs none, mean |delta|:", delta)
    assert delta > 0
