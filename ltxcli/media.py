"""Media in and out: images and videos as ``[F, H, W, 3]`` float tensors, the official conditioning
preprocessing, and atomic MP4 / PNG writers that carry the generation record.

Reading
    :func:`load_image`, :func:`load_video`, :func:`load_media` return float32 ``[F, H, W, 3]`` in ``[0, 1]``
    (8-bit sources are exactly ``uint8 / 255``). Every problem with a file (missing, empty, truncated, not an
    image or video, too large) is a one-line :class:`MediaError` naming the file.

Conditioning preprocessing
    :func:`preprocess_condition_frames` does, frame by frame, what the official
    ``ltx_video/inference.py::load_image_to_tensor_with_resize_and_crop`` does: centre crop to the target
    aspect ratio, PIL bicubic resize (skipped with ``just_crop``), Gaussian blur (kernel 3, sigma 1, the
    torchvision formula and reflect padding), one-frame H.264 CRF-29 round trip
    (``ltx_video/pipelines/crf_compressor.py``), map to ``[-1, 1]``. The result is bit-identical to the
    official function for RGB input (tests/test_media.py compares the two).

Writing
    :func:`write_video` (H.264 MP4, exact frame rate, JSON record in the ``comment`` tag),
    :func:`write_image` / :func:`write_png_frames` (lossless PNG) all go through :func:`atomic_output`:
    they write to a hidden temporary name beside the target and rename it into place only when everything
    succeeded, so an interrupted or failed write never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
import secrets
import shutil
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

__all__ = [
    "CONDITION_CRF",
    "MAX_IMAGE_PIXELS",
    "VIDEO_SUFFIXES",
    "MediaError",
    "atomic_output",
    "centre_crop_box",
    "crf_round_trip",
    "gaussian_blur",
    "load_image",
    "load_media",
    "load_video",
    "media_info",
    "media_num_frames",
    "preprocess_condition_frames",
    "read_video_metadata",
    "to_uint8",
    "video_frame_rate",
    "write_image",
    "write_png_frames",
    "write_video",
]

PathLike = str | os.PathLike[str]
Quantize = Literal["round", "truncate"]

#: Largest image (width x height) :func:`load_image` decodes unless told otherwise. 100 MP is above any camera
#: or generated frame and far below what would exhaust memory (100 MP as float32 RGB is 1.2 GB). Pillow itself
#: refuses anything above ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (about 179 MP) before we can look at it.
MAX_IMAGE_PIXELS = 100_000_000

#: Suffixes :func:`load_media` reads as video without trying Pillow first (the official code knows the first
#: four). Anything else is tried as an image, then as a video.
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})

#: CRF of the official conditioning round trip (``crf_compressor.compress`` default).
CONDITION_CRF = 29


class MediaError(ValueError):
    """A media file that cannot be read or written; the message is one line and names the file."""


# --------------------------------------------------------------------------------------------------------------
# Reading images
# --------------------------------------------------------------------------------------------------------------


def _check_regular_file(path: Path, kind: str) -> None:
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, not {kind}")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class _UnidentifiedMedia(MediaError):
    """Pillow (or FFmpeg) does not recognise the file at all, as opposed to a damaged file it recognised."""


def _open_pil(path: Path, max_pixels: int | None) -> Image.Image:
    """Decodes ``path`` fully (the file is closed on return); size checked before any pixel is decoded."""
    _check_regular_file(path, "an image")
    with warnings.catch_warnings():
        # Pillow warns above MAX_IMAGE_PIXELS (89 MP); our own limit below is the one that applies.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise MediaError(f"{path}: refusing to decode: {_one_line(exc)}") from None
        except UnidentifiedImageError:
            raise _UnidentifiedMedia(f"{path}: not an image format Pillow can read") from None
        except OSError as exc:
            raise MediaError(f"{path}: cannot open: {exc.strerror or _one_line(exc)}") from None
        with image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise MediaError(
                    f"{path}: image is {width}x{height} = {width * height:,} pixels, above the limit of "
                    f"{max_pixels:,} pixels"
                )
            try:
                image.load()
            except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, ... on damaged data
                raise MediaError(f"{path}: damaged or truncated image: {_one_line(exc)}") from None
            # The orientation transpose needs the EXIF block, which some formats read lazily from the file.
            return ImageOps.exif_transpose(image)


def _has_alpha(image: Image.Image) -> bool:
    bands = image.getbands()
    return "A" in bands or "a" in bands or "transparency" in image.info


def _pil_to_rgb_array(image: Image.Image, background: tuple[float, float, float] | None, name: str) -> np.ndarray:
    """PIL image of any mode -> float32 ``[H, W, 3]`` in [0, 1] (8-bit data exactly ``uint8 / 255``)."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grey (PNG/TIFF). Pillow's own convert("RGB") clips these at 255 (a white picture); scale the
        # full 16-bit range instead. 32-bit "I" data are taken as 16-bit samples, clipped to [0, 65535].
        grey = np.clip(np.asarray(image).astype(np.float32), 0.0, 65535.0) / np.float32(65535.0)
        return np.repeat(grey[..., None], 3, axis=-1)
    if mode == "F":  # float grey: taken as [0, 1]
        grey = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0).clip(0.0, 1.0)
        return np.repeat(grey[..., None], 3, axis=-1)
    try:
        if background is not None and _has_alpha(image):
            rgba = np.asarray(image.convert("RGBA")).astype(np.float32) / np.float32(255.0)
            alpha = rgba[..., 3:]
            bg = np.asarray(background, dtype=np.float32)
            return rgba[..., :3] * alpha + bg * (np.float32(1.0) - alpha)
        rgb = np.asarray(image.convert("RGB"))
    except ValueError as exc:  # e.g. "conversion from LAB to RGB not supported"
        raise MediaError(f"{name}: unsupported image mode {mode!r}: {_one_line(exc)}") from None
    return rgb.astype(np.float32) / np.float32(255.0)


