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
  regional: {{feather: {feather}, lora_stop_step: {stop}, negative_loras: {negative_loras}}}
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
        regions="columns 1,1", negative_loras="region",
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


@pytest.mark.parametrize("mode", ["region", "shared"])
def test_denoiser_output_equals_the_blend_computed_independently(
    tiny: TinyModel, renderer: DiffusersRenderer, recorder: Recorder, mode: str
) -> None:
    """One model call of a feathered two-region panel against the CFG formula computed here, one
    prediction at a time: with ``negative_loras: region`` each region's uncond is the negative prompt
    encoded and predicted under that region's LoRA set, blended by the same masks as the conds."""
    job = jobs(tiny, feather=0.25, negative_loras=mode)["two"]
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
    # region: one batched call per LoRA set (cond + its uncond); shared: the uncond, then each region.
    assert len(recorder.calls) == (2 if mode == "region" else len(job.regions) + 1)
    # Independently: each prediction under its own set, masks from the ramp formula.
    sigs = signatures(renderer, job)
    den, patcher = model.denoiser, model.patcher
    preds, unconds = [], []
    with torch.no_grad():
        for key, cond, _ in rc.regions:
            patcher.restore()
            rc.switch(key)
            assert patcher.active == sigs[key]
            preds.append(den(x, sigma, cond[0][1].hidden[None]))
            negative = encode_text(enc, renderer.device, job.negative, 3, negative=True)[0][1].hidden
            unconds.append(den(x, sigma, negative[None]))
        rc.switch(None)
        shared_uncond = den(x, sigma, rc.panel.uncond[0][1].hidden[None])
    xs = (torch.arange(w) + 0.5) / w
    left = torch.clamp((0.5 - xs) / 0.25 + 0.5, 0, 1).expand(h, w)
    blend = preds[0] * left + preds[1] * (1 - left)
    uncond = unconds[0] * left + unconds[1] * (1 - left) if mode == "region" else shared_uncond
    expected = uncond + (blend - uncond) * 7
    # A batch of two against two calls of one differ by float rounding, which CFG 7 multiplies.
    assert torch.allclose(out, expected, atol=1e-5 if mode == "shared" else 1e-4, rtol=0)
    # The two ways differ where it counts: the region's own uncond is not the shared one.
    assert (unconds[0] - shared_uncond).abs().max() > 1e-3


@pytest.mark.parametrize(("stop", "mode"), [(0, "region"), (2, "region"), (0, "shared")])
def test_every_unet_call_runs_with_its_regions_lora_set_and_conditioning(
    tiny: TinyModel, renderer: DiffusersRenderer, recorder: Recorder, stop: int, mode: str
) -> None:
    """Which set every UNet call ran under and what it was given, sample by sample, named against
    conditionings encoded here under each set."""
    hires = "  hires: {scale: 1.5, upscaler: Latent, denoising_strength: 0.7}"
    job = jobs(tiny, hires=hires, stop=stop, negative_loras=mode)["two"]
    sigs = signatures(renderer, job)
    model, rj = renderer.model, renderer.resolve(job)
    enc = prompt_encoder(model.components, rj.models.embeddings, 2)
    rc = encode_regional(rj, renderer.resolver, model.patcher, enc, renderer.device, needs_shared=False)
    known: list[tuple[str, torch.Tensor]] = []
    for (key, cond, _), r in zip(rc.regions, job.regions, strict=True):
        rc.switch(key)
        known.append((f"cond {r.character}", cond[0][1].hidden))
        known.append(
            (f"negative {r.character}", encode_text(enc, renderer.device, "", 3, negative=True)[0][1].hidden)
        )
    rc.switch(None)
    known.append(("negative shared", encode_text(enc, renderer.device, "", 3, negative=True)[0][1].hidden))
    set_of = {sigs[None]: "shared", **{sigs[lora_set_key(r.lora_set)]: r.character for r in job.regions}}

    def name(hidden: torch.Tensor) -> str:
        [found] = [label for label, t in known if torch.equal(hidden, t)]
        return found

    recorder.calls.clear()
    _, info = render(renderer, job)
    calls = [(set_of[sig], tuple(name(row) for row in hidden)) for sig, hidden in recorder.calls]
    a, b = (r.character for r in job.regions)

    def step(n: int) -> list[tuple[str, tuple[str, ...]]]:
        """The calls of model call n (Euler: one per step; the hires pass runs 3 more)."""
        if mode == "shared":  # Regional Prompter: the negative once, without any region's LoRA
            return [("shared", ("negative shared",)), (a, (f"cond {a}",)), (b, (f"cond {b}",))]
        if stop and n < 3 and n >= stop:  # region LoRAs dropped: all under the shared set, one batch
            return [("shared", (f"cond {a}", f"negative {a}", f"cond {b}", f"negative {b}"))]
        return [(a, (f"cond {a}", f"negative {a}")), (b, (f"cond {b}", f"negative {b}"))]

    per_step = [len(step(n)) for n in range(6)]
    assert len(calls) == sum(per_step)
    at = 0
    for n, count in enumerate(per_step):
        assert sorted(calls[at : at + count]) == sorted(step(n)), n
        at += count
    if mode == "region" and not stop:
        # Each step starts under the set the previous one ended with: one switch per step (and one
        # at the hires pass's start), where the shared way switches three times per step.
        switches = sum(1 for x, y in zip(calls, calls[1:], strict=False) if x[0] != y[0])
        assert switches <= 6 + 1, calls
    p = parse_infotext(info)
    assert p["RP Calc Mode"] == "Latent" and p["RP LoRA Stop Step"] == str(stop)
    assert p["Region negative LoRAs"] == mode
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
    """Character a's LoRA at weight 1 vs 0, in pixels: the change (squared, summed) outside a's
    region grown by 1/16 of the width, regional against the global merge. Not the share of the
    change outside: a's LoRA acts as strongly in its region as alone now, about 5 times less than
    under a shared negative, so the share says little. 128 px: at 64 px the tiny VAE decoder alone
    spreads a change further. (tests/test_regional_strength.py measures the same in latents.)"""
    kw: dict[str, Any] = dict(sampler="DPM++ 2M Karras", steps=8, size=128)
    for seed in (1, 2, 3, 4):
        outside = {}
        for mode in ("columns 1,1", "none"):
            full, _ = render(renderer, jobs(tiny, seed=seed, regions=mode, **kw)["two"])
            zero, _ = render(renderer, jobs(tiny, seed=seed, regions=mode, weight=0, **kw)["two"])
            f, z = np.asarray(full, float), np.asarray(zero, float)
            outside[mode] = bleed_ratio(f, z, (0.0, 0.0, 0.5, 1.0)) * float(((f - z) ** 2).sum())
        assert outside["columns 1,1"] <= outside["none"] / 4, (seed, outside)


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


def test_candidates_of_a_regional_panel_are_each_rendered(
    tiny: TinyModel, renderer: DiffusersRenderer
) -> None:
    """`render --candidates` sends one regional panel with several seeds in one call: each seed comes
    back, as it renders alone (only the first came back before, and the candidates crashed)."""
    two = jobs(tiny)["two"]
    seeds = [5, 6, 7]
    out = list(renderer.render([replace(two, seed=s) for s in seeds]))
    assert [o.job.seed for o in out] == seeds
    for o in out:
        alone, _ = render(renderer, replace(two, seed=o.job.seed))
        assert np.array_equal(np.asarray(o.image), np.asarray(alone))
