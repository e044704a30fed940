"""img2img panels on the tiny model (CPU): WebUI's step arithmetic, one pass at the panel's final
size with no hires, "Denoising strength" in the infotext, the init image in the hash by content."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image, ImageDraw

from storyboard.app.build import build
from storyboard.jobs import job_hash
from storyboard.models.tiny import TinyModel
from storyboard.render import img2img as i2i_mod
from storyboard.render.engine import DiffusersRenderer
from storyboard.render.hires import img2img_sigmas, img2img_steps
from storyboard.render.infotext import parse_infotext
from storyboard.render.sampling import parse_sampler_name
from storyboard.story.load import load_story
from storyboard.story.plan import plan

pytestmark = pytest.mark.usefixtures("one_thread")


def rough(path: Path, size: tuple[int, int] = (96, 64)) -> Path:
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    d.ellipse([30, 8, 60, 38], outline="black", width=2)
    d.line([45, 38, 45, 60], fill="black", width=2)
    img.save(path)
    return path


def write_story(folder: Path, tiny: TinyModel, panels: str, render: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    story = folder / "s.yaml"
    story.write_text(
        f"""title: T
render:
  model: tiny-sd
  webui_root: {tiny.root}
  sampler: Euler
  steps: 8
  width: 64
  height: 64
{render}
layout: {{formats: [png], dpi: 20, page_numbers: false}}
pages:
  - panels:
{panels}"""
    )
    return story


def panel_png(out: Path, pid: str) -> Image.Image:
    data = (out / "s" / "panels" / f"{pid}.png").read_bytes()
    return Image.open(io.BytesIO(data))


def test_step_arithmetic_is_webuis() -> None:
    # setup_img2img_steps: without fix, the steps-long schedule, t_enc = int(d * steps).
    assert img2img_steps(20, 0.75, fix_steps=False) == (20, 15)
    assert img2img_steps(20, 1.0, fix_steps=False) == (20, 19)  # min(d, 0.999)
    assert img2img_steps(20, 0.0, fix_steps=False) == (20, 0)
    assert img2img_steps(20, 0.75) == (26, 19)  # fix steps / hires: int(20 / 0.75), steps - 1
    sched = torch.linspace(10, 0, 21)

    def fn(n: int) -> torch.Tensor:
        return torch.linspace(10, 0, n + 1)

    got = img2img_sigmas(fn, 20, 0.75, fix_steps=False)
    assert torch.equal(got, sched[4:]) and len(got) - 1 == 16  # int(20 * 0.75) + 1 steps


@pytest.mark.parametrize(("strength", "fix", "steps_run"), [(0.5, False, 5), (0.3, False, 3), (0.5, True, 8)])
def test_img2img_runs_webuis_schedule(
    tmp_path: Path,
    tiny: TinyModel,
    monkeypatch: pytest.MonkeyPatch,
    strength: float,
    fix: bool,
    steps_run: int,
) -> None:
    rough(tmp_path / "rough.png")
    story = write_story(
        tmp_path,
        tiny,
        f"      - {{id: a, scene: a cat, init_image: rough.png, denoising_strength: {strength}}}\n",
        render=f"  img2img_fix_steps: {str(fix).lower()}",
    )
    seen: list[torch.Tensor] = []
    real = i2i_mod.run_pass

    def spy(*args: Any, **kw: Any) -> torch.Tensor:
        seen.append(args[3].clone())  # run_pass(model, spec, x, sigmas, ...)
        return real(*args, **kw)

    monkeypatch.setattr(i2i_mod, "run_pass", spy)
    renderer = DiffusersRenderer(tmp_path, quiet=True, device="cpu")
    build(load_story(story), tmp_path / "out", renderer, layout=False)
    (sigmas,) = seen
    assert len(sigmas) - 1 == steps_run
    # Independently: the sampler's own schedule of `total` steps, entered at total - t_enc - 1.
    total = int(8 / strength) if fix else 8
    t_enc = 7 if fix else int(strength * 8)
    table = renderer.model.denoiser.sigmas
    full = parse_sampler_name("Euler").sigmas(total, table, "cpu")
    assert torch.equal(sigmas, full[total - t_enc - 1 :])


def test_img2img_panel_is_one_pass_at_the_final_size_with_webuis_infotext(
    tmp_path: Path, tiny: TinyModel
) -> None:
    rough(tmp_path / "rough.png")
    story = write_story(
        tmp_path,
        tiny,
        "      - {id: a, scene: a cat}\n"
        "      - {id: b, scene: a cat, init_image: rough.png, denoising_strength: 0.6, "
        "resize_mode: Crop and resize}\n",
        render="  hires: {scale: 1.5, upscaler: Latent, denoising_strength: 0.5}",
    )
    loaded = load_story(story)
    jobs = {j.panel_id: j for j in plan(loaded)}
    out = tmp_path / "out"
    renderer = DiffusersRenderer(tmp_path, quiet=True, device="cpu")
    build(loaded, out, renderer, layout=False)
    a, b = panel_png(out, "a"), panel_png(out, "b")
    # The txt2img neighbour reaches its size through hires; the img2img panel renders at it.
    assert jobs["b"].settings.hires is None
    assert b.size == jobs["b"].output_size == a.size == jobs["a"].output_size  # both frames alike
    assert a.size != jobs["a"].size  # a's first pass was smaller: 1.5x hires
    info = parse_infotext(b.info["parameters"])
    assert info["Denoising strength"] == "0.6"
    assert info["Size"] == f"{b.width}x{b.height}"
    assert "Hires upscale" not in info and "Hires upscaler" not in info
    assert parse_infotext(a.info["parameters"])["Denoising strength"] == "0.5"  # the hires one


def test_same_seed_same_bytes_and_the_init_image_counts_by_content(tmp_path: Path, tiny: TinyModel) -> None:
    rough(tmp_path / "rough.png")
    panels = (
        "      - {id: b, scene: a cat, init_image: rough.png, resize_mode: Just resize (latent upscale)}\n"
    )
    story = write_story(tmp_path, tiny, panels)
    renderer = DiffusersRenderer(tmp_path, quiet=True, device="cpu")
    outs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        build(load_story(story), out, renderer, layout=False)
        outs.append((out / "s" / "panels" / "b.png").read_bytes())
    assert outs[0] == outs[1]
    assert Image.open(io.BytesIO(outs[0])).size == plan(load_story(story))[0].output_size

    def the_hash() -> str:
        return job_hash(plan(load_story(story))[0], renderer)

    before = the_hash()
    shutil.move(tmp_path / "rough.png", tmp_path / "moved.png")
    story.write_text(story.read_text().replace("rough.png", "moved.png"))
    assert the_hash() == before  # the same picture under another name: nothing to redo
    img = Image.open(tmp_path / "moved.png")
    img.putpixel((0, 0), (1, 2, 3))
    img.save(tmp_path / "moved.png")
    assert the_hash() != before  # one pixel changed: the panel renders again


def test_a_panel_without_img2img_keeps_its_hash(tmp_path: Path, tiny: TinyModel) -> None:
    story = write_story(tmp_path, tiny, "      - {id: a, scene: a cat}\n")
    (job,) = plan(load_story(story))
    assert job.img2img is None and job.inpaint is None and job.base is None
    spec = job.pixel_spec()
    assert not {"img2img", "inpaint", "base", "inputs"} & set(spec)


def test_the_demos_rough_panel_builds_as_a_draft_showing_the_rough(tmp_path: Path) -> None:
    from storyboard.render.draft import DraftRenderer
    from tests.story_helpers import copy_demo

    story = copy_demo(tmp_path)
    loaded = load_story(story)
    job = next(j for j in plan(loaded) if j.panel_id == "encore")
    assert job.img2img is not None and job.input_image("init").path.endswith("roughs/bench.png")
    renderer = DraftRenderer()
    report = build(loaded, tmp_path / "out", renderer, layout=False, draft=True)
    assert "encore" in report.rendered
    img = Image.open(tmp_path / "out" / "demo" / "draft" / "panels" / "encore.png").convert("L")
    w, h = img.size
    # The rough's bench seat (y 380..400 of 640, x 60..390 of 448) shows through the placeholder.
    seat = img.crop((int(0.3 * w), int(390 / 640 * h) - 2, int(0.7 * w), int(390 / 640 * h) + 2))
    assert min(seat.getextrema()) < 200
    before = job_hash(job, renderer)
    rough = Image.open(tmp_path / "stories" / "roughs" / "bench.png")
    rough.putpixel((0, 0), 0)
    rough.save(tmp_path / "stories" / "roughs" / "bench.png")
    after = job_hash(next(j for j in plan(load_story(story)) if j.panel_id == "encore"), renderer)
    assert after != before  # a new rough redraws even the draft
