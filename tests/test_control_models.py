"""ControlNet files: the original 1.1 layout (real key names, random tiny weights) and the diffusers
layout load bit-exact offline; a file of the wrong layout or another model family is a sentence at
the unit's line from `storyboard validate`, run as a user runs it (relative paths)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from storyboard.models.controlnet import inspect_controlnet, load_controlnet
from storyboard.models.tiny import TinyModel
from storyboard.models.tiny_control import tiny_controlnet, write_tiny_controlnet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def unet(tiny: TinyModel):  # type: ignore[no-untyped-def]
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel.from_pretrained(tiny.diffusers_dir / "unet")


def test_original_layout_has_the_real_key_names_and_loads_bit_exact(unet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_tiny_controlnet(tmp_path / "cn.safetensors", unet, seed=11)
    keys = set(load_file(str(path)))
    # Names as in lllyasviel's control_v11p_sd15_*.pth: hint encoder convs at even indices (SiLU
    # between), one zero conv per encoder output, the middle block's own zero conv.
    for name in (
        "control_model.input_hint_block.0.weight",
        "control_model.input_hint_block.14.weight",
        "control_model.zero_convs.0.0.weight",
        "control_model.middle_block_out.0.weight",
        "control_model.time_embed.0.weight",
        "control_model.input_blocks.0.0.weight",
        "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
        "control_model.middle_block.1.proj_in.weight",
    ):
        assert name in keys, name
    assert all(k.startswith("control_model.") for k in keys)
    assert not any("input_hint_block.1." in k or "input_hint_block.3." in k for k in keys)  # SiLUs
    assert inspect_controlnet(path, allow_pickle=False).layout == "original"
    loaded = load_controlnet(path, unet.config, allow_pickle=False)
    want = tiny_controlnet(unet, 11).state_dict()
    got = loaded.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)  # every tensor, bit for bit


def test_pth_goes_through_the_pickle_gate(unet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from storyboard.errors import ModelError

    st = write_tiny_controlnet(tmp_path / "cn.safetensors", unet, seed=2)
    pth = tmp_path / "cn.pth"
    torch.save(load_file(str(st)), pth)
    with pytest.raises(ModelError, match="pickle"):
        inspect_controlnet(pth, allow_pickle=False)
    a = load_controlnet(pth, unet.config, allow_pickle=True).state_dict()
    b = load_controlnet(st, unet.config, allow_pickle=False).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_diffusers_layout_loads_bit_exact(unet, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    folder = write_tiny_controlnet(tmp_path / "cn-diffusers", unet, seed=4, layout="diffusers")
    info = inspect_controlnet(folder, allow_pickle=False)
    assert (info.layout, info.kind) == ("diffusers", "sd1")
    got = load_controlnet(folder, unet.config, allow_pickle=False).state_dict()
    want = tiny_controlnet(unet, 4).state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def _validate(cwd: Path, story: str) -> str:
    env = dict(os.environ, HF_HUB_OFFLINE="1", STORYBOARD_QUIET="1", COLUMNS="300", PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [sys.executable, "-m", "storyboard", "validate", story],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=180,
    )  # fmt: skip
    out = r.stdout + r.stderr
    assert "Traceback" not in out and r.returncode == 2, out
    return " ".join(out.split())


def test_wrong_layout_and_other_family_are_refused_at_the_units_line(tiny: TinyModel, tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    (proj / "cn").mkdir(parents=True)
    Image.new("RGB", (64, 64)).save(proj / "pose.png")
    lora = next((tiny.root / "models" / "Lora").glob("*.safetensors"))
    (proj / "cn" / "not-a-controlnet.safetensors").write_bytes(lora.read_bytes())
    state = load_file(str(tiny.root / "models" / "ControlNet" / "tiny-control.safetensors"))
    # An SDXL ControlNet carries the size/crop embedding (label_emb) an SD1 one has not.
    state["control_model.label_emb.0.0.weight"] = torch.zeros(4, 4)
    save_file(state, str(proj / "cn" / "xl-control.safetensors"))
    (proj / "s.yaml").write_text(
        f"title: T\nrender:\n  model: tiny-sd\n  webui_root: {tiny.root}\npages:\n  - panels:\n"
        "      - scene: a\n        control:\n          - image: pose.png\n"
        "            model: cn/not-a-controlnet.safetensors\n"
        "      - scene: b\n        control:\n          - image: pose.png\n"
        "            model: cn/xl-control.safetensors\n"
        "      - scene: c\n        control:\n          - image: pose.png\n            module: openpose\n"
        "            model: tiny-control\n"
    )
    out = _validate(tmp_path, "proj/s.yaml")
    assert "proj/s.yaml:10:20: pages[0].panels[0].control[0].model:" in out
    assert "not-a-controlnet.safetensors is not a ControlNet file this reads: it holds LoRA weights" in out
    assert (
        "proj/s.yaml:14:20: pages[0].panels[1].control[0].model: The ControlNet xl-control.safetensors is"
        in out
    )
    assert "is for SDXL models, but the checkpoint is SD 1.x" in out
    assert "proj/s.yaml:18:21: pages[0].panels[2].control[0].module: The preprocessor 'openpose'" in out
