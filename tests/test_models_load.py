from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

from storyboard.errors import ModelError
from storyboard.models.ldm_keys import (
    CLIP_PREFIX,
    UNET_PREFIX,
    VAE_PREFIX,
    diffusers_to_ldm_state_dict,
    text_encoder_key_to_ldm,
    unet_key_to_ldm,
    vae_key_to_ldm,
)
from storyboard.models.load import (
    CONFIG_METADATA_KEY,
    ModelComponents,
    detect_kind,
    load_pipeline_components,
    load_vae,
    resolve_dtype,
    shipped_config_dir,
)
from storyboard.models.tiny import TinyModel, write_tiny_model


@pytest.fixture(scope="module")
def from_folder(tiny: TinyModel) -> ModelComponents:
    return load_pipeline_components(tiny.diffusers_dir)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _assert_same(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype, k
        assert torch.equal(sa[k], sb[k]), k


def test_single_file_equals_diffusers_folder_offline(
    tiny: TinyModel, from_folder: ModelComponents, no_network: None
) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    single = load_pipeline_components(tiny.checkpoint)
    folder = load_pipeline_components(tiny.diffusers_dir)  # also under the socket guard
    _assert_same(folder.unet, from_folder.unet)
    assert single.kind == from_folder.kind == "sd1"
    _assert_same(single.unet, from_folder.unet)
    _assert_same(single.vae, from_folder.vae)
    _assert_same(single.text_encoder, from_folder.text_encoder)
    assert torch.equal(single.alphas_cumprod, from_folder.alphas_cumprod)
    assert single.prediction_type == "epsilon"
    assert single.text_encoder_2 is None and single.tokenizer_2 is None
    assert single.source_path == tiny.checkpoint
    # Shipped tokenizer (single file) and the folder's copy give the SD1.x ids.
    ids = [49406, 320, 1125, 539, 320, 2368, 49407]
    assert single.tokenizer("a photo of a cat").input_ids == ids
    assert from_folder.tokenizer("a photo of a cat").input_ids == ids


def test_loaded_weights_are_the_written_tensors(tiny: TinyModel, from_folder: ModelComponents) -> None:
    ldm = load_file(str(tiny.checkpoint))
    unet = from_folder.unet.state_dict()
    # Spot-check against hand-written LDM names (independent of the key mapper).
    assert torch.equal(
        unet["down_blocks.0.downsamplers.0.conv.weight"], ldm[UNET_PREFIX + "input_blocks.2.0.op.weight"]
    )
    assert torch.equal(
        unet["up_blocks.0.upsamplers.0.conv.weight"], ldm[UNET_PREFIX + "output_blocks.1.1.conv.weight"]
    )
    assert torch.equal(
        unet["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"],
        ldm[UNET_PREFIX + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"],
    )
    assert torch.equal(
        unet["mid_block.resnets.1.conv1.weight"], ldm[UNET_PREFIX + "middle_block.2.in_layers.2.weight"]
    )
    vae = from_folder.vae.state_dict()
    q = ldm[VAE_PREFIX + "decoder.mid.attn_1.q.weight"]
    assert q.ndim == 4 and torch.equal(vae["decoder.mid_block.attentions.0.to_q.weight"], q[:, :, 0, 0])
    assert torch.equal(
        vae["decoder.up_blocks.0.resnets.0.conv1.weight"],
        ldm[VAE_PREFIX + "decoder.up.3.block.0.conv1.weight"],
    )
    # transformers < 5.6 nests CLIPTextModel's weights under text_model.; newer ones do not.
    te = {k.removeprefix("text_model."): v for k, v in from_folder.text_encoder.state_dict().items()}
    assert torch.equal(te["final_layer_norm.weight"], ldm[CLIP_PREFIX + "final_layer_norm.weight"])
    assert (
        from_folder.vae.config.block_out_channels
        and 2 ** (len(from_folder.vae.config.block_out_channels) - 1) == 8
    )


def test_tiny_model_is_deterministic(tmp_path: Path, tiny: TinyModel) -> None:
    again = write_tiny_model(tmp_path / "again", seed=0)
    assert again.checkpoint.read_bytes() == tiny.checkpoint.read_bytes()
    assert again.embedding.read_bytes() == tiny.embedding.read_bytes()
    other = write_tiny_model(tmp_path / "other", seed=1, loras=False)
    assert other.checkpoint.read_bytes() != tiny.checkpoint.read_bytes()


def test_tiny_layout_is_a_webui_root(tiny: TinyModel) -> None:
    from storyboard.models.registry import ModelFolders, Registry

    reg = Registry(ModelFolders.from_webui_root(tiny.root))
    assert reg.find_checkpoint("tiny-sd").path == tiny.checkpoint
    assert reg.find_vae("tiny-vae").path == tiny.vae
    emb = load_file(str(reg.find_embedding("EasyNegative").path))
    assert list(emb) == ["emb_params"] and emb["emb_params"].shape == (8, 32)
    if tiny.loras:
        assert reg.find_lora("tiny_character_v1").path.name == "tiny-character.safetensors"


def test_config_dir_override_and_shipped_default(tiny: TinyModel, tmp_path: Path) -> None:
    # Without the metadata config the single file is read with the shipped SD1.5 config and does not fit.
    state = load_file(str(tiny.checkpoint))
    bare = tmp_path / "bare.safetensors"
    save_file(state, str(bare))
    with pytest.raises(ModelError, match="bare.safetensors") as info:
        load_pipeline_components(bare)
    assert "config_dir" in str(info.value)
    loaded = load_pipeline_components(bare, config_dir=tiny.config_dir)
    assert list(loaded.unet.config.block_out_channels) == [32, 64]


def test_pickle_refused_then_allowed(tiny: TinyModel, from_folder: ModelComponents, tmp_path: Path) -> None:
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(str(tiny.checkpoint))}, ckpt)
    with pytest.raises(ModelError) as info:
        load_pipeline_components(ckpt, config_dir=tiny.config_dir)
    msg = str(info.value)
    assert "tiny.ckpt" in msg and "--allow-pickle" in msg and "render.allow_pickle: true" in msg
    loaded = load_pipeline_components(ckpt, config_dir=tiny.config_dir, allow_pickle=True)
    _assert_same(loaded.unet, from_folder.unet)
    _assert_same(loaded.text_encoder, from_folder.text_encoder)


