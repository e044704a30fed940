"""WebUI's prompt language, kept apart from any model: parse (attention weights, comments), schedule
(prompt editing and alternation), extra networks (``<lora:...>`` tags), chunks (75-token packing),
and, needing torch, encode (CLIP encoding with emphasis and clip skip) and embeddings.

    >>> from storyboard.prompt import parse_attention, prompt_schedule
    >>> parse_attention("a (cat:1.2)")
    [('a ', 1.0), ('cat', 1.2)]
    >>> prompt_schedule("[dog:cat:2]", 4)
    [(2, 'dog'), (4, 'cat')]

The torch-backed names load on first use, so importing this package stays light for story/.
"""

from __future__ import annotations

import importlib
from typing import Any

from storyboard.prompt.chunks import CHUNK_LENGTH, Chunk, EmbeddingIndex, empty_chunk, tokenize_prompt
from storyboard.prompt.extra_networks import (
    LoraUse,
    extract_extra_networks,
    format_number,
    merge_lora_uses,
)
from storyboard.prompt.parse import parse_attention, strip_comments
from storyboard.prompt.schedule import prompt_schedule

_LAZY = {
    "PromptEncoder": "storyboard.prompt.encode",
    "SDXLPromptEncoder": "storyboard.prompt.encode",
    "Embedding": "storyboard.prompt.embeddings",
    "load_embedding": "storyboard.prompt.embeddings",
    "load_clip_tokenizer": "storyboard.prompt.tokenizer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'storyboard.prompt' has no attribute {name!r}")


__all__ = [
    "CHUNK_LENGTH",
    "Chunk",
    "Embedding",
    "EmbeddingIndex",
    "LoraUse",
    "PromptEncoder",
    "SDXLPromptEncoder",
    "empty_chunk",
    "extract_extra_networks",
    "format_number",
    "load_clip_tokenizer",
    "load_embedding",
    "merge_lora_uses",
    "parse_attention",
    "prompt_schedule",
    "strip_comments",
    "tokenize_prompt",
]
