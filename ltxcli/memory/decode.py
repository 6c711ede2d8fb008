"""The VAE decode's memory and work model, and the choice of how to decode (untiled, or which tiling).

Moved out of :mod:`ltxcli.vae_tiling` (which keeps the geometry and the tiled decode itself) so the memory
plan (:mod:`ltxcli.memory.plan`) and the pipeline's decode share one model: the pipeline asks
:func:`plan_decode` how to decode, the plan asks the same function and then :func:`decode_memory_bytes` /
:func:`tiled_decode_memory_bytes` what that decode holds.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from ..models.configs import VAEConfig
from ..vae_tiling import (
    CHUNK_FRAMES,
    TILE_HW,
    TileMode,
    _decode_range,
    _spans,
    _split_dims,
    _to_pixel,
    decoder_ops,
    decoder_scales,
    default_split_block,
    split_scales,
    suffix_receptive_field,
)

# Measured peak / :func:`_live_bytes` model for our decoder (ltxcli.models.vae): conv workspaces, layout
# reorders, allocator slack. Calibrated on CPU by peak RSS (VmHWM, glibc mmap threshold pinned) over a
# decode whose last stage has the released 128 channels: 1.18-1.21 in float32, 1.29 in bfloat16.
# Not calibrated on CUDA (no GPU was available); :data:`DEFAULT_SAFETY` leaves further headroom there.
DECODE_MEMORY_FACTOR = 1.3
# ``auto`` tiles when the estimate exceeds this fraction of the free memory.
DEFAULT_SAFETY = 0.8
# :func:`choose_tiling` charges each window this fraction of a whole decode's convolution work on top of
# its own (kernel launches, window copies; ~1% of an untiled 0.9.5 decode at 704x1216x121 per window).
WINDOW_OVERHEAD = 0.02


# --- memory -------------------------------------------------------------------------------------------------


def _walk(
    config: VAEConfig, batch: int, fhw: Sequence[int], nbytes: int, start: int, stop: int, *,
    conv_in: bool, head: bool, latent_channels: int,
) -> tuple[float, float]:
    """``(peak live bytes, conv work)`` of ``[conv_in] + up_blocks[start:stop] + [head]`` on input ``fhw``.

    Live tensors per block, in units ``U = B*C*F*H*W*bytes`` of the block input (time-padded buffers have
    2 more frames): resnet C -> C: input, two padded conv buffers and the conv output (the first buffer
    is released only once the second exists) = ``2 + 2(F+2)/F``; C -> C' adds the LayerNorm copy and the
    1x1x1 shortcut; upsampler (conv to ``8C/m`` channels, then a depth-to-space copy) = input + conv output
    + copy = ``1 + 16/m``; conv_in: its input, padded copy and output; head: the padded conv input, then
    the ``3*p*p``-channel conv output and its un-patchify copy. Work is ``sum C_in*C_out*27*positions``.
    """
    first, ops = decoder_ops(config)
    f, h, w = (int(v) for v in fhw)
    ch = ops[start].c_in if start < len(ops) else ops[-1].c_out

    def unit(c: int) -> float:
        return float(batch * c * f * h * w * nbytes)

    peak = work = 0.0
    if conv_in:
        peak = 2 * unit(latent_channels) * (f + 2) / f + unit(first)
        work += latent_channels * first * 27.0 * f * h * w
        ch = first
    for op in ops[start:stop]:
        pad = (f + 2) / f
        pos = float(f * h * w)
        if op.kind == "res":
            peak = max(peak, unit(ch) * (2 + 2 * pad))
            work += 2 * op.layers * ch * ch * 27 * pos
        elif op.kind == "res_xy":
            peak = max(peak, (unit(ch) + unit(op.c_out)) * (1 + pad), 2 * unit(ch) + 2 * unit(op.c_out))
            work += (ch * op.c_out + op.c_out**2) * 27 * pos + ch * op.c_out * pos
            ch = op.c_out
        else:
            conv = unit(ch) * op.st * op.ss * op.ss * op.c_out / op.c_in
            peak = max(peak, unit(ch) * (1 + pad) + conv, unit(ch) + 2 * conv)
            work += ch * (op.st * op.ss * op.ss * op.c_out) * 27 * pos
            f, h, w = f * op.st - (op.st - 1), h * op.ss, w * op.ss
            ch = op.c_out
    if head:
        out_ch = config.out_channels * config.patch_size**2
        pad = (f + 2) / f
        peak = max(peak, unit(ch) * (1 + pad), unit(ch) * pad + 2 * unit(out_ch))
        work += ch * out_ch * 27.0 * f * h * w
    return peak, work


def _live_bytes(config: VAEConfig, latent_shape: Sequence[int], dtype: torch.dtype) -> float:
    """Largest sum of simultaneously live activations of one untiled decode (model of :func:`_walk`)."""
    if len(latent_shape) == 3:
        latent_shape = (1, config.latent_channels, *latent_shape)
    b, c, f, h, w = (int(v) for v in latent_shape)
    nbytes = torch.empty((), dtype=dtype).element_size()
    n = len(decoder_ops(config)[1])
    return _walk(config, b, (f, h, w), nbytes, 0, n, conv_in=True, head=True, latent_channels=c)[0]


def decode_memory_bytes(
    config: VAEConfig, latent_shape: Sequence[int], dtype: torch.dtype, factor: float = DECODE_MEMORY_FACTOR
) -> int:
    """Estimated peak memory (bytes) of one untiled ``vae.decode`` beyond its weights.

    ``latent_shape``: ``[B, C, f, h, w]`` or ``[f, h, w]`` (batch 1). ``factor`` times the live
    activations of :func:`_walk`. Every released decoder peaks in a resnet of its last stage:
    ``~4 * 128 * F*H*W/16`` elements (``F, H, W`` the output video size), i.e. ``1.3 * 32 * F*H*W * bytes``:
    8.1 GiB at 121x704x1216 in bfloat16.

    No weight-sized temporary is added: the one a CPU run has, the widened copy of a narrow-kept conv weight
    (432 MiB for the first 0.9.5 upsampler in float32), lives in the model's upcast scratch buffer, which the
    plan counts with the weights (:func:`ltxcli.memory.weights.scratch_bytes`). Measured on the full-width
    0.9.5 decoder (random weights, 2x2x2 latents, first decode, VmHWM increment): bfloat16-kept weights
    +467 MiB (the 432 MiB scratch and the activations), float32 weights +53 MiB (no reorder copy of the
    weights). Counting a weight copy here as well made the full-size plan twice the measured peak.
    """
    return int(factor * _live_bytes(config, latent_shape, dtype))


#: Frames per uint8 chunk a streamed result hands its writer (``GenerationResult.frames``' default); the memory
#: plan's write stage of a streamed run holds one such chunk instead of the whole video.
STREAM_CHUNK_FRAMES = 8


def output_bytes(config: VAEConfig, latent_shape: Sequence[int]) -> int:
    """The float32 output video of a decode of ``latent_shape`` ``[B, C, f, h, w]``."""
    b, _, f, h, w = (int(v) for v in latent_shape)
    t, s = decoder_scales(config)
    return 4 * b * config.out_channels * _to_pixel(f, t, True) * h * w * s * s


def chunk_output_bytes(config: VAEConfig, latent_shape: Sequence[int], *, split_block: int | None = None,
                       chunk_frames: int = CHUNK_FRAMES, overlap_frames: int = 0, **_: Any) -> int:
    """The float32 output of the longest time window a tiled decode with these settings yields at once
    (``tiled_decode_chunks``: what a streamed result holds on the host): the whole output's share of that
    window's positions at the split block, one position added for the causal first frame."""
    split = default_split_block(config) if split_block is None else split_block
    fs = _split_dims(config, latent_shape[2:], split)[0]
    longest = max(e - s for s, e in _spans(fs, chunk_frames, overlap_frames))
    whole = output_bytes(config, latent_shape)
    return min(whole, math.ceil(whole * (longest + 1) / fs))