class _Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("pwned",))


def test_pickle_with_code_is_rejected_even_when_allowed(tmp_path: Path, tiny: TinyModel) -> None:
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": _Payload()}, ckpt)
    with pytest.raises(ModelError, match="evil.ckpt.*weights_only=True"):
        load_pipeline_components(ckpt, config_dir=tiny.config_dir, allow_pickle=True)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        (
            "garbage.safetensors",
            b"\x10\x00\x00\x00\x00\x00\x00\x00not a header at all",
            "garbage.safetensors",
        ),
        ("empty.safetensors", b"", "empty.safetensors"),
        ("model.onnx", b"whatever", "unknown model file type"),
    ],
)
def test_broken_files_are_model_errors(tmp_path: Path, name: str, content: bytes, match: str) -> None:
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(ModelError, match=match):
        load_pipeline_components(f)


def test_non_checkpoint_safetensors(tmp_path: Path, tiny: TinyModel) -> None:
    with pytest.raises(ModelError, match="EasyNegative.safetensors.*not a Stable Diffusion checkpoint"):
        load_pipeline_components(tiny.embedding)
    with pytest.raises(ModelError, match="does not exist"):
        load_pipeline_components(tmp_path / "nope.safetensors")


def test_external_vae_single_file(tiny: TinyModel, from_folder: ModelComponents) -> None:
    comps = load_pipeline_components(tiny.checkpoint, vae=tiny.vae)
    assert comps.vae_path == tiny.vae
    raw = load_file(str(tiny.vae))
    vae = comps.vae.state_dict()
    assert torch.equal(vae["encoder.conv_in.weight"], raw["encoder.conv_in.weight"])
    assert torch.equal(
        vae["encoder.mid_block.attentions.0.to_v.weight"], raw["encoder.mid.attn_1.v.weight"][:, :, 0, 0]
    )
    assert torch.equal(
        vae["decoder.up_blocks.3.resnets.1.norm2.bias"], raw["decoder.up.0.block.1.norm2.bias"]
    )
    assert not torch.equal(
        vae["encoder.conv_in.weight"], from_folder.vae.state_dict()["encoder.conv_in.weight"]
    )
    _assert_same(comps.unet, from_folder.unet)
    # Same VAE replacing a diffusers folder's own.
    comps2 = load_pipeline_components(tiny.diffusers_dir, vae=tiny.vae)
    _assert_same(comps2.vae, comps.vae)


