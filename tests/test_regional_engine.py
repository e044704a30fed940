"""Regional rendering on the tiny random-weight model (CPU, fp32): each region under its own LoRA set."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from storyboard.app.build import build
from storyboard.jobs import PanelJob
from storyboard.models.lora import read_lora
from storyboard.models.tiny import TinyModel
from storyboard.render import txt2img
from storyboard.render.conditioning import encode_regional, encode_text, lora_set_key, prompt_encoder
from storyboard.render.engine import DiffusersRenderer
from storyboard.render.infotext import parse_infotext
from storyboard.render.regions import bleed_ratio
from storyboard.story.load import load_story, load_story_text
from storyboard.story.plan import plan
from storyboard.story.regions import parse_regions

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> DiffusersRenderer:
    return DiffusersRenderer(tmp_path_factory.mktemp("story"), quiet=True, device="cpu")


STORY = """\
title: Regional
characters:
  a: {{lora: tiny_character_v1, weight: {weight}, triggers: [1girl, red hair]}}
  b: {{lora: tiny-style, weight: 0.8, triggers: [1boy, blue jacket]}}
style:
  loras: [{{lora: tiny-style, weight: 0.6}}]
render:
  model: tiny-sd
  sampler: {sampler}
  steps: {steps}
  cfg_scale: {cfg}
  width: {size}
  height: {size}
  clip_skip: 2
  noise_source: cpu
  webui_root: {root}
  regional: {{feather: {feather}, lora_stop_step: {stop}}}
{hires}
pages:
  - panels:
      - id: two
        scene: garden
        characters: [a, b]
        seed: {seed}
        regions: {regions}
      - id: a
        scene: garden
        characters: [a]
        seed: {seed}
      - id: b
        scene: garden
        characters: [b]
        seed: {seed}
"""


def jobs(tiny: TinyModel, **kw: Any) -> dict[str, PanelJob]:
    opts: dict[str, Any] = dict(
        weight=1, sampler="Euler", steps=3, cfg=7, size=64, feather=0.05, stop=0, hires="", seed=5,
        regions="columns 1,1",
    )  # fmt: skip
    opts.update(kw)
    text = STORY.format(root=tiny.root, **opts)
    return {j.panel_id: j for j in unshaped(load_story_text(text, tiny.root / "regional.yaml"))}


def unshaped(loaded: Any) -> list[PanelJob]:
    """The story's jobs at its own render size, not shaped to their page frames: these tests compare
    panels of one size, and pixels recorded before frame-shaped rendering existed."""
    return [replace(j, settings=loaded.panel_render[j.panel_id]) for j in plan(loaded)]


def render(r: DiffusersRenderer, job: PanelJob) -> tuple[Image.Image, str]:
    [out] = list(r.render([job]))
    return out.image, out.infotext


class Recorder(torch.nn.Module):
    """A stand-in for the UNet that records, at each call, the patcher's active LoRA set and the
    conditioning it got, then runs the real UNet."""

    def __init__(self, unet: Any, patcher: Any) -> None:
        super().__init__()
        self.inner, self.patcher = unet, patcher
        self.calls: list[tuple[Any, torch.Tensor]] = []
        self.dtype = unet.dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kw: Any) -> Any:
        self.calls.append((self.patcher.active, kw["encoder_hidden_states"].clone()))
        return self.inner(x, t, **kw)


@pytest.fixture
def recorder(renderer: DiffusersRenderer, tiny: TinyModel) -> Any:
    render(renderer, jobs(tiny)["a"])  # load the model
    den = renderer.model.denoiser
    rec = Recorder(den.unet, renderer.model.patcher)
    den.unet = rec
    yield rec
    den.unet = rec.inner


def signatures(renderer: DiffusersRenderer, job: PanelJob) -> dict[Any, Any]:
    """The patcher's signature of each LoRA set of the job (None: the shared set), by applying it."""
    patcher, rj = renderer.model.patcher, renderer.resolve(job)
    out = {}
    for key, uses in [
        (None, job.shared_lora_set),
        *((lora_set_key(r.lora_set), r.lora_set) for r in job.regions),
    ]:
        files = [renderer.resolver.lora_file(job.settings, u, rj.models) for u in uses]
        patcher.apply([(read_lora(f.path), u.te, u.unet) for f, u in zip(files, uses, strict=True)])
        out[key] = patcher.active
    patcher.restore()
    return out


