"""Output names: an output value as a folder, a video file (:data:`VIDEO_SUFFIXES`) or a pattern, and the default
name from the prompt.

A mistake in a value (an unknown field, a bad format spec, another suffix) is a ``ValueError`` with
a one-line message, raised before any work (``ltx`` turns it into exit 2).

Pattern fields (Python ``str.format`` syntax, e.g. ``out/{index:03d}-{seed}.mp4``):

    index       position of the item in the batch (0 for a single video)
    seed        the seed used
    slug        the prompt, lower-cased, words (Unicode letters and digits) joined by '-' (at most 40
                characters; "video" when the prompt has none)
    width, height, num_frames, frame_rate
    model       the model name (file stem for a path)
"""

from __future__ import annotations

import glob
import re
import string
import unicodedata
from fractions import Fraction
from pathlib import Path
from typing import Any

from .paths import user_path

PATTERN_FIELDS = ("index", "seed", "slug", "width", "height", "num_frames", "frame_rate", "model")
SLUG_MAX = 40
#: The video files ltx writes (``ltxcli.media.VIDEO_FORMATS`` has the codec of each); default names are ``.mp4``.
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm")


def _words(text: str) -> list[str]:
    """Runs of Unicode letters, digits and combining marks (a Devanagari vowel sign stays in its word); anything
    else (spaces, punctuation, path separators, control characters) separates words."""
    words, word = [], []
    for ch in unicodedata.normalize("NFC", text).lower():
        if ch.isalnum() or unicodedata.category(ch).startswith("M"):
            word.append(ch)
        elif word:
            words.append("".join(word))
            word = []
    return [*words, "".join(word)] if word else words


def slugify(prompt: str) -> str:
    """The ``{slug}`` field: the prompt's words (any script) joined by '-', at most :data:`SLUG_MAX` characters;
    only letters, digits and '-', so it is safe in a file name on any system."""
    words = _words(prompt)
    slug = ""
    for w in words:
        candidate = f"{slug}-{w}" if slug else w
        if len(candidate) > SLUG_MAX:
            break
        slug = candidate
    return slug or (words[0][:SLUG_MAX] if words else "video")


def is_pattern(value: str) -> bool:
    return "{" in value


