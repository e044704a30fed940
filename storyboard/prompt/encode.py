"""WebUI's long-prompt CLIP encoding (``modules/sd_hijack_clip.py``, ``modules/sd_emphasis.py``).

What ``FrozenCLIPEmbedderWithCustomWords`` does, over a transformers ``CLIPTextModel`` (or
``CLIPTextModelWithProjection`` for SDXL's second encoder):

- The prompt is split by :func:`~storyboard.prompt.parse.parse_attention`; each run is tokenized
  without specials and the ids are packed into chunks of 75. Each chunk is sent to CLIP as
  ``[BOS] + 75 ids (padded with EOS) + [EOS]`` and the (B, 77, C) outputs are concatenated: (B, 77k, C).
- When a chunk is full and the last comma is at most ``comma_backtrack`` (20) tokens back, the tokens
  after that comma move to the next chunk. ``BREAK`` pads the current chunk out.
- A textual-inversion embedding is found by its name's token ids (longest name first); its vectors
  replace token embeddings and never straddle chunks (the whole embedding moves to the next chunk).
  WebUI quirk kept for parity: if a comma backtrack moves an embedding to the next chunk, WebUI leaves
  its vectors at the old offsets of the previous chunk (over padding) and the moved slots encode as
  token 0 (``!``). That only happens with an embedding within 20 tokens after a comma at a boundary.
- Emphasis "Original": ``m = z.mean(); z *= w; z *= m / z.mean()``, where the means are over the whole
  (B, 77, C) batch of that chunk index, not per prompt. So the batch you pass to :meth:`encode`
  matters: WebUI encodes each prompt's schedule texts together (``[a:b:5]`` -> ["..a..", "..b.."]),
  and positive and negative prompts in separate calls. Do the same to reproduce its tensors.
- When prompts in one batch need different chunk counts, shorter ones are padded with empty chunks
  (``[BOS] + [EOS] * 76``, weights 1) before encoding, which also enter the means.
- Clip skip N (WebUI numbering, 1 = last layer): N > 1 takes ``hidden_states[-N]`` and applies
  ``final_layer_norm``. (diffusers' ``clip_skip`` is N - 1.)

The result is float32 whatever the encoder's dtype: WebUI's emphasis multiplies by a float32 tensor,
which promotes half-precision outputs to float32 too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from storyboard.prompt.chunks import Chunk, EmbeddingIndex, empty_chunk, tokenize_prompt
from storyboard.prompt.embeddings import Embedding

EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")


def _text_model(model: Any) -> Any:
    """The module holding ``embeddings`` and ``final_layer_norm`` (layouts differ across classes)."""
    return getattr(model, "text_model", model)


@contextlib.contextmanager
def _vectors_inserted(model: Any, batch: list[Chunk], use_g: bool) -> Iterator[None]:
    """Replace token embeddings with textual-inversion vectors while the encoder runs."""
    if not any(c.embeddings for c in batch):
        yield
        return

    def hook(_module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        for b, chunk in enumerate(batch):
            for pos, emb in chunk.embeddings:
                vec = emb.vectors_g if use_g else emb.vectors
                assert vec is not None
                n = min(output.shape[1] - pos, vec.shape[0])
                output[b, pos : pos + n] = vec[:n].to(output.device, output.dtype)
        return output

    handle = _text_model(model).embeddings.token_embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _fits(emb: Embedding, width: int, use_g: bool) -> bool:
    if use_g:
        return emb.vectors_g is not None and emb.vectors_g.shape[1] == width
    return emb.vectors_g is None and emb.vectors.shape[1] == width


class _ChunkEncoder:
    """Shared machinery: tokenize to chunks, run the encoder per chunk index, apply emphasis."""

    def __init__(
        self,
        tokenizer: Any,
        text_encoder: Any,
        embeddings: Mapping[str, Embedding],
        *,
        layer: int | None,
        final_norm: bool,
        use_g: bool,
        emphasis: str,
        comma_backtrack: int,
    ) -> None:
        if emphasis not in EMPHASIS_MODES:
            raise ValueError(f"emphasis must be one of {EMPHASIS_MODES}, got {emphasis!r}")
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.layer = layer
        self.final_norm = final_norm
        self.use_g = use_g
        self.emphasis = emphasis
        self.comma_backtrack = comma_backtrack
        width = int(_text_model(text_encoder).embeddings.token_embedding.weight.shape[1])
        # WebUI skips embeddings whose width does not fit the model; they stay plain text.
        self.embeddings = {name: e for name, e in embeddings.items() if _fits(e, width, use_g)}
        self.skipped_embeddings = sorted(set(embeddings) - set(self.embeddings))
        self.index = EmbeddingIndex(tokenizer, self.embeddings)
        self.pad_id = tokenizer.pad_token_id
        self._cache: dict[str, list[Chunk]] = {}

    def tokenize_chunks(self, prompt: str) -> list[Chunk]:
        if prompt not in self._cache:
            self._cache[prompt] = tokenize_prompt(
                prompt,
                self.tokenizer,
                self.index,
                emphasis=self.emphasis,
                comma_backtrack=self.comma_backtrack,
            )
        return self._cache[prompt]

    def encode_batches(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not prompts:
            raise ValueError("encode() needs at least one prompt")
        per_prompt = [self.tokenize_chunks(p) for p in prompts]
        count = max(len(c) for c in per_prompt)
        empty = empty_chunk(self.tokenizer)
        outputs: list[torch.Tensor] = []
        pooled: torch.Tensor | None = None
        for i in range(count):
            batch = [chunks[i] if i < len(chunks) else empty for chunks in per_prompt]
            z, pool = self._encode_chunk_batch(batch)
            outputs.append(z)
            if i == 0:
                pooled = pool
        return torch.cat(outputs, dim=1), pooled

    @torch.no_grad()
    def _encode_chunk_batch(self, batch: list[Chunk]) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = next(self.text_encoder.parameters()).device
        ids = torch.tensor([c.tokens for c in batch], dtype=torch.long, device=device)
        eos = self.tokenizer.eos_token_id
        if self.pad_id is not None and self.pad_id != eos:
            # SD2 / SDXL-G: everything after the first EOS becomes the pad token
            for b, chunk in enumerate(batch):
                first_eos = chunk.tokens.index(eos)
                ids[b, first_eos + 1 :] = self.pad_id
        with _vectors_inserted(self.text_encoder, batch, self.use_g):
            out = self.text_encoder(input_ids=ids, output_hidden_states=True)
        if self.layer is None:
            z = out.last_hidden_state
        else:
            z = out.hidden_states[self.layer]
            if self.final_norm:
                z = _text_model(self.text_encoder).final_layer_norm(z)
        pooled = getattr(out, "text_embeds", None)
        z = z.float()
        weights = torch.tensor([c.weights for c in batch], dtype=torch.float32, device=z.device)
        if self.emphasis in ("Original", "No norm"):
            original_mean = z.mean()
            z = z * weights.unsqueeze(-1)
            if self.emphasis == "Original":
                z = z * (original_mean / z.mean())
        return z, (pooled.float() if pooled is not None else None)


class PromptEncoder:
    """SD1.x prompt encoder with WebUI semantics (see the module docstring)."""

    def __init__(
        self,
        tokenizer: Any,
        text_encoder: Any,
        embeddings: Mapping[str, Embedding] | None = None,
        clip_skip: int = 1,
        *,
        emphasis: str = "Original",
        comma_backtrack: int = 20,
    ) -> None:
        if clip_skip < 1:
            raise ValueError(f"clip_skip is WebUI-numbered and starts at 1, got {clip_skip}")
        self.clip_skip = clip_skip
        self._enc = _ChunkEncoder(
            tokenizer,
            text_encoder,
            embeddings or {},
            layer=None if clip_skip == 1 else -clip_skip,
            final_norm=True,
            use_g=False,
            emphasis=emphasis,
            comma_backtrack=comma_backtrack,
        )

    @property
    def skipped_embeddings(self) -> list[str]:
        """Embeddings not usable with this encoder (wrong width, SDXL-only); WebUI skips them too."""
        return self._enc.skipped_embeddings

    def tokenize_chunks(self, prompt: str) -> list[Chunk]:
        return self._enc.tokenize_chunks(prompt)

    def chunk_count(self, prompt: str) -> int:
        return len(self.tokenize_chunks(prompt))

    def used_embeddings(self, prompt: str) -> list[Embedding]:
        """Embeddings the prompt uses, in order of first use (for ``TI hashes``)."""
        seen: dict[str, Embedding] = {}
        for chunk in self.tokenize_chunks(prompt):
            for _, emb in chunk.embeddings:
                seen.setdefault(emb.name, emb)
        return list(seen.values())

    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, 77 * k, C) float32 for the batch; k = the largest chunk count among ``prompts``."""
        return self._enc.encode_batches(prompts)[0]

    def encode_schedule(self, schedule: Sequence[tuple[int, str]]) -> list[tuple[int, torch.Tensor]]:
        """Encode one prompt's schedule (from :func:`~storyboard.prompt.schedule.prompt_schedule`).

        WebUI encodes all texts of one prompt's schedule as one batch (``get_learned_conditioning``),
        so they share the emphasis means and the chunk count; this does the same. Returns
        ``[(end_at_step, (1, 77k, C))]``. (When several prompts of one image batch end up with
        different lengths, WebUI's ``stack_conds`` repeats each shorter tensor's last vector.)
        """
        z = self.encode([text for _, text in schedule])
        return [(end, z[i : i + 1]) for i, (end, _) in enumerate(schedule)]

    def encode_pair(
        self, cond: Sequence[str], uncond: Sequence[str], *, pad: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Positive and negative conditioning, each encoded as its own batch (as WebUI does).

        The two may differ in length (77 * k). WebUI then runs the UNet separately for cond and uncond
        (``sd_samplers_cfg_denoiser.py``) unless the option ``pad_cond_uncond`` is on, in which case
        the shorter one is extended with copies of the empty prompt's encoding (one 77-token chunk of
        ``encode([""])``) to the same length; ``pad=True`` does that here.
        """
        c = self.encode(cond)
        u = self.encode(uncond)
        if pad and c.shape[1] != u.shape[1]:
            empty = self.encode([""])
            c, u = pad_cond_uncond(c, u, empty)
        return c, u


def pad_cond_uncond(
    cond: torch.Tensor, uncond: torch.Tensor, empty: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """WebUI's ``pad_cond_uncond``: append empty-prompt chunks to the shorter of the two."""
    repeats = (cond.shape[1] - uncond.shape[1]) // empty.shape[1]

    def extend(t: torch.Tensor, n: int) -> torch.Tensor:
        return torch.cat([t, empty.to(t).repeat(t.shape[0], n, 1)], dim=1)

    if repeats < 0:
        cond = extend(cond, -repeats)
    elif repeats > 0:
        uncond = extend(uncond, repeats)
    return cond, uncond


