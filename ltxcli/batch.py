"""A batch item (:class:`BatchItem`): a request and where its video goes; and the batch file it is read from
(:func:`read_batch_file`, :func:`parse_batch`: one prompt or one JSON object per line, keys :data:`ITEM_KEYS`).

Its own module, below the runner that plans and generates items (:mod:`ltxcli.runner`), the records written with
them (:mod:`ltxcli.records`) and the resuming of a batch (:mod:`ltxcli.resume`), so that each of those imports it
and none imports another for it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .extend import parse_extension
from .formatting import text_lines
from .long_plan import windowed
from .paths import user_media, user_path
from .request import Condition, Control, GenerationRequest, check_control, control_of, media_path
from .timeline import size_option


@dataclass(repr=False)  # GenerationRequest's: the fields given
class BatchItem(GenerationRequest):
    """One video of a batch: a :class:`~ltxcli.request.GenerationRequest` (``None`` sizes and frame rate: the
    preset's, ``None`` seed: derived from the batch seed, both filled in when the batch is planned, since output
    names use them) and where it goes: ``output``, a file, folder or pattern for this item only; ``index``, its
    place in the batch; ``target``, ``skip`` and ``kept_other``, set by :func:`ltxcli.runner.plan_outputs`.

    ``batch_seed``: in a batch of several items, the seed this item's was derived from (``seed = batch_seed +
    index``, recorded in its file); ``seed_drawn``: the seed (or batch seed) was drawn at random, so a rerun
    with ``skip_existing`` may take the one recorded by an earlier run of the batch (:mod:`ltxcli.resume`)."""

    output: str | None = None
    index: int = 0
    target: Path | None = None
    skip: bool = False
    kept_other: bool = False  # skipped: its target holds a video made for another request (kept), not its own
    batch_seed: int | None = None
    seed_drawn: bool = False
    resume: bool = False  # a windowed run keeps its finished windows next to the output (ltxcli.long_video)
    from_duration: bool = False  # its num_frames came from the duration asked for (advice then names --duration)
    #: its --batch line sets its size or length, which the command's options (defaults) do not override: memory
    #: advice names the line's keys (:func:`ltxcli.timeline.size_option`)
    own_size: bool = False
    latents_out: str | None = None  # its final latents too: a .safetensors file or pattern, this item's only
    latents_target: Path | None = None  # where they go (ltxcli.job.plan_latents), None: nowhere

    @property
    def duration_rate(self) -> float | None:
        """The frame rate its length was asked for at in seconds (advice names a --duration), else None."""
        return self.frame_rate if self.from_duration else None

    @property
    def input_frames(self) -> int | None:
        """An extension's input frames (``num_frames`` filled in; advice names its new frames), else None."""
        return None if self.extend is None or self.num_frames is None else self.num_frames - self.extend.frames

    def size_option(self, height: int | None = None, width: int | None = None, frames: int | None = None) -> str:
        """How it asks for ``height x width x frames`` (None: a smaller size), in memory advice
        (:func:`ltxcli.timeline.size_option`: its --duration, an extension's --frames, its batch line's keys)."""
        return size_option(height, width, frames, self.duration_rate, self.input_frames, self.own_size, windowed(self))

    @property
    def least_frames(self) -> int:
        """The fewest frames a shorter length of it may have (what memory advice may suggest): one past its last
        condition's frame, which must stay in the video (an extension's: in its new frames, after the input's); all
        of them where it asks for windows (:func:`ltxcli.long_video.windowed`), whose memory is one window's while
        a shorter length would lose its later prompts (a length that fits one window runs the first alone)."""
        if self.num_frames is not None and windowed(self):
            return self.num_frames
        return max((c.frame + 1 for c in self.conditions), default=1)


_ITEM_INT = ("seed", "steps", "height", "width", "num_frames", "window", "overlap")
_ITEM_FLOAT = ("frame_rate", "guidance_scale", "stg_scale", "overlap_strength", "adain", "denoise_strength")
_ITEM_STR = ("prompt", "negative_prompt", "output", "image", "cache", "duration", "prompt_schedule", "video",
             "enhance_prompt", "stg_mode", "latents_out")
_ITEM_BOOL = ("temporal_upscale", "resume")
_ITEM_PATHS = ("output", "image", "video", "prompt_schedule", "latents_out")  # "" would name the current folder
ITEM_KEYS = (*_ITEM_STR, *_ITEM_INT, *_ITEM_FLOAT, *_ITEM_BOOL, "conditions", "loras", "control",
             "control_from", "extend")