class _SplitCosts:
    """Memory and work model of decodes split at ``split``; :meth:`cost` for one window layout."""

    def __init__(self, config: VAEConfig, latent_shape: Sequence[int], dtype: torch.dtype, split: int,
                 out_on_device: bool) -> None:
        b, c, f, h, w = (int(v) for v in latent_shape)
        self.config, self.split, self.b, self.c = config, split, b, c
        self.nbytes = torch.empty((), dtype=dtype).element_size()
        _, ops = decoder_ops(config)
        self.n = len(ops)
        self.dims = _split_dims(config, (f, h, w), split)
        self.t_scale, self.s_scale = split_scales(config, split)
        ch = ops[split].c_in if split < self.n else ops[-1].c_out
        prefix, self.prefix_work = _walk(config, b, (f, h, w), self.nbytes, 0, split, conv_in=True, head=False,
                                         latent_channels=c)
        self.prefix = DECODE_MEMORY_FACTOR * prefix
        self.full_suffix_work = _walk(
            config, b, self.dims, self.nbytes, split, self.n, conv_in=False, head=True, latent_channels=c
        )[1]
        self.held = float(b * ch * math.prod(self.dims) * self.nbytes)  # kept while the windows run
        self.output = output_bytes(config, latent_shape) if out_on_device else 0

    def memory(self, window: Sequence[int]) -> int:
        """Peak with largest window ``window``: the untiled part, or the held split-point activation plus
        one window's decode and its float32 crop; plus the float32 output if it lives on the device."""
        suffix, _ = _walk(
            self.config, self.b, window, self.nbytes, self.split, self.n, conv_in=False, head=True,
            latent_channels=self.c,
        )
        s = self.s_scale
        frames = _to_pixel(window[0], self.t_scale, True)
        crop = 4 * self.b * self.config.out_channels * frames * window[1] * s * window[2] * s
        return int(max(self.prefix, self.held + DECODE_MEMORY_FACTOR * suffix + crop) + self.output)

    def work(self, volume_fraction: float, windows: int) -> float:
        """The untiled part's work plus the tail's, scaled by the decoded volume (context included), plus a
        fixed cost per window (:data:`WINDOW_OVERHEAD` of a whole decode: launches, copies)."""
        full = self.prefix_work + self.full_suffix_work
        return self.prefix_work + self.full_suffix_work * volume_fraction + WINDOW_OVERHEAD * full * windows


