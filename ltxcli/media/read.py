"""Reading media: images and videos as float32 ``[F, H, W, 3]`` in ``[0, 1]``.

:func:`load_image`, :func:`load_video`, :func:`load_media` return float32 ``[F, H, W, 3]`` in ``[0, 1]`` (8-bit
sources are exactly ``uint8 / 255``); :func:`read_media` decodes a file once (:class:`DecodedMedia`, uint8 where
the source is 8-bit). Every problem with a file (missing, empty, truncated, not an image or video, too large) is a
one-line :class:`MediaError` naming the file. The official conditioning preprocessing is
:mod:`ltxcli.media.prepare`.
"""

from __future__ import annotations

import functools
import itertools
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..formatting import shell_word
from .errors import MediaError, check_regular_file, ffmpeg_problem, ffmpeg_reason, one_line

PathLike = str | os.PathLike[str]

#: Largest image (width x height) :func:`load_image` decodes unless told otherwise. 100 MP is above any camera
#: or generated frame and far below what would exhaust memory (100 MP as float32 RGB is 1.2 GB). Pillow itself
#: refuses anything above ``2 * PIL.Image.MAX_IMAGE_PIXELS`` (about 179 MP) before we can look at it.
MAX_IMAGE_PIXELS = 100_000_000

#: Suffixes :func:`load_media` reads as video without trying Pillow first (the official code knows the first
#: four). Anything else is tried as an image, then as a video.
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"})

# --------------------------------------------------------------------------------------------------------------
# Reading images
# --------------------------------------------------------------------------------------------------------------

#: Formats Pillow recognises but cannot decode ("identify-only" in its documentation). A raw MPEG-1/2 stream
#: (``.m1v``, ``.m2v``, some ``.mpg``) is one: it is a video for FFmpeg, not a damaged image.
IDENTIFY_ONLY_FORMATS = frozenset({"BUFR", "GRIB", "HDF5", "MPEG"})
_WARNED: set[tuple[str, int, int, int]] = set()  # truncated files warned of (_note_truncated): once each


class _UnidentifiedMedia(MediaError):
    """Pillow (or FFmpeg) does not recognise the file at all, as opposed to a damaged file it recognised."""


class _NoFrameDecoded(MediaError):
    """FFmpeg found no frame in the file (its probe ran out of data, or the first packet did not decode): for a
    file Pillow did not recognise either (text named .png, for which FFmpeg picks a demuxer by the suffix), it is
    no media at all."""


def _open_pil(path: Path, max_pixels: int | None) -> Image.Image:
    """Decodes ``path`` fully (the file is closed on return); size checked before any pixel is decoded."""
    check_regular_file(path, "an image")
    with warnings.catch_warnings():
        # Pillow warns above MAX_IMAGE_PIXELS (89 MP); our own limit below is the one that applies.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise MediaError(f"{path}: refusing to decode: {one_line(exc)}") from None
        except UnidentifiedImageError:
            raise _UnidentifiedMedia(f"{path}: not an image format Pillow can read") from None
        except OSError as exc:
            raise MediaError(f"{path}: cannot open: {exc.strerror or one_line(exc)}") from None
        with image:
            if image.format in IDENTIFY_ONLY_FORMATS:
                raise _UnidentifiedMedia(f"{path}: not an image format Pillow can read")
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise MediaError(
                    f"{path}: image is {width}x{height} = {width * height:,} pixels, above the limit of "
                    f"{max_pixels:,} pixels"
                )
            try:
                image.load()
            except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, ... on damaged data
                raise MediaError(f"{path}: damaged or truncated image: {one_line(exc)}") from None
            # The orientation transpose needs the EXIF block, which some formats read lazily from the file.
            return ImageOps.exif_transpose(image)


def _has_alpha(image: Image.Image) -> bool:
    bands = image.getbands()
    return "A" in bands or "a" in bands or "transparency" in image.info


