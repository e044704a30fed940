"""The diffusers render engine on the tiny random-weight model (CPU, fp32)."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from storyboard.app.build import build, png_bytes
from storyboard.errors import ModelError
from storyboard.jobs import PanelJob
from storyboard.models.hashes import embedding_hash, lora_hash, sha256_file
from storyboard.models.tiny import TinyModel
from storyboard.prompt.extra_networks import LoraUse
from storyboard.render.engine import DiffusersRenderer
from storyboard.render.infotext import parse_hash_list, parse_infotext
from storyboard.story.load import load_story
from storyboard.story.schema import HiresFix, RenderSettings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def story_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Not the WebUI root: there "tiny-sd" would also name the tiny model's diffusers folder.
    return tmp_path_factory.mktemp("story")


@pytest.fixture(scope="module")
def renderer(story_dir: Path) -> DiffusersRenderer:
    return DiffusersRenderer(story_dir, quiet=True, device="cpu")


@pytest.fixture(scope="module")
def base_png(tiny: TinyModel, renderer: DiffusersRenderer) -> bytes:
    """The reference render: job(tiny) with no LoRA."""
    return png_bytes(*render_one(renderer, job(tiny)))


def settings(tiny: TinyModel, **kw: Any) -> RenderSettings:
    base: dict[str, Any] = dict(
        model="tiny-sd",
        sampler="DPM++ 2S a Karras",
        steps=3,
        cfg_scale=7,
        width=64,
        height=64,
        clip_skip=2,
        hires=HiresFix(scale=1.5, upscaler="Latent", denoising_strength=0.7),
        webui_root=tiny.root,
    )
    base.update(kw)
    return RenderSettings(**base)


def job(
    tiny: TinyModel, seed: int = 1234, loras: tuple[LoraUse, ...] = (), pid: str = "p", **kw: Any
) -> PanelJob:
    tags = "".join(f" <lora:{u.name}:{u.te:g}>" for u in loras)
    return PanelJob(
        panel_id=pid,
        page=1,
        index=1,
        positive=kw.pop("positive", "1girl, garden, smile") + tags,
        negative=kw.pop("negative", "EasyNegative, (worst quality:1.4)"),
        loras=loras,
        seed=seed,
        settings=settings(tiny, **kw),
    )


def render_one(r: DiffusersRenderer, j: PanelJob) -> tuple[Image.Image, str]:
    [out] = list(r.render([j]))
    assert out.job == j
    return out.image, out.infotext


def checked_renderer(loaded: Any) -> DiffusersRenderer:
    """The app's renderer for a story: every file found and checked before anything loads."""
    from storyboard.story.plan import plan

    r = DiffusersRenderer(loaded.base_dir, quiet=True, device="cpu")
    r.check(plan(loaded))
    return r


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def test_same_job_gives_byte_identical_png(
    tiny: TinyModel, renderer: DiffusersRenderer, base_png: bytes
) -> None:
    assert png_bytes(*render_one(renderer, job(tiny))) == base_png
    img = Image.open(io.BytesIO(base_png))
    assert pixels(img).std() > 1  # a real picture, not a constant (NaN decodes to black)


def test_different_seed_gives_different_image(
    tiny: TinyModel, renderer: DiffusersRenderer, base_png: bytes
) -> None:
    other, _ = render_one(renderer, job(tiny, seed=1235))
    assert np.abs(pixels(other) - pixels(Image.open(io.BytesIO(base_png)))).mean() > 1


