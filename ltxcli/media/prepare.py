"""The official conditioning preprocessing: :func:`preprocess_condition_frames` does, frame by frame, what the
official ``ltx_video/inference.py::load_image_to_tensor_with_resize_and_crop`` does: centre crop to the target
aspect ratio, PIL bicubic resize (skipped with ``just_crop``), Gaussian blur (kernel 3, sigma 1, the torchvision
formula and reflect padding), one-frame H.264 CRF-29 round trip (``ltx_video/pipelines/crf_compressor.py``), map
to ``[-1, 1]``. The result is bit-identical to the official function for RGB input (tests/test_media.py compares
the two).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import MediaError
from .read import _check_frames_tensor, load_image

#: CRF of the official conditioning round trip (``crf_compressor.compress`` default).
CONDITION_CRF = 29


def centre_crop_box(in_width: int, in_height: int, height: int, width: int) -> tuple[int, int, int, int]:
    """PIL crop box ``(left, top, right, bottom)`` of the largest centred region with the aspect ratio
    ``width / height``, computed in floats with truncation exactly as the official loader does."""
    target = width / height
    if in_width / in_height > target:  # too wide: keep the full height
        crop_w, crop_h = int(in_height * target), in_height
    else:  # too tall (or equal): keep the full width
        crop_w, crop_h = in_width, int(in_width / target)
    left, top = (in_width - crop_w) // 2, (in_height - crop_h) // 2
    return left, top, left + crop_w, top + crop_h


def _gaussian_kernel1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # Same float ops, in the same order, as torchvision's _get_gaussian_kernel1d, so the weights are the same bits.
    half = (size - 1) * 0.5
    positions = torch.linspace(-half, half, steps=size, dtype=dtype, device=device)
    density = torch.exp(-0.5 * (positions / sigma).pow(2))
    return density / density.sum()


def _onednn_convolves() -> bool:
    """Whether CPU convolutions run in oneDNN (built in and not switched off by ``torch.backends.mkldnn``)."""
    return bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled)


def gaussian_blur(image: torch.Tensor, kernel_size: int = 3, sigma: float = 1.0) -> torch.Tensor:
    """``torchvision.transforms.functional.gaussian_blur(image, kernel_size, sigma)`` for float tensors
    ``[C, H, W]`` or ``[N, C, H, W]``: separable Gaussian weights normalised to sum 1, outer product, reflect
    padding of ``kernel_size // 2`` (edge pixel not repeated), depthwise convolution. Bit-identical to
    torchvision on the same device and dtype."""
    if not image.is_floating_point():
        raise TypeError(f"gaussian_blur expects a float tensor, got {image.dtype}")
    if kernel_size < 1 or kernel_size % 2 == 0 or sigma <= 0:
        raise ValueError(f"kernel_size must be odd and positive and sigma positive, got {kernel_size}, {sigma}")
    squeeze = image.ndim == 3
    batch = image.unsqueeze(0) if squeeze else image
    channels = batch.shape[-3]
    k1d = _gaussian_kernel1d(kernel_size, sigma, batch.dtype, batch.device)
    k2d = torch.mm(k1d[:, None], k1d[None, :])  # [k, k], rows = y
    weight = k2d.expand(channels, 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    padded = F.pad(batch, [pad, pad, pad, pad], mode="reflect")
    if padded.device.type == "cpu" and padded.dtype == torch.float32 and _onednn_convolves():
        # oneDNN's depthwise kernel on channels-last memory: the same sums in the same order as on NCHW (tests
        # compare the bits), where an NCHW input of 3 channels takes a path about 15x slower (33 s for an
        # 8000x5333 picture on 2 cores, 2 s so). float32 only: float64 on channels-last sums in another order
        # (last-bit differences from torchvision's NCHW convolution); oneDNN only: PyTorch's own channels-last
        # kernel (oneDNN off or absent) also sums in another order, and a last bit moves the CRF step's codes
        padded = padded.contiguous(memory_format=torch.channels_last)
    out = F.conv2d(padded, weight, groups=channels)
    return out.squeeze(0) if squeeze else out


def _h264_single_frame(rgb: np.ndarray, crf: int) -> bytes:
    """One rgb24 frame -> MP4 bytes: libx264, preset veryfast, yuv420p via swscale defaults, 1 fps."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.height, stream.width = rgb.shape[0], rgb.shape[1]
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _decode_first_frame(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24")


def crf_round_trip(image: torch.Tensor, crf: int = CONDITION_CRF) -> torch.Tensor:
    """The official ``crf_compressor.compress``: ``[H, W, 3]`` in [0, 1] -> the same after one H.264 intra
    frame at ``crf``. Odd height/width lose their last row/column (yuv420p needs even sizes); the input is
    quantised by truncation (``(x * 255).byte()``); the decoded frame is ``uint8 / 255`` in the input dtype
    and device. ``crf == 0`` returns the input unchanged (not even cropped), as the official function does."""
    if crf == 0:
        return image
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"crf_round_trip expects [H, W, 3], got {tuple(image.shape)}")
    even_h, even_w = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    if even_h == 0 or even_w == 0:
        raise ValueError(f"image {image.shape[1]}x{image.shape[0]} is too small for the H.264 round trip")
    quantised = (image[:even_h, :even_w] * 255.0).byte().cpu().numpy()
    decoded = _decode_first_frame(_h264_single_frame(np.ascontiguousarray(quantised), crf))
    return torch.from_numpy(decoded).to(device=image.device, dtype=image.dtype) / 255.0


