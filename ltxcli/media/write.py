"""Writing media: atomic MP4 / PNG outputs that carry the generation record, and streaming.

:func:`write_video` (H.264 MP4, exact frame rate, JSON record in the ``comment`` tag), :func:`write_image` /
:func:`write_png_frames` (lossless PNG) all go through :func:`atomic_output`: they write to a hidden temporary
name beside the target and rename it into place only when everything succeeded, so an interrupted or failed
write never leaves a half-written file under the final name.

Containers (:data:`VIDEO_FORMATS`, chosen by the output's suffix): ``.mp4``, ``.mov`` and ``.mkv`` hold H.264
(``crf`` 0-51, x264 ``preset``), ``.webm`` holds VP9 (``crf`` 0-63) where this PyAV's FFmpeg has libvpx-vp9.

Streaming: the writers take an iterable of frames ``[H, W, 3]`` or of chunks ``[n, H, W, 3]`` (float in [0, 1]
or uint8) and consume it one item at a time, so a generator that decodes and converts a few frames at a time
(:meth:`ltxcli.result.GenerationResult.frames`) never needs the whole video in memory.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import secrets
import shutil
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from ..formatting import escape_surrogates, number_text
from ..naming import fps_number
from ..paths import user_path
from ..sizes import FRAME_RATES, is_frame_rate
from .errors import MediaError, check_regular_file, ffmpeg_problem, one_line
from .read import IDENTIFY_ONLY_FORMATS, VIDEO_SUFFIXES, source_frame_count, video_frame_rate

PathLike = str | os.PathLike[str]
Quantize = Literal["round", "truncate"]


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
    reason = _ERRNO_REASONS.get(exc.errno or 0) or exc.strerror or one_line(exc)
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


#: The temporary outputs of the :func:`atomic_output` blocks in progress, for :func:`remove_partial_outputs`.
_PARTIAL: set[Path] = set()


def remove_partial_outputs() -> None:
    """Remove the temporary files and folders of every :func:`atomic_output` block still in progress: for a
    process about to exit without unwinding them (:func:`ltxcli.parallel.launch.terminate_like_ctrl_c`)."""
    for temp in list(_PARTIAL):
        _remove_quietly(temp)
    _PARTIAL.clear()


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
    _PARTIAL.add(temp)
    try:
        yield temp
        if not directory:
            # a writer may have replaced the file with its own private one (safetensors: 0600): give it the
            # permissions of any new file here (0666 less the umask), as the MP4s get
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(temp, 0o666 & ~mask)
            _fsync(temp)
        _commit(temp, final, overwrite, directory)
    except BaseException as exc:
        _remove_quietly(temp)
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise _write_error(final, exc) from exc
        raise
    finally:
        _PARTIAL.discard(temp)


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
    if not is_frame_rate(rate):  # 0.0004 rounds to 0, 0.0006 to 1/1001: below MIN_FRAME_RATE, as 1e-6 as a fraction
        raise ValueError(f"frame rate must be in {FRAME_RATES}, got {number_text(fps)}")
    return rate


def _iter_frames(frames: torch.Tensor | Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    if isinstance(frames, torch.Tensor):
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise ValueError(f"frames must be [F, H, W, 3] with F >= 1, got {tuple(frames.shape)}")
        yield from frames
        return
    for item in frames:
        if item.ndim == 4 and item.shape[-1] == 3:  # a chunk [n, H, W, 3] of a stream
            yield from item
            continue
        if item.ndim != 3 or item.shape[-1] != 3:
            raise ValueError(f"each frame must be [H, W, 3] (or a chunk [n, H, W, 3]), got {tuple(item.shape)}")
        yield item


def _record_json(metadata: Mapping[str, Any] | None) -> str | None:
    if metadata is None:
        return None
    try:
        # a path's non-UTF-8 byte as its \udcXX escape: the tag is UTF-8 text (FFmpeg's, PNG's iTXt)
        return escape_surrogates(json.dumps(dict(metadata), separators=(",", ":"), ensure_ascii=False, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata must be JSON-serialisable: {exc}") from None


#: Video output suffix -> (FFmpeg container, encoder, highest CRF). H.264 everywhere but WebM (VP9).
VIDEO_FORMATS: dict[str, tuple[str, str, int]] = {
    ".mp4": ("mp4", "libx264", 51), ".mov": ("mov", "libx264", 51), ".mkv": ("matroska", "libx264", 51),
    ".webm": ("webm", "libvpx-vp9", 63),
}
#: x264's speed/size presets (slower: smaller file at the same CRF).
H264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
DEFAULT_CRF = 18
DEFAULT_PRESET = "medium"  # x264's own default


def video_format(path: PathLike, crf: int = DEFAULT_CRF, preset: str | None = None) -> tuple[str, str]:
    """``(container, encoder)`` for a video written to ``path`` with ``crf`` and ``preset``; ``ValueError`` (one
    line, naming the fix) for an unknown suffix, a CRF out of range, a preset that is not x264's or is given for
    VP9, or an encoder this PyAV's FFmpeg lacks. Checked before any work by the CLI and by :func:`write_video`."""
    suffix = Path(path).suffix.lower()
    if suffix not in VIDEO_FORMATS:
        raise ValueError(f"{path}: videos are written as {', '.join(VIDEO_FORMATS)} (or PNG frames with --frames-dir)")
    container, encoder, top = VIDEO_FORMATS[suffix]
    if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= top:
        raise ValueError(f"crf={crf} must be an integer in 0..{top} for {suffix} (lower: better, larger; 18 is "
                         "visually lossless)")
    if preset is not None and encoder != "libx264":
        raise ValueError(f"preset={preset} applies to H.264 (.mp4, .mov, .mkv), not to {suffix} (VP9)")
    if preset is not None and preset not in H264_PRESETS:
        raise ValueError(f"preset={preset!r} is not an x264 preset: use one of {', '.join(H264_PRESETS)}")
    try:
        av.codec.Codec(encoder, "w")
    except Exception:  # PyAV raises UnknownCodecError (a ValueError) or a plain FFmpeg error
        raise ValueError(f"{suffix} needs the {encoder} encoder, which this PyAV's FFmpeg lacks: write .mp4, .mov "
                         "or .mkv (H.264)") from None
    return container, encoder