def test_one_sampler_step_matches_an_independent_computation(
    tiny: TinyModel, renderer: DiffusersRenderer
) -> None:
    """Euler, 1 step, no hires: the result is exactly CFG-combined D(noise * sigma_max, sigma_max)."""
    j = job(tiny, sampler="Euler", schedule="Automatic", steps=1, clip_skip=1, hires=None, seed=77,
            negative="")  # fmt: skip
    img, _ = render_one(renderer, j)
    comps = renderer.model.components
    from storyboard.prompt.encode import PromptEncoder
    from storyboard.render.denoiser import scaled_linear_alphas_cumprod

    enc = PromptEncoder(comps.tokenizer, comps.text_encoder, {}, 1)
    c, u = enc.encode([j.prompt_text]), enc.encode([""])
    acp = scaled_linear_alphas_cumprod()
    sigma = float(((1 - acp[999]) / acp[999]) ** 0.5)  # one uniform step starts at t = 999
    noise = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(77))
    x = noise * sigma
    with torch.no_grad():
        eps = comps.unet(
            torch.cat([x, x]) / (sigma**2 + 1) ** 0.5,
            torch.tensor([999.0, 999.0]),
            encoder_hidden_states=torch.cat([c, u]),
        ).sample
        d_c, d_u = x - sigma * eps[:1], x - sigma * eps[1:]
        latent = d_u + 7 * (d_c - d_u)
        dec = comps.vae.decode(latent / comps.vae.config.scaling_factor).sample
    expected = (255 * torch.clamp((dec[0] + 1) / 2, 0, 1).permute(1, 2, 0).numpy()).astype(np.uint8)
    diff = np.abs(pixels(img) - expected.astype(np.int16))
    assert diff.max() <= 1  # float summation order only


def test_lora_weight_zero_is_bit_identical_to_no_lora(
    tiny: TinyModel, renderer: DiffusersRenderer, base_png: bytes
) -> None:
    base = Image.open(io.BytesIO(base_png))
    zero, info = render_one(renderer, job(tiny, loras=(LoraUse("tiny_character_v1", 0.0, 0.0),)))
    assert "<lora:tiny_character_v1:0>" in info
    assert np.array_equal(pixels(base), pixels(zero))  # bit-identical, not just close


def test_lora_changes_image_and_restore_is_bit_exact(
    tiny: TinyModel, renderer: DiffusersRenderer, base_png: bytes
) -> None:
    base = Image.open(io.BytesIO(base_png))
    renderer.restore_loras()
    comps = renderer.model.components
    before = {k: v.clone() for m in (comps.unet, comps.text_encoder) for k, v in m.state_dict().items()}
    uses = (LoraUse("tiny_character_v1", 1.0, 1.0), LoraUse("tiny-style", 0.8, 0.8))
    with_lora, _ = render_one(renderer, job(tiny, loras=uses))
    assert np.abs(pixels(with_lora) - pixels(base)).mean() > 1
    merged = {k: v for m in (comps.unet, comps.text_encoder) for k, v in m.state_dict().items()}
    assert any(not torch.equal(before[k], merged[k]) for k in before)
    again, _ = render_one(renderer, job(tiny))  # no LoRA: the set is restored
    after = {k: v for m in (comps.unet, comps.text_encoder) for k, v in m.state_dict().items()}
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert np.array_equal(pixels(again), pixels(base))


def test_infotext_parses_back_to_the_settings(tiny: TinyModel, renderer: DiffusersRenderer) -> None:
    uses = (LoraUse("tiny_character_v1", 1.0, 1.0), LoraUse("tiny-style", 0.6, 0.6))
    j = job(tiny, seed=3447412781, loras=uses, cfg_scale=6.5)
    img, info = render_one(renderer, j)
    p = parse_infotext(info)
    assert p["Prompt"] == j.positive and p["Negative prompt"] == j.negative
    assert p["Steps"] == "3"
    assert p["Sampler"] == "DPM++ 2S a" and p["Schedule type"] == "Karras"
    assert p["CFG scale"] == "6.5" and p["Seed"] == "3447412781"
    assert (p["Size-1"], p["Size-2"]) == ("64", "64")
    assert p["Model hash"] == sha256_file(tiny.checkpoint)[:10] and p["Model"] == "tiny-sd"
    assert p["Clip skip"] == "2" and p["Denoising strength"] == "0.7"
    assert p["Hires upscale"] == "1.5" and p["Hires upscaler"] == "Latent"
    assert "Hires steps" not in p and "RNG" not in p and "VAE" not in p
    lora_dir = tiny.root / "models" / "Lora"
    # WebUI names a LoRA by its alias (ss_output_name) in infotext.
    assert parse_hash_list(p["Lora hashes"]) == {
        "tiny_character_v1": lora_hash(lora_dir / "tiny-character.safetensors"),
        "tiny-style": lora_hash(lora_dir / "tiny-style.safetensors"),
    }
    assert parse_hash_list(p["TI hashes"]) == {"EasyNegative": embedding_hash(tiny.embedding)}
    assert p["Version"].startswith("storyboard ")
    ident = renderer.identity(j)
    assert ident.model == sha256_file(tiny.checkpoint)
    assert ident.embeddings == {"EasyNegative": embedding_hash(tiny.embedding)}
    assert ident.device == "cpu/float32"


