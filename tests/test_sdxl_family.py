"""The SDXL family (issue 18): family detection, v-prediction + zero terminal SNR as WebUI does it,
CFG rescale, SDXL size conditioning, both text encoders' LoRA weights, presets, key layouts."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from storyboard.errors import ModelError
from storyboard.jobs import PanelJob
from storyboard.models.family import checkpoint_family, lora_family
from storyboard.models.tiny import (
    TinySdxlModel,
    write_tiny_model,
    write_tiny_sd2_checkpoint,
    write_tiny_sdxl_checkpoint,
    write_tiny_sdxl_model,
)
from storyboard.render.denoiser import CFGDenoiser, CompVisDenoiser, rescale_zero_terminal_snr_abar
from storyboard.render.infotext import parse_infotext
from storyboard.story.plan import plan
from storyboard.story.schema import HiresFix, RenderSettings

# WebUI's value for the last alphas_cumprod after the rescale (modules/sd_models.py).
WEBUI_LAST_ABAR = 4.8973451890853435e-08


@pytest.fixture(scope="module")
def xl(tmp_path_factory: pytest.TempPathFactory) -> TinySdxlModel:
    return write_tiny_sdxl_model(tmp_path_factory.mktemp("tiny-sdxl"))


def sd_alphas_float32() -> np.ndarray:
    """SD's scaled-linear alphas_cumprod the way ldm registers it: float64 math, stored as float32."""
    betas = np.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=np.float64) ** 2
    return np.cumprod(1.0 - betas).astype(np.float32)


def webui_ztsnr_float32(acp: np.ndarray) -> np.ndarray:
    """WebUI's rescale_zero_terminal_snr_abar step by step on a float32 array (its buffer's dtype)."""
    root = np.sqrt(acp.astype(np.float32))
    first, last = root[0], root[-1]
    root = (root - last) * np.float32(first / (first - last))
    out = root * root
    out[-1] = np.float32(WEBUI_LAST_ABAR)
    return out


# Zero terminal SNR ----------------------------------------------------------------------------------


def test_ztsnr_rescale_equals_webui_formula_done_independently() -> None:
    acp = sd_alphas_float32()
    ours = rescale_zero_terminal_snr_abar(torch.from_numpy(acp)).numpy()
    assert ours.dtype == np.float32
    # Same float32 operations in the same order. torch's vectorised sqrt and numpy's round a few
    # elements differently (1 ulp), and the shift amplifies that near the end, so compare absolutely.
    np.testing.assert_allclose(ours, webui_ztsnr_float32(acp), rtol=0, atol=2e-7)
    # And the formula itself in float64 (the paper's algorithm 1, abar_T replaced by WebUI's constant).
    root = np.sqrt(acp.astype(np.float64))
    exact = ((root - root[-1]) * root[0] / (root[0] - root[-1])) ** 2
    np.testing.assert_allclose(ours[:-1], exact[:-1], rtol=0, atol=2e-7)
    assert ours[0] == pytest.approx(acp[0], rel=1e-6)  # the first step keeps its value
    assert ours[-1] == np.float32(WEBUI_LAST_ABAR)
    assert ours[-2] > ours[-1]  # still decreasing at the end


def load_tiny(path: Path):  # noqa: ANN201
    from storyboard.models.load import load_pipeline_components
    from storyboard.render.txt2img import LoadedModel

    comps = load_pipeline_components(path, device="cpu")
    den = CompVisDenoiser(comps.unet, comps.alphas_cumprod, prediction_type=comps.prediction_type)
    return LoadedModel(comps, None, den, torch.device("cpu"))  # type: ignore[arg-type]