#: x264 uses its AVX-512 code where the CPU has these five (x264's cpu.c); every CPU that has them has the rest
#: of :data:`_X264_NO_AVX512`, what x264 detects on such a CPU but AVX-512 (Cache64: its 64-byte cache lines).
_AVX512_FOR_X264 = {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}
_X264_NO_AVX512 = "MMX2,SSE2,SSE2Fast,SSE3,SSSE3,SSE4.1,SSE4.2,AVX,FMA3,BMI1,BMI2,AVX2,LZCNT,Cache64"


@functools.cache
def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1] for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def x264_asm(flags: str | None = None) -> str | None:
    """x264's ``asm`` (the instruction sets it may use) for this CPU (``flags``: ``/proc/cpuinfo``'s): on a CPU
    with the AVX-512 that x264 uses, everything it detects there but AVX-512; None elsewhere (x264's own
    detection). x264's AVX-512 code made each encode of the same frames a different file on such a CPU (one
    41-frame clip encoded 12 times: 12 different files, with one thread too); without it they are one file, at
    the same speed within the noise (``benchmarks/x264_avx512.py``, BENCHMARKS.md)."""
    have = set((_cpu_flags() if flags is None else flags).split())
    return _X264_NO_AVX512 if have >= _AVX512_FOR_X264 else None


