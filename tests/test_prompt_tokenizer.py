"""The shipped CLIP tokenizer gives OpenAI CLIP's ids.

Expected ids were produced by open_clip's own SimpleTokenizer (open-clip-torch 3.3.0, run from the
unpacked wheel in a scratch script, not by this package) and are recorded here as literals.
"""

from __future__ import annotations

import json

import pytest

from storyboard.prompt.tokenizer import BOS_ID, EOS_ID, load_clip_tokenizer, tokenizer_dir

OPEN_CLIP_IDS = {
    "a photo of a cat": [320, 1125, 539, 320, 2368],
    "masterpiece, best quality, 1girl, solo, looking at viewer": [
        12066, 267, 949, 3027, 267, 272, 1611, 267, 5797, 267, 1312, 536, 15061,
    ],
    "(worst quality, low quality:1.4), EasyNegative": [
        263, 5719, 3027, 267, 1042, 3027, 281, 272, 269, 275, 2361, 18308, 8869,
    ],
    "Hello World!! it's 2024": [3306, 1002, 748, 585, 568, 273, 271, 273, 275],
    "café au lait": [15304, 2566, 572, 585],
    "an astronaut riding a horse on mars, highly detailed, 8k": [
        550, 18376, 6765, 320, 4558, 525, 7496, 267, 5302, 12609, 267, 279, 330,
    ],
}  # fmt: skip


def test_known_prompt_with_specials() -> None:
    tok = load_clip_tokenizer()
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (BOS_ID, EOS_ID, EOS_ID)
    assert len(tok) == 49408


@pytest.mark.parametrize(("text", "ids"), list(OPEN_CLIP_IDS.items()))
def test_matches_open_clip_simple_tokenizer(text: str, ids: list[int]) -> None:
    assert load_clip_tokenizer()(text, add_special_tokens=False).input_ids == ids


def test_sdxl_second_tokenizer_pads_with_bang() -> None:
    tok = load_clip_tokenizer("!")
    assert tok.pad_token_id == 0  # "!" is the first byte symbol
    out = tok("a cat", padding="max_length", max_length=6).input_ids
    assert out == [49406, 320, 2368, 49407, 0, 0]
    # the default tokenizer is a different cached object and keeps its own pad
    assert load_clip_tokenizer().pad_token_id == EOS_ID
    assert load_clip_tokenizer("!") is tok


def test_vocab_layout() -> None:
    vocab = json.loads((tokenizer_dir() / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 49408
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert sorted(vocab.values()) == list(range(49408))
    merges = (tokenizer_dir() / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version")
    assert len(merges) == 1 + 48894