def test_vpred_ztsnr_checkpoint_sigmas_equal_webui(xl: TinySdxlModel) -> None:
    model = load_tiny(xl.vpred_checkpoint)
    assert model.components.prediction_type == "v_prediction" and model.components.ztsnr
    den = model.for_settings(RenderSettings()).denoiser
    assert den.prediction_type == "v_prediction"
    # k-diffusion's sigma table sqrt((1 - abar) / abar), compared through abar = 1 / (1 + sigma^2)
    # (float32 rounding of 1 - abar makes small sigmas only good to ~1e-4 relative).
    abar = webui_ztsnr_float32(sd_alphas_float32()).astype(np.float64)
    back = 1 / (1 + den.sigmas.double().numpy() ** 2)
    np.testing.assert_allclose(back, abar, rtol=0, atol=1e-6)
    np.testing.assert_allclose(den.sigmas.double().numpy(), np.sqrt((1 - abar) / abar), rtol=2e-4)
    # The last sigma is finite and huge (WebUI's constant instead of abar = 0, i.e. sigma = inf).
    assert den.sigma_max == pytest.approx(math.sqrt((1 - WEBUI_LAST_ABAR) / WEBUI_LAST_ABAR), rel=1e-5)
    assert 4518 < den.sigma_max < 4519
    # The samplers' range follows: a Karras schedule starts at that sigma and ends at sigma_min.
    from storyboard.render.sampling import parse_sampler_name

    ks = parse_sampler_name("DPM++ 2M Karras").sigmas(10, den.sigmas, torch.device("cpu"))
    assert float(ks[0]) == pytest.approx(den.sigma_max, rel=1e-5)
    assert float(ks[-2]) == pytest.approx(den.sigma_min, rel=1e-5) and float(ks[-1]) == 0
    # The plain file has neither marker: eps-prediction on SD's schedule.
    plain = load_tiny(xl.checkpoint)
    assert plain.for_settings(RenderSettings()) is plain
    assert plain.denoiser.prediction_type == "epsilon"
    assert plain.denoiser.sigma_max == pytest.approx(14.6146, rel=1e-4)


def test_story_settings_force_or_drop_the_markers(xl: TinySdxlModel) -> None:
    marked = load_tiny(xl.vpred_checkpoint)
    # Both markers overridden off: the loaded view as stored.
    off = marked.for_settings(RenderSettings(v_pred=False, ztsnr=False))
    assert off.denoiser.prediction_type == "epsilon"
    assert torch.equal(off.denoiser.alphas_cumprod, marked.components.alphas_cumprod)
    plain = load_tiny(xl.checkpoint)
    forced = plain.for_settings(RenderSettings(v_pred=True, ztsnr=True))
    assert forced.denoiser.prediction_type == "v_prediction"
    assert torch.equal(forced.denoiser.sigmas, marked.for_settings(RenderSettings()).denoiser.sigmas)
    assert plain.for_settings(RenderSettings(v_pred=True, ztsnr=True)).denoiser is forced.denoiser  # cached


# CFG rescale ------------------------------------------------------------------------------------------


def test_cfg_rescale_matches_the_extension_formula() -> None:
    gen = torch.Generator().manual_seed(3)
    d_cond = torch.randn(2, 4, 6, 5, generator=gen, dtype=torch.float64)
    d_uncond = torch.randn(2, 4, 6, 5, generator=gen, dtype=torch.float64) * 0.5

    def model(x, sigma, cond, added_cond_kwargs=None):  # noqa: ANN001, ANN202
        # cond rows carry 1, uncond rows 0: return the matching fixed prediction per image.
        is_cond = cond[:, 0, 0].bool()[:, None, None, None]
        n = len(x) // 2
        return torch.where(is_cond, d_cond.repeat(n, 1, 1, 1), d_uncond.repeat(n, 1, 1, 1))

    cond, uncond = torch.ones(2, 3, 8, dtype=torch.float64), torch.zeros(2, 3, 8, dtype=torch.float64)
    x, sigma = torch.zeros(2, 4, 6, 5, dtype=torch.float64), torch.full((2,), 3.0, dtype=torch.float64)
    phi, scale = 0.7, 6.0
    out = CFGDenoiser(model, cond, uncond, scale, cfg_rescale=phi)(x, sigma).numpy()
    plain = CFGDenoiser(model, cond, uncond, scale)(x, sigma).numpy()
    c, u = d_cond.numpy(), d_uncond.numpy()
    for i in range(2):
        xcfg = u[i] + (c[i] - u[i]) * scale
        np.testing.assert_allclose(plain[i], xcfg, rtol=1e-12)
        # torch.std is the sample standard deviation (ddof=1) over the whole image.
        rescaled = xcfg * (np.std(c[i], ddof=1) / np.std(xcfg, ddof=1))
        np.testing.assert_allclose(out[i], phi * rescaled + (1 - phi) * xcfg, rtol=1e-12)


# SDXL conditioning ------------------------------------------------------------------------------------


