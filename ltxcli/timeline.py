"""When things happen in a video, from what a request says: a duration in seconds -> its frame count, a prompt
schedule -> its entries and their start frames, a window's start -> the prompt it takes. No torch;
:mod:`ltxcli.long_video` plans windows from these, and the runner and the memory plan complete a request's length
with them before any model loads."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .formatting import number_text, text_lines
from .paths import user_path
from .request import GenerationRequest, preset_size

if TYPE_CHECKING:
    from .presets import Preset

FRAMES_PER_LATENT = 8  # pixel frames per latent frame (the VAE's temporal compression): lengths are 8k + 1


def frames_for_duration(seconds: float, frame_rate: float) -> int:
    """A duration -> the smallest ``8k + 1`` frame count that lasts at least that long at ``frame_rate``."""
    if not (seconds > 0 and math.isfinite(seconds * frame_rate)):
        raise ValueError(f"duration={number_text(seconds)} must be a positive number of seconds (e.g. 30)")
    return math.ceil(seconds * frame_rate / FRAMES_PER_LATENT - 1e-9) * FRAMES_PER_LATENT + 1


def length_option(frames: int | None, duration_rate: float | None = None, extended: int | None = None) -> str:
    """The option that asks for ``frames`` (8k + 1; None: fewer): ``--num-frames F``, or for a length the user gave
    in seconds (``duration_rate``: its frame rate) ``--duration Ss``, as both cannot be given. The seconds are
    rounded down to 0.01 s, which keeps them above the next shorter 8k + 1 length (8 frames less) below 800 fps;
    one frame is no duration's (at least 9). ``extended``: the input frames of an extension, whose length is
    asked for as its new frames (``ltx extend --frames N``; it refuses any other ``--num-frames``)."""
    if extended is not None:  # frames counts the input's too; no fewer than the input's and one new
        return f"--frames {frames - extended}" if frames is not None and frames > extended else "fewer --frames"
    if frames is None:
        return "fewer --num-frames" if duration_rate is None else "a shorter --duration"
    if duration_rate is None:
        return f"--num-frames {frames}"
    if frames < 1 + FRAMES_PER_LATENT:
        return f"--num-frames {frames} instead of --duration"
    return f"--duration {_seconds(frames, duration_rate)}"


def _seconds(frames: int, frame_rate: float) -> str:
    """``frames`` (8k + 1) as a duration that asks for them: ``"1.33s"``, rounded down (see :func:`length_option`)."""
    return f"{math.floor((frames - 1) / frame_rate * 100 + 1e-6) / 100:g}s"


def size_option(height: int | None, width: int | None, frames: int | None, duration_rate: float | None = None,
                extended: int | None = None, line: bool = False, windows: bool = False) -> str:
    """What asks for ``height x width x frames`` (all None: a smaller size): ``--height H --width W`` and
    :func:`length_option`'s; for a --batch line that sets its own size or length (``line``: the command's options
    are only defaults there, which its keys override), that line's keys: ``"height": H, "width": W`` and
    ``"num_frames": F``, ``"duration": "Ss"`` or an extension's ``"frames": N`` in ``"extend"``. ``windows``: a
    video in windows, whose memory is one window's: a smaller size is a smaller window, not a shorter video."""
    if not line:
        length = "a smaller --window" if windows and frames is None else length_option(frames, duration_rate, extended)
        return f"--height {height} --width {width} {length}" if height is not None else f"--height/--width or {length}"
    if windows and frames is None:
        length = 'a smaller "window"'
    elif extended is not None:  # the new frames, as length_option counts them
        length = (f'"frames": {frames - extended}' if frames is not None and frames > extended else 'fewer "frames"') \
            + ' in "extend"'
    elif frames is None:
        length = 'fewer "num_frames"' if duration_rate is None else 'a shorter "duration"'
    elif duration_rate is None or frames < 1 + FRAMES_PER_LATENT:
        length = f'"num_frames": {frames}' + ("" if duration_rate is None else ' instead of "duration"')
    else:
        length = f'"duration": "{_seconds(frames, duration_rate)}"'
    return f'"height": {height}, "width": {width}, {length}' if height is not None else f'"height"/"width" or {length}'


def frames_of(request: GenerationRequest, frame_rate: float) -> int | None:
    """The frames ``request`` asks for: its ``duration`` at ``frame_rate``, else its ``num_frames`` (None: the
    preset's). Both given is a ValueError."""
    if request.duration is None:
        return request.num_frames
    if request.num_frames is not None:
        raise ValueError("give either num_frames or duration, not both")
    return frames_for_duration(parse_duration(request.duration), frame_rate)


def parse_duration(text: str | float) -> float:
    """``"30s"``, ``"30"``, ``"1m30s"`` or a number -> seconds."""
    if not isinstance(text, str):  # a number (Python's, numpy's)
        return float(text)
    s = text.strip().lower()
    try:
        if "m" in s:
            minutes, _, rest = s.partition("m")
            if rest.startswith(("-", "+")):  # "1m-30s" is no length
                raise ValueError
            return float(minutes) * 60 + (float(rest.rstrip("s")) if rest.rstrip("s") else 0.0)
        return float(s.rstrip("s"))
    except ValueError:
        raise ValueError(f"duration {text!r}: expected seconds such as 30, 30s or 1m30s") from None


