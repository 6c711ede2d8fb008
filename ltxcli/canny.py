"""Canny edges in torch: the edges OpenCV's ``cv2.Canny(image, low, high)`` finds (3x3 Sobel, L1 gradient), for
making a Canny IC-LoRA control video from an ordinary video (:mod:`ltxcli.control`) without OpenCV at run time.

The steps follow OpenCV's ``modules/imgproc/src/canny.cpp`` (``cv::Canny``, aperture 3, ``L2gradient=false``):

1. ``dx``, ``dy``: the 3x3 Sobel derivatives with replicated borders (integers, exact in float32);
2. ``|dx| + |dy|``, compared with ``floor(low)`` / ``floor(high)`` strictly (``m > low``);
3. non-maximum suppression in OpenCV's fixed-point sectors: with ``TG22 = round(tan(22.5°) * 2**15)``, the
   gradient is horizontal when ``|dy| * 2**15 < |dx| * TG22`` (a pixel must beat its left neighbour and at least
   equal its right one), vertical when ``|dy| * 2**15 > |dx| * (TG22 + 2**16)`` (above: strictly, below: at
   least), else diagonal (both neighbours along the diagonal the signs of ``dx``, ``dy`` pick, strictly); the
   magnitude outside the image counts as 0. The sector arithmetic runs in int32, as OpenCV's does;
4. hysteresis: the pixels above ``high`` that survive, grown through 8-connected surviving pixels above ``low``
   (OpenCV's stack walk; here repeated 3x3 dilations until nothing changes, checked every
   :data:`HYSTERESIS_CHECK_EVERY` dilations, so a long edge costs a few host syncs, not one per pixel).

The grey image is the LTX-Video-Trainer's (``scripts/compute_condition.py``, which made the Canny IC-LoRA's
training references): torchvision's ``rgb_to_grayscale`` weights (0.2989, 0.587, 0.114) on [0, 1] frames, scaled
by 255 and truncated to uint8, then ``cv2.Canny(gray, 100, 200)``; the edges (255) become white on black.
tests/test_control.py compares the edges with OpenCV's on test images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: ``cv2.Canny`` thresholds the LTX-Video-Trainer made its Canny references with.
LOW_THRESHOLD, HIGH_THRESHOLD = 100.0, 200.0
#: RGB -> grey weights of torchvision's ``rgb_to_grayscale`` (what the trainer's script calls).
GREY_WEIGHTS = (0.2989, 0.587, 0.114)
#: Dilations between two convergence checks of the hysteresis (each check is one host sync).
HYSTERESIS_CHECK_EVERY = 16
#: Frames processed at once by :func:`canny_video` (bounds its working memory).
FRAMES_PER_CHUNK = 16

_SHIFT = 15
_TG22 = int(0.4142135623730950488016887242097 * (1 << _SHIFT) + 0.5)  # 13573, OpenCV's constant


def grey_uint8(frames: Tensor) -> Tensor:
    """RGB ``[..., 3]`` in [0, 1] -> grey levels ``[...]`` as the trainer's script computes them: the weighted sum,
    times 255, truncated (numpy's ``astype(uint8)``) -> float32 holding the integers 0-255."""
    r, g, b = frames.float().unbind(-1)
    grey = GREY_WEIGHTS[0] * r + GREY_WEIGHTS[1] * g + GREY_WEIGHTS[2] * b
    return (grey * 255).clamp_(0, 255).floor_()


def _sobel(grey: Tensor) -> tuple[Tensor, Tensor]:
    """``[N, H, W]`` grey levels -> (``dx``, ``dy``) int32 ``[N, H, W]``: 3x3 Sobel with replicated borders."""
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=grey.device)
    k = torch.stack([kx, kx.t()])[:, None]  # [2, 1, 3, 3]: d/dx, d/dy (cross-correlation, as OpenCV filters)
    padded = F.pad(grey[:, None].float(), (1, 1, 1, 1), mode="replicate")  # [N, 1, H+2, W+2]
    d = F.conv2d(padded, k).round_().to(torch.int32)  # integers up to 1020: exact in float32
    return d[:, 0], d[:, 1]


