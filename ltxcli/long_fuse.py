"""The looping sampler's fusion of a window's latents into the video made so far (diffusers'
``linear_overlap_fuse`` with its AdaIN, :mod:`ltxcli.long_video`), forward and mirrored for windows made backward in
time (a backward extension). No I/O; torch imported where used."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


def fuse(out: Tensor | None, new: Tensor, first: Tensor | None, overlap_latents: int, adain: float,
         backward: bool = False) -> Tensor:
    """Append window latents ``new`` ``[1, C, T, h, w]`` to ``out`` as diffusers does: drop its first frame, AdaIN
    towards ``first`` with factor ``adain``, cross-fade the ``n = k - 1`` frames both still share
    (``linspace(1, 0, n + 2)[1:-1]`` weights on the earlier side). diffusers' ``max(k - 1, 1)`` with a plain append
    at 1 differs only for ``k = 2``, where it appends the shared frame twice (one frame longer per window).
    ``backward``: ``new`` precedes ``out``, mirrored: ``out``'s first frame (the previous window's one-pixel-frame
    head) is dropped, ``new`` AdaIN'd whole, the earlier side (``new``) weighted from 1 down."""
    import torch

    from .models.upsampler import adain as adain_filter

    if out is None:
        return new
    new, out = (new, out[:, :, 1:]) if backward else (new[:, :, 1:], out)
    if adain > 0 and first is not None:
        new = adain_filter(new, first, adain)
    early, late = (new, out) if backward else (out, new)
    n = overlap_latents - 1
    if n <= 0:  # nothing shared after the dropped frame: a plain append
        return torch.cat([early, late], dim=2)
    alpha = torch.linspace(1, 0, n + 2, dtype=out.dtype, device=out.device)[1:-1].view(1, 1, n, 1, 1)
    blended = alpha * early[:, :, -n:] + (1 - alpha) * late[:, :, :n]
    return torch.cat([early[:, :, :-n], blended, late[:, :, n:]], dim=2)


__all__ = ["fuse"]
