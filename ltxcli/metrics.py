"""Frame-quality metrics (``ltx vae roundtrip``, :func:`ltxcli.autoencode.roundtrip`): PSNR and SSIM per frame;
and the peak memory a run measured (:func:`peak_memory`: the roundtrip, ``ltx bench``, the ranks' statistics).

SSIM follows Wang et al. 2004 ("Image quality assessment: from error visibility to structural similarity") as
their reference implementation computes it: on luma (BT.601: Y = 0.299 R + 0.587 G + 0.114 B, as MATLAB's
``rgb2gray``), an 11x11 Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03, dynamic range L = 1 (frames in
[0, 1]), and 'valid' filtering (no padding: the map covers only windows that fit inside the frame); the frame's
SSIM is the mean of the map. Computed in float64.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .media import to_uint8

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
LUMA_BT601 = (0.299, 0.587, 0.114)
# PSNR of identical frames is infinite; report this ceiling instead (MSE 1e-10 on [0, 1] data).
PSNR_MAX_DB = 100.0


def gaussian_kernel(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> Tensor:
    """Normalised 1-D Gaussian ``[size]`` (float64)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _window_mean(x: Tensor) -> Tensor:
    """'Valid' Gaussian-weighted local means of ``[n, 1, H, W]`` -> ``[n, 1, H-10, W-10]``.

    The 2-D window is the outer product of the 1-D kernel, so filtering rows then columns (22 taps a pixel)
    computes the same sums as the 11x11 window (121 taps) up to float64 rounding, about 5x faster.
    """
    g = gaussian_kernel()
    return F.conv2d(F.conv2d(x, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))


def luma(frames: Tensor) -> Tensor:
    """``[F, H, W, 3]`` RGB -> ``[F, H, W]`` BT.601 luma (float64)."""
    w = torch.tensor(LUMA_BT601, dtype=torch.float64)
    return frames.to(torch.float64) @ w


def ssim_per_frame(a: Tensor, b: Tensor) -> Tensor:
    """SSIM of each frame pair; ``a``, ``b``: ``[F, H, W, 3]`` in [0, 1] -> ``[F]`` float64."""
    if a.shape != b.shape or a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"ssim needs two [F, H, W, 3] tensors of the same shape, got {list(a.shape)} and {list(b.shape)}")
    if min(a.shape[1], a.shape[2]) < SSIM_WINDOW:
        raise ValueError(f"ssim needs frames of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {a.shape[2]}x{a.shape[1]}")
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    out = []
    for fa, fb in zip(a.split(8), b.split(8), strict=True):  # chunks bound the float64 temporaries
        x, y = luma(fa)[:, None], luma(fb)[:, None]  # [f, 1, H, W]
        # the five local means in one filtering call: [5f, 1, H, W] -> 5 x [f, 1, H-10, W-10]
        mu_x, mu_y, exx, eyy, exy = _window_mean(torch.cat([x, y, x * x, y * y, x * y])).chunk(5)
        sxx = exx - mu_x**2
        syy = eyy - mu_y**2
        sxy = exy - mu_x * mu_y
        num = (2 * mu_x * mu_y + c1) * (2 * sxy + c2)
        den = (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
        out.append((num / den).mean(dim=(1, 2, 3)))
    return torch.cat(out)


def mse_per_frame(a: Tensor, b: Tensor) -> Tensor:
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {list(a.shape)} and {list(b.shape)}")
    d = a.to(torch.float64) - b.to(torch.float64)
    return (d * d).flatten(1).mean(dim=1)


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for data in [0, 1], capped at :data:`PSNR_MAX_DB`."""
    if mse <= 10 ** (-PSNR_MAX_DB / 10):
        return PSNR_MAX_DB
    return -10.0 * math.log10(mse)


@dataclass(frozen=True)
class FrameQuality:
    """PSNR (dB) and SSIM of a reconstruction against its reference, per frame and overall."""

    psnr_per_frame: list[float]
    ssim_per_frame: list[float]
    psnr: float  # from the mean squared error of all frames
    ssim: float  # the mean over frames


def frame_quality(reference: Tensor, reconstruction: Tensor) -> FrameQuality:
    """Compare two float ``[F, H, W, 3]`` videos in [0, 1] as they would be written: both rounded to 8 bits."""
    ref8 = to_uint8(reference).double() / 255
    rec8 = to_uint8(reconstruction).double() / 255
    mse = mse_per_frame(ref8, rec8)
    ssim = [float(s) for s in ssim_per_frame(ref8, rec8)]
    return FrameQuality(psnr_per_frame=[psnr_from_mse(float(m)) for m in mse], ssim_per_frame=ssim,
                        psnr=psnr_from_mse(float(mse.mean())), ssim=sum(ssim) / len(ssim))


#: What :func:`peak_memory` measured, as ``peak_memory_kind`` in ``--json`` (``ltx vae roundtrip``, ``ltx bench``),
#: and in words for the tables.
PEAK_MEMORY_KINDS = {"cuda_allocated": "torch.cuda.max_memory_allocated",
                     "process_peak_rss": "process peak RSS (includes the weights)", "unavailable": "unavailable"}


def peak_memory(device: torch.device) -> tuple[int | None, str]:
    """``(bytes, kind)``, kind a key of :data:`PEAK_MEMORY_KINDS`: the peak allocated CUDA memory of ``device``
    (since the caller's ``torch.cuda.reset_peak_memory_stats``), or on the CPU this process's peak resident set
    size, weights included; ``(None, "unavailable")`` where the system has no counter (Windows)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_allocated"
    try:  # Linux: this process image's high-water mark (ru_maxrss may carry a forking parent's)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024, "process_peak_rss"
    except OSError:
        pass
    try:
        import resource  # not on Windows

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None, "unavailable"
    return int(rss if sys.platform == "darwin" else rss * 1024), "process_peak_rss"  # KiB on Linux, bytes on macOS
