"""The streamed decode of a long video (:mod:`ltxcli.long_video`): diffusers' temporal tiled decode, tile by tile
as the windows' latents settle, so that only one tile's pixels are alive at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


#: Latent frames two consecutive decode tiles share (their pixels are blended).
DECODE_BLEND = 2
_LATENT_T = 8  # pixel frames per latent frame (the VAE's temporal compression)


class TiledDecode:
    """diffusers' temporal tiled decode, tile by tile as the latents settle: tiles of ``length + 1`` latent frames
    start ``stride = length - DECODE_BLEND`` apart; a tile after the first drops its first pixel frame, blends its
    first ``8 * DECODE_BLEND`` frames with the previous tile's last ones (``blend_t``) and keeps ``8 * stride``
    frames (the first tile ``8 * stride + 1``). Only the previous tile's tail is held between tiles. ``crop(pixels,
    start)``: decoder output of pixel frames ``start ..`` -> float ``[n, H, W, 3]`` of the video (its size and
    length: :func:`ltxcli.frames.to_video`)."""

    def __init__(self, decode: Callable[[Tensor, int], Tensor], crop: Callable[[Tensor, int], Tensor],
                 length: int) -> None:
        self.decode, self.crop, self.length = decode, crop, length
        self.stride = max(length - DECODE_BLEND, 1)
        self.next = 0  # the first latent frame of the next tile
        self.pixel = 0  # the next pixel frame to hand out
        self.tail: Tensor | None = None

    def ready(self, out: Tensor, settled: int, *, final: bool) -> Iterator[Tensor]:
        """Float ``[n, H, W, 3]`` chunks (at most ``STREAM_CHUNK_FRAMES`` frames each) of every tile that lies
        within the first ``settled`` latent frames of ``out`` (``final``: every tile left). Only one tile is
        alive at a time: each is released before the next is decoded."""
        import torch

        from .conditions import trim_host_heap
        from .memory.decode import STREAM_CHUNK_FRAMES

        total = out.shape[2]
        while self.next < total and (final or self.next + self.length + 1 <= settled):
            i = self.next
            tile = self.decode(out[:, :, i: i + self.length + 1], i)
            with torch.inference_mode():  # the work only, never across the yield
                kept = self._cut(tile.float(), i)
            del tile
            start, self.next = self.pixel, self.next + self.stride
            self.pixel += kept.shape[2]
            for a in range(0, kept.shape[2], STREAM_CHUNK_FRAMES):
                with torch.inference_mode():  # to_video scales the (already cut) tile in place
                    chunk = self.crop(kept[:, :, a: a + STREAM_CHUNK_FRAMES], start + a).cpu()
                if chunk.shape[0]:
                    yield chunk
                del chunk
            del kept
            trim_host_heap()  # the tile's freed activations, scattered in the C heap, would stay resident

    def _cut(self, tile: Tensor, i: int) -> Tensor:
        """Decoder output of tile ``i`` -> its kept frames ``[1, 3, n, H', W']`` (blended with the previous tile's
        tail, whose own tail is kept for the next)."""
        import torch

        blend = _LATENT_T * (self.length - self.stride)
        if i > 0:
            tile = tile[:, :, 1:]
            if self.tail is not None:
                m = min(self.tail.shape[2], tile.shape[2], blend)
                if m > 0:
                    w = (torch.arange(m, dtype=tile.dtype) / m).view(1, 1, m, 1, 1).to(tile.device)
                    tile[:, :, :m] = self.tail[:, :, -m:] * (1 - w) + tile[:, :, :m] * w
        keep = _LATENT_T * self.stride + (1 if i == 0 else 0)
        self.tail = tile[:, :, -blend:].clone() if blend > 0 else None
        return tile[:, :, :keep]


__all__ = ["DECODE_BLEND", "TiledDecode"]