def _pil_to_rgb_array(image: Image.Image, background: tuple[float, float, float] | None, name: str,
                      keep_uint8: bool = False) -> np.ndarray:
    """PIL image of any mode -> float32 ``[H, W, 3]`` in [0, 1] (8-bit data exactly ``uint8 / 255``);
    ``keep_uint8``: 8-bit data without transparency stay uint8 ``[H, W, 3]`` (a quarter of the memory)."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grey (PNG/TIFF). Pillow's own convert("RGB") clips these at 255 (a white picture); scale the
        # full 16-bit range instead. 32-bit "I" data are taken as 16-bit samples, clipped to [0, 65535].
        samples = np.asarray(image)
        grey = np.clip(samples.astype(np.float32), 0.0, 65535.0) / np.float32(65535.0)
        rgb = np.repeat(grey[..., None], 3, axis=-1)
        key = image.info.get("transparency")
        if background is not None and isinstance(key, int):  # a PNG tRNS key: those pixels are transparent
            rgb[samples == key] = np.asarray(background, dtype=np.float32)
        return rgb
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
        raise MediaError(f"{name}: unsupported image mode {mode!r}: {one_line(exc)}") from None
    if keep_uint8:
        return rgb if rgb.flags.writeable else rgb.copy()  # torch.from_numpy wants a writable array
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
            raise MediaError(f"{name}: damaged or truncated image: {one_line(exc)}") from None
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
    check_regular_file(path, "a video")
    try:
        container = av.open(os.fspath(path))
    except av.error.InvalidDataError:
        raise _UnidentifiedMedia(f"{path}: not a video format FFmpeg can read") from None
    except av.error.EOFError as exc:  # the probe ran out of data: a cut file, or no video at all
        raise _NoFrameDecoded(f"{path}: {ffmpeg_problem(exc)}") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"{path}: {ffmpeg_problem(exc)}") from None
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


def _decoded(container: Any, stream: Any) -> Any:
    """The frames of ``stream`` up to the first packet FFmpeg cannot decode (the cut-off end of a truncated file).
    Frame-threaded decoding (several CPUs) stops there quietly; one thread raised the error, and the same file was
    read on one machine and refused on another. Before any frame the error stands (nothing to read: say why)."""
    decoded = 0
    try:
        for frame in (f for packet in _demux(container, stream) for f in packet.decode()):  # container.decode's loop
            decoded += 1
            yield frame
    except av.error.InvalidDataError:
        if decoded == 0:
            raise


def _demux(container: Any, stream: Any) -> Iterator[Any]:
    """``container.demux(stream)``. A stream FFmpeg finds partway through the file (a damaged MPEG-TS: a packet of
    an unlisted PID) failed PyAV's lookup of its packets' streams with a bare IndexError (`ltx info`: "internal
    error"): the file's MediaError now, with a way out."""
    try:
        yield from container.demux(stream)
    except IndexError:
        path = Path(container.name)
        raise MediaError(f"{path}: a new stream starts partway through the file (damaged?): keep its first video "
                         f"stream, e.g. ffmpeg -i {shell_word(path)} -map 0:v:0 {shell_word(path.with_name(f'{path.stem}-v0.mp4'))}") from None


def _decode_video(path: Path, max_frames: int | None, max_pixels: int | None
                  ) -> tuple[np.ndarray, int, tuple[Fraction, ...]]:
    """The first ``max_frames`` frames (all without a limit) as uint8 ``[F, H, W, 3]``, the number of frames
    the file lists (its index, else the frames decoded; never fewer than decoded) and the decoded frames'
    timestamps in seconds (those that have one): one pass over the file. Decoding stops quietly where FFmpeg stops (a truncated file); an FFmpeg error is a
    :class:`MediaError`."""
    frames: list[np.ndarray] = []
    times: list[Fraction] = []
    listed = 0

    def keep(rgb: np.ndarray, frame: Any, stream: Any) -> None:
        nonlocal listed
        frames.append(rgb)
        if frame.pts is not None and frame.time_base is not None:
            times.append(frame.pts * frame.time_base)
        listed = int(stream.frames)

    for _ in _rgb_frames(path, max_frames, max_pixels, keep):
        pass
    return np.stack(frames), max(listed, len(frames)), tuple(times)  # no index: the frames that decoded


def iter_video(path: PathLike, max_frames: int | None = None, *, max_pixels: int | None = MAX_IMAGE_PIXELS
               ) -> Iterator[np.ndarray]:
    """:func:`load_video`'s frames one at a time, uint8 ``[H, W, 3]``, decoded as they are asked for (PyAV decodes
    in order): a long video read without holding it whole (:func:`ltxcli.conditions.prepared_video_chunks`). The
    same pixels and checks as :func:`read_video` (each raised when its frame comes)."""
    path = Path(path)
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    yield from _rgb_frames(path, max_frames, max_pixels)


@dataclass(frozen=True)
class VideoStream:
    """A video file standing in for its float frames ``[F, H, W, 3]`` in [0, 1] (``shape``; ``top``/``left``: the
    crop of the file's frames they are), decoded in pieces as they are asked for: ``ltx vae encode``
    (:meth:`ltxcli.autoencode.VideoAutoencoder.encode`) holds one chunk's frames on the host, not the clip's."""

    path: Path
    shape: tuple[int, int, int, int]
    top: int = 0
    left: int = 0

    def pieces(self, sizes: list[int]) -> Iterator[torch.Tensor]:
        """The frames ``[n, H, W, 3]`` for each ``n`` of ``sizes`` (sum ``F``): load_media's ``uint8 / 255``, cropped."""
        (f, h, w, _), (top, left), done = self.shape, (self.top, self.left), 0
        frames = iter_video(self.path, f)
        for n in sizes:
            rgb = [a[top : top + h, left : left + w] for a in itertools.islice(frames, n)]  # uint8 [H, W, 3]
            if len(rgb) < n:
                k = done + len(rgb)  # (counted up front by whole packets, not decoded: ltxcli.autoencode.read_video)
                raise MediaError(f"{self.path}: decoding stopped after {k} of {f} frames (damaged or truncated?): "
                                 f"--max-frames {k} encodes those")
            done += n
            yield torch.from_numpy(np.stack(rgb)).float().div_(255.0)  # (rgb, a quarter of it, held meanwhile)


def _rgb_frames(path: Path, max_frames: int | None, max_pixels: int | None,
                keep: Callable[[np.ndarray, Any, Any], None] | None = None) -> Iterator[np.ndarray]:
    """The first ``max_frames`` frames as uint8 ``[H, W, 3]`` one by one (``keep(rgb, frame, stream)`` on each);
    decoding stops quietly where FFmpeg stops (a truncated file); an FFmpeg error is a :class:`MediaError`."""
    decoded, shape = 0, None
    with _open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame/slice threads: faster, same pixels
        try:
            for frame in _decoded(container, stream):
                if max_pixels is not None and frame.width * frame.height > max_pixels:
                    raise MediaError(
                        f"{path}: frames are {frame.width}x{frame.height}, above the limit of {max_pixels:,} pixels"
                    )
                rgb = _frame_to_rgb(frame)
                if shape is not None and rgb.shape != shape:
                    raise _size_change(path, shape, rgb.shape, decoded)
                shape, decoded = rgb.shape, decoded + 1
                if keep is not None:
                    keep(rgb, frame, stream)
                yield rgb
                if max_frames is not None and decoded >= max_frames:
                    break
        except av.error.FFmpegError as exc:
            kind = MediaError if decoded else _NoFrameDecoded
            raise kind(f"{path}: {ffmpeg_problem(exc, decoded)}") from None
    if not decoded:
        raise _NoFrameDecoded(f"{path}: video has no decodable frames")


def _size_change(path: Path, before: tuple[int, ...], after: tuple[int, ...], at: int) -> MediaError:
    """A video whose frames ``[H, W, ...]`` change size from ``before`` to ``after`` at frame ``at``: refused, with
    the ways out. The frames before it serve in 8k + 1 (the model's, and v2v's padding reads the file's next ones:
    30 asked of a file changing at 31 read 33), so "fewer frames" names the largest such count that stops short."""
    (h, w), usable = before[:2], (at - 1) // 8 * 8 + 1
    return MediaError(f"{path}: frame size changes from {w}x{h} to {after[1]}x{after[0]} at frame {at}: use at most "
                      f"its first {f'{usable} frames' if usable > 1 else 'frame'}, or re-encode it at one size, e.g. ffmpeg -i {shell_word(path)} -vf "
                      f"scale={w}:{h},setsar=1 {shell_word(path.with_name(f'{path.stem}-{w}x{h}.mp4'))}")


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
    return read_video(path, max_frames, max_pixels=max_pixels).pixels()


def read_video(path: PathLike, max_frames: int | None = None, *, max_pixels: int | None = MAX_IMAGE_PIXELS
               ) -> DecodedMedia:
    """:func:`load_video`'s decoding kept as uint8 (a :class:`DecodedMedia`, a quarter of float32), to be used
    more than once: its ``pixels()`` are what :func:`load_video` returns."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    frames, listed, times = _decode_video(Path(path), max_frames, max_pixels)
    return DecodedMedia(Path(path), torch.from_numpy(frames), listed, times)


@dataclass(frozen=True, eq=False)
class DecodedMedia:
    """An image or video file decoded once (:func:`read_media`), standing in for the file: :func:`load_media`
    returns its pixels instead of reading the file again, and ``os.fspath`` gives the file's path (for messages
    and the generation record). A condition checked before the model loads keeps its pixels this way, so the
    file is not read a second time when the pipeline preprocesses it."""

    path: Path
    frames: torch.Tensor  # uint8 [F, H, W, 3] (a quarter of float32); a picture not of 8 bits: float32 [1, H, W, 3]
    listed: int  # frames the file lists: more than len(frames) when only the first ones were asked for or decode
    times: tuple[Fraction, ...] = ()  # a video's decoded frames' timestamps, seconds (check_constant_rate's)

    def __fspath__(self) -> str:
        return os.fspath(self.path)

    def __str__(self) -> str:
        return os.fspath(self.path)

    def pixels(self, max_frames: int | None = None) -> torch.Tensor:
        """float32 ``[F, H, W, 3]`` in [0, 1], exactly what :func:`load_media` gives for the file."""
        frames = self.frames if max_frames is None else self.frames[:max_frames]
        return frames.float().div_(255.0) if frames.dtype == torch.uint8 else frames


def read_media(path: PathLike, *, max_frames: int | None = None, max_pixels: int | None = MAX_IMAGE_PIXELS,
               background: tuple[float, float, float] | None = (0.0, 0.0, 0.0)) -> DecodedMedia:
    """A file decoded once, as :func:`load_media` would (an image first unless the suffix says video): an image
    gives its one frame; a video its first ``max_frames`` frames (decoding stops early) and the count it lists."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        frames, listed, times = _decode_video(path, max_frames, max_pixels)
        return DecodedMedia(path, torch.from_numpy(frames), listed, times)
    try:
        # an 8-bit picture stays uint8: DecodedMedia.pixels() gives load_image's floats (uint8 / 255, the same
        # bits), preprocess_condition_frames takes the codes as they are (an 8000x8000 picture: 192 MB, not 768)
        image = _pil_to_rgb_array(_open_pil(path, max_pixels), background, str(path), keep_uint8=True)
        return DecodedMedia(path, torch.from_numpy(image).unsqueeze(0), 1)
    except _UnidentifiedMedia:
        pass
    frames, listed, times = _decode_unidentified_image(path, max_frames, max_pixels)
    return DecodedMedia(path, torch.from_numpy(frames), listed, times)


