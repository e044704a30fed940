"""Chunked CLIP encoding with WebUI semantics, on tiny random CLIP text models.

Expected tensors are computed independently: raw ids are built by hand from the tokenizer and pushed
through the model directly, and WebUI's emphasis formula is applied on the side.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from storyboard.errors import ModelError
from storyboard.prompt.embeddings import load_embedding
from storyboard.prompt.encode import PromptEncoder, SDXLPromptEncoder
from storyboard.prompt.tokenizer import load_clip_tokenizer

BOS, EOS, COMMA = 49406, 49407, 267
CAT, DOG = 2368, 1929

# The seed tutorial's negative prompt, extended the way such prompts grow, to about 120 tokens.
LONG_NEGATIVE = (
    "EasyNegative, (worst quality, low quality:1.4), (lip, nose, rouge, lipstick:1.4), "
    "(jpeg artifacts:1.4), (1boy, abs, muscular:1.0), greyscale, monochrome, dusty sunbeams, "
    "trembling, motion lines, motion blur, emphasis lines, text, title, logo, signature, "
    "bad anatomy, bad hands, missing fingers, extra digit, fewer digits, cropped, normal quality, "
    "username, watermark, blurry, artist name, extra limbs, disfigured, deformed, mutated hands, "
    "poorly drawn face, cloned face, long neck, extra arms, fused fingers"
)


def _config(hidden: int = 32, **extra: object) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=1,
        **extra,
    )


def _with_offset_norm(model: CLIPTextModel | CLIPTextModelWithProjection) -> None:
    """A fresh LayerNorm has zero bias, which makes z.mean() ~ 0 and the mean restore ill-posed;
    real CLIP weights have a clearly non-zero mean, so give the tiny models one too."""
    norm = getattr(model, "text_model", model).final_layer_norm
    with torch.no_grad():
        norm.bias.copy_(torch.randn(norm.bias.shape) * 0.3 + 1.0)
        norm.weight.copy_(torch.rand(norm.weight.shape) + 0.5)


@pytest.fixture(scope="module")
def model() -> CLIPTextModel:
    torch.manual_seed(0)
    m = CLIPTextModel(_config()).eval()
    _with_offset_norm(m)
    return m


@pytest.fixture(scope="module")
def encoder(model: CLIPTextModel) -> PromptEncoder:
    return PromptEncoder(load_clip_tokenizer(), model)


def _ids(text: str) -> list[int]:
    return load_clip_tokenizer()(text, add_special_tokens=False).input_ids


def _row(content: list[int]) -> list[int]:
    return [BOS, *content, *[EOS] * (75 - len(content)), EOS]


def _run(model: CLIPTextModel, rows: list[list[int]], layer: int | None = None) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_ids=torch.tensor(rows), output_hidden_states=True)
    if layer is None:
        return out.last_hidden_state
    return model.final_layer_norm(out.hidden_states[layer])


def _original_emphasis(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    m = z.mean()
    z = z * w[..., None]
    return z * (m / z.mean())


def test_long_prompt_chunk_layout(encoder: PromptEncoder, model: CLIPTextModel) -> None:
    prompt = " ".join(["cat"] * 100)
    chunks = encoder.tokenize_chunks(prompt)
    assert [c.tokens for c in chunks] == [_row([CAT] * 75), _row([CAT] * 25)]
    assert all(w == 1.0 for c in chunks for w in c.weights)
    z = encoder.encode([prompt])
    assert z.shape == (1, 154, 32)
    expected = torch.cat([_run(model, [_row([CAT] * 75)]), _run(model, [_row([CAT] * 25)])], dim=1)
    torch.testing.assert_close(z, expected)


def test_comma_backtrack_moves_tail_to_next_chunk(model: CLIPTextModel) -> None:
    tok = load_clip_tokenizer()
    prompt = " ".join(["cat"] * 70) + ", " + " ".join(["dog"] * 10)
    assert _ids(prompt) == [CAT] * 70 + [COMMA] + [DOG] * 10
    chunks = PromptEncoder(tok, model).tokenize_chunks(prompt)
    assert [c.tokens for c in chunks] == [_row([CAT] * 70 + [COMMA]), _row([DOG] * 10)]
    no_backtrack = PromptEncoder(tok, model, comma_backtrack=0).tokenize_chunks(prompt)
    assert [c.tokens for c in no_backtrack] == [_row([CAT] * 70 + [COMMA] + [DOG] * 4), _row([DOG] * 6)]
    # a comma more than 20 tokens back does not move anything
    far = " ".join(["cat"] * 50) + ", " + " ".join(["dog"] * 30)
    far_chunks = PromptEncoder(tok, model).tokenize_chunks(far)
    assert [c.tokens for c in far_chunks] == [_row([CAT] * 50 + [COMMA] + [DOG] * 24), _row([DOG] * 6)]


def test_break_starts_a_new_chunk(encoder: PromptEncoder) -> None:
    chunks = encoder.tokenize_chunks("a cat BREAK a dog")
    assert [c.tokens for c in chunks] == [_row(_ids("a cat")), _row(_ids("a dog"))]
    assert encoder.chunk_count("a cat BREAK") == 1
    assert encoder.chunk_count("") == 1
    assert encoder.tokenize_chunks("")[0].tokens == _row([])


def test_seed_style_negative_prompt_needs_two_chunks(encoder: PromptEncoder) -> None:
    chunks = encoder.tokenize_chunks(LONG_NEGATIVE)
    assert len(chunks) == 2
    content = [t for c in chunks for t in c.tokens if t not in (BOS, EOS)]
    assert 110 <= len(content) <= 130
    assert any(t != EOS for t in chunks[1].tokens[1:-1])
    assert encoder.encode([LONG_NEGATIVE]).shape == (1, 154, 32)


def test_emphasis_mean_restore_over_whole_batch(encoder: PromptEncoder, model: CLIPTextModel) -> None:
    prompts = ["a (cat:1.5) and [dog]", "(red:0.5) sky"]
    a, cat, and_, dog = _ids("a"), _ids("cat"), _ids("and"), _ids("dog")
    red, sky = _ids("red"), _ids("sky")
    rows = [_row(a + cat + and_ + dog), _row(red + sky)]
    w = torch.ones(2, 77)
    w[0, 1 + len(a)] = 1.5
    w[0, 1 + len(a) + len(cat) + len(and_)] = 1 / 1.1
    w[1, 1] = 0.5
    expected = _original_emphasis(_run(model, rows), w)
    torch.testing.assert_close(encoder.encode(prompts), expected)
    # per-prompt means would differ: the batch is one unit, as in WebUI
    alone = encoder.encode(prompts[:1])
    assert not torch.allclose(alone, expected[:1])


def test_clip_skip_two(model: CLIPTextModel) -> None:
    enc = PromptEncoder(load_clip_tokenizer(), model, clip_skip=2)
    expected = _run(model, [_row(_ids("a photo of a cat"))], layer=-2)
    torch.testing.assert_close(enc.encode(["a photo of a cat"]), expected)
    assert not torch.allclose(expected, _run(model, [_row(_ids("a photo of a cat"))]))


def test_short_prompts_padded_with_empty_chunks(encoder: PromptEncoder, model: CLIPTextModel) -> None:
    long = " ".join(["cat"] * 80)
    z = encoder.encode(["dog", long])
    assert z.shape == (2, 154, 32)
    # all weights are 1, so emphasis is the identity and the padding chunk is the empty chunk's encoding
    torch.testing.assert_close(z[0, 77:], _run(model, [_row([])])[0])
    torch.testing.assert_close(z[1, 77:], _run(model, [_row([CAT] * 5)])[0])


def test_encode_pair_and_padding(encoder: PromptEncoder) -> None:
    cond, uncond = encoder.encode_pair([LONG_NEGATIVE], ["lowres"])
    assert cond.shape[1] == 154 and uncond.shape[1] == 77
    cond_p, uncond_p = encoder.encode_pair([LONG_NEGATIVE], ["lowres"], pad=True)
    assert uncond_p.shape[1] == 154
    torch.testing.assert_close(uncond_p[:, :77], uncond)
    torch.testing.assert_close(uncond_p[:, 77:], encoder.encode([""]))
    torch.testing.assert_close(cond_p, cond)


@pytest.fixture(scope="module")
def embedding_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("emb")
    g = torch.Generator().manual_seed(1)
    st_path = folder / "EasyNegative.safetensors"
    save_file({"emb_params": torch.randn(2, 32, generator=g)}, str(st_path))
    pt_path = folder / "mystyle.pt"
    torch.save({"string_to_param": {"*": torch.randn(3, 32, generator=g)}, "name": "mystyle"}, str(pt_path))
    return st_path, pt_path


def test_embedding_formats_load(embedding_files: tuple[Path, Path]) -> None:
    st_path, pt_path = embedding_files
    emb = load_embedding(st_path)
    assert (emb.name, tuple(emb.vectors.shape), emb.vectors_g) == ("EasyNegative", (2, 32), None)
    import hashlib

    assert emb.sha256 == hashlib.sha256(st_path.read_bytes()).hexdigest()
    with pytest.raises(ModelError, match="pickle"):
        load_embedding(pt_path)
    pt = load_embedding(pt_path, allow_pickle=True)
    assert (pt.name, tuple(pt.vectors.shape)) == ("mystyle", (3, 32))


def test_embedding_vectors_placed_with_emphasis(
    embedding_files: tuple[Path, Path], model: CLIPTextModel
) -> None:
    st_path, pt_path = embedding_files
    easy, style = load_embedding(st_path), load_embedding(pt_path, allow_pickle=True)
    enc = PromptEncoder(load_clip_tokenizer(), model, {"EasyNegative": easy, "mystyle": style})
    prompt = "EasyNegative, a (mystyle:1.2) cat"
    (chunk,) = enc.tokenize_chunks(prompt)
    a, cat = _ids("a"), _ids("cat")
    assert [(pos, e.name) for pos, e in chunk.embeddings] == [(1, "EasyNegative"), (5, "mystyle")]
    assert chunk.tokens[:10] == [BOS, 0, 0, COMMA, *a, 0, 0, 0, *cat, EOS]
    assert chunk.weights[5:8] == [1.2, 1.2, 1.2]
    assert [e.name for e in enc.used_embeddings(prompt)] == ["EasyNegative", "mystyle"]

    # Independent route: the vectors as extra vocabulary rows (as diffusers' load_textual_inversion does)
    ref = copy.deepcopy(model)
    ref.resize_token_embeddings(49408 + 5)
    with torch.no_grad():
        ref.embeddings.token_embedding.weight[49408:49410] = easy.vectors
        ref.embeddings.token_embedding.weight[49410:49413] = style.vectors
    row = _row([49408, 49409, COMMA, *a, 49410, 49411, 49412, *cat])
    w = torch.ones(1, 77)
    w[0, 5:8] = 1.2
    expected = _original_emphasis(_run(ref, [row]), w)
    torch.testing.assert_close(enc.encode([prompt]), expected)


def test_embedding_never_straddles_chunks(embedding_files: tuple[Path, Path], model: CLIPTextModel) -> None:
    style = load_embedding(embedding_files[1], allow_pickle=True)
    enc = PromptEncoder(load_clip_tokenizer(), model, {"mystyle": style})
    chunks = enc.tokenize_chunks(" ".join(["cat"] * 74) + " mystyle")
    assert [c.tokens for c in chunks] == [_row([CAT] * 74), _row([0, 0, 0])]
    assert [(pos, e.name) for pos, e in chunks[1].embeddings] == [(1, "mystyle")]
    assert chunks[0].embeddings == []


def test_sdxl_encoder_concatenates_and_pools_first_chunk(tmp_path: Path) -> None:
    torch.manual_seed(2)
    model_l = CLIPTextModel(_config(32)).eval()
    model_g = CLIPTextModelWithProjection(_config(40, projection_dim=24)).eval()
    _with_offset_norm(model_l)
    _with_offset_norm(model_g)
    tok_l, tok_g = load_clip_tokenizer(), load_clip_tokenizer("!")
    enc = SDXLPromptEncoder(tok_l, model_l, tok_g, model_g)
    prompt = " ".join(["cat"] * 80)
    z, pooled = enc.encode([prompt])
    assert z.shape == (1, 154, 72) and pooled.shape == (1, 24)
    rows = [_row([CAT] * 75), _row([CAT] * 5)]
    g_rows = [r[: r.index(EOS) + 1] + [0] * (76 - r.index(EOS)) for r in rows]  # "!" after first EOS
    with torch.no_grad():
        outs_l = [model_l(input_ids=torch.tensor([r]), output_hidden_states=True) for r in rows]
        outs_g = [model_g(input_ids=torch.tensor([r]), output_hidden_states=True) for r in g_rows]
    expected = torch.cat(
        [
            torch.cat([o_l.hidden_states[-2], o_g.hidden_states[-2]], -1)
            for o_l, o_g in zip(outs_l, outs_g, strict=True)
        ],
        dim=1,
    )
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(pooled, outs_g[0].text_embeds)
    ((end, z_s, pooled_s),) = enc.encode_schedule([(20, prompt)])
    assert end == 20
    torch.testing.assert_close(z_s, z)
    torch.testing.assert_close(pooled_s, pooled)


def test_backtrack_leaves_embedding_behind_like_webui(
    embedding_files: tuple[Path, Path], model: CLIPTextModel
) -> None:
    # WebUI moves the tokens after the comma but not the embedding's fix: its vectors stay at the old
    # offset of the first chunk (now padding) and the moved slots are plain token 0.
    style = load_embedding(embedding_files[1], allow_pickle=True)
    enc = PromptEncoder(load_clip_tokenizer(), model, {"mystyle": style})
    chunks = enc.tokenize_chunks(" ".join(["cat"] * 70) + ", mystyle dog dog")
    assert [c.tokens for c in chunks] == [_row([CAT] * 70 + [COMMA]), _row([0, 0, 0, DOG, DOG])]
    assert [(pos, e.name) for pos, e in chunks[0].embeddings] == [(72, "mystyle")]
    assert chunks[1].embeddings == []


def test_other_emphasis_modes(model: CLIPTextModel) -> None:
    tok = load_clip_tokenizer()
    row = _row(_ids("a") + _ids("cat"))
    w = torch.ones(1, 77)
    w[0, 2] = 1.5
    raw = _run(model, [row])
    no_norm = PromptEncoder(tok, model, emphasis="No norm").encode(["a (cat:1.5)"])
    torch.testing.assert_close(no_norm, raw * w[..., None])
    ignore = PromptEncoder(tok, model, emphasis="Ignore").encode(["a (cat:1.5)"])
    torch.testing.assert_close(ignore, raw)
    literal = PromptEncoder(tok, model, emphasis="None").tokenize_chunks("a (cat:1.5) BREAK b")
    assert literal[0].tokens == _row(_ids("a (cat:1.5) BREAK b"))
    with pytest.raises(ValueError):
        PromptEncoder(tok, model, emphasis="Loud")


def test_embedding_of_wrong_width_is_plain_text(tmp_path: Path, model: CLIPTextModel) -> None:
    path = tmp_path / "wide.safetensors"
    save_file({"emb_params": torch.ones(1, 1024)}, str(path))  # an SD2 embedding on an SD1 model
    enc = PromptEncoder(load_clip_tokenizer(), model, {"wide": load_embedding(path)})
    assert enc.skipped_embeddings == ["wide"]
    assert enc.tokenize_chunks("wide")[0].tokens == _row(_ids("wide"))


def test_encode_schedule_batches_the_schedule_texts(encoder: PromptEncoder) -> None:
    from storyboard.prompt.schedule import prompt_schedule

    sched = prompt_schedule("a [(cat:1.3):dog:3] " + " ".join(["sky"] * 73) + " [x:5]", 10)
    assert [end for end, _ in sched] == [3, 5, 10]
    assert [encoder.chunk_count(t) for _, t in sched] == [1, 1, 2]
    encoded = encoder.encode_schedule(sched)
    together = encoder.encode([t for _, t in sched])
    assert [end for end, _ in encoded] == [3, 5, 10]
    for i, (_, z) in enumerate(encoded):
        assert z.shape == (1, 154, 32)  # the last text needs 2 chunks, so all get 2
        torch.testing.assert_close(z, together[i : i + 1])