def _preprocess_one(rgb: np.ndarray, height: int, width: int, just_crop: bool, crf: int) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float32 ``[3, h, w]`` in [-1, 1], the official per-frame path."""
    image = Image.fromarray(rgb)
    box = centre_crop_box(image.width, image.height, height, width)
    if box[2] - box[0] < 2 or box[3] - box[1] < 2:
        raise MediaError(
            f"a {image.width}x{image.height} frame is too small to crop to the aspect ratio {width}:{height}"
        )
    image = image.crop(box)
    if not just_crop:
        image = image.resize((width, height), Image.Resampling.BICUBIC)  # PIL's default filter for RGB
    chw = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous().float().div(255)
    blurred = gaussian_blur(chw, kernel_size=3, sigma=1.0)
    hwc = crf_round_trip(blurred.permute(1, 2, 0), crf)
    # The official code scales back to 0..255 and then to [-1, 1] in two steps; keep both roundings.
    scaled = hwc.permute(2, 0, 1) * 255.0
    return scaled / 127.5 - 1.0


def preprocess_condition_frames(
    frames: torch.Tensor | Image.Image | Sequence[Image.Image],
    height: int,
    width: int,
    *,
    just_crop: bool = False,
    crf: int = CONDITION_CRF,
) -> torch.Tensor:
    """The official conditioning preprocessing, per frame -> float32 ``[1, 3, F, h, w]`` in [-1, 1] (CPU).

    ``frames``: float ``[F, H, W, 3]`` / ``[H, W, 3]`` in [0, 1] (what :func:`load_media` returns; values are
    re-quantised with ``round(x * 255)``, which recovers 8-bit sources exactly), uint8 tensors, or PIL
    images (run through :func:`load_image`, i.e. EXIF-rotated and alpha-composited).

    Per frame, as ``load_image_to_tensor_with_resize_and_crop``: centre crop to ``width / height``
    (:func:`centre_crop_box`), bicubic resize to ``width x height`` unless ``just_crop``, ``/ 255``,
    :func:`gaussian_blur` (3, 1.0), :func:`crf_round_trip` (``crf``, default 29), ``* 255 / 127.5 - 1``.
    Output ``h, w`` is ``height, width`` rounded down to even (the H.264 step crops odd sizes); with
    ``just_crop`` it is the even-rounded crop of the native resolution, which the pipeline resizes later.
    Padding to multiples of 32 (official ``load_media_file``) is not applied here.
    """
    if height < 2 or width < 2:
        raise ValueError(f"height and width must be at least 2, got {height}x{width}")
    if isinstance(frames, Image.Image):
        tensor = load_image(frames)
    elif isinstance(frames, torch.Tensor):
        tensor = _check_frames_tensor(frames, "condition frames", keep_uint8=True)
    else:
        tensor = torch.cat([load_image(frame) for frame in frames])
        if tensor.shape[0] == 0:
            raise ValueError("no condition frames given")
    if tensor.dtype == torch.uint8:  # round(uint8 / 255 * 255) is the code itself
        quantised = tensor.detach().cpu().numpy()
    else:
        quantised = tensor.detach().cpu().mul(255.0).round_().to(torch.uint8).numpy()
    out: torch.Tensor | None = None
    for i, frame in enumerate(quantised):  # into one tensor: no list of frames beside their stack
        one = _preprocess_one(frame, height, width, just_crop, crf)  # [3, h, w]
        if out is None:
            out = torch.empty((1, 3, len(quantised), *one.shape[1:]))
        out[0, :, i] = one
    assert out is not None, "no condition frames"
    return out  # [1, 3, F, h, w]


__all__ = ["CONDITION_CRF", "centre_crop_box", "crf_round_trip", "gaussian_blur", "preprocess_condition_frames"]
