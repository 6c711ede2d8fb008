"""The built-in ``tiny`` model: random weights with the real block structure, built on the fly.

It needs no download and runs end to end on a laptop CPU in seconds, so it checks the plumbing (text
encoding, conditioning, guidance, decoding, file writing). Its output is noise: the weights are random.
The weights come from a fixed seed, so a given seed always gives the same video.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .models.configs import TransformerConfig, VAEConfig, official_vae_config
from .presets import TINY_PRESET

TINY_SEED = 20250101
# Whole-word pieces of the tiny tokenizer; words outside this list become <unk>, which is fine for noise.
TINY_WORDS = [
    "a", "cat", "dog", "bird", "fish", "horse", "man", "woman", "child", "car", "tree", "house", "river",
    "mountain", "sky", "sun", "moon", "city", "street", "road", "red", "blue", "green", "white", "black",
    "small", "big", "old", "young", "slowly", "quickly", "walks", "runs", "flies", "swims", "sits",
    "stands", "looks", "at", "the", "in", "on", "under", "over", "with", "and", "camera", "pans", "zooms",
    "close", "up", "wide", "shot", "light", "dark", "night", "day", "water", "forest", "snow", "rain", "surfing",
]
TEXT_DIM = 32
LATENT_CHANNELS = 16

TINY_TRANSFORMER = TransformerConfig(
    num_attention_heads=2, attention_head_dim=16, num_layers=2, in_channels=LATENT_CHANNELS,
    out_channels=LATENT_CHANNELS, cross_attention_dim=32, caption_channels=TEXT_DIM,
    causal_temporal_positioning=True,
)


def tiny_vae_config() -> VAEConfig:
    """The 0.9.5-family block lists with one layer per block and 8 base channels."""
    cfg = official_vae_config("0.9.5")
    for key in ("encoder_blocks", "decoder_blocks"):
        for _, params in cfg[key]:
            if "num_layers" in params:
                params["num_layers"] = 1
    cfg.update(latent_channels=LATENT_CHANNELS, encoder_base_channels=8, decoder_base_channels=8)
    return VAEConfig.from_official(cfg)


def make_tokenizer(words: Sequence[str] = TINY_WORDS):  # -> transformers.T5TokenizerFast
    """A T5 Unigram tokenizer built in code (``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, ``▁`` 3, then ``words``)."""
    from transformers import T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(f"▁{w}", -3.0 - 0.01 * i) for i, w in enumerate(words)]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def make_text_model(vocab_size: int):  # -> transformers.T5EncoderModel
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, is_encoder_decoder=False, use_cache=False,
    )
    return T5EncoderModel(config).eval()


def build_temporal_upsampler(device: torch.device, dtype: torch.dtype):  # -> LatentUpsampler
    """The tiny model's temporal upscaler: random weights (fixed seed) with the released block structure."""
    from .models.configs import UpsamplerConfig
    from .models.upsampler import LatentUpsampler

    config = UpsamplerConfig(in_channels=LATENT_CHANNELS, mid_channels=32, num_blocks_per_stage=1,
                             spatial_upsample=False, temporal_upsample=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED + 1)
        model = LatentUpsampler(config)
        with torch.no_grad():  # a near-identity residual path keeps the tiny latents in range
            model.final_conv.weight.mul_(0.1)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def build_pipeline(device: torch.device, dtype: torch.dtype):  # -> Pipeline
    """The tiny pipeline on ``device`` in ``dtype``; identical weights on every call."""
    from .models.transformer import LTXVideoTransformer
    from .models.vae import CausalVideoVAE
    from .pipeline import Pipeline
    from .text import TextEncoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        transformer = LTXVideoTransformer(TINY_TRANSFORMER)
        vae = CausalVideoVAE(tiny_vae_config())
        # Give the zero-initialised conditioning tables and statistics non-trivial values.
        with torch.no_grad():
            for name, p in [*transformer.named_parameters(), *vae.named_parameters()]:
                if "scale_shift_table" in name:
                    p.normal_(0, 0.1)
            stats = vae.per_channel_statistics
            stats.get_buffer("std-of-means").uniform_(0.5, 1.5)
            stats.get_buffer("mean-of-means").normal_(0, 0.1)
        tokenizer = make_tokenizer()
        text_model = make_text_model(len(tokenizer))
    transformer = transformer.to(device=device, dtype=dtype).eval().requires_grad_(False)
    vae = vae.to(device=device, dtype=dtype).eval().requires_grad_(False)
    text = TextEncoder(text_model.to(device=device, dtype=dtype).requires_grad_(False), tokenizer)
    pipe = Pipeline(transformer, vae, text, preset=TINY_PRESET, name="tiny")
    pipe.depth_model = "tiny"  # depth controls from a random Depth-Anything built on the fly (ltxcli.depth)
    return pipe
