#!/usr/bin/env python
"""Whether the same frames encode to the same H.264 file, and how fast, with x264's AVX-512 code and without it
(``ltxcli.media.x264_asm``: what ``write_video`` gives x264 on a CPU with AVX-512).

Encodes one 41-frame 192x128 clip of smooth random colour ``--repeats`` times each way (alternating) and counts
the distinct files, then times a 768x512x121 clip each way (``--pairs`` alternating pairs, medians). On a CPU
without AVX-512 both ways are x264's own detection.

    python benchmarks/x264_avx512.py --repeats 12 --pairs 2
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import av
import torch
import torch.nn.functional as F

from ltxcli.media import x264_asm


def _clip(frames: int, height: int, width: int, seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    x = F.interpolate(torch.rand(frames, 3, height // 8, width // 8, generator=g), size=(height, width),
                      mode="bilinear").clamp(0, 1)
    rgb = (x.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    return [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p").to_ndarray() for f in rgb]


def _encode(yuv: list, path: Path, asm: str | None) -> str:
    options = {"crf": "18", "preset": "medium", **({"x264-params": f"asm={asm}"} if asm else {})}
    with av.open(str(path), "w", format="mp4") as c:
        s = c.add_stream("libx264", rate=24, options=options)
        s.height, s.width, s.pix_fmt = yuv[0].shape[0] * 2 // 3, yuv[0].shape[1], "yuv420p"
        for i, plane in enumerate(yuv):
            frame = av.VideoFrame.from_ndarray(plane, format="yuv420p")
            frame.pts = i
            c.mux(s.encode(frame))
        c.mux(s.encode(None))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=12)
    ap.add_argument("--pairs", type=int, default=2)
    args = ap.parse_args()
    asm = x264_asm()
    ways = {"x264's detection": None, "without AVX-512": asm}
    if asm is None:
        print("this CPU has no AVX-512 that x264 uses: both ways are x264's own detection")
    small, big = _clip(41, 128, 192, 0), _clip(121, 512, 768, 1)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "v.mp4"
        files: dict[str, set[str]] = {k: set() for k in ways}
        for _ in range(args.repeats):
            for k, a in ways.items():
                files[k].add(_encode(small, out, a))
        times: dict[str, list[float]] = {k: [] for k in ways}
        for _ in range(args.pairs):
            for k, a in ways.items():
                t = time.perf_counter()
                _encode(big, out, a)
                times[k].append(time.perf_counter() - t)
    for k in ways:
        print(f"{k:>18}: {len(files[k])} distinct file(s) of {args.repeats} encodes of 41x192x128; 768x512x121 "
              f"{statistics.median(times[k]):.2f} s ({', '.join(f'{t:.2f}' for t in times[k])})")
    a, b = (statistics.median(times[k]) for k in ways)
    print(f"time without AVX-512 / with it: {b / a:.3f}")


if __name__ == "__main__":
    main()