def test_external_vae_diffusers_layout_and_folder(
    tiny: TinyModel, from_folder: ModelComponents, tmp_path: Path
) -> None:
    f = tmp_path / "vae_diffusers.safetensors"
    save_file({k: v.contiguous() for k, v in from_folder.vae.state_dict().items()}, str(f))
    cfg = dict(from_folder.vae.config)
    _assert_same(load_vae(f, config=cfg), from_folder.vae)
    _assert_same(load_vae(tiny.diffusers_dir / "vae"), from_folder.vae)
    _assert_same(load_vae(tiny.diffusers_dir), from_folder.vae)


def test_dtypes(tiny: TinyModel) -> None:
    assert resolve_dtype("cuda") == torch.float16
    assert resolve_dtype("cpu") == torch.float32
    assert resolve_dtype("cuda", "bf16") == torch.bfloat16
    with pytest.raises(ModelError, match="fp8"):
        resolve_dtype("cpu", "fp8")
    comps = load_pipeline_components(tiny.checkpoint, dtype="bf16")
    assert comps.dtype == torch.bfloat16
    assert {p.dtype for p in comps.text_encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in comps.vae.parameters()} == {torch.bfloat16}
    assert comps.alphas_cumprod.dtype == torch.float32


def test_alphas_cumprod_matches_scaled_linear(from_folder: ModelComponents) -> None:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    expected = torch.cumprod(1 - betas, 0)
    assert from_folder.alphas_cumprod.shape == (1000,)
    assert torch.allclose(from_folder.alphas_cumprod.double(), expected, rtol=1e-5, atol=0)


def test_detect_kind() -> None:
    t = torch.zeros(1)
    assert detect_kind({"conditioner.embedders.1.model.ln_final.weight": t}, Path("x")) == "sdxl"
    assert detect_kind({CLIP_PREFIX + "final_layer_norm.weight": t}, Path("x")) == "sd1"
    with pytest.raises(ModelError, match="2.x"):
        detect_kind({"cond_stage_model.model.ln_final.weight": t}, Path("x"))


def test_metadata_config_is_folder_config(tiny: TinyModel) -> None:
    from storyboard.models.registry import safetensors_metadata

    meta = json.loads(safetensors_metadata(tiny.checkpoint)[CONFIG_METADATA_KEY])
    folder_unet = json.loads((tiny.diffusers_dir / "unet/config.json").read_text())
    assert meta["unet"] == folder_unet


