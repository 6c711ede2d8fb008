"""The memory plan (:mod:`ltxcli.memory.plan`) against the measured peak RSS of one full-size random-weights run.

Builds the preset's full-size architecture with random weights on the CPU (:func:`ltxcli.perf.bench.build_random_pipeline`:
layer weights in bfloat16 widened per call, as a CPU load of the released checkpoints holds them; the VAE
encoder is not built and the T5 is replaced by fixed embeddings, so neither is counted on either side), runs
one small generation to get one-off allocations behind it, then takes the resident set as the baseline (it
holds the weights), resets the high-water mark (Linux ``clear_refs`` 5) and generates at the requested size.
Prints the plan's estimate of the run's peak beyond the weights (``host_peak_bytes`` less the weights) next to
the measured VmHWM increment, stage by stage.

    python benchmarks/memory_plan.py                      # 2B 0.9.5, 256x256x25, 2 steps (a few minutes)
    python benchmarks/memory_plan.py --height 512 --width 768 --num-frames 49
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="ltxv-2b-0.9.5", help="a single-pass preset (default: ltxv-2b-0.9.5)")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--num-frames", type=int, default=25)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)

    import torch

    from ltxcli.memory.plan import RunShape, estimate_memory, run_passes
    from ltxcli.memory.weights import weight_parts
    from ltxcli.perf.bench import build_random_pipeline
    from ltxcli.presets import PRESETS

    if args.threads:
        torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    if preset.multi_scale:
        parser.error(f"{args.preset} is multi-scale: pick a single-pass preset")
    device, dtype = torch.device("cpu"), torch.float32
    t0 = time.perf_counter()
    pipe, arch, text_mode = build_random_pipeline(preset, device, dtype, text_encoder="skip")
    print(f"built {arch.label} with random weights in {time.perf_counter() - t0:.1f} s (text encoder: {text_mode})")
    # the encoder stays on the meta device (nothing held), the text encoder is skipped
    parts = dataclasses.replace(weight_parts(pipe.transformer, pipe.vae), vae_encoder=0, text_encoder=0)

    pipe.generate("warm-up", height=64, width=64, num_frames=9, steps=1, seed=0)
    base = _status_kib("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        print("cannot reset VmHWM (/proc/self/clear_refs): the measured peak may be the warm-up's", file=sys.stderr)
    h, w, f = args.height, args.width, args.num_frames
    t0 = time.perf_counter()
    pipe.generate("a cat", height=h, width=w, num_frames=f, steps=args.steps, seed=0)
    run_s = time.perf_counter() - t0
    peak = _status_kib("VmHWM")
    if base is None or peak is None:
        print("needs Linux /proc/self/status", file=sys.stderr)
        return 1

    guidance = [(p.guidance_scale, p.stg_scale) for p in preset.passes[:1]]
    est = estimate_memory(arch.transformer, arch.vae, height=h, width=w, num_frames=f, dtype=dtype,
                          passes=run_passes(RunShape(guidance), h, w, f), parts=parts, offload_saves=False,
                          device_is_host=True, vae_tiling=pipe.vae_tiling)
    mib = 2**20
    print(f"{args.preset} {w}x{h}x{f}, {args.steps} steps, float32 on the CPU ({run_s:.1f} s)")
    print(f"weights (plan): {parts.total / mib:.1f} MiB; baseline RSS {base / 1024:.1f} MiB")
    for s in est.stages:
        print(f"  {s.name:<18} weights {s.weights / mib:9.1f}  activations {s.activations / mib:9.1f}  "
              f"host {s.host / mib:9.1f} MiB")
    estimated = est.host_peak_bytes - parts.total
    measured = (peak - base) * 1024
    print(f"peak beyond the weights: estimated {estimated / mib:.1f} MiB ({est.peak_stage.name}), "
          f"measured {measured / mib:.1f} MiB, measured/estimated {measured / estimated:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
