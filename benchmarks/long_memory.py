"""Peak host memory (RSS) and time of long videos in 1, 2 and 4 windows, on the CPU.

Each run is a fresh process (``ru_maxrss`` is a per-process high-water mark) that builds the built-in ``tiny``
model (random weights, the real block structure), generates ``GenerationRequest(..., window=80, overlap=24)``
streamed into an MP4 exactly as ``ltx generate`` does (``ltxcli.long_video.generate(stream=True)`` ->
``ltxcli.media.write_video``) and reports its peak RSS and wall time (from the request to the last frame
written; the model build is not counted) with the denoise and decode parts. The frame counts are chosen so the
run has exactly N windows (10 latent frames each, 7 apart: 73, 129, 241 frames). Target (issue 16): 4 windows at
most 1.2x the peak of 1 window, time linear in the windows.

Time columns: ``ratio`` = time(k windows) / (k * time(1 window)), 1.0 for time proportional to the windows;
``marginal s`` = (time(k) - time(1)) / (k - 1), the cost of one more window, constant for time linear in the
windows. Every window after the first also attends to the 3 appended tail latent frames (13 latent frames of
tokens where the first window has 10), so the ratio sits somewhat above 1 even when the growth is linear.
``--repeat N`` runs each size N times (fresh processes) and keeps the fastest run's times and the highest peak.

    python benchmarks/long_memory.py [--height 256] [--width 384] [--steps 4] [--windows 1 2 4] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def frames_for(windows: int, window_latents: int = 10, stride: int = 7) -> int:
    latents = window_latents + stride * (windows - 1)
    return 8 * (latents - 1) + 1


def child(height: int, width: int, steps: int, windows: int) -> None:
    import resource

    import torch

    from ltxcli import long_video, media
    from ltxcli.request import GenerationRequest
    from ltxcli.tiny import build_pipeline

    torch.set_num_threads(max(1, torch.get_num_threads()))
    pipe = build_pipeline(torch.device("cpu"), torch.float32)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    req = GenerationRequest("a cat walks | a dog runs | a bird flies | a fish swims", height=height, width=width,
                            num_frames=frames_for(windows), seed=1, steps=steps, window=80, overlap=24)
    t0 = time.perf_counter()
    res = long_video.generate(pipe, req, stream=True)
    with tempfile.TemporaryDirectory() as tmp:
        media.write_video(Path(tmp) / "v.mp4", res.frames(), 24)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    n = len(res.settings["long"]["windows"]) if "long" in res.settings else 1
    print(json.dumps({"windows": n, "frames": req.num_frames, "peak_rss": peak, "after_load_rss": base,
                      "wall_s": round(wall, 3), "denoise_s": round(res.timings.get("denoise_s", 0.0), 3),
                      "decode_s": round(res.timings.get("decode_s", 0.0), 3)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=384)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--windows", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--repeat", type=int, default=1, help="runs per size: the fastest times, the highest peak")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        child(a.height, a.width, a.steps, a.child)
        return
    if a.windows[0] != 1:
        ap.error("--windows must start with 1 (the reference of the ratios)")
    rows = []
    for n in a.windows:
        runs = []
        for _ in range(max(a.repeat, 1)):
            out = subprocess.run([sys.executable, __file__, "--child", str(n), "--height", str(a.height), "--width",
                                  str(a.width), "--steps", str(a.steps)], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        best = min(runs, key=lambda r: r["wall_s"])
        rows.append({**best, "peak_rss": max(r["peak_rss"] for r in runs)})
    first = rows[0]
    print(f"tiny model, {a.width}x{a.height}, {a.steps} steps, window 80 / overlap 24, streamed to MP4, "
          f"best of {max(a.repeat, 1)}")
    print(f"{'windows':>7} {'frames':>6} {'peak RSS MiB':>12} {'x 1 window':>10} {'wall s':>7} {'denoise s':>9} "
          f"{'decode s':>8} {'ratio':>6} {'marginal s':>10}")
    for r in rows:
        k = r["windows"]
        ratio = r["wall_s"] / (k * first["wall_s"])
        marginal = f"{(r['wall_s'] - first['wall_s']) / (k - 1):>10.2f}" if k > 1 else f"{'-':>10}"
        print(f"{k:>7} {r['frames']:>6} {r['peak_rss'] / 2**20:>12.0f} {r['peak_rss'] / first['peak_rss']:>10.3f} "
              f"{r['wall_s']:>7.2f} {r['denoise_s']:>9.2f} {r['decode_s']:>8.2f} {ratio:>6.3f} {marginal}")


if __name__ == "__main__":
    main()
