"""Florence-2 (PromptGen) with transformers' native classes, from either layout it is published in.

The captioner the official configs name, ``MiaoshouAI/Florence-2-large-PromptGen-v2.0``, is in the *remote-code*
layout (``auto_map`` in config.json, ``vision_tower.*`` / ``language_model.*`` keys, a DaViT ``vision_config`` with
``dim_embed``), which the official code loads by running the repository's own Python files. ltx never runs a repository's code:
it converts that layout at load with the declarative rules below (the mapping of transformers'
``convert_florence2_original_pytorch_to_hf.py``) and builds ``Florence2ForConditionalGeneration`` and
``Florence2Processor`` itself. A folder already in the native layout (``florence-community/*``) loads as it is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

#: Remote-code key -> native key (``re.sub`` rules, first match wins; every key must match one).
KEY_RULES: tuple[tuple[str, str], ...] = (
    (r"^vision_tower\.convs\.(\d+)\.proj\.", r"model.vision_tower.convs.\1.conv."),
    (r"^vision_tower\.convs\.(\d+)\.norm\.", r"model.vision_tower.convs.\1.norm."),
    (r"^vision_tower\.blocks\.(\d+\.\d+)\.(spatial|channel)_block\.(conv[12])\.fn\.dw\.",
     r"model.vision_tower.blocks.\1.\2_block.\3."),
    (r"^vision_tower\.blocks\.(\d+\.\d+)\.spatial_block\.window_attn\.norm\.",
     r"model.vision_tower.blocks.\1.spatial_block.norm1."),
    (r"^vision_tower\.blocks\.(\d+\.\d+)\.spatial_block\.window_attn\.fn\.",
     r"model.vision_tower.blocks.\1.spatial_block.window_attn."),
    (r"^vision_tower\.blocks\.(\d+\.\d+)\.channel_block\.channel_attn\.norm\.",
     r"model.vision_tower.blocks.\1.channel_block.norm1."),
    (r"^vision_tower\.blocks\.(\d+\.\d+)\.channel_block\.channel_attn\.fn\.",
     r"model.vision_tower.blocks.\1.channel_block.channel_attn."),
    (r"^vision_tower\.blocks\.(\d+\.\d+)\.(spatial|channel)_block\.ffn\.norm\.",
     r"model.vision_tower.blocks.\1.\2_block.norm2."),
    (r"^vision_tower\.blocks\.(\d+\.\d+)\.(spatial|channel)_block\.ffn\.fn\.net\.",
     r"model.vision_tower.blocks.\1.\2_block.ffn."),
    (r"^image_projection$", r"model.multi_modal_projector.image_projection.weight"),
    (r"^image_proj_norm\.", r"model.multi_modal_projector.image_proj_norm."),
    (r"^image_pos_embed\.", r"model.multi_modal_projector.image_position_embed."),
    (r"^visual_temporal_embed\.", r"model.multi_modal_projector.visual_temporal_embed."),
    (r"^language_model\.model\.", r"model.language_model."),
    (r"^language_model\.lm_head\.", r"lm_head."),
)
#: Remote-code keys with no native counterpart (BART's logits bias: zeros, never trained).
DROPPED_KEYS = ("language_model.final_logits_bias",)
#: Stored ``[in, out]`` in the remote layout (a bare parameter used as ``x @ W``), ``[out, in]`` natively (a Linear).
TRANSPOSED = ("image_projection",)
#: Native names of the one tied token embedding.
TIED_KEYS = ("model.language_model.shared.weight", "lm_head.weight", "model.language_model.encoder.embed_tokens.weight",
             "model.language_model.decoder.embed_tokens.weight")
#: Native vision config field <- remote ``vision_config`` path.
VISION_FIELDS: dict[str, tuple[str, ...]] = {
    "depths": ("depths",), "patch_size": ("patch_size",), "patch_stride": ("patch_stride",),
    "patch_padding": ("patch_padding",), "patch_prenorm": ("patch_prenorm",), "embed_dim": ("dim_embed",),
    "num_heads": ("num_heads",), "num_groups": ("num_groups",), "window_size": ("window_size",),
    "drop_path_rate": ("drop_path_rate",), "projection_dim": ("projection_dim",),
    "max_temporal_embeddings": ("visual_temporal_embedding", "max_temporal_embeddings"),
    "max_position_embeddings": ("image_pos_embed", "max_pos_embeddings"),
}


class CaptionerLayoutError(ValueError):
    """A captioner folder whose files do not follow either layout (the message names the file and the problem)."""


def is_remote_layout(config: dict[str, Any]) -> bool:
    """config.json written for the remote-code classes (``auto_map``, or a DaViT vision config with ``dim_embed``)."""
    return "auto_map" in config or "dim_embed" in (config.get("vision_config") or {})


def convert_key(key: str) -> str | None:
    """A remote-code key -> its native name (None: dropped). KeyError for a key no rule covers."""
    if key in DROPPED_KEYS:
        return None
    for pattern, repl in KEY_RULES:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    raise KeyError(key)


def convert_state_dict(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, t in tensors.items():
        try:
            new = convert_key(key)
        except KeyError:
            unknown.append(key)
            continue
        if new is not None:
            out[new] = t.t().contiguous() if key in TRANSPOSED else t
    if unknown:
        raise CaptionerLayoutError(f"{len(unknown)} tensor(s) of no known Florence-2 layout, e.g. {unknown[0]!r}")
    return out


def _get(d: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        d = d[part]
    return d


def convert_config(config: dict[str, Any], image_token_id: int, vocab_size: int) -> Any:  # -> Florence2Config
    """The remote config.json -> ``Florence2Config`` (the text config is BART's, with the enlarged vocabulary)."""
    from transformers import BartConfig, Florence2Config, Florence2VisionConfig

    vision_raw = config["vision_config"]
    try:
        vision = Florence2VisionConfig(**{k: _get(vision_raw, p) for k, p in VISION_FIELDS.items()})
    except KeyError as e:
        raise CaptionerLayoutError(f"config.json: vision_config has no {e.args[0]!r}") from None
    text_raw = {k: v for k, v in config["text_config"].items() if k not in ("model_type", "architectures", "auto_map")}
    text = BartConfig(**{**text_raw, "vocab_size": vocab_size})
    return Florence2Config(text_config=text.to_dict(), vision_config=vision.to_dict(), image_token_id=image_token_id)


def generation_config(config: dict[str, Any]) -> Any:  # -> GenerationConfig
    """What the remote model generated with: its language model's generation settings come from the text config
    (``no_repeat_ngram_size``, ``num_beams``, ``early_stopping``, forced BOS/EOS, ...), as transformers builds a
    generation config from a model config; the caller's arguments (:func:`~ltxcli.enhance.generate.caption`) win."""
    from transformers import GenerationConfig

    known = GenerationConfig().to_dict()
    return GenerationConfig(**{k: v for k, v in config["text_config"].items() if k in known})


def clip_image_processor(**kwargs: Any) -> Any:
    """transformers' ``CLIPImageProcessor``. Its default backend needs torchvision; without it transformers falls
    back to the PIL one, warning on stderr at every load: that one is then named directly (the same processor)."""
    import importlib.util

    import transformers

    if importlib.util.find_spec("torchvision") is None and hasattr(transformers, "CLIPImageProcessorPil"):
        return transformers.CLIPImageProcessorPil(**kwargs)
    return transformers.CLIPImageProcessor(**kwargs)


def load_remote_layout(folder: Path, device: torch.device, dtype: torch.dtype) -> tuple[Any, Any]:
    """A remote-code Florence-2 folder -> (native model, native processor), converted in memory."""
    from safetensors.torch import load_file
    from transformers import BartTokenizerFast, Florence2ForConditionalGeneration, Florence2Processor

    config = json.loads((folder / "config.json").read_text())
    tokenizer = BartTokenizerFast.from_pretrained(folder)  # Florence-2's language model is BART
    # The native classes mark the image's places in the input with an image token. transformers' converter adds
    # a new "<image>" token and grows the vocabulary, which changes the softmax the beam search ranks with. BART's
    # "<mask>" never occurs in a caption prompt and is overwritten by the image features wherever it stands, so
    # it serves as the image token with the vocabulary, and so the scores, exactly the remote model's.
    if tokenizer.mask_token is None:
        raise CaptionerLayoutError(f"{folder}: the tokenizer has no <mask> token to mark the image with")
    tokenizer.image_token = tokenizer.mask_token
    tokenizer.image_token_id = tokenizer.mask_token_id
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    skip = ("processor_class", "auto_map", "image_processor_type", "image_seq_length")
    image_processor = clip_image_processor(**{k: v for k, v in pre.items() if k not in skip and not k.startswith("_")})
    image_processor.image_seq_length = pre["image_seq_length"]
    processor = Florence2Processor(image_processor=image_processor, tokenizer=tokenizer)

    tensors: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(f))
    state = convert_state_dict(tensors)
    # BART ties its input and output embeddings: a checkpoint stores them once, under any of these names
    tied = [k for k in TIED_KEYS if k in state]
    if not tied:
        raise CaptionerLayoutError(f"{folder}: no token embedding among the weights")
    for k in TIED_KEYS:
        state.setdefault(k, state[tied[0]])
    cfg = convert_config(config, tokenizer.image_token_id, state[tied[0]].shape[0])
    model = Florence2ForConditionalGeneration(cfg)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise CaptionerLayoutError(
            f"{folder}: the converted weights do not fit the native model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.tie_weights()
    model.generation_config = generation_config(config)
    return model.to(device=device, dtype=dtype).eval(), processor


__all__ = [
    "DROPPED_KEYS", "KEY_RULES", "TRANSPOSED", "VISION_FIELDS", "CaptionerLayoutError", "convert_config",
    "convert_key", "convert_state_dict", "generation_config", "is_remote_layout", "load_remote_layout",
]
