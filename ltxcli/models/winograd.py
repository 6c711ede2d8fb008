"""Winograd F(2,3) along time for the VAE's 3x3x3 convolutions: 4 frame-convolutions per 2 output frames
instead of 6.

The VAE decoder spends about 90 % of its CPU time in stride-1 3x3x3 convolutions, and oneDNN already runs
them near this CPU's float32 peak, so the remaining gain is in doing fewer multiply-adds. With the three
temporal taps ``g0, g1, g2`` (each a 3x3 spatial kernel) and four consecutive (padded) input frames
``d0..d3``, the two outputs ``y0 = g0*d0 + g1*d1 + g2*d2`` and ``y1 = g0*d1 + g1*d2 + g2*d3`` are::

    m1 = (d0 - d2) * g0            y0 = m1 + m2 + m3
    m2 = (d1 + d2) * (g0+g1+g2)/2  y1 = m2 - m3 + m4
    m3 = (d2 - d1) * (g0-g1+g2)/2
    m4 = (d3 - d1) * g2

where ``*`` is a 3x3 spatial convolution. That is the same sum regrouped, so the result matches the direct
convolution to float rounding (relative differences of about 1e-6 in float32), not bit for bit. The input
and output transforms are frame-wise additions of contiguous ``H*W`` planes, which is why the time axis,
and not the spatial ones, is transformed: no tile gathering.

It pays where the convolution is compute-bound and the transforms are cheap next to it. Measured on a
2-core AVX-512 EPYC (torch 2.13, bfloat16 weights widened per call), Winograd / direct time per conv at 128 to
1024 channels: 0.76-0.91 from 1792 output positions (frames x H x W) up; mixed (0.8-1.2) at 256-1024;
1.3-2.9 at 64 positions and below, where forming the branch kernels dominates; 1.04 for the decoder's
128 -> 48 output conv. Whole 0.9.5 decodes: latents 4x8x8 (256x256x25 video) 9.8 s vs 12.2 s direct,
4x4x4 3.1 vs 3.4 s, 2x2x2 0.76 vs 0.75 s. Hence ``auto``: CPU, float32/float64, at least
:data:`MIN_CHANNELS` channels in and out and :data:`MIN_OUTPUT_VOXELS` output positions. GPUs keep cuDNN's
choice (not measured here: no GPU was available).
"""

from __future__ import annotations

import enum

import torch
from torch import Tensor, nn

from ltxcli.models.upcast import UpcastScratch, compute_dtype, inference_only

MIN_CHANNELS = 128  # below this the transforms cost more than the saved multiply-adds (see module doc)
MIN_OUTPUT_VOXELS = 256  # frames * height * width of the output: below it the per-call kernel transforms dominate


class ConvAlgorithm(str, enum.Enum):
    """How the VAE runs its stride-1 3x3x3 convolutions.

    ``auto``: time-Winograd on the CPU in float32/float64 for convolutions with at least
    :data:`MIN_CHANNELS` input and output channels and :data:`MIN_OUTPUT_VOXELS` output positions, direct
    elsewhere. ``direct``: always the plain
    convolution (bit-identical to the official code). ``winograd``: time-Winograd wherever it applies
    (stride 1, 3x3x3 kernel, at least 2 output frames), on any device and dtype. Under autograd (or
    ``torch.compile``) the direct convolution always runs.
    """

    AUTO = "auto"
    DIRECT = "direct"
    WINOGRAD = "winograd"

    def __str__(self) -> str:
        return self.value


def parse_conv_algorithm(value: ConvAlgorithm | str) -> ConvAlgorithm:
    try:
        return ConvAlgorithm(value)
    except ValueError:
        choices = ", ".join(a.value for a in ConvAlgorithm)
        raise ValueError(f"unknown VAE conv algorithm {value!r} (choose {choices})") from None


def _applies(conv: nn.Conv3d, frames_in: int) -> bool:
    """Stride-1, undilated, ungrouped 3x3x3 with no temporal padding of its own and >= 2 output frames."""
    return (
        tuple(conv.kernel_size) == (3, 3, 3)
        and tuple(conv.stride) == (1, 1, 1)
        and tuple(conv.dilation) == (1, 1, 1)
        and conv.groups == 1
        and conv.padding[0] == 0
        and frames_in - 2 >= 2
    )


def use_winograd(algorithm: ConvAlgorithm, conv: nn.Conv3d, x: Tensor) -> bool:
    """Whether ``conv`` on the time-padded input ``x`` ``[B, C, F+2, H, W]`` runs as time-Winograd.

    Decided from shapes, dtype and device type only (no device query, no synchronisation).
    """
    if algorithm is ConvAlgorithm.DIRECT or not _applies(conv, x.shape[2]):
        return False
    if not inference_only():
        return False  # the branch kernels live in a shared scratch buffer
    if algorithm is ConvAlgorithm.WINOGRAD:
        return True
    return (
        x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and min(conv.in_channels, conv.out_channels) >= MIN_CHANNELS
        and (x.shape[2] - 2) * x.shape[3] * x.shape[4] >= MIN_OUTPUT_VOXELS
    )


MKLDNN_MIN_PLANE = 256  # H*W from which a branch conv always takes oneDNN (see _branch_conv)