def test_shipped_configs_have_real_sizes() -> None:
    """Parameter counts of SD1.5 / SDXL-base components built on the meta device from the shipped configs."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    sd15, sdxl = shipped_config_dir("sd1"), shipped_config_dir("sdxl")
    with init_empty_weights():
        unet15 = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(sd15 / "unet"))
        vae15 = AutoencoderKL.from_config(AutoencoderKL.load_config(sd15 / "vae"))
        te15 = CLIPTextModel(CLIPTextConfig.from_pretrained(sd15 / "text_encoder"))
        unetxl = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(sdxl / "unet"))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(sdxl / "text_encoder_2"))
    assert count(unet15) == 859_520_964
    assert count(vae15) == 83_653_863
    assert count(te15) == 123_060_480
    assert count(unetxl) == 2_567_463_684
    assert count(te2) == 694_659_840
    # SD1.5's LDM checkpoint layout: 686 UNet + 248 VAE + 196 CLIP weights (plus position_ids) = 1131 keys.
    unet_keys = {unet_key_to_ldm(k, unet15.config) for k in unet15.state_dict()}
    vae_keys = {vae_key_to_ldm(k, vae15.config) for k in vae15.state_dict()}
    te_keys = {text_encoder_key_to_ldm(k) for k in te15.state_dict()}
    assert (len(unet_keys), len(vae_keys), len(te_keys)) == (686, 248, 196)
    assert {
        "input_blocks.3.0.op.weight",
        "input_blocks.9.0.op.weight",
        "output_blocks.2.1.conv.weight",
        "output_blocks.5.2.conv.weight",
        "output_blocks.8.2.conv.weight",
        "middle_block.1.proj_in.weight",
        "input_blocks.11.0.out_layers.3.weight",
        "time_embed.2.bias",
        "out.2.weight",
    } <= unet_keys
    assert {
        "encoder.down.3.block.1.conv2.weight",
        "encoder.down.1.block.0.nin_shortcut.weight",
        "decoder.up.0.block.0.nin_shortcut.weight",
        "decoder.up.3.upsample.conv.weight",
        "encoder.mid.attn_1.proj_out.weight",
        "decoder.norm_out.bias",
    } <= vae_keys
    assert "decoder.up.0.block.2.nin_shortcut.weight" not in vae_keys
    assert "decoder.up.0.upsample.conv.weight" not in vae_keys


def test_ldm_round_trip_writes_what_loader_reads(
    tiny: TinyModel, from_folder: ModelComponents, tmp_path: Path
) -> None:
    state = diffusers_to_ldm_state_dict(from_folder.unet, from_folder.vae, from_folder.text_encoder)
    assert all(k.startswith((UNET_PREFIX, VAE_PREFIX, CLIP_PREFIX)) for k in state)
    out = tmp_path / "merged.safetensors"
    save_file(state, str(out))
    loaded = load_pipeline_components(out, config_dir=tiny.config_dir)
    _assert_same(loaded.unet, from_folder.unet)
    _assert_same(loaded.vae, from_folder.vae)
    _assert_same(loaded.text_encoder, from_folder.text_encoder)


def test_sdxl_single_file_loads_offline(tmp_path: Path, no_network: None) -> None:
    from storyboard.models.ldm_keys import SDXL_CLIP_G_PREFIX
    from storyboard.models.tiny import write_tiny_sdxl_checkpoint

    tiny_xl = write_tiny_sdxl_checkpoint(tmp_path / "tiny-xl.safetensors", seed=5)
    raw = load_file(str(tiny_xl.checkpoint))
    # OpenCLIP layout written by hand-checkable rules: fused q/k/v, transposed projection.
    te2 = tiny_xl.text_encoder_2.state_dict()
    fused = raw[SDXL_CLIP_G_PREFIX + "transformer.resblocks.1.attn.in_proj_weight"]
    assert torch.equal(fused[32:64], te2["text_model.encoder.layers.1.self_attn.k_proj.weight"])
    assert torch.equal(raw[SDXL_CLIP_G_PREFIX + "text_projection"], te2["text_projection.weight"].T)
    comps = load_pipeline_components(tiny_xl.checkpoint)
    assert comps.kind == "sdxl"
    assert comps.tokenizer_2 is not None and comps.tokenizer_2.pad_token == "!"
    assert comps.tokenizer.pad_token == "<|endoftext|>"
    _assert_same(comps.unet, tiny_xl.unet)
    _assert_same(comps.vae, tiny_xl.vae)
    _assert_same(comps.text_encoder, tiny_xl.text_encoder)
    assert comps.text_encoder_2 is not None
    _assert_same(comps.text_encoder_2, tiny_xl.text_encoder_2)
