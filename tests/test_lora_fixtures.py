"""Tiny random-weight SD1-shaped models for the LoRA tests (nothing is downloaded)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection


def tiny_unet(seed: int = 0, cross_attention_dim: int = 32) -> Any:  # diffusers types confuse mypy
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def _te_config(hidden: int = 32) -> CLIPTextConfig:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    return CLIPTextConfig(
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=1000,
        max_position_embeddings=77,
        projection_dim=16,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )


def tiny_text_encoder(seed: int = 1) -> CLIPTextModel:
    torch.manual_seed(seed)
    return CLIPTextModel(_te_config())


def tiny_text_encoder_2(seed: int = 2) -> CLIPTextModelWithProjection:
    torch.manual_seed(seed)
    return CLIPTextModelWithProjection(_te_config())