def load_image(
    source: PathLike | Image.Image,
    *,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    background: tuple[float, float, float] | None = (0.0, 0.0, 0.0),
) -> torch.Tensor:
    """Reads an image as float32 ``[1, H, W, 3]`` in [0, 1].

    * The EXIF orientation is applied (a phone photo comes out upright). The official code does not do this;
      for images without an orientation tag the result is the same.
    * Modes: RGB/L/1/P/CMYK/YCbCr go through Pillow's ``convert("RGB")`` (as the official code; no ICC colour
      management, CMYK by Pillow's naive formula); 16-bit grey (``I;16*``) is scaled by 1/65535 instead of
      Pillow's clipping; ``I`` is read as 16-bit samples; ``F`` is taken as [0, 1].
    * Transparency (RGBA, LA, PA, palette or grey with a ``transparency`` key) is composited over
      ``background`` (RGB in [0, 1], default black), so invisible pixels cannot leak their undefined colour.
      ``background=None`` drops the alpha channel instead, which is exactly the official
      ``Image.open(path).convert("RGB")``.
    * Images above ``max_pixels`` (default :data:`MAX_IMAGE_PIXELS`) are refused from the header, before
      decoding; Pillow's ``DecompressionBombError`` is reported the same way. ``None`` lifts our limit.
    * Multi-frame files (GIF, APNG, TIFF) give their first frame.

    Raises :class:`MediaError` for a missing, empty, truncated, oversized or non-image file.
    """
    if isinstance(source, Image.Image):
        name = getattr(source, "filename", "") or "<PIL image>"
        width, height = source.size
        if max_pixels is not None and width * height > max_pixels:
            raise MediaError(f"{name}: image is {width}x{height}, above the limit of {max_pixels:,} pixels")
        try:
            source.load()
        except Exception as exc:
            raise MediaError(f"{name}: damaged or truncated image: {_one_line(exc)}") from None
        image = ImageOps.exif_transpose(source)
    else:
        name = os.fspath(source)
        image = _open_pil(Path(source), max_pixels)
    array = _pil_to_rgb_array(image, background, str(name))
    return torch.from_numpy(np.ascontiguousarray(array)).unsqueeze(0)


