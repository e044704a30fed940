"""What WebUI would make of a prompt: LoRA tags, schedule, weighted runs, embeddings, CLIP chunks.

Order of operations as in WebUI: ``#`` comments are stripped, extra-network tags are removed, the
prompt-editing schedule is computed from the cleaned text, and each scheduled text is parsed for
emphasis and tokenized into 75-token chunks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from storyboard.prompt.chunks import EmbeddingIndex, tokenize_prompt
from storyboard.prompt.embeddings import Embedding
from storyboard.prompt.extra_networks import LoraUse, extract_extra_networks, merge_lora_uses
from storyboard.prompt.parse import BREAK_MARKER, parse_attention, strip_comments
from storyboard.prompt.schedule import prompt_schedule


@dataclass(frozen=True)
class ChunkView:
    """One 77-token chunk: its content tokens (no BOS/EOS/padding) as readable strings."""

    tokens: list[str]
    weights: list[float]

    @property
    def count(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class ScheduledText:
    """The text used up to and including ``end_step``, with its weighted runs and chunks."""

    end_step: int
    text: str
    segments: list[tuple[str, float]]
    chunks: list[ChunkView]
    embeddings: list[str]


@dataclass(frozen=True)
class Explanation:
    prompt: str
    clean_prompt: str
    steps: int
    loras: list[LoraUse]
    merged_loras: list[LoraUse]
    schedule: list[ScheduledText]

    @property
    def embeddings(self) -> list[str]:
        names: list[str] = []
        for entry in self.schedule:
            names += [n for n in entry.embeddings if n not in names]
        return names


def explain(
    text: str, steps: int, tokenizer: Any, embeddings: Mapping[str, Embedding] | None = None
) -> Explanation:
    clean, uses = extract_extra_networks(strip_comments(text))
    index = EmbeddingIndex(tokenizer, embeddings or {})
    entries = []
    for end, scheduled in prompt_schedule(clean, steps):
        chunks = tokenize_prompt(scheduled, tokenizer, index)
        views = []
        found: list[str] = []
        for chunk in chunks:
            labels = _labels(chunk.tokens, chunk.embeddings, tokenizer)
            keep = [
                i for i, t in enumerate(chunk.tokens) if i not in (0, len(chunk.tokens) - 1) and labels[i]
            ]
            views.append(ChunkView([labels[i] for i in keep], [chunk.weights[i] for i in keep]))
            found += [e.name for _, e in chunk.embeddings if e.name not in found]
        entries.append(ScheduledText(end, scheduled, parse_attention(scheduled), views, found))
    return Explanation(text, clean, steps, uses, merge_lora_uses(uses), entries)


def _labels(tokens: list[int], placed: list[tuple[int, Embedding]], tokenizer: Any) -> list[str]:
    """Readable token strings; '' for EOS padding; embedding slots as <name#i>."""
    eos = tokenizer.eos_token_id
    labels = [
        "" if t == eos else s.replace("</w>", "")
        for t, s in zip(tokens, tokenizer.convert_ids_to_tokens(tokens), strict=True)
    ]
    for pos, emb in placed:
        for i in range(emb.num_vectors):
            if pos + i < len(labels):
                labels[pos + i] = f"<{emb.name}#{i}>"
    return labels


def format_explanation(exp: Explanation) -> str:
    """Plain-text report (what the command prints when stdout is not a terminal)."""
    lines = [f"prompt: {exp.prompt}"]
    if exp.loras:
        lines.append("LoRAs:")
        lines += [f"  {u.name}: te={u.te:g} unet={u.unet:g}" + _dyn(u) for u in exp.merged_loras]
        if len(exp.merged_loras) != len(exp.loras):
            lines.append("  (repeated tags merged: WebUI applies a repeated LoRA once per mention)")
    else:
        lines.append("LoRAs: none")
    lines.append("embeddings: " + (", ".join(exp.embeddings) or "none"))
    lines.append(f"schedule ({exp.steps} steps):")
    for entry in exp.schedule:
        lines.append(f"  until step {entry.end_step}: {entry.text}")
    for entry in exp.schedule:
        if len(exp.schedule) > 1:
            lines.append(f"-- text until step {entry.end_step}")
        lines.append("weighted segments:")
        for seg, w in entry.segments:
            lines.append("  BREAK" if (seg, w) == BREAK_MARKER else f"  {w:.4g}\t{seg!r}")
        for i, chunk in enumerate(entry.chunks):
            lines.append(f"chunk {i + 1}: {chunk.count}/75 tokens")
            lines.append(
                "  " + " ".join(_weighted(t, w) for t, w in zip(chunk.tokens, chunk.weights, strict=True))
            )
    return "\n".join(lines) + "\n"


def _weighted(token: str, weight: float) -> str:
    return token if weight == 1.0 else f"{token}:{weight:.3g}"


def _dyn(use: LoraUse) -> str:
    return f" dyn={use.dyn}" if use.dyn is not None else ""
