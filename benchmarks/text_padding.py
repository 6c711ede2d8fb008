#!/usr/bin/env python
"""What padding the text only to the longest prompt saves (``ltxcli.text``): the official code pads every prompt to
256 tokens, and both T5 and every step's cross-attention then work on 256 columns.

Two cases, each timing ``padding="max_length"`` (the official 256 columns) against ``"longest"`` (ltxcli's
default) in one process, alternating runs, medians; float32 on the CPU. A benchmark script, not a test.

* ``t5``: ``TextEncoder.encode`` of [prompt, default negative prompt] on a random encoder of T5-XXL's layer
  shape with ``--t5-layers`` of its 24 layers (the time of the whole encoder is about 24/N times this).
* ``step``: one CFG forward of the 2B DiT (``--layers`` of its 28 blocks) at 384 video tokens, with the text's
  keys and values computed before (as inside ``generate``), on 256 text columns or on the longest prompt's.

Prompts of ``--tokens`` tokens (words of the tiny tokenizer, one token each, plus ``</s>``).

    python benchmarks/text_padding.py --tokens 40,120 --runs 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vs_diffusers import TRANSFORMER_2B, alternate, apply_cpu_choices, transformer_inputs

from ltxcli.models.transformer import LTXVideoTransformer
from ltxcli.perf.bench import materialize_random_
from ltxcli.perf.flops import t5_xxl_config
from ltxcli.presets import DEFAULT_NEGATIVE_PROMPT
from ltxcli.text import TextEncoder
from ltxcli.tiny import TINY_WORDS, make_tokenizer

MAX_TOKENS = 256


def medians(fns: dict[str, Any], runs: int) -> dict[str, float]:
    """Median seconds of each function over ``runs`` alternating calls (``vs_diffusers.alternate``), after one
    warm-up call each."""
    for fn in fns.values():
        fn()
    return {k: statistics.median(v) for k, v in alternate(fns, runs).items()}


def prompt_of(tokens: int) -> str:
    """A prompt the tiny tokenizer splits into ``tokens - 1`` word tokens (plus ``</s>``)."""
    return " ".join(TINY_WORDS[i % len(TINY_WORDS)] for i in range(tokens - 1))


def case_t5(tokens: list[int], layers: int, runs: int) -> list[dict[str, Any]]:
    from transformers import T5EncoderModel

    tok = make_tokenizer()
    cfg = t5_xxl_config()  # a transformers T5Config: the tiny tokenizer's vocabulary, N of the 24 layers
    cfg.vocab_size, cfg.num_layers = len(tok), layers
    torch.manual_seed(0)
    enc = TextEncoder(T5EncoderModel(cfg).eval(), tok)
    out = []
    for n in tokens:
        prompts = [prompt_of(n), DEFAULT_NEGATIVE_PROMPT]
        longest = enc.encode(prompts)[1].shape[1]
        med = medians({"max_length": lambda p=prompts: enc.encode(p, padding="max_length"),
                         "longest": lambda p=prompts: enc.encode(p)}, runs)
        row = {"case": "t5", "t5_layers": layers, "prompt_tokens": n, "columns": longest, **med,
               "ratio": med["longest"] / med["max_length"]}
        print(f"t5 ({layers}/24 T5-XXL layers), prompt {n} tokens -> {longest} columns: {med['longest']:.3f} s vs "
              f"{med['max_length']:.3f} s at {MAX_TOKENS} = {row['ratio']:.3f}", flush=True)
        out.append(row)
    return out


def case_step(tokens: list[int], layers: int, runs: int) -> list[dict[str, Any]]:
    with torch.device("meta"):
        model = LTXVideoTransformer(dataclasses.replace(TRANSFORMER_2B, causal_temporal_positioning=True,
                                                        num_layers=layers))
    materialize_random_(model, device="cpu", dtype=torch.float32, seed=0, narrow=torch.bfloat16)
    apply_cpu_choices(transformer=model)
    inp = transformer_inputs(torch.float32)
    gen = torch.Generator().manual_seed(3)
    text = torch.randn(2, MAX_TOKENS, TRANSFORMER_2B.caption_channels, generator=gen)
    negative = len(make_tokenizer()(DEFAULT_NEGATIVE_PROMPT)["input_ids"])
    out = []
    with torch.inference_mode():
        for n in tokens:
            mask = torch.zeros(2, MAX_TOKENS, dtype=torch.long)
            mask[0, :negative] = 1
            mask[1, :n] = 1
            cols = max(n, negative)
            variants = {"max_length": (text, mask), "longest": (text[:, :cols], mask[:, :cols])}
            kv = {k: model.text_keys_values(t) for k, (t, _) in variants.items()}

            def run(k: str, variants: dict = variants, kv: dict = kv) -> torch.Tensor:
                t, m = variants[k]
                return model(inp["x"], t, inp["t"][:, None], indices_grid=inp["coords"], encoder_attention_mask=m,
                             text_kv=kv[k])

            a, b = run("max_length"), run("longest")
            err = ((a - b).norm() / a.norm()).item()
            med = medians({k: lambda k=k: run(k) for k in variants}, runs)
            row = {"case": "step", "layers": layers, "prompt_tokens": n, "columns": cols, "rel_err": err, **med,
                   "ratio": med["longest"] / med["max_length"]}
            print(f"step ({layers}/28 2B blocks, 384 tokens, CFG), prompt {n} tokens -> {cols} columns: "
                  f"{med['longest']:.3f} s vs {med['max_length']:.3f} s at {MAX_TOKENS} = {row['ratio']:.3f} "
                  f"(outputs rel err {err:.1e})", flush=True)
            out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="*", default=["t5", "step"], help="t5, step (default: both)")
    parser.add_argument("--tokens", default="40,120", help="prompt lengths in tokens, comma-separated")
    parser.add_argument("--t5-layers", type=int, default=4, help="T5-XXL layers to build (of 24)")
    parser.add_argument("--layers", type=int, default=4, help="2B blocks to build (of 28)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    tokens = [int(t) for t in args.tokens.split(",")]
    if any(not 2 <= t <= MAX_TOKENS for t in tokens):
        parser.error(f"--tokens: each between 2 and {MAX_TOKENS}")
    torch.set_grad_enabled(False)
    head = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "torch": torch.__version__,
            "threads": torch.get_num_threads()}
    print(json.dumps(head), flush=True)
    rows: list[dict[str, Any]] = []
    if "t5" in args.cases:
        rows += case_t5(tokens, args.t5_layers, args.runs)
    if "step" in args.cases:
        rows += case_step(tokens, args.layers, args.runs)
    if args.json:
        args.json.write_text(json.dumps({**head, "results": rows}, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
