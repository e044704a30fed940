"""`storyboard lora merge`: the saved model loads back and its weights are base + Σ w·ΔW."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from test_lora_core import expected_weights
from typer.testing import CliRunner

from storyboard.commands.lora import app
from storyboard.errors import ModelError
from storyboard.models.load import load_pipeline_components
from storyboard.models.lora_merge import parse_lora_spec


def check_merged(out, tiny, uses):
    base = load_pipeline_components(tiny.checkpoint)
    merged = load_pipeline_components(out)
    expected = expected_weights(base.unet, base.text_encoder, uses)
    assert len(expected) > 50
    for component in ("unet", "text_encoder"):
        base_params = dict(getattr(base, component).named_parameters())
        for name, param in getattr(merged, component).named_parameters():
            want = expected.get((component, name))
            if want is None:
                assert torch.equal(param, base_params[name]), f"{component}.{name}"
            else:
                torch.testing.assert_close(param.double(), want, rtol=1e-5, atol=1e-6)
    for name, param in merged.vae.named_parameters():
        assert torch.equal(param, dict(base.vae.named_parameters())[name])


def test_merge_single_file_by_name(tiny, tmp_path):
    out = tmp_path / "merged.safetensors"
    lora_dir = tiny.root / "models" / "Lora"
    result = CliRunner().invoke(
        app,
        [
            "merge", str(tiny.checkpoint), "--out", str(out),
            "--lora", "tiny_character_v1:0.8:0.5",  # by ss_output_name alias
            "--lora", "tiny-style:0.7",
            "--lora-dir", str(lora_dir),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "wrote single-file model" in result.output
    with safe_open(str(out), "pt") as f:
        meta = f.metadata()
        assert "model.diffusion_model.input_blocks.1.1.proj_in.weight" in set(f.keys())
    assert json.loads(meta["storyboard_merged_loras"])[0] == {
        "file": "tiny-character.safetensors",
        "te": 0.8,
        "unet": 0.5,
    }
    check_merged(
        out,
        tiny,
        [
            (lora_dir / "tiny-character.safetensors", 0.8, 0.5),
            (lora_dir / "tiny-style.safetensors", 0.7, 0.7),
        ],
    )


def test_merge_diffusers_folder(tiny, tmp_path):
    out = tmp_path / "merged-folder"
    lora = tiny.root / "models" / "Lora" / "tiny-style.safetensors"
    result = CliRunner().invoke(
        app, ["merge", str(tiny.checkpoint), "--out", str(out), "--lora", f"{lora}:1.3"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "model_index.json").is_file() and (out / "unet" / "config.json").is_file()
    check_merged(out, tiny, [(lora, 1.3, 1.3)])


def test_parse_lora_spec():
    assert parse_lora_spec("a") == parse_lora_spec("a:1")
    s = parse_lora_spec("dir/x.safetensors:0.5:-1e-1")
    assert (s.ref, s.te, s.unet) == ("dir/x.safetensors", 0.5, -0.1)
    assert parse_lora_spec("name:v2:0.4").ref == "name:v2"
    with pytest.raises(ModelError):
        parse_lora_spec(":0.5")
