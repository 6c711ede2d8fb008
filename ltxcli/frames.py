"""Decoded pixels -> the requested video, whole or a few frames at a time, and the uint8 frames a writer takes.

The VAE decodes the padded (and, after a multi-scale pass, enlarged) video; :func:`to_video` maps any run of
its frames to the requested video's frames: ``[-1, 1]`` -> ``[0, 1]``, the multi-scale resize, the crop of
the padding, ``[F, H, W, 3]``. Every step is per frame or per pixel, so converting the decode chunk by chunk
gives the same values as converting it whole. :func:`checked_uint8` is the last step before a file: a
non-finite frame is an error there (quantising would silently turn NaN into black).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .conditions import resize_frames
from .media.write import Quantize, to_uint8
from .request import ResolvedRequest


class NumericalError(RuntimeError):
    """NaN or Inf in the latents (checked once per pass, after the loop, so the loop never syncs) or in the
    decoded frames being written."""


#: The hint of a NaN produced by a model other than the transformer: its weights are the suspects.
WEIGHTS_HINT = "weights may be broken (run `ltx weights verify`)"


def check_latents(latents: Tensor, stage: str, hint: str) -> Tensor:
    """``latents`` as they are, or a :class:`NumericalError` naming the ``stage`` that left NaN or Inf in them
    (one host sync). Every stage between the denoising loop's check and the decoder checks its own output, so
    that a NaN is reported by what made it, not by the VAE that decodes it."""
    if not bool(torch.isfinite(latents).all()):
        raise NumericalError(f"the latents contain NaN or Inf {stage}: {hint}")
    return latents


def to_video(pixels: Tensor, r: ResolvedRequest, start: int = 0) -> Tensor:
    """Decoder output ``[1, 3, n, H', W']`` in [-1, 1], holding pixel frames ``start .. start + n`` of the decode
    of ``r`` -> float32 ``[n', H, W, 3]`` in [0, 1] at the requested size (``n'``: those frames inside the
    requested length), on the same device. ``pixels`` is scaled in place when it is already float32."""
    return crop_video(pixels, num_frames=r.num_frames, padded=r.padded[:2], padding=r.padding,
                      resize=r.multi_scale, start=start)


def crop_video(pixels: Tensor, *, num_frames: int, padded: tuple[int, int], padding: tuple[int, int, int, int],
               resize: bool = False, start: int = 0) -> Tensor:
    """:func:`to_video` from its sizes: ``num_frames`` requested, ``padded`` ``(height, width)``, ``padding``
    ``(left, right, top, bottom)``; ``resize``: the frames are first resized to ``padded`` (a multi-scale run's
    second pass ran above it)."""
    ph, pw = padded
    left, right, top, bottom = padding
    pixels = pixels[:, :, : max(0, num_frames - start)]
    # The decoder's output is a fresh tensor (``float()`` copies it or returns it as is): scale it in place.
    video = pixels.float().div_(2).add_(0.5).clamp_(0, 1)
    if resize:
        video = resize_frames(video, ph, pw)
    video = video[:, :, :, top : ph - bottom, left : pw - right]
    return video[0].permute(1, 2, 3, 0)


def checked_uint8(frames: Tensor, quantize: Quantize = "round") -> Tensor:
    """Float frames in [0, 1] -> uint8 on the CPU (:func:`ltxcli.media.to_uint8`), refusing NaN/Inf with a
    :class:`NumericalError` (the latents reaching the decoder were checked: only the VAE is left to blame)."""
    if not bool(torch.isfinite(frames).all()):
        raise NumericalError(
            "the decoded video contains NaN or Inf: the VAE weights may be broken (run `ltx weights verify`)"
        )
    return to_uint8(frames, quantize)


__all__ = ["NumericalError", "check_latents", "checked_uint8", "crop_video", "to_video"]