def _check_long_row(row: dict[str, Any], where: str, bools: Sequence[str]) -> None:
    """A batch line's long-video keys: booleans are booleans; a numeric ``duration`` becomes its string."""
    for key in bools:
        if row.get(key) is not None and not isinstance(row[key], bool):
            raise ValueError(f"{where}: {key} must be true or false, got {row[key]!r}")
    if isinstance(row.get("duration"), (int, float)) and not isinstance(row["duration"], bool):
        row["duration"] = str(row["duration"])


def parse_condition(spec: str, what: str = "--condition") -> Condition:
    """``PATH:FRAME[:STRENGTH]``, split from the right so paths may contain ':'. ``what`` starts the error line
    (a batch line says where it is)."""
    parts = spec.rsplit(":", 2)
    if len(parts) == 3:
        path, frame, strength = parts
        if _parses(frame, int) and _parses(strength, float):
            return Condition(path, int(frame), float(strength))
    parts = spec.rsplit(":", 1)
    if len(parts) == 2 and _parses(parts[1], int) and parts[0]:
        return Condition(parts[0], int(parts[1]), 1.0)
    raise ValueError(f"{what} {spec!r}: expected PATH:FRAME[:STRENGTH], e.g. first.png:0 or end.png:96:0.8")


#: The ``--condition`` value that asks for no condition, given alone: it replaces a ``--from`` record's conditions
#: (an i2v record's first frame too). No condition file is named so: a condition is ``PATH:FRAME``.
NO_CONDITION = "none"


def parse_conditions(specs: Sequence[str]) -> list[Condition]:
    """The command's ``--condition`` values -> conditions (``[NO_CONDITION]``: none, in place of those of a
    ``--from`` record; without one the job planner refuses it, :mod:`ltxcli.job`); ``none`` beside other conditions is a
    ValueError (one line), as ``--lora none`` beside other LoRAs is."""
    if NO_CONDITION in specs:
        if len(specs) > 1:
            raise ValueError(f"--condition {NO_CONDITION} asks for no condition: give it alone, not with other "
                             "conditions")
        return []
    return [parse_condition(c) for c in specs]


def _parses(s: str, kind: type) -> bool:
    """Whether ``kind(s)`` reads ``s`` (``int`` or ``float``)."""
    try:
        kind(s)
    except ValueError:
        return False
    return True


def read_batch_file(source: str | Path, what: str = "--batch") -> str:
    """The text of a batch file: a missing one is a ValueError, an unreadable one (permissions, not UTF-8) a
    :class:`~ltxcli.media.MediaError`, each one line naming ``what`` and the file."""
    from .media import MediaError

    path = Path(user_path(source))
    if path.is_dir():
        raise ValueError(f"{what} {source}: a folder, not a file")
    if not path.exists():  # a pipe (`--batch <(jq ...)`, /dev/stdin) is read as a file
        raise ValueError(f"{what} {source}: no such file")
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark is not part of the first line
    except (OSError, UnicodeDecodeError) as e:
        raise MediaError(f"{what} {source}: cannot read: {e}") from None


def is_pipe(source: str | Path) -> bool:
    """``source`` (a path that exists) is no regular file but a pipe (``<(jq ...)``, a FIFO, ``/dev/stdin``) or
    another stream: it can be read only once."""
    return not Path(user_path(source)).is_file()


def read_stdin(what: str) -> str:
    """All of stdin as text, read as :func:`read_batch_file` reads a file: UTF-8 without a byte-order mark; other
    bytes are a :class:`~ltxcli.media.MediaError` naming ``what`` (``"--batch -"``) and stdin."""
    import sys

    from .media import MediaError

    try:
        return sys.stdin.buffer.read().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise MediaError(f"{what}: stdin is not UTF-8 text: {e}") from None


