"""Tiny random enhancer models (name ``tiny``), built in code like the tiny video model: a Llama instruct model
with a chat template (a word-level tokenizer over the tiny model's words) and a Florence-2 captioner (a byte-level
BART tokenizer), no download. They exercise the whole enhancer path (chat template, sampling, beam-search
captions, loading and freeing) in milliseconds; what they write is random words. The weights come from a fixed seed, so they are the same on every call.
"""

from __future__ import annotations

from typing import Any

import torch

TINY_ENHANCER_SEED = 20250102
#: The special tokens of the Llama-3 chat format (the tiny template is a shortened Llama-3 one).
LLAMA_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
LLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
#: Tiny captioner input size; its DaViT (strides 4, 2) gives (32 / 8)^2 spatial tokens plus one pooled over time.
CAPTION_IMAGE_SIZE = 32
CAPTION_IMAGE_TOKENS = (CAPTION_IMAGE_SIZE // 8) ** 2 + 1


def _byte_bpe(specials: tuple[str, ...], first: tuple[str, ...] = ()) -> Any:  # -> tokenizers.Tokenizer
    """A byte-level BPE without merges: ``first`` tokens, the 256 byte symbols, then ``specials``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(first)}
    for ch in sorted(set(pre_tokenizers.ByteLevel.alphabet())):
        vocab[ch] = len(vocab)
    for t in specials:
        vocab[t] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([*first, *specials])
    return tok


def make_llm_tokenizer() -> Any:  # -> PreTrainedTokenizerFast
    """Whole words of the tiny video model's vocabulary (so what the tiny LLM writes is readable words), the
    Llama-3 special tokens, ``<unk>`` for everything else."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from ltxcli.tiny import TINY_WORDS

    words = [*LLAMA_SPECIALS, "<unk>", *TINY_WORDS, ",", "."]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(LLAMA_SPECIALS))
    bos = LLAMA_SPECIALS[0]
    # like Llama-3's tokenizer, a BOS in front of every encoded text (the official code's chat text gets two)
    tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token="<|eot_id|>", unk_token="<unk>",
                                   chat_template=LLAMA_CHAT_TEMPLATE)


def make_llm(tokenizer: Any, **overrides: Any) -> Any:  # -> LlamaForCausalLM
    """A 2-layer Llama whose generation config samples as Llama-3.2-3B-Instruct's does (temperature 0.6, top-p 0.9)."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**{
        "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 4096,
        "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id, **overrides})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_ENHANCER_SEED)
        model = LlamaForCausalLM(cfg).eval()
    model.generation_config = GenerationConfig(
        do_sample=True, temperature=0.6, top_p=0.9, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id)
    return model


def make_caption_tokenizer(image_token: bool = True) -> Any:  # -> BartTokenizerFast
    """A byte-level BART tokenizer; ``image_token``: with the native layout's added ``<image>`` token."""
    from tokenizers import processors
    from transformers import AddedToken, BartTokenizerFast

    tok = _byte_bpe(("<mask>",), first=("<s>", "<pad>", "</s>", "<unk>"))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = BartTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                             unk_token="<unk>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
                             **({"extra_special_tokens": {"image_token": "<image>"}} if image_token else {}))
    if image_token:
        fast.add_tokens(AddedToken("<image>", special=True, normalized=False), special_tokens=True)
    return fast


def make_caption_processor(tokenizer: Any) -> Any:  # -> Florence2Processor
    from transformers import Florence2Processor

    from .florence import clip_image_processor

    size = {"height": CAPTION_IMAGE_SIZE, "width": CAPTION_IMAGE_SIZE}
    ip = clip_image_processor(size=size, crop_size=size, do_center_crop=False)
    ip.image_seq_length = CAPTION_IMAGE_TOKENS
    return Florence2Processor(image_processor=ip, tokenizer=tokenizer)


def caption_config(vocab_size: int, image_token_id: int) -> Any:  # -> Florence2Config
    from transformers import BartConfig, Florence2Config, Florence2VisionConfig

    text = BartConfig(vocab_size=vocab_size, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                      decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=1100,
                      no_repeat_ngram_size=3, num_beams=3, early_stopping=True, forced_bos_token_id=0)
    vision = Florence2VisionConfig(depths=[1, 1], patch_size=[7, 3], patch_stride=[4, 2], patch_padding=[3, 1],
                                   patch_prenorm=[False, True], embed_dim=[16, 32], num_heads=[2, 2], num_groups=[2, 2],
                                   window_size=2, projection_dim=32, max_position_embeddings=16, drop_path_rate=0.0)
    return Florence2Config(text_config=text.to_dict(), vision_config=vision.to_dict(), image_token_id=image_token_id)


def make_captioner(tokenizer: Any, image_token_id: int | None = None) -> Any:  # -> Florence2ForConditionalGeneration
    from transformers import Florence2ForConditionalGeneration, GenerationConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_ENHANCER_SEED + 1)
        cfg = caption_config(len(tokenizer), tokenizer.image_token_id if image_token_id is None else image_token_id)
        model = Florence2ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        # An end-of-text row that wins within a few steps: the official 3-beam, 1024-token caption of a random model
        # would otherwise run to its limit (minutes on a CPU); here it is a few tokens long.
        out = model.get_output_embeddings().weight  # [vocab, d_model], tied to the input embeddings
        out[tokenizer.eos_token_id].zero_()
        out[tokenizer.eos_token_id, 0] = 0.3
    model.generation_config = GenerationConfig(bos_token_id=0, eos_token_id=2, pad_token_id=1, decoder_start_token_id=2,
                                               forced_bos_token_id=0, forced_eos_token_id=2, no_repeat_ngram_size=3)
    return model


def build() -> tuple[Any, Any, Any, Any]:
    """``(llm, llm_tokenizer, captioner, caption_processor)``, identical on every call."""
    tok = make_llm_tokenizer()
    ctok = make_caption_tokenizer()
    return make_llm(tok), tok, make_captioner(ctok), make_caption_processor(ctok)


__all__ = [
    "CAPTION_IMAGE_TOKENS", "LLAMA_CHAT_TEMPLATE", "build", "caption_config", "make_caption_processor",
    "make_caption_tokenizer", "make_captioner", "make_llm", "make_llm_tokenizer",
]