class SDXLPromptEncoder:
    """SDXL: CLIP-L and OpenCLIP-G run the same chunking; outputs concatenate on the channel axis.

    As WebUI (sgm conditioner, default options): CLIP-L uses ``hidden_states[-2]`` and OpenCLIP-G its
    penultimate layer, both without the final layer norm, whatever clip skip says; G's chunks are
    padded with its own pad token (``!``) after the first EOS; the pooled vector is G's projected
    output for the **first** chunk. Embeddings need SDXL's ``clip_l``/``clip_g`` pair.
    """

    def __init__(
        self,
        tokenizer_l: Any,
        text_encoder_l: Any,
        tokenizer_g: Any,
        text_encoder_g: Any,
        embeddings: Mapping[str, Embedding] | None = None,
        *,
        emphasis: str = "Original",
        comma_backtrack: int = 20,
    ) -> None:
        embeddings = embeddings or {}
        sdxl_embeddings = {k: e for k, e in embeddings.items() if e.vectors_g is not None}
        self._l = _ChunkEncoder(
            tokenizer_l,
            text_encoder_l,
            {},
            layer=-2,
            final_norm=False,
            use_g=False,
            emphasis=emphasis,
            comma_backtrack=comma_backtrack,
        )
        # CLIP-L takes the clip_l half of SDXL embeddings: check widths against that half
        width_l = int(_text_model(text_encoder_l).embeddings.token_embedding.weight.shape[1])
        self._l.embeddings = {k: e for k, e in sdxl_embeddings.items() if e.vectors.shape[1] == width_l}
        self._l.index = EmbeddingIndex(tokenizer_l, self._l.embeddings)
        self._g = _ChunkEncoder(
            tokenizer_g,
            text_encoder_g,
            sdxl_embeddings,
            layer=-2,
            final_norm=False,
            use_g=True,
            emphasis=emphasis,
            comma_backtrack=comma_backtrack,
        )
        self.skipped_embeddings = sorted(set(embeddings) - set(self._g.embeddings))

    def tokenize_chunks(self, prompt: str) -> list[Chunk]:
        return self._l.tokenize_chunks(prompt)

    def chunk_count(self, prompt: str) -> int:
        return len(self.tokenize_chunks(prompt))

    def encode_schedule(
        self, schedule: Sequence[tuple[int, str]]
    ) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """As :meth:`PromptEncoder.encode_schedule`: ``[(end_at_step, context, pooled)]``."""
        z, pooled = self.encode([text for _, text in schedule])
        return [(end, z[i : i + 1], pooled[i : i + 1]) for i, (end, _) in enumerate(schedule)]

    def encode(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(context (B, 77k, C_l + C_g), pooled (B, P))``, both float32."""
        z_l, _ = self._l.encode_batches(prompts)
        z_g, pooled = self._g.encode_batches(prompts)
        if pooled is None:
            raise ValueError("SDXL's second text encoder must be a CLIPTextModelWithProjection")
        return torch.cat([z_l, z_g], dim=-1), pooled
