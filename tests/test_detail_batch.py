"""The face detailer's batches (render/detail_batch.py, render/lora_rows.py) on the tiny random-weight
model (CPU, fp32): faces whose "only masked" regions meet no other face's re-draw in one UNet call,
each face's rows under its own LoRA set; the same as one at a time up to UNet rounding, bytes
outside every mask kept; faces whose regions meet, or a LoRA with no low-rank form, one at a time
with exactly the bytes of a batch size of 1."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from storyboard.app.detail import CheckFaceFinder
from storyboard.check.standin_detail import write_face_detector
from storyboard.jobs import PanelJob
from storyboard.models.lora import read_lora
from storyboard.models.lora_write import write_kohya_lora
from storyboard.models.tiny import TinyModel
from storyboard.render import detail_batch
from storyboard.render import inpaint_mask as im
from storyboard.render.detail import adetailer_box, face_job, face_region, meets
from storyboard.render.engine import DiffusersRenderer
from storyboard.render.lora_rows import layer_factors, row_deltas, row_loras
from storyboard.story.load import load_story_text
from storyboard.story.plan import plan

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 128
FACES = [(0.1, 0.2, 0.3, 0.4), (0.65, 0.2, 0.85, 0.4)]

STORY = """\
title: Batch
characters:
  a: {{lora: tiny_character_v1, weight: 1, triggers: [1girl, red hair], detail: {{prompt: green eyes}}}}
  b: {{lora: {b_lora}, weight: 0.8, triggers: [1boy, blue jacket]}}
style:
  loras: [{{lora: tiny-style2, weight: 0.6}}]
render:
  model: tiny-sd
  sampler: Euler
  steps: 4
  cfg_scale: 7
  width: {size}
  height: {size}
  clip_skip: 2
  noise_source: cpu
  webui_root: {root}
{detail}
pages:
  - panels:
      - {{id: two, scene: garden, characters: [a, b], seed: 5}}
"""
FAR = "  detail: {denoising_strength: 0.5, inpaint_only_masked_padding: 8}"
NEAR = "  detail: {denoising_strength: 0.5}"  # padding 32: the two regions meet


def job(tiny: TinyModel, detail: str = "", b_lora: str = "tiny-style") -> PanelJob:
    text = STORY.format(root=tiny.root, size=SIZE, detail=detail, b_lora=b_lora)
    loaded = load_story_text(text, tiny.root / "batch.yaml")
    [j] = [replace(j, settings=loaded.panel_render[j.panel_id]) for j in plan(loaded)]
    return j


@pytest.fixture(scope="module")
def renderers(tiny: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> dict[int, DiffusersRenderer]:
    """Renderers with 1 (a CPU's default) and 2 faces per batch; a style LoRA and a LoHa written."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(tiny.diffusers_dir / "unet")
    te = CLIPTextModel.from_pretrained(tiny.diffusers_dir / "text_encoder")
    lora_dir = tiny.root / "models" / "Lora"
    write_kohya_lora(lora_dir / "tiny-style2.safetensors", unet, te, kind="locon", rank=4, seed=12)
    write_kohya_lora(lora_dir / "tiny-loha.safetensors", unet, te, kind="loha", rank=4, seed=13)
    models = tmp_path_factory.mktemp("detectors")
    write_face_detector(models, FACES, [0.9, 0.8])
    out = {}
    for size in (1, 2):
        r = DiffusersRenderer(tmp_path_factory.mktemp("story"), quiet=True, device="cpu", batch_size=size)
        r.face_finder = CheckFaceFinder([job(tiny, NEAR)], models_dir=models)
        out[size] = r
    return out


class Recorder(nn.Module):
    """Records the batch of every UNet call, then runs the real UNet."""

    def __init__(self, unet: Any) -> None:
        super().__init__()
        self.inner, self.dtype = unet, unet.dtype
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor, **kw: Any) -> Any:
        self.batches.append(int(x.shape[0]))
        return self.inner(x, t, **kw)


def render(r: DiffusersRenderer, j: PanelJob) -> tuple[Any, list[int]]:
    """The panel and the batch of each UNet call it made."""
    den = r.model.denoiser if r._model is not None else None
    if den is None:
        list(r.render([job_without_detail(j)]))  # loads the model
        den = r.model.denoiser
    rec = Recorder(den.unet)
    den.unet = rec
    try:
        [out] = list(r.render([j]))
    finally:
        den.unet = rec.inner
    return out, rec.batches


def job_without_detail(j: PanelJob) -> PanelJob:
    return replace(j, detail=None)


def face_jobs(on: PanelJob) -> list[PanelJob]:
    assert on.detail is not None
    boxes = [tuple(round(v * SIZE) for v in f) for f in FACES]
    targets = on.detail.targets
    return [face_job(on, t, b, (SIZE, SIZE), k) for k, (t, b) in enumerate(zip(targets, boxes, strict=True))]  # type: ignore[arg-type]