def tiled_decode_memory_bytes(
    config: VAEConfig,
    latent_shape: Sequence[int],
    dtype: torch.dtype,
    *,
    split_block: int | None = None,
    tile_hw: int | tuple[int, int] = TILE_HW,
    overlap_hw: int = 0,
    context_hw: int | None = None,
    chunk_frames: int = CHUNK_FRAMES,
    overlap_frames: int = 0,
    context_frames: int | None = None,
    out_on_device: bool = True,
) -> int:
    """Estimated peak of :func:`tiled_decode` with these settings: the untiled part, or the split-point
    activation plus the largest window's decode and float32 crop; plus the float32 output when it
    accumulates on the decoding device."""
    if len(latent_shape) == 3:
        latent_shape = (1, config.latent_channels, *latent_shape)
    split = default_split_block(config) if split_block is None else split_block
    rt, rs = suffix_receptive_field(config, split)
    ctx_t = rt if context_frames is None else context_frames
    ctx_s = rs if context_hw is None else context_hw
    fs, hs, ws = _split_dims(config, latent_shape[2:], split)
    tile_h, tile_w = (tile_hw, tile_hw) if isinstance(tile_hw, int) else tile_hw
    axes = [(fs, chunk_frames, overlap_frames, ctx_t, True), (hs, tile_h, overlap_hw, ctx_s, False),
            (ws, tile_w, overlap_hw, ctx_s, False)]
    window, fraction, count = [], 1.0, 1
    for length, tile, overlap, ctx, temporal in axes:
        ranges = [_decode_range(s, e, length, ctx, temporal) for s, e in _spans(length, tile, overlap)]
        window.append(max(bb - aa for aa, bb in ranges))
        fraction *= sum(bb - aa for aa, bb in ranges) / length
        count *= len(ranges)
    if count == 1:  # tiled_decode runs vae.decode, then a float32 copy of its output
        return decode_memory_bytes(config, latent_shape, dtype) + output_bytes(config, latent_shape)
    return _SplitCosts(config, latent_shape, dtype, split, out_on_device).memory(window)