def _decode_unidentified_image(path: Path, max_frames: int | None, max_pixels: int | None
                               ) -> tuple[np.ndarray, int, tuple[Fraction, ...]]:
    """:func:`_decode_video` for a file Pillow did not recognise: one FFmpeg cannot open, or opens and decodes
    no frame of, is neither kind of media (said so, not as a failed video decoding)."""
    try:
        return _decode_video(path, max_frames, max_pixels)
    except (_UnidentifiedMedia, _NoFrameDecoded) as exc:
        if sniff_media(path) == "a video":  # a video container's bytes (a cut .ts): what is wrong with it, not "no media"
            raise MediaError(str(exc)) from None
        raise MediaError(f"{path}: neither an image Pillow can read nor a video FFmpeg can read") from None


def video_frame_rate(path: PathLike) -> Fraction:
    """The frame rate of the first video stream as an exact fraction (e.g. ``Fraction(30000, 1001)``)."""
    path = Path(path)
    with _open_video(path) as container:
        stream = container.streams.video[0]
        for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
            if rate:
                return Fraction(rate.numerator, rate.denominator)
    raise MediaError(f"{path}: video has no frame rate")


def check_constant_rate(path: PathLike, what: str = "this", frames: int | None = None) -> None:
    """Refuse (:class:`MediaError`, one line with the ffmpeg command that fixes it) a video whose frames are not
    evenly spaced in time: an interval between two frames' timestamps (packets, in presentation order; nothing
    is decoded) off the median one by more than half of it (a hold, a dropped frame, a change of rate; a
    timestamp's rounding jitter passes). ltx makes constant-rate videos and takes frames by their index, so a
    variable-rate input, played at its average rate, would lose its timing. ``what`` names the use
    (``"ltx extend"``); ``frames``: only the first ones are used (a condition trimmed to the output), so only
    their intervals count. A :class:`DecodedMedia` is judged by its decoded frames' times (the file not read again)."""
    if isinstance(path, DecodedMedia):
        times, path = sorted(path.times), path.path
    else:
        path = Path(path)
        if path.suffix.lower() not in VIDEO_SUFFIXES and media_num_frames(path) == 1:
            return  # an image
        with _open_video(path) as container:
            stream = container.streams.video[0]
            base = stream.time_base
            if base is None:
                return
            try:
                times = sorted(p.pts * base for p in _demux(container, stream) if p.pts is not None)
                if int(stream.frames) > len(times):  # truncated: a cut-off last packet skips the lost B-frames
                    with _open_video(path) as again:  # the frames that decode (no RGB), as a DecodedMedia's
                        times = sorted(f.pts * f.time_base for f in _decoded(again, again.streams.video[0])
                                       if f.pts is not None and f.time_base is not None)
            except av.error.FFmpegError:
                return  # a damaged file: decoding says what is wrong with it
    steps = sorted(b - a for a, b in itertools.pairwise(times[:frames]))
    if len(steps) < 2:
        return
    median = steps[len(steps) // 2]
    if median > 0 and all(abs(step - median) * 2 <= median for step in steps):
        return
    shortest, typical, longest = (float(step) for step in (steps[0], median, steps[-1]))
    fps = max(1, round(1 / typical)) if typical > 0 else 24  # the rate most frames run at: every frame kept there
    raise MediaError(f"{path}: variable frame rate (frames {shortest * 1000:.0f} to {longest * 1000:.0f} ms apart): "
                     f"{what} needs a constant rate: convert it first, e.g. ffmpeg -i {shell_word(path)} -vf fps={fps} "
                     f"{shell_word(path.with_name(f'{path.stem}-cfr.mp4'))}")


def media_num_frames(path: PathLike) -> int:
    """Number of frames a file holds: 1 for an image, the frame count of the first video stream otherwise
    (container index when present, else a count of demuxed packets; nothing is decoded)."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        check_regular_file(path, "a media file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                with Image.open(path) as image:
                    if image.format not in IDENTIFY_ONLY_FORMATS:
                        return 1
            except (UnidentifiedImageError, Image.DecompressionBombError):
                pass
            except OSError as exc:
                raise MediaError(f"{path}: cannot open: {exc.strerror or one_line(exc)}") from None
    with _open_video(path) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        try:
            count = sum(1 for packet in _demux(container, stream) if packet.size)
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: cannot read video packets: {ffmpeg_reason(exc)}") from None
    if count == 0:
        raise MediaError(f"{path}: video has no frames")
    return count


def is_video_file(path: PathLike) -> bool:
    """``path`` is read frame by frame (:func:`iter_video`, :class:`VideoStream`): named as a video (a suffix in
    :data:`VIDEO_SUFFIXES`), or a file of more than one frame (a .ts, .mpg, .flv: its packets counted, not
    decoded). An image, a one-frame file, or one neither Pillow nor FFmpeg reads (:func:`read_media` says so):
    False, read whole."""
    if Path(path).suffix.lower() in VIDEO_SUFFIXES:
        return True
    try:
        return media_num_frames(path) > 1
    except MediaError:
        return False


def sniff_media(path: PathLike) -> str | None:
    """``"a video"`` when the first bytes of ``path`` are a video container's (MP4/MOV, Matroska/WebM, AVI, MPEG-TS
    or -PS, FLV), ``"an image"`` when Pillow knows the file; None otherwise (unreadable too). Nothing is decoded:
    it names what a file given where another kind was expected (``ltx vae decode clip.mp4``) is."""
    try:
        with open(path, "rb") as f:
            head = f.read(189)  # an MPEG-TS packet is 188 bytes, each starting 0x47
    except OSError:
        return None
    if (head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide") or head[:4] == b"\x1a\x45\xdf\xa3"
            or (head[:4] == b"RIFF" and head[8:12] == b"AVI ") or head[:4] == b"\x00\x00\x01\xba"
            or head[:3] == b"FLV" or (len(head) == 189 and head[0] == head[188] == 0x47)):
        return "a video"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(path) as image:
                return "an image" if image.format not in IDENTIFY_ONLY_FORMATS else None
        except (OSError, Image.DecompressionBombError):
            return None


def source_frame_count(path: PathLike | DecodedMedia, at_most: int | None = None, *, quick: bool = False) -> int:
    """Frames of a video-to-video, extension or control input: those that decode (decoded, not converted; up to ``at_most``,
    the frames a request asks for), with a warning when the file lists more (a truncated file, whose index
    outlives its data). An image counts 1;
    an animated one (GIF, APNG, WebP, multi-page TIFF) is refused, as ltx reads only its first frame.
    ``quick`` (``ltx info``): a file holding every packet it lists, each whole, counts them undecoded (decoding
    a minute of video takes seconds); one missing some (a cut-off download or recording) is decoded as above. A
    video's :class:`DecodedMedia` (decoded whole, or up to ``at_most``) is counted by its frames, not decoded again."""
    if isinstance(path, DecodedMedia) and path.path.suffix.lower() in VIDEO_SUFFIXES:
        decoded = len(path.frames) if at_most is None else min(len(path.frames), at_most)
        _note_truncated(path.path, media_num_frames(path.path), decoded, at_most)
        return decoded
    path = Path(path)
    listed = media_num_frames(path)
    if listed == 1 and path.suffix.lower() not in VIDEO_SUFFIXES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                with Image.open(path) as image:
                    animated = int(getattr(image, "n_frames", 1))
            except (OSError, Image.DecompressionBombError):  # a 1-frame video, or an image too large to matter here
                animated = 1
        if animated > 1:
            raise MediaError(f"{path}: an animated image ({animated} frames), read as its first frame only: "
                             f"convert it to a video first (e.g. ffmpeg -i {shell_word(path)} {shell_word(path.with_name(f'{path.stem}.mp4'))})")
        return 1
    stat = path.stat()
    if quick and _whole_packets(path, stat.st_size) == listed:
        return listed if at_most is None else min(listed, at_most)
    return _decodable_frames(os.fspath(path), listed, at_most, stat.st_mtime_ns, stat.st_size, not quick)