def outside_every_mask(fjs: list[PanelJob]) -> np.ndarray:
    union = np.zeros((SIZE, SIZE), bool)
    for fj in fjs:
        assert fj.inpaint is not None and fj.inpaint.box is not None
        mask = im.blur_mask(im.box_mask((SIZE, SIZE), fj.inpaint.box), fj.inpaint.mask_blur)
        union |= np.asarray(mask) > 0
    return ~union


def test_far_faces_share_unet_calls_each_under_its_own_loras(
    tiny: TinyModel, renderers: dict[int, DiffusersRenderer], monkeypatch: pytest.MonkeyPatch
) -> None:
    r1, r2 = renderers[1], renderers[2]
    on = job(tiny, FAR)
    plain, panel_batches = render(r2, job_without_detail(on))
    fjs = face_jobs(on)
    regions = [face_region(fj, (SIZE, SIZE)) for fj in fjs]
    assert regions[0] is not None and regions[1] is not None and not meets(regions[0], regions[1])
    seen: list[Any] = []

    def spy(patcher: Any, sets: Any) -> Any:
        seen.append((sets, row_deltas(patcher, sets)))
        return seen[-1][1]

    monkeypatch.setattr(detail_batch, "row_deltas", spy)
    batched, batches = render(r2, on)
    # The panel's own calls, then both faces in one loop: int(4 * 0.5) + 1 = 3 steps, each one call
    # of 2 faces x (cond, uncond).
    assert batches == panel_batches + [4, 4, 4]
    # The style LoRA (every face has it) is merged; the hooks carry each face's character LoRA only.
    [(sets, deltas)] = seen
    assert [[net.name for net, _, _ in s] for s in sets] == [["tiny-character"], ["tiny-style"]]
    assert [s[0][2] for s in sets] == [1.0, 0.8]
    patcher = r2.model.patcher
    for k, name in enumerate(("tiny-character", "tiny-style")):
        net = read_lora(tiny.root / "models" / "Lora" / f"{name}.safetensors")
        plans, _ = patcher.plan([(net, 1.0, 1.0)])
        layers = {id(p.target.module) for p in plans.values() if p.target.component == "unet"}
        assert {id(m) for m, items in deltas.items() if any(i == k for i, _, _ in items)} == layers
    # Outside every dilated, blurred mask: the panel's bytes.
    before, after = np.asarray(plain.image), np.asarray(batched.image)
    keep = outside_every_mask(fjs)
    assert np.array_equal(before[keep], after[keep]) and keep.sum() > SIZE * SIZE // 2
    # One face after the other (a batch size of 1, each face's whole set merged) gives the same up
    # to UNet rounding; face a re-drawn under b's LoRA instead differs measurably.
    alone, alone_batches = render(r1, on)
    assert alone_batches == panel_batches + [2] * 6
    diff = np.abs(np.asarray(alone.image).astype(int) - after)
    assert diff.max() <= 2, diff.max()
    print(f"\nbatched vs one at a time: max |diff| {diff.max()} levels, mean {diff.mean():.4f}")
    assert not np.array_equal(before, after)
    b_loras = on.detail.targets[1].loras  # type: ignore[union-attr]
    swapped = r1.redraw(replace(fjs[0], loras=b_loras), plain.image)
    x0, y0, x1, y1 = adetailer_box(tuple(round(v * SIZE) for v in FACES[0]), 4, (SIZE, SIZE))  # type: ignore[arg-type]
    wrong = np.asarray(swapped)[y0:y1, x0:x1].astype(int)
    assert np.abs(wrong - after[y0:y1, x0:x1]).mean() > 1.0


def test_faces_whose_regions_meet_go_one_at_a_time(
    tiny: TinyModel, renderers: dict[int, DiffusersRenderer]
) -> None:
    on = job(tiny, NEAR)
    regions = [face_region(fj, (SIZE, SIZE)) for fj in face_jobs(on)]
    assert regions[0] is not None and regions[1] is not None and meets(regions[0], regions[1])
    one, _ = render(renderers[1], on)
    two, batches = render(renderers[2], on)
    assert 4 not in batches
    assert one.image.tobytes() == two.image.tobytes()


def test_a_loha_face_goes_one_at_a_time_with_its_loha(
    tiny: TinyModel, renderers: dict[int, DiffusersRenderer]
) -> None:
    on = job(tiny, FAR, b_lora="tiny-loha")
    one, _ = render(renderers[1], on)
    two, batches = render(renderers[2], on)
    assert 4 not in batches  # LoHa has no low-rank form to add per sample: merged, one face at a time
    assert one.image.tobytes() == two.image.tobytes()
    net = read_lora(tiny.root / "models" / "Lora" / "tiny-loha.safetensors")
    assert row_deltas(renderers[2].model.patcher, [[(net, 1.0, 1.0)]]) is None