def _axis_options(
    length: int, overlap: int, context: int, temporal: bool, max_windows: int
) -> list[tuple[int, int, int, float]]:
    """``(tile, windows, longest decode, decoded length / length)`` for each distinct split of one axis."""
    seen: dict[int, tuple[int, int, int, float]] = {1: (length, 1, length, 1.0)}
    for tile in range(length - 1, overlap, -1):
        spans = _spans(length, tile, overlap)
        if len(spans) > max_windows:
            break
        ranges = [_decode_range(s, e, length, context, temporal) for s, e in spans]
        option = (tile, len(spans), max(b - a for a, b in ranges), sum(b - a for a, b in ranges) / length)
        seen.setdefault(len(spans), option)
    return list(seen.values())


def _settings(
    split: int, tile: tuple[int, int], chunk: int, overlap_s: int, overlap_t: int, ctx_s: int, ctx_t: int,
    exact: bool,
) -> dict[str, Any]:
    return {
        "split_block": split, "tile_hw": tile, "overlap_hw": overlap_s, "context_hw": None if exact else ctx_s,
        "chunk_frames": chunk, "overlap_frames": overlap_t, "context_frames": None if exact else ctx_t,
    }


def choose_tiling(
    config: VAEConfig,
    latent_shape: Sequence[int],
    dtype: torch.dtype,
    budget_bytes: int,
    *,
    out_on_device: bool = True,
    min_windows: int = 1,
    max_windows_per_axis: int = 12,
    exact: bool = True,
) -> dict[str, Any]:
    """:func:`tiled_decode` keyword arguments that fit ``budget_bytes`` with the least work.

    Tries every split point and every split of time, height and width into at most
    ``max_windows_per_axis`` windows, with the exact context; keeps the cheapest (convolution work,
    context included) whose estimate fits, ties to fewer windows. If nothing fits (or ``exact=False``),
    it retries with smaller, approximate contexts (halved down to 1, blended over 2 positions); as a last
    resort it returns the option with the smallest estimate.
    """
    if len(latent_shape) == 3:
        latent_shape = (1, config.latent_channels, *latent_shape)
    shape = tuple(int(v) for v in latent_shape)
    n = len(decoder_ops(config)[1])
    smallest: tuple[int, dict[str, Any]] | None = None
    for divisor in ((1, 2, 4, 8, 16) if exact else (2, 4, 8, 16)):
        best: tuple[tuple[float, int], dict[str, Any]] | None = None
        for split in range(n + 1):
            costs = _SplitCosts(config, shape, dtype, split, out_on_device)
            rt, rs = suffix_receptive_field(config, split)
            ctx_t, ctx_s = max(1, rt // divisor), max(1, rs // divisor)
            overlap_s, overlap_t = (0, 0) if divisor == 1 else (2, 1)
            axes_args = (overlap_s, overlap_t, ctx_s, ctx_t, divisor == 1)
            fs, hs, ws = costs.dims
            t_opts = _axis_options(fs, overlap_t, ctx_t, True, max_windows_per_axis)
            h_opts = _axis_options(hs, overlap_s, ctx_s, False, max_windows_per_axis)
            # fewest windows first: memory falls and work rises along the width options
            w_opts = _axis_options(ws, overlap_s, ctx_s, False, max_windows_per_axis)
            for tt, nt, lt, ft in t_opts:
                for th, nh, lh, fh in h_opts:
                    last = w_opts[-1]
                    mem_last = costs.memory((lt, lh, last[2]))
                    if smallest is None or mem_last < smallest[0]:
                        smallest = (mem_last, _settings(split, (th, last[0]), tt, *axes_args))
                    if mem_last > budget_bytes:
                        continue
                    lo, hi = 0, len(w_opts) - 1  # first width option that fits (memory is monotone)
                    while lo < hi:
                        mid = (lo + hi) // 2
                        if costs.memory((lt, lh, w_opts[mid][2])) <= budget_bytes:
                            hi = mid
                        else:
                            lo = mid + 1
                    while lo < len(w_opts) and nt * nh * w_opts[lo][1] < min_windows:
                        lo += 1
                    if lo == len(w_opts):
                        continue
                    tw, nw, _, fw = w_opts[lo]
                    key = (costs.work(ft * fh * fw, nt * nh * nw), nt * nh * nw)
                    if best is None or key < best[0]:
                        best = (key, _settings(split, (th, tw), tt, *axes_args))
        if best is not None:
            return best[1]
    assert smallest is not None
    return smallest[1]


# --- the switch ---------------------------------------------------------------------------------------------


def should_tile(mode: TileMode, estimate: int, free_bytes: int, safety: float = DEFAULT_SAFETY) -> bool:
    """``"on"`` / ``"off"`` force it; ``"auto"`` tiles when ``estimate > safety * free_bytes``."""
    if mode == "on":
        return True
    if mode == "off":
        return False
    if mode == "auto":
        return estimate > safety * free_bytes
    raise ValueError(f"unknown VAE tiling mode {mode!r} (use auto, on or off)")


def plan_decode(
    config: VAEConfig,
    latent_shape: Sequence[int],
    dtype: torch.dtype,
    mode: TileMode,
    free_bytes: int,
    *,
    safety: float = DEFAULT_SAFETY,
    out_on_device: bool = True,
) -> dict[str, Any] | None:
    """How to decode: ``None`` for a plain ``vae.decode``, else :func:`tiled_decode` keyword arguments.

    ``off``: never tile. ``auto``: tile only when :func:`decode_memory_bytes` exceeds ``safety *
    free_bytes``, with the cheapest exact plan that fits (approximate only if no exact one does). ``on``:
    always tile (at least two windows, at most half the untiled estimate).
    """
    estimate = decode_memory_bytes(config, latent_shape, dtype)
    if not should_tile(mode, estimate, free_bytes, safety):
        return None
    budget = int(safety * free_bytes)
    if mode != "on":
        return choose_tiling(config, latent_shape, dtype, budget, out_on_device=out_on_device, min_windows=2)
    # "on": prefer an exact plan at half the untiled estimate, then any exact plan of two or more windows;
    # small decodes may have no exact plan at all, and an explicit request never buys an approximate decode
    # that the memory does not require.
    for target in (min(budget, estimate // 2), budget):
        plan = choose_tiling(config, latent_shape, dtype, target, out_on_device=out_on_device, min_windows=2)
        if _is_exact(plan):
            return plan
    return None if estimate <= budget else plan


#: Pixel frames per time window of :func:`stream_plan` (each window recomputes one frame of context on each side
#: in the head alone: 2/16 of the head's convolution, about 1% of the 0.9.5 decoder's work).
HEAD_CHUNK_FRAMES = 16


def stream_plan(config: VAEConfig, latent_shape: Sequence[int], chunk_frames: int = HEAD_CHUNK_FRAMES) -> dict[str, Any]:
    """:func:`~ltxcli.vae_tiling.tiled_decode_chunks` settings that hand out an untiled decode's output in time
    windows: ``conv_in`` and every up-block run whole as in ``vae.decode``; only the head (PixelNorm, SiLU,
    ``conv_out``, un-patchify) runs ``chunk_frames`` pixel frames at a time with its exact context (one frame), so
    the decoder's float32 output ``[B, 3, F, H, W]`` never exists whole. For a decode on the CPU, where that
    output would be a host copy of the whole video. Same values as ``vae.decode`` (tests/test_vae_tiling.py)."""
    _, ops = decoder_ops(config)
    _, _, f, h, w = (int(v) for v in latent_shape)
    _, hs, ws = _split_dims(config, (f, h, w), len(ops))  # the last stage: [B, C, F, H/p, W/p]
    return {"split_block": len(ops), "tile_hw": (hs, ws), "chunk_frames": chunk_frames}


def _is_exact(plan: dict[str, Any]) -> bool:
    return plan.get("context_hw") is None and plan.get("context_frames") is None


def free_memory_bytes(device: torch.device | str) -> int:
    """Memory a decode on ``device`` can still allocate.

    CUDA: the driver's free memory plus what PyTorch's caching allocator holds but does not use.
    CPU: ``MemAvailable`` from /proc/meminfo, else available physical pages (``os.sysconf``).
    """
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
        return 1 << 62  # unknown: never tile automatically


__all__ = [
    "DECODE_MEMORY_FACTOR", "DEFAULT_SAFETY", "HEAD_CHUNK_FRAMES", "WINDOW_OVERHEAD", "choose_tiling", "decode_memory_bytes",
    "free_memory_bytes", "output_bytes", "plan_decode", "should_tile", "tiled_decode_memory_bytes",
]
