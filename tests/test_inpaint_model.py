"""Inpainting-model checkpoints (a 9-channel UNet, e.g. sd-v1-5-inpainting): recognised from the
weights of an original-layout file, rendered txt2img and inpaint through `storyboard render`, with
WebUI's image conditioning (mask + masked picture latent) at every UNet call; pixels outside the
blurred mask keep their bytes; an ordinary model's bytes are unchanged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from storyboard.models.load import load_pipeline_components
from storyboard.models.tiny import TinyModel
from storyboard.models.tiny_inpaint import write_tiny_inpaint_checkpoint
from storyboard.render import inpaint_mask as im
from storyboard.render.denoiser import CompVisDenoiser
from storyboard.render.engine import DiffusersRenderer
from storyboard.render.infotext import parse_infotext
from storyboard.story.load import load_story
from storyboard.story.plan import plan

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")

BOX = (16, 16, 40, 48)  # x0, y0, x1, y1 of the mask, in the 64x64 picture
STORY = """title: T
render: {{model: {model}, webui_root: {root}, sampler: Euler, steps: 4, width: 64, height: 64}}
layout: {{formats: [png], dpi: 20, page_numbers: false}}
pages:
  - panels:
      - {{id: t, seed: 3, scene: a cat, render: {{width: 64, height: 64}}}}
      - {{id: p, seed: 3, scene: a dog, init_image: pic.png, render: {{width: 64, height: 64}},
          inpaint: {{mask: mask.png, mask_blur: 2}}}}
"""


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", STORYBOARD_QUIET="1", COLUMNS="200", PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-m", "storyboard", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=600,
    )
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    return r


def _inputs(d: Path) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(d / "pic.png")
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[BOX[1] : BOX[3], BOX[0] : BOX[2]] = 255
    Image.fromarray(mask, mode="L").save(d / "mask.png")


@pytest.fixture(scope="module")
def inpaint_ckpt(tiny: TinyModel) -> Path:
    return write_tiny_inpaint_checkpoint(tiny.root, seed=0)


def test_loader_reads_nine_channels_from_the_weights(inpaint_ckpt: Path, tiny: TinyModel) -> None:
    comps = load_pipeline_components(inpaint_ckpt)  # its metadata config says 4, like SD1.5's
    assert comps.inpainting and comps.unet.config["in_channels"] == 9
    weight = comps.unet.conv_in.weight
    assert tuple(weight.shape) == (32, 9, 3, 3) and bool(weight[:, 4:].abs().sum() > 0)
    assert not load_pipeline_components(tiny.checkpoint).inpainting


def test_render_txt2img_and_inpaint_from_the_command_line(
    tmp_path: Path, tiny: TinyModel, inpaint_ckpt: Path
) -> None:
    _inputs(tmp_path)
    (tmp_path / "s.yaml").write_text(STORY.format(model="tiny-sd-inpainting", root=tiny.root))
    r = run("render", "s.yaml", "--panel", "t", "--panel", "p", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "output/s/panels"
    t, p = (np.asarray(Image.open(out / f"{k}.png").convert("RGB")) for k in "tp")
    assert t.shape == p.shape == (64, 64, 3) and t.std() > 0
    before = np.asarray(Image.open(tmp_path / "pic.png").convert("RGB"))
    r_blur = int(2.5 * 2 + 0.5)
    reach = np.zeros((64, 64), dtype=bool)
    reach[BOX[1] - r_blur : BOX[3] + r_blur, BOX[0] - r_blur : BOX[2] + r_blur] = True
    assert (p[~reach] == before[~reach]).all() and (p[reach] != before[reach]).any()
    for k in "tp":
        info = parse_infotext(Image.open(out / f"{k}.png").info["parameters"])
        assert info["Conditional mask weight"] == "1.0" and info["Model"] == "tiny-sd-inpainting"
    # An ordinary model writes no such key.
    (tmp_path / "s.yaml").write_text(STORY.format(model="tiny-sd", root=tiny.root))
    assert run("render", "s.yaml", "--panel", "t", cwd=tmp_path).returncode == 0
    assert "Conditional mask weight" not in Image.open(out / "t.png").info["parameters"]


def test_unet_gets_the_conditioning_in_every_call(
    tmp_path: Path, tiny: TinyModel, inpaint_ckpt: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _inputs(tmp_path)
    (tmp_path / "s.yaml").write_text(STORY.format(model="tiny-sd-inpainting", root=tiny.root))
    jobs = {j.panel_id: j for j in plan(load_story(tmp_path / "s.yaml"))}
    seen: list[tuple[str, Tensor]] = []  # (panel, the 5 extra channels of one call)
    current = [""]
    real = CompVisDenoiser._unet

    def spy(
        self: CompVisDenoiser, x: Tensor, t: Tensor, cond: Tensor, added: Any, image_cond: Any = None
    ) -> Any:
        assert image_cond is not None and x.shape[1] == 4
        rows = image_cond.repeat(x.shape[0] // image_cond.shape[0], 1, 1, 1)
        seen.append((current[0], rows.cpu()))
        return real(self, x, t, cond, added, image_cond)

    monkeypatch.setattr(CompVisDenoiser, "_unet", spy)
    r = DiffusersRenderer(tmp_path, quiet=True, device="cpu")
    for pid in ("t", "p"):
        current[0] = pid
        assert len(list(r.render([jobs[pid]]))) == 1
    vae = r.model.components.vae

    def encode(x: Tensor) -> Tensor:
        with torch.no_grad():
            return vae.encode(x).latent_dist.mode() * vae.config.scaling_factor

    # txt2img: a grey picture encoded behind a mask of ones; cond and uncond rows alike.
    grey = torch.cat([torch.ones(1, 1, 8, 8), encode(torch.zeros(1, 3, 64, 64))], dim=1)
    t_calls = [c for pid, c in seen if pid == "t"]
    assert len(t_calls) == 4 and all(c.shape == (2, 5, 8, 8) for c in t_calls)
    for c in t_calls:
        torch.testing.assert_close(c, grey.expand(2, -1, -1, -1), rtol=0, atol=1e-6)
    # Inpaint: WebUI's blurred mask at the processing size, rounded; the picture with the masked
    # part zeroed (in [-1, 1]) encoded; the mask downsampled to the latent, nearest.
    blurred = im.blur_mask(Image.open(tmp_path / "mask.png"), 2)
    m = torch.from_numpy(np.round(np.asarray(blurred, dtype=np.float64) / 255.0).astype(np.float32))[
        None, None
    ]
    pic = np.asarray(Image.open(tmp_path / "pic.png").convert("RGB"), dtype=np.float32) / 255.0
    src = torch.from_numpy(pic).permute(2, 0, 1)[None] * 2 - 1
    want = torch.cat([F.interpolate(m, size=(8, 8), mode="nearest"), encode(src * (1 - m))], dim=1)
    p_calls = [c for pid, c in seen if pid == "p"]
    assert p_calls and all(c.shape[1:] == (5, 8, 8) for c in p_calls)
    for c in p_calls:
        torch.testing.assert_close(c[:1], want, rtol=0, atol=1e-6)
        assert torch.equal(c[0], c[-1])  # the uncond rows get the same channels
    assert want[0, 0].sum() > 0 and want[0, 0].sum() < 64  # the mask marks part of the latent
