"""Inpaint on the tiny model (CPU): from the command line as a user types it, the pixels outside the
blurred mask stay byte-identical to the panel before; masked content modes; the hash follows the
mask's content and the base render; the sampler's blend is WebUI's."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from storyboard.app.build import build
from storyboard.jobs import job_hash
from storyboard.models.tiny import TinyModel
from storyboard.render.draft import DraftRenderer
from storyboard.render.engine import DiffusersRenderer
from storyboard.render.img2img import mask_blend
from storyboard.render.infotext import parse_infotext
from storyboard.story.load import load_story
from storyboard.story.plan import plan

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")

STORY = """title: T
render:
  model: tiny-sd
  webui_root: {root}
  sampler: Euler a
  steps: 6
  width: 64
  height: 64
layout: {{formats: [png], dpi: 20, page_numbers: false}}
pages:
  - panels:
      - id: p
        scene: a cat
{p_extra}
      - id: q
        scene: a dog
{q_extra}
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


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def reach(box: tuple[int, int, int, int], blur: int, size: tuple[int, int]) -> np.ndarray:
    """Where a box mask and its blur can reach: the box grown by the blur kernel's radius
    (2*int(2.5*blur+0.5)+1 wide, WebUI) in x and y."""
    r = int(2.5 * blur + 0.5) if blur else 0
    out = np.zeros((size[1], size[0]), dtype=bool)
    out[max(box[1] - r, 0) : box[3] + r, max(box[0] - r, 0) : box[2] + r] = True
    return out


