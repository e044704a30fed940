from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from safetensors.torch import save_file
from typer.testing import CliRunner

from storyboard.commands.prompt import _print_rich, app
from storyboard.prompt.embeddings import load_embedding
from storyboard.prompt.explain import explain, format_explanation
from storyboard.prompt.extra_networks import LoraUse
from storyboard.prompt.tokenizer import load_clip_tokenizer

PROMPT = "masterpiece, (1girl:1.2), [cat:dog:0.5] BREAK red <lora:foo:0.5> <lora:foo:0.7:0.2> <lyco:bar>"


def _embedding_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "embeddings"
    folder.mkdir()
    save_file({"emb_params": torch.zeros(2, 768)}, str(folder / "EasyNegative.safetensors"))
    return folder


def test_explain_core() -> None:
    exp = explain(PROMPT, 10, load_clip_tokenizer())
    assert exp.loras == [LoraUse("foo", 0.5, 0.5), LoraUse("foo", 0.7, 0.2), LoraUse("bar", 1.0, 1.0)]
    assert exp.merged_loras == [LoraUse("foo", 2 * 0.7, 2 * 0.2), LoraUse("bar", 1.0, 1.0)]
    assert [(e.end_step, e.text) for e in exp.schedule] == [
        (5, "masterpiece, (1girl:1.2), cat BREAK red   "),
        (10, "masterpiece, (1girl:1.2), dog BREAK red   "),
    ]
    first = exp.schedule[0]
    assert first.segments == [
        ("masterpiece, ", 1.0),
        ("1girl", 1.2),
        (", cat", 1.0),
        ("BREAK", -1.0),
        ("red   ", 1.0),
    ]
    assert [c.tokens for c in first.chunks] == [["masterpiece", ",", "1", "girl", ",", "cat"], ["red"]]
    assert first.chunks[0].weights == [1.0, 1.0, 1.2, 1.2, 1.0, 1.0]
    assert [c.count for c in first.chunks] == [6, 1]
    assert exp.embeddings == []


def test_explain_finds_embeddings(tmp_path: Path) -> None:
    emb = load_embedding(_embedding_dir(tmp_path) / "EasyNegative.safetensors")
    exp = explain("EasyNegative, lowres", 20, load_clip_tokenizer(), {"EasyNegative": emb})
    assert exp.embeddings == ["EasyNegative"]
    assert exp.schedule[0].chunks[0].tokens == ["<EasyNegative#0>", "<EasyNegative#1>", ",", "low", "res"]


def test_plain_text_report() -> None:
    text = format_explanation(explain(PROMPT, 10, load_clip_tokenizer()))
    assert "foo: te=1.4 unet=0.4" in text
    assert "until step 5: masterpiece, (1girl:1.2), cat BREAK red" in text
    assert "chunk 1: 6/75 tokens" in text
    assert "1:1.2 girl:1.2" in text


def test_cli_explain(tmp_path: Path) -> None:
    folder = _embedding_dir(tmp_path)
    result = CliRunner().invoke(
        app, ["explain", "EasyNegative, (worst quality:1.4)", "--steps", "8", "--embeddings", str(folder)]
    )
    assert result.exit_code == 0, result.output
    assert "embeddings: EasyNegative" in result.output
    assert "schedule (8 steps):" in result.output
    assert "1.4\t'worst quality'" in result.output
    assert "chunk 1: 5/75 tokens" in result.output


def test_cli_bad_lora_tag_is_a_storyboard_error() -> None:
    result = CliRunner().invoke(app, ["explain", "a <lora:foo:abc>"])
    assert result.exit_code != 0
    assert "<lora:foo:abc>" in str(result.exception)


def test_rich_tables() -> None:
    console = Console(record=True, force_terminal=True, width=200)
    _print_rich(console, explain(PROMPT, 10, load_clip_tokenizer()))
    out = console.export_text()
    assert "LoRAs" in out and "foo" in out and "1.4" in out
    assert "CLIP chunks" in out and "6/75" in out
    assert "schedule (10 steps)" in out
