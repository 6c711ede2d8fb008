"""A tiny random T5 encoder + Unigram tokenizer built in code (no Hub access), for tests.

``make_tiny_text_encoder(dir)`` writes the PixArt-alpha/PixArt-XL-2-1024-MS layout (``text_encoder/`` and
``tokenizer/`` subfolders, safetensors weights) and returns ``dir``. The vocabulary is the T5 layout
(``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2, ``▁`` = 3) followed by whole-word pieces; words outside
:data:`WORDS` tokenise to ``<unk>`` or to the bare ``▁`` piece.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import T5EncoderModel, T5TokenizerFast

from ltxcli.tiny import TINY_WORDS, make_text_model, make_tokenizer

WORDS = TINY_WORDS[:-1]  # the tiny model's words without "surfing"


def make_tiny_tokenizer() -> T5TokenizerFast:
    return make_tokenizer(WORDS)


def make_tiny_t5(vocab_size: int, seed: int = 0) -> T5EncoderModel:
    """The tiny pipeline's T5 architecture (:func:`ltxcli.tiny.make_text_model`) drawn from ``seed``."""
    torch.manual_seed(seed)
    model = make_text_model(vocab_size)
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
