"""The one error type of :mod:`ltxcli.media` and the file checks both its readers and writers use."""

from __future__ import annotations

from pathlib import Path

import av

from .. import formatting


class MediaError(ValueError):
    """A media file that cannot be read or written; the message is one line and names the file."""


def check_regular_file(path: Path, kind: str) -> None:
    """A missing, folder or empty ``path`` as a one-line :class:`MediaError` (``kind``: "an image", ...)."""
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if path.is_dir():
        raise MediaError(f"{path}: is a folder, not {kind}")
    if not path.is_file():  # a FIFO or a device (`cat clip.mp4 | ltx ... /dev/stdin`) has size 0: not "empty"
        raise MediaError(f"{path}: is a pipe or device, not a file: save it to a file and give that")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: file is empty")


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type name when it has none)."""
    return formatting.one_line(str(exc)) or type(exc).__name__


def ffmpeg_problem(exc: BaseException, decoded: int | None = None) -> str:
    """What a PyAV error opening (``decoded`` None) or decoding (after ``decoded`` frames) a video says of the file,
    in words: FFmpeg's error numbers (``[Errno 541478725] End of file``) tell a user nothing to do."""
    if not decoded and isinstance(exc, av.error.EOFError):  # the data end before the first frame's
        return "has no video frames (the file ends before the first one: empty or cut off)"
    if decoded == 0 and isinstance(exc, av.error.InvalidDataError):  # the first packets are cut or corrupt
        return "is damaged or truncated: no frame decodes"
    reason = ffmpeg_reason(exc)
    return f"cannot open video: {reason}" if decoded is None else f"video decoding failed after {decoded} frames: {reason}"


def ffmpeg_reason(exc: BaseException) -> str:
    """A PyAV error's words without its errno and file name (``[Errno 1094995529] Invalid data found when
    processing input: 'x.nut'`` -> ``Invalid data found when processing input``)."""
    return getattr(exc, "strerror", None) or one_line(exc)
