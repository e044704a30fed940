"""FLOPs of one UNet forward, counted from the model config and the input shapes.

Counted the way ``torch.utils.flop_counter`` counts (2 FLOPs per multiply-add; matrix products,
convolutions and attention only; norms, activations and additions are free; biases are free), so
tests can check the count against an independent one: ``counted_flops`` runs the real module under
``FlopCounterMode``. The count covers what diffusers' ``UNet2DConditionModel`` does for SD1.x/SD2.x
and SDXL configs: conv_in, time embedding, ResNet blocks (conv1, conv2, time projection, 1x1
shortcut), transformer blocks (proj in/out, self- and cross-attention, GEGLU feed-forward),
down/upsamplers, the mid block and conv_out.

Why: achieved TFLOP/s is the figure that says how far a render is from the hardware's bound
(performance notes: 0.891 TFLOP per UNet call at 448x640, 5.313 at 896x1280).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any


def _per_block(value: Any, n: int) -> list[int]:
    return list(value) if isinstance(value, (list, tuple)) else [int(value)] * n


def _conv(b: int, cin: int, cout: int, h: int, w: int, k: int) -> int:
    return 2 * b * h * w * cout * cin * k * k


def _linear(rows: int, cin: int, cout: int) -> int:
    return 2 * rows * cin * cout


def unet_flops(config: Mapping[str, Any], batch: int, latent_h: int, latent_w: int, tokens: int = 77) -> int:
    """FLOPs of one forward of a diffusers UNet2DConditionModel with this config.

    ``batch`` counts every image in the call (both CFG halves: 2 for one panel), ``tokens`` is the
    text length (77 per CLIP chunk)."""
    chans = list(config["block_out_channels"])
    n = len(chans)
    lpb = _per_block(config.get("layers_per_block", 2), n)
    tlayers = _per_block(config.get("transformer_layers_per_block", 1) or 1, n)
    down_types = list(config["down_block_types"])
    up_types = list(config["up_block_types"])
    cross = int(config["cross_attention_dim"])
    temb = chans[0] * 4
    b = batch

    def resnet(cin: int, cout: int, h: int, w: int) -> int:
        f = _conv(b, cin, cout, h, w, 3) + _conv(b, cout, cout, h, w, 3) + _linear(b, temb, cout)
        return f + (_conv(b, cin, cout, h, w, 1) if cin != cout else 0)

    def transformer(c: int, h: int, w: int, depth: int) -> int:
        s = h * w
        rows = b * s
        # Self-attention: q, k, v, out projections, then QK^T and AV (2 x 2*b*s*s*c).
        self_attn = 4 * _linear(rows, c, c) + 4 * b * s * s * c
        # Cross-attention: q and out over the image, k and v over the text, then QK^T and AV.
        cross_attn = 2 * _linear(rows, c, c) + 2 * _linear(b * tokens, cross, c) + 4 * b * s * tokens * c
        geglu = _linear(rows, c, 8 * c) + _linear(rows, 4 * c, c)  # proj to 2 x 4c, gate, then out
        per_block = self_attn + cross_attn + geglu
        return 2 * _linear(rows, c, c) + depth * per_block  # proj_in/out (1x1 conv or linear)

    h, w = latent_h, latent_w
    total = _conv(b, int(config.get("in_channels", 4)), chans[0], h, w, 3)
    total += _linear(b, chans[0], temb) + _linear(b, temb, temb)
    if config.get("addition_embed_type") == "text_time":
        total += _linear(b, int(config["projection_class_embeddings_input_dim"]), temb)
        total += _linear(b, temb, temb)
    sizes = [(h, w)]
    cin = chans[0]
    for i, kind in enumerate(down_types):
        for _ in range(lpb[i]):
            total += resnet(cin, chans[i], h, w)
            cin = chans[i]
            if kind.startswith("CrossAttn"):
                total += transformer(chans[i], h, w, tlayers[i])
        if i < n - 1:
            h, w = (h + 1) // 2, (w + 1) // 2  # 3x3 conv, stride 2, padding 1
            total += _conv(b, chans[i], chans[i], h, w, 3)
            sizes.append((h, w))
    total += 2 * resnet(chans[-1], chans[-1], h, w)
    if config.get("mid_block_type", "UNetMidBlock2DCrossAttn") == "UNetMidBlock2DCrossAttn":
        total += transformer(chans[-1], h, w, tlayers[-1])
    rev = chans[::-1]
    rev_layers = lpb[::-1]
    rev_t = tlayers[::-1]
    out_ch = rev[0]
    for i, kind in enumerate(up_types):
        prev, out_ch = out_ch, rev[i]
        skip_in = rev[min(i + 1, n - 1)]
        h, w = sizes[n - 1 - i]
        layers = rev_layers[i] + 1
        for j in range(layers):
            skip = skip_in if j == layers - 1 else out_ch
            res_in = prev if j == 0 else out_ch
            total += resnet(res_in + skip, out_ch, h, w)
            if kind.startswith("CrossAttn"):
                total += transformer(out_ch, h, w, rev_t[i])
        if i < n - 1:
            h2, w2 = sizes[n - 2 - i]  # nearest 2x up to the skip's size, then a 3x3 conv
            total += _conv(b, out_ch, out_ch, h2, w2, 3)
    total += _conv(b, chans[0], int(config.get("out_channels", 4)), latent_h, latent_w, 3)
    return total


def counted_flops(fn: Callable[[], object]) -> int:
    """FLOPs torch's own counter sees while ``fn`` runs (the independent count)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    mode = FlopCounterMode(display=False)
    # The math backend spells attention as matrix products, which the counter sees; torch 2.13 does
    # not count the fused CPU flash-attention kernel at all.
    with sdpa_kernel(SDPBackend.MATH), mode:
        fn()
    return int(mode.get_total_flops())


def vae_decode_flops(vae_config: Mapping[str, Any], latent_h: int, latent_w: int) -> int:
    """FLOPs of one VAE decode, counted by torch on a meta-device copy (no memory, no compute)."""
    import torch
    from diffusers import AutoencoderKL

    with torch.device("meta"):
        vae: Any = AutoencoderKL.from_config(dict(vae_config))
        z = torch.empty(1, int(vae_config.get("latent_channels", 4)), latent_h, latent_w)

    def run() -> None:
        with torch.no_grad():
            vae.decode(z)

    return counted_flops(run)


def calls_flops(config: Mapping[str, Any], calls: Sequence[tuple[int, int, int, int]]) -> int:
    """Total over recorded UNet calls (batch, latent_h, latent_w, tokens)."""
    return sum(unet_flops(config, b, h, w, t) for b, h, w, t in calls)