# --------------------------------------------------------------------------------------------------------------
# Reading videos
# --------------------------------------------------------------------------------------------------------------

# AVColorSpace values (frame.colorspace) -> the conversion matrix swscale should use for them.
_SWS_COLORSPACE = {
    1: "ITU709",  # BT709
    4: "FCC",
    5: "ITU601",  # BT470BG
    6: "ITU601",  # SMPTE170M
    7: "SMPTE240M",
    9: "BT2020",  # BT2020_NCL
    10: "BT2020",  # BT2020_CL
}
_AVCOL_RANGE_JPEG = 2


def _open_video(path: Path) -> Any:
    _check_regular_file(path, "a video")
    try:
        container = av.open(os.fspath(path))
    except av.error.InvalidDataError:
        raise _UnidentifiedMedia(f"{path}: not a video format FFmpeg can read") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"{path}: cannot open video: {_one_line(exc)}") from None
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path}: contains no video stream")
    return container


def _frame_to_rgb(frame: Any) -> np.ndarray:
    """Decoded frame -> uint8 ``[H, W, 3]``, honouring the colour matrix/range tags and the display rotation
    (the ``ffmpeg`` command line that the official imageio reader runs auto-rotates by default)."""
    from av.video.reformatter import ColorRange, Colorspace

    kwargs: dict[str, Any] = {}
    matrix = _SWS_COLORSPACE.get(int(frame.colorspace))
    if matrix is not None:
        kwargs["src_colorspace"] = getattr(Colorspace, matrix)
    if int(frame.color_range) == _AVCOL_RANGE_JPEG:
        kwargs["src_color_range"] = ColorRange.JPEG
    array = frame.to_ndarray(format="rgb24", **kwargs)
    rotation = int(getattr(frame, "rotation", 0) or 0)  # degrees counter-clockwise
    quarter_turns = round(rotation / 90) % 4
    if quarter_turns:
        array = np.rot90(array, k=quarter_turns)  # k > 0 turns counter-clockwise
    return np.ascontiguousarray(array)


