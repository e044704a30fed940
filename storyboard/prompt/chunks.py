"""Prompt text -> 75-token chunks, the way WebUI's ``sd_hijack_clip`` packs them before CLIP sees
anything (see ``storyboard.prompt.encode`` for the rules). Pure tokenization: no model, no torch, so
``prompt explain`` and the render identity (which embeddings a prompt uses) can run it cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from storyboard.prompt.parse import BREAK_MARKER, parse_attention

if TYPE_CHECKING:
    from storyboard.prompt.embeddings import Embedding

CHUNK_LENGTH = 75


@dataclass
class Chunk:
    """One 77-token CLIP input: ids, per-token weights and where embedding vectors go.

    ``embeddings`` holds ``(position, embedding)``: the embedding's vectors replace the token
    embeddings at ``position``, ``position + 1``, ... of the 77 (position 0 is BOS).
    """

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    embeddings: list[tuple[int, Embedding]] = field(default_factory=list)


class EmbeddingIndex:
    """Embeddings keyed by the first token id of their name, longest name first (WebUI's ids_lookup)."""

    def __init__(self, tokenizer: Any, embeddings: Mapping[str, Embedding]) -> None:
        self._by_first: dict[int, list[tuple[list[int], Embedding]]] = {}
        for name, emb in embeddings.items():
            ids = tokenizer([name], truncation=False, add_special_tokens=False)["input_ids"][0]
            if not ids:
                continue
            entries = self._by_first.setdefault(ids[0], [])
            entries.append((ids, emb))
            entries.sort(key=lambda e: len(e[0]), reverse=True)

    def find(self, tokens: Sequence[int], position: int) -> tuple[Embedding, int] | None:
        """The embedding whose name's ids start at ``position``, and how many ids it covers."""
        for ids, emb in self._by_first.get(tokens[position], ()):
            if list(tokens[position : position + len(ids)]) == ids:
                return emb, len(ids)
        return None


def tokenize_prompt(
    text: str,
    tokenizer: Any,
    index: EmbeddingIndex | None = None,
    *,
    emphasis: str = "Original",
    comma_backtrack: int = 20,
) -> list[Chunk]:
    """WebUI's ``tokenize_line``: the prompt as a list of 77-token chunks."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    comma = tokenizer.convert_tokens_to_ids(",</w>")
    runs = parse_attention(text) if emphasis != "None" else [(text, 1.0)]
    tokenized = tokenizer([t for t, _ in runs], truncation=False, add_special_tokens=False, verbose=False)
    chunks: list[Chunk] = []
    chunk = Chunk()
    last_comma = -1

    def close_chunk() -> None:
        nonlocal chunk, last_comma
        pad = CHUNK_LENGTH - len(chunk.tokens)
        chunk.tokens = [bos, *chunk.tokens, *([eos] * pad), eos]
        chunk.weights = [1.0, *chunk.weights, *([1.0] * pad), 1.0]
        # positions counted without BOS while packing; shift past it now
        chunk.embeddings = [(pos + 1, emb) for pos, emb in chunk.embeddings]
        chunks.append(chunk)
        chunk = Chunk()
        last_comma = -1

    for ids, run in zip(tokenized["input_ids"], runs, strict=True):
        if run == BREAK_MARKER:
            close_chunk()
            continue
        weight = run[1]
        pos = 0
        while pos < len(ids):
            token = ids[pos]
            if token == comma:
                last_comma = len(chunk.tokens)
            elif (
                comma_backtrack != 0
                and len(chunk.tokens) == CHUNK_LENGTH
                and last_comma != -1
                and len(chunk.tokens) - last_comma <= comma_backtrack
            ):
                cut = last_comma + 1
                moved_tokens, moved_weights = chunk.tokens[cut:], chunk.weights[cut:]
                chunk.tokens, chunk.weights = chunk.tokens[:cut], chunk.weights[:cut]
                close_chunk()  # embeddings stay behind at their old offsets, as in WebUI
                chunk.tokens, chunk.weights = moved_tokens, moved_weights
            if len(chunk.tokens) == CHUNK_LENGTH:
                close_chunk()
            hit = index.find(ids, pos) if index is not None else None
            if hit is None:
                chunk.tokens.append(token)
                chunk.weights.append(weight)
                pos += 1
                continue
            emb, covered = hit
            n = emb.num_vectors
            if len(chunk.tokens) + n > CHUNK_LENGTH:
                close_chunk()
            chunk.embeddings.append((len(chunk.tokens), emb))
            chunk.tokens += [0] * n
            chunk.weights += [weight] * n
            pos += covered
    if chunk.tokens or not chunks:
        close_chunk()
    return chunks


def empty_chunk(tokenizer: Any) -> Chunk:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return Chunk(tokens=[bos] + [eos] * (CHUNK_LENGTH + 1), weights=[1.0] * (CHUNK_LENGTH + 2))
