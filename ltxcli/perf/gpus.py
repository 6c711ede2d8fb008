"""GPU peak throughput (the figure utilisation is measured against) and the names of devices.

``--gpu`` is checked against the device actually found (:func:`resolve_gpu`), so a report never compares a
run with the wrong peak.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass

import torch


class BenchError(ValueError):
    """A benchmark request that cannot run as asked (e.g. ``--gpu`` names another device)."""


@dataclass(frozen=True)
class GpuPeak:
    """Dense bfloat16 tensor-core peak of one GPU model (TFLOP/s, no sparsity); ``None`` for the CPU."""

    key: str
    label: str
    tflops: float | None
    names: tuple[str, ...]  # substrings of torch.cuda.get_device_name that identify it
    variants: tuple[tuple[str, str, float], ...] = ()  # (name substring, label, TFLOP/s) overriding the default


# H100 SXM 989 and A100/A800 312 are the figures of shared/reference/performance.md; H200 (same Hopper tensor
# cores as the H100 SXM), L40S (362.05) and RTX 4090 (165.2 with FP32 accumulation, the precision PyTorch
# uses) are NVIDIA datasheet values. The PCIe / NVL H100 boards run lower clocks (756 / 835).
GPU_PEAKS: dict[str, GpuPeak] = {
    "h100": GpuPeak("h100", "H100 SXM", 989.0, ("H100",), (("PCIe", "H100 PCIe", 756.0), ("NVL", "H100 NVL", 835.0))),
    "h200": GpuPeak("h200", "H200", 989.0, ("H200",)),
    "a100": GpuPeak("a100", "A100", 312.0, ("A100", "A800")),
    "l40s": GpuPeak("l40s", "L40S", 362.0, ("L40S",)),
    "4090": GpuPeak("4090", "RTX 4090", 165.2, ("4090",)),
    "cpu": GpuPeak("cpu", "CPU", None, ()),
}


@dataclass(frozen=True)
class ResolvedPeak:
    key: str  # a GPU_PEAKS key, or "unknown"
    label: str
    tflops: float | None
    device_name: str


def detect_gpu(device_name: str) -> str | None:
    """The GPU_PEAKS key whose name pattern matches ``device_name`` (``None`` if none does)."""
    upper = device_name.upper()
    for key, peak in GPU_PEAKS.items():
        if any(pattern.upper() in upper for pattern in peak.names):
            return key
    return None


def _peak_for(key: str, device_name: str) -> ResolvedPeak:
    peak = GPU_PEAKS[key]
    for pattern, label, tflops in peak.variants:
        if pattern.upper() in device_name.upper():
            return ResolvedPeak(key, label, tflops, device_name)
    return ResolvedPeak(key, peak.label, peak.tflops, device_name)


def resolve_gpu(gpu: str | None, device_type: str, device_name: str) -> ResolvedPeak:
    """Check ``--gpu`` against the device found and return the peak to compare with.

    ``gpu=None`` detects the table entry from ``device_name`` (unknown GPUs get no utilisation). A ``gpu``
    that contradicts the device raises :class:`BenchError` with a one-line message.
    """
    if gpu is not None:
        gpu = gpu.lower()
        if gpu not in GPU_PEAKS:
            raise BenchError(f"--gpu {gpu}: unknown (known: {', '.join(GPU_PEAKS)})")
    if device_type == "cpu":
        if gpu not in (None, "cpu"):
            raise BenchError(f"--gpu {gpu} but the benchmark runs on the CPU ({device_name}); use --gpu cpu")
        return _peak_for("cpu", device_name)
    found = detect_gpu(device_name)
    if gpu is None:
        return _peak_for(found, device_name) if found else ResolvedPeak("unknown", device_name, None, device_name)
    if gpu == "cpu":
        raise BenchError(f"--gpu cpu but the benchmark runs on {device_type} ({device_name}); pass --device cpu")
    if found != gpu:
        hint = f" (use --gpu {found})" if found else " (no peak table entry for it: leave out --gpu)"
        raise BenchError(f"--gpu {gpu} does not match the device found: {device_name}{hint}")
    return _peak_for(gpu, device_name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return _cpu_name()
    return str(device)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "CPU"


__all__ = ["GPU_PEAKS", "BenchError", "GpuPeak", "ResolvedPeak", "detect_gpu", "device_name", "resolve_gpu"]
