"""The temporal upscaler's working memory, from its architecture (:class:`ltxcli.models.upsampler.LatentUpsampler`
with ``temporal_upsample``), as :meth:`ltxcli.pipeline.Pipeline._temporal_upscale` runs it on latents
``[1, C, f, h, w] -> [1, C, 2f - 1, h, w]``.

What is alive at once (elements, ``M`` its ``mid_channels``): the caller's latents and their un-normalised copy
(``2 C f``); after the frame shuffle, its ``[1, M, 2f, h, w]`` output, whose first frame is sliced off but whose
storage stays (``2 M f``), the input of every post-upsample ResBlock, beside three ``[1, M, 2f - 1, h, w]`` tensors
while ``norm2(conv2(h))`` runs (``h``, the conv's output, the norm's): ``(2 C f + 2 M f + 3 M (2f - 1)) h w``, more
than any earlier moment (the pre-upsample blocks hold at most ``2 C f + 4 M f``; the upsampling conv and shuffle
``2 C f + 5 M f``). On top, the convolutions' own scratch: a copy of the largest conv's weights ``[2M, M, 3, 3, 3]``
(oneDNN reorders the weights per call on the CPU; on a GPU the allowance for the conv's workspace) or, on the CPU,
the im2col column buffer ``[27 C_in, F h w]`` of a conv3d PyTorch does not send to oneDNN (``C_in * F * h`` at most
:data:`MKLDNN_CONV3D_MIN`; the tiny model's upscaler, 32 channels, takes that path: 27 times its input).
Measured on the CPU with the profiler's allocations (tests/test_memory_plan.py): 0.8-0.95 of this estimate.
"""

from __future__ import annotations

import torch

from ..models.configs import UpsamplerConfig

#: PyTorch sends a CPU conv3d of batch 1 to oneDNN only when ``C_in * F * H`` exceeds this (else im2col + GEMM;
#: see :mod:`ltxcli.models.winograd`).
MKLDNN_CONV3D_MIN = 20480


def temporal_upscale_bytes(config: UpsamplerConfig, frames: int, height: int, width: int, dtype: torch.dtype, *,
                           cpu: bool = False) -> int:
    """Peak working memory (bytes at ``dtype``) of the temporal upscale of latents ``[1, C, frames, height, width]``
    (see the module docstring); ``cpu``: the device is the CPU (im2col column buffers)."""
    c, m, f, n = config.in_channels, config.mid_channels, frames, height * width
    live = (2 * c * f + 2 * m * f + 3 * m * (2 * f - 1)) * n
    scratch = 2 * m * m * 27
    if cpu:  # (input channels, frames) of: the initial conv; the pre-upsample blocks' and upsampling conv; the post ones'
        convs = [(c, f), (m, f), (m, 2 * f - 1)]
        scratch = max([scratch] + [27 * ci * fi * n for ci, fi in convs if ci * fi * height <= MKLDNN_CONV3D_MIN])
    return dtype.itemsize * (live + scratch)


__all__ = ["MKLDNN_CONV3D_MIN", "temporal_upscale_bytes"]
