"""Checks a generating command runs before any weight is loaded: will the run fit in memory, can the
outputs be written.

Memory model (:func:`estimate_memory`): everything a run keeps on the device at its peak,

* weights: every tensor of the model checkpoint (transformer + VAE), the text encoder and the upsampler, at
  the run's dtype (floats are cast to it, as the loaders do), read from the safetensors headers alone;
* plus the larger of
  - the transformer's live activations for one denoising step: ``units * B * N * D`` elements at the run's
    dtype, ``B`` the guidance branches (1 + CFG + STG), ``N`` the latent tokens at the padded size (plus the
    tokens of conditions placed after frame 0), ``D`` the hidden width. Measured by peak RSS on the CPU
    (float32, 2-layer models, D 256-512, N 1.5k-3k): 16.5 units with one timestep per sample and 31-33
    with per-token timesteps (conditioning: the adaLN tables become ``[B, N, 6D]``), hence 18 / 34 here;
  - the VAE decode of the whole latent video (:func:`ltxcli.vae_tiling.decode_memory_bytes`, calibrated
    the same way).

Not counted: the text encoder's activations (256 tokens: a few MB), the upsampler's activations (half
size), the VAE encode of conditions (smaller than the decode), the CUDA context (already outside
``mem_get_info``'s free memory when this runs). The estimate is an approximation for refusing runs that
cannot fit, not a guarantee; ``LTX_NO_MEMORY_CHECK=1`` skips the check.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import EXIT_ERROR, EXIT_OOM, CliError, human_bytes

NO_MEMORY_CHECK_ENV = "LTX_NO_MEMORY_CHECK"
#: Transformer activation peak in units of ``B * N * D`` elements (see the module docstring).
TRANSFORMER_UNITS = 18
TRANSFORMER_UNITS_PER_TOKEN_TIMESTEPS = 34
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


# --- weights ----------------------------------------------------------------------------------------------


def _fp8_linear(key: str, shape: tuple[int, ...]) -> bool:
    """A transformer block's linear weight: what ``dtype="fp8"`` keeps in float8 (one byte per element)."""
    return "transformer_blocks." in key and key.endswith(".weight") and len(shape) == 2


def safetensors_bytes(path: str | os.PathLike[str], dtype: Any = None, *, fp8: bool = False) -> int:
    """Bytes the tensors of one ``.safetensors`` file take once loaded, floats at ``dtype`` (else as stored);
    ``fp8``: the transformer blocks' linear weights at one byte each.

    Header only (no tensor data is read); a broken file is a one-line ``CheckpointError``.
    """
    from ltxcli.safetensors_io import CheckpointError, SafetensorsFile

    p = Path(path)
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{p}: pickle-based checkpoints ({p.suffix}) are refused because loading them can run code; "
            "convert it to .safetensors"
        )
    total = 0
    for key, info in SafetensorsFile(p).infos.items():
        size = dtype.itemsize if dtype is not None and info.dtype.is_floating_point else info.dtype.itemsize
        if fp8 and _fp8_linear(key, info.shape):
            size = 1
        total += math.prod(info.shape) * size
    return total


def folder_bytes(folder: str | os.PathLike[str], dtype: Any = None, *, what: str = "weights", fp8: bool = False) -> int:
    """Sum of :func:`safetensors_bytes` over the ``*.safetensors`` files directly in ``folder``.

    A folder without any (pickle-based ``.bin`` weights only, say) is a one-line ``CheckpointError``.
    """
    from ltxcli.safetensors_io import CheckpointError

    f = Path(folder)
    files = sorted(f.glob("*.safetensors"))
    if not files:
        pickles = " (only pickle-based files, which are refused)" if any(
            p.suffix.lower() in PICKLE_SUFFIXES for p in f.glob("*")) else ""
        raise CheckpointError(f"{f}: no .safetensors {what}{pickles}")
    return sum(safetensors_bytes(p, dtype, fp8=fp8) for p in files)


def text_encoder_bytes(folder: str | os.PathLike[str], dtype: Any = None) -> int:
    """Weights of a text-encoder folder (the PixArt layout with ``text_encoder/``, or a flat folder)."""
    f = Path(folder)
    model_dir = f / "text_encoder" if (f / "text_encoder").is_dir() else f
    return folder_bytes(model_dir, dtype, what="text encoder weights")


def model_bytes(path: str | os.PathLike[str], dtype: Any = None, *, fp8: bool = False) -> int:
    """Transformer + VAE weights of an official single file or a diffusers-format folder."""
    p = Path(path)
    if p.is_dir():
        return sum(folder_bytes(p / part, dtype, fp8=fp8) for part in ("transformer", "vae") if (p / part).is_dir())
    return safetensors_bytes(p, dtype, fp8=fp8)


def module_bytes(modules: Iterable[Any], dtype: Any = None) -> int:
    """Parameter + buffer bytes of modules (meta-device modules work: only shapes are read)."""
    total = 0
    for m in modules:
        for t in [*m.parameters(), *m.buffers()]:
            size = dtype.itemsize if dtype is not None and t.is_floating_point() else t.element_size()
            total += t.numel() * size
    return total


# --- activations --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak device memory of one generation: weights plus the larger activation peak."""

    weights_bytes: int
    transformer_bytes: int  # activations of one denoising step
    vae_bytes: int  # activations of the decode

    @property
    def peak_bytes(self) -> int:
        return self.weights_bytes + max(self.transformer_bytes, self.vae_bytes)

    def describe(self) -> str:
        stage = "denoising" if self.transformer_bytes >= self.vae_bytes else "decoding"
        return (f"about {human_bytes(self.peak_bytes)} (weights {human_bytes(self.weights_bytes)} + "
                f"{stage} {human_bytes(max(self.transformer_bytes, self.vae_bytes))})")


