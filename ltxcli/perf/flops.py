"""The FLOP model: matrix-product FLOPs of every stage, derived from architecture configs.

FLOPs count the matrix products only (linear layers, attention ``QK^T`` and ``PV``, convolutions) at
2 FLOPs per multiply-accumulate; norms, activations, RoPE and modulation are memory-bound and left out, as in
``shared/reference/performance.md`` §3 (one 2B forward at 768x512x121 with 128 text tokens: 29.1 TFLOP; one
0.9.5-family VAE decode there: 60.2 TFLOP). Every count is derived from an architecture config, so it holds
for 2B, 13B and the tiny test models alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..models.configs import TransformerConfig, UpsamplerConfig, VAEConfig
from ..models.embeddings import TIME_PROJ_DIM
from ..vae_tiling import decoder_ops


def _linear(rows: float, fan_in: int, fan_out: int) -> float:
    return 2.0 * rows * fan_in * fan_out


def transformer_flops(
    cfg: TransformerConfig, tokens: int, text_len: int, batch: int = 1, timestep_rows: int | None = None,
    text_kv: bool = False,
) -> dict[str, float]:
    """FLOPs of one DiT forward on ``batch`` sequences of ``tokens`` video tokens and ``text_len`` text tokens.

    ``timestep_rows``: rows per sequence that go through the adaLN timestep MLP (1 for one timestep per
    sequence, ``tokens`` for per-token timesteps); default 1. Returns ``linear``, ``self_attn`` (QK^T and PV
    of attn1), ``cross_attn`` (the same for attn2) and ``total``. ``text_kv``: the call got the text's keys and
    values computed before (:mod:`ltxcli.text_cache`), so it runs neither the caption projection nor attn2's k, v.
    """
    d, n, s = cfg.inner_dim, tokens, text_len
    rows_t = 1 if timestep_rows is None else timestep_rows
    per_block_video = (
        4 * _linear(n, d, d)  # attn1 q, k, v, out
        + 2 * _linear(n, d, d)  # attn2 q, out
        + _linear(n, d, 4 * d) + _linear(n, 4 * d, d)  # feed-forward
    )
    per_block_text = 0.0 if text_kv else 2 * _linear(s, cfg.cross_attention_dim, d)  # attn2 k, v of the caption
    caption = 0.0 if text_kv else _linear(s, cfg.caption_channels, d) + _linear(s, d, d)  # caption projection
    outside = (
        _linear(n, cfg.in_channels, d) + _linear(n, d, cfg.out_channels)  # patchify_proj, proj_out
        + caption
        + _linear(rows_t, TIME_PROJ_DIM, d) + _linear(rows_t, d, d) + _linear(rows_t, d, 6 * d)  # adaLN
    )
    linear = cfg.num_layers * (per_block_video + per_block_text) + outside
    self_attn = cfg.num_layers * 2 * (2.0 * n * n * d)
    cross_attn = cfg.num_layers * 2 * (2.0 * n * s * d)
    out = {"linear": linear, "self_attn": self_attn, "cross_attn": cross_attn}
    out = {k: v * batch for k, v in out.items()}
    out["total"] = out["linear"] + out["self_attn"] + out["cross_attn"]
    return out


def conv3d_flops(c_in: int, c_out: int, voxels: int, kernel: Sequence[int] = (3, 3, 3)) -> float:
    """A dense convolution producing ``voxels`` output positions."""
    return 2.0 * math.prod(kernel) * c_in * c_out * voxels


def vae_decoder_flops(cfg: VAEConfig, latent_frames: int, latent_height: int, latent_width: int, batch: int = 1) -> float:
    """FLOPs of one VAE decode of latents ``[batch, C, f, h, w]``, walking the decoder's up-blocks as built
    (:func:`ltxcli.vae_tiling.decoder_ops`).

    Temporal padding replicates frames, so every 3x3x3 conv has as many outputs as inputs. A temporal
    depth-to-space doubles the frames and drops the first one.
    """
    first, ops = decoder_ops(cfg)
    f, h, w = latent_frames, latent_height, latent_width
    total = conv3d_flops(cfg.latent_channels, first, f * h * w)  # conv_in
    ch = first
    for op in ops:
        vox = f * h * w
        if op.kind == "res":
            total += op.layers * 2 * conv3d_flops(ch, ch, vox)
        elif op.kind == "res_xy":
            # conv1, conv2, and the 1x1x1 shortcut of the channel change
            total += (conv3d_flops(ch, op.c_out, vox) + conv3d_flops(op.c_out, op.c_out, vox)
                      + conv3d_flops(ch, op.c_out, vox, (1, 1, 1)))
        else:  # depth-to-space upsampler: conv C -> prod(stride) * C_out on the input grid
            total += conv3d_flops(ch, op.st * op.ss * op.ss * op.c_out, vox)
            f, h, w = f * op.st - (op.st - 1), h * op.ss, w * op.ss
        ch = op.c_out
    total += conv3d_flops(ch, cfg.out_channels * cfg.patch_size**2, f * h * w)  # conv_out
    return total * batch


def upsampler_flops(cfg: UpsamplerConfig, latent_frames: int, latent_height: int, latent_width: int, batch: int = 1) -> float:
    """FLOPs of the latent spatial upsampler on latents ``[batch, C, f, h, w]`` (output ``[.., 2h, 2w]``)."""
    mid, vox = cfg.mid_channels, latent_frames * latent_height * latent_width
    total = conv3d_flops(cfg.in_channels, mid, vox)
    total += cfg.num_blocks_per_stage * 2 * conv3d_flops(mid, mid, vox)
    total += conv3d_flops(mid, 4 * mid, vox, (1, 3, 3))  # per-frame Conv2d before the pixel shuffle
    total += cfg.num_blocks_per_stage * 2 * conv3d_flops(mid, mid, 4 * vox)
    total += conv3d_flops(mid, cfg.in_channels, 4 * vox)
    return total * batch


def t5_encoder_flops(config: Any, seq_len: int, batch: int = 1) -> float:
    """FLOPs of a transformers T5 encoder (``T5Config``) on ``batch`` sequences of ``seq_len`` tokens."""
    d, inner, ff = config.d_model, config.num_heads * config.d_kv, config.d_ff
    gated = bool(getattr(config, "is_gated_act", "gated" in str(config.feed_forward_proj)))
    per_layer = 4 * _linear(seq_len, d, inner)  # q, k, v, o (o is inner -> d)
    per_layer += (3 if gated else 2) * _linear(seq_len, d, ff)
    per_layer += 2 * (2.0 * seq_len * seq_len * inner)
    return config.num_layers * per_layer * batch


def t5_xxl_config() -> Any:
    """The ``google/t5-v1_1-xxl`` encoder shape that every LTX-Video release uses (4.76 B parameters)."""
    from transformers import T5Config

    return T5Config(
        vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, layer_norm_epsilon=1e-6, is_encoder_decoder=False, use_cache=False,
        tie_word_embeddings=False,
    )


__all__ = [
    "conv3d_flops", "t5_encoder_flops", "t5_xxl_config", "transformer_flops", "upsampler_flops",
    "vae_decoder_flops",
]
