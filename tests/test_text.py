"""T5 encoding vs the official ``LTXVideoPipeline.encode_prompt`` with a tiny T5 built in code."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from tiny_t5 import WORDS, make_tiny_text_encoder

from ltxcli.text import PromptTruncatedWarning, TextEncoder

PROMPTS = ["  a cat walks slowly on the street at night ", "red car", "camera pans over a forest river"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_tiny_text_encoder(tmp_path_factory.mktemp("t5"))


@pytest.fixture(scope="module")
def encoder(folder) -> TextEncoder:
    return TextEncoder.from_pretrained(folder)


def _official_pipeline(enc: TextEncoder):
    """The official pipeline object with only the text parts (its constructor needs a real VAE)."""
    from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline

    pipe = LTXVideoPipeline.__new__(LTXVideoPipeline)
    pipe.register_modules(tokenizer=enc.tokenizer, text_encoder=enc.model, transformer=None)
    return pipe


@pytest.mark.parametrize("max_tokens", [256, 16])
def test_encode_equals_official(encoder: TextEncoder, max_tokens: int) -> None:
    emb, mask = encoder.encode(PROMPTS, max_tokens=max_tokens, padding="max_length")
    pipe = _official_pipeline(encoder)
    with torch.no_grad():  # the official __call__ runs under no_grad (grad mode picks another SDPA kernel)
        ref_emb, ref_mask, neg_emb, neg_mask = pipe.encode_prompt(
            PROMPTS, negative_prompt="", device=torch.device("cpu"), text_encoder_max_tokens=max_tokens
        )
    assert emb.shape == (3, max_tokens, 32) and mask.shape == (3, max_tokens)
    assert torch.equal(mask, ref_mask)
    err = (emb - ref_emb).abs().max().item()
    print(f"T5 max_tokens={max_tokens}: max abs diff vs official encode_prompt {err:.3e}")
    assert torch.equal(emb, ref_emb)
    # the negative prompt goes through the same path
    n_emb, n_mask = encoder.encode([""], max_tokens=max_tokens, padding="max_length")
    assert torch.equal(n_mask, neg_mask[:1]) and (n_emb - neg_emb[:1]).abs().max().item() <= 1e-6
    assert n_mask.sum().item() == 1  # only </s>


@pytest.mark.filterwarnings("ignore::ltxcli.text.PromptTruncatedWarning")
@pytest.mark.parametrize("max_tokens", [256, 8])
def test_longest_padding_keeps_the_official_columns(encoder: TextEncoder, max_tokens: int) -> None:
    """The default pads to the longest prompt: the columns it drops are padding in every prompt, and the ones it keeps
    are the official encoding's (T5 gives padding zero attention weight, so only the summation order differs)."""
    emb, mask = encoder.encode(PROMPTS, max_tokens=max_tokens)
    full, full_mask = encoder.encode(PROMPTS, max_tokens=max_tokens, padding="max_length")
    longest = int(full_mask.sum(1).max())
    assert longest < max_tokens or max_tokens == 8  # at 256 the batch is mostly padding; at 8 a prompt is truncated
    assert emb.shape == (3, longest, 32) and mask.shape == (3, longest)
    assert torch.equal(mask, full_mask[:, :longest]) and not full_mask[:, longest:].any()
    err = (emb - full[:, :longest]).abs().max().item() / full[:, :longest].abs().max().item()
    print(f"T5 longest vs max_length padding, max_tokens={max_tokens}: {longest} columns, max rel diff {err:.2e}")
    assert err <= 1e-6
    # each prompt alone: padded to its own length, the same values again
    for i, prompt in enumerate(PROMPTS):
        one, one_mask = encoder.encode([prompt], max_tokens=max_tokens)
        n = int(mask[i].sum())
        assert one.shape[1] == n and one_mask.all()
        assert (one[0] - full[i, :n]).abs().max().item() <= 1e-6 * full[i, :n].abs().max().item()
    with pytest.raises(ValueError, match="padding"):
        encoder.encode(PROMPTS, padding="max")  # type: ignore[arg-type]


def test_mask_is_used_and_padding_not_zeroed(encoder: TextEncoder) -> None:
    emb, mask = encoder.encode(PROMPTS, max_tokens=32, padding="max_length")
    tok = encoder.tokenizer(["a cat walks slowly on the street at night"], padding="max_length", max_length=32,
                            truncation=True, return_tensors="pt")
    with torch.no_grad():
        unmasked = encoder.model(input_ids=tok["input_ids"]).last_hidden_state
    n = int(mask[0].sum())
    diff = (emb[0, :n] - unmasked[0, :n]).abs().max().item()
    print(f"T5 masked vs unmasked valid tokens: max abs diff {diff:.3e}")
    assert diff > 1e-3
    assert emb[0, n:].abs().amax().item() > 0  # padded positions keep their encoder output