def test_render_panel_with_inpaint_keeps_every_pixel_outside_the_blurred_mask(
    tmp_path: Path, tiny: TinyModel
) -> None:
    story = tmp_path / "s.yaml"
    story.write_text(STORY.format(root=tiny.root, p_extra="", q_extra=""))
    assert run("build", "s.yaml", cwd=tmp_path).returncode == 0
    before_p = pixels(tmp_path / "output/s/panels/p.png")
    before_q = (tmp_path / "output/s/panels/q.png").read_bytes()
    h, w = before_p.shape[:2]
    # A mask drawn on the panel (white = repaint), and a box on the other panel, only masked.
    mbox = (w // 4, h // 3, w // 2, h // 2 + 4)
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[mbox[1] : mbox[3], mbox[0] : mbox[2]] = 255
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask, mode="L").save(tmp_path / "masks/p.png")
    story.write_text(
        STORY.format(
            root=tiny.root,
            p_extra="        inpaint: {mask: masks/p.png, mask_blur: 3}",
            q_extra="        denoising_strength: 0.9\n"
            "        inpaint: {box: [0.5, 0.5, 1, 1], mask_blur: 2, inpaint_full_res: true, padding: 4}",
        )
    )
    r = run("render", "s.yaml", "--panel", "p", "--panel", "q", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    after_p = pixels(tmp_path / "output/s/panels/p.png")
    outside = ~reach(mbox, 3, (w, h))
    assert (after_p[outside] == before_p[outside]).all()
    assert (after_p[~outside] != before_p[~outside]).any()
    info = parse_infotext(Image.open(tmp_path / "output/s/panels/p.png").info["parameters"])
    assert info["Mask blur"] == "3" and info["Denoising strength"] == "0.75"
    assert "Inpaint area" not in info and "Masked content" not in info  # whole picture, original

    after_q = pixels(tmp_path / "output/s/panels/q.png")
    prev_q = np.asarray(Image.open(io.BytesIO(before_q)).convert("RGB"))
    qbox = (round(0.5 * w), round(0.5 * h), w, h)
    outside = ~reach(qbox, 2, (w, h))
    assert (after_q[outside] == prev_q[outside]).all() and (after_q[~outside] != prev_q[~outside]).any()
    info = parse_infotext(Image.open(tmp_path / "output/s/panels/q.png").info["parameters"])
    assert info["Inpaint area"] == "Only masked" and info["Masked area padding"] == "4"
    assert info["Denoising strength"] == "0.9" and info["Size"] == f"{w}x{h}"


def test_masked_content_modes(tmp_path: Path, tiny: TinyModel) -> None:
    modes = ["original", "fill", "latent noise", "latent nothing"]
    panels = "".join(
        f"      - {{id: m{k}, seed: 7, scene: a cat, inpaint: {{box: [0.25, 0.25, 0.75, 0.75], "
        f"mask_blur: 0, masked_content: {m}}}}}\n"
        for k, m in enumerate(modes)
    )
    story = tmp_path / "s.yaml"
    text = STORY.format(root=tiny.root, p_extra="", q_extra="")
    story.write_text(text.split("      - id: p")[0] + panels)
    loaded = load_story(story)
    jobs = plan(loaded)
    renderer = DiffusersRenderer(tmp_path, quiet=True, device="cpu")
    assert len({job_hash(j.base, renderer) for j in jobs if j.base}) == 1  # one base render, shared
    build(loaded, tmp_path / "out", renderer, layout=False)
    imgs = [pixels(tmp_path / f"out/s/panels/m{k}.png") for k in range(4)]
    h, w = imgs[0].shape[:2]
    inside = reach((round(0.25 * w), round(0.25 * h), round(0.75 * w), round(0.75 * h)), 0, (w, h))
    for k in range(1, 4):
        assert (imgs[k][~inside] == imgs[0][~inside]).all()  # no blur: exactly the box changes
        assert (imgs[k][inside] != imgs[0][inside]).any(), modes[k]
    infos = [
        parse_infotext(Image.open(tmp_path / f"out/s/panels/m{k}.png").info["parameters"]) for k in range(4)
    ]
    assert [i.get("Masked content") for i in infos] == [None, "fill", "latent noise", "latent nothing"]
    assert all("Mask blur" not in i for i in infos)  # WebUI writes it only when above 0


def test_the_hash_follows_the_mask_and_the_base_render(tmp_path: Path, tiny: TinyModel) -> None:
    story = tmp_path / "s.yaml"
    story.write_text(STORY.format(root=tiny.root, p_extra="", q_extra=""))
    size = plan(load_story(story))[0].output_size
    mask = Image.new("L", size, 0)
    mask.paste(255, (10, 10, 30, 30))
    mask.save(tmp_path / "m.png")

    def hashes(scene: str = "a cat") -> tuple[str, str]:
        text = STORY.format(root=tiny.root, p_extra="        inpaint: {mask: m.png}", q_extra="")
        story.write_text(text.replace("scene: a cat", f"scene: {scene}"))
        p, q = plan(load_story(story))
        return job_hash(p, DraftRenderer()), job_hash(q, DraftRenderer())

    p0, q0 = hashes()
    mask.putpixel((40, 40), 255)
    mask.save(tmp_path / "m.png")
    p1, q1 = hashes()
    assert p1 != p0 and q1 == q0  # the mask's content: that panel only
    p2, _ = hashes("a cat, smiling")
    assert p2 != p1  # another base render under the same mask


def test_the_blend_is_webuis_after_each_model_call() -> None:
    init = torch.full((1, 4, 2, 2), 3.0)
    nmask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])[None, None]

    def den(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return x * 2

    x = torch.ones(1, 4, 2, 2)
    out = mask_blend(init, nmask)(den)(x, torch.tensor([1.0]))
    # denoised * m + init * (1 - m): repainted where m = 1, the init latent elsewhere.
    assert torch.equal(out[0, :, 0, 0], torch.full((4,), 2.0)) and torch.equal(
        out[0, :, 0, 1], torch.full((4,), 3.0)
    )


def test_inpaint_over_an_init_image_keeps_the_fitted_picture_outside_the_mask(
    tmp_path: Path, tiny: TinyModel
) -> None:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(tmp_path / "photo.png")
    mask = np.zeros((64, 96), dtype=np.uint8)
    mask[20:40, 30:60] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    story = tmp_path / "s.yaml"
    story.write_text(
        STORY.format(
            root=tiny.root,
            p_extra="        init_image: photo.png\n        inpaint: {mask: m.png, mask_blur: 0}",
            q_extra="        init_image: photo.png\n"
            "        inpaint: {box: [0.3, 0.3, 0.6, 0.6], mask_blur: 0, inpaint_full_res: true}",
        )
    )
    loaded = load_story(story)
    p_job, q_job = plan(loaded)
    assert p_job.base is None and p_job.has_input("init") and p_job.has_input("mask")
    build(loaded, tmp_path / "out", DiffusersRenderer(tmp_path, quiet=True, device="cpu"), layout=False)
    w, h = p_job.output_size
    after = pixels(tmp_path / "out/s/panels/p.png")
    assert after.shape[:2] == (h, w)
    # Whole picture, "Just resize": the photo Lanczos-resized to the panel, its mask likewise.
    fitted = np.asarray(
        Image.open(tmp_path / "photo.png").convert("RGB").resize((w, h), Image.Resampling.LANCZOS)
    )
    fitted_mask = np.asarray(Image.fromarray(mask).resize((w, h), Image.Resampling.LANCZOS))
    keep = fitted_mask == 0
    assert (after[keep] == fitted[keep]).all() and (after[~keep] != fitted[~keep]).any()
    # Only masked over an init image: fitted to the panel first, so the panel still fills its frame.
    q = pixels(tmp_path / "out/s/panels/q.png")
    assert q.shape[:2] == (q_job.output_size[1], q_job.output_size[0])


def test_candidates_and_pick_of_an_inpaint_panel_vary_the_repainted_part_only(tmp_path: Path) -> None:
    from storyboard.app.build import render_candidates
    from storyboard.app.operations import pick

    story = tmp_path / "s.yaml"
    story.write_text(
        "title: T\nrender: {width: 64, height: 64}\npages:\n  - panels:\n"
        "      - id: p\n        scene: a cat\n        seed: 5\n        inpaint: {box: [0.2, 0.2, 0.6, 0.6]}\n"
    )
    renderer = DraftRenderer()
    build(load_story(story), tmp_path / "out", renderer, layout=False)
    (job,) = plan(load_story(story))
    assert job.seed == 5 and job.base is not None and job.base.seed == 5
    results, _ = render_candidates(load_story(story), tmp_path / "out", renderer, "p", [5, 77])
    pick(story, "p", 77)
    assert "inpaint: {box: [0.2, 0.2, 0.6, 0.6], seed: 77}" in story.read_text()
    (picked,) = plan(load_story(story))
    assert picked.seed == 77 and picked.base == job.base  # the picture under it stays the same
    report = build(load_story(story), tmp_path / "out", renderer, layout=False)
    assert report.reused == ["p"]  # the chosen candidate, from the store
    chosen = dict(results)[77].read_bytes()
    assert (tmp_path / "out" / "s" / "panels" / "p.png").read_bytes() == chosen
