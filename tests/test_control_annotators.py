"""Preprocessors with downloaded weights (lineart_anime, depth_anything), on stand-in files in the
real layouts of a Hugging Face cache: the generator's names and shapes are netG.pth's at full size;
the fetch's pickle conversion keeps every tensor; the maps equal an independent computation of the
extension's arithmetic; a build runs them as a user types it; missing files are a sentence at the
unit's line; the annotator file enters the job hash of only the panels that use it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from annotator_helpers import annotator_cli, place_depth, place_lineart
from PIL import Image
from safetensors.torch import load_file
from torch.nn import functional as F

from storyboard.models.tiny import TinyModel
from storyboard.render.control.annotators.lineart_anime import UnetGenerator
from storyboard.render.control.annotators.specs import LINEART_ANIME, converted_path

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def picture() -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8))


def test_generator_has_netG_names_and_shapes_at_full_size() -> None:
    with torch.device("meta"):
        sd = UnetGenerator(64).state_dict()
    # 54.4M float32 parameters: the 217 MB of lllyasviel/Annotators' netG.pth.
    assert round(sum(v.numel() for v in sd.values()) * 4 / 1e6) == 218
    assert len(sd) == 32  # weight and bias of 16 convs; instance norm without affine has none
    deep = "model." + "model.1." + "model.3." * 6
    assert sd["model.model.0.weight"].shape == (64, 3, 4, 4)  # 3 -> ngf, 4x4 stride 2
    assert sd["model.model.3.weight"].shape == (128, 1, 4, 4)  # the last up conv: 2 ngf -> 1
    assert sd[deep + "model.1.weight"].shape == (512, 512, 4, 4)  # innermost down conv
    assert sd[deep + "model.3.weight"].shape == (512, 512, 4, 4)  # innermost up conv (no skip in)
    assert sd["model.model.1.model.5.weight"].shape == (256, 64, 4, 4)  # up conv after a skip concat


def test_fetch_conversion_keeps_every_tensor_without_the_dataparallel_prefix(tmp_path: Path) -> None:
    state = place_lineart(tmp_path, seed=1)
    got = load_file(str(converted_path(LINEART_ANIME, tmp_path)))
    assert set(got) == set(state)
    assert all(torch.equal(got[k], state[k]) for k in state)


def _unet(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, depth: int) -> torch.Tensor:
    """pix2pix's U-Net written out with functional ops, by the file's names."""
    norm = F.instance_norm
    if depth == 0:  # outermost: conv, inner, relu, up conv, tanh
        y = F.conv2d(x, sd[p + "0.weight"], sd[p + "0.bias"], stride=2, padding=1)
        y = _unet(y, sd, p + "1.model.", 1)
        y = F.conv_transpose2d(F.relu(y), sd[p + "3.weight"], sd[p + "3.bias"], stride=2, padding=1)
        return torch.tanh(y)
    y = F.conv2d(F.leaky_relu(x, 0.2), sd[p + "1.weight"], sd[p + "1.bias"], stride=2, padding=1)
    if depth == 7:  # innermost
        y = F.conv_transpose2d(F.relu(y), sd[p + "3.weight"], sd[p + "3.bias"], stride=2, padding=1)
        return torch.cat([x, norm(y)], 1)
    y = _unet(norm(y), sd, p + "3.model.", depth + 1)
    y = F.conv_transpose2d(F.relu(y), sd[p + "5.weight"], sd[p + "5.bias"], stride=2, padding=1)
    return torch.cat([x, norm(y)], 1)


def _bicubic(a: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return F.interpolate(a, size=(h, w), mode="bicubic", align_corners=False)


def expected_lineart(img: np.ndarray, sd: dict[str, torch.Tensor]) -> np.ndarray:
    """The extension: 64 px at processor_res 64 needs no pad; up to 256 (uint8), [-1, 1], the net,
    back to 64, clip, truncate, 255 - line."""
    x = torch.from_numpy(img.copy()).float().permute(2, 0, 1)[None]
    x = _bicubic(x, 256, 256).round().clamp(0, 255) / 127.5 - 1.0
    with torch.no_grad():
        line = _unet(x, sd, "model.model.", 0)[:, :1] * 127.5 + 127.5
    line = _bicubic(line, 64, 64)[0, 0].clamp(0, 255).numpy().astype(np.uint8)
    return 255 - line


def expected_depth(img: np.ndarray, folder: Path) -> np.ndarray:
    from transformers import DepthAnythingForDepthEstimation

    model = DepthAnythingForDepthEstimation.from_pretrained(str(folder)).eval()
    # The channels reversed, as the extension's COLOR_BGR2RGB on an RGB image hands them over.
    x = torch.from_numpy(img[:, :, ::-1].copy()).float().div(255).permute(2, 0, 1)[None]
    x = _bicubic(x, 518, 518)  # a square 64 px image: both sides scale to 518 = 37 * 14
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    x = (x - mean[:, None, None]) / std[:, None, None]
    with torch.no_grad():
        d = model(pixel_values=x).predicted_depth[None]
    d = F.interpolate(d, (64, 64), mode="bilinear", align_corners=False)[0, 0]
    return ((d - d.min()) / (d.max() - d.min()) * 255.0).numpy().astype(np.uint8)


def test_maps_equal_the_extensions_arithmetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from storyboard.jobs import ControlUnit
    from storyboard.render.control.preprocess import detect

    sd = place_lineart(tmp_path, seed=2)
    folder = place_depth(tmp_path, seed=2)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    img = picture()
    arr = np.asarray(img)
    wants = {"lineart_anime": expected_lineart(arr, sd), "depth_anything": expected_depth(arr, folder)}
    for module, want in wants.items():
        unit = ControlUnit(image=Path("x.png"), model="m", module=module, processor_res=64)
        got = detect(img, unit, (64, 64))
        assert got.shape == (64, 64, 3) and (got == got[:, :, :1]).all()  # grey, as RGB
        assert int(np.abs(got[:, :, 0].astype(int) - want.astype(int)).max()) <= 1, module
        assert (got[:, :, 0] == want).mean() > 0.99, module
        assert want.std() > 5  # a map with content, not a constant


STORY = """\
title: A
render:
  model: tiny-sd
  steps: 2
  width: 64
  height: 64
  noise_source: cpu
  webui_root: {root}