def _branch_conv(conv: nn.Conv3d, u: Tensor, kernel: Tensor, bias: Tensor | None) -> Tensor:
    """``conv``'s convolution of ``u`` with a 1x3x3 branch kernel.

    PyTorch sends a CPU float32 conv3d of batch 1 to oneDNN only when ``C*F*H`` exceeds 20480, and to an
    im2col+GEMM path otherwise. A branch input has half the frames of the direct input, so at 16x16 and larger
    planes it often lands on the im2col path, which measured 1.4-1.9x slower there than oneDNN (e.g. 128
    channels, 5 frames of 32x32: 25.7 ms vs 13.5 ms); on 8x8 planes the im2col path is the faster one
    (1024 channels, 2 frames: 26 ms vs 42 ms), so the dispatch is only overridden from 16x16 up.
    """
    if (
        u.device.type == "cpu"
        and u.dtype == torch.float32
        and conv.padding_mode == "zeros"
        and u.shape[3] * u.shape[4] >= MKLDNN_MIN_PLANE
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
    ):
        return torch.mkldnn_convolution(u, kernel, bias, conv.padding, conv.stride, conv.dilation, conv.groups)
    return conv._conv_forward(u, kernel, bias)


CHUNK_POSITIONS = 32768  # frame pairs per branch conv: about this many output positions (H*W per pair)
_WIDEN_ROWS = 64  # output channels widened at a time when a narrow weight is added into a kernel


def _add_rows(kernel: Tensor, part: Tensor, alpha: float) -> Tensor:
    """``kernel += alpha * part`` where ``part`` may be narrower: a mixed-dtype ``add_`` converts its operand
    into a temporary, so a narrow one is taken a few output channels at a time (small temporaries)."""
    if part.dtype == kernel.dtype:
        return kernel.add_(part, alpha=alpha)
    for start in range(0, kernel.shape[0], _WIDEN_ROWS):
        kernel[start : start + _WIDEN_ROWS].add_(part[start : start + _WIDEN_ROWS], alpha=alpha)
    return kernel


def time_winograd_conv3d(conv: nn.Conv3d, x: Tensor, scratch: UpcastScratch | None = None) -> Tensor:
    """``conv(x)`` for a time-padded ``x`` ``[B, C, F+2, H, W]`` -> ``[B, O, F, H, W]`` (contiguous), by
    Winograd F(2,3) along time; spatial padding (and its mode) and the bias are ``conv``'s own.

    Two phases, each with two branch kernels alive (in ``scratch``, two thirds of the weight):
    ``m1, m2`` give ``y0 = m1 + m2`` and ``y1 = m2``, then ``m3, m4`` add ``y0 += m3`` and ``y1 += m4 - m3``.
    Within a phase the frame pairs are taken in chunks of about :data:`CHUNK_POSITIONS` output positions,
    so the transformed inputs and branch outputs stay small: the peak is the direct convolution's (padded
    input and output) plus a chunk. Inference only: the kernels live in buffers the next call overwrites.
    ``conv`` may be an upcast layer (:mod:`ltxcli.models.upcast`): its stored weight is read directly and
    widened while the branch kernels are formed (every sum is taken in the compute dtype).
    """
    b, _, frames_padded, h, w = x.shape
    frames = frames_padded - 2
    pairs = (frames + 1) // 2  # even outputs 0, 2, ...; the odd ones are one fewer when F is odd
    odd = frames // 2
    dtype = compute_dtype(conv)
    weight, bias = conv.weight, conv.bias
    g0, g1, g2 = weight[:, :, 0:1], weight[:, :, 1:2], weight[:, :, 2:3]  # [O, C, 1, 3, 3] strided views
    kshape = torch.Size(g0.shape)
    n = kshape.numel()
    kernels = (scratch or UpcastScratch()).buffer(2 * n, dtype, x.device)
    ka, kb = kernels[:n].view(kshape), kernels[n:].view(kshape)
    step = max(1, CHUNK_POSITIONS // (h * w))

    def run(u: Tensor, kernel: Tensor, with_bias: bool) -> Tensor:
        return _branch_conv(conv, u, kernel, bias if with_bias else None)  # [B, O, n, H, W]

    # Padded frame 2p is xe[p], 2p+1 is xo[p]: strided views, each frame a contiguous [H, W] plane per channel.
    xe, xo = x[:, :, 0::2], x[:, :, 1::2]
    out = x.new_empty(b, weight.shape[0], frames, h, w)
    even, odd_frames = out[:, :, 0::2], out[:, :, 1::2]  # [B, O, pairs | odd, H, W]

    ka.copy_(g0)
    _add_rows(kb.copy_(g2).add_(ka), g1, 1.0).mul_(0.5)  # (g0 + g2 + g1) / 2
    for p in range(0, pairs, step):
        q, r = min(p + step, pairs), min(p + step, odd)  # this chunk: even pairs [p, q), odd [p, r)
        d1, d2 = xo[:, :, p:q], xe[:, :, p + 1 : q + 1]  # [B, C, n, H, W]
        m1 = run(torch.sub(xe[:, :, p:q], d2), ka, True)
        m2 = run(torch.add(d1, d2), kb, False)
        torch.add(m1, m2, out=even[:, :, p:q])
        del m1
        odd_frames[:, :, p:r].copy_(m2[:, :, : r - p])
        del m2
    _add_rows(kb, g1, -1.0)  # (g0 + g2 + g1) / 2 - g1 = (g0 - g1 + g2) / 2
    ka.copy_(g2)
    for p in range(0, pairs, step):
        q, r = min(p + step, pairs), min(p + step, odd)
        d1, d2 = xo[:, :, p:q], xe[:, :, p + 1 : q + 1]
        m3 = run(torch.sub(d2, d1), kb, False)
        even[:, :, p:q].add_(m3)
        if r > p:
            m4 = run(torch.sub(xo[:, :, p + 1 : r + 1], d1[:, :, : r - p]), ka, True)
            odd_frames[:, :, p:r].add_(m4.sub_(m3[:, :, : r - p]))
        del m3
    return out
