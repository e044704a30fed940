"""Stand-in annotator files in the real layouts of a Hugging Face cache: lineart_anime's converted
netG.safetensors (the generator at a tiny width, real key names) and depth_anything's transformers
repo (a tiny random config of the same class); DWPose's two ONNX files as constant-output graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from storyboard.render.control.annotators.lineart_anime import UnetGenerator
from storyboard.render.control.annotators.specs import (
    DEPTH_ANYTHING,
    DWPOSE,
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


def _onnx_constant_model(path: Path, inp: str, in_shape: list[int], outs: dict[str, np.ndarray]) -> None:
    """An ONNX model with the real input and output names, shapes and dtypes whose outputs are fixed
    arrays (the input enters as 0 x its mean, so the graph reads it as the real one does)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [
        helper.make_node("ReduceMean", [inp], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
    ]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outputs = []
    for name, arr in outs.items():
        inits.append(numpy_helper.from_array(arr.astype(np.float32), f"{name}_value"))
        nodes.append(helper.make_node("Add", [f"{name}_value", "nothing"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(arr.shape)))
    graph = helper.make_graph(
        nodes, "standin", [helper.make_tensor_value_info(inp, TensorProto.FLOAT, in_shape)], outputs, inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def place_dwpose(cache: Path, det: np.ndarray, simcc_x: np.ndarray, simcc_y: np.ndarray) -> Path:
    """yzd-v/DWPose's two files in the pinned snapshot folder: a YOLOX stand-in (images 1x3x640x640
    -> output 1x8400x85) whose output is `det`, an RTMPose stand-in (input 1x3x384x288 -> simcc_x
    1x133x576, simcc_y 1x133x768) whose outputs are the given SimCC arrays."""
    snap = cache / f"models--{DWPOSE.repo.replace('/', '--')}" / "snapshots" / DWPOSE.revision
    _onnx_constant_model(snap / "yolox_l.onnx", "images", [1, 3, 640, 640], {"output": det[None]})
    _onnx_constant_model(
        snap / "dw-ll_ucoco_384.onnx", "input", [1, 3, 384, 288],
        {"simcc_x": simcc_x[None], "simcc_y": simcc_y[None]},
    )  # fmt: skip
    return snap
