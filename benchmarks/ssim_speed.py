#!/usr/bin/env python
"""What the separable Gaussian saves in ``ltx vae roundtrip``'s SSIM (``ltxcli.metrics``): the 11x11 window as one
2-D convolution per local mean (the code before, rebuilt here as the reference) against the library's rows-then-
columns filtering of the five means in one call. Both in float64 on the same frames, in one process, alternating
runs, medians; the per-frame SSIMs of the two are compared first. A benchmark script, not a test.

    python benchmarks/ssim_speed.py --frames 8 --size 512x768 --runs 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ltxcli import metrics


def ssim_2d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The reference: each local mean through the 11x11 window (121 taps a pixel)."""
    c1, c2 = metrics.SSIM_K1**2, metrics.SSIM_K2**2
    g = metrics.gaussian_kernel()
    window = (g[:, None] * g[None, :])[None, None]  # [1, 1, 11, 11]
    out = []
    for fa, fb in zip(a.split(8), b.split(8), strict=True):
        x, y = metrics.luma(fa)[:, None], metrics.luma(fb)[:, None]
        mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
        sxx = F.conv2d(x * x, window) - mu_x**2
        syy = F.conv2d(y * y, window) - mu_y**2
        sxy = F.conv2d(x * y, window) - mu_x * mu_y
        num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
        den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
        out.append((num / den).mean(dim=(1, 2, 3)))
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", default="512x768", help="HEIGHTxWIDTH")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(args.frames, h, w, 3, generator=gen, dtype=torch.float64)
    b = (a + 0.05 * torch.randn(a.shape, generator=gen, dtype=torch.float64)).clamp(0, 1)
    a, b = (a * 255).round() / 255, (b * 255).round() / 255  # as frame_quality compares them: 8-bit codes
    ref, new = ssim_2d(a, b), metrics.ssim_per_frame(a, b)
    print(f"per-frame SSIM, max |2-D - separable| = {float((ref - new).abs().max()):.3e} (SSIM {float(new.mean()):.6f})")
    times: dict[str, list[float]] = {"2-D window": [], "separable": []}
    for _ in range(args.runs):
        for name, fn in (("2-D window", ssim_2d), ("separable", metrics.ssim_per_frame)):
            t0 = time.perf_counter()
            fn(a, b)
            times[name].append((time.perf_counter() - t0) / args.frames)
    old, sep = statistics.median(times["2-D window"]), statistics.median(times["separable"])
    print(f"{h}x{w}, {args.frames} frames, {torch.get_num_threads()} threads: 2-D window {old:.3f} s a frame, "
          f"separable {sep:.3f} s a frame = {sep / old:.3f} of the 2-D window's time")


if __name__ == "__main__":
    main()