def canny(grey: Tensor, low: float = LOW_THRESHOLD, high: float = HIGH_THRESHOLD) -> Tensor:
    """Edges of grey images ``[N, H, W]`` (values 0-255, any dtype) -> bool ``[N, H, W]``, as ``cv2.Canny(grey,
    low, high)`` (aperture 3, L1 gradient) finds them; see the module docstring."""
    if grey.ndim != 3:
        raise ValueError(f"canny expects grey images [N, H, W], got shape {list(grey.shape)}")
    if low > high:
        low, high = high, low  # OpenCV swaps them too
    lo, hi = int(low // 1), int(high // 1)  # cvFloor
    dx, dy = _sobel(grey)
    mag = dx.abs() + dy.abs()  # [N, H, W] int32
    # the magnitude with a zero border: neighbour (r, c) of pixel (i, j) is m[:, 1 + i + r, 1 + j + c]
    m = F.pad(mag, (1, 1, 1, 1))
    h, w = mag.shape[1:]

    def at(r: int, c: int) -> Tensor:
        return m[:, 1 + r : 1 + r + h, 1 + c : 1 + c + w]

    x, y = dx.abs(), dy.abs() << _SHIFT
    tg22x = x * _TG22
    tg67x = tg22x + (x << (_SHIFT + 1))
    horizontal = y < tg22x
    vertical = ~horizontal & (y > tg67x)
    diagonal = ~horizontal & ~vertical
    same_sign = (dx ^ dy) >= 0  # OpenCV's s = 1: the up-left / down-right diagonal
    keep_h = (mag > at(0, -1)) & (mag >= at(0, 1))
    keep_v = (mag > at(-1, 0)) & (mag >= at(1, 0))
    keep_d = torch.where(same_sign, (mag > at(-1, -1)) & (mag > at(1, 1)), (mag > at(-1, 1)) & (mag > at(1, -1)))
    survives = (mag > lo) & ((horizontal & keep_h) | (vertical & keep_v) | (diagonal & keep_d))
    return _hysteresis(survives & (mag > hi), survives)


def _hysteresis(strong: Tensor, weak: Tensor) -> Tensor:
    """``strong`` grown through 8-connected ``weak`` pixels (bool ``[N, H, W]``) until it stops changing."""
    edges = strong.float()[:, None]  # [N, 1, H, W] for max_pool2d
    allowed = weak.float()[:, None]
    while True:
        before = edges
        for _ in range(HYSTERESIS_CHECK_EVERY):
            edges = F.max_pool2d(edges, 3, stride=1, padding=1) * allowed
        if torch.equal(edges, before):
            return edges[:, 0] > 0


def canny_video(frames: Tensor, low: float = LOW_THRESHOLD, high: float = HIGH_THRESHOLD) -> Tensor:
    """A Canny control video: RGB frames ``[F, H, W, 3]`` in [0, 1] -> white edges on black, float32 ``[F, H, W,
    3]`` (the trainer's references: grey levels of :func:`grey_uint8`, ``cv2.Canny(grey, 100, 200)``, 3 channels),
    :data:`FRAMES_PER_CHUNK` frames at a time, on the frames' device."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"canny_video expects frames [F, H, W, 3], got shape {list(frames.shape)}")
    out = torch.empty(frames.shape, dtype=torch.float32, device=frames.device)
    for a in range(0, frames.shape[0], FRAMES_PER_CHUNK):
        edges = canny(grey_uint8(frames[a : a + FRAMES_PER_CHUNK]), low, high)
        out[a : a + FRAMES_PER_CHUNK] = edges.float()[..., None]  # [n, H, W] -> [n, H, W, 1], broadcast to 3
    return out


__all__ = ["FRAMES_PER_CHUNK", "HIGH_THRESHOLD", "LOW_THRESHOLD", "canny", "canny_video", "grey_uint8"]
