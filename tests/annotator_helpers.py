"""Stand-in annotator files in the real layouts of a Hugging Face cache: lineart_anime's converted
netG.safetensors (the generator at a tiny width, real key names) and depth_anything's transformers
repo (a tiny random config of the same class)."""

from __future__ import annotations

from pathlib import Path

import torch

from storyboard.render.control.annotators.lineart_anime import UnetGenerator
from storyboard.render.control.annotators.specs import (
    DEPTH_ANYTHING,
    LINEART_ANIME,
    convert_pickle,
    converted_path,
)


def place_lineart(cache: Path, seed: int = 0, ngf: int = 2) -> dict[str, torch.Tensor]:
    """A netG.pth as the repo has it (DataParallel's ``module.`` prefix), converted the way `models
    fetch control` converts it; returns the weights."""
    torch.manual_seed(seed)
    net = UnetGenerator(ngf=ngf)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.3)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    pth = cache / "pickled" / f"netG-{seed}.pth"
    pth.parent.mkdir(parents=True, exist_ok=True)
    torch.save({f"module.{k}": v for k, v in state.items()}, pth)
    convert_pickle(pth, converted_path(LINEART_ANIME, cache))
    return state


def place_depth(cache: Path, seed: int = 0) -> Path:
    """A tiny DepthAnythingForDepthEstimation saved (safetensors) in the pinned snapshot folder."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
        patch_size=14, image_size=518, out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )  # fmt: skip
    config = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 8, 8],
        fusion_hidden_size=8, head_hidden_size=8,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(config).eval()
    repo = cache / f"models--{DEPTH_ANYTHING.repo.replace('/', '--')}" / "snapshots" / DEPTH_ANYTHING.revision
    model.save_pretrained(repo, safe_serialization=True)
    return repo
