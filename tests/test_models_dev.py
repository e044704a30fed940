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


def test_tiny_model_written_twice_has_the_same_bytes(tmp_path: Path) -> None:
    """Writing the tiny model again (as the README's Ray section does) must not change a byte: the
    panel cache keys on file hashes, and safetensors' own writer orders the metadata keys differently
    in each process, which made every panel with a LoRA render again."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    for d in ("a", "b"):
        r = subprocess.run(
            [sys.executable, "-m", "storyboard", "dev", "tiny-model", str(tmp_path / d)],
            cwd=root, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert any(f.name == "tiny-character.safetensors" for f in files)
    changed = [f for f in files if (tmp_path / "a" / f).read_bytes() != (tmp_path / "b" / f).read_bytes()]
    assert changed == []