def merged_rows(
    layer: nn.Module, x: torch.Tensor, sets: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Row r of x through `layer` with set r % n merged into its weight, in float64."""
    n = len(sets)
    rows = []
    for r in range(x.shape[0]):
        up, down = sets[r % n]
        w = layer.weight.double()
        w = w + (up.double() @ down.double()).reshape(w.shape)
        xr = x[r : r + 1].double()
        if isinstance(layer, nn.Conv2d):
            rows.append(F.conv2d(xr, w, layer.bias.double(), layer.stride, layer.padding, layer.dilation))
        else:
            rows.append(F.linear(xr, w, layer.bias.double()))
    return torch.cat(rows)


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_row_hook_matches_merged_weights(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "linear":
        layer: nn.Module = nn.Linear(8, 6)
        x, flat_in = torch.randn(4, 5, 8), 8
    else:
        layer = nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1)
        x, flat_in = torch.randn(4, 4, 9, 9), 4 * 9
    sets = [(torch.randn(6, r) * 0.3, torch.randn(r, flat_in) * 0.3) for r in (2, 3)]
    with torch.no_grad():
        base = layer(x)
        deltas = {layer: [(k, *layer_factors(layer, up, down)) for k, (up, down) in enumerate(sets)]}  # type: ignore[misc]
        with row_loras(deltas, 2):  # type: ignore[arg-type]
            got = layer(x)
        after = layer(x)
    want = merged_rows(layer, x, sets)
    assert torch.allclose(got.double(), want, atol=1e-5), (got.double() - want).abs().max()
    assert (got - base).abs().max() > 0.1  # the deltas are not negligible
    assert torch.equal(after, base) and not layer._forward_hooks  # hooks gone after the block
    assert layer_factors(nn.Conv2d(4, 6, 3, groups=2), sets[0][0], sets[0][1]) is None


def test_hooks_go_even_when_the_block_raises() -> None:
    layer = nn.Linear(3, 2)
    up, down = layer_factors(layer, torch.ones(2, 1), torch.ones(1, 3))  # type: ignore[misc]
    with (
        pytest.raises(RuntimeError, match="not 2 LoRA sets"),
        torch.no_grad(),
        row_loras({layer: [(0, up, down)]}, 2),
    ):
        layer(torch.ones(3, 3))
    assert not layer._forward_hooks


def test_sdxl_faces_share_unet_calls_and_draw_what_one_at_a_time_draws(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """SDXL conditioning (two text encoders, pooled embeddings, size ids) in the batched loop."""
    import storyboard.models.tiny  # noqa: F401  (tiny and tiny_sdxl import each other)
    from storyboard.models.tiny_sdxl import write_tiny_sdxl_checkpoint, write_tiny_sdxl_model

    root = tmp_path_factory.mktemp("xl")
    m = write_tiny_sdxl_model(root)
    xl = write_tiny_sdxl_checkpoint(tmp_path_factory.mktemp("xl-modules") / "x.safetensors", 0)
    for name, seed in (("xl-a", 31), ("xl-b", 32)):  # plain LoRAs: low-rank, so they can batch
        write_kohya_lora(
            m.root / "models" / "Lora" / f"{name}.safetensors", xl.unet, xl.text_encoder,
            text_encoder_2=xl.text_encoder_2, text_encoder_prefix="lora_te1", unet_layout="ldm",
            seed=seed, scale=0.2, base_model_version="sdxl_base_v1-0",
        )  # fmt: skip
    text = (
        STORY.replace("tiny-sd\n", "tiny-sdxl\n")
        .replace("  clip_skip: 2\n", "")
        .replace("tiny_character_v1", "xl-a")
        .replace("style:\n  loras: [{{lora: tiny-style2, weight: 0.6}}]\n", "")
        .format(root=m.root, size=SIZE, detail=FAR, b_lora="xl-b")
    )
    loaded = load_story_text(text, m.root / "xl.yaml")
    [on] = [replace(j, settings=loaded.panel_render[j.panel_id]) for j in plan(loaded)]
    models = tmp_path_factory.mktemp("xl-detectors")
    write_face_detector(models, FACES, [0.9, 0.8])
    out = {}
    for size in (1, 2):
        r = DiffusersRenderer(tmp_path_factory.mktemp("xl-story"), quiet=True, device="cpu", batch_size=size)
        r.face_finder = CheckFaceFinder([on], models_dir=models)
        out[size] = render(r, on)
    (one, one_batches), (two, two_batches) = out[1], out[2]
    assert two_batches[-3:] == [4, 4, 4] and 4 not in one_batches
    diff = np.abs(np.asarray(one.image).astype(int) - np.asarray(two.image).astype(int))
    assert diff.max() <= 2, diff.max()
    keep = outside_every_mask(face_jobs(on))
    bare = DiffusersRenderer(tmp_path_factory.mktemp("xl-plain"), quiet=True, device="cpu")
    plain, _ = render(bare, job_without_detail(on))
    assert np.array_equal(np.asarray(plain.image)[keep], np.asarray(two.image)[keep])