def test_stripped_and_ids(encoder: TextEncoder) -> None:
    emb_a, mask_a = encoder.encode(["  red car  "], max_tokens=8, padding="max_length")
    emb_b, mask_b = encoder.encode(["red car"], max_tokens=8, padding="max_length")
    assert torch.equal(emb_a, emb_b) and torch.equal(mask_a, mask_b)
    assert mask_b.tolist() == [[1, 1, 1, 0, 0, 0, 0, 0]]  # ▁red ▁car </s>


def test_truncation_warning_names_dropped_words(encoder: TextEncoder) -> None:
    long_prompt = " ".join(WORDS[:20])
    with pytest.warns(PromptTruncatedWarning) as record:
        emb, mask = encoder.encode(["red car", long_prompt], max_tokens=8)
    assert len(record) == 1
    msg = str(record[0].message)
    dropped = " ".join(WORDS[7:20])  # 7 words + </s> fit in 8 tokens
    assert msg.endswith(f"dropped: {dropped!r}") and "prompt 1" in msg
    assert emb.shape == (2, 8, 32) and mask[1].tolist() == [1] * 8
    ids = encoder.tokenizer([long_prompt], padding="max_length", max_length=8, truncation=True)["input_ids"][0]
    assert ids[-1] == encoder.tokenizer.eos_token_id  # EOS kept as the tokenizer does
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoder.encode([" ".join(WORDS[:7])], max_tokens=8)  # exactly 8 tokens: no warning


def test_flat_folder_dtype_and_errors(folder: Path, tmp_path: Path) -> None:
    flat = tmp_path / "flat"
    flat.mkdir()
    for sub in ("text_encoder", "tokenizer"):
        for f in (folder / sub).iterdir():
            (flat / f.name).write_bytes(f.read_bytes())
    enc = TextEncoder.from_pretrained(flat, dtype=torch.bfloat16)
    assert {p.dtype for p in enc.model.parameters()} == {torch.bfloat16}
    emb, _ = enc.encode(["red car"], max_tokens=8)
    assert emb.dtype == torch.bfloat16
    (flat / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="safetensors"):
        TextEncoder.from_pretrained(flat)
    with pytest.raises(TypeError):
        enc.encode("red car")  # type: ignore[arg-type]


def test_sentencepiece_only_tokenizer_folder(folder: Path, tmp_path: Path) -> None:
    """PixArt's tokenizer/ holds only spiece.model: it must tokenise as SentencePiece does (needs protobuf)."""
    import io
    import json
    import random
    import shutil

    import sentencepiece as spm

    from ltxcli.text import _has_protobuf

    random.seed(0)
    sents = [" ".join(random.choice(WORDS) for _ in range(8)) + random.choice([".", ",", ""]) for _ in range(400)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sents), model_writer=buf, vocab_size=60, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2, normalization_rule_name="nmt_nfkc",
    )
    root = tmp_path / "spm"
    shutil.copytree(folder / "text_encoder", root / "text_encoder")
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "spiece.model").write_bytes(buf.getvalue())
    (root / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))
    if not _has_protobuf():
        with pytest.raises(ImportError, match="protobuf"):
            TextEncoder.from_pretrained(root)
        return
    enc = TextEncoder.from_pretrained(root)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    for prompt in ["a cat walks slowly on the street at night", "A  cat,   walks\n\nslowly.", "ｃａｔ　dog"]:
        _, mask = enc.encode([prompt], max_tokens=32)
        ids = enc.tokenizer([prompt], padding="max_length", max_length=32, truncation=True)["input_ids"][0]
        want = [*sp.encode(prompt.strip()), 1]
        assert ids[: len(want)] == want and int(mask.sum()) == len(want)


def test_truncation_warning_names_the_prompt_it_is_about(encoder: TextEncoder) -> None:
    """The pipeline encodes [prompt, negative prompt] in one batch: a long negative prompt was reported as
    "prompt 1 is N tokens", a prompt the user never numbered."""
    from ltxcli.tiny import build_pipeline

    long = " ".join(WORDS[:40] * 8)  # 320 words, each one token
    with pytest.warns(PromptTruncatedWarning) as record:
        encoder.encode(["red car", long], max_tokens=8, names=["the prompt", "the negative prompt"])
    assert [str(w.message).split(" is ")[0] for w in record] == ["the negative prompt"]
    with pytest.raises(ValueError, match="2 names for 1 prompts"):
        encoder.encode(["red car"], names=["a", "b"])
    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    with pytest.warns(PromptTruncatedWarning) as record:
        pipe.generate("a cat", negative_prompt=long, height=64, width=96, num_frames=9, steps=1, seed=0)
    assert [str(w.message).split(" is ")[0] for w in record] == ["the negative prompt"]
    with pytest.warns(PromptTruncatedWarning) as record:
        pipe.generate(long, enhanced_prompt=long, height=64, width=96, num_frames=9, steps=1, seed=0)
    assert [str(w.message).split(" is ")[0] for w in record] == ["the enhanced prompt"]
