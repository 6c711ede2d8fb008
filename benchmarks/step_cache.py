#!/usr/bin/env python
"""End-to-end time of ``generate`` with a step cache against no cache, same process, same random weights.

The full-size 2B transformer and 0.9.x VAE decoder of a preset (default ``ltxv-2b-0.9.6-dev``: CFG + STG, three
guidance branches per step) with random weights (``ltxcli.perf.bench.build_random_pipeline``; on the CPU the
text encoder is replaced by fixed embeddings, as ``ltx bench`` does), one generation per cache setting,
alternating, after one short warm-up. Prints per setting the wall time of ``Pipeline.generate`` (denoise +
decode), the branch evaluations computed and skipped, and the latents' relative difference from the uncached
run; the ratio is cached time / uncached time.

Random weights are not real ones: TeaCache's polynomial was fitted to the released LTX-Video weights, so how
many steps a threshold skips here says nothing about a real checkpoint (real weights change the modulated input
far less between steps than random ones; the published 2.1x at 0.05 is for real weights, 50 steps). What this
measures is the cost of a computed step with the cache attached and the time a skipped one saves.

    python benchmarks/step_cache.py                               # teacache:0.05 vs none, 20 steps, 128x128x9
    python benchmarks/step_cache.py --cache teacache:0.05 --cache fbcache:0.05 --height 256 --width 256 --frames 25
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ltxcli.perf.bench import build_random_pipeline  # noqa: E402
from ltxcli.presets import PRESETS  # noqa: E402


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="ltxv-2b-0.9.6-dev")
    ap.add_argument("--cache", action="append", help="cache setting(s) to time against none (default teacache:0.05)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--height", type=int, default=128)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--frames", type=int, default=9)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    caches = args.cache or ["teacache:0.05"]

    device = torch.device("cpu")
    t0 = time.perf_counter()
    pipe, _, _ = build_random_pipeline(PRESETS[args.preset], device, torch.float32, text_encoder="skip")
    print(f"{args.preset} random weights built in {time.perf_counter() - t0:.1f} s; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}", flush=True)
    size = dict(height=args.height, width=args.width, num_frames=args.frames, seed=1)
    with torch.inference_mode():
        pipe.generate("warm-up", steps=1, **size)

    figures: dict[str, dict[str, float | int | None]] = {}
    baseline: torch.Tensor | None = None
    for setting in ["none", *caches]:
        t0 = time.perf_counter()
        res = pipe.generate("a cat", steps=args.steps, cache=setting, **size)
        seconds = time.perf_counter() - t0
        cache = res.settings["cache"]
        if baseline is None:
            baseline = res.latents
        figures[setting] = {"seconds": round(seconds, 2), "denoise_s": round(res.timings["denoise_s"], 2),
                            "calls": cache["calls"], "skipped": cache["skipped"],
                            "latents_rel_diff": round(rel(res.latents, baseline), 4)}
        print(f"{setting:>16}: {seconds:7.1f} s (denoise {res.timings['denoise_s']:.1f} s), "
              f"{cache['skipped']} of {cache['calls'] or 'all'} branch evaluations skipped, "
              f"latents rel diff vs none {figures[setting]['latents_rel_diff']:.4f}", flush=True)
    for setting in caches:
        ratio = figures[setting]["seconds"] / figures["none"]["seconds"]  # type: ignore[operator]
        if figures[setting]["skipped"]:
            print(f"ratio {setting} / none: {ratio:.3f} (end to end), speed-up {1 / ratio:.2f}x")
        else:  # the same work twice: the ratio is the machine's noise (and the metric's cost), not a speed-up
            print(f"ratio {setting} / none: {ratio:.3f} (end to end); nothing was skipped, so this is run-to-run "
                  "noise plus the metric's cost, not a speed-up")
    if args.json:
        args.json.write_text(json.dumps({"preset": args.preset, "steps": args.steps, "size": size,
                                         "figures": figures}, indent=1))


if __name__ == "__main__":
    main()
