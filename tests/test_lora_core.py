"""LoRA engine: merged weights against formulas written here independently, restore, mapping, checks."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_lora_fixtures import tiny_text_encoder, tiny_text_encoder_2, tiny_unet

from storyboard.errors import ModelError
from storyboard.models.lora import LoraPatcher, LoraWarning, check_compatible, detect_lora_base, read_lora
from storyboard.models.lora_formats import parse_state_dict
from storyboard.models.lora_keys import build_key_map, diffusers_to_ldm_module_path
from storyboard.models.lora_write import write_kohya_lora


@pytest.fixture(scope="module")
def base_models():
    return tiny_unet(), tiny_text_encoder()


@pytest.fixture
def models(base_models):
    unet, te = base_models
    return copy.deepcopy(unet), copy.deepcopy(te)


# --- independent reference --------------------------------------------------------------------------
# Each formula is written out from the LyCORIS/WebUI definitions with plain torch ops (no einsum
# strings, no code shared with the implementation).


def ref_module_delta(t: dict[str, torch.Tensor], shape: torch.Size) -> torch.Tensor:
    t = {k: v.double() for k, v in t.items()}
    alpha = float(t["alpha"])  # the writer always stores alpha
    if "lora_up.weight" in t:
        up, down = t["lora_up.weight"], t["lora_down.weight"]
        rank = down.shape[0]
        up2 = up.reshape(up.shape[0], rank)
        if "lora_mid.weight" in t:
            mid = t["lora_mid.weight"]  # (r, r, kh, kw)
            down2 = down.reshape(rank, -1)
            # W[o, i, y, x] = Σ_n Σ_m up[o, n] mid[n, m, y, x] down[m, i]
            per_pixel = up2 @ mid.permute(2, 3, 0, 1) @ down2  # (kh, kw, out, in)
            d = per_pixel.permute(2, 3, 0, 1)
        else:
            d = (up2 @ down.reshape(rank, -1)).reshape(shape)
        return d * (alpha / rank)
    if "hada_w1_a" in t:
        rank = t["hada_w1_b"].shape[0]

        def factor(i: int) -> torch.Tensor:
            wa, wb = t[f"hada_w{i}_a"], t[f"hada_w{i}_b"]
            if f"hada_t{i}" in t:
                tt = t[f"hada_t{i}"]  # W[o,i,y,x] = Σ_p Σ_q wa[p,o] t[p,q,y,x] wb[q,i]
                return (wa.T @ tt.permute(2, 3, 0, 1) @ wb).permute(2, 3, 0, 1)
            return (wa @ wb).reshape(shape)

        return factor(1) * factor(2) * (alpha / rank)
    if "lokr_w1" in t:
        w1 = t["lokr_w1"]
        if "lokr_w2" in t:
            w2 = t["lokr_w2"]
            scale = 1.0  # no decomposed factor -> no rank -> WebUI ignores alpha
        else:
            w2 = t["lokr_w2_a"] @ t["lokr_w2_b"]
            scale = alpha / t["lokr_w2_b"].shape[0]
        a, b = w1.shape
        c, dd = w2.shape[:2]
        # Kronecker product by its definition: block (p, q) is w1[p, q] * w2.
        out = torch.zeros(a * c, b * dd, *w2.shape[2:], dtype=w1.dtype)
        for p in range(a):
            for q in range(b):
                out[p * c : (p + 1) * c, q * dd : (q + 1) * dd] = w1[p, q] * w2
        return out.reshape(shape) * scale
    raise AssertionError(f"unknown module keys {sorted(t)}")


def kohya_groups(path) -> dict[str, dict[str, torch.Tensor]]:
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in load_file(str(path)).items():
        name, suffix = key.split(".", 1)
        groups.setdefault(name, {})[suffix] = value
    return groups


def ref_layer_name(component: str, name: str) -> str:
    # Written independently of lora_keys: diffusers SD1 naming, transformers-4 text-encoder naming.
    if component == "unet":
        return "lora_unet_" + name.replace(".", "_")
    return "lora_te_text_model_" + name.replace(".", "_")


def expected_weights(unet, te, files_and_mults):
    """{(component, param name): W0 + Σ mult·ΔW} in float64 for every layer a file touches."""
    groups = [(kohya_groups(p), te_m, un_m) for p, te_m, un_m in files_and_mults]
    out = {}
    for component, model in (("unet", unet), ("text_encoder", te)):
        for name, module in model.named_modules():
            if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                continue
            key = ref_layer_name(component, name)
            w = module.weight.detach().double().clone()
            touched = False
            for g, te_mult, unet_mult in groups:
                if key in g:
                    mult = unet_mult if component == "unet" else te_mult
                    w += mult * ref_module_delta(g[key], module.weight.shape)
                    touched = True
            if touched:
                out[(component, name + ".weight")] = w
    return out


def assert_merged(unet, te, base_unet, base_te, expected):
    assert expected, "the LoRA touched no layer"
    for component, model, base in (("unet", unet, base_unet), ("text_encoder", te, base_te)):
        base_params = dict(base.named_parameters())
        for pname, param in model.named_parameters():
            want = expected.get((component, pname))
            if want is None:
                assert torch.equal(param, base_params[pname]), f"{component}.{pname} changed"
            else:
                torch.testing.assert_close(param.double(), want, rtol=1e-5, atol=1e-6)


def assert_bit_identical(model, base):
    base_params = dict(base.named_parameters())
    for pname, param in model.named_parameters():
        assert torch.equal(param, base_params[pname]), pname


# --- tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,cp",
    [("lora", False), ("locon", False), ("locon", True), ("loha", False), ("loha", True), ("lokr", False)],
)
def test_merge_matches_independent_formula_and_restores(tmp_path, base_models, models, kind, cp):
    base_unet, base_te = base_models
    unet, te = models
    path = write_kohya_lora(tmp_path / f"{kind}.safetensors", unet, te, kind=kind, cp=cp, rank=4, alpha=3.0)
    net = read_lora(path)
    if cp and kind == "locon":
        assert any("lora_mid.weight" in m.tensors for m in net.modules.values())
    patcher = LoraPatcher(unet=unet, text_encoder=te)
    report = patcher.apply([(net, 0.6, 0.8)])
    assert report.unmatched == [] and report.modules == len(net.modules)
    expected = expected_weights(base_unet, base_te, [(path, 0.6, 0.8)])
    assert len(expected) == len(net.modules)
    assert_merged(unet, te, base_unet, base_te, expected)
    patcher.restore()
    assert_bit_identical(unet, base_unet)
    assert_bit_identical(te, base_te)


def test_conv_layers_get_spatial_deltas(tmp_path, base_models, models):
    unet, te = models
    net = read_lora(write_kohya_lora(tmp_path / "c.safetensors", unet, None, kind="locon"))
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    assert net.modules[conv].tensors["lora_down.weight"].shape == (4, 32, 3, 3)
    assert net.modules[conv].tensors["lora_up.weight"].shape == (32, 4, 1, 1)
    LoraPatcher(unet=unet).apply([(net, 1.0, 1.0)])
    assert not torch.equal(
        unet.down_blocks[0].resnets[0].conv1.weight, base_models[0].down_blocks[0].resnets[0].conv1.weight
    )


def test_two_loras_with_separate_multipliers(tmp_path, base_models, models):
    base_unet, base_te = base_models
    unet, te = models
    a = write_kohya_lora(tmp_path / "char.safetensors", unet, te, kind="lora", rank=4, seed=1)
    b = write_kohya_lora(tmp_path / "style.safetensors", unet, te, kind="locon", rank=8, alpha=2.0, seed=2)
    patcher = LoraPatcher(unet=unet, text_encoder=te)
    patcher.apply([(read_lora(a), 1.0, 0.5), (read_lora(b), -0.3, 1.2)])
    expected = expected_weights(base_unet, base_te, [(a, 1.0, 0.5), (b, -0.3, 1.2)])
    assert_merged(unet, te, base_unet, base_te, expected)


def test_switch_equals_fresh_apply_and_repeat_is_noop(tmp_path, base_models, models):
    base_unet, base_te = base_models
    unet, te = models
    a = read_lora(write_kohya_lora(tmp_path / "a.safetensors", unet, te, kind="lora", seed=1))
    b = read_lora(write_kohya_lora(tmp_path / "b.safetensors", unet, None, kind="loha", seed=2))
    patcher = LoraPatcher(unet=unet, text_encoder=te)
    patcher.apply([(a, 1.0, 1.0)])
    q = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    version = q._version
    patcher.apply([(a, 1.0, 1.0)])
    assert q._version == version  # same set again: nothing written
    patcher.apply([(b, 1.0, 0.7)])  # A -> B
    fresh_unet, fresh_te = copy.deepcopy(base_unet), copy.deepcopy(base_te)
    LoraPatcher(unet=fresh_unet, text_encoder=fresh_te).apply([(b, 1.0, 0.7)])
    assert_bit_identical(unet, fresh_unet)
    assert_bit_identical(te, fresh_te)  # A's text-encoder layers went back to base
    patcher.apply([])
    assert_bit_identical(unet, base_unet)


def test_restore_is_bit_exact_in_fp16(tmp_path, base_models):
    unet = copy.deepcopy(base_models[0]).half()
    te = copy.deepcopy(base_models[1]).half()
    ref_u, ref_t = copy.deepcopy(unet), copy.deepcopy(te)
    net = read_lora(write_kohya_lora(tmp_path / "h.safetensors", unet, te, kind="locon", cp=True))
    patcher = LoraPatcher(unet=unet, text_encoder=te)
    for _ in range(3):
        patcher.apply([(net, 0.9, 1.1)])
        assert unet.dtype == torch.float16
        patcher.restore()
    assert_bit_identical(unet, ref_u)
    assert_bit_identical(te, ref_t)


def test_weight_zero_leaves_weights_bit_identical(tmp_path, base_models, models):
    base_unet, base_te = base_models
    unet, te = models
    # A -0.0 weight would turn into +0.0 if a zero delta were added: make sure one exists.
    unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight.data[0, 0] = -0.0
    ref_unet = copy.deepcopy(unet)
    net = read_lora(write_kohya_lora(tmp_path / "z.safetensors", unet, te))
    patcher = LoraPatcher(unet=unet, text_encoder=te)
    patcher.apply([(net, 0.0, 0.0)])
    assert_bit_identical(unet, ref_unet)
    assert_bit_identical(te, base_te)
    patcher.apply([(net, 0.0, 1.0)])  # te multiplier 0 only: text encoder untouched, UNet merged
    assert_bit_identical(te, base_te)
    touched = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    assert not torch.equal(
        touched, ref_unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight
    )


def test_text_encoder_names_map_onto_transformers5_clip():
    te = tiny_text_encoder()
    te2 = tiny_text_encoder_2()
    km = build_key_map({"text_encoder": te, "text_encoder_2": te2})
    # transformers 5 names it "encoder.layers.0.self_attn.q_proj" (4.x: "text_model.encoder...").
    q_path = next(n for n, _ in te.named_modules() if n.endswith("encoder.layers.0.self_attn.q_proj"))
    assert km["lora_te_text_model_encoder_layers_0_self_attn_q_proj"].module is te.get_submodule(q_path)
    assert km["lora_te1_text_model_encoder_layers_1_mlp_fc2"].component == "text_encoder"
    target = km["lora_te2_text_model_encoder_layers_1_mlp_fc1"]
    assert target.component == "text_encoder_2"
    assert target.module is te2.get_submodule("text_model.encoder.layers.1.mlp.fc1")
    t = km["lora_te_text_model_encoder_layers_1_self_attn_out_proj"]
    assert t.module.weight.shape == (32, 32) and t.component == "text_encoder"


def test_ldm_paths_of_sd15_layout():
    # Known SD1.5 correspondences (layers_per_block 2, up block 0 without attention).
    up_attn = [False, True, True, True]
    cases = {
        "down_blocks.0.attentions.0.proj_in": "input_blocks.1.1.proj_in",
        "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k": (
            "input_blocks.5.1.transformer_blocks.0.attn2.to_k"
        ),
        "down_blocks.2.downsamplers.0.conv": "input_blocks.9.0.op",
        "down_blocks.3.resnets.1.conv2": "input_blocks.11.0.out_layers.3",
        "down_blocks.1.resnets.0.conv_shortcut": "input_blocks.4.0.skip_connection",
        "mid_block.attentions.0.proj_out": "middle_block.1.proj_out",
        "mid_block.resnets.1.time_emb_proj": "middle_block.2.emb_layers.1",
        "up_blocks.0.upsamplers.0.conv": "output_blocks.2.1.conv",
        "up_blocks.1.upsamplers.0.conv": "output_blocks.5.2.conv",
        "up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2": (
            "output_blocks.11.1.transformer_blocks.0.ff.net.2"
        ),
        "up_blocks.2.resnets.0.conv1": "output_blocks.6.0.in_layers.2",
        "conv_in": "input_blocks.0.0",
    }
    for diffusers_path, ldm in cases.items():
        assert diffusers_to_ldm_module_path(diffusers_path, 2, up_attn) == ldm


def test_ldm_named_lora_maps_to_same_layers(tmp_path, base_models, models):
    base_unet, base_te = base_models
    unet, te = models
    diff = write_kohya_lora(tmp_path / "d.safetensors", unet, None, kind="locon", seed=5)
    ldm = write_kohya_lora(tmp_path / "l.safetensors", unet, None, kind="locon", seed=5, unet_layout="ldm")
    ldm_net = read_lora(ldm)
    assert "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q" in ldm_net.modules
    assert "lora_unet_output_blocks_1_1_conv" in ldm_net.modules  # up block 0 has no attention
    LoraPatcher(unet=unet).apply([(ldm_net, 1.0, 1.0)])
    expected = expected_weights(base_unet, base_te, [(diff, 1.0, 1.0)])
    assert_merged(unet, te, base_unet, base_te, expected)


def test_unmatched_keys_are_reported(tmp_path, models):
    unet, te = models
    path = write_kohya_lora(tmp_path / "u.safetensors", unet, te)
    sd = load_file(str(path))
    sd["lora_unet_not_a_layer.lora_down.weight"] = torch.zeros(4, 8)
    sd["lora_unet_not_a_layer.lora_up.weight"] = torch.zeros(8, 4)
    sd["lora_unet_not_a_layer.alpha"] = torch.tensor(2.0)
    extra = tmp_path / "extra.safetensors"
    save_file(sd, str(extra))
    patcher = LoraPatcher(unet=unet, text_encoder=te)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = patcher.apply([(read_lora(extra), 1.0, 1.0)])
    assert len(report.unmatched) == 1
    assert report.unmatched[0].count == 1 and report.unmatched[0].first == ["lora_unet_not_a_layer"]
    assert any(issubclass(w.category, LoraWarning) and "not_a_layer" in str(w.message) for w in caught)


def test_sdxl_lora_on_sd1_model_is_rejected(tmp_path, models):
    unet, te = models
    xl = read_lora(
        write_kohya_lora(tmp_path / "xl.safetensors", unet, te, base_model_version="sdxl_base_v1-0")
    )
    with pytest.raises(ModelError, match=r"xl\.safetensors was trained for SDXL but the model is SD 1\.x"):
        LoraPatcher(unet=unet, text_encoder=te, model_kind="sd1").apply([(xl, 1.0, 1.0)])
    with pytest.raises(ModelError, match="SDXL"):
        check_compatible(xl, "sd1")
    # Key shapes decide even without metadata: a 2048-wide cross-attention input is SDXL's.
    sd = {
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.zeros(
            4, 2048
        ),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": torch.zeros(
            640, 4
        ),
    }
    net = parse_state_dict(sd, {"ss_base_model_version": "sd_v1"}, tmp_path / "liar.safetensors")
    assert detect_lora_base(net) == "sdxl"
    with pytest.raises(ModelError, match="liar.safetensors"):
        check_compatible(net, "sd1")
    check_compatible(read_lora(tmp_path / "xl.safetensors"), "sdxl")  # right family: no error


def test_pickle_needs_opt_in_and_cache(tmp_path, models):
    unet, te = models
    path = write_kohya_lora(tmp_path / "p.safetensors", unet, te)
    pt = tmp_path / "p.pt"
    torch.save(load_file(str(path)), pt)
    with pytest.raises(ModelError, match="pickle"):
        read_lora(pt)
    net_pt = read_lora(pt, allow_pickle=True)
    net = read_lora(path)
    assert read_lora(path) is net  # cached
    assert set(net_pt.modules) == set(net.modules)
    for name, m in net.modules.items():
        for k, v in m.tensors.items():
            assert torch.equal(v, net_pt.modules[name].tensors[k])
    write_kohya_lora(path, unet, te, seed=9)  # rewritten: new mtime/size -> new parse
    import os

    os.utime(path, ns=(1, 1))
    assert read_lora(path) is not net


def test_written_file_is_kohya_shaped(tmp_path, models):
    unet, te = models
    path = write_kohya_lora(tmp_path / "k.safetensors", unet, te, kind="lora", rank=4, alpha=2.0)
    sd = load_file(str(path))
    q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert sd[f"{q}.lora_down.weight"].shape == (4, 32) and sd[f"{q}.lora_up.weight"].shape == (32, 4)
    assert sd[f"{q}.alpha"].item() == 2.0 and sd[f"{q}.lora_down.weight"].dtype == torch.float16
    assert sd["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight"].shape == (4, 32, 1, 1)
    assert "lora_te_text_model_encoder_layers_1_mlp_fc1.lora_up.weight" in sd
    assert not any("resnets" in k for k in sd)  # plain LoRA: no conv layers
    names = {k.split(".")[0] for k in sd}
    # kohya's plain LoRA set: 10 linears + proj_in/out per transformer block, 6 layers per CLIP layer.
    assert len(names) == 4 * 12 + 2 * 6  # 4 transformer blocks (down, mid, 2 up), 2 CLIP layers


def test_batched_merge_with_mixed_ranks_and_small_chunks(tmp_path, base_models, models, monkeypatch):
    import storyboard.models.lora as lora_mod

    base_unet, base_te = base_models
    unet, te = models
    full = write_kohya_lora(tmp_path / "full.safetensors", unet, te, rank=4, seed=3)
    # A second LoRA on only some layers, with another rank: same-shape layers get different total
    # ranks, so the batched product zero-pads some of them.
    sd = load_file(str(write_kohya_lora(tmp_path / "p.safetensors", unet, te, rank=2, seed=4)))
    part = tmp_path / "partial.safetensors"
    save_file({k: v for k, v in sd.items() if "attn1" in k or "layers_0" in k}, str(part))
    monkeypatch.setattr(lora_mod, "_MAX_BATCH_ELEMENTS", 3 * 32 * 32)  # several chunks per shape
    patcher = LoraPatcher(unet=unet, text_encoder=te)
    uses = [(read_lora(full), 0.7, 1.1), (read_lora(part), 1.0, -0.5)]
    patcher.apply(uses)
    expected = expected_weights(base_unet, base_te, [(full, 0.7, 1.1), (part, 1.0, -0.5)])
    assert_merged(unet, te, base_unet, base_te, expected)
    snapshot = copy.deepcopy(unet)
    patcher.restore()
    assert_bit_identical(unet, base_unet)
    patcher.apply(uses)  # prepared set reused: same bits as the first time
    assert_bit_identical(unet, snapshot)


def test_inpainting_conv_in_delta_is_zero_padded():
    from storyboard.models.lora_formats import LoraModule
    from storyboard.models.lora_math import compute_delta

    up, down = torch.randn(8, 2, 1, 1), torch.randn(2, 4, 3, 3)
    module = LoraModule(
        "lora_unet_conv_in", "lora", {"lora_up.weight": up, "lora_down.weight": down}, alpha=1.0
    )
    delta = compute_delta(module, (8, 9, 3, 3), 2.0)
    want = torch.einsum("or,rikl->oikl", up.flatten(1), down) * (1.0 / 2) * 2.0
    torch.testing.assert_close(delta[:, :4], want)
    assert torch.count_nonzero(delta[:, 4:]) == 0
    with pytest.raises(ModelError, match="different base model"):
        compute_delta(module, (8, 5, 3, 3), 1.0)
