"""Tiled VAE decoding: the decoder's tail run window by window, exact by default.

Where the memory goes. The decoder upsamples 2x in time and space three times (released configs); its
last stage (128 channels at a quarter of the output size) holds most of the activations: a resnet there
keeps four stage-sized tensors alive, ~32 bytes per output pixel in bfloat16 (8.3 GiB estimated at
121x704x1216), while the stage before it needs a quarter of that. So the decode is split at an up-block
(``split_block``): everything before it runs untiled (``conv_in`` + ``up_blocks[:split_block]``), and the
rest (``up_blocks[split_block:]`` + the output head) runs on windows of the split-point activation, whose
pixels are cropped (and blended where windows overlap) into the output.

Why it can be exact. The decoder is convolutions (3x3x3), depth-to-space and per-position norms
(PixelNorm, LayerNorm over channels); the timestep embedding is global. A window decoded with as much
surrounding context as the tail's receptive field (:func:`suffix_receptive_field`) therefore reproduces
the untiled pixels exactly (bit for bit in the tests at the default split, ~1e-6 elsewhere; with the
time-Winograd convolutions, :mod:`ltxcli.models.winograd`, a window pairs its frames from its own first
frame, so there too the agreement is to float rounding). Split at the
last upsampler that field is 8 positions (64 pixels) for the released decoders, so the default
(``context=None``) is this exact context. Splitting earlier saves more memory but needs more context, up
to 23 latents (736 pixels) for the whole 0.9.5 decoder (``split_block=0``: windows of latents). With less
context than the receptive field the result is approximate: the windows see replicate/zero padding
``context`` positions away from the kept pixels. Measured on the 0.9.5 block list with random weights
(5 layers per block, 8 base channels), windows blended over 2 positions (1 in time): half the receptive
field as context gave max abs errors of 4e-6 to 1.5e-4 (3.5e-4 / 1e-3 at the last upsampler), a quarter
of it 5e-3 to 0.1; latent windows with 4, 8 and 12 latents of context (no blending) gave 0.3, 8e-3, 5e-5.
:func:`ltxcli.memory.decode.choose_tiling` only goes approximate (half the field first) when no exact plan
fits the budget.

Geometry. Units are positions of the split-point activation (latents when ``split_block=0``). Spatially a
position covers ``S`` pixels (32 for latents). In time the decoder is not causal: each conv replicates the
first and last frame, so a window needs context on both sides. Frame 0 of any stage decodes to pixel frame
0 and frame k > 0 to pixel frames ``T(k-1)+1 .. Tk`` (T = 8 for latents); a window of frames ``[a, b)``
decodes to ``T(b-a-1)+1`` frames whose first is global frame ``Ta`` (the last of frame a's), so a window
starting at frame s > 0 decodes from s-1 at the latest.

Noise injection (0.9.1 decoders add ``randn(H, W)`` maps, shared by frames and channels): the untiled part
draws its maps as usual; for the tiled part :class:`CroppedNoise` draws each full-size map once, in the
untiled order from the same generator, and hands every window its crop (through the decoder's
``generator`` argument, which accepts such a callable). Tiled and untiled decodes inject the same noise.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models.configs import VAEConfig
from .models.upcast import compute_dtype, first_param_dtype
from .models.vae_blocks import pixel_norm, unpatchify

TileMode = Literal["auto", "on", "off"]

# Defaults of :func:`tiled_decode` (positions at the split point; for the released decoders split at the
# last upsampler one position is 8 pixels and a frame ~2 pixel frames): 512-pixel windows, 32 frames.
TILE_HW = 64
CHUNK_FRAMES = 32


# --- decoder layout -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecoderOp:
    """One up-block in decoder order: ``res`` (C -> C, ``layers`` resnets), ``res_xy`` (C -> C'), ``up``."""

    kind: str
    c_in: int
    c_out: int
    layers: int = 0
    st: int = 1  # upsampling stride in time
    ss: int = 1  # and in space


def decoder_ops(config: VAEConfig) -> tuple[int, list[DecoderOp]]:
    """``conv_in`` width and the up-blocks in the order the decoder runs them (the layout behind the memory
    and work models here and :func:`ltxcli.perf.flops.vae_decoder_flops`)."""
    blocks = list(reversed(config.decoder_blocks))
    first = ch = config.decoder_conv_in_channels
    ops = []
    for name, params in blocks:
        if name == "res_x":
            ops.append(DecoderOp("res", ch, ch, layers=params["num_layers"]))
        elif name == "res_x_y":
            out = ch // params.get("multiplier", 2)
            ops.append(DecoderOp("res_xy", ch, out))
            ch = out
        else:
            st = 2 if name in ("compress_time", "compress_all") else 1
            ss = 2 if name in ("compress_space", "compress_all") else 1
            out = ch // (params.get("multiplier", 1) if name == "compress_all" else 1)
            ops.append(DecoderOp("up", ch, out, st=st, ss=ss))
            ch = out
    return first, ops


def decoder_scales(config: VAEConfig) -> tuple[int, int]:
    """Pixel frames per latent frame and pixels per latent of the decoder (8 and 32 when released)."""
    _, ops = decoder_ops(config)
    return math.prod(op.st for op in ops), math.prod(op.ss for op in ops) * config.patch_size


def default_split_block(config: VAEConfig) -> int:
    """Index of the last upsampler in ``decoder.up_blocks`` (0 if there is none)."""
    _, ops = decoder_ops(config)
    ups = [i for i, op in enumerate(ops) if op.kind == "up"]
    return ups[-1] if ups else 0


def split_scales(config: VAEConfig, split_block: int) -> tuple[int, int]:
    """``(T, S)``: pixel frames per frame and pixels per position of the activation entering
    ``up_blocks[split_block]`` (``(8, 32)`` at ``split_block=0`` for the released decoders)."""
    _, ops = decoder_ops(config)
    if not 0 <= split_block <= len(ops):
        raise ValueError(f"split_block={split_block} must be in [0, {len(ops)}]")
    t, s = decoder_scales(config)
    for op in ops[:split_block]:
        t, s = t // op.st, s // op.ss
    return t, s


def _split_dims(config: VAEConfig, latent_fhw: Sequence[int], split_block: int) -> tuple[int, int, int]:
    """Frames, height, width of the activation entering ``up_blocks[split_block]``."""
    f, h, w = latent_fhw
    t, s = split_scales(config, split_block)
    t0, s0 = decoder_scales(config)
    return (t0 // t) * (f - 1) + 1, h * (s0 // s), w * (s0 // s)


def suffix_receptive_field(config: VAEConfig, split_block: int) -> tuple[int, int]:
    """Conservative radius, in split-point positions ``(frames, height/width)``, of what one output pixel of
    ``up_blocks[split_block:]`` + head depends on. That much context makes a window exact.

    Walks from the output back: every 3x3x3 conv adds one position at its resolution; an upsampler
    divides by its stride, rounded up, plus one (the dropped first frame / sub-position offset).
    """
    _, ops = decoder_ops(config)
    rt = rs = 1  # conv_out
    for op in reversed(ops[split_block:]):
        if op.kind == "res":
            rt, rs = rt + 2 * op.layers, rs + 2 * op.layers
        elif op.kind == "res_xy":
            rt, rs = rt + 2, rs + 2
        else:
            rt = -(-rt // op.st) + (op.st > 1) + 1
            rs = -(-rs // op.ss) + (op.ss > 1) + 1
    return rt, rs


def decoder_receptive_field(config: VAEConfig) -> tuple[int, int]:
    """Radius of the whole decoder's receptive field in latents ``(frames, height/width)`` (conv_in too)."""
    rt, rs = suffix_receptive_field(config, 0)
    return rt + 1, rs + 1


# --- window plans -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisWindow:
    """One window along one axis (time, height or width), in split-point positions.

    ``decode``: range decoded (window plus context); ``keep``: global pixel range this window writes;
    ``offset``: global pixel index of the decoded output's first element; ``weight``: blending weights over
    ``keep`` (float64; summed over the windows of an axis they are 1 at every pixel).
    """

    decode: tuple[int, int]
    keep: tuple[int, int]
    offset: int
    weight: Tensor


def _to_pixel(k: int, scale: int, temporal: bool) -> int:
    """First pixel of position k (in time frame 0 has one pixel frame, the others ``scale``)."""
    if not temporal:
        return scale * k
    return 0 if k == 0 else scale * (k - 1) + 1


def _spans(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Windows ``[s, e)`` of at most about ``tile`` positions, neighbours sharing ``overlap``.

    Cores of near-equal size partition the axis; each window is its core widened by ``overlap / 2`` on
    each side.
    """
    if tile < 1 or overlap < 0:
        raise ValueError(f"tile={tile} must be >= 1 and overlap={overlap} >= 0")
    if length <= tile:
        return [(0, length)]
    if overlap >= tile:
        raise ValueError(f"overlap={overlap} must be smaller than the tile size {tile}")
    n = math.ceil(length / (tile - overlap))
    bounds = [round(i * length / n) for i in range(n + 1)]
    lo, hi = overlap // 2, overlap - overlap // 2
    return [(max(0, bounds[i] - lo), min(length, bounds[i + 1] + hi)) for i in range(n)]


def _decode_range(s: int, e: int, length: int, context: int, temporal: bool) -> tuple[int, int]:
    if context < 0:
        raise ValueError(f"context={context} must be >= 0")
    front = max(context, 1) if temporal and s > 0 else context  # frames T(s-1)+1 .. Ts-1 need frame s-1
    return max(0, s - front), min(length, e + context)


def plan_axis(
    length: int, tile: int, overlap: int, context: int, scale: int, temporal: bool
) -> list[AxisWindow]:
    """The windows of one axis of ``length`` positions: about ``tile`` each, sharing ``overlap``, decoded
    with ``context`` more on both sides (where the axis has them).

    ``scale``: pixels per position (pixel frames per frame in time, where frame 0 has one). Blending
    weights ramp linearly across the pixels two windows share and are normalised to sum to 1.
    """
    spans = _spans(length, tile, overlap)
    raw: list[Tensor] = []
    for i, (s, e) in enumerate(spans):
        p0, p1 = _to_pixel(s, scale, temporal), _to_pixel(e, scale, temporal)
        x = torch.arange(p0, p1, dtype=torch.float64) + 0.5
        w = torch.ones(p1 - p0, dtype=torch.float64)
        if i > 0:  # ramp up across the pixels shared with the previous window
            ramp = _to_pixel(spans[i - 1][1], scale, temporal) - p0
            if ramp > 0:
                w = torch.minimum(w, (x - p0) / ramp)
        if i + 1 < len(spans):  # and down across those shared with the next
            ramp = p1 - _to_pixel(spans[i + 1][0], scale, temporal)
            if ramp > 0:
                w = torch.minimum(w, (p1 - x) / ramp)
        raw.append(w)
    total = torch.zeros(_to_pixel(length, scale, temporal), dtype=torch.float64)
    for (s, e), w in zip(spans, raw, strict=True):
        total[_to_pixel(s, scale, temporal) : _to_pixel(e, scale, temporal)] += w
    windows = []
    for (s, e), w in zip(spans, raw, strict=True):
        a, b = _decode_range(s, e, length, context, temporal)
        p0, p1 = _to_pixel(s, scale, temporal), _to_pixel(e, scale, temporal)
        windows.append(AxisWindow((a, b), (p0, p1), scale * a, w / total[p0:p1]))
    return windows


# --- noise injection ----------------------------------------------------------------------------------------


class CroppedNoise:
    """Noise source for the tiled part of a noise-injecting (0.9.1) decoder.

    The decoder calls ``source(shape, like)`` at each injection point, in order. The first window to reach
    an injection point draws the full-size map exactly as the untiled decode would there (same generator,
    order, size, dtype and device: ``ltxcli.models.vae_blocks._add_spatial_noise``); every window gets its crop.
    """

    def __init__(self, generator: torch.Generator | None, full_hw: tuple[int, int]) -> None:
        self.generator = generator
        self.full_hw = full_hw
        self.maps: list[Tensor] = []
        self._calls = 0
        self._window = (0, 0, *full_hw)

    def start(self, y0: int, x0: int, h: int, w: int) -> None:
        """Begin decoding the window ``[y0, y0+h) x [x0, x0+w)`` (split-point positions)."""
        self._calls = 0
        self._window = (y0, x0, h, w)

    def __call__(self, shape: Sequence[int], like: Tensor) -> Tensor:
        hs, ws = int(shape[-2]), int(shape[-1])
        y0, x0, h, w = self._window
        sy, sx = hs // h, ws // w
        if sy * h != hs or sx * w != ws:
            raise RuntimeError(f"noise map {hs}x{ws} is not a whole multiple of the window {h}x{w}")
        full = (self.full_hw[0] * sy, self.full_hw[1] * sx)
        if self._calls == len(self.maps):
            g = self.generator
            if g is None:
                noise = torch.randn(full, device=like.device, dtype=like.dtype)
            else:
                noise = torch.randn(full, generator=g, device=g.device, dtype=like.dtype).to(like.device)
            self.maps.append(noise)
        noise = self.maps[self._calls]
        if tuple(noise.shape) != full:
            raise RuntimeError(f"injection point {self._calls}: map {tuple(noise.shape)}, expected {full}")
        self._calls += 1
        return noise[y0 * sy : y0 * sy + hs, x0 * sx : x0 * sx + ws]


def _injects_noise(module: nn.Module) -> bool:
    return any(getattr(m, "inject_noise", False) for m in module.modules())


# --- the decoder head of a tile (the blocks run through ltxcli.models.vae.Decoder.run_blocks) ---------------


def _run_head(decoder: nn.Module, x: Tensor, scaled_t: Tensor | None) -> Tensor:
    """Final PixelNorm, [timestep scale/shift], SiLU, conv_out, un-patchify -> ``[B, 3, F, H, W]``."""
    x = pixel_norm(x)
    if scaled_t is not None:
        emb = decoder.last_time_embedder(scaled_t, x.dtype)  # [B, 2C]
        ada = decoder.last_scale_shift_table[None, :, :, None, None, None] + emb.reshape(
            x.shape[0], 2, -1, 1, 1, 1
        )  # [B, 2, C, 1, 1, 1]
        shift, scale = ada.unbind(dim=1)
        x = x.mul_(1 + scale).add_(shift)
    x = decoder.conv_out(F.silu(x, inplace=True), decoder.causal)  # [B, 3*p*p, F, H, W]
    return unpatchify(x, decoder.patch_size)


# --- tiled decode -------------------------------------------------------------------------------------------


def tiled_decode(vae: nn.Module, latents: Tensor, **settings: Any) -> Tensor:
    """Normalised latents ``[B, C, f, h, w]`` -> float32 pixels ``[B, 3, 8(f-1)+1, 32h, 32w]``, in windows,
    accumulated in one output (``settings``: those of :func:`tiled_decode_chunks`)."""
    ((_, out),) = tiled_decode_chunks(vae, latents, whole=True, **settings)
    return out


def plan_windows(
    config: VAEConfig, latent_fhw: Sequence[int], *, split_block: int | None = None,
    tile_hw: int | tuple[int, int] = TILE_HW, overlap_hw: int = 0, context_hw: int | None = None,
    chunk_frames: int = CHUNK_FRAMES, overlap_frames: int = 0, context_frames: int | None = None,
) -> tuple[list[AxisWindow], list[AxisWindow], list[AxisWindow]]:
    """The time, height and width windows :func:`tiled_decode_chunks` decodes latents of ``latent_fhw`` (latent
    frames, height, width) in, for its settings; settings it cannot run (a split block the decoder does not have,
    a tile under 1, an overlap as large as its tile, a negative context) are a ValueError, before any work."""
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames={chunk_frames} must be at least 1")
    split = default_split_block(config) if split_block is None else split_block
    t_scale, s_scale = split_scales(config, split)
    rt, rs = suffix_receptive_field(config, split)
    ctx_t = rt if context_frames is None else context_frames
    ctx_s = rs if context_hw is None else context_hw
    fs, hs, ws = _split_dims(config, latent_fhw, split)
    tile_h, tile_w = (tile_hw, tile_hw) if isinstance(tile_hw, int) else tile_hw
    return (plan_axis(fs, chunk_frames, overlap_frames, ctx_t, t_scale, True),
            plan_axis(hs, tile_h, overlap_hw, ctx_s, s_scale, False),
            plan_axis(ws, tile_w, overlap_hw, ctx_s, s_scale, False))


@torch.no_grad()
def tiled_decode_chunks(
    vae: nn.Module,
    latents: Tensor,
    *,
    timestep: Tensor | float | None = None,
    generator: torch.Generator | None = None,
    split_block: int | None = None,
    tile_hw: int | tuple[int, int] = TILE_HW,
    overlap_hw: int = 0,
    context_hw: int | None = None,
    chunk_frames: int = CHUNK_FRAMES,
    overlap_frames: int = 0,
    context_frames: int | None = None,
    out_device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    whole: bool = False,
) -> Iterator[tuple[int, Tensor]]:
    """Normalised latents ``[B, C, f, h, w]`` -> float32 pixels ``[B, 3, 8(f-1)+1, 32h, 32w]``, decoded in
    windows and yielded as ``(first_frame, pixels [B, 3, n, H, W])`` chunks in time order.

    Same inputs and meaning as ``vae.decode`` (``timestep`` for timestep-conditioned decoders,
    ``generator`` for noise injection). ``split_block``: the up-block where windows start (default: the
    last upsampler; 0: windows of latents). Window sizes, overlaps (blended linearly) and contexts are in
    positions of the activation there (see :func:`split_scales`); ``tile_hw`` may be ``(height, width)``.
    ``context_* = None``: the exact context (:func:`suffix_receptive_field`).
    :func:`ltxcli.memory.decode.plan_decode` picks all of these for a memory budget. When one window covers
    everything this is ``vae.decode``, bit for bit. Pixels accumulate in float32 on ``out_device`` (default: the latents' device); ``"cpu"`` keeps
    the video off the GPU. ``progress(done, total)`` is called after each window.

    A chunk is yielded as soon as no later time window writes into its frames, so only about one time
    window's pixels (``chunk_frames`` plus the blended overlap) exist at once; ``whole=True`` accumulates
    the whole video in one buffer and yields it once (:func:`tiled_decode`). Both give the same values, bit
    for bit (the same additions into zeros, in the same order).
    """
    if latents.ndim != 5:
        raise ValueError(f"tiled_decode expects latents [B, C, f, h, w], got shape {list(latents.shape)}")
    cfg: VAEConfig = vae.config
    decoder = vae.decoder
    split = default_split_block(cfg) if split_block is None else split_block
    b, _, f, h, w = latents.shape
    t_windows, y_windows, x_windows = plan_windows(
        cfg, (f, h, w), split_block=split, tile_hw=tile_hw, overlap_hw=overlap_hw, context_hw=context_hw,
        chunk_frames=chunk_frames, overlap_frames=overlap_frames, context_frames=context_frames)
    _, hs, ws = _split_dims(cfg, (f, h, w), split)

    z = vae.unnormalize(latents.to(compute_dtype(decoder.conv_in.conv)))
    dev = torch.device(out_device) if out_device is not None else latents.device
    if len(t_windows) == len(y_windows) == len(x_windows) == 1:
        out = decoder(z, timestep, generator).float().to(dev)
        if progress:
            progress(1, 1)
        yield 0, out
        return

    scaled_t = decoder.scaled_timestep(timestep, b, z.device)
    # Untiled part: conv_in and the blocks before the split (they draw their noise maps as usual).
    x = decoder.conv_in(z, decoder.causal)
    x = x.to(first_param_dtype(decoder.up_blocks))  # as Decoder.forward
    x = decoder.run_blocks(x, 0, split, scaled_t, generator)  # [B, C_split, fs, hs, ws]
    del z
    noise: Any = CroppedNoise(generator, (hs, ws)) if _injects_noise(decoder) else generator

    t_dec, s_dec = decoder_scales(cfg)
    frames_out = _to_pixel(f, t_dec, True)

    def zeros(n: int) -> Tensor:
        return torch.zeros(b, cfg.out_channels, n, h * s_dec, w * s_dec, dtype=torch.float32, device=dev)

    # ``out`` holds pixel frames [start, start + out.shape[2]): the whole video, or the frames of the current
    # time window and those of earlier windows it still blends into.
    out = zeros(frames_out if whole else 0)
    start = 0
    total = len(t_windows) * len(y_windows) * len(x_windows)
    done = 0
    for k, wt in enumerate(t_windows):
        (ta, tb), (t0, t1) = wt.decode, wt.keep
        if not whole and t1 > start + out.shape[2]:
            grown = zeros(t1 - start)
            grown[:, :, : out.shape[2]] = out
            out = grown
        w_t = wt.weight.to(device=dev, dtype=torch.float32)[:, None, None]
        for wy in y_windows:
            (ya, yb), (y0, y1) = wy.decode, wy.keep
            w_ty = w_t * wy.weight.to(device=dev, dtype=torch.float32)[None, :, None]
            for wx in x_windows:
                (xa, xb), (x0, x1) = wx.decode, wx.keep
                if isinstance(noise, CroppedNoise):
                    noise.start(ya, xa, yb - ya, xb - xa)
                window = x[:, :, ta:tb, ya:yb, xa:xb].contiguous()
                tile = decoder.run_blocks(window, split, len(decoder.up_blocks), scaled_t, noise)
                del window
                tile = _run_head(decoder, tile, scaled_t)  # [B, 3, F_win, H_win, W_win]
                tile = tile[
                    :, :, t0 - wt.offset : t1 - wt.offset, y0 - wy.offset : y1 - wy.offset,
                    x0 - wx.offset : x1 - wx.offset,
                ].to(device=dev, dtype=torch.float32)
                weight = w_ty * wx.weight.to(device=dev, dtype=torch.float32)[None, None, :]
                out[:, :, t0 - start : t1 - start, y0:y1, x0:x1].addcmul_(tile, weight)
                del tile
                done += 1
                if progress:
                    progress(done, total)
        if not whole:
            # frames before the next window's first are final
            end = t_windows[k + 1].keep[0] if k + 1 < len(t_windows) else start + out.shape[2]
            yield start, out[:, :, : end - start]
            out = out[:, :, end - start :]
            start = end
    if whole:
        yield 0, out


__all__ = [
    "CHUNK_FRAMES", "TILE_HW", "AxisWindow", "CroppedNoise", "DecoderOp", "TileMode", "decoder_ops",
    "decoder_receptive_field", "decoder_scales", "default_split_block", "plan_axis", "plan_windows", "split_scales",
    "suffix_receptive_field", "tiled_decode", "tiled_decode_chunks",
]