def write_video(
    path: PathLike,
    frames: torch.Tensor | Iterable[torch.Tensor],
    fps: float | Fraction,
    *,
    metadata: Mapping[str, Any] | None = None,
    crf: int = DEFAULT_CRF,
    preset: str | None = None,
    quantize: Quantize = "round",
    overwrite: bool = False,
) -> Path:
    """Writes a video (yuv420p, BT.709 limited range, tagged) atomically and returns its path: H.264 in
    ``.mp4`` / ``.mov`` / ``.mkv``, VP9 in ``.webm`` (:func:`video_format` checks the suffix, ``crf`` and
    ``preset``; x264's default preset is "medium").

    ``frames``: float ``[F, H, W, 3]`` in [0, 1] (any device; moved to the CPU frame by frame), or an
    iterable of ``[H, W, 3]`` frames or ``[n, H, W, 3]`` chunks (a generator can stream them: only the item
    being encoded is held, e.g. ``GenerationResult.frames()``). Odd heights/widths are **cropped** by one
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
    fmt, encoder = video_format(path, crf, preset)
    if encoder == "libx264":
        options = {"crf": str(crf), "preset": preset or DEFAULT_PRESET}
        asm = x264_asm()
        if asm is not None:
            options["x264-params"] = f"asm={asm}"
    else:  # VP9 in constant-quality mode (b=0), row multithreading, the speed of its "good" deadline at 4
        options = {"crf": str(crf), "b": "0", "row-mt": "1", "deadline": "good", "cpu-used": "4"}
    final = Path(path)
    frame_iter = _iter_frames(frames)
    with atomic_output(final, overwrite=overwrite) as temp:
        _encode(temp, frame_iter, rate, comment, (fmt, encoder, options), quantize, final)
    return final


def _encode(
    temp: Path,
    frames: Iterator[torch.Tensor],
    rate: Fraction,
    comment: str | None,
    codec_spec: tuple[str, str, dict[str, str]],
    quantize: Quantize,
    final: Path,
) -> None:
    from av.video.reformatter import ColorRange, Colorspace, Interpolation

    fmt, encoder, options = codec_spec
    # Accurate rounding in the RGB -> Y'CbCr conversion (the default fast path is biased by about one code).
    flags = Interpolation.BILINEAR | Interpolation.ACCURATE_RND
    # MP4/MOV keep free-form tags only with use_metadata_tags; Matroska/WebM keep them as they are
    movflags = {"movflags": "+use_metadata_tags+faststart"} if fmt in ("mp4", "mov") else {}
    container = av.open(os.fspath(temp), "w", format=fmt, options=movflags)
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
                stream = container.add_stream(encoder, rate=rate, options=options)
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
        check_regular_file(path, "an image")
        try:
            with warnings.catch_warnings():  # a large image's header is read, not its pixels
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as image:
                    text = image.info.get("comment")
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise MediaError(f"{path}: cannot read image: {one_line(exc)}") from None
    else:
        check_regular_file(path, "a video")
        try:
            with av.open(os.fspath(path)) as container:
                # Matroska/WebM hand tag names back in capitals
                text = container.metadata.get("comment", container.metadata.get("COMMENT"))
        except av.error.InvalidDataError:  # its errno is FFmpeg's AVERROR_INVALIDDATA (1094995529): not for users
            raise MediaError(f"{path}: not a video format FFmpeg can read") from None
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(f"{path}: {ffmpeg_problem(exc)}") from None
    if not isinstance(text, str):
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def read_record(path: PathLike) -> dict[str, Any] | None:
    """The ltx generation record of a video, image or ``--frames-dir`` folder (its first frame's); None without one
    (or with another program's JSON comment). A missing or unreadable file is a :class:`MediaError`."""
    path = Path(path)
    target = path / "frame_00000.png" if path.is_dir() else path
    if path.is_dir() and not target.is_file():
        raise MediaError(f"{path}: a folder without frame_00000.png (not written by --frames-dir)")
    record = read_video_metadata(target)
    return record if record is not None and record.get("tool") == "ltxcli" else None


def _image_info(target: Path) -> dict[str, Any] | None:
    """An image's stream facts, at the size ltx reads it (EXIF orientation applied); ``None`` for a file Pillow does
    not know (a video), except a ``.png``. A PNG is verified (every chunk checked, none decoded: a truncated PNG has
    a whole header); another format has its first frame decoded, as FFmpeg did for them (animated WebP, which
    FFmpeg cannot decode, and EXIF-turned photos were its mistakes)."""
    png = target.suffix.lower() == ".png"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if png:
                with Image.open(target) as im:
                    im.verify()  # must come first: the image is unusable after it
            with Image.open(target) as im:
                if im.format in IDENTIFY_ONLY_FORMATS:  # a raw MPEG stream: a video
                    return None
                width, height = im.size
                if im.getexif().get(0x0112) in (5, 6, 7, 8):  # orientations a quarter turn off
                    width, height = height, width
                stream = {"kind": "image", "width": width, "height": height,
                          "num_frames": int(getattr(im, "n_frames", 1))}
                if not png:
                    im.load()
    except UnidentifiedImageError as e:
        if png:
            raise MediaError(f"{target}: cannot read image: {one_line(e)}") from None
        return None
    except Exception as e:  # PIL raises OSError, SyntaxError, struct.error, DecompressionBombError, ...
        raise MediaError(f"{target}: cannot read image: {one_line(e)}") from None
    return stream


def media_info(path: PathLike) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A file's stream facts and its record (:func:`read_video_metadata`), as
    ``ltx info`` shows them. Stream ``kind``: ``image`` (any file Pillow reads), ``video`` (with codec, frame_rate, duration_s) or
    ``frames`` (a folder written by :func:`write_png_frames`, read through its first frame; ``num_frames`` counts
    the PNGs). A video's ``num_frames`` counts the frames that decode, as ``ltx v2v`` and ``ltx extend`` use them,
    with the same warning when the file lists more (a truncated file's index); a file whose listed packets are
    all whole in it is counted by them, undecoded (``source_frame_count(quick=True)``).
    A missing or unreadable file, or one whose first frame does not decode, is a :class:`MediaError`."""
    path = Path(user_path(path))  # `ltx info "~/a.mp4"`: no shell expanded it
    record = read_record(path)
    target = path / "frame_00000.png" if path.is_dir() else path
    stream = None if target.suffix.lower() in VIDEO_SUFFIXES else _image_info(target)
    if stream is not None:
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
            # the header alone passes for text named .jpg ("0x0, 1 frame"): a file that does not decode is refused
            first = next(container.decode(video=0), None)
            if first is None:
                raise MediaError(f"{target}: no frame decodes")
            if round(int(first.rotation or 0) / 90) % 2:  # a phone video on its side: the size ltx reads it at
                width, height = height, width
    except av.error.FFmpegError as e:
        raise MediaError(f"{target}: {ffmpeg_problem(e, 0)}") from None  # (no frame yet: opening or the first)
    fps = fps_number(video_frame_rate(target))  # as every --json shows a rate: 24; 24000/1001 exactly, as a float
    stream = {"kind": "video", "codec": name, "width": width, "height": height,
              "num_frames": source_frame_count(target, quick=True), "frame_rate": fps, "duration_s": duration}
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


__all__ = [
    "DEFAULT_CRF", "DEFAULT_PRESET", "H264_PRESETS", "VIDEO_FORMATS", "MediaError", "Quantize", "atomic_output", "media_info",
    "read_record", "read_video_metadata", "to_uint8", "video_format", "write_image", "write_png_frames", "write_video",
]