def _whole_packets(path: Path, size: int) -> int | None:
    """The video packets whose bytes all lie in the file (``size`` bytes; nothing decoded), None when demuxing
    fails. A truncated file's index lists packets past its end (or the last one cut): fewer than it lists."""
    with _open_video(path) as container:
        stream = container.streams.video[0]
        try:  # pos is -1 where the container does not say: unconfirmed, so not counted; nor is a packet an
            # edit list discards (the decoder drops its frame)
            return sum(1 for p in _demux(container, stream) if p.size and not (p.is_corrupt or p.is_discard)
                       and p.pos is not None and 0 <= p.pos <= size - p.size)
        except av.error.FFmpegError:
            return None


@functools.lru_cache(maxsize=8)
def _decodable_frames(name: str, listed: int, at_most: int | None, _mtime_ns: int, _size: int, one_size: bool) -> int:
    # Cached by the file's identity: an extension counts its input twice (request defaults, then the run), and
    # should decode it, and warn, once. one_size: a change of frame size refused (the frames are to be used; `ltx
    # info` only counts them)
    path, decoded, size = Path(name), 0, None
    with _open_video(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for frame in _decoded(container, stream):
                # refused now, before any model work: a streamed read found it only when it got there
                if one_size and size is not None and (frame.height, frame.width) != size:
                    raise _size_change(path, size, (frame.height, frame.width), decoded)
                size, decoded = (frame.height, frame.width), decoded + 1
                if decoded == at_most:  # the first minute of a long video is not decoded to the end
                    break
        except av.error.FFmpegError as exc:
            raise MediaError(f"{path}: {ffmpeg_problem(exc, decoded)}") from None
    if decoded == 0:
        raise MediaError(f"{path}: video has no decodable frames")
    _note_truncated(path, listed, decoded, at_most)
    return decoded


def _note_truncated(path: Path, listed: int, decoded: int, at_most: int | None) -> None:
    st = path.stat()  # one warning a file (real path, mtime, size, frames decoded), as _decodable_frames' cache gives
    if decoded < (listed if at_most is None else min(listed, at_most)) and \
            (key := (os.path.realpath(path), st.st_mtime_ns, st.st_size, decoded)) not in _WARNED:
        _WARNED.add(key)
        warnings.warn(f"{path}: the file lists {listed} frames but only {decoded} can be decoded (truncated or "
                      f"damaged?); using those {decoded}", stacklevel=2)


def _check_frames_tensor(frames: torch.Tensor, what: str, keep_uint8: bool = False) -> torch.Tensor:
    if frames.ndim == 3:
        frames = frames.unsqueeze(0)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise MediaError(f"{what}: expected a tensor [F, H, W, 3] (or [H, W, 3]), got shape {tuple(frames.shape)}")
    if frames.dtype == torch.uint8:
        return frames if keep_uint8 else frames.float().div(255.0)
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

    A :class:`DecodedMedia` gives its pixels (the file is not read again). Tensors ``[F, H, W, 3]`` or ``[H, W, 3]`` (float in [0, 1], or uint8) pass through after the checks; PIL
    images and image files give ``F = 1``; files with a suffix in :data:`VIDEO_SUFFIXES` are decoded as video;
    other files are tried as an image first, then as a video. ``max_frames`` trims videos.
    """
    if isinstance(source, DecodedMedia):
        return source.pixels(max_frames)
    if isinstance(source, torch.Tensor):
        frames = _check_frames_tensor(source, "media tensor")
        return frames if max_frames is None else frames[:max_frames]
    if isinstance(source, Image.Image):
        return load_image(source, max_pixels=max_pixels, background=background)
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    return read_media(source, max_frames=max_frames, max_pixels=max_pixels, background=background).pixels()


__all__ = [
    "MAX_IMAGE_PIXELS", "VIDEO_SUFFIXES", "DecodedMedia", "MediaError", "VideoStream", "check_constant_rate",
    "is_video_file", "iter_video", "load_image", "load_media", "load_video", "media_num_frames", "read_media", "read_video", "sniff_media", "source_frame_count",
    "video_frame_rate",
]
