"""T5 text encoding as the official ``LTXVideoPipeline.encode_prompt``, without its trailing padding.

Prompts are stripped, tokenised with truncation to ``max_tokens`` (256; the tokenizer keeps the closing ``</s>``)
and encoded WITH the attention mask. The result is the encoder's ``last_hidden_state``; padded positions are not
zeroed (the transformer masks them in cross-attention).

The official code pads every prompt to ``max_tokens``; :meth:`TextEncoder.encode` pads only to the longest prompt
of the batch (``padding="longest"``; ``"max_length"`` is the official shape). The columns it leaves out are
padding in every prompt, and neither model lets a real token see them: T5 adds ``finfo.min`` to their attention
logits and the transformer's cross-attention ``-10000``, so their softmax weight is exactly 0 in any dtype. Every
kept output is therefore the official one up to summation order (tests/test_text.py, tests/test_pipeline.py),
while T5 and each step's cross-attention work on L columns instead of 256: for a 30-token prompt T5 does about
an eighth of the work (on a CPU, most of the text stage's time) and the text's cached keys and values take an
eighth of the memory.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import torch
import transformers
from torch import Tensor
from transformers import T5EncoderModel, T5Tokenizer

#: How :meth:`TextEncoder.encode` pads a batch: to its longest prompt, or to ``max_tokens`` as the official code.
Padding = Literal["longest", "max_length"]


class PromptTruncatedWarning(UserWarning):
    """A prompt was longer than the text encoder's token budget; the message names the dropped words."""


def _transformers_major_minor() -> tuple[int, int]:
    parts = transformers.__version__.split(".")
    return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)


def _resolve_folders(path: Path) -> tuple[Path, Path]:
    """(model folder, tokenizer folder) for the PixArt layout or a flat folder."""
    if (path / "text_encoder").is_dir():
        model_dir = path / "text_encoder"
        tok_dir = path / "tokenizer" if (path / "tokenizer").is_dir() else path
    else:
        model_dir = tok_dir = path
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"text encoder: no config.json in {model_dir}")
    if not any(model_dir.glob("*.safetensors")):
        raise FileNotFoundError(f"text encoder: no .safetensors weights in {model_dir} (only safetensors are loaded)")
    if not any((tok_dir / name).is_file() for name in ("tokenizer.json", "spiece.model")):
        raise FileNotFoundError(f"text encoder: no tokenizer (tokenizer.json or spiece.model) in {tok_dir}")
    return model_dir, tok_dir


def _has_protobuf() -> bool:
    try:
        return importlib.util.find_spec("google.protobuf") is not None
    except ModuleNotFoundError:
        return False


def _check_tokenizer_backend(tok_dir: Path) -> None:
    # transformers 5 converts a SentencePiece-only folder (PixArt's tokenizer/ has just spiece.model) with
    # protobuf; without it, it falls back to a tiktoken reader and fails with an unrelated message.
    if (
        _transformers_major_minor() >= (5, 0)
        and not (tok_dir / "tokenizer.json").is_file()
        and not _has_protobuf()
    ):
        raise ImportError(
            f"text encoder: the tokenizer in {tok_dir} is a SentencePiece model (spiece.model) only; "
            "reading it needs the 'protobuf' package (pip install protobuf)"
        )


class PromptEncoder(Protocol):
    """What a :class:`~ltxcli.pipeline.Pipeline` needs of its text encoder: :class:`TextEncoder`, or a stand-in
    without weights (the benchmark's) that encodes as it does."""

    def encode(
        self, prompts: Sequence[str], max_tokens: int = 256, padding: Padding = "longest",
        names: Sequence[str] | None = None,
    ) -> tuple[Tensor, Tensor]: ...


class TextEncoder:
    """A transformers ``T5EncoderModel`` and its tokenizer, encoding prompts the official way."""

    def __init__(self, model: T5EncoderModel, tokenizer: T5Tokenizer) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> TextEncoder:
        """Load a folder with ``text_encoder/`` + ``tokenizer/`` subfolders (the PixArt-alpha/PixArt-XL-2-1024-MS
        layout) or a flat folder holding both. Safetensors only, never remote code.

        With ``dtype`` every weight ends in that dtype (transformers would keep T5's ``wo`` in float32; the
        official code casts the whole model with ``.to(dtype)``).
        """
        model_dir, tok_dir = _resolve_folders(Path(path))
        _check_tokenizer_backend(tok_dir)
        kwargs: dict[str, object] = {"use_safetensors": True, "trust_remote_code": False}
        if dtype is not None:
            kwargs["dtype" if _transformers_major_minor() >= (4, 56) else "torch_dtype"] = dtype
        model = T5EncoderModel.from_pretrained(model_dir, **kwargs)
        tokenizer = T5Tokenizer.from_pretrained(tok_dir, trust_remote_code=False)
        encoder = cls(model, tokenizer)
        if device is not None or dtype is not None:
            encoder.to(device, dtype)
        return encoder

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.d_model)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> TextEncoder:
        self.model = self.model.to(device=device, dtype=dtype)
        return self

    def _warn_truncated(self, prompts: Sequence[str], max_tokens: int, names: Sequence[str] | None) -> None:
        n_special = self.tokenizer.num_special_tokens_to_add()
        for i, prompt in enumerate(prompts):
            ids = self.tokenizer(prompt, add_special_tokens=True, truncation=False)["input_ids"]
            if len(ids) <= max_tokens:
                continue
            # the tokenizer keeps max_tokens - n_special text tokens and then appends </s>
            dropped = ids[max_tokens - n_special : len(ids) - n_special]
            text = self.tokenizer.decode(dropped)
            name = names[i] if names is not None else f"prompt {i}"
            warnings.warn(
                f"{name} is {len(ids)} tokens, over the text encoder's {max_tokens}; dropped: {text!r}",
                PromptTruncatedWarning,
                stacklevel=3,
            )

    @torch.no_grad()
    def encode(
        self, prompts: Sequence[str], max_tokens: int = 256, padding: Padding = "longest",
        names: Sequence[str] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Encode ``prompts`` -> (embeddings ``[B, L, D]`` in the model dtype, mask ``[B, L]`` int64), both on the
        model's device. ``L`` is the longest prompt's token count (``padding="longest"``, see the module docstring)
        or ``max_tokens`` (``"max_length"``, the official padding). Warns with :class:`PromptTruncatedWarning` for
        prompts over ``max_tokens``, naming each by ``names`` (``"the negative prompt"``; default ``prompt {i}``)."""
        if isinstance(prompts, str):
            raise TypeError("encode() takes a list of prompts, not a single string")
        if max_tokens < 1:
            raise ValueError(f"max_tokens={max_tokens} must be positive")
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding={padding!r}: use 'longest' or 'max_length'")
        if names is not None and len(names) != len(prompts):
            raise ValueError(f"{len(names)} names for {len(prompts)} prompts")
        texts = [p.strip() for p in prompts]
        self._warn_truncated(texts, max_tokens, names)
        batch = self.tokenizer(
            texts,
            padding=padding,
            max_length=max_tokens,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        device = self.device
        ids = batch["input_ids"].to(device)
        mask = batch["attention_mask"].to(device)
        embeds = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return embeds, mask