def load_video(
    path: PathLike, max_frames: int | None = None, *, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> torch.Tensor:
    """Decodes the first video stream as float32 ``[F, H, W, 3]`` in [0, 1] (``uint8 / 255``).

    Frames are converted to RGB by FFmpeg's swscale (``rgb24``, PyAV's default flags, i.e. the same
    same-size fast path as ``crf_compressor``), using the stream's colour-matrix and range tags (untagged =
    BT.601 limited range, FFmpeg's default), and turned upright by the display-matrix rotation.
    ``max_frames`` keeps the first frames only. The official reader (imageio-ffmpeg) pipes the frames out of
    an ``ffmpeg`` subprocess whose scaler flags and colour handling depend on that FFmpeg build; pixels may
    differ from it by a code value or so [unverified: imageio is not installed here].

    Raises :class:`MediaError` if the file is missing, empty, not a video, has no video stream, has no
    decodable frame, changes frame size, or has frames above ``max_pixels``.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    path = Path(path)
    frames: list[np.ndarray] = []
    with _open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame/slice threads: faster, same pixels
        try:
            for frame in container.decode(stream):
                if max_pixels is not None and frame.width * frame.height > max_pixels:
                    raise MediaError(
                        f"{path}: frames are {frame.width}x{frame.height}, above the limit of {max_pixels:,} pixels"
                    )
                rgb = _frame_to_rgb(frame)
                if frames and rgb.shape != frames[0].shape:
                    raise MediaError(
                        f"{path}: frame size changes from {frames[0].shape[1]}x{frames[0].shape[0]} to "
                        f"{rgb.shape[1]}x{rgb.shape[0]} at frame {len(frames)}"
                    )
                frames.append(rgb)
                if max_frames is not None and len(frames) >= max_frames:
                    break
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: video decoding failed after {len(frames)} frames: {_one_line(exc)}") from None
    if not frames:
        raise MediaError(f"{path}: video has no decodable frames")
    return torch.from_numpy(np.stack(frames)).float().div_(255.0)


def video_frame_rate(path: PathLike) -> Fraction:
    """The frame rate of the first video stream as an exact fraction (e.g. ``Fraction(30000, 1001)``)."""
    path = Path(path)
    with _open_video(path) as container:
        stream = container.streams.video[0]
        for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
            if rate:
                return Fraction(rate.numerator, rate.denominator)
    raise MediaError(f"{path}: video has no frame rate")


def media_num_frames(path: PathLike) -> int:
    """Number of frames a file holds: 1 for an image, the frame count of the first video stream otherwise
    (container index when present, else a count of demuxed packets; nothing is decoded)."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        _check_regular_file(path, "a media file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                Image.open(path).close()
                return 1
            except (UnidentifiedImageError, Image.DecompressionBombError):
                pass
            except OSError as exc:
                raise MediaError(f"{path}: cannot open: {exc.strerror or _one_line(exc)}") from None
    with _open_video(path) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        try:
            count = sum(1 for packet in container.demux(stream) if packet.size)
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: cannot read video packets: {_one_line(exc)}") from None
    if count == 0:
        raise MediaError(f"{path}: video has no frames")
    return count


def _check_frames_tensor(frames: torch.Tensor, what: str) -> torch.Tensor:
    if frames.ndim == 3:
        frames = frames.unsqueeze(0)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise MediaError(f"{what}: expected a tensor [F, H, W, 3] (or [H, W, 3]), got shape {tuple(frames.shape)}")
    if frames.dtype == torch.uint8:
        return frames.float().div(255.0)
    if not frames.is_floating_point():
        raise MediaError(f"{what}: expected a float or uint8 tensor, got {frames.dtype}")
    lo, hi = torch.aminmax(frames.detach().float())
    if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi)) and lo >= 0.0 and hi <= 1.0):
        raise MediaError(f"{what}: values must be finite and in [0, 1], got range [{float(lo)}, {float(hi)}]")
    return frames.float()


def load_media(
    source: PathLike | Image.Image | torch.Tensor,
    *,
    max_frames: int | None = None,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    background: tuple[float, float, float] | None = (0.0, 0.0, 0.0),
) -> torch.Tensor:
    """Any conditioning source as float32 ``[F, H, W, 3]`` in [0, 1].

    Tensors ``[F, H, W, 3]`` or ``[H, W, 3]`` (float in [0, 1], or uint8) pass through after the checks; PIL
    images and image files give ``F = 1``; files with a suffix in :data:`VIDEO_SUFFIXES` are decoded as video;
    other files are tried as an image first, then as a video. ``max_frames`` trims videos.
    """
    if isinstance(source, torch.Tensor):
        frames = _check_frames_tensor(source, "media tensor")
        return frames if max_frames is None else frames[:max_frames]
    if isinstance(source, Image.Image):
        return load_image(source, max_pixels=max_pixels, background=background)
    path = Path(source)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return load_video(path, max_frames, max_pixels=max_pixels)
    try:
        return load_image(path, max_pixels=max_pixels, background=background)
    except _UnidentifiedMedia:
        pass
    try:
        return load_video(path, max_frames, max_pixels=max_pixels)
    except _UnidentifiedMedia:
        raise MediaError(f"{path}: neither an image Pillow can read nor a video FFmpeg can read") from None


