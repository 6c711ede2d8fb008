"""The VAE encode of a long video in time chunks, equal to the one-call encode: the encoder streamed over the frames.

Why it can be exact. Every released encoder (0.9, 0.9.1: the 0.9 block list; 0.9.5 and later) is causal
convolutions (kernel 3 in time, the first frame replicated twice in front), per-position norms (PixelNorm, the
LayerNorm of a channel-changing shortcut) and time downsamplers by 2, 8 in all: latent 0 <- pixel frame 0, latent
k > 0 <- pixel frames 8(k-1)+1 .. 8k. Nothing mixes frames beyond its kernel: ``norm_layer`` ``group_norm`` (a
norm over every frame) is refused when a checkpoint loads (:meth:`ltxcli.models.configs.VAEConfig.from_official`).
So a chunk of pixel frames ``8(a-1)+1 .. 8(b-1)`` (the first: ``0 .. 8(b-1)``) gives latents ``[a, b)`` exactly
when every convolution takes, as its left padding, the frames its own input ended with in the previous chunk
(what the one-call encode reads there) instead of copies of the chunk's first frame:

* a stride-1 causal conv (``conv_in``, the resnets', a space-to-depth downsampler's, ``conv_out``): the last 2
  frames of its previous input (:class:`_Carry`, through :meth:`~ltxcli.models.vae_blocks.CausalConv3d.time_halo`);
* a conv strided 2 in time (0.9 ``compress_all``: output j reads input frames 2j-2 .. 2j): a later chunk starts
  at an odd frame 2j-1, so it takes the last 1 frame (``kernel - stride``) of the previous chunk's input;
* a space-to-depth downsampler strided in time (0.9.5+ ``compress_*_res``) doubles the video's first frame only,
  so that frames (0, 0), (1, 2), (3, 4) ... pair up: a later chunk, starting at an odd frame, pairs as it comes.

Left context is thus 2 frames per convolution at its own resolution, carried from chunk to chunk: no frame is
encoded twice (a chunk re-encoded with the encoder's whole receptive field as context would need 46 latent frames
of it for the 0.9 encoder, 29 for the 0.9.5 one, :func:`encoder_receptive_field`: 3-6x the work of a 16-latent
chunk). The chunked latents equal the one-call encode's to float rounding (the convolutions run on other shapes;
with the time-Winograd convolutions, :mod:`ltxcli.models.winograd`, a chunk pairs its frames from its own first).
An encoder with a block this module does not know is run in one call.

Memory. One chunk's activations (``8 * chunk + 1`` pixel frames at most, :func:`encode_frames`) and the carried
frames (2 per convolution) instead of the whole input's: :mod:`ltxcli.memory.estimate` prices the encode so.
The pixels themselves may come a chunk at a time (:func:`encode_chunks`, an iterator: a long v2v decodes and
prepares its input so, :mod:`ltxcli.long_video`), so that the host holds one chunk of them, not the video.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .models.configs import VAEConfig
from .models.upcast import compute_dtype
from .models.vae import CausalVideoVAE, Encoder
from .models.vae_blocks import CausalConv3d, ResBlockStack, ResnetBlock3D, SpaceToDepthDownsample, patchify

#: Latent frames per chunk after the first (``8 * 16 = 128`` pixel frames); the first has one more (frame 0), so a
#: video of up to ``8 * 16 + 1 = 129`` frames (the 121 frames of a default generation) is encoded in one call.
ENCODE_CHUNK_LATENTS = 16


def encode_spans(latent_frames: int, chunk: int = ENCODE_CHUNK_LATENTS) -> list[tuple[int, int]]:
    """The latent frames ``[a, b)`` of each chunk of a ``latent_frames`` encode: ``chunk + 1`` first, then ``chunk``."""
    if chunk < 1:
        raise ValueError(f"chunk={chunk} latent frames must be at least 1")
    bounds = [0, *range(min(chunk + 1, latent_frames), latent_frames, chunk), latent_frames]
    return list(itertools.pairwise(bounds))


def pixel_span(a: int, b: int, t: int) -> tuple[int, int]:
    """The pixel frames ``[p0, p1)`` latents ``[a, b)`` are encoded from (``t`` pixel frames per latent frame)."""
    return 0 if a == 0 else t * (a - 1) + 1, t * (b - 1) + 1


def encode_frames(config: VAEConfig, pixel_frames: int, chunk: int = ENCODE_CHUNK_LATENTS) -> int:
    """Pixel frames of the largest chunk :func:`chunked_encode` encodes at once of a ``pixel_frames`` input: the memory
    plan's length of the encode (:mod:`ltxcli.memory.estimate`). The carried frames (2 per convolution) add little:
    peak RSS of a 128-channel 0.9.5-layout encoder (1 layer per block) at 128x128, float32: chunked 453 MiB at 257,
    385 and 769 frames, one call 518, 774, 1542 MiB, one call of the chunk's 129 frames 442 MiB."""
    t = config.temporal_compression
    a, b = encode_spans(-(-(pixel_frames - 1) // t) + 1, chunk)[0]  # (not 8k + 1: as padded up to it)
    p0, p1 = pixel_span(a, b, t)
    return min(pixel_frames, p1 - p0)


def encoder_receptive_field(config: VAEConfig) -> int:
    """Pixel frames before latent k's own last one, ``8k``, that it depends on (``8k - R`` the earliest): what
    a chunk re-encoded from scratch would need as context (:func:`chunked_encode` carries frames instead).

    Walks the encoder forward keeping ``earliest(p) = T p - R`` for a position ``p`` of the current activation
    (``T`` pixel frames per position): a causal conv of kernel 3 reads from ``p - 2``; a conv strided ``s`` in
    time from ``s p - 2``; a space-to-depth downsampler strided 2 in time pairs frames ``2p - 1, 2p`` and convolves
    before, so from ``2p - 3``; a resnet is two convs."""
    t, r = 1, 0

    def step(stride: int, back: int) -> None:  # position p reads its input from stride p - back
        nonlocal t, r
        t, r = t * stride, r + t * back

    step(1, 2)  # conv_in
    for name, params in config.encoder_blocks:
        if name == "res_x":
            step(1, 4 * params["num_layers"])
        elif name == "res_x_y":
            step(1, 4)
        elif name.endswith("_res"):
            step(*((2, 3) if name in ("compress_time_res", "compress_all_res") else (1, 2)))
        else:
            step(2 if name in ("compress_time", "compress_all", "compress_all_x_y") else 1, 2)
    step(1, 2)  # conv_out
    return r


# --- the streamed encoder -----------------------------------------------------------------------------------


class _Carry:
    """A stride-1 causal conv's left padding in a later chunk: the last ``front`` frames of its input in the previous
    one (installed as its :meth:`~ltxcli.models.vae_blocks.CausalConv3d.time_halo`; None in the first chunk, where
    the conv replicates the video's first frame as the one-call encode does)."""

    def __init__(self) -> None:
        self.tail: Tensor | None = None

    def __call__(self, x: Tensor, front: int, back: int) -> tuple[Tensor | None, Tensor | None]:
        before = self.tail
        self.remember(x, front)
        return before, None

    def remember(self, x: Tensor, n: int) -> None:
        """Keep the last ``n`` frames of the padded input ``tail + x`` (x: ``[B, C, F, H, W]``, unpadded; the
        first chunk's padding is its first frame replicated)."""
        if n:
            pad = self.tail if self.tail is not None else x[:, :, :1].expand(-1, -1, n, -1, -1)
            seq = x if x.shape[2] >= n else torch.cat([pad, x], dim=2)
            self.tail = seq[:, :, seq.shape[2] - n:].clone()  # [B, C, n, H, W]


def _time_stride(block: nn.Module) -> int:
    return int(block.conv.stride[0]) if isinstance(block, CausalConv3d) else 1


def streamable(encoder: nn.Module) -> bool:
    """Whether :func:`chunked_encode` can stream ``encoder``: every block one it carries frames through (a
    resnet stack or resnet, a conv strided at most its kernel in time, a space-to-depth downsampler)."""
    if not isinstance(encoder, Encoder):
        return False
    for block in encoder.down_blocks:
        if isinstance(block, CausalConv3d):
            if block.time_kernel_size < _time_stride(block):
                return False
        elif not isinstance(block, (ResBlockStack, ResnetBlock3D, SpaceToDepthDownsample)):
            return False
    return True


@contextmanager
def _carried(encoder: Encoder) -> Iterator[Callable[[Tensor, bool], Tensor]]:
    """The encoder's ``features`` for one chunk after another (``first``: the chunk that starts the video), every
    conv fed the frames its input ended with in the previous chunk; the hooks are removed on exit."""
    hooked = [m for m in encoder.modules() if isinstance(m, CausalConv3d) and _time_stride(m) == 1]
    strided = {i: _Carry() for i, b in enumerate(encoder.down_blocks) if isinstance(b, CausalConv3d) and b not in hooked}
    for m in hooked:
        m.time_halo = _Carry()  # type: ignore[method-assign]  # the swap point CausalConv3d.time_halo gives

    def downsample(block: CausalConv3d, carry: _Carry, x: Tensor, first: bool) -> Tensor:
        # output j reads input frames s j - (k - 1) .. s j and a later chunk starts at frame s j - (s - 1): it
        # takes the previous chunk's last k - s frames as its padding
        keep = block.time_kernel_size - _time_stride(block)
        if first:
            y = block(x, True)
        else:
            y = block.conv_time_padded(torch.cat([carry.tail, x], dim=2) if carry.tail is not None else x)
        carry.remember(x, keep)
        return y

    def features(x: Tensor, first: bool) -> Tensor:
        x = encoder.conv_in(patchify(x, encoder.patch_size))  # [B, base, F, H/p, W/p]
        for i, block in enumerate(encoder.down_blocks):
            if isinstance(block, CausalConv3d) and i in strided:
                x = downsample(block, strided[i], x, first)
            elif isinstance(block, SpaceToDepthDownsample):
                x = block(x, True, starts_video=first)
            else:
                x = block(x)
        return encoder.head(x)

    try:
        yield features
    finally:
        for m in hooked:
            m.__dict__.pop("time_halo", None)


def chunked_encode(
    vae: CausalVideoVAE, pixels: Tensor, *, chunk: int = ENCODE_CHUNK_LATENTS, device: torch.device | str | None = None,
    dtype: torch.dtype | None = None, progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Pixels ``[B, 3, 8k + 1, H, W]`` in [-1, 1] -> normalised latents ``[B, C, k + 1, H/32, W/32]``, as
    ``vae.encode`` (:class:`~ltxcli.models.vae.CausalVideoVAE`) gives them, encoded ``chunk`` latent frames at a time
    (the first chunk ``chunk + 1``) with the frames each convolution carries over (see the module docstring).

    ``pixels`` may stay on the host: each chunk is moved to ``device`` in ``dtype`` (default: the pixels' device, the
    encoder's dtype) as it is encoded; the latents come back on ``device`` in the encoder's dtype. A video of one
    chunk, or an encoder :func:`streamable` refuses, is encoded in one call. ``progress(done, total)`` after each
    chunk. Run it under ``torch.inference_mode()`` or ``no_grad`` (the encoder works in place)."""
    if pixels.ndim != 5:
        raise ValueError(f"chunked_encode expects pixels [B, 3, F, H, W], got shape {list(pixels.shape)}")
    return encode_chunks(vae, [pixels], pixels.shape[2], chunk=chunk, device=device, dtype=dtype, progress=progress)


def chunk_frames(config: VAEConfig, frames: int, chunk: int = ENCODE_CHUNK_LATENTS) -> list[int]:
    """Pixel frames of each chunk :func:`encode_chunks` encodes of an ``8k + 1``-frame video (their sum): what a
    producer of the pixels makes at a time so that no chunk is cut or joined (:meth:`ltxcli.long_video._LongRun.pixels`)."""
    t = config.temporal_compression
    return [p1 - p0 for p0, p1 in (pixel_span(a, b, t) for a, b in encode_spans((frames - 1) // t + 1, chunk))]


def encode_chunks(
    vae: CausalVideoVAE, chunks: Iterable[Tensor], frames: int, *, chunk: int = ENCODE_CHUNK_LATENTS,
    device: torch.device | str | None = None, dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Tensor:
    """:func:`chunked_encode` of a video handed in as pieces ``[B, 3, n, H, W]`` along time (``frames`` = 8k + 1 in
    all, any ``n``), taken from ``chunks`` as they are needed: with pieces of :func:`chunk_frames` the host holds one
    chunk's pixels at a time, however long the video (other lengths are cut or joined to them, the same latents).
    Bit for bit :func:`chunked_encode` of their concatenation (the same chunks, the same arithmetic). A video of one
    chunk, or an encoder :func:`streamable` refuses, is joined whole and encoded in one call. ValueError: pieces of
    another total than ``frames``."""
    encoder = vae.encoder
    t = vae.config.temporal_compression
    if frames < 1 or (frames - 1) % t:
        raise ValueError(f"chunked_encode needs {t}k + 1 frames, got {frames}")
    dt = compute_dtype(encoder.conv_in.conv) if dtype is None else dtype
    sizes = chunk_frames(vae.config, frames, chunk)

    def moved(x: Tensor) -> Tensor:  # [B, 3, n, H, W]: one chunk on the device
        return x.to(device=x.device if device is None else torch.device(device), dtype=dt)

    if len(sizes) == 1 or not streamable(encoder):
        (whole,) = _regrouped(chunks, [frames])
        out = vae.encode(moved(whole))
        if progress:
            progress(1, 1)
        return out
    latents = []
    with _carried(encoder) as features:
        for i, x in enumerate(_regrouped(chunks, sizes)):
            x = moved(x).to(compute_dtype(encoder.conv_in.conv))  # as vae.encode
            mean = features(x, i == 0)[:, : vae.config.latent_channels]  # [B, C, latent frames of the chunk, h, w]
            del x
            latents.append(vae.normalize(mean))
            if progress:
                progress(i + 1, len(sizes))
    return torch.cat(latents, dim=2)


def _regrouped(pieces: Iterable[Tensor], sizes: list[int]) -> Iterator[Tensor]:
    """``pieces`` ``[B, C, n, H, W]`` (any ``n``) -> ``[B, C, sizes[i], H, W]`` one after another: a piece of the size
    asked for as it is (no copy), a longer one sliced, shorter ones joined. ValueError unless they add up to ``sum(sizes)``."""
    it, held, have, given = iter(pieces), list[Tensor](), 0, 0
    for n in sizes:
        while have < n:
            piece = next(it, None)
            if piece is None:
                raise ValueError(f"the pixel chunks hold {given + have} frames, {sum(sizes)} expected")
            held.append(piece)
            have += piece.shape[2]
        x = held[0] if len(held) == 1 else torch.cat(held, dim=2)
        held, have, given = ([x[:, :, n:]] if have > n else []), have - n, given + n
        yield x[:, :, :n]
        del x  # not held here while the next piece is made
    extra = have + sum(p.shape[2] for p in it)
    if extra:
        raise ValueError(f"the pixel chunks hold {given + extra} frames, {sum(sizes)} expected")


__all__ = ["ENCODE_CHUNK_LATENTS", "chunk_frames", "chunked_encode", "encode_chunks", "encode_frames", "encode_spans", "encoder_receptive_field",
           "pixel_span", "streamable"]
