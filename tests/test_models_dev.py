from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file
from typer.testing import CliRunner

from storyboard.commands.dev import app


def test_tiny_model_command_writes_loadable_files(tmp_path: Path) -> None:
    out = tmp_path / "webui"
    result = CliRunner().invoke(app, ["tiny-model", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    ckpt = out / "models/Stable-diffusion/tiny-sd.safetensors"
    assert str(ckpt) in result.output.replace("\n", "")
    assert (out / "tiny-sd/model_index.json").is_file()
    assert load_file(str(out / "embeddings/EasyNegative.safetensors"))["emb_params"].shape == (8, 32)
    from storyboard.models.tiny import write_tiny_model

    again = write_tiny_model(tmp_path / "again", seed=3, loras=False)
    assert again.checkpoint.read_bytes() == ckpt.read_bytes()