# --------------------------------------------------------------------------------------------------------------
# Official conditioning preprocessing
# --------------------------------------------------------------------------------------------------------------


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
    out = F.conv2d(F.pad(batch, [pad, pad, pad, pad], mode="reflect"), weight, groups=channels)
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
        tensor = _check_frames_tensor(frames, "condition frames")
    else:
        tensor = torch.cat([load_image(frame) for frame in frames])
        if tensor.shape[0] == 0:
            raise ValueError("no condition frames given")
    quantised = tensor.detach().cpu().mul(255.0).round_().to(torch.uint8).numpy()
    per_frame = [_preprocess_one(frame, height, width, just_crop, crf) for frame in quantised]
    return torch.stack(per_frame, dim=1).unsqueeze(0)  # F x [3, h, w] -> [1, 3, F, h, w]


# --------------------------------------------------------------------------------------------------------------
# Atomic output
# --------------------------------------------------------------------------------------------------------------

_ERRNO_REASONS = {
    errno.ENOSPC: "no space left on device",
    getattr(errno, "EDQUOT", -1): "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOENT: "no such file or folder",
    errno.EISDIR: "is a folder",
    errno.ENOTDIR: "not a folder",
    errno.ENAMETOOLONG: "file name too long",
}


def _write_error(final: Path, exc: OSError) -> MediaError:
    reason = _ERRNO_REASONS.get(exc.errno or 0) or exc.strerror or _one_line(exc)
    return MediaError(f"cannot write {final}: {reason}")


def _remove_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: PathLike, *, overwrite: bool = False, directory: bool = False) -> Iterator[Path]:
    """Yields a fresh temporary path beside ``path``; moves it onto ``path`` only if the block succeeds.

    The temporary name is hidden and keeps the suffix (``.out.<random>.partial.mp4``) so writers that infer
    the format from the name still work; with ``directory=True`` it is an empty folder
    (``.frames.<random>.partial``). On any exception, KeyboardInterrupt included, the temporary file or
    folder is removed and the exception propagates; ``OSError`` (disk full, permission denied, read-only
    file system, ...) is turned into a one-line :class:`MediaError` naming ``path``.

    An existing ``path`` raises ``FileExistsError`` (checked before and again just before the rename) unless
    ``overwrite``: then a file is replaced atomically with ``os.replace``; a folder is moved aside, the new one
    renamed in, and the old one deleted. A missing parent folder is an error, not created. Files are
    fsync'ed before the rename, so a crash cannot leave a renamed-but-empty file.
    """
    final = Path(path)
    _check_destination(final, overwrite, directory)
    token = secrets.token_hex(4)
    if directory:
        temp = final.with_name(f".{final.name}.{token}.partial")
    else:
        temp = final.with_name(f".{final.stem}.{token}.partial{final.suffix}")
    try:
        if directory:
            os.mkdir(temp, 0o777)
        else:
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise _write_error(final, exc) from None
    try:
        yield temp
        if not directory:
            _fsync(temp)
        _commit(temp, final, overwrite, directory)
    except BaseException as exc:
        _remove_quietly(temp)
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise _write_error(final, exc) from exc
        raise


def _check_destination(final: Path, overwrite: bool, directory: bool) -> None:
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise FileExistsError(f"{final} already exists; not overwriting it (pass overwrite=True to replace it)")
        if directory and not final.is_dir():
            raise MediaError(f"cannot write {final}: it exists and is not a folder")
        if not directory and final.is_dir():
            raise MediaError(f"cannot write {final}: it is a folder")
    parent = final.parent
    if not parent.is_dir():
        raise MediaError(f"cannot write {final}: folder {parent} does not exist")