def test_external_vae_hires_steps_and_cpu_rng_in_infotext(
    tiny: TinyModel, renderer: DiffusersRenderer
) -> None:
    hr = HiresFix(scale=1.5, upscaler="Latent (nearest-exact)", denoising_strength=0.5, steps=2)
    j = job(tiny, vae="tiny-vae", hires=hr, noise_source="cpu", clip_skip=1, negative="")
    img, info = render_one(renderer, j)
    p = parse_infotext(info)
    assert p["VAE hash"] == sha256_file(tiny.vae)[:10] and p["VAE"] == "tiny-vae.safetensors"
    assert p["Hires steps"] == "2" and p["RNG"] == "CPU" and "Clip skip" not in p and "TI hashes" not in p
    assert p["Denoising strength"] == "0.5" and p["Hires upscaler"] == "Latent (nearest-exact)"
    assert img.size == (96, 96)


def test_batch_of_two_matches_each_alone(
    tiny: TinyModel, renderer: DiffusersRenderer, base_png: bytes
) -> None:
    a, b = job(tiny, pid="a"), job(tiny, seed=12, pid="b", positive="1boy, guitar")
    alone = [Image.open(io.BytesIO(base_png)), render_one(renderer, b)[0]]
    # A fresh renderer: also shows that nothing carries over between renderers.
    batched = DiffusersRenderer(renderer.base_dir, quiet=True, device="cpu", batch_size=2)
    out = list(batched.render([a, b]))
    assert [o.job.panel_id for o in out] == ["a", "b"]
    for o, ref in zip(out, alone, strict=True):
        # Batched float math may differ in the last bits; allow one 8-bit level.
        assert np.abs(pixels(o.image) - pixels(ref)).max() <= 1


def test_hires_output_size(tiny: TinyModel, renderer: DiffusersRenderer) -> None:
    # (The latent upscalers' sizes are checked by the other tests: 64x64 -> 96x96.)
    hr = HiresFix(scale=1.5, upscaler="Lanczos", denoising_strength=0.6)
    img, _ = render_one(renderer, job(tiny, width=64, height=96, hires=hr))
    assert img.size == (96, 144)
    plain, _ = render_one(renderer, job(tiny, width=64, height=96, hires=None))
    assert plain.size == (64, 96)


def test_missing_model_fails_before_loading(
    tiny: TinyModel, story_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import storyboard.models.load as load

    def refuse(*a: Any, **k: Any) -> None:
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(load, "load_pipeline_components", refuse)
    r = DiffusersRenderer(story_dir, quiet=True, device="cpu")
    with pytest.raises(ModelError) as err:
        r.check([job(tiny, model="tiny-sdd")])
    assert "tiny-sdd" in err.value.message and "tiny-sd" in err.value.message.split("Closest names:")[1]
    with pytest.raises(ModelError, match="tiny_characterr"):
        r.check([job(tiny, loras=(LoraUse("tiny_characterr", 1.0, 1.0),))])


def test_lora_for_another_model_family_is_refused(tiny: TinyModel, story_dir: Path, tmp_path: Path) -> None:
    from storyboard.models.lora_write import write_kohya_lora

    folder = tmp_path / "loras"
    folder.mkdir()
    from transformers import CLIPTextConfig, CLIPTextModel

    from storyboard.models.tiny import TEXT_CONFIG

    te = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG))
    write_kohya_lora(folder / "xl-style.safetensors", None, te, base_model_version="sdxl_base_v1-0")
    s = settings(tiny).model_copy(
        update={"folders": settings(tiny).folders.model_copy(update={"loras": [folder]})}
    )
    j = replace(job(tiny), loras=(LoraUse("xl-style", 1.0, 1.0),), settings=s)
    with pytest.raises(ModelError, match="SDXL"):
        DiffusersRenderer(story_dir, quiet=True, device="cpu").check([j])