# Pixels of the panels below as rendered by the code before regional rendering existed (the test
# DEMO story of test_engine.py, tiny model seed 0, CPU fp32): a one-character panel and a two-character
# panel with `regions: none` must stay byte-identical. Regenerate only for a deliberate change.
BEFORE = {
    "gate": "2dcf8e028b3d54fbbc9ec0815927cbd0336a24d861f08121bf6f2b386969e744",
    "garden": "8d2b88222506e2745ec05388d9b59b3832199f11ef81fdd9e5fa7f20e5452dd3",
    "meet": "808c8efe0a176257cd145ce8c2f9c0d9aac6eb1e1d480bc6bd2cb127a3d61cbb",
}
BEFORE_SPEC = {
    "gate": "1f6e3071f86faa1c9d44324fc4e0e4509ba486b6767928a5bbc24dc0294fdd74",
    "garden": "2ce3b022be00385ac7f55135a29f525ee3e415478593795522cf34d2bc4d6967",
    "meet": "221c1e6cbfaf62d625ab4f3fa381a915be47fc77e0791216b57ff910aafc71c3",
}


def test_one_character_and_regions_none_render_byte_identically_to_before(
    tiny: TinyModel, tmp_path: Path
) -> None:
    from test_engine import DEMO

    text = DEMO.replace("{root}", str(tiny.root)).replace(
        "        seed: 3447412781\n", "        seed: 3447412781\n        regions: none\n"
    )
    loaded = load_story_text(text, tmp_path / "demo.yaml")
    out = {
        o.job.panel_id: o
        for o in DiffusersRenderer(tmp_path, quiet=True, device="cpu").render(unshaped(loaded))
    }
    for pid in BEFORE:
        assert not out[pid].job.regions
        assert out[pid].job.spec_digest() == BEFORE_SPEC[pid]  # same job hash: caches stay valid
        assert hashlib.sha256(np.asarray(out[pid].image).tobytes()).hexdigest() == BEFORE[pid], pid
        assert "RP Active" not in out[pid].infotext