def _commit(temp: Path, final: Path, overwrite: bool, directory: bool) -> None:
    exists = final.exists() or final.is_symlink()
    if exists and not overwrite:
        raise FileExistsError(f"{final} already exists; not overwriting it (pass overwrite=True to replace it)")
    if not directory or not exists:
        os.replace(temp, final)
        return
    old = final.with_name(f".{final.name}.{secrets.token_hex(4)}.old")
    os.rename(final, old)
    try:
        os.rename(temp, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------------------


def to_uint8(frames: torch.Tensor, quantize: Quantize = "round") -> torch.Tensor:
    """Float frames in [0, 1] (any shape, any device) -> uint8 on the CPU. NaN becomes 0, values are clamped.

    ``"round"`` (default) rounds to nearest (half to even), the unbiased choice. ``"truncate"`` is the
    official ``(x * 255).astype(np.uint8)``, which floors and so darkens by half a code value on average.
    """
    if quantize not in ("round", "truncate"):
        raise ValueError(f"quantize must be 'round' or 'truncate', got {quantize!r}")
    if frames.dtype == torch.uint8:
        return frames.cpu()
    x = torch.nan_to_num(frames.detach().to("cpu", torch.float32), nan=0.0).clamp_(0.0, 1.0) * 255.0
    return (x.round_() if quantize == "round" else x.trunc_()).to(torch.uint8)


_NTSC_TOLERANCE = 0.005


def _exact_rate(fps: float | Fraction) -> Fraction:
    """Frame rate as a fraction: 24 -> 24, 12.5 -> 25/2, 29.97 / 23.976 / 59.94 -> 30000/1001 / ... ."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        if not math.isfinite(fps):
            raise ValueError(f"frame rate must be a positive number, got {fps}")
        rate = Fraction(fps).limit_denominator(1001)
        ntsc = Fraction(round(fps * 1.001) * 1000, 1001)
        if rate.denominator != 1 and ntsc > 0 and abs(float(ntsc) - fps) < _NTSC_TOLERANCE:
            rate = ntsc  # 29.97 means 30000/1001, the NTSC rate
    if not 0 < rate <= 1000:
        raise ValueError(f"frame rate must be in (0, 1000], got {fps}")
    return rate


def _iter_frames(frames: torch.Tensor | Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    if isinstance(frames, torch.Tensor):
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise ValueError(f"frames must be [F, H, W, 3] with F >= 1, got {tuple(frames.shape)}")
        yield from frames
        return
    for frame in frames:
        if frame.ndim != 3 or frame.shape[-1] != 3:
            raise ValueError(f"each frame must be [H, W, 3], got {tuple(frame.shape)}")
        yield frame


def _record_json(metadata: Mapping[str, Any] | None) -> str | None:
    if metadata is None:
        return None
    try:
        return json.dumps(dict(metadata), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable: {exc}") from None


def write_video(
    path: PathLike,
    frames: torch.Tensor | Iterable[torch.Tensor],
    fps: float | Fraction,
    *,
    metadata: Mapping[str, Any] | None = None,
    crf: int = 18,
    preset: str = "medium",
    quantize: Quantize = "round",
    overwrite: bool = False,
) -> Path:
    """Writes an H.264 MP4 (yuv420p, BT.709 limited range, tagged) atomically and returns its path.

    ``frames``: float ``[F, H, W, 3]`` in [0, 1] (any device; moved to the CPU frame by frame), or an
    iterable of ``[H, W, 3]`` frames (a generator can stream them). Odd heights/widths are **cropped** by one
    row/column (bottom/right) because 4:2:0 needs even sizes; the official writer instead lets FFmpeg scale
    up to a multiple of 16. 8-bit conversion is :func:`to_uint8` (``quantize``: round by default, or the
    official truncation).

    ``fps`` is stored exactly: ints and fractions as given, floats as the nearest fraction with a
    denominator up to 1001, except that 23.976 / 29.97 / 59.94 (within 0.005) mean the NTSC rates
    24000/1001, 30000/1001, 60000/1001. ``crf`` 18 with ``preset`` "medium" is visually lossless; the official
    imageio writer uses CRF 25 (imageio quality 5), preset medium, fps formatted with two decimals.

    ``metadata`` is stored as compact JSON in the container's ``comment`` tag, written with
    ``movflags=use_metadata_tags`` (readable by ``ffprobe -show_format`` and :func:`read_video_metadata`).
    The ``moov`` index is moved to the front (``faststart``) for streaming.

    Raises ``FileExistsError`` if ``path`` exists and not ``overwrite``, :class:`MediaError` for I/O
    failures (missing folder, permission, disk full); nothing is left behind on failure.
    """
    rate = _exact_rate(fps)
    comment = _record_json(metadata)
    if not 0 <= crf <= 51:
        raise ValueError(f"crf must be in 0..51, got {crf}")
    final = Path(path)
    frame_iter = _iter_frames(frames)
    with atomic_output(final, overwrite=overwrite) as temp:
        _encode_mp4(temp, frame_iter, rate, comment, crf, preset, quantize, final)
    return final


def _encode_mp4(
    temp: Path,
    frames: Iterator[torch.Tensor],
    rate: Fraction,
    comment: str | None,
    crf: int,
    preset: str,
    quantize: Quantize,
    final: Path,
) -> None:
    from av.video.reformatter import ColorRange, Colorspace, Interpolation

    # Accurate rounding in the RGB -> Y'CbCr conversion (the default fast path is biased by about one code).
    flags = Interpolation.BILINEAR | Interpolation.ACCURATE_RND
    container = av.open(
        os.fspath(temp), "w", format="mp4", options={"movflags": "+use_metadata_tags+faststart"}
    )
    try:
        if comment is not None:
            container.metadata["comment"] = comment
        stream = None
        first_shape: tuple[int, ...] = ()
        height = width = 0
        for count, frame in enumerate(frames):
            rgb = to_uint8(frame, quantize)
            if stream is None:
                height, width = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
                if height == 0 or width == 0:
                    raise MediaError(f"cannot write {final}: frames of {rgb.shape[1]}x{rgb.shape[0]} are too small")
                first_shape = tuple(rgb.shape)
                stream = container.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": preset})
                stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
                codec = stream.codec_context
                codec.colorspace, codec.color_primaries, codec.color_trc = 1, 1, 1  # BT.709
                codec.color_range = 1  # limited ("tv") range
            elif tuple(rgb.shape) != first_shape:
                raise ValueError(
                    f"frame {count} is {rgb.shape[1]}x{rgb.shape[0]}, frame 0 was {first_shape[1]}x{first_shape[0]}"
                )
            rgb = np.ascontiguousarray(rgb[:height, :width].numpy())
            video_frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=Colorspace.ITU709, dst_color_range=ColorRange.MPEG,
                interpolation=flags,
            )
            video_frame.pts = count
            container.mux(stream.encode(video_frame))
        if stream is None:
            raise ValueError("no frames to write")
        container.mux(stream.encode(None))
    except BaseException:
        with contextlib.suppress(Exception):
            container.close()
        raise
    container.close()


def read_video_metadata(path: PathLike) -> dict[str, Any] | None:
    """The JSON record written by :func:`write_video` (MP4 ``comment`` tag) or :func:`write_image` /
    :func:`write_png_frames` (PNG text chunk ``comment``); ``None`` if there is none or it is not a JSON
    object. Raises :class:`MediaError` if the file cannot be opened."""
    path = Path(path)
    text: str | None
    if path.suffix.lower() == ".png":
        _check_regular_file(path, "an image")
        try:
            with Image.open(path) as image:
                text = image.info.get("comment")
        except (UnidentifiedImageError, OSError) as exc:
            raise MediaError(f"{path}: cannot read image: {_one_line(exc)}") from None
    else:
        _check_regular_file(path, "a video")
        try:
            with av.open(os.fspath(path)) as container:
                text = container.metadata.get("comment")
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(f"{path}: cannot open: {_one_line(exc)}") from None
    if not isinstance(text, str):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def media_info(path: PathLike) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A file's stream facts (nothing is decoded) and its record (:func:`read_video_metadata`), as ``ltx info``
    shows them. Stream ``kind``: ``image`` (a PNG), ``video`` (with codec, frame_rate, duration_s) or ``frames``
    (a folder written by :func:`write_png_frames`, read through its first frame; ``num_frames`` counts the PNGs).
    A missing or unreadable file is a :class:`MediaError`."""
    path = Path(path)
    target = path / "frame_00000.png" if path.is_dir() else path
    if path.is_dir() and not target.is_file():
        raise MediaError(f"{path}: a folder without frame_00000.png (not written by --frames-dir)")
    record = read_video_metadata(target)
    if target.suffix.lower() == ".png":
        with Image.open(target) as im:
            stream: dict[str, Any] = {"kind": "image", "width": im.width, "height": im.height, "num_frames": 1}
        if target != path:
            stream.update(kind="frames", num_frames=len(list(path.glob("frame_*.png"))))
        return stream, record
    try:
        with av.open(os.fspath(target)) as container:
            if not container.streams.video:
                raise MediaError(f"{target}: contains no video stream")
            codec = container.streams.video[0].codec_context
            name, width, height = codec.name, codec.width, codec.height
            duration = float(container.duration / 1_000_000) if container.duration else None
    except av.error.FFmpegError as e:
        raise MediaError(f"{target}: cannot open video: {_one_line(e)}") from None
    rate = video_frame_rate(target)
    fps: float | int = int(rate) if rate.denominator == 1 else round(float(rate), 6)
    stream = {"kind": "video", "codec": name, "width": width, "height": height,
              "num_frames": media_num_frames(target), "frame_rate": fps, "duration_s": duration}
    return stream, record


def _save_png(target: Path, frame: torch.Tensor, quantize: Quantize, comment: str | None) -> None:
    info = None
    if comment is not None:
        info = PngInfo()
        info.add_itxt("comment", comment)  # iTXt: UTF-8
    Image.fromarray(to_uint8(frame, quantize).numpy()).save(target, format="PNG", pnginfo=info)


def write_image(
    path: PathLike,
    frame: torch.Tensor,
    *,
    metadata: Mapping[str, Any] | None = None,
    quantize: Quantize = "round",
    overwrite: bool = False,
) -> Path:
    """Writes one frame ``[H, W, 3]`` (or ``[1, H, W, 3]``) in [0, 1] as a lossless PNG, atomically, with the
    JSON record in an iTXt ``comment`` chunk. Same errors as :func:`write_video`."""
    if frame.ndim == 4 and frame.shape[0] == 1:
        frame = frame[0]
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frame must be [H, W, 3], got {tuple(frame.shape)}")
    comment = _record_json(metadata)
    final = Path(path)
    with atomic_output(final, overwrite=overwrite) as temp:
        _save_png(temp, frame, quantize, comment)
    return final


def _is_frames_folder(folder: Path) -> bool:
    return all(entry.is_file() and entry.name.startswith("frame_") and entry.suffix == ".png"
               for entry in folder.iterdir())


def write_png_frames(
    folder: PathLike,
    frames: torch.Tensor | Iterable[torch.Tensor],
    *,
    metadata: Mapping[str, Any] | None = None,
    quantize: Quantize = "round",
    overwrite: bool = False,
) -> list[Path]:
    """Writes ``frame_00000.png``, ``frame_00001.png``, ... (lossless, full size, odd sizes kept) into
    ``folder``, atomically: the frames go into a hidden temporary folder that is renamed to ``folder`` at the
    end. ``overwrite=True`` replaces an existing folder only if it holds nothing but ``frame_*.png`` files
    (so a mistyped path cannot wipe unrelated files). Returns the frame paths."""
    final = Path(folder)
    if overwrite and final.is_dir() and not _is_frames_folder(final):
        raise MediaError(f"cannot write {final}: the folder holds files other than frame_*.png; not replacing it")
    comment = _record_json(metadata)
    names: list[str] = []
    with atomic_output(final, overwrite=overwrite, directory=True) as temp:
        for index, frame in enumerate(_iter_frames(frames)):
            name = f"frame_{index:05d}.png"
            _save_png(temp / name, frame, quantize, comment)
            names.append(name)
        if not names:
            raise ValueError("no frames to write")
    return [final / name for name in names]