def test_sdxl_time_ids_are_each_pass_size(xl: TinySdxlModel, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

    from storyboard.render.engine import DiffusersRenderer

    seen: list[tuple[float, ...]] = []
    forward = UNet2DConditionModel.forward

    def spy(self, sample, timestep, encoder_hidden_states, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        for row in kwargs["added_cond_kwargs"]["time_ids"].tolist():
            seen.append(tuple(row))
        return forward(self, sample, timestep, encoder_hidden_states, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", spy)
    # 64 x 96 at 1.3x: WebUI's hires size is int(64 * 1.3) x int(96 * 1.3) = 83 x 124, not a
    # multiple of 8; the latent is 10 x 15, but the conditioning says 83 x 124 as WebUI's does.
    s = RenderSettings(
        model="tiny-sdxl", sampler="Euler", steps=2, width=64, height=96, webui_root=xl.root,
        hires=HiresFix(scale=1.3, denoising_strength=0.5),
    )  # fmt: skip
    r = DiffusersRenderer(xl.root, quiet=True, device="cpu")
    (out,) = list(r.render([PanelJob("a", 1, 1, "1girl", "lowres", (), 1, s)]))
    assert set(seen) == {(96, 64, 0, 0, 96, 64), (124, 83, 0, 0, 124, 83)}
    assert out.image.size == (80, 120)


def test_sdxl_lora_merges_into_both_text_encoders(xl: TinySdxlModel) -> None:
    """kohya lora_te1_ / lora_te2_ (and LDM-named lora_unet_) weights land where WebUI puts them:
    W + multiplier * alpha / rank * up @ down, checked against float64 for one layer of each."""
    from storyboard.models.lora import LoraPatcher, read_lora
    from storyboard.models.lora_keys import build_key_map

    model = load_tiny(xl.checkpoint)
    comps = model.components
    modules = {"unet": comps.unet, "text_encoder": comps.text_encoder, "text_encoder_2": comps.text_encoder_2}
    keymap = build_key_map(modules)
    raw = load_file(str(xl.loras[0]))
    names = sorted({k.split(".")[0] for k in raw})
    assert {n.split("_")[1] for n in names} == {"unet", "te1", "te2"}
    picks = [next(n for n in names if n.startswith(p)) for p in ("lora_te1_", "lora_te2_", "lora_unet_")]
    before = {n: keymap[n].weight.detach().double().clone() for n in picks}
    patcher = LoraPatcher(modules, model_kind="sdxl")
    patcher.apply([(read_lora(xl.loras[0]), 0.8, 0.8)])
    for n in picks:
        up, down = raw[f"{n}.lora_up.weight"].double(), raw[f"{n}.lora_down.weight"].double()
        alpha = float(raw[f"{n}.alpha"])
        delta = (up.flatten(1) @ down.flatten(1)).reshape(before[n].shape) * (0.8 * alpha / down.shape[0])
        np.testing.assert_allclose(keymap[n].weight.double().numpy(), (before[n] + delta).numpy(), atol=2e-6)
    assert keymap[picks[1]].component == "text_encoder_2"
    patcher.restore()
    assert all(torch.equal(keymap[n].weight.double(), before[n]) for n in picks)


# Families ---------------------------------------------------------------------------------------------


def test_family_detection_on_each_layout(tmp_path: Path, xl: TinySdxlModel) -> None:
    sd1 = write_tiny_model(tmp_path / "sd1", loras=False).checkpoint
    sd2 = write_tiny_sd2_checkpoint(tmp_path / "sd2.safetensors")
    pony = write_tiny_sdxl_checkpoint(tmp_path / "ponyDiffusionV6XL_v6.safetensors").checkpoint
    got = {p.name: checkpoint_family(p) for p in (sd1, sd2, xl.checkpoint, xl.vpred_checkpoint, pony)}
    assert [(f.architecture, f.family, f.family_source, f.v_pred, f.ztsnr) for f in got.values()] == [
        ("sd1", None, None, False, False),
        ("sd2", None, None, False, False),
        ("sdxl", "illustrious", "modelspec.title", False, False),
        ("sdxl", "noobai", "modelspec.title", True, True),
        ("sdxl", "pony", "file name", False, False),
    ]
    assert got[xl.vpred_checkpoint.name].label == "SDXL (NoobAI, v-pred, ztsnr)"
    # Metadata outranks the file name; only SDXL files get a family.
    assert lora_family("sdxl", {"ss_sd_model_name": "noobaiXL.safetensors"}, "pony_style").family == "noobai"
    assert lora_family("sd1", {}, "pony_style").family is None
    # SD2 files are named as such instead of failing on missing weights.
    from storyboard.models.load import load_pipeline_components

    with pytest.raises(ModelError, match="Stable Diffusion 2.x"):
        load_pipeline_components(sd2)


def test_lora_of_another_architecture_is_refused_before_rendering(tmp_path: Path, xl: TinySdxlModel) -> None:
    from storyboard.render.engine import DiffusersRenderer

    sd1 = write_tiny_model(tmp_path / "sd1")
    lora_dir = xl.root / "models" / "Lora"
    (lora_dir / "sd1-char.safetensors").write_bytes(sd1.loras[0].read_bytes())
    s = RenderSettings(model="tiny-sdxl", steps=1, width=64, height=64, webui_root=xl.root)
    job = PanelJob("a", 1, 1, "x, <lora:sd1-char:1>", "", (), 1, s)
    from storyboard.jobs import LoraUse

    job = PanelJob("a", 1, 1, "x, <lora:sd1-char:1>", "", (LoraUse("sd1-char", 1.0, 1.0),), 1, s)
    r = DiffusersRenderer(xl.root, quiet=True, device="cpu")
    try:
        with pytest.raises(ModelError, match=r"trained for SD 1\.x but the model is SDXL"):
            r.check([job])
        assert r._model is None  # refused while checking: nothing was loaded
    finally:
        (lora_dir / "sd1-char.safetensors").unlink()


def test_models_list_and_lora_inspect_report_families(xl: TinySdxlModel) -> None:
    from typer.testing import CliRunner

    from storyboard.cli import app

    res = CliRunner().invoke(app, ["models", "list", "--webui-root", str(xl.root)])
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line for line in res.output.splitlines() if line.startswith("  ")}
    assert "SDXL (NoobAI, v-pred, ztsnr)" in lines["tiny-sdxl-vpred"]
    assert "SDXL (Illustrious)" in lines["tiny-sdxl"] and "v-pred" not in lines["tiny-sdxl"]
    assert (
        "SDXL (Illustrious)" in lines["tiny-xl-character"]
        and "triggers: tinychar" in lines["tiny-xl-character"]
    )
    assert "triggers: tiny style, flat color" in lines["tiny-xl-style"]
    assert "tiny-sdxl-vae-fp16-fix" in lines
    res = CliRunner().invoke(app, ["lora", "inspect", str(xl.loras[0]), "--no-hash"])
    assert "base model:     SDXL (Illustrious)" in res.output
    assert "trigger words:  tinychar" in res.output


# Key layouts ------------------------------------------------------------------------------------------


def test_sd1_text_encoder_without_text_model_level_loads(tmp_path: Path) -> None:
    """`cond_stage_model.transformer.embeddings...` (no `text_model.`), a layout WebUI renames on load."""
    from storyboard.models.load import load_pipeline_components

    tiny = write_tiny_model(tmp_path / "m", loras=False)
    raw = load_file(str(tiny.checkpoint))
    flat = {k.replace("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer."): v
            for k, v in raw.items()}  # fmt: skip
    assert not any(".text_model." in k for k in flat)
    other = tmp_path / "flat.safetensors"
    from safetensors import safe_open

    with safe_open(str(tiny.checkpoint), "pt") as fh:
        meta = fh.metadata()
    save_file(flat, str(other), metadata=meta)
    a = load_pipeline_components(tiny.checkpoint).text_encoder.state_dict()
    b = load_pipeline_components(other).text_encoder.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# Presets ----------------------------------------------------------------------------------------------

PRESET_STORY = """\
title: Presets
characters:
  ann: {lora: ann_v1, triggers: [ann]}
render: {preset: PRESET, model: tiny-sdxl EXTRA}
pages:
  - panels:
      - {id: a, scene: one, characters: [ann]}
"""


def planned(tmp_path: Path, preset: str, extra: str = "") -> PanelJob:
    from storyboard.story.load import load_story
    from storyboard.story.plan import plan

    p = tmp_path / f"{preset}.yaml"
    p.write_text(PRESET_STORY.replace("PRESET", preset).replace(" EXTRA", extra))
    loaded = load_story(p)
    # The preset's width x height is the pixel budget; compare it, not the frame-shaped render size.
    budget = loaded.panel_render[plan(loaded)[0].panel_id]
    return replace(plan(loaded)[0], settings=budget)


def test_presets_compose_exact_prompts(tmp_path: Path) -> None:
    pony = planned(tmp_path, "pony")
    assert (
        pony.positive
        == "score_9, score_8_up, score_7_up, score_6_up, score_5_up, score_4_up, ann, one, <lora:ann_v1:1>"
    )
    assert pony.negative == "score_6, score_5, score_4"
    assert (pony.settings.clip_skip, pony.settings.width, pony.settings.height) == (2, 832, 1216)
    ill = planned(tmp_path, "illustrious")
    assert (
        ill.positive
        == "masterpiece, best quality, amazing quality, very aesthetic, absurdres, ann, one, <lora:ann_v1:1>"
    )
    assert ill.negative.startswith("worst quality, low quality, lowres, bad anatomy")
    sd15 = planned(tmp_path, "sd15-anime")
    assert sd15.positive == "(masterpiece), (best quality), ann, one, <lora:ann_v1:1>"
    assert (sd15.settings.clip_skip, sd15.settings.width, sd15.settings.height) == (2, 512, 768)
    # Anything the story sets wins over the preset.
    own = planned(tmp_path, "noobai", ", quality: 'best', width: 1024, clip_skip: 3")
    assert own.positive == "best, ann, one, <lora:ann_v1:1>"
    assert (own.settings.width, own.settings.height, own.settings.clip_skip) == (1024, 1216, 3)
    assert own.negative.startswith("worst quality, old, early")
    with pytest.raises(Exception, match="preset"):
        planned(tmp_path, "anything-v5")


def test_prompts_command_shows_the_preset_tags(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from storyboard.cli import app

    planned(tmp_path, "pony")
    res = CliRunner().invoke(app, ["prompts", str(tmp_path / "pony.yaml"), "--json"])
    assert res.exit_code == 0, res.output
    assert "score_9, score_8_up" in res.output and "score_6, score_5, score_4" in res.output


def test_default_settings_keep_every_job_hash(tmp_path: Path) -> None:
    job = planned(tmp_path, "pony")
    spec = job.pixel_spec()
    assert not {"v_pred", "ztsnr", "cfg_rescale"} & set(spec)
    from dataclasses import replace

    forced = replace(job, settings=job.settings.model_copy(update={"ztsnr": True, "cfg_rescale": 0.5}))
    assert forced.pixel_spec()["ztsnr"] is True and forced.pixel_spec()["cfg_rescale"] == 0.5
    assert forced.job_hash() != job.job_hash() if hasattr(job, "job_hash") else True


# The SDXL demo end to end -----------------------------------------------------------------------------


def test_tiny_sdxl_demo_builds_on_cpu(tmp_path: Path, xl: TinySdxlModel) -> None:
    from PIL import Image

    from storyboard.app.build import build
    from storyboard.render.engine import DiffusersRenderer
    from storyboard.story.load import load_story

    demo = Path(__file__).resolve().parents[1] / "stories" / "tiny-sdxl-demo.yaml"
    story = tmp_path / "demo.yaml"
    story.write_text(demo.read_text().replace("../output/tiny-sdxl", str(xl.root)))
    loaded = load_story(story)
    build(loaded, tmp_path / "out", DiffusersRenderer(tmp_path, quiet=True, device="cpu"))
    panels = sorted((tmp_path / "out").rglob("panels/*.png"))
    assert [p.stem for p in panels] == ["gate", "meet"]
    jobs = {j.panel_id: j for j in plan(loaded)}  # each shaped to its frame at the 64x96 budget
    for p in panels:
        image = Image.open(p)
        assert image.size == jobs[p.stem].output_size
        info = parse_infotext(image.info["parameters"])
        assert info["Noise Schedule"] == "Zero Terminal SNR" and info["CFG Rescale"] == "0.7"
        assert info["Model"] == "tiny-sdxl-vpred" and info["VAE"] == "tiny-sdxl-vae-fp16-fix.safetensors"
        w, h = jobs[p.stem].size
        assert (info["Size-1"], info["Size-2"], info["Hires upscale"]) == (str(w), str(h), "1.5")
        assert info["Prompt"].startswith("masterpiece, best quality, newest, absurdres, highres, very awa, ")
        assert "tiny_xl_character" in info["Lora hashes"] and "tiny-xl-style" in info["Lora hashes"]