def test_region_equals_its_character_rendered_alone_inside_its_mask(
    tiny: TinyModel, renderer: DiffusersRenderer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hard masks, base ratio 0, one Euler step, CFG 1: the final latent is the blended conditional
    prediction, so inside each region it must equal the panel rendered with only that region's
    character (same prompt, same LoRA set, same noise)."""
    latents: list[torch.Tensor] = []
    decode = txt2img.decode_latents

    def keep(vae: Any, latent: torch.Tensor) -> Any:
        latents.append(latent.clone())
        return decode(vae, latent)

    monkeypatch.setattr(txt2img, "decode_latents", keep)
    j = jobs(tiny, steps=1, cfg=1, feather=0)
    for pid in ("two", "a", "b"):
        render(renderer, j[pid])
    two, a, b = latents
    half = two.shape[-1] // 2
    # Float rounding only: the single render batches cond with uncond and CFG 1 still subtracts.
    assert torch.allclose(two[..., :half], a[..., :half], rtol=1e-5, atol=1e-4)
    assert torch.allclose(two[..., half:], b[..., half:], rtol=1e-5, atol=1e-4)
    # Not trivially so: the two characters' renders differ on both sides.
    assert (a - b)[..., :half].abs().max() > 1e-2 and (a - b)[..., half:].abs().max() > 1e-2


def test_denoiser_output_equals_the_blend_computed_independently(
    tiny: TinyModel, renderer: DiffusersRenderer, recorder: Recorder
) -> None:
    job = jobs(tiny, feather=0.25)["two"]
    model, rj = renderer.model, renderer.resolve(job)
    enc = prompt_encoder(model.components, rj.models.embeddings, 2)
    rc = encode_regional(rj, renderer.resolver, model.patcher, enc, renderer.device, needs_shared=False)
    h = w = 8
    x = torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(0))
    time_ids = torch.zeros(6)
    guide = txt2img.regional_guide(model, rj, rc, hires=False)
    assert guide is not None
    sigma = torch.tensor([3.0])
    with torch.no_grad():
        out = guide(x, time_ids)(x, sigma)
    assert len(recorder.calls) == len(job.regions) + 1  # uncond once + one call per region
    # Independently: each prediction under its own set, masks from the ramp formula.
    sigs = signatures(renderer, job)
    den, patcher = model.denoiser, model.patcher
    preds = []
    with torch.no_grad():
        for key, cond, _ in rc.regions:
            patcher.restore()
            rc.switch(key)
            assert patcher.active == sigs[key]
            preds.append(den(x, sigma, cond[0][1].hidden[None]))
        rc.switch(None)
        uncond = den(x, sigma, rc.panel.uncond[0][1].hidden[None])
    xs = (torch.arange(w) + 0.5) / w
    left = torch.clamp((0.5 - xs) / 0.25 + 0.5, 0, 1).expand(h, w)
    blend = preds[0] * left + preds[1] * (1 - left)
    expected = uncond + (blend - uncond) * 7
    assert torch.allclose(out, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("stop", [0, 2])
def test_every_unet_call_runs_with_its_regions_lora_set_and_conditioning(
    tiny: TinyModel, renderer: DiffusersRenderer, recorder: Recorder, stop: int
) -> None:
    hires = "  hires: {scale: 1.5, upscaler: Latent, denoising_strength: 0.7}"
    job = jobs(tiny, hires=hires, stop=stop)["two"]
    sigs = signatures(renderer, job)
    # The conditioning each set must come with, encoded independently under that set.
    model, rj = renderer.model, renderer.resolve(job)
    enc = prompt_encoder(model.components, rj.models.embeddings, 2)
    rc = encode_regional(rj, renderer.resolver, model.patcher, enc, renderer.device, needs_shared=False)
    conds = {sigs[key]: cond[0][1].hidden for key, cond, _ in rc.regions}
    rc.switch(None)
    conds[sigs[None]] = encode_text(enc, renderer.device, job.negative, 3, negative=True)[0][1].hidden
    recorder.calls.clear()
    _, info = render(renderer, job)
    per_step = len(job.regions) + 1
    steps = 3 + 3  # Euler: one call per step; the hires pass runs the same number of steps
    assert len(recorder.calls) == per_step * steps
    for n in range(steps):
        calls = recorder.calls[n * per_step : (n + 1) * per_step]
        assert calls[0][0] == sigs[None]  # the uncond first, once, under the shared set
        active = [sig for sig, _ in calls[1:]]
        # The stop applies to the first pass (n < 3); hires_lora_stop_step is 0 here.
        stopped = bool(stop) and n < 3 and n >= stop
        if stopped:
            assert active == [sigs[None]] * len(job.regions)  # region LoRAs dropped after the stop
        else:
            assert sorted(map(str, active)) == sorted(
                str(sigs[lora_set_key(r.lora_set)]) for r in job.regions
            )
        if not stopped:
            for sig, hidden in calls[1:]:
                assert torch.equal(hidden[0], conds[sig])
        assert torch.equal(calls[0][1][0], conds[sigs[None]])
    p = parse_infotext(info)
    assert p["RP Calc Mode"] == "Latent" and p["RP LoRA Stop Step"] == str(stop)
    assert parse_regions(p["Regions"]) == [(r.character, r.box) for r in job.regions]
    assert set(p["Prompt"].split(" ADDCOL ")) == {r.positive for r in job.regions}


def test_regional_panel_changes_with_regions_and_is_deterministic(
    tiny: TinyModel, renderer: DiffusersRenderer
) -> None:
    j = jobs(tiny)
    first, _ = render(renderer, j["two"])
    again, _ = render(renderer, j["two"])
    assert np.array_equal(np.asarray(first), np.asarray(again))
    other, _ = render(renderer, jobs(tiny, regions="columns 1,3")["two"])
    glob, _ = render(renderer, jobs(tiny, regions="none")["two"])
    assert not np.array_equal(np.asarray(first), np.asarray(other))
    assert not np.array_equal(np.asarray(first), np.asarray(glob))


def test_bleed_of_regional_rendering_is_at_most_a_quarter_of_the_global_merge(
    tiny: TinyModel, renderer: DiffusersRenderer
) -> None:
    """Character a's LoRA at weight 1 vs 0: the share of the change outside a's region (grown by
    1/16 of the width). 128 px: at 64 px the tiny VAE decoder alone spreads a change further."""
    kw: dict[str, Any] = dict(sampler="DPM++ 2M Karras", steps=8, size=128)
    for seed in (1, 2, 3, 4):
        ratios = {}
        for mode in ("columns 1,1", "none"):
            full, _ = render(renderer, jobs(tiny, seed=seed, regions=mode, **kw)["two"])
            zero, _ = render(renderer, jobs(tiny, seed=seed, regions=mode, weight=0, **kw)["two"])
            ratios[mode] = bleed_ratio(np.asarray(full, float), np.asarray(zero, float), (0.0, 0.0, 0.5, 1.0))
        assert ratios["columns 1,1"] <= ratios["none"] / 4, (seed, ratios)


def test_tiny_demo_builds_with_its_regional_meet_panel(tiny: TinyModel, tmp_path: Path) -> None:
    text = (ROOT / "stories" / "tiny-demo.yaml").read_text()
    text = text.replace("webui_root: ../output/tiny-model", f"webui_root: {tiny.root}")
    text = text.replace("image: control/", f"image: {ROOT / 'stories' / 'control'}/")  # the pose map
    text = text.replace("steps: 8", "steps: 3")
    story = tmp_path / "tiny-demo.yaml"
    story.write_text(text)
    loaded = load_story(story)
    meet = next(j for j in plan(loaded) if j.panel_id == "meet")
    assert [r.character for r in meet.regions] == ["iku", "haru"]
    r = DiffusersRenderer(loaded.base_dir, quiet=True, device="cpu")
    report = build(loaded, tmp_path / "out", r)
    assert "meet" in report.rendered
    img = Image.open(next((tmp_path / "out").rglob("meet.png")))
    p = parse_infotext(img.info["parameters"])
    assert p["RP Active"] == "True" and "ADDCOL" in p["Prompt"]