def parse_batch(text: str, source: str = "batch") -> list[dict[str, Any]]:
    """One prompt per line, or one JSON object per line (keys: :data:`ITEM_KEYS`); '#' lines are comments.

    Returns one dict per item (conditions parsed into :class:`~ltxcli.request.Condition`, ``_where`` naming the
    line for later messages). A malformed line is a ValueError starting with ``"{source} line N: "``."""
    rows: list[dict[str, Any]] = []
    # a byte-order mark is no part of the first line, in text read without utf-8-sig too
    for number, raw in enumerate(text_lines(text.removeprefix("\ufeff")), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source} line {number}"
        if not line.startswith("{"):
            rows.append({"prompt": line, "_where": where})
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than the parser goes
            raise ValueError(f"{where}: invalid JSON ({'nested too deeply' if isinstance(e, RecursionError) else e})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected a JSON object")
        unknown = sorted(set(obj) - set(ITEM_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(ITEM_KEYS)})")
        if not isinstance(obj.get("prompt"), str):
            raise ValueError(f"{where}: needs a \"prompt\" string")
        _check_long_row(obj, where, _ITEM_BOOL)  # first: a numeric duration becomes the string checked below
        for key in _ITEM_STR:
            if key in obj and obj[key] is not None and not isinstance(obj[key], str):
                raise ValueError(f"{where}: {key} must be a string")
            if key in _ITEM_PATHS and obj.get(key) is not None and not obj[key].strip():
                raise ValueError(f"{where}: {key} is empty: give a file path or leave the key out")
        for key in _ITEM_INT:
            v = obj.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                raise ValueError(f"{where}: {key} must be an integer, got {v!r}")
        for key in _ITEM_FLOAT:
            v = obj.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"{where}: {key} must be a number, got {v!r}")
        conds = obj.get("conditions")
        if conds is not None:
            if not isinstance(conds, list):
                raise ValueError(f"{where}: conditions must be a list")
            if NO_CONDITION in conds:  # as -c none: none of the command's conditions for this line
                if len(conds) > 1:
                    raise ValueError(f"{where}: conditions [\"{NO_CONDITION}\"] asks for no condition: give it "
                                     "alone, not with other conditions")
                conds, obj["_no_conditions"] = [], True
            parsed = []
            for c in conds:
                if isinstance(c, str):
                    parsed.append(parse_condition(c, f"{where}: condition"))
                elif isinstance(c, dict) and isinstance(c.get("path"), str) and not set(c) - {"path", "frame", "strength"}:
                    frame, strength = c.get("frame", 0), c.get("strength", 1.0)
                    if isinstance(frame, bool) or not isinstance(frame, int) or not isinstance(strength, (int, float)):
                        raise ValueError(f"{where}: condition frame must be an integer and strength a number")
                    parsed.append(Condition(c["path"], frame, float(strength)))
                else:
                    raise ValueError(f"{where}: a condition is \"PATH:FRAME[:STRENGTH]\" or "
                                     "{\"path\", \"frame\", \"strength\"}")
            obj["conditions"] = parsed
        if obj.get("loras") is not None:
            obj["loras"] = _parse_loras(obj["loras"], where)
        if obj.get("extend") is not None:
            obj["extend"] = parse_extension(obj["extend"], where)
        obj["_where"] = where
        obj["_line"] = True  # a JSON line: its keys override the command's options (a --from record's do not)
        rows.append(obj)
    if not rows:
        raise ValueError(f"{source}: no prompts in it")
    return rows


def _parse_loras(value: Any, where: str) -> list[Any]:
    """A batch line's ``loras``: a list of ``"PATH_OR_NAME[:SCALE]"`` strings or ``{"path" | "name", "scale",
    "sha256"}`` objects (a generation record's form) -> :class:`~ltxcli.adapters.lora.LoraSpec` s."""
    from .adapters.lora import lora_specs

    if not isinstance(value, list) or not all(isinstance(v, (str, dict)) for v in value):
        raise ValueError(f"{where}: loras must be a list of \"PATH_OR_NAME[:SCALE]\" strings or "
                         "{\"path\" or \"name\", \"scale\"} objects")
    try:
        return list(lora_specs(value))  # ["none"] too: none, over the command's --lora
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def item_control(row: Mapping[str, Any], defaults: Mapping[str, Any]) -> Control | None:
    """A batch item's control (:func:`ltxcli.runner.build_items`): the row's ``control`` / ``control_from``, else
    the defaults' (the command's ``--control`` / ``--control-from``), checked (:func:`ltxcli.request.check_control`,
    and a file's first frame read: a missing or unreadable video is a :class:`ltxcli.media.MediaError`) before any
    weight is read. Other mistakes are a ValueError; either starts with the row's ``_where`` (its batch line or
    ``--from`` record) when the row names the control."""
    given = row.get("control") is not None or row.get("control_from") is not None
    source, where = (row, row.get("_where")) if given else (defaults, None)
    try:
        c = control_of(source.get("control"), source.get("control_from"))
        if c is not None:
            check_control(c)
            c = replace(c, media=user_media(c.media))  # a path written as text: its "~" expanded
        if c is not None and media_path(c.media) is not None:
            from . import media

            media.load_media(c.media, max_frames=1)
            media.source_frame_count(c.media, 1)  # an animated image (its first frame only) is refused
    except ValueError as e:  # a MediaError stays one (its exit code differs)
        from .media import MediaError

        raise (MediaError if isinstance(e, MediaError) else ValueError)(
            f"{where}: {e}" if where else str(e)) from None
    return c


__all__ = ["ITEM_KEYS", "NO_CONDITION", "BatchItem", "is_pipe", "item_control", "parse_batch", "parse_condition",
           "parse_conditions", "read_batch_file", "read_stdin"]