def read_schedule(source: str | os.PathLike[str] | Sequence[Mapping[str, Any]]) -> list[tuple[str | int, str]]:
    """A prompt schedule: a JSON-lines file (or its parsed lines) of ``{"start": 0 | "4.5s", "prompt": "..."}``
    (start in pixel frames, or seconds with an ``s``) -> ``[(start, prompt)]`` in the given order."""
    if isinstance(source, (str, os.PathLike)):
        if not os.fspath(source).strip():  # Path("") is the current folder
            raise ValueError("prompt schedule: the path is empty")
        path = Path(user_path(source))
        if path.exists() and not path.is_file() and not path.is_dir():
            # checked, then read again for the windows' prompts: a second read of a pipe finds it empty
            raise ValueError(f"prompt schedule {path}: a pipe, which can be read once only: save it to a file")
        if not path.is_file():  # as a --batch file's: a usage error (exit 2)
            raise ValueError(f"prompt schedule {path}: {'a folder, not a file' if path.is_dir() else 'no such file'}")
        try:
            # utf-8-sig: a byte-order mark some editors write is not part of the first line
            lines = text_lines(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError) as e:  # an unreadable input file, as a --batch file's (exit 6)
            from .media.errors import MediaError

            raise MediaError(f"prompt schedule {path}: cannot read: {e}") from None
        rows = []
        for n, line in enumerate(lines, 1):  # numbered as the editor shows them, blank and comment lines too
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                rows.append(json.loads(line))
            except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than the parser goes
                why = "nested too deeply" if isinstance(e, RecursionError) else e
                raise ValueError(f"prompt schedule {path} line {n}: invalid JSON ({why})") from None
    else:
        rows = list(source)
    out: list[tuple[str | int, str]] = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, Mapping) or not isinstance(row.get("prompt"), str) or set(row) - {"start", "prompt"}:
            raise ValueError(f"prompt schedule entry {n}: expected {{\"start\": FRAME or \"SECONDSs\", \"prompt\": TEXT}}")
        start = row.get("start", 0)
        if isinstance(start, bool) or not isinstance(start, (int, str)):
            raise ValueError(f"prompt schedule entry {n}: start must be a frame number or seconds such as \"4.5s\"")
        out.append((start, row["prompt"]))
    if not out:
        raise ValueError("the prompt schedule has no entries")
    return out


def start_frame(start: str | int, frame_rate: float) -> int:
    """A prompt schedule's ``start`` (pixel frames, or seconds with an ``s``) -> its pixel frame at ``frame_rate``.
    A negative start is refused: no window starts before frame 0, so such an entry was used by none."""
    s = str(start).strip().lower()
    try:
        value = float(s[:-1]) if s.endswith("s") else int(s)
        frame = round(value * frame_rate) if s.endswith("s") else int(value)
    except (ValueError, OverflowError):  # OverflowError: "infs", "1e400s"
        raise ValueError(f"prompt schedule start {start!r}: expected a frame number or seconds such as \"4.5s\"") from None
    if value < 0:  # "-0.01s" too, which rounds to frame 0
        raise ValueError(f"prompt schedule start {start!r} is before the video's first frame: give 0 or later")
    return frame


def schedule_frames(entries: Sequence[tuple[str | int, str]], frame_rate: float) -> list[tuple[int, str]]:
    """:func:`read_schedule`'s entries -> ``[(start frame, prompt)]`` by start. Two entries starting at the same
    frame are refused: which one a window took was decided by the prompts' alphabetical order."""
    frames = sorted(((start_frame(s, frame_rate), n, p) for n, (s, p) in enumerate(entries, 1)), key=lambda e: e[:2])
    for (f, m, _), (g, n, _) in pairwise(frames):
        if f == g:
            raise ValueError(f"prompt schedule entries {m} and {n} both start at frame {f} (at {frame_rate:g} fps): "
                             "give each a different start")
    return [(f, p) for f, _, p in frames]


def window_prompts(r: GenerationRequest, spans: Sequence[tuple[int, int]], frame_rate: float,
                   offset: int = 0) -> list[str]:
    """The prompt of each window: the schedule entry in force at the window's first frame (``offset``: the
    schedule's number of the windows' frame 0, an extension's output frame), else the ``|`` parts in order (the
    last one repeated), else the prompt."""
    if r.prompt_schedule is not None:
        entries = schedule_frames(read_schedule(r.prompt_schedule), frame_rate)
        return [entries[in_force(entries, FRAMES_PER_LATENT * start + offset)][1] for start, _ in spans]
    return bar_prompts(r.prompt, len(spans))


def in_force(entries: Sequence[tuple[int, str]], frame: int) -> int:
    """Which of the schedule's ``entries`` (by start) a window starting at ``frame`` takes: the last one started,
    else the first."""
    started = [i for i, (f, _) in enumerate(entries) if f <= frame]
    return started[-1] if started else 0


def bar_prompts(prompt: str, n: int) -> list[str]:
    """The prompts of ``n`` windows from a ``"a | b | c"`` prompt: its parts in order, the last one repeated."""
    parts = [p.strip() for p in prompt.split("|")]
    return [parts[min(i, len(parts) - 1)] for i in range(n)]


def duration_frames(request: GenerationRequest, preset: Preset) -> int | None:
    """:func:`frames_of` at the request's frame rate, else the preset's (an input video's, once it gave one)."""
    return frames_of(request, float(preset_size(preset, request.height, request.width, None, request.frame_rate)[3]))


__all__ = ["FRAMES_PER_LATENT", "bar_prompts", "duration_frames", "frames_for_duration", "frames_of", "in_force",
           "length_option", "parse_duration", "read_schedule", "schedule_frames", "size_option", "start_frame", "window_prompts"]
