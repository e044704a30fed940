"""`inspect_lora` facts against the file it was written as, and the `storyboard lora inspect` CLI."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file
from test_lora_fixtures import tiny_text_encoder, tiny_unet
from typer.testing import CliRunner

from storyboard.commands.lora import app
from storyboard.errors import ModelError
from storyboard.models.lora_inspect import inspect_lora, top_tags
from storyboard.models.lora_write import write_kohya_lora


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STORYBOARD_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("loras")
    unet, te = tiny_unet(), tiny_text_encoder()
    write_kohya_lora(
        d / "hero.safetensors",
        unet,
        te,
        kind="lora",
        rank=4,
        alpha=1.0,
        metadata={"ss_output_name": "hero_v2", "modelspec.trigger_phrase": "hrx hero"},
        tag_frequency={"10_hrx": {"hrx": 40, "1boy": 30, "red cape": 12}, "5_extra": {"1boy": 15, "solo": 3}},
    )
    write_kohya_lora(
        d / "sub" / "style.safetensors", unet, None, kind="locon", rank=8, alpha=4.0, with_hash=False
    )
    write_kohya_lora(
        d / "kron.safetensors", unet, te, kind="lokr", rank=4, base_model_version="sdxl_base_v1-0"
    )
    return d


def test_inspect_reports_what_was_written(lora_dir):
    path = lora_dir / "hero.safetensors"
    info = inspect_lora(path)
    assert info.base_model == "SD 1.x" and info.network_type == "LoRA"
    assert info.rank == 4 and info.alpha == 1.0 and info.conv_rank is None
    assert (info.modules_unet, info.modules_text_encoder, info.modules_text_encoder_2) == (48, 12, 0)
    data = path.read_bytes()
    assert info.sha256 == hashlib.sha256(data).hexdigest() and info.autov2 == info.sha256[:10]
    header = int.from_bytes(data[:8], "little")
    tensor_hash = hashlib.sha256(data[8 + header :]).hexdigest()
    assert info.addnet_hash == tensor_hash
    assert info.lora_hash == tensor_hash[:12]  # sshs_model_hash written by the trainer = the same
    assert info.output_name == "hero_v2" and info.trigger_phrase == "hrx hero"
    assert info.top_tags[:3] == [("1boy", 45), ("hrx", 40), ("red cape", 12)]
    assert info.resolution == "(512, 512)"


def test_inspect_locon_and_lokr(lora_dir):
    style = inspect_lora(lora_dir / "sub" / "style.safetensors")
    assert style.network_type == "LoCon" and style.modules_text_encoder == 0
    assert style.rank == 8 and style.conv_rank == 8 and style.conv_alpha == 4.0
    # no sshs_model_hash in the metadata: WebUI falls back to the tensor-bytes hash
    assert style.addnet_hash is not None and style.lora_hash == style.addnet_hash[:12]
    kron = inspect_lora(lora_dir / "kron.safetensors")
    assert kron.network_type == "LoKr" and kron.base_model == "SDXL"


def test_top_tags_ignores_malformed_metadata():
    assert top_tags({"ss_tag_frequency": "not json"}) == []
    assert top_tags({"ss_tag_frequency": json.dumps({"a": {"x": 2, "y": "bad"}, "b": [1]})}) == [("x", 2)]


def test_inspect_rejects_non_lora(tmp_path):
    bogus = tmp_path / "bogus.safetensors"
    save_file({"model.diffusion_model.out.2.weight": torch.zeros(2, 2)}, str(bogus))
    with pytest.raises(ModelError, match="no LoRA modules"):
        inspect_lora(bogus)


def test_cli_inspect_by_alias_and_json(lora_dir):
    runner = CliRunner()
    result = runner.invoke(app, ["inspect", "hero_v2", "--lora-dir", str(lora_dir), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (
        data["name"] == "hero" and data["rank"] == 4 and data["top_tags"][0] == {"tag": "1boy", "count": 45}
    )
    result = runner.invoke(app, ["inspect", "style", "--lora-dir", str(lora_dir)])
    assert result.exit_code == 0, result.output
    assert "network:        LoCon [networks.lora]" in result.output
    assert "rank:           8 (alpha 4)" in result.output
    result = runner.invoke(app, ["inspect", "nosuch", "--lora-dir", str(lora_dir)])
    assert isinstance(result.exception, ModelError) and "nosuch" in str(result.exception)
