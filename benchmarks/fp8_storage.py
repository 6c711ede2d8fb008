#!/usr/bin/env python
"""fp8 weight storage on the CPU (issue 18, point 2): the full-size 2B transformer with random weights, its
linear weights kept in bfloat16 and widened per call (the CPU loader's default for a bf16 checkpoint) against
the same weights with the blocks' linears stored in float8 e4m3 + per-tensor scale (``--weights-dtype fp8``).

Reported: the bytes each holds (state dict + upcast scratch, what the memory plan counts), the process RSS each
build adds (one child process per variant: the fp8 one quantises the bf16 weights and frees them, as the
loader does tensor by tensor), one forward each at the ``vs_diffusers.py transformer`` inputs (384 video
tokens, CFG batch 2, float32 compute) and the relative error of the fp8-stored output against the unquantised
one. Targets: resident weights <= 0.55x of bfloat16-kept, output within 2e-2 relative. A benchmark, not a test.

    python benchmarks/fp8_storage.py
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from vs_diffusers import TRANSFORMER_2B, rel, rss_bytes, run_ours_transformer, transformer_inputs  # noqa: E402

from ltxcli.memory.weights import held_bytes, scratch_bytes  # noqa: E402
from ltxcli.models.fp8 import convert_to_fp8_storage  # noqa: E402
from ltxcli.models.transformer import LTXVideoTransformer  # noqa: E402
from ltxcli.perf.bench import materialize_random_  # noqa: E402


def build(fp8: bool) -> torch.nn.Module:
    with torch.device("meta"):
        model = LTXVideoTransformer(dataclasses.replace(TRANSFORMER_2B, causal_temporal_positioning=True))
    materialize_random_(model, device="cpu", dtype=torch.float32, seed=0, narrow=torch.bfloat16)
    if fp8:
        convert_to_fp8_storage(model)
        gc.collect()
    return model


def child(variant: str) -> dict[str, Any]:
    """One variant in this process: RSS added by the build, bytes held, one forward (seconds, output saved)."""
    gc.collect()
    before = rss_bytes()
    model = build(variant == "fp8")
    gc.collect()
    built = rss_bytes()
    inp = transformer_inputs(torch.float32)
    with torch.inference_mode():
        run_ours_transformer(model, inp)  # warm-up (also grows the scratch buffer)
        t0 = time.perf_counter()
        out = run_ours_transformer(model, inp)
        seconds = time.perf_counter() - t0
    path = Path(f"/tmp/ltx-fp8-storage-{variant}.pt")
    torch.save(out, path)
    return {"variant": variant, "held_bytes": held_bytes(model) + scratch_bytes(model), "build_rss_bytes": built - before,
            "forward_s": seconds, "output": str(path)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--child", choices=["bf16", "fp8"], help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return
    res: dict[str, Any] = {}
    for variant in ("bf16", "fp8"):
        print(f"{variant}: building the 2B in a child process", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--child", variant], capture_output=True, text=True, check=True)
        res[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    a, b = (torch.load(res[v]["output"]) for v in ("fp8", "bf16"))
    res["rel_err"] = rel(a, b)
    res["held_ratio"] = res["fp8"]["held_bytes"] / res["bf16"]["held_bytes"]
    res["rss_ratio"] = res["fp8"]["build_rss_bytes"] / res["bf16"]["build_rss_bytes"]
    res["forward_ratio"] = res["fp8"]["forward_s"] / res["bf16"]["forward_s"]
    gib = 2**30
    for v in ("bf16", "fp8"):
        r = res[v]
        print(f"{v:>4}: held {r['held_bytes'] / gib:.2f} GiB, build RSS +{r['build_rss_bytes'] / gib:.2f} GiB, "
              f"forward {r['forward_s']:.2f} s")
    print(f"fp8 / bf16-kept: held {res['held_ratio']:.3f}, RSS {res['rss_ratio']:.3f}, forward time "
          f"{res['forward_ratio']:.3f} (target <= 0.55); output rel err {res['rel_err']:.2e} (target <= 2e-2)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