DEMO = """\
title: The Garden Concert
language: en
characters:
  iku:
    name: Iku
    lora: tiny_character_v1
    weight: 1
    triggers: [1girl, iku nakatani]
    prompt: short black hair, school uniform
  haru:
    name: Haru
    lora: tiny-style
    weight: 0.8
    triggers: [1boy, haru]
style:
  loras:
    - lora: tiny-style
      weight: 0.6
  prompt: chibi, cute
  negative: greyscale, monochrome
render:
  model: tiny-sd
  sampler: DPM++ 2S a Karras
  steps: 3
  cfg_scale: 7
  width: 64
  height: 96
  clip_skip: 2
  hires: {scale: 2, upscaler: Latent, denoising_strength: 0.7}
  quality: (masterpiece), (best quality)
  negative: EasyNegative, (worst quality, low quality:1.4)
  webui_root: {root}
layout: {formats: [pdf], page_numbers: false}
pages:
  - panels:
      - id: gate
        scene: (full body:1.2), school gate, morning
        characters: [iku]
        caption: Monday.
      - id: garden
        scene: playing guitar, flower garden
        characters: [haru]
        dialogue:
          - text: Strum!
            kind: sfx
  - panels:
      - id: meet
        scene: flower garden, waving, two people
        characters: [iku, haru]
        seed: 3447412781
        dialogue:
          - speaker: haru
            text: Oh! You heard that?
"""


def test_demo_story_builds_to_pdf(tiny: TinyModel, tmp_path: Path) -> None:
    from pypdf import PdfReader

    story = tmp_path / "demo.yaml"
    story.write_text(DEMO.replace("{root}", str(tiny.root)))
    loaded = load_story(story)
    renderer = checked_renderer(loaded)
    report = build(loaded, tmp_path / "out", renderer)
    assert sorted(report.rendered) == ["garden", "gate", "meet"]
    pdfs = [p for p in report.layout_files if p.suffix == ".pdf"]
    assert pdfs and len(PdfReader(str(pdfs[0])).pages) >= 2
    panel = next((tmp_path / "out").rglob("meet.png"))
    img = Image.open(panel)
    assert img.size == (128, 192)
    p = parse_infotext(img.info["parameters"])
    assert p["Seed"] == "3447412781" and p["Hires upscale"] == "2"
    assert set(parse_hash_list(p["Lora hashes"])) == {"tiny_character_v1", "tiny-style"}
    assert "EasyNegative" in parse_hash_list(p["TI hashes"])
    # Rebuilding reuses every panel: identity() is stable.
    again = build(loaded, tmp_path / "out", checked_renderer(loaded))
    assert again.rendered == [] and sorted(again.reused) == ["garden", "gate", "meet"]


def test_from_story_names_a_missing_model(tiny: TinyModel, tmp_path: Path) -> None:
    story = tmp_path / "demo.yaml"
    story.write_text(
        DEMO.replace("{root}", str(tiny.root)).replace("model: tiny-sd", "model: AnythingV5Ink_ink")
    )
    with pytest.raises(ModelError, match="AnythingV5Ink_ink"):
        checked_renderer(load_story(story))


def test_sdxl_checkpoint_renders(tmp_path: Path) -> None:
    from storyboard.models.tiny import write_tiny_sdxl_checkpoint

    root = tmp_path / "webui"
    ckpt = root / "models" / "Stable-diffusion" / "tiny-xl.safetensors"
    write_tiny_sdxl_checkpoint(ckpt)
    s = RenderSettings(
        model="tiny-xl",
        sampler="Euler a",
        steps=3,
        width=64,
        height=64,
        hires=HiresFix(scale=1.5),
        webui_root=root,
    )
    r = DiffusersRenderer(tmp_path, quiet=True, device="cpu")
    jobs = [
        PanelJob("a", 1, 1, "1girl, smile", "", (), 5, s),
        PanelJob("b", 1, 2, "1boy", "lowres", (), 5, s),
    ]
    out = list(r.render(jobs))
    assert [o.image.size for o in out] == [(96, 96), (96, 96)]
    assert all(pixels(o.image).std() > 1 for o in out)
    # Same seed, different prompts (and an empty vs a real negative): different pictures.
    assert np.abs(pixels(out[0].image) - pixels(out[1].image)).mean() > 1
    p = parse_infotext(out[0].infotext)
    assert p["Model hash"] == sha256_file(ckpt)[:10] and p["Sampler"] == "Euler a" and "Negative prompt" in p