def latent_shape(vae: Any, height: int, width: int, num_frames: int) -> tuple[int, int, int]:
    """Latent ``(f, h, w)`` of a request, at the official padded size."""
    from ltxcli.pipeline import padded_size

    ph, pw, pf = padded_size(height, width, num_frames)
    s, t = vae.spatial_compression, vae.temporal_compression
    return (pf - 1) // t + 1, ph // s, pw // s


def estimate_memory(
    transformer: Any,
    vae: Any,
    *,
    height: int,
    width: int,
    num_frames: int,
    dtype: Any,
    weights_bytes: int = 0,
    branches: int = 3,
    extra_tokens: int = 0,
    per_token_timesteps: bool = False,
) -> MemoryEstimate:
    """Estimated peak memory of generating ``height x width x num_frames`` (see the module docstring).

    ``transformer`` / ``vae``: :class:`~ltxcli.models.configs.TransformerConfig` / ``VAEConfig``;
    ``branches``: guidance branches per step (1 + CFG + STG); ``extra_tokens``: tokens of conditions placed
    after frame 0; ``per_token_timesteps``: conditioning is used (the timestep differs per token).
    """
    from ltxcli.vae_tiling import decode_memory_bytes

    f, h, w = latent_shape(vae, height, width, num_frames)
    tokens = f * h * w + extra_tokens
    units = TRANSFORMER_UNITS_PER_TOKEN_TIMESTEPS if per_token_timesteps else TRANSFORMER_UNITS
    act = units * branches * tokens * transformer.inner_dim * dtype.itemsize
    dec = decode_memory_bytes(vae, (1, vae.latent_channels, f, h, w), dtype)
    return MemoryEstimate(int(weights_bytes), int(act), int(dec))


# --- free memory -------------------------------------------------------------------------------------------


def free_memory_bytes(device: Any) -> int:
    """What a run on ``device`` can still allocate: CUDA free memory plus what PyTorch's allocator holds
    unused; CPU: ``MemAvailable`` (/proc/meminfo), else the available physical pages, else unlimited."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def memory_check_disabled() -> bool:
    return os.environ.get(NO_MEMORY_CHECK_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _smaller_size(fits: Any, height: int, width: int, num_frames: int) -> tuple[int, int, int] | None:
    """The largest request with the same aspect ratio (sizes multiples of 32, frames 8k + 1) that ``fits``."""
    for scale in (0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125):
        h = max(32, int(height * scale) // 32 * 32)
        w = max(32, int(width * scale) // 32 * 32)
        f = max(1, int((num_frames - 1) * scale) // 8 * 8 + 1)
        if (h, w, f) != (height, width, num_frames) and fits(h, w, f):
            return h, w, f
    return None


def check_memory(
    estimate: Any,
    *,
    height: int,
    width: int,
    num_frames: int,
    device: Any,
    free_bytes: int,
    hints: Sequence[str] = (),
    where: str = "",
) -> None:
    """Exit 5 with one line when ``estimate(height, width, num_frames)`` (a :class:`MemoryEstimate`) exceeds
    ``free_bytes``, naming both, a smaller size that fits (if any) and ``hints`` (other options that save
    memory)."""
    est = estimate(height, width, num_frames)
    if est.peak_bytes <= free_bytes:
        return
    advice: list[str] = []
    if est.weights_bytes >= free_bytes:
        advice.append(f"the weights alone need {human_bytes(est.weights_bytes)}")
    else:
        smaller = _smaller_size(lambda h, w, f: estimate(h, w, f).peak_bytes <= free_bytes, height, width, num_frames)
        if smaller is not None:
            h, w, f = smaller
            advice.append(f"try a smaller size, e.g. --height {h} --width {w} --num-frames {f}, which needs "
                          f"{estimate(h, w, f).describe()}")
        else:
            advice.append("try a smaller --height/--width or fewer --num-frames")
    advice += list(hints)
    advice.append(f"or set {NO_MEMORY_CHECK_ENV}=1 to try anyway")
    raise CliError(
        f"{where}this run needs {est.describe()} on {device} but {human_bytes(free_bytes)} is free: "
        + "; ".join(advice),
        EXIT_OOM,
    )


# --- outputs ----------------------------------------------------------------------------------------------


def check_writable(target: Path) -> None:
    """Fail now (exit 1, one line) if ``target`` cannot be created: the nearest existing folder above it must
    accept a new file (a probe file is created there and removed at once). Missing folders in between are
    created later, at write time."""
    parent = target.parent
    anc = parent
    while not (anc.exists() or anc.is_symlink()) and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise CliError(f"cannot write {target}: {anc} is not a folder", EXIT_ERROR)
    try:
        fd, probe = tempfile.mkstemp(prefix=".ltx-write-test-", dir=anc)
    except OSError as e:
        reason = os.strerror(e.errno).lower() if e.errno else str(e)
        raise CliError(f"cannot write {target}: {anc}: {reason}", EXIT_ERROR) from None
    os.close(fd)
    os.unlink(probe)


__all__ = [
    "NO_MEMORY_CHECK_ENV", "MemoryEstimate", "check_memory", "check_writable", "estimate_memory", "folder_bytes",
    "free_memory_bytes", "model_bytes", "module_bytes", "safetensors_bytes", "text_encoder_bytes",
]
