#!/usr/bin/env python
"""What widening weights per call costs: ltxcli's 2B DiT forward with float32-resident weights against the same
weights kept in bf16 and widened per call (``keep_checkpoint_dtype``, the CPU default).

384 video tokens, CFG batch 2, 128 text tokens, float32 compute on the CPU (the inputs of
``vs_diffusers.py transformer``); one process, alternating runs, medians. A benchmark script, not a test.

    python benchmarks/widen_ab.py --runs 4
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vs_diffusers import TRANSFORMER_2B, run_ours_transformer, transformer_inputs

from ltxcli.models.transformer import LTXVideoTransformer
from ltxcli.perf.bench import materialize_random_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4, help="alternating runs of each setting")
    args = parser.parse_args()

    cfg = dataclasses.replace(TRANSFORMER_2B, causal_temporal_positioning=True)
    with torch.device("meta"):
        models = {"float32 weights": LTXVideoTransformer(cfg), "bf16 kept, widened per call": LTXVideoTransformer(cfg)}
    materialize_random_(models["float32 weights"], device="cpu", dtype=torch.float32, seed=0)
    materialize_random_(models["bf16 kept, widened per call"], device="cpu", dtype=torch.float32, seed=0,
                        narrow=torch.bfloat16)
    inp = transformer_inputs(torch.float32)
    times: dict[str, list[float]] = {k: [] for k in models}
    with torch.inference_mode():
        for model in models.values():  # warm-up
            run_ours_transformer(model, inp)
        for _ in range(args.runs):
            for name, model in models.items():
                start = time.perf_counter()
                run_ours_transformer(model, inp)
                times[name].append(time.perf_counter() - start)
    for name, runs in times.items():
        print(f"{name}: {', '.join(f'{t:.2f}' for t in runs)} s, median {statistics.median(runs):.2f} s")
    wide, narrow = (statistics.median(v) for v in times.values())
    print(f"widened / float32 = {narrow / wide:.3f}")


if __name__ == "__main__":
    main()