def test_prompt_editing_switches_conditioning_mid_sampling(
    tiny: TinyModel, renderer: DiffusersRenderer
) -> None:
    def img(prompt: str) -> np.ndarray:
        image, _ = render_one(renderer, job(tiny, positive=prompt, steps=4, hires=None))
        return pixels(image)

    cat, dog = img("1girl, cat"), img("1girl, dog")
    # a switch after the last step never happens: exactly the unedited prompt
    assert np.array_equal(img("1girl, [cat:dog:100]"), cat)
    # [cat:dog:0.5] uses cat for the first half of the model calls, then dog. Rendering is
    # deterministic, so equal to neither means the conditioning changed after sampling began.
    half = img("1girl, [cat:dog:0.5]")
    assert not np.array_equal(half, cat) and not np.array_equal(half, dog)
    assert not np.array_equal(cat, dog)
    # alternation differs from both words too
    alt = img("1girl, [cat|dog]")
    assert not np.array_equal(alt, cat) and not np.array_equal(alt, dog)


def test_esrgan_hires_upscaler_from_the_upscaler_folder(
    tiny: TinyModel, renderer: DiffusersRenderer, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    from storyboard.render.upscale import RRDBNet

    torch.manual_seed(5)
    net = RRDBNet(num_feat=8, num_block=1, num_grow_ch=4)
    folder = tmp_path / "ESRGAN"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, folder / "tiny_esrgan.safetensors")
    up = settings(tiny).folders.model_copy(update={"upscalers": [folder]})
    hr = HiresFix(scale=1.5, upscaler="tiny_esrgan", denoising_strength=0.6)
    j = job(tiny, width=64, height=96, hires=hr, folders=up)
    img, info = render_one(renderer, j)
    assert img.size == (96, 144)
    assert parse_infotext(info)["Hires upscaler"] == "tiny_esrgan"
    assert renderer.identity(j).upscaler == sha256_file(folder / "tiny_esrgan.safetensors")
    lanczos_hr = hr.model_copy(update={"upscaler": "Lanczos"})
    lanczos, _ = render_one(renderer, job(tiny, width=64, height=96, folders=up, hires=lanczos_hr))
    assert np.abs(pixels(img) - pixels(lanczos)).max() > 10
    with pytest.raises(ModelError) as err:
        renderer.check([job(tiny, folders=up, hires=hr.model_copy(update={"upscaler": "tiny_esrgn"}))])
    assert "tiny_esrgan" in err.value.message.split("Closest names:")[1]
    # WebUI's display name finds the Real-ESRGAN file it stands for.
    anime = folder / "RealESRGAN_x4plus_anime_6B.safetensors"
    save_file({k: v.contiguous() * 2 for k, v in net.state_dict().items()}, anime)
    renderer.resolver.models(j.settings).registry.refresh()
    named = job(tiny, folders=up, hires=hr.model_copy(update={"upscaler": "R-ESRGAN 4x+ Anime6B"}))
    assert renderer.identity(named).upscaler == sha256_file(anime)


@pytest.mark.parametrize(
    "sampler,schedule,written",
    [
        ("Euler a", "Automatic", "Automatic"),
        ("DPM++ 2M", "Automatic", "Karras"),
        ("DPM++ 3M SDE", "Automatic", "Exponential"),
        ("DPM++ 2M", "Uniform", "Uniform"),
        ("DPM++ 2M Karras", "Automatic", "Karras"),
    ],
)
def test_schedule_type_is_written_as_resolved(
    tiny: TinyModel, renderer: DiffusersRenderer, sampler: str, schedule: str, written: str
) -> None:
    # WebUI's get_sigmas overwrites "Schedule type" with the schedule it resolves: a sampler's default
    # (DPM++ 2M: Karras) for "Automatic"; "Automatic" stays only where the sampler has none (Euler a).
    # An old combined name like "DPM++ 2M Karras" is split into sampler and schedule first.
    _, info = render_one(renderer, job(tiny, sampler=sampler, schedule=schedule, steps=2, hires=None))
    p = parse_infotext(info)
    assert p["Schedule type"] == written and p["Sampler"] == sampler.removesuffix(" Karras")