def check_pattern(pattern: str, what: str = "output pattern") -> None:
    """Unknown fields or bad format specs are usage errors, found before any work; ``what`` names the pattern in
    the message (``"--latents-out pattern"``: not ``-o``'s)."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(pattern) if f is not None]
    except ValueError as e:
        raise ValueError(f"{what} {pattern!r}: {e}") from None
    for f in fields:
        if f not in PATTERN_FIELDS:  # no attribute or item of a field either: {slug.__class__} is not a name
            raise ValueError(f"{what} {pattern!r}: unknown field {{{f}}} (known: {', '.join(PATTERN_FIELDS)})")
    try:
        pattern.format(**_sample_fields())
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise ValueError(f"{what} {pattern!r}: {e}") from None


def _sample_fields() -> dict[str, Any]:
    return {"index": 0, "seed": 0, "slug": "video", "width": 1, "height": 1, "num_frames": 1, "frame_rate": 1.0,
            "model": "m"}


#: The default name (``{index:04d}-`` in front in a batch), as a pattern.
DEFAULT_STEM = "{slug}-{seed}-{width}x{height}x{num_frames}"


def default_stem(fields: dict[str, Any], batch: bool) -> str:
    return (("{index:04d}-" if batch else "") + DEFAULT_STEM).format(**fields)


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def output_template(value: str | None, *, batch: bool, frames: bool, many: bool = False) -> str:
    """The pattern of where each item goes (see :func:`output_path`), checked: a value that is not a pattern
    becomes one with its braces escaped."""
    suffix = "" if frames else ".mp4"
    stem = ("{index:04d}-" if batch else "") + DEFAULT_STEM
    if value is None:
        return stem + suffix
    if not value.strip():  # an unset variable in a script ("-o $OUT"), not the current folder
        raise ValueError(f"{'--frames-dir' if frames else '-o'} {value!r} is empty: give a {'folder' if frames else 'file'}"
                         " name, or leave the option out for the default name")
    if is_pattern(value):
        if not frames and not value.lower().endswith(VIDEO_SUFFIXES):
            raise ValueError(f"output pattern {value!r} must end in {', '.join(VIDEO_SUFFIXES)}")
        return value
    path = Path(user_path(value))
    folder = _literal(str(path)) + "/"
    if frames:
        # a folder of frames: one item -> exactly that folder; a batch -> one sub-folder per item
        return folder + stem if batch else _literal(str(path))
    if path.is_dir() or value.endswith(("/", "\\")):
        return folder + stem + suffix
    if not path.suffix:  # a typo of a file name must not quietly become a new folder
        raise ValueError(f"-o {value}: name a video file ({value}.mp4) or a folder ({value}/; an existing "
                         "folder needs no '/')")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"-o {value}: videos are written as {', '.join(VIDEO_SUFFIXES)} (or give a folder, or "
                         "--frames-dir for PNG frames)")
    if many:
        raise ValueError(f"-o {value} names one file but this is a batch: give a folder or a pattern such as "
                         "out/{index:03d}-{seed}.mp4")
    return _literal(str(path))


def output_path(value: str | None, fields: dict[str, Any], *, batch: bool, frames: bool, many: bool = False) -> Path:
    """Where one item goes. ``frames``: a folder of PNG frames instead of an ``.mp4``.

    ``batch``: the default names get the item index in front; ``many``: more than one item shares ``value``.
    ``value`` None -> the default name in the current folder; a pattern -> formatted; an existing folder or a
    value ending in '/' -> the default name inside that folder; an ``.mp4`` name -> that file; a name without
    suffix -> ValueError (a video file needs ``.mp4``, a new folder a trailing '/').
    """
    return Path(user_path(output_template(value, batch=batch, frames=frames, many=many).format(**fields)))


def output_glob(value: str | None, fields: dict[str, Any], *, batch: bool, frames: bool, many: bool = False) -> str:
    """A glob matching every path :func:`output_path` gives for these ``fields`` whatever the seed: how a rerun
    finds the outputs of a batch whose seed it does not know yet."""
    parts = []
    for literal, name, spec, conversion in string.Formatter().parse(
            output_template(value, batch=batch, frames=frames, many=many)):
        parts.append(glob.escape(literal))
        if name is None:
            continue
        if re.split(r"[.\[]", name, maxsplit=1)[0] == "seed":
            parts.append("*")
        else:
            field = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            parts.append(glob.escape(field.format(**fields)))
    return str(Path(user_path("".join(parts))))


LATENTS_SUFFIX = ".safetensors"


def latents_path(value: str, fields: dict[str, Any], *, option: str = "--latents-out", many: bool = False) -> Path:
    """Where one item's latents go (``--latents-out``, a batch line's ``latents_out``): a ``.safetensors`` file, or
    a pattern of the ``-o`` fields ending in it; ``many``: more than one item shares ``value`` (a file is then a
    ValueError: they would all write it). ``option``: how messages name where ``value`` came from."""
    if not value.strip():
        raise ValueError(f"{option} {value!r} is empty: give a .safetensors file name or pattern")
    if is_pattern(value):
        check_pattern(value, f"{option} pattern")
        if not value.lower().endswith(LATENTS_SUFFIX):
            raise ValueError(f"{option} pattern {value!r} must end in {LATENTS_SUFFIX}")
        return Path(user_path(value.format(**fields)))
    if many:
        raise ValueError(f"--latents-out {value} names one file but this is a batch: give a pattern such as "
                         "lat/{index:03d}-{seed}.safetensors, or each line its own latents_out")
    return Path(user_path(value))


def fps_number(fps: float | Fraction) -> int | float:
    """A frame rate as names, records and JSON show it: 24.0 or Fraction(24) -> 24, 23.976 stays, a fraction
    (a video's 24000/1001) is its float, from which :func:`ltxcli.media.write_video` gets it back exactly."""
    return int(fps) if float(fps).is_integer() else float(fps)


def model_field(name: str, *, is_path: bool) -> str:
    """The ``{model}`` field: a weights.toml name as is, a checkpoint file or folder by its stem."""
    return Path(name).stem if is_path else name


def fields(*, index: int, seed: int, prompt: str, width: int, height: int, num_frames: int, frame_rate: float,
           model: str) -> dict[str, Any]:
    """The values a pattern (and the default name) may use for one item."""
    return {"index": index, "seed": seed, "slug": slugify(prompt), "width": width, "height": height,
            "num_frames": num_frames, "frame_rate": fps_number(frame_rate), "model": model}
