"""Stand-in annotator files in the real layouts of a Hugging Face cache: lineart_anime's converted
netG.safetensors (the generator at a tiny width, real key names) and depth_anything's transformers
repo (a tiny random config of the same class); depth_midas's Intel/dpt-hybrid-midas snapshot (a tiny
hybrid DPT, its .bin converted as the fetch converts it); DWPose's two ONNX files as constant-output
graphs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from storyboard.render.control.annotators.lineart_anime import UnetGenerator
from storyboard.render.control.annotators.specs import (
    DEPTH_ANYTHING,
    DEPTH_MIDAS,
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


def tiny_midas(seed: int = 0) -> Any:
    """A DPT-Hybrid of the real one's kind (BiT bottleneck backbone, /16 features, readout project,
    neck from two backbone stages and two ViT layers) at tiny widths, random weights."""
    from transformers import BitConfig, DPTConfig, DPTForDepthEstimation

    bit = BitConfig(
        embedding_size=8, hidden_sizes=[8, 16, 32], depths=[1, 1, 1], layer_type="bottleneck",
        global_padding="same", out_features=["stage1", "stage2", "stage3"],
        embedding_dynamic_padding=True, num_groups=2,
    )  # fmt: skip
    config = DPTConfig(
        is_hybrid=True, backbone_config=bit, backbone_featmap_shape=[1, 32, 24, 24], hidden_size=16,
        num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 16, 16, 16], reassemble_factors=[1, 1, 1, 0.5], fusion_hidden_size=8,
        image_size=384, patch_size=16,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = DPTForDepthEstimation(config).eval()
    for p in model.parameters():  # spread the random weights so the depth varies over the image
        torch.nn.init.normal_(p, std=0.2)
    return model


def place_midas(cache: Path, seed: int = 0, convert: bool = True) -> Path:
    """Intel/dpt-hybrid-midas's two files (config.json, pytorch_model.bin, a pickle as the repo has
    it) in the pinned snapshot folder, converted as `models fetch control` converts them; returns the
    snapshot folder."""
    model = tiny_midas(seed)
    snap = cache / f"models--{DEPTH_MIDAS.repo.replace('/', '--')}" / "snapshots" / DEPTH_MIDAS.revision
    snap.mkdir(parents=True, exist_ok=True)
    model.config.to_json_file(str(snap / "config.json"))
    torch.save(model.state_dict(), snap / "pytorch_model.bin")
    if convert:
        dst = converted_path(DEPTH_MIDAS, cache)
        convert_pickle(snap / "pytorch_model.bin", dst)
        shutil.copyfile(snap / "config.json", dst.with_name("config.json"))
    return snap


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


def annotator_cli(cwd: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`storyboard ARGS` as a user types it, from `cwd`, with `cache` as the Hugging Face cache."""
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), STORYBOARD_QUIET="1", COLUMNS="300",
        PYTHONPATH=str(Path(__file__).resolve().parents[1]),
    )  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "storyboard", *args],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=600,
    )  # fmt: skip
