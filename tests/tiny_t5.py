"""A tiny random T5 encoder + Unigram tokenizer built in code (no Hub access), for tests.

``make_tiny_text_encoder(dir)`` writes the PixArt-alpha/PixArt-XL-2-1024-MS layout (``text_encoder/`` and
``tokenizer/`` subfolders, safetensors weights) and returns ``dir``. The vocabulary is the T5 layout
(``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, ``▁`` = 3) followed by whole-word pieces; words outside
:data:`WORDS` tokenise to ``<unk>`` or to the bare ``▁`` piece.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import T5Config, T5EncoderModel, T5TokenizerFast

WORDS = [
    "a", "cat", "dog", "bird", "fish", "horse", "man", "woman", "child", "car", "tree", "house", "river",
    "mountain", "sky", "sun", "moon", "city", "street", "road", "red", "blue", "green", "white", "black",
    "small", "big", "old", "young", "slowly", "quickly", "walks", "runs", "flies", "swims", "sits",
    "stands", "looks", "at", "the", "in", "on", "under", "over", "with", "and", "camera", "pans", "zooms",
    "close", "up", "wide", "shot", "light", "dark", "night", "day", "water", "forest", "snow", "rain",
]

D_MODEL = 32


def tiny_t5_config(vocab_size: int) -> T5Config:
    return T5Config(
        vocab_size=vocab_size,
        d_model=D_MODEL,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        is_encoder_decoder=False,
        use_cache=False,
    )


def make_tiny_tokenizer() -> T5TokenizerFast:
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(f"▁{w}", -3.0 - 0.01 * i) for i, w in enumerate(WORDS)]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def make_tiny_t5(vocab_size: int, seed: int = 0) -> T5EncoderModel:
    torch.manual_seed(seed)
    model = T5EncoderModel(tiny_t5_config(vocab_size)).eval()
    # Perturb every weight (layer-norm scales included) so that none keeps a special init value.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def make_tiny_text_encoder(dir: Path, seed: int = 0) -> Path:
    """Save a tiny T5 encoder and tokenizer under ``dir/text_encoder`` and ``dir/tokenizer``; returns ``dir``."""
    dir = Path(dir)
    tok = make_tiny_tokenizer()
    model = make_tiny_t5(len(tok), seed=seed)
    tok.save_pretrained(dir / "tokenizer")
    model.save_pretrained(dir / "text_encoder", safe_serialization=True)
    return dir
