"""The latent upscalers' working memory, from their architecture (:class:`ltxcli.models.upsampler.LatentUpsampler`),
as the pipeline runs them on un-normalised latents ``[1, C, f, h, w]`` (``M`` their ``mid_channels``).

The temporal upscaler (:meth:`ltxcli.pipeline.Pipeline._temporal_upscale`, ``-> [1, C, 2f - 1, h, w]``): the caller's
latents and their un-normalised copy (``2 C f``); after the frame shuffle, its ``[1, M, 2f, h, w]`` output, whose
first frame is sliced off but whose storage stays (``2 M f``), the input of every post-upsample ResBlock, beside
three ``[1, M, 2f - 1, h, w]`` tensors while ``norm2(conv2(h))`` runs (``h``, the conv's output, the norm's):
``(2 C f + 2 M f + 3 M (2f - 1)) h w``, more than any earlier moment (the pre-upsample blocks hold at most
``2 C f + 4 M f``; the upsampling conv and shuffle ``2 C f + 5 M f``).

The spatial upsampler (between the passes of a multi-scale run, ``-> [1, C, f, 2h, 2w]``): the latents and their
copy (``2 C f h w``); the post-upsample ResBlocks run at four times the size, their input (the pixel shuffle's
output, ``4 M f h w``) beside three more of that size: ``(2 C + 16 M) f h w`` (the upsampling Conv2d and shuffle
hold ``9 M f h w``).

On top, the convolutions' own scratch: a copy of the largest conv's weights (temporal ``[2M, M, 3, 3, 3]``, spatial
``[4M, M, 3, 3]``; oneDNN reorders the weights per call on the CPU; on a GPU the allowance for the conv's workspace)
or, on the CPU, the im2col column buffer ``[27 C_in, F H W]`` of a conv3d PyTorch does not send to oneDNN
(``C_in * F * H`` at most :data:`MKLDNN_CONV3D_MIN`; the tiny model's upscalers, 32 channels, take that path: 27
times their input). Measured on the CPU with the profiler's allocations (tests/test_memory_plan.py): 0.7-0.97 of
this estimate.
"""

from __future__ import annotations

import torch

from ..models.configs import UpsamplerConfig

#: PyTorch sends a CPU conv3d of batch 1 to oneDNN only when ``C_in * F * H`` exceeds this (else im2col + GEMM;
#: see :mod:`ltxcli.models.winograd`).
MKLDNN_CONV3D_MIN = 20480


def upscale_bytes(config: UpsamplerConfig, frames: int, height: int, width: int, dtype: torch.dtype, *,
                  cpu: bool = False) -> int:
    """Peak working memory (bytes at ``dtype``) of the upscaler of ``config`` (spatial or temporal) on latents
    ``[1, C, frames, height, width]`` (see the module docstring); ``cpu``: the device is the CPU (im2col buffers)."""
    c, m, f, h, w = config.in_channels, config.mid_channels, frames, height, width
    # the (input channels, frames, height, width) of: the initial conv; the pre-upsample blocks' (and the temporal
    # upsampling conv's); the post-upsample blocks' and the final conv's
    if config.temporal_upsample:
        live = (2 * c * f + 2 * m * f + 3 * m * (2 * f - 1)) * h * w
        scratch = 2 * m * m * 27
        convs = [(c, f, h, w), (m, f, h, w), (m, 2 * f - 1, h, w)]
    else:
        live = (2 * c + 16 * m) * f * h * w
        scratch = 4 * m * m * 9
        convs = [(c, f, h, w), (m, f, h, w), (m, f, 2 * h, 2 * w)]
    if cpu:
        scratch = max([scratch] + [27 * ci * fi * hi * wi for ci, fi, hi, wi in convs if ci * fi * hi <= MKLDNN_CONV3D_MIN])
    return dtype.itemsize * (live + scratch)


__all__ = ["MKLDNN_CONV3D_MIN", "upscale_bytes"]