pages:
  - panels:
      - id: line
        scene: a
        control:
          - image: pic.png
            module: lineart_anime
            model: tiny-control
            processor_res: 64
      - id: plain
        scene: b
        control:
          - image: pic.png
            model: tiny-control
"""


@pytest.fixture()
def project(tiny: TinyModel, tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    picture().save(proj / "pic.png")
    (proj / "s.yaml").write_text(STORY.format(root=tiny.root))
    return proj


def test_missing_files_are_a_sentence_at_the_units_line(project: Path, tmp_path: Path) -> None:
    r = annotator_cli(tmp_path, tmp_path / "empty-cache", "validate", "proj/s.yaml")
    out = " ".join((r.stdout + r.stderr).split())
    assert r.returncode == 2 and "Traceback" not in out, out
    assert "proj/s.yaml:15:21: pages[0].panels[0].control[0].module: Model files for the preprocessor" in out
    assert "'lineart_anime' are missing in the Hugging Face cache: lllyasviel/Annotators/netG.pth" in out
    assert "run `storyboard models fetch control` once" in out


def test_a_build_runs_lineart_anime_and_its_file_enters_only_that_panels_hash(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hub"
    place_lineart(cache, seed=4)
    r = annotator_cli(tmp_path, cache, "build", "proj/s.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    panels = tmp_path / "output" / "s" / "panels"
    info = Image.open(next(panels.glob("line*.png"))).info.get("parameters", "")
    assert 'ControlNet 0: "Module: lineart_anime, Model: tiny-control' in info

    from storyboard.jobs import job_hash
    from storyboard.render.engine import DiffusersRenderer
    from storyboard.story.load import load_story
    from storyboard.story.plan import plan

    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    jobs = {j.panel_id: j for j in plan(load_story(project / "s.yaml"))}
    before = {k: job_hash(j, DiffusersRenderer(project, quiet=True, device="cpu")) for k, j in jobs.items()}
    place_lineart(cache, seed=5)  # another annotator file at the same place
    after = {k: job_hash(j, DiffusersRenderer(project, quiet=True, device="cpu")) for k, j in jobs.items()}
    assert before["line"] != after["line"] and before["plain"] == after["plain"]


def test_the_review_pages_map_preview_runs_the_annotator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from storyboard.app import direct_ops
    from storyboard.jobs import ControlUnit
    from storyboard.render.control.preprocess import detect, fit_map
    from storyboard.story.load import load_story
    from storyboard.story.plan import plan
    from tests.story_helpers import copy_demo

    story = copy_demo(tmp_path / "p")
    out = tmp_path / "out"
    place_lineart(tmp_path / "hub", seed=6)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    buf = io.BytesIO()
    picture().save(buf, format="PNG")
    direct_ops.stage_picture(story, out, "listen", "control", buf.getvalue(), draft=True)
    d = direct_ops.Direction(control="new", control_module="lineart_anime", control_model="cn-x")
    [path] = direct_ops.control_maps(story, out, "listen", d, draft=True)
    job = next(j for j in plan(load_story(story)) if j.panel_id == "listen")
    first = (job.settings.width, job.settings.height)
    unit = ControlUnit(image=Path("x.png"), module="lineart_anime", model="cn-x")
    expected = fit_map(detect(picture(), unit, first), first, "Crop and Resize")
    assert (np.asarray(Image.open(path).convert("RGB")) == expected).all()


def test_fetch_control_refuses_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from storyboard.cli import app
    from storyboard.errors import ModelError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    res = CliRunner().invoke(app, ["models", "fetch", "control"])
    assert res.exit_code != 0
    assert isinstance(res.exception, ModelError) and "HF_HUB_OFFLINE" in str(res.exception)
