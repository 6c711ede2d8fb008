"""Output names: an output value as a folder, a ``.mp4`` file or a pattern, and the default name from the prompt.

A mistake in a value (an unknown field, a bad format spec, a suffix other than ``.mp4``) is a ``ValueError`` with
a one-line message, raised before any work (``ltx`` turns it into exit 2).

Pattern fields (Python ``str.format`` syntax, e.g. ``out/{index:03d}-{seed}.mp4``):

    index       position of the item in the batch (0 for a single video)
    seed        the seed used
    slug        the prompt, lower-cased, words joined by '-' (at most 40 characters)
    width, height, num_frames, frame_rate
    model       the model name (file stem for a path)
"""

from __future__ import annotations

import re
import string
from pathlib import Path
from typing import Any

PATTERN_FIELDS = ("index", "seed", "slug", "width", "height", "num_frames", "frame_rate", "model")
SLUG_MAX = 40


def slugify(prompt: str) -> str:
    words = re.findall(r"[a-z0-9]+", prompt.lower())
    slug = ""
    for w in words:
        candidate = f"{slug}-{w}" if slug else w
        if len(candidate) > SLUG_MAX:
            break
        slug = candidate
    return slug or (words[0][:SLUG_MAX] if words else "video")


def is_pattern(value: str) -> bool:
    return "{" in value


def check_pattern(pattern: str) -> None:
    """Unknown fields or bad format specs are usage errors, found before any work."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as e:
        raise ValueError(f"output pattern {pattern!r}: {e}") from None
    for f in fields:
        base = re.split(r"[.\[]", f, maxsplit=1)[0]
        if base not in PATTERN_FIELDS:
            raise ValueError(f"output pattern {pattern!r}: unknown field {{{f}}} (known: {', '.join(PATTERN_FIELDS)})")
    try:
        pattern.format(**_sample_fields())
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise ValueError(f"output pattern {pattern!r}: {e}") from None


def _sample_fields() -> dict[str, Any]:
    return {"index": 0, "seed": 0, "slug": "video", "width": 1, "height": 1, "num_frames": 1, "frame_rate": 1.0,
            "model": "m"}


def default_stem(fields: dict[str, Any], batch: bool) -> str:
    stem = f"{fields['slug']}-{fields['seed']}-{fields['width']}x{fields['height']}x{fields['num_frames']}"
    return f"{fields['index']:04d}-{stem}" if batch else stem


def output_path(value: str | None, fields: dict[str, Any], *, batch: bool, frames: bool, many: bool = False) -> Path:
    """Where one item goes. ``frames``: a folder of PNG frames instead of an ``.mp4``.

    ``batch``: the default names get the item index in front; ``many``: more than one item shares ``value``.
    ``value`` None -> the default name in the current folder; a pattern -> formatted; an existing folder, a
    value ending in '/' or a value without suffix -> the default name inside that folder; else a file.
    """
    suffix = "" if frames else ".mp4"
    stem = default_stem(fields, batch)
    if value is None:
        return Path(stem + suffix)
    if is_pattern(value):
        name = value.format(**fields)
        if not frames and not name.lower().endswith(".mp4"):
            raise ValueError(f"output pattern {value!r} must end in .mp4")
        return Path(name).expanduser()
    path = Path(value).expanduser()
    if frames:
        # a folder of frames: one item -> exactly that folder; a batch -> one sub-folder per item
        return path / stem if batch else path
    if path.is_dir() or value.endswith(("/", "\\")) or not path.suffix:
        return path / (stem + suffix)
    if path.suffix.lower() != ".mp4":
        raise ValueError(f"-o {value}: videos are written as .mp4 (or give a folder, or --frames-dir for PNG frames)")
    if many:
        raise ValueError(f"-o {value} names one file but this is a batch: give a folder or a pattern such as "
                         "out/{index:03d}-{seed}.mp4")
    return path


def fps_number(fps: float) -> int | float:
    """A frame rate as names, records and JSON show it: 24.0 -> 24, 23.976 stays."""
    return int(fps) if float(fps).is_integer() else fps


def model_field(name: str, *, is_path: bool) -> str:
    """The ``{model}`` field: a weights.toml name as is, a checkpoint file or folder by its stem."""
    return Path(name).stem if is_path else name


def fields(*, index: int, seed: int, prompt: str, width: int, height: int, num_frames: int, frame_rate: float,
           model: str) -> dict[str, Any]:
    """The values a pattern (and the default name) may use for one item."""
    return {"index": index, "seed": seed, "slug": slugify(prompt), "width": width, "height": height,
            "num_frames": num_frames, "frame_rate": fps_number(frame_rate), "model": model}
